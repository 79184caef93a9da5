//! `deploymentBase/{id}/feedback`: progress events of the action's devices become
//! DDI feedback, and the feedback goes out through a durable queue.
//!
//! Mapping (details lines name the device, e.g. `esp-1: DOWNLOADING 50%`):
//! - a step starts, or percent crosses a multiple of 25: `proceeding`, with
//!   `progress {cnt: devices finished, of: devices in the action}`;
//! - the firmware is transferred and the update waits: `downloaded` when the
//!   server holds it back (`update: skip`, or a closed maintenance window, for
//!   which hawkBit sends `skip` too), `scheduled` when it waits for the device;
//!   the update of a staged device starting later: `resumed`;
//! - every device finished: `closed` with `success` when all succeeded, else
//!   `failure`, one details line per device with its outcome or reason.
//!
//! The queue is part of `hawkbit.json`, drained by its [`Outbox`](crate::persist::Outbox)
//! task: sent in order, a message is removed once the server accepted it (or
//! refused it for good: a 4xx other than 408/429, logged), and a transient failure
//! keeps it for a retry with backoff, also after a restart. Every report waits
//! until the queue was sent as far as it goes. Intermediate progress is coalesced
//! (a newer `proceeding` replaces an unsent one) and not written to disk on its
//! own; everything else is on disk before it is sent.

use std::cmp::Ordering;

use super::http::sub_url;
use super::state::{Action, DeviceAction, DevicePhase, Queued, Saved};
use super::wire::{self, Execution, Finished, HandlingType};
use super::{HawkbitSource, deployment};
use crate::engine::decide;
use crate::progress::{Outcome, ProgressEvent, ProgressKind};
use crate::source::DeviceVersion;

/// Percent is reported in steps of this much.
const PERCENT_STEP: u8 = 25;

pub fn status(
    execution: Execution,
    finished: Finished,
    progress: Option<wire::Progress>,
    details: Vec<String>,
) -> wire::Status {
    wire::Status {
        execution,
        result: wire::ResultT { finished, progress },
        details,
    }
}

/// Adds a message to the queue; intermediate progress replaces an unsent one.
/// Returns whether the queue must be written to disk.
pub fn enqueue(saved: &mut Saved, url: String, feedback: wire::Feedback, progress: bool) -> bool {
    let body = serde_json::to_value(&feedback).unwrap_or_default();
    if progress
        && let Some(last) = saved.queue.back_mut()
        && last.progress
        && last.url == url
    {
        last.body = body;
        return false;
    }
    saved.queue.push_back(Queued {
        url,
        body,
        progress,
    });
    !progress
}

fn action_feedback(action: &Action, status: wire::Status) -> (String, wire::Feedback) {
    (
        sub_url(&action.href, "feedback"),
        wire::Feedback::new(action.id().to_string(), status),
    )
}

fn progress_of(action: &Action) -> Option<wire::Progress> {
    Some(wire::Progress {
        cnt: action.done_count(),
        of: action.devices.len() as u32,
    })
}

/// Closes the action when every device has an outcome: queues `closed`, forgets
/// the action, remembers its id. Returns whether it closed.
pub fn close_if_done(saved: &mut Saved) -> bool {
    let Some(action) = saved
        .action
        .as_ref()
        .filter(|a| a.all_done() && !a.canceling)
    else {
        return false;
    };
    let all_ok = action.devices.values().all(|d| {
        matches!(
            &d.phase,
            DevicePhase::Done {
                outcome: Outcome::Success,
                ..
            }
        )
    });
    let details = action
        .devices
        .iter()
        .map(|(id, d)| match &d.phase {
            DevicePhase::Done { detail, .. } => format!("{id}: {detail}"),
            _ => format!("{id}: ?"),
        })
        .collect();
    let finished = if all_ok {
        Finished::Success
    } else {
        Finished::Failure
    };
    let st = status(Execution::Closed, finished, progress_of(action), details);
    let (url, fb) = action_feedback(action, st);
    let key = format!("action:{}", action.id());
    tracing::info!(source = "hawkbit", action = %action.id(), "closing action: {finished:?}");
    enqueue(saved, url, fb, false);
    saved.action = None;
    saved.mark_done(key);
    true
}

fn outcome_detail(outcome: &Outcome, version: &str) -> String {
    match outcome {
        Outcome::Success => format!("{version} installed"),
        Outcome::Failed(reason) => format!("failed: {reason}"),
        Outcome::Canceled => "canceled".into(),
    }
}

