//! The MCS device REST API, one method per resource the agent uses:
//!
//! | what                              | request                                           |
//! |-----------------------------------|---------------------------------------------------|
//! | report device firmware version    | `PUT  devices/{deviceId}/firmwares` `{"version"}`  |
//! | retrieve device available firmware| `GET  devices/{deviceId}/firmwares/available?url=true` |
//! | retrieve firmware URL             | `GET  devices/{deviceId}/firmwares/{fwId}/url`     |
//! | command server address            | `GET  devices/{deviceId}/connections`              |
//! | upload data points (status)       | `POST devices/{deviceId}/datapoints`               |
//!
//! Every request carries the device's key in the `deviceKey` header (as MCS
//! documents); the key is never part of a URL, an error or a log line. Errors name
//! the method and path only.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use super::wire;
use crate::config::McsDevice;
use crate::download::DownloadConfig;

/// Limit of one REST request, start to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Error bodies are cut to this many characters in messages.
const MAX_ERROR_TEXT: usize = 200;

#[derive(Debug, Clone, thiserror::Error)]
#[error("MCS {method} {path}: {problem}")]
pub struct RestError {
    pub method: String,
    /// The path below the base URL (no host, no key).
    pub path: String,
    pub problem: String,
    /// The server answered with this status (None: no answer).
    pub status: Option<u16>,
}

/// A client of one MCS server.
#[derive(Debug, Clone)]
pub struct Rest {
    http: Result<reqwest::Client, String>,
    base: String,
}

impl Rest {
    /// A client of `base_url` with the download settings' TLS trust and timeouts.
    /// A client that cannot be built (unreadable CA bundle) fails every request
    /// with the reason, so `check` shows it.
    pub fn new(base_url: &str, download: &DownloadConfig) -> Rest {
        Rest {
            http: build_client(download),
            base: base_url.trim_end_matches('/').to_string(),
        }
    }

    fn url(&self, segments: &[&str]) -> Result<reqwest::Url, String> {
        let mut url = reqwest::Url::parse(&self.base).map_err(|e| format!("base URL: {e}"))?;
        url.path_segments_mut()
            .map_err(|()| "base URL cannot have a path".to_string())?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        device: &McsDevice,
        segments: &[&str],
        query: Option<(&str, &str)>,
        body: Option<Vec<u8>>,
    ) -> Result<T, RestError> {
        let path = segments.join("/");
        let err = |problem: String, status: Option<u16>| RestError {
            method: method.to_string(),
            path: path.clone(),
            problem,
            status,
        };
        let http = self.http.as_ref().map_err(|e| err(e.clone(), None))?;
        let mut url = self.url(segments).map_err(|e| err(e, None))?;
        if let Some((k, v)) = query {
            url.query_pairs_mut().append_pair(k, v);
        }
        let mut request = http
            .request(method.clone(), url)
            .header("deviceKey", &device.device_key)
            .header("Content-Type", "application/json")
            .timeout(REQUEST_TIMEOUT);
        if let Some(body) = body {
            request = request.body(body);
        }
        // reqwest errors name the URL, which holds no secret.
        let response = request.send().await.map_err(|e| err(chain(&e), None))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| err(format!("reading the answer: {}", chain(&e)), None))?;
        if !status.is_success() {
            return Err(err(describe_error(status, &bytes), Some(status.as_u16())));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            err(
                format!("unexpected answer ({e}): {}", snippet(&bytes)),
                Some(status.as_u16()),
            )
        })
    }

    /// Tells MCS which version the device runs.
    pub async fn report_version(&self, device: &McsDevice, version: &str) -> Result<(), RestError> {
        let body = serde_json::to_vec(&wire::ReportFirmware {
            version: version.to_string(),
        })
        .unwrap_or_default();
        let _: serde_json::Value = self
            .call(
                Method::PUT,
                device,
                &["devices", &device.device_id, "firmwares"],
                None,
                Some(body),
            )
            .await?;
        Ok(())
    }

    /// The firmware MCS offers the device (compatible with the version it reported).
    pub async fn available(
        &self,
        device: &McsDevice,
    ) -> Result<Vec<wire::AvailableFirmware>, RestError> {
        let answer: wire::AvailableFirmwares = self
            .call(
                Method::GET,
                device,
                &["devices", &device.device_id, "firmwares", "available"],
                Some(("url", "true")),
                None,
            )
            .await?;
        Ok(answer.results)
    }

    /// The download URL (and MD5, when given) of one firmware.
    pub async fn firmware_url(
        &self,
        device: &McsDevice,
        fwid: &str,
    ) -> Result<wire::FirmwareUrl, RestError> {
        self.call(
            Method::GET,
            device,
            &["devices", &device.device_id, "firmwares", fwid, "url"],
            None,
            None,
        )
        .await
    }

    /// The command server's address for the device.
    pub async fn connection(&self, device: &McsDevice) -> Result<(String, u16), RestError> {
        let answer: wire::Connection = self
            .call(
                Method::GET,
                device,
                &["devices", &device.device_id, "connections"],
                None,
                None,
            )
            .await?;
        match answer.port.get() {
            Some(port) => Ok((answer.ip, port)),
            None => Err(RestError {
                method: "GET".into(),
                path: format!("devices/{}/connections", device.device_id),
                problem: "answer has no valid port".into(),
                status: None,
            }),
        }
    }

    /// Uploads one data point.
    pub async fn upload(
        &self,
        device: &McsDevice,
        point: wire::Datapoint,
    ) -> Result<(), RestError> {
        let body = serde_json::to_vec(&wire::Datapoints {
            datapoints: vec![point],
        })
        .unwrap_or_default();
        let _: serde_json::Value = self
            .call(
                Method::POST,
                device,
                &["devices", &device.device_id, "datapoints"],
                None,
                Some(body),
            )
            .await?;
        Ok(())
    }
}

impl RestError {
    /// Worth retrying: no answer, a server error, or throttling. A 4xx other than
    /// 408/429 will not get better by repeating the same request.
    pub fn transient(&self) -> bool {
        match self.status {
            None => true,
            Some(s) => s >= 500 || s == 408 || s == 429,
        }
    }
}

/// The download engine's client: the same TLS trust, client certificate,
/// `https_only` and timeouts as firmware downloads from the same server.
fn build_client(download: &DownloadConfig) -> Result<reqwest::Client, String> {
    crate::download::Downloader::new(download.clone())
        .map(|d| d.client().clone())
        .map_err(|e| e.to_string())
}

fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn describe_error(status: StatusCode, body: &[u8]) -> String {
    let message = serde_json::from_slice::<wire::ErrorBody>(body)
        .ok()
        .and_then(|b| b.message);
    match message {
        Some(m) => format!("HTTP {} ({})", status.as_u16(), snippet(m.as_bytes())),
        None if body.is_empty() => format!("HTTP {}", status.as_u16()),
        None => format!("HTTP {} ({})", status.as_u16(), snippet(body)),
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_TEXT)
        .collect();
    one_line.trim().to_string()
}
