//! The MediaTek Cloud Sandbox (MCS) source: firmware offered through the MCS device
//! REST API, firmware pushed through the MCS command server, and progress,
//! outcomes and versions reported back.
//!
//! How it fits: `firmware_for` asks MCS what the device may install (`rest`), or —
//! when an operator pressed *Push* and the command channel (`push`) delivered a
//! valid `deviceId,deviceKey,timestamp,FOTA,version,MD5,URL` line — offers exactly
//! that pushed firmware with `update: Forced`, so the engine installs it at once
//! regardless of the device's policy. The engine downloads the URL and verifies
//! the MD5 itself. A push is kept (durably, in `state`) until its update finishes,
//! so a push during a running update waits for it and then runs: the source asks
//! the engine for a check now when the push arrives and again every
//! [`RECHECK_INTERVAL`] while it is pending; the engine never runs two updates of
//! one device at once. Progress steps and outcomes go to a status data channel and
//! the running version to `PUT devices/{id}/firmwares`, through a durable outbox
//! that a background task drains with backoff — each report is sent once and
//! survives a restart.
//!
//! **Devices.** MCS gives every device its own `deviceId`/`deviceKey`. The gateway
//! is one MCS device (`device_id`/`device_key` in `[source]`, bound to the
//! `[[device]]` named by `gateway_device`, default `gateway`); each attached device
//! that is its own MCS device is listed in `[source.devices]`. A push reaches the
//! agent device whose MCS identity's connection it arrived on and whose id and
//! key it carries. Devices without an MCS identity get nothing from this source.
//!
//! **Found vs assumed** (public MCS docs in the `Mediatek-Cloud/mcs-resources` and
//! `Mediatek-Cloud/MCS` repositories; the service itself was retired):
//! found — base `https://api.mediatek.com/mcs/v2`, the `deviceKey` header, the
//! report/available/url/connections/datapoints resources and their documented
//! fields (see `wire`), the push line format, the TCP command server address from
//! `connections`, the heartbeat `deviceId,deviceKey,timestamp` at least every 120 s;
//! MCS filters *available* by compatibility with the version the device reported.
//! The documented *available* answer carries no MD5, and MediaTek's own push
//! example sends the literal `null`: such firmware is offered without a checksum
//! and `[trust]` decides (a signed bundle needs none; unsigned, only with
//! `allow_weak_checksums`). Assumed — an MD5 in the REST answers when present
//! (`md5` or `checksum`), a `prerequisites` list of
//! versions per firmware (checked again by the engine), millisecond timestamps (seconds also accepted), and a string data
//! channel (`status_channel`, default `fota_status`) as the place for progress
//! and outcomes, since MCS has no FOTA status resource. The values are
//! `<version>,<STEP>` for steps and `<version>,SUCCESS`, `<version>,FAILED,<reason>`,
//! `<version>,CANCELED` for outcomes.

pub mod config;
pub mod framing;
pub mod push;
pub mod rest;
pub mod state;
pub mod wire;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::{DeviceVersion, EngineLink, FirmwareSource, SourceError};
use crate::checksum::{Checksum, ChecksumAlgorithm};
use crate::config::{DeviceConfig, McsConfig, McsDevice};
use crate::download::DownloadConfig;
use crate::model::{Deployment, Firmware, FirmwareLocation, Handling, Prerequisite};
use crate::persist::{Backoff, Guard, Outbox, SendError};
use crate::progress::{Outcome, ProgressEvent, ProgressKind};
use crate::source::server_text;
use crate::store::{Store, now_secs};
use push::{Expect, LineError, Push};
use rest::Rest;
use state::{Report, ReportKind, State};

/// While a push waits for its update, the engine is asked for a check this often.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Outbox retry backoff: first step and ceiling.
const OUTBOX_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    max: Duration::from_secs(5 * 60),
};

/// An MCS identity and the agent device it stands for.
#[derive(Debug, Clone)]
struct Bound {
    mcs: McsDevice,
    device: DeviceConfig,
}

