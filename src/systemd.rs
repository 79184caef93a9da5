//! systemd integration (`Type=notify`): `READY=1` once the agent serves,
//! `STATUS=` lines saying what it does, `WATCHDOG=1` while the engine's loop is
//! alive, `STOPPING=1` on shutdown. Outside systemd (`NOTIFY_SOCKET` unset) every
//! call is a no-op.
//!
//! The watchdog ping is gated on the engine's heartbeat
//! ([`Engine::since_heartbeat`]): the run loop beats at a quarter of
//! `WatchdogSec`; the pinger, at half of it, sends `WATCHDOG=1` only when the
//! loop beat within the last half, and no step of a cycle is stuck
//! ([`Engine::stuck`]: awaited longer than `update_timeout`, an update without
//! progress longer than that plus a grace). A loop that stops being polled, or a
//! cycle that hangs in one await, stops the pings, and systemd restarts the agent.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::status::Tracker;

/// Sends notifications to the service manager.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    /// Enabled when systemd gave us a `NOTIFY_SOCKET`.
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!("sd_notify: {e}");
        }
    }

    /// `READY=1` with a first `STATUS=`.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }
}

/// Half of `WATCHDOG_USEC` when systemd's watchdog is on for this process
/// (`WATCHDOG_PID` unset or ours): how often to ping.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// Pings the watchdog every `period` while the engine's loop beats (start it
/// after [`Engine::set_heartbeat`] with `period / 2`).
pub async fn watchdog(
    notifier: Notifier,
    engine: Engine,
    period: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let since = engine.since_heartbeat();
        if since > period {
            tracing::error!(
                "engine loop silent for {}: not pinging the watchdog",
                humantime::format_duration(Duration::from_secs(since.as_secs()))
            );
        } else if let Some(stuck) = engine.stuck() {
            tracing::error!("cycle stuck ({stuck}): not pinging the watchdog");
        } else {
            notifier.watchdog();
        }
    }
}

/// Keeps `STATUS=` current: after every progress event and every few seconds
/// (a poll changes the idle summary), sends the tracker's status line when it
/// changed.
pub async fn status_lines(
    notifier: Notifier,
    tracker: Arc<Tracker>,
    engine: Engine,
    shutdown: CancellationToken,
) {
    let mut last = String::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            _ = tracker.changed() => {}
        }
        let line = tracker.status_line(&engine);
        if line != last {
            notifier.status(&line);
            last = line;
        }
    }
}