/// The feedback one event of `dev` becomes, `(status, is intermediate progress)`,
/// and whether the device's saved phase changed.
fn event_feedback(
    id: &str,
    dev: &mut DeviceAction,
    kind: &ProgressKind,
    wait: Wait,
    progress: Option<wire::Progress>,
) -> (Option<(wire::Status, bool)>, bool) {
    let proceeding = |line: String| {
        Some((
            status(Execution::Proceeding, Finished::None, progress, vec![line]),
            true,
        ))
    };
    match kind {
        ProgressKind::Sequence(_) => {
            let resumed = dev.phase == DevicePhase::Staged;
            let changed = dev.phase != DevicePhase::Running;
            dev.phase = DevicePhase::Running;
            dev.step = None;
            dev.sent_percent = None;
            let line = format!("{id}: update of the staged firmware starts");
            let message = resumed.then(|| {
                (
                    status(Execution::Resumed, Finished::None, progress, vec![line]),
                    false,
                )
            });
            (message, changed)
        }
        ProgressKind::Step(step) => {
            dev.step = Some(*step);
            dev.sent_percent = None;
            (proceeding(format!("{id}: {step}")), false)
        }
        ProgressKind::Percent(step, pct) => {
            let bucket = pct - pct % PERCENT_STEP;
            if dev.sent_percent.is_some_and(|s| s >= bucket) || bucket == 0 {
                return (None, false);
            }
            dev.sent_percent = Some(bucket);
            (proceeding(format!("{id}: {step} {pct}%")), false)
        }
        ProgressKind::Pending => {
            dev.phase = DevicePhase::Staged;
            let v = &dev.version;
            let (execution, line) = match wait {
                Wait::Window => (
                    Execution::Downloaded,
                    format!("{id}: {v} transferred; the update waits for the maintenance window"),
                ),
                Wait::Skipped => (
                    Execution::Downloaded,
                    format!("{id}: {v} transferred; the server skips the update"),
                ),
                Wait::Device => (
                    Execution::Scheduled,
                    format!("{id}: {v} transferred; the update waits for the device"),
                ),
            };
            let st = status(execution, Finished::None, progress, vec![line]);
            (Some((st, false)), true)
        }
        ProgressKind::Finished(outcome) => {
            let detail = outcome_detail(outcome, &dev.version);
            tracing::info!(source = "hawkbit", device = %id, "{detail}");
            dev.phase = DevicePhase::Done {
                outcome: outcome.clone(),
                detail,
            };
            (None, true)
        }
    }
}

/// Why a staged update waits, which decides its feedback: hawkBit itself says
/// `update: skip` outside a maintenance window (its `calculateUpdateType`), so
/// both server-side reasons are `downloaded`; waiting for the device is
/// `scheduled`.
#[derive(Debug, Clone, Copy)]
enum Wait {
    Window,
    Skipped,
    Device,
}

impl Wait {
    fn of(deployment: &wire::Deployment) -> Wait {
        if deployment.maintenance_window == Some(wire::MaintenanceWindow::Unavailable) {
            Wait::Window
        } else if deployment.update == HandlingType::Skip {
            Wait::Skipped
        } else {
            Wait::Device
        }
    }
}

impl HawkbitSource {
    /// Turns one progress event into feedback. Returns whether anything was queued.
    pub(super) async fn on_event(&self, event: &ProgressEvent) -> bool {
        if let ProgressKind::Finished(Outcome::Success) = event.kind {
            self.installed(&event.device_id, &event.firmware_version);
        }
        let Some((queued, persist, closed)) = self.apply_event(event) else {
            return false;
        };
        if closed {
            self.lock().config_data.due = true;
        }
        if persist {
            self.persist();
        }
        queued
    }

    /// [`HawkbitSource::on_event`] on the document: `(queued, persist, closed)`,
    /// or `None` when the event is not about a device of the action.
    fn apply_event(&self, event: &ProgressEvent) -> Option<(bool, bool, bool)> {
        let mut saved = self.feedback.lock();
        let action = saved.action.as_mut()?;
        let wait = Wait::of(&action.base.deployment);
        let progress = progress_of(action);
        let id = event.device_id.as_str();
        let dev = action.devices.get_mut(id)?;
        if dev.version != event.firmware_version || matches!(dev.phase, DevicePhase::Done { .. }) {
            return None;
        }
        let (message, mut persist) = event_feedback(id, dev, &event.kind, wait, progress);
        let mut queued = false;
        if let Some((st, is_progress)) = message {
            let (url, fb) = action_feedback(action, st);
            persist |= enqueue(&mut saved, url, fb, is_progress);
            queued = true;
        }
        let closed = close_if_done(&mut saved);
        Some((queued || closed, persist || closed, closed))
    }

    /// Remembers the versions and resolves devices the engine will not update:
    /// one already running the target version succeeded; one whose version rules
    /// refuse the target failed with the reason. Returns whether anything was
    /// queued.
    pub(super) async fn on_versions(&self, versions: &[DeviceVersion]) -> bool {
        self.lock().versions = versions.to_vec();
        let Some(closed) = self.resolve_by_version(versions) else {
            return false;
        };
        if closed {
            self.lock().config_data.due = true;
        }
        self.persist();
        closed
    }