struct Inner {
    config: McsConfig,
    bound: Vec<Bound>,
    rest: Rest,
    https_only: bool,
    state_dir: std::path::PathBuf,
    /// `mcs/state.json`: pushes, replay protection and the report outbox.
    outbox: Outbox<State>,
    /// Agent device id → the version it runs, from the engine.
    versions: Mutex<HashMap<String, Option<String>>>,
    /// Agent device id → the version last queued for the server.
    reported_versions: Mutex<HashMap<String, String>>,
    /// Agent device id → the outcome key start-up reconciliation queued: the
    /// engine's own event for that outcome (recovery) may still arrive, and must
    /// not queue it a second time.
    reconciled: Mutex<HashMap<String, String>>,
    link: Mutex<Option<EngineLink>>,
}

/// The MCS source. Cheap to share; all state is behind one `Arc`.
pub struct McsSource {
    inner: Arc<Inner>,
}

impl McsSource {
    /// The source for `config`; `devices` are all configured devices (those with
    /// an MCS identity are used), `download` gives TLS trust and `https_only`,
    /// `state_dir` holds `mcs/state.json`.
    pub fn new(
        config: &McsConfig,
        devices: &[DeviceConfig],
        download: &DownloadConfig,
        state_dir: &Path,
    ) -> McsSource {
        let bound = config
            .devices
            .iter()
            .filter_map(|m| {
                let device = devices.iter().find(|d| d.id == m.agent_device)?;
                Some(Bound {
                    mcs: m.clone(),
                    device: device.clone(),
                })
            })
            .collect();
        let outbox = Outbox::open("MCS reports", state::file(state_dir), OUTBOX_BACKOFF);
        McsSource {
            inner: Arc::new(Inner {
                rest: Rest::new(&config.base_url, download),
                config: config.clone(),
                bound,
                https_only: download.https_only,
                state_dir: state_dir.to_path_buf(),
                outbox,
                versions: Mutex::new(HashMap::new()),
                reported_versions: Mutex::new(HashMap::new()),
                reconciled: Mutex::new(HashMap::new()),
                link: Mutex::new(None),
            }),
        }
    }

    /// Reports not yet acknowledged by the server (for tests and diagnostics).
    pub fn queued_reports(&self) -> usize {
        self.inner.state().outbox.len()
    }

    /// The pushed version `device_id` is still to get, if any.
    pub fn pending_push(&self, device_id: &str) -> Option<String> {
        self.inner
            .state()
            .pending
            .get(device_id)
            .map(|p| p.version.clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    /// Records `version` as reported for `device`; false when it already was, so
    /// each version is reported once however many paths learn it.
    fn mark_reported(&self, device: &str, version: &str) -> bool {
        let mut reported = lock(&self.reported_versions);
        if reported.get(device).map(String::as_str) == Some(version) {
            return false;
        }
        reported.insert(device.to_string(), version.to_string());
        true
    }

    fn state(&self) -> Guard<'_, State> {
        self.outbox.lock()
    }

    fn bound_agent(&self, agent_device: &str) -> Option<&Bound> {
        self.bound.iter().find(|b| b.device.id == agent_device)
    }

    fn bound_mcs(&self, mcs_device_id: &str) -> Option<&Bound> {
        self.bound.iter().find(|b| b.mcs.device_id == mcs_device_id)
    }

    /// Changes the state and saves it; a failed save is logged (the change stays
    /// in memory and is saved with the next one).
    fn change<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        self.outbox.change(f)
    }

    fn check_now(&self) {
        if let Some(link) = lock(&self.link).as_ref() {
            link.check_now();
        }
    }

    /// Queues a status data point for `agent_device`, if a status channel is set.
    fn status(state: &mut State, config: &McsConfig, mcs: &McsDevice, value: String) {
        if let Some(channel) = &config.status_channel {
            state.enqueue(
                &mcs.device_id,
                ReportKind::Status {
                    channel: channel.clone(),
                    timestamp_ms: now_ms(),
                    value,
                },
            );
        }
    }

