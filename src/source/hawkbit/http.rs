//! The DDI HTTP plumbing: the controller's base URL, the `Authorization` header
//! (never logged: errors name the URL and status only), JSON in and out, and which
//! failures are worth retrying. The reqwest client is the download engine's, so
//! API calls use the same CA bundle, client certificate, `https_only` and timeouts.

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{url}: {message}")]
    Network { url: String, message: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: StatusCode },
    #[error("{url}: unexpected reply: {message}")]
    Decode { url: String, message: String },
}

impl ApiError {
    /// Worth another attempt later (network, server errors, 408, 429); a 4xx
    /// otherwise means the server will never accept this request.
    pub fn retryable(&self) -> bool {
        match self {
            ApiError::Network { .. } => true,
            ApiError::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || *status == StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Decode { .. } => false,
        }
    }
}

#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    /// `{url}/{tenant}/controller/v1/{controllerId}`.
    pub base: String,
    authorization: Option<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("base", &self.base).finish()
    }
}

fn network(url: &str, e: reqwest::Error) -> ApiError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ApiError::Network {
        url: url.to_string(),
        message,
    }
}

impl Api {
    pub fn new(client: reqwest::Client, base: String, authorization: Option<String>) -> Api {
        Api {
            client,
            base,
            authorization,
        }
    }

    /// The `Authorization` header for artifact downloads from the same server.
    pub fn authorization(&self) -> Option<&str> {
        self.authorization.as_deref()
    }

    fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .client
            .request(method, url)
            .header(reqwest::header::ACCEPT, "application/hal+json");
        if let Some(auth) = &self.authorization {
            r = r.header(reqwest::header::AUTHORIZATION, auth);
        }
        r
    }

    pub async fn get<T: DeserializeOwned>(&self, url: &str) -> Result<T, ApiError> {
        let response = self
            .request(Method::GET, url)
            .send()
            .await
            .map_err(|e| network(url, e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(ApiError::Status {
                url: url.to_string(),
                status,
            });
        }
        let bytes = response.bytes().await.map_err(|e| network(url, e))?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    /// POST or PUT a JSON body; any 2xx is success.
    pub async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: &str,
        body: &B,
    ) -> Result<(), ApiError> {
        let response = self
            .request(method, url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(body).map_err(|e| ApiError::Decode {
                url: url.to_string(),
                message: e.to_string(),
            })?)
            .send()
            .await
            .map_err(|e| network(url, e))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(ApiError::Status {
                url: url.to_string(),
                status,
            })
        }
    }
}

/// `href` without its query (`?c=…`), then `/suffix`.
pub fn sub_url(href: &str, suffix: &str) -> String {
    let bare = href.split(['?', '#']).next().unwrap_or(href);
    format!("{}/{suffix}", bare.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_feedback_urls() {
        assert_eq!(
            sub_url(
                "https://h/T/controller/v1/c/deploymentBase/5?c=-2",
                "feedback"
            ),
            "https://h/T/controller/v1/c/deploymentBase/5/feedback"
        );
        assert_eq!(sub_url("http://h/x/", "feedback"), "http://h/x/feedback");
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let status = |s: u16| ApiError::Status {
            url: "u".into(),
            status: StatusCode::from_u16(s).unwrap(),
        };
        assert!(status(503).retryable());
        assert!(status(429).retryable());
        assert!(!status(404).retryable());
        assert!(!status(410).retryable());
    }
}