    /// [`HawkbitSource::on_versions`] on the document: whether the action closed,
    /// or `None` when nothing changed.
    fn resolve_by_version(&self, versions: &[DeviceVersion]) -> Option<bool> {
        let mut saved = self.feedback.lock();
        let action = saved.action.as_mut()?;
        let mut changed = false;
        for (id, dev) in action.devices.iter_mut() {
            if dev.phase != DevicePhase::Offered {
                continue;
            }
            let (Some(config), Some(reported)) = (
                self.device(id),
                versions.iter().find(|v| &v.device_id == id),
            ) else {
                continue;
            };
            let Ok(fw) = deployment::firmware(&action.base, dev.chunk, config, &Default::default())
            else {
                continue;
            };
            let current = reported.version.as_deref();
            let selection = decide::select(config, current, std::slice::from_ref(&fw));
            if selection.candidate.is_some() {
                continue;
            }
            let (outcome, detail) = match current {
                Some(v)
                    if config.version_scheme.compare(v, &dev.version) == Ok(Ordering::Equal) =>
                {
                    (Outcome::Success, format!("already runs {v}"))
                }
                None => {
                    let r = "device reports no version; cannot decide".to_string();
                    (Outcome::Failed(r.clone()), format!("failed: {r}"))
                }
                Some(_) => {
                    let r = selection
                        .refused
                        .first()
                        .map(|(_, r)| r.clone())
                        .unwrap_or_else(|| "not installable".into());
                    (Outcome::Failed(r.clone()), format!("refused: {r}"))
                }
            };
            tracing::info!(source = "hawkbit", device = %id, "{detail}");
            dev.phase = DevicePhase::Done { outcome, detail };
            changed = true;
        }
        changed.then(|| close_if_done(&mut saved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(devices: &[&str]) -> Action {
        let base: wire::DeploymentBase = serde_json::from_value(serde_json::json!({"id": "7",
            "deployment": {"download": "forced", "update": "forced", "chunks": []}}))
        .unwrap();
        Action {
            base,
            href: "http://h/T/controller/v1/c/deploymentBase/7".into(),
            devices: devices
                .iter()
                .map(|d| {
                    (
                        d.to_string(),
                        DeviceAction {
                            chunk: 0,
                            version: "2.0".into(),
                            phase: DevicePhase::Offered,
                            step: None,
                            sent_percent: None,
                        },
                    )
                })
                .collect(),
            canceling: false,
        }
    }

    fn fb(execution: Execution) -> wire::Feedback {
        wire::Feedback::new("7".into(), status(execution, Finished::None, None, vec![]))
    }

    #[test]
    fn progress_is_coalesced_and_others_are_kept() {
        let mut s = Saved::default();
        assert!(!enqueue(
            &mut s,
            "u".into(),
            fb(Execution::Proceeding),
            true
        ));
        assert!(!enqueue(
            &mut s,
            "u".into(),
            fb(Execution::Proceeding),
            true
        ));
        assert_eq!(s.queue.len(), 1);
        assert!(enqueue(&mut s, "u".into(), fb(Execution::Scheduled), false));
        assert!(!enqueue(
            &mut s,
            "u".into(),
            fb(Execution::Proceeding),
            true
        ));
        assert_eq!(s.queue.len(), 3);
    }

    #[test]
    fn closes_once_every_device_is_done() {
        let mut s = Saved {
            action: Some(action(&["a", "b"])),
            ..Saved::default()
        };
        assert!(!close_if_done(&mut s));
        let a = s.action.as_mut().unwrap();
        a.devices.get_mut("a").unwrap().phase = DevicePhase::Done {
            outcome: Outcome::Success,
            detail: "2.0 installed".into(),
        };
        assert!(!close_if_done(&mut s));
        s.action
            .as_mut()
            .unwrap()
            .devices
            .get_mut("b")
            .unwrap()
            .phase = DevicePhase::Done {
            outcome: Outcome::Failed("x".into()),
            detail: "failed: x".into(),
        };
        assert!(close_if_done(&mut s));
        assert!(s.action.is_none() && s.is_done("action:7"));
        let mut body = s.queue[0].body.clone();
        assert!(body["timestamp"].as_u64().is_some_and(|t| t > 0), "{body}");
        body.as_object_mut().unwrap().remove("timestamp");
        assert_eq!(
            s.queue[0].url,
            "http://h/T/controller/v1/c/deploymentBase/7/feedback"
        );
        assert_eq!(
            body,
            serde_json::json!({"id": "7", "status": {"execution": "closed",
                "result": {"finished": "failure", "progress": {"cnt": 2, "of": 2}},
                "details": ["a: 2.0 installed", "b: failed: x"]}})
        );
        assert!(!close_if_done(&mut s));
    }

    #[test]
    fn an_action_being_canceled_is_not_closed_by_its_canceled_devices() {
        let mut a = action(&["a"]);
        a.canceling = true;
        a.devices.get_mut("a").unwrap().phase = DevicePhase::Done {
            outcome: Outcome::Canceled,
            detail: "canceled".into(),
        };
        let mut s = Saved {
            action: Some(a),
            ..Saved::default()
        };
        assert!(!close_if_done(&mut s));
        assert!(s.queue.is_empty() && s.action.is_some());
    }
}