    /// Handles one command line of `mcs`'s channel.
    fn on_line(&self, mcs: &McsDevice, line: &str) {
        let Some(bound) = self.bound_mcs(&mcs.device_id) else {
            return;
        };
        let agent = &bound.device.id;
        let current = lock(&self.versions).get(agent).cloned().flatten();
        let last = self.state().last_push.get(&mcs.device_id).copied();
        let expect = Expect {
            device: mcs,
            scheme: bound.device.version_scheme,
            only_newer: bound.device.only_newer,
            current: current.as_deref(),
            last_accepted_ms: last,
            now_ms: now_ms(),
            max_age: self.config.max_push_age,
            https_only: self.https_only,
        };
        match push::validate(line, &expect) {
            Ok(push) => {
                tracing::info!(device = %agent, mcs_device = %mcs.device_id,
                    firmware_version = %push.version, "firmware push accepted; updating now");
                self.change(|s| {
                    s.last_push.insert(mcs.device_id.clone(), push.timestamp_ms);
                    if let Some(old) = s.pending.insert(agent.clone(), push) {
                        tracing::info!(device = %agent, firmware_version = %old.version,
                            "an earlier push not yet installed is replaced");
                    }
                });
                self.check_now();
            }
            Err(LineError::NotFota(what)) => {
                tracing::debug!(mcs_device = %mcs.device_id, "command channel: ignoring {what}");
            }
            Err(LineError::Refused(reason)) => {
                tracing::warn!(device = %agent, mcs_device = %mcs.device_id,
                    "command channel: ignoring push: {reason}");
            }
        }
    }

    /// The firmware MCS offers `bound`'s device over REST.
    async fn available(&self, bound: &Bound) -> Result<Vec<Firmware>, SourceError> {
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        for item in self
            .rest
            .available(&bound.mcs)
            .await
            .map_err(source_error)?
        {
            let text = server_text::version(&item.version)
                .and_then(|()| item.name.as_deref().map_or(Ok(()), server_text::title))
                .and_then(|()| {
                    let mut prerequisites = item.prerequisites.iter().flatten();
                    prerequisites.try_for_each(|p| server_text::version(p))
                });
            if let Err(e) = text {
                skipped.push(format!("a firmware refused: {e}"));
                continue;
            }
            let mut url = item.url.clone();
            let mut md5 = item.md5.clone().or_else(|| item.checksum.clone());
            if url.is_none() || md5.is_none() {
                let answer = self
                    .rest
                    .firmware_url(&bound.mcs, &item.fwid)
                    .await
                    .map_err(source_error)?;
                url = Some(answer.url);
                md5 = md5.or(answer.md5);
            }
            let Some(url) = url else {
                skipped.push(format!("{} has no URL", item.version));
                continue;
            };
            // The documented answer has no MD5 at all; `[trust]` decides whether
            // firmware without one (or with MD5 only) may be installed.
            let checksum = match md5.as_deref().filter(|m| !wire::is_null(m)) {
                None => None,
                Some(m) => match Checksum::new(ChecksumAlgorithm::Md5, m) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        skipped.push(format!("{}: {e}", item.version));
                        continue;
                    }
                },
            };
            let mut fw = Firmware::new(
                &bound.device.device_type,
                &item.version,
                FirmwareLocation::Url(url),
            );
            fw.checksums.extend(checksum);
            fw.prerequisite = item
                .prerequisites
                .filter(|p| !p.is_empty())
                .map(Prerequisite::OneOf);
            fw.model = item.name;
            fw.description = item.description;
            out.push(fw);
        }
        for s in &skipped {
            tracing::warn!(device = %bound.device.id, "MCS firmware not offered: {s}");
        }
        if out.is_empty() && !skipped.is_empty() {
            return Err(source_error(format!(
                "GET devices/{}/firmwares/available: no usable firmware: {}",
                bound.mcs.device_id,
                skipped.join("; ")
            )));
        }
        Ok(out)
    }

    /// Sends one queued report; one of a device no longer configured is dropped.
    async fn send_report(&self, report: Report) -> Result<(), SendError> {
        let Some(bound) = self.bound_mcs(&report.mcs_device_id) else {
            return Err(SendError::Permanent(format!(
                "MCS device {}: the device is no longer configured",
                report.mcs_device_id
            )));
        };
        let sent = match &report.what {
            ReportKind::Version { version } => self.rest.report_version(&bound.mcs, version).await,
            ReportKind::Status {
                channel,
                timestamp_ms,
                value,
            } => {
                let point = wire::Datapoint {
                    data_chn_id: channel.clone(),
                    timestamp: *timestamp_ms,
                    values: wire::DatapointValue {
                        value: value.clone(),
                    },
                };
                self.rest.upload(&bound.mcs, point).await
            }
        };
        let device = &bound.device.id;
        sent.map_err(|e| match SendError::from(e) {
            SendError::Transient {
                retry_after,
                message,
            } => SendError::Transient {
                retry_after,
                message: format!("{device}: {message}"),
            },
            SendError::Permanent(message) => SendError::Permanent(format!("{device}: {message}")),
        })
    }

    /// Queues outcomes the engine resolved while nobody listened (start-up
    /// recovery runs before the source's task).
    fn reconcile_outcomes(&self) {
        let Ok(store) = Store::open(&self.state_dir) else {
            return;
        };
        for bound in &self.bound {
            let Ok(device_state) = store.load(&bound.device.id) else {
                continue;
            };
            let Some(record) = device_state.last_outcome else {
                continue;
            };
            let key = outcome_key(&record.version, &record.outcome);
            // Checked and queued under the document lock: `report` may be
            // queuing the same outcome from the engine's recovery event.
            self.change(|s| {
                if s.last_outcome.get(&bound.device.id) == Some(&key) {
                    return;
                }
                lock(&self.reconciled).insert(bound.device.id.clone(), key.clone());
                s.last_outcome.insert(bound.device.id.clone(), key);
                let value = outcome_value(&record.version, &record.outcome);
                Self::status(s, &self.config, &bound.mcs, value);
                if s.pending
                    .get(&bound.device.id)
                    .is_some_and(|p| p.version == record.version)
                {
                    s.pending.remove(&bound.device.id);
                }
            });
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(now_secs() * 1000, |d| d.as_millis() as u64)
}

fn outcome_key(version: &str, outcome: &Outcome) -> String {
    format!("{version} {outcome}")
}

/// The status channel value of an outcome.
fn outcome_value(version: &str, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Success => format!("{version},SUCCESS"),
        Outcome::Failed(reason) => format!("{version},FAILED,{reason}"),
        Outcome::Canceled => format!("{version},CANCELED"),
    }
}

