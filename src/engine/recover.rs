//! Start-up recovery: an update that was in flight when the agent stopped (crash,
//! kill, power cut) is resolved exactly once. A transfer simply restarts on the
//! next cycle; an update step whose outcome was never seen is judged by the version
//! the device reports now (asked within the confirm window) — success if it
//! runs the target version, failure otherwise; a failed one whose device was
//! already being written needs a re-flash (`reflash.rs`).

use std::cmp::Ordering;
use std::time::Duration;

use super::{Device, Engine};
use crate::progress::{Outcome, Progress, ProgressStep};
use crate::store::{OutcomeRecord, Phase, now_secs};

/// What recovery decided for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub device_id: String,
    pub version: String,
    /// `None`: an interrupted transfer, which restarts.
    pub outcome: Option<Outcome>,
}

impl Engine {
    /// Resolves every in-flight record left by a previous run.
    pub async fn recover(&self) -> Vec<Recovered> {
        let mut out = Vec::new();
        for device in self.inner_devices() {
            let id = &device.config.id;
            let state = match self.store().load(id) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(device = %id, "{e}");
                    continue;
                }
            };
            let Some(in_flight) = state.in_flight else {
                continue;
            };
            // A command the killed agent left running is stopped before anything
            // is judged (or started again).
            if let Some(process) = in_flight.process {
                super::survivor::stop(id, process).await;
            }
            let outcome = match in_flight.phase {
                Phase::Transfer => {
                    tracing::info!(device = %id, firmware_version = %in_flight.version,
                        "transfer interrupted by a restart; it starts again");
                    None
                }
                Phase::Update => {
                    Some(judge(device, &in_flight.version, self.inner.agent.confirm_window).await)
                }
            };
            if let Some(o) = &outcome {
                let progress = Progress::new(id, &in_flight.version, self.events());
                let _ = progress.define_sequence(&[ProgressStep::Updating]);
                let _ = progress.next();
                let _ = match o {
                    Outcome::Success => progress.success(),
                    Outcome::Failed(r) => progress.failed(r.clone()),
                    Outcome::Canceled => progress.canceled(),
                };
            }
            let record = outcome.clone().map(|o| OutcomeRecord {
                version: in_flight.version.clone(),
                outcome: o,
                finished_at: now_secs(),
            });
            let saved = self.store().update(id, |s| {
                s.in_flight = None;
                if let Some(o) = &outcome {
                    s.reflash =
                        super::reflash::next_record(s.reflash.take(), Some(&in_flight), o, false);
                }
                if let Some(r) = record {
                    s.transferred = None;
                    s.last_outcome = Some(r);
                }
            });
            if let Err(e) = saved {
                tracing::error!(device = %id, "cannot record recovered outcome: {e}");
            }
            if outcome.is_some() {
                device.handler.after_resolved().await;
            }
            out.push(Recovered {
                device_id: id.clone(),
                version: in_flight.version,
                outcome,
            });
        }
        out
    }
}

/// The outcome of an update step the agent did not see finish: the handler's
/// own judgement when its update step restarts the agent (RAUC's reboot),
/// otherwise success only if the device reports `target` now (asked within
/// `window`).
async fn judge(device: &Device, target: &str, window: Duration) -> Outcome {
    if let Some(judged) = device.handler.resolve_after_restart(target).await {
        return match judged {
            Ok(()) => Outcome::Success,
            Err(e) => Outcome::Failed(e.to_string()),
        };
    }
    match super::confirm::read_version(device, window).await {
        Ok(Some(v)) if device.config.version_scheme.compare(&v, target) == Ok(Ordering::Equal) => {
            Outcome::Success
        }
        Ok(Some(v)) => Outcome::Failed(format!(
            "interrupted by an agent restart; device reports version {v}, not {target}"
        )),
        Ok(None) => {
            Outcome::Failed("interrupted by an agent restart; device reports no version".into())
        }
        Err(e) => Outcome::Failed(format!(
            "interrupted by an agent restart; cannot read the device's version: {e}"
        )),
    }
}
