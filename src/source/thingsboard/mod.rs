//! The ThingsBoard source: ThingsBoard's OTA protocol over its device API, HTTP
//! (default) or MQTT. Each bound `[[device]]` is one ThingsBoard device (its own
//! access token; the gateway's `access_token` for `gateway_device` with `fw_*` and
//! `software_device` with `sw_*`). The source
//!
//! - learns the assigned package from the shared attributes `fw_title`,
//!   `fw_version`, `fw_checksum`, `fw_checksum_algorithm`, `fw_size` (or `sw_*`):
//!   requested at start, then re-requested whenever ThingsBoard pushes an update
//!   (HTTP long-poll, MQTT subscription), which also asks the engine to check now;
//! - offers it as [`FirmwareLocation::Remote`]: the engine's download step fetches
//!   it chunk by chunk through the package endpoint ([`chunks`]), resumable by
//!   chunk index, and verifies it with the checksum ThingsBoard gave (MD5, SHA256,
//!   SHA384, SHA512, CRC32, MURMUR3_32, MURMUR3_128);
//! - reports progress as telemetry (mapping in [`Reporter::values_for`]) through a
//!   durable queue ([`state`], a [`crate::persist::Outbox`]) that one task drains
//!   with backoff, so each report reaches the server and survives a restart;
//! - does not offer an assignment again after its update failed, until
//!   ThingsBoard pushes an attribute update.
//!
//! Server trouble (timeouts, 5xx, malformed JSON) is logged and retried with
//! backoff; nothing here panics on a reply. Tokens never appear in logs or errors.

pub mod chunks;
pub mod config;
pub mod http;
pub mod mqtt;
pub mod state;
pub mod transport;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::{DeviceVersion, EngineLink, FirmwareSource, SourceError};
use crate::config::{
    AccessToken, DeviceConfig, ThingsboardBinding, ThingsboardConfig, ThingsboardTransport,
};
use crate::download::retry::backoff;
use crate::model::{Firmware, FirmwareLocation, RemoteImage};
use crate::persist::{Backoff, SendError};
use crate::progress::{Outcome, ProgressEvent, ProgressKind, ProgressStep};
use crate::source::server_text;
use state::SourceState;
use transport::{TbError, Transport};
use wire::{Assignment, OtaState};

/// Percent reports are sent in steps of this many percent (and at 100).
const PERCENT_STEP: u8 = 10;

pub struct ThingsboardSource {
    config: ThingsboardConfig,
    transport: Arc<dyn Transport>,
    state: SourceState,
    /// device id → the assignment last read (`None`: nothing assigned); absent
    /// until the attributes were read once.
    assigned: Mutex<HashMap<String, Option<Assignment>>>,
    /// device id → what was reported of its running update.
    tracks: Mutex<HashMap<String, Track>>,
    /// device id → the version last reported as `current_*_version`.
    reported: Mutex<HashMap<String, String>>,
}

/// What was reported of one update.
#[derive(Debug, Default)]
struct Track {
    version: String,
    verified: bool,
    percent: Option<(ProgressStep, u8)>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn source_error(message: impl std::fmt::Display) -> SourceError {
    SourceError::Io {
        context: "thingsboard".into(),
        source: std::io::Error::other(message.to_string()),
    }
}

impl ThingsboardSource {
    /// The source the config describes; fails when the MQTT transport's TLS files
    /// (`ca_bundle`, `client_cert`, `client_key`) cannot be used.
    pub fn new(config: ThingsboardConfig) -> Result<ThingsboardSource, SourceError> {
        let transport: Arc<dyn Transport> = match &config.transport {
            ThingsboardTransport::Http { url } => Arc::new(http::HttpTransport::new(
                &config.download,
                url,
                config.poll_timeout,
            )),
            ThingsboardTransport::Mqtt { host, port, tls } => {
                let d = &config.download;
                let tls = tls
                    .then(|| {
                        crate::tls::client_config(
                            d.ca_bundle.as_deref(),
                            d.client_cert.as_deref(),
                            d.client_key.as_deref(),
                        )
                    })
                    .transpose()
                    .map_err(|e| source_error(format!("MQTT TLS: {e}")))?;
                Arc::new(mqtt::MqttTransport::new(
                    host,
                    *port,
                    tls,
                    config.chunk_size,
                    config.poll_timeout,
                ))
            }
        };
        Ok(Self::with_transport(config, transport))
    }