fn source_error(e: impl std::fmt::Display) -> SourceError {
    SourceError::Io {
        context: "MCS".into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// The command channel's view of the source.
struct Sink(Arc<Inner>);

impl push::LineSink for Sink {
    async fn address(&self, device: &McsDevice) -> Result<String, String> {
        match &self.0.config.command_server {
            Some(a) => Ok(a.clone()),
            None => self
                .0
                .rest
                .connection(device)
                .await
                .map(|(ip, port)| format!("{ip}:{port}"))
                .map_err(|e| e.to_string()),
        }
    }

    fn line(&self, device: &McsDevice, line: &str) {
        self.0.on_line(device, line);
    }
}

#[async_trait]
impl FirmwareSource for McsSource {
    fn startup_spread(&self) -> std::time::Duration {
        self.inner.config.startup_spread
    }

    fn describe(&self) -> String {
        let ids: Vec<String> = self
            .inner
            .bound
            .iter()
            .map(|b| format!("{}={}", b.device.id, b.mcs.device_id))
            .collect();
        format!("mcs {} ({})", self.inner.config.base_url, ids.join(", "))
    }

    async fn firmware_for(&self, device: &DeviceConfig) -> Result<Vec<Firmware>, SourceError> {
        let Some(bound) = self.inner.bound_agent(&device.id) else {
            return Ok(Vec::new());
        };
        let pending = self.inner.state().pending.get(&device.id).cloned();
        if let Some(push) = pending {
            return Ok(vec![pushed_firmware(device, &push)]);
        }
        self.inner.available(bound).await
    }

    async fn report(&self, event: &ProgressEvent) {
        let inner = &self.inner;
        let Some(bound) = inner.bound_agent(&event.device_id) else {
            return;
        };
        let version = &event.firmware_version;
        let value = match &event.kind {
            ProgressKind::Step(step) => format!("{version},{step}"),
            ProgressKind::Pending => format!("{version},PENDING"),
            ProgressKind::Finished(o) => outcome_value(version, o),
            ProgressKind::Sequence(_) | ProgressKind::Percent(..) => return,
        };
        inner.change(|s| {
            if let ProgressKind::Finished(outcome) = &event.kind {
                let key = outcome_key(version, outcome);
                let mut reconciled = lock(&inner.reconciled);
                if reconciled.get(&bound.device.id) == Some(&key) {
                    // Start-up reconciliation already queued this very outcome.
                    reconciled.remove(&bound.device.id);
                    return;
                }
            }
            Inner::status(s, &inner.config, &bound.mcs, value);
            if let ProgressKind::Finished(outcome) = &event.kind {
                s.last_outcome
                    .insert(bound.device.id.clone(), outcome_key(version, outcome));
                if s.pending
                    .get(&bound.device.id)
                    .is_some_and(|p| &p.version == version)
                {
                    s.pending.remove(&bound.device.id);
                }
                if *outcome == Outcome::Success && inner.mark_reported(&bound.device.id, version) {
                    s.enqueue(
                        &bound.mcs.device_id,
                        ReportKind::Version {
                            version: version.clone(),
                        },
                    );
                }
            }
        });
        inner.outbox.wake();
    }

    async fn report_versions(&self, versions: &[DeviceVersion]) {
        let inner = &self.inner;
        for v in versions {
            lock(&inner.versions).insert(v.device_id.clone(), v.version.clone());
            let Some(bound) = inner.bound_agent(&v.device_id) else {
                continue;
            };
            let Some(current) = &v.version else {
                continue;
            };
            // Checked and recorded in one step: `report` may record the same
            // version concurrently when the update's success event arrives.
            let fresh = inner.mark_reported(&v.device_id, current);
            // A pending push the device has caught up with (or overtaken) is done.
            let pending = inner.state().pending.get(&v.device_id).cloned();
            let overtaken = pending.filter(|p| {
                bound
                    .device
                    .version_scheme
                    .compare(&p.version, current)
                    .is_ok_and(|o| o != std::cmp::Ordering::Greater)
            });
            if !fresh && overtaken.is_none() {
                continue;
            }
            inner.change(|s| {
                if fresh {
                    s.enqueue(
                        &bound.mcs.device_id,
                        ReportKind::Version {
                            version: current.clone(),
                        },
                    );
                }
                if let Some(p) = &overtaken {
                    s.pending.remove(&v.device_id);
                    if &p.version != current && bound.device.only_newer {
                        let reason = format!("device runs {current}, not older");
                        tracing::warn!(device = %v.device_id, firmware_version = %p.version,
                            "pushed firmware dropped: {reason}");
                        Inner::status(
                            s,
                            &inner.config,
                            &bound.mcs,
                            outcome_value(&p.version, &Outcome::Failed(reason)),
                        );
                    }
                }
            });
        }
        inner.outbox.wake();
    }

    async fn run(&self, link: EngineLink, shutdown: CancellationToken) {
        let inner = self.inner.clone();
        *lock(&inner.link) = Some(link);
        inner.reconcile_outcomes();
        let mut tasks = tokio::task::JoinSet::new();
        // Not aborted at shutdown: a send the server has answered is dequeued
        // before the task ends, so a restart does not repeat it.
        // (A JoinSet of its own: should `run` itself be aborted, so is the outbox.)
        let mut outbox_task = tokio::task::JoinSet::new();
        {
            let (inner, stop) = (inner.clone(), shutdown.clone());
            outbox_task.spawn(async move {
                let send = |report| inner.send_report(report);
                inner.outbox.run(send, &stop).await
            });
        }
        let sink = Arc::new(Sink(inner.clone()));
        for bound in &inner.bound {
            let (sink, stop, mcs) = (sink.clone(), shutdown.clone(), bound.mcs.clone());
            let heartbeat = inner.config.heartbeat_interval;
            tasks.spawn(async move { push::run_channel(sink, mcs, heartbeat, stop).await });
        }
        inner.outbox.wake();
        // Pushes left from before a restart, or waiting for a running update.
        let mut recheck = tokio::time::interval(RECHECK_INTERVAL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = recheck.tick() => {
                    if !inner.state().pending.is_empty() {
                        inner.check_now();
                    }
                }
            }
        }
        tasks.shutdown().await;
        outbox_task.join_all().await;
    }
}

/// The firmware of a push: what the engine installs now.
fn pushed_firmware(device: &DeviceConfig, push: &Push) -> Firmware {
    let mut fw = Firmware::new(
        &device.device_type,
        &push.version,
        FirmwareLocation::Url(push.url.clone()),
    );
    if let Some(c) = push
        .md5
        .as_deref()
        .and_then(|m| Checksum::new(ChecksumAlgorithm::Md5, m).ok())
    {
        fw.checksums.push(c);
    }
    fw.description = Some("pushed from MCS".into());
    fw.deployment = Some(Deployment {
        id: push.timestamp_ms.to_string(),
        download: Handling::Forced,
        update: Handling::Forced,
        maintenance_window_open: None,
    });
    fw
}
