//! The HTTP device API (`/api/v1/{token}/…`): attributes
//! (`GET attributes?sharedKeys=`), the attribute long-poll
//! (`GET attributes/updates?timeout=` — 200 with the changed attributes, 408 when
//! nothing changed), telemetry (`POST telemetry`) and the package endpoint
//! (`GET firmware|software?title=&version=&size=&chunk=`), through
//! [`crate::api::ApiClient`]. The token is part of every URL, so each request
//! names it as a secret: errors show `***` in its place.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

use super::transport::{ChunkRequest, TbError, Transport};
use super::wire::{self, AttributesResponse};
use crate::api::{ApiClient, ApiError, ApiRequest, DEFAULT_MAX_BODY};
use crate::config::AccessToken;
use crate::download::DownloadConfig;

pub struct HttpTransport {
    api: Result<ApiClient, ApiError>,
    poll_timeout: Duration,
}

impl From<ApiError> for TbError {
    fn from(e: ApiError) -> TbError {
        match e {
            ApiError::Decode {
                target, message, ..
            } => TbError::Malformed(format!("{target}: {message}")),
            e if e.is_transient() => TbError::Transient(e.to_string()),
            e => TbError::Refused(e.to_string()),
        }
    }
}

impl HttpTransport {
    /// The device API at `base` with `download`'s TLS settings (the download
    /// engine's). Settings that do not make a client (an unreadable CA bundle)
    /// fall back to the defaults: the engine reports the problem.
    pub fn new(download: &DownloadConfig, base: &str, poll_timeout: Duration) -> Self {
        let api = ApiClient::new(download, base).or_else(|e| {
            tracing::error!("thingsboard: HTTP client: {e}");
            ApiClient::new(&DownloadConfig::default(), base)
        });
        HttpTransport { api, poll_timeout }
    }

    /// A request to `/api/v1/{token}/{path}?{params}`.
    fn request(
        &self,
        method: Method,
        token: &AccessToken,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<ApiRequest<'_>, TbError> {
        let api = self.api.as_ref().map_err(|e| TbError::from(e.clone()))?;
        let mut segments = vec!["api", "v1", token.0.as_str()];
        segments.extend(path.split('/'));
        let mut url = api.url(&segments);
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        Ok(api.request(method, url.as_str()).secret(&token.0))
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn shared_attributes(
        &self,
        token: &AccessToken,
        keys: &[String],
    ) -> Result<Map<String, Value>, TbError> {
        let params = [("sharedKeys", keys.join(","))];
        let parsed: AttributesResponse = self
            .request(Method::GET, token, "attributes", &params)?
            .fetch_json()
            .await?;
        Ok(parsed.shared)
    }

    async fn next_update(
        &self,
        token: &AccessToken,
    ) -> Result<Option<Map<String, Value>>, TbError> {
        let params = [("timeout", self.poll_timeout.as_millis().to_string())];
        let request = self
            .request(Method::GET, token, "attributes/updates", &params)?
            .timeout(self.poll_timeout + Duration::from_secs(15));
        let response = match request.send().await {
            Ok(r) => r,
            // The long-poll's normal end: nothing changed.
            Err(e) if e.status() == Some(StatusCode::REQUEST_TIMEOUT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if response.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match response.json::<Value>()? {
            Value::Object(map) => Ok(Some(map)),
            other => Err(response
                .unexpected(format!("expected a JSON object, got {other}"))
                .into()),
        }
    }

    async fn telemetry(&self, token: &AccessToken, record: &Value) -> Result<(), TbError> {
        self.request(Method::POST, token, "telemetry", &[])?
            .json(record)
            .send()
            .await?;
        Ok(())
    }

    async fn chunk(
        &self,
        token: &AccessToken,
        request: ChunkRequest<'_>,
    ) -> Result<Bytes, TbError> {
        let params = [
            ("title", request.title.to_string()),
            ("version", request.version.to_string()),
            ("size", request.chunk_size.to_string()),
            ("chunk", request.index.to_string()),
        ];
        let limit = DEFAULT_MAX_BODY.max(request.chunk_size as usize);
        let response = self
            .request(
                Method::GET,
                token,
                wire::http_resource(request.kind),
                &params,
            )?
            .max_body(limit)
            .send()
            .await?;
        Ok(response.body)
    }
}
