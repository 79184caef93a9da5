//! `GET /status`: the JSON document (also what `fota-agent status` reads back).
//! Times are seconds since the Unix epoch.

use serde::{Deserialize, Serialize};

use super::Tracker;
use crate::engine::Engine;
use crate::model::FirmwareStatus;
use crate::progress::ProgressStep;
use crate::store::{OutcomeRecord, Reflash};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub agent: AgentView,
    pub source: SourceView,
    pub devices: Vec<DeviceView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentView {
    pub version: String,
    pub started_at: u64,
    pub uptime_seconds: u64,
    /// How firmware is authenticated: signatures required, checked when
    /// present, or not checked (no `[trust]` keys).
    #[serde(default)]
    pub firmware_authenticity: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceView {
    pub description: String,
    /// `None` until the source was first asked.
    pub reachable: Option<bool>,
    pub last_poll: Option<u64>,
    /// The source's error at the last poll.
    pub error: Option<String>,
    /// Failed source queries since the start.
    pub poll_errors: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceView {
    pub id: String,
    #[serde(rename = "type")]
    pub device_type: String,
    pub handler: String,
    pub policy: String,
    /// As the last check found it; `None` when unknown or not checked yet.
    pub current_version: Option<String>,
    /// `current_version` is the one fota-agent installed (the device reports none).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub installed_by_agent: bool,
    pub status: FirmwareStatus,
    /// The firmware the device would get.
    pub available: Option<AvailableView>,
    /// Why the last check could not fully determine the status.
    pub error: Option<String>,
    pub update: Option<UpdateView>,
    pub last_outcome: Option<OutcomeRecord>,
    /// The device was left half-written: the image the agent writes again.
    #[serde(default)]
    pub needs_reflash: Option<Reflash>,
    /// The device's lock and what it waits for ("locked to 7 (on reset):
    /// waiting for the device to restart"), as the last check found it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AvailableView {
    pub version: String,
    pub size: Option<u64>,
    pub description: Option<String>,
}

/// An update in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateView {
    pub version: String,
    pub steps: Vec<ProgressStep>,
    pub step: Option<ProgressStep>,
    pub percent: Option<u8>,
    /// Waiting for something outside the agent (a transferred update not yet
    /// executable).
    pub pending: bool,
    pub started_at: u64,
}

pub(super) fn build(tracker: &Tracker, engine: &Engine) -> Snapshot {
    let poll = engine.poll_state();
    let devices = engine
        .devices()
        .map(|d| {
            let report = poll.reports.get(&d.id);
            let (last_outcome, needs_reflash) = match engine.store().load(&d.id) {
                Ok(s) => (s.last_outcome, s.reflash),
                Err(e) => {
                    tracing::warn!(device = %d.id, "status: {e}");
                    (None, None)
                }
            };
            DeviceView {
                id: d.id.clone(),
                device_type: d.device_type.clone(),
                handler: d.handler.name().to_string(),
                policy: serde_json::to_value(d.policy)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                current_version: report.and_then(|r| r.current_version.clone()),
                installed_by_agent: report.is_some_and(|r| r.installed_by_agent),
                status: report.map_or(FirmwareStatus::Unknown, |r| r.status),
                available: report
                    .and_then(|r| r.selection.candidate.as_ref())
                    .map(|f| AvailableView {
                        version: f.version.clone(),
                        size: f.size,
                        description: f.description.clone(),
                    }),
                error: report.and_then(|r| r.error.clone()),
                update: tracker.update(&d.id),
                last_outcome,
                needs_reflash,
                lock: report.and_then(|r| r.selection.lock.clone()),
            }
        })
        .collect();
    Snapshot {
        agent: AgentView {
            version: env!("CARGO_PKG_VERSION").to_string(),
            started_at: tracker.started_at(),
            uptime_seconds: tracker.uptime(),
            firmware_authenticity: engine.trust().describe(),
        },
        source: SourceView {
            description: engine.source_description(),
            reachable: poll.last_poll.map(|_| poll.source_error.is_none()),
            last_poll: poll.last_poll.and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs())
            }),
            error: poll.source_error.clone(),
            poll_errors: poll.poll_errors,
        },
        devices,
    }
}
