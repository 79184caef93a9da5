//! The HTTP device API (`/api/v1/{token}/…`): attributes
//! (`GET attributes?sharedKeys=`), the attribute long-poll
//! (`GET attributes/updates?timeout=` — 200 with the changed attributes, 408 when
//! nothing changed), telemetry (`POST telemetry`) and the package endpoint
//! (`GET firmware|software?title=&version=&size=&chunk=`). The token is part of
//! every URL, so errors name the path with `***` in its place.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::{StatusCode, Url};
use serde_json::{Map, Value};

use super::transport::{ChunkRequest, TbError, Transport};
use super::wire::{self, AttributesResponse};
use crate::config::AccessToken;

pub struct HttpTransport {
    client: reqwest::Client,
    base: String,
    poll_timeout: Duration,
}

impl HttpTransport {
    /// `client` carries the TLS settings (it is the download engine's).
    pub fn new(client: reqwest::Client, base: &str, poll_timeout: Duration) -> Self {
        HttpTransport {
            client,
            base: base.trim_end_matches('/').to_string(),
            poll_timeout,
        }
    }

    fn url(
        &self,
        token: &AccessToken,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Url, TbError> {
        let raw = format!("{}/api/v1/{}/{path}", self.base, token.0);
        Url::parse_with_params(&raw, params)
            .map_err(|e| TbError::Refused(format!("{}: bad URL: {e}", shown(path))))
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        path: &str,
    ) -> Result<reqwest::Response, TbError> {
        let response = request
            .send()
            .await
            .map_err(|e| TbError::Transient(format!("{}: {}", shown(path), e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = format!("{}: HTTP {status}", shown(path));
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            Err(TbError::Transient(message))
        } else {
            Err(TbError::Refused(message))
        }
    }

    async fn body(response: reqwest::Response, path: &str) -> Result<Bytes, TbError> {
        response
            .bytes()
            .await
            .map_err(|e| TbError::Transient(format!("{}: {}", shown(path), e.without_url())))
    }
}

/// The path as logged: the token never appears.
fn shown(path: &str) -> String {
    format!("/api/v1/***/{path}")
}

#[async_trait]
impl Transport for HttpTransport {
    async fn shared_attributes(
        &self,
        token: &AccessToken,
        keys: &[String],
    ) -> Result<Map<String, Value>, TbError> {
        let path = "attributes";
        let url = self.url(token, path, &[("sharedKeys", keys.join(","))])?;
        let response = self.send(self.client.get(url), path).await?;
        let body = Self::body(response, path).await?;
        let parsed: AttributesResponse = serde_json::from_slice(&body)
            .map_err(|e| TbError::Malformed(format!("{}: {e}", shown(path))))?;
        Ok(parsed.shared)
    }

    async fn next_update(
        &self,
        token: &AccessToken,
    ) -> Result<Option<Map<String, Value>>, TbError> {
        let path = "attributes/updates";
        let ms = self.poll_timeout.as_millis().to_string();
        let url = self.url(token, path, &[("timeout", ms)])?;
        let request = self
            .client
            .get(url)
            .timeout(self.poll_timeout + Duration::from_secs(15));
        let response = match self.send(request, path).await {
            Ok(r) => r,
            // The long-poll's normal end: nothing changed.
            Err(TbError::Transient(m)) if m.ends_with(&StatusCode::REQUEST_TIMEOUT.to_string()) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let body = Self::body(response, path).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => Ok(Some(map)),
            Ok(other) => Err(TbError::Malformed(format!(
                "{}: expected a JSON object, got {other}",
                shown(path)
            ))),
            Err(e) => Err(TbError::Malformed(format!("{}: {e}", shown(path)))),
        }
    }

    async fn telemetry(&self, token: &AccessToken, record: &Value) -> Result<(), TbError> {
        let path = "telemetry";
        let url = self.url(token, path, &[])?;
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(record.to_string());
        self.send(request, path).await?;
        Ok(())
    }

    async fn chunk(
        &self,
        token: &AccessToken,
        request: ChunkRequest<'_>,
    ) -> Result<Bytes, TbError> {
        let path = wire::http_resource(request.kind);
        let url = self.url(
            token,
            path,
            &[
                ("title", request.title.to_string()),
                ("version", request.version.to_string()),
                ("size", request.chunk_size.to_string()),
                ("chunk", request.index.to_string()),
            ],
        )?;
        let response = self.send(self.client.get(url), path).await?;
        Self::body(response, path).await
    }
}