    /// The source over an explicit transport (tests plug their own in).
    pub fn with_transport(
        config: ThingsboardConfig,
        transport: Arc<dyn Transport>,
    ) -> ThingsboardSource {
        let backoff = Backoff {
            base: config.download.backoff_base,
            max: config.download.backoff_max,
        };
        ThingsboardSource {
            state: SourceState::open(&config.state_dir, backoff),
            config,
            transport,
            assigned: Mutex::new(HashMap::new()),
            tracks: Mutex::new(HashMap::new()),
            reported: Mutex::new(HashMap::new()),
        }
    }

    fn binding(&self, device_id: &str) -> Option<&ThingsboardBinding> {
        self.config
            .bindings
            .iter()
            .find(|b| b.device_id == device_id)
    }

    /// Distinct tokens, each with its bindings.
    fn tokens(&self) -> Vec<(AccessToken, Vec<ThingsboardBinding>)> {
        let mut out: Vec<(AccessToken, Vec<ThingsboardBinding>)> = Vec::new();
        for b in &self.config.bindings {
            match out.iter_mut().find(|(t, _)| *t == b.token) {
                Some((_, list)) => list.push(b.clone()),
                None => out.push((b.token.clone(), vec![b.clone()])),
            }
        }
        out
    }

    /// Reads the OTA attributes of every binding of `token`; true when an
    /// assignment changed.
    async fn refresh(
        &self,
        token: &AccessToken,
        bindings: &[ThingsboardBinding],
    ) -> Result<bool, TbError> {
        let mut keys = Vec::new();
        for b in bindings {
            keys.extend(wire::shared_keys(b.kind));
        }
        let shared = self.transport.shared_attributes(token, &keys).await?;
        let mut changed = false;
        for b in bindings {
            let assignment = match wire::assignment(&shared, b.kind) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(device = %b.device_id, "thingsboard: unusable attributes: {e}");
                    None
                }
            };
            let mut assigned = self.lock_assigned();
            if assigned.get(&b.device_id) != Some(&assignment) {
                if let Some(a) = &assignment {
                    // Debug-quoted: the strings are checked only when offered.
                    tracing::info!(device = %b.device_id, firmware_version = ?a.version,
                        "thingsboard assigns {:?} {:?}", a.title, a.version);
                }
                assigned.insert(b.device_id.clone(), assignment);
                changed = true;
            }
        }
        Ok(changed)
    }

    fn lock_assigned(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Assignment>>> {
        self.assigned.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn assignment(&self, device_id: &str) -> Option<Assignment> {
        self.lock_assigned().get(device_id).cloned().flatten()
    }

    fn enqueue(&self, binding: &ThingsboardBinding, values: &[(&str, Value)]) {
        let values = wire::telemetry(binding.kind, values);
        self.state.enqueue(&binding.device_id, now_ms(), values);
        self.state.outbox.wake();
    }

    /// Watches one token's attributes until `shutdown`.
    async fn watch(
        &self,
        token: &AccessToken,
        bindings: &[ThingsboardBinding],
        link: &EngineLink,
        shutdown: &CancellationToken,
    ) {
        let mut refresh = true;
        let mut failures = 0u32;
        let who: Vec<&str> = bindings.iter().map(|b| b.device_id.as_str()).collect();
        let who = who.join(",");
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let result = if refresh {
                self.refresh(token, bindings).await.map(|changed| {
                    refresh = false;
                    if changed {
                        link.check_now();
                    }
                })
            } else {
                let update = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    u = self.transport.next_update(token) => u,
                };
                update.map(|u| {
                    if let Some(map) = u
                        && map
                            .keys()
                            .any(|k| k.starts_with("fw_") || k.starts_with("sw_") || k == "deleted")
                    {
                        // A new assignment (or the same one assigned again) is
                        // offered even if its last update failed.
                        for b in bindings {
                            self.state.set_failed(&b.device_id, None);
                        }
                        refresh = true;
                    }
                })
            };
            match result {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures += 1;
                    let wait = backoff(
                        failures,
                        self.config.download.backoff_base,
                        self.config.download.backoff_max,
                    )
                    .max(Duration::from_millis(10));
                    tracing::warn!(device = %who, "thingsboard: {e}; retrying in {wait:?}");
                    refresh = true;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// Sends one queued report; a report of a device no longer bound is dropped.
    async fn send_report(&self, report: state::Queued) -> Result<(), SendError> {
        let device = &report.device_id;
        let Some(binding) = self.binding(device) else {
            return Err(SendError::Permanent(format!(
                "{device}: a queued report of a device no longer bound"
            )));
        };
        let record = wire::timestamped(report.ts_ms, &report.values);
        match self.transport.telemetry(&binding.token, &record).await {
            Ok(()) => Ok(()),
            Err(e) if e.retryable() => Err(SendError::transient(format!("{device}: {e}"))),
            Err(e) => Err(SendError::Permanent(format!("{device}: {e}"))),
        }
    }

    /// The telemetry one progress event becomes (see
    /// docs/source-thingsboard.md): ThingsBoard's states for the steps it knows, `*_progress_step` and
    /// `*_progress` for the rest and for percent.
    fn values_for(&self, event: &ProgressEvent, title: &str) -> Vec<Vec<(&'static str, Value)>> {
        let mut tracks = self.tracks.lock().unwrap_or_else(|p| p.into_inner());
        let track = tracks.entry(event.device_id.clone()).or_default();
        if track.version != event.firmware_version {
            *track = Track {
                version: event.firmware_version.clone(),
                ..Track::default()
            };
        }
        let state = |s: OtaState| vec![("state", json!(s.as_str()))];
        let step_detail = |step: ProgressStep, pct: u8| {
            vec![
                ("progress_step", json!(step.to_string())),
                ("progress", json!(pct)),
            ]
        };
        let mut out = Vec::new();
        let verified = |track: &mut Track, out: &mut Vec<Vec<(&'static str, Value)>>| {
            if !track.verified {
                track.verified = true;
                out.push(state(OtaState::Downloaded));
                out.push(state(OtaState::Verified));
            }
        };
        match &event.kind {
            ProgressKind::Sequence(_) => {}
            ProgressKind::Step(ProgressStep::Downloading) => {
                *track = Track {
                    version: event.firmware_version.clone(),
                    ..Track::default()
                };
                let mut v = state(OtaState::Downloading);
                v.push(("target_title", json!(title)));
                v.push(("target_version", json!(event.firmware_version)));
                out.push(v);
            }
            ProgressKind::Step(step @ ProgressStep::Transferring) => {
                verified(track, &mut out);
                out.push(step_detail(*step, 0));
            }
            ProgressKind::Step(ProgressStep::Updating) => {
                verified(track, &mut out);
                out.push(state(OtaState::Updating));
            }
            ProgressKind::Step(step) => out.push(step_detail(*step, 0)),
            ProgressKind::Percent(step, pct) => {
                let bucket = if *pct >= 100 {
                    100
                } else {
                    pct - pct % PERCENT_STEP
                };
                if bucket > 0 && track.percent != Some((*step, bucket)) {
                    track.percent = Some((*step, bucket));
                    out.push(step_detail(*step, bucket));
                }
            }
            ProgressKind::Pending => out.push(vec![("progress_step", json!("WAITING"))]),
            ProgressKind::Finished(Outcome::Success) => {
                let mut v = state(OtaState::Updated);
                v.push(("current_title", json!(title)));
                v.push(("current_version", json!(event.firmware_version)));
                out.push(v);
            }
            ProgressKind::Finished(outcome) => {
                let reason = match outcome {
                    Outcome::Failed(r) => r.clone(),
                    _ => "canceled".to_string(),
                };
                let mut v = state(OtaState::Failed);
                v.push(("error", json!(reason)));
                out.push(v);
            }
        }
        out
    }
}

#[async_trait]
impl FirmwareSource for ThingsboardSource {
    fn describe(&self) -> String {
        match &self.config.transport {
            ThingsboardTransport::Http { url } => format!("thingsboard {url}"),
            ThingsboardTransport::Mqtt { host, port, tls } => {
                let scheme = if *tls { "mqtts" } else { "mqtt" };
                format!("thingsboard {scheme}://{host}:{port}")
            }
        }
    }

    async fn firmware_for(&self, device: &DeviceConfig) -> Result<Vec<Firmware>, SourceError> {
        let Some(binding) = self.binding(&device.id).cloned() else {
            return Ok(Vec::new());
        };
        let known = self.lock_assigned().contains_key(&device.id);
        if !known {
            let bindings: Vec<ThingsboardBinding> = self
                .config
                .bindings
                .iter()
                .filter(|b| b.token == binding.token)
                .cloned()
                .collect();
            self.refresh(&binding.token, &bindings)
                .await
                .map_err(source_error)?;
        }
        let Some(assignment) = self.assignment(&device.id) else {
            return Ok(Vec::new());
        };
        if self.state.failed(&device.id).as_ref() == Some(&assignment) {
            tracing::debug!(device = %device.id, firmware_version = ?assignment.version,
                "not offering again: its update failed (waiting for a new assignment)");
            return Ok(Vec::new());
        }
        let checked = server_text::title(&assignment.title)
            .and_then(|()| server_text::version(&assignment.version))
            .map_err(|e| e.to_string())
            .and_then(|()| assignment.checksum(binding.kind).map_err(|e| e.to_string()));
        let checksum = match checked {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(device = %device.id, "thingsboard: package refused: {e}");
                self.enqueue(
                    &binding,
                    &[
                        ("state", json!(OtaState::Failed.as_str())),
                        ("error", json!(e)),
                    ],
                );
                self.state.set_failed(&device.id, Some(assignment));
                return Ok(Vec::new());
            }
        };
        let fetcher = chunks::ChunkFetcher {
            transport: self.transport.clone(),
            token: binding.token.clone(),
            kind: binding.kind,
            title: assignment.title.clone(),
            version: assignment.version.clone(),
            size: assignment.size,
            chunk_size: self.config.chunk_size,
            download: self.config.download.clone(),
        };
        let mut firmware = Firmware::new(
            &device.device_type,
            &assignment.version,
            FirmwareLocation::Remote(RemoteImage {
                name: format!(
                    "thingsboard:{}/{}/{}",
                    wire::prefix(binding.kind),
                    assignment.title,
                    assignment.version
                ),
                fetcher: Arc::new(fetcher),
            }),
        );
        firmware.size = assignment.size;
        firmware.checksums = checksum.into_iter().collect();
        firmware.description = Some(assignment.title.clone());
        Ok(vec![firmware])
    }

    async fn report(&self, event: &ProgressEvent) {
        let Some(binding) = self.binding(&event.device_id).cloned() else {
            return;
        };
        let assignment = self
            .assignment(&event.device_id)
            .filter(|a| a.version == event.firmware_version);
        let title = assignment.as_ref().map_or("", |a| a.title.as_str());
        for values in self.values_for(event, title) {
            self.enqueue(&binding, &values);
        }
        match &event.kind {
            ProgressKind::Finished(Outcome::Success) => {
                self.state.set_title(&event.device_id, title);
                self.state.set_failed(&event.device_id, None);
                self.reported
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(event.device_id.clone(), event.firmware_version.clone());
            }
            ProgressKind::Finished(_) => {
                if let Some(a) = assignment {
                    self.state.set_failed(&event.device_id, Some(a));
                }
            }
            _ => {}
        }
    }

    async fn report_versions(&self, versions: &[DeviceVersion]) {
        for v in versions {
            let (Some(binding), Some(version)) = (self.binding(&v.device_id).cloned(), &v.version)
            else {
                continue;
            };
            {
                let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
                if reported.get(&v.device_id) == Some(version) {
                    continue;
                }
                reported.insert(v.device_id.clone(), version.clone());
            }
            let title = self
                .assignment(&v.device_id)
                .filter(|a| a.version == *version)
                .map(|a| a.title)
                .or_else(|| self.state.title(&v.device_id))
                .unwrap_or_else(|| v.device_type.clone());
            self.enqueue(
                &binding,
                &[
                    ("current_title", json!(title)),
                    ("current_version", json!(version)),
                ],
            );
        }
    }

    async fn run(&self, link: EngineLink, shutdown: CancellationToken) {
        let tokens = self.tokens();
        let watchers = tokens
            .iter()
            .map(|(token, bindings)| self.watch(token, bindings, &link, &shutdown));
        let reports = self
            .state
            .outbox
            .run(|report| self.send_report(report), &shutdown);
        tokio::join!(futures_util::future::join_all(watchers), reports);
    }
}

/// Queued reports as `(device id, values)`, oldest first (for tests and `status`).
pub fn queued_reports(source: &ThingsboardSource) -> Vec<(String, Map<String, Value>)> {
    source
        .state
        .queued()
        .into_iter()
        .map(|q| (q.device_id, q.values))
        .collect()
}
