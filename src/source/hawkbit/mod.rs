//! The Eclipse hawkBit source, over the Direct Device Integration (DDI) API: the
//! gateway is one hawkBit target (controller) and its devices are the chunks of a
//! deployment. One module per DDI resource — `poll` (controller base and the
//! polling schedule), `deployment` (deploymentBase → firmware per device),
//! `feedback` (progress and outcome, through a durable queue), `config_data`
//! (attributes), `cancel` (cancelAction) — with the wire JSON in `wire`, DDI URLs
//! in `http` (the HTTP itself is [`crate::api::ApiClient`]'s) and what survives a
//! restart in `state`.
//!
//! Flow: the source's own task polls; a `deploymentBase` link is fetched, its
//! chunks are mapped onto devices and remembered (durably) as the action in flight,
//! and the engine is asked to cycle now. `firmware_for` offers each device its
//! chunk with the server's instructions; the engine downloads, verifies and
//! installs. Every progress event comes back through `report` and becomes
//! feedback; when every device of the action has an outcome the action is closed
//! with success or failure, exactly once, and the attributes are sent.

mod cancel;
pub mod config;
mod config_data;
pub mod deployment;
mod feedback;
mod http;
pub mod poll;
mod state;
pub mod wire;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{DeviceVersion, EngineLink, FirmwareSource, SourceError};
use crate::api::ApiClient;
use crate::config::{DeviceConfig, HawkbitConfig};
use crate::download::DownloadConfig;
use crate::model::{Firmware, RequestHeaders};
use crate::persist::{Backoff, Outbox, SendError};
use crate::progress::ProgressEvent;
use reqwest::Method;
use state::Saved;

/// Where the controller id comes from when the config names none.
const MACHINE_ID: &str = "/etc/machine-id";

pub struct HawkbitSource {
    config: HawkbitConfig,
    controller_id: String,
    api: ApiClient,
    devices: Vec<DeviceConfig>,
    /// `hawkbit.json`: the action in flight and the feedback queue.
    feedback: Outbox<Saved>,
    inner: Mutex<Inner>,
}

/// Mutable state that is not saved; never held across an await, nor together
/// with the `feedback` document.
#[derive(Default)]
struct Inner {
    versions: Vec<DeviceVersion>,
    config_data: config_data::Pending,
    /// The last root answer and its `ETag`, for conditional polls (hawkBit
    /// answers 304 when nothing changed).
    root: Option<(String, wire::ControllerBase)>,
}

