//! The local status endpoint: what the agent and each device are doing, for
//! operators (`fota-agent status`), monitoring (Prometheus `/metrics`) and live
//! progress (`/events`, server-sent events).
//!
//! Everything here is computed from what the engine already publishes: the
//! progress event stream ([`Tracker`] follows it: updates in flight, outcome
//! counters, durations), the engine's [`crate::engine::PollState`] (each device's
//! latest check, the source's reachability) and the store (last outcomes, which
//! survive restarts). Nothing here talks to a device or a source, so a status
//! request never disturbs an update.

pub mod host;
mod listener;
pub mod metrics;
mod respond;
pub mod server;
pub mod snapshot;
pub mod sse;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::broadcast;

use crate::engine::Engine;
use crate::progress::{Outcome, ProgressEvent, ProgressKind, ProgressStep};
use crate::store::now_secs;
pub use snapshot::{Snapshot, UpdateView};

/// Upper bounds (seconds) of the update duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 10] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// An update seen running in the event stream.
#[derive(Debug, Clone)]
struct Running {
    view: UpdateView,
    started: Instant,
}

/// Counters and the updates in flight, as the event stream told them.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub success: u64,
    pub failed: u64,
    pub canceled: u64,
    /// Count per bucket of [`DURATION_BUCKETS`] (not cumulative), then +Inf.
    pub duration_buckets: [u64; DURATION_BUCKETS.len() + 1],
    pub duration_sum: f64,
}

impl Counters {
    pub fn finished(&self) -> u64 {
        self.success + self.failed + self.canceled
    }
}

#[derive(Debug, Default)]
struct State {
    running: HashMap<String, Running>,
    counters: Counters,
}

