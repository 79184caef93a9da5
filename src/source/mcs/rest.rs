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
//! documents), through [`crate::api::ApiClient`]: only to the configured server
//! (never across a redirect to another origin), never in an error or a log line.

use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;

use super::wire;
use crate::api::{ApiClient, ApiError, ApiRequest};
use crate::config::McsDevice;
use crate::download::DownloadConfig;

/// Limit of one REST request, start to end.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one MCS server.
#[derive(Debug, Clone)]
pub struct Rest {
    api: Result<ApiClient, ApiError>,
}

impl Rest {
    /// A client of `base_url` with the download settings' TLS trust and timeouts.
    /// A client that cannot be built (unreadable CA bundle) fails every request
    /// with the reason, so `check` shows it.
    pub fn new(base_url: &str, download: &DownloadConfig) -> Rest {
        Rest {
            api: ApiClient::new(download, base_url),
        }
    }

    /// `method` on `segments` below the base URL, with the device's key.
    fn request(
        &self,
        method: Method,
        device: &McsDevice,
        segments: &[&str],
        query: Option<(&str, &str)>,
    ) -> Result<ApiRequest<'_>, ApiError> {
        let api = self.api.as_ref().map_err(Clone::clone)?;
        let mut url = api.url(segments);
        if let Some((k, v)) = query {
            url.query_pairs_mut().append_pair(k, v);
        }
        // Errors name the path below the base URL, as MCS documents it.
        let shown = format!("MCS {method} {}", segments.join("/"));
        Ok(api
            .request(method, url.as_str())
            .shown_as(shown)
            .credential("deviceKey", device.device_key.expose())
            .timeout(REQUEST_TIMEOUT))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        device: &McsDevice,
        segments: &[&str],
        query: Option<(&str, &str)>,
        body: Option<serde_json::Value>,
    ) -> Result<T, ApiError> {
        let mut request = self.request(method, device, segments, query)?;
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.fetch_json().await
    }

    /// Tells MCS which version the device runs.
    pub async fn report_version(&self, device: &McsDevice, version: &str) -> Result<(), ApiError> {
        let body = serde_json::to_value(wire::ReportFirmware {
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
    ) -> Result<Vec<wire::AvailableFirmware>, ApiError> {
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
    ) -> Result<wire::FirmwareUrl, ApiError> {
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
    pub async fn connection(&self, device: &McsDevice) -> Result<(String, u16), ApiError> {
        let segments = ["devices", device.device_id.as_str(), "connections"];
        let response = self
            .request(Method::GET, device, &segments, None)?
            .send()
            .await?;
        let answer: wire::Connection = response.json()?;
        match answer.port.get() {
            Some(port) => Ok((answer.ip, port)),
            None => Err(response.unexpected("answer has no valid port".into())),
        }
    }

    /// Uploads one data point.
    pub async fn upload(&self, device: &McsDevice, point: wire::Datapoint) -> Result<(), ApiError> {
        let body = serde_json::to_value(wire::Datapoints {
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