impl HawkbitSource {
    /// A source for `config`, talking through a client with the download
    /// settings, remembering its state in `<state_dir>/hawkbit.json`.
    pub fn new(
        config: &HawkbitConfig,
        download: &DownloadConfig,
        devices: &[DeviceConfig],
        state_dir: &Path,
    ) -> Result<HawkbitSource, SourceError> {
        let controller_id = match &config.controller_id {
            Some(id) => id.clone(),
            None => read_machine_id(Path::new(MACHINE_ID))?,
        };
        let base = format!(
            "{}/{}/controller/v1/{}",
            config.url, config.tenant, controller_id
        );
        let api = api_client(download, &base, config.auth.header())
            .map_err(|e| SourceError::Config(format!("hawkBit HTTP client: {e}")))?;
        std::fs::create_dir_all(state_dir).map_err(|source| SourceError::Io {
            context: state_dir.display().to_string(),
            source,
        })?;
        let backoff = Backoff {
            base: download.backoff_base,
            max: download.backoff_max,
        };
        let feedback = Outbox::open("hawkBit feedback", state::file(state_dir), backoff);
        Ok(HawkbitSource {
            config: config.clone(),
            controller_id,
            api,
            devices: devices.to_vec(),
            feedback,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `hawkbit.json` as it is now; a failure is logged (the state in
    /// memory still drives this run).
    fn persist(&self) {
        self.feedback.lock().save();
    }

    /// Sends queued feedback in order until the queue is empty or its head waits
    /// for a retry.
    async fn flush(&self) {
        self.feedback.flush().await;
    }

    /// Delivers one queued feedback message.
    async fn send_feedback(&self, item: state::Queued) -> Result<(), SendError> {
        self.api
            .request(Method::POST, &item.url)
            .json(&item.body)
            .send()
            .await?;
        Ok(())
    }

    /// The `Authorization` header for an artifact URL on the hawkBit server itself;
    /// none for another host (a CDN must not see the token).
    fn download_headers(&self, url: &str) -> RequestHeaders {
        RequestHeaders(self.api.credentials_for(url))
    }

    fn device(&self, id: &str) -> Option<&DeviceConfig> {
        self.devices.iter().find(|d| d.id == id)
    }
}

/// The DDI client: HAL+JSON, the `Authorization` header (when configured) only
/// to the hawkBit server's origin.
fn api_client(
    download: &DownloadConfig,
    base: &str,
    authorization: Option<String>,
) -> Result<ApiClient, crate::api::ApiError> {
    let api =
        ApiClient::new(download, base)?.header(reqwest::header::ACCEPT, "application/hal+json");
    match authorization {
        Some(auth) => api.credential("Authorization", &auth),
        None => Ok(api),
    }
}

fn read_machine_id(path: &Path) -> Result<String, SourceError> {
    let id = std::fs::read_to_string(path).map_err(|source| SourceError::Io {
        context: format!(
            "hawkBit controller id: {} (set source.controller_id)",
            path.display()
        ),
        source,
    })?;
    let id = id.trim();
    if id.is_empty() {
        return Err(SourceError::Config(format!(
            "hawkBit controller id: {} is empty (set source.controller_id)",
            path.display()
        )));
    }
    Ok(id.to_string())
}

#[async_trait]
impl FirmwareSource for HawkbitSource {
    fn describe(&self) -> String {
        format!(
            "hawkbit {} tenant {} controller {}",
            self.config.url, self.config.tenant, self.controller_id
        )
    }

    async fn firmware_for(&self, device: &DeviceConfig) -> Result<Vec<Firmware>, SourceError> {
        let saved = self.feedback.lock();
        let Some(action) = &saved.action else {
            return Ok(Vec::new());
        };
        let Some(d) = action.devices.get(&device.id) else {
            return Ok(Vec::new());
        };
        if matches!(d.phase, state::DevicePhase::Done { .. }) {
            return Ok(Vec::new());
        }
        let offer = deployment::firmware(&action.base, d.chunk, device, &RequestHeaders::default())
            .map(|mut fw| {
                if let crate::model::FirmwareLocation::Url(u) = &fw.location {
                    fw.download_headers = self.download_headers(u);
                }
                fw
            });
        Ok(offer.into_iter().collect())
    }

    async fn report(&self, event: &ProgressEvent) {
        if self.on_event(event).await {
            self.flush().await;
        }
        self.send_config_data().await;
    }

    async fn report_versions(&self, versions: &[DeviceVersion]) {
        if self.on_versions(versions).await {
            self.flush().await;
        }
        self.send_config_data().await;
    }

    async fn run(&self, link: EngineLink, shutdown: CancellationToken) {
        let drain = self
            .feedback
            .run(|item| self.send_feedback(item), &shutdown);
        let poll = async {
            // Feedback queued before a restart goes out first.
            self.flush().await;
            self.poll_loop(link, shutdown.clone()).await;
        };
        tokio::join!(drain, poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("machine-id");
        std::fs::write(&p, "0123abcd\n").unwrap();
        assert_eq!(read_machine_id(&p).unwrap(), "0123abcd");
        std::fs::write(&p, "\n").unwrap();
        assert!(
            read_machine_id(&p)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let missing = read_machine_id(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("controller_id"), "{missing}");
    }
}