/// Follows the engine's progress events.
#[derive(Debug)]
pub struct Tracker {
    state: Mutex<State>,
    changed: tokio::sync::Notify,
    started: Instant,
    started_at: u64,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            state: Mutex::default(),
            changed: tokio::sync::Notify::new(),
            started: Instant::now(),
            started_at: now_secs(),
        }
    }
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds since the tracker (the agent) started.
    pub fn uptime(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// When the agent started, seconds since the Unix epoch.
    pub fn started_at(&self) -> u64 {
        self.started_at
    }

    /// Resolves after the next event was taken into account (one waiter).
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// Takes one event into account.
    pub fn apply(&self, ev: &ProgressEvent) {
        self.apply_event(ev);
        self.changed.notify_one();
    }

    fn apply_event(&self, ev: &ProgressEvent) {
        let mut state = self.state();
        let new_update = |steps: Vec<ProgressStep>| Running {
            view: UpdateView {
                version: ev.firmware_version.clone(),
                steps,
                step: None,
                percent: None,
                pending: false,
                started_at: now_secs(),
            },
            started: Instant::now(),
        };
        match &ev.kind {
            ProgressKind::Sequence(steps) => {
                state
                    .running
                    .insert(ev.device_id.clone(), new_update(steps.clone()));
            }
            ProgressKind::Finished(outcome) => {
                let run = state.running.remove(&ev.device_id);
                let c = &mut state.counters;
                match outcome {
                    Outcome::Success => c.success += 1,
                    Outcome::Failed(_) => c.failed += 1,
                    Outcome::Canceled => c.canceled += 1,
                }
                let secs = run.map_or(0.0, |r| r.started.elapsed().as_secs_f64());
                let bucket = DURATION_BUCKETS
                    .iter()
                    .position(|b| secs <= *b)
                    .unwrap_or(DURATION_BUCKETS.len());
                c.duration_buckets[bucket] += 1;
                c.duration_sum += secs;
            }
            kind => {
                let run = state
                    .running
                    .entry(ev.device_id.clone())
                    .or_insert_with(|| new_update(Vec::new()));
                let view = &mut run.view;
                view.version.clone_from(&ev.firmware_version);
                match kind {
                    ProgressKind::Step(step) => {
                        view.step = Some(*step);
                        view.percent = None;
                        view.pending = false;
                    }
                    ProgressKind::Percent(step, pct) => {
                        view.step = Some(*step);
                        view.percent = Some(*pct);
                    }
                    ProgressKind::Pending => view.pending = true,
                    ProgressKind::Sequence(_) | ProgressKind::Finished(_) => {}
                }
            }
        }
    }

    /// Follows `events` until the channel closes (spawn it).
    pub async fn follow(
        self: std::sync::Arc<Self>,
        mut events: broadcast::Receiver<ProgressEvent>,
    ) {
        loop {
            match events.recv().await {
                Ok(ev) => self.apply(&ev),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("status endpoint missed {n} progress events")
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// The update running on `device_id`, if any (a finished background transfer
    /// that waits stays here as pending until its update runs).
    pub fn update(&self, device_id: &str) -> Option<UpdateView> {
        self.state().running.get(device_id).map(|r| r.view.clone())
    }

    pub fn counters(&self) -> Counters {
        self.state().counters.clone()
    }

    /// The whole picture.
    pub fn snapshot(&self, engine: &Engine) -> Snapshot {
        snapshot::build(self, engine)
    }

    /// One line for systemd's STATUS=: what the agent does now.
    pub fn status_line(&self, engine: &Engine) -> String {
        let state = self.state();
        let mut active: Vec<(&String, &Running)> = state
            .running
            .iter()
            .filter(|(_, r)| !r.view.pending)
            .collect();
        active.sort_by(|a, b| a.0.cmp(b.0));
        if let Some((id, run)) = active.first() {
            let v = &run.view;
            let what = match (v.step, v.percent) {
                (Some(step), Some(pct)) => format!("{step} {pct}%"),
                (Some(step), None) => step.to_string(),
                (None, _) => "starting".to_string(),
            };
            let more = match active.len() {
                1 => String::new(),
                n => format!(" (+{} more updating)", n - 1),
            };
            return format!("{id}: {what} → {}{more}", v.version);
        }
        drop(state);
        let poll = engine.poll_state();
        let total = engine.devices().count();
        if poll.last_poll.is_none() {
            return format!("starting: checking {total} device{}", plural(total));
        }
        let mut counts: HashMap<crate::model::FirmwareStatus, usize> = HashMap::new();
        for r in poll.reports.values() {
            *counts.entry(r.status).or_default() += 1;
        }
        use crate::model::FirmwareStatus::*;
        let up = counts.get(&UpToDate).copied().unwrap_or(0);
        let mut parts = vec![if up == total {
            format!("{up} device{} up to date", plural(up))
        } else {
            format!("{up} of {total} devices up to date")
        }];
        let avail = counts.get(&UpdateAvailable).copied().unwrap_or(0)
            + counts.get(&UpdateExecutable).copied().unwrap_or(0);
        if avail > 0 {
            parts.push(format!("{avail} update{} available", plural(avail)));
        }
        let unknown = counts.get(&Unknown).copied().unwrap_or(0);
        if unknown > 0 {
            parts.push(format!("{unknown} unknown"));
        }
        if let Some(e) = &poll.source_error {
            parts.push(format!("source unreachable: {e}"));
        }
        format!("idle: {}", parts.join(", "))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: ProgressKind) -> ProgressEvent {
        ProgressEvent {
            device_id: "d".into(),
            firmware_version: "2.0".into(),
            kind,
        }
    }

    #[test]
    fn tracks_an_update_and_counts_its_outcome() {
        let t = Tracker::new();
        t.apply(&ev(ProgressKind::Sequence(vec![
            ProgressStep::Downloading,
            ProgressStep::Updating,
        ])));
        t.apply(&ev(ProgressKind::Step(ProgressStep::Downloading)));
        t.apply(&ev(ProgressKind::Percent(ProgressStep::Downloading, 42)));
        let u = t.update("d").unwrap();
        assert_eq!(
            (u.step, u.percent, u.version.as_str()),
            (Some(ProgressStep::Downloading), Some(42), "2.0")
        );
        t.apply(&ev(ProgressKind::Finished(Outcome::Failed("x".into()))));
        assert!(t.update("d").is_none());
        let c = t.counters();
        assert_eq!((c.success, c.failed, c.canceled), (0, 1, 0));
        assert_eq!(c.duration_buckets[0], 1);
    }
}
