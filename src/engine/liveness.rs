//! Whether the engine is alive, for the systemd watchdog: a run loop that is
//! polled is not enough (a cycle stuck in one await — a FIFO read, a server that
//! never answers — leaves the loop spinning), so every step a cycle awaits is
//! recorded with a bound, and the engine is stuck when a step outlives it.
//!
//! Steps are keyed by device (cycles of different devices run concurrently). An
//! update's progress events restart its step's clock: an update that makes
//! progress is alive however long it takes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The run loop's heartbeat and the steps cycles are waiting in.
pub(super) struct Liveness {
    started: Instant,
    /// Milliseconds after `started` of the run loop's last beat.
    beat: AtomicU64,
    /// How often the run loop beats; 0 = never.
    every_ms: AtomicU64,
    steps: Mutex<HashMap<String, Step>>,
    next_id: AtomicU64,
}

struct Step {
    id: u64,
    what: &'static str,
    /// Milliseconds after `started` when it began or last made progress.
    since_ms: u64,
    bound: Duration,
}

/// A step that outlived its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The device (or `source` for the source's own calls).
    pub key: String,
    pub what: &'static str,
    pub waiting: Duration,
}

impl std::fmt::Display for Stuck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} for {}",
            self.key,
            self.what,
            humantime::format_duration(Duration::from_secs(self.waiting.as_secs()))
        )
    }
}

/// Removes its step when the awaited work ends (or is dropped).
struct StepGuard<'a> {
    life: &'a Liveness,
    key: &'a str,
    id: u64,
}

impl Drop for StepGuard<'_> {
    fn drop(&mut self) {
        let mut steps = self.life.lock();
        if steps.get(self.key).is_some_and(|s| s.id == self.id) {
            steps.remove(self.key);
        }
    }
}

impl Liveness {
    pub(super) fn new() -> Liveness {
        Liveness {
            started: Instant::now(),
            beat: AtomicU64::new(0),
            every_ms: AtomicU64::new(0),
            steps: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Step>> {
        self.steps.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set_beat_every(&self, every: Duration) {
        let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
        self.every_ms.store(ms, Ordering::Relaxed);
        self.beat();
    }

    pub(super) fn beat_every(&self) -> Option<Duration> {
        let ms = self.every_ms.load(Ordering::Relaxed);
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    pub(super) fn beat(&self) {
        self.beat.store(self.now_ms(), Ordering::Relaxed);
    }

    pub(super) fn since_beat(&self) -> Duration {
        let last = self.beat.load(Ordering::Relaxed);
        Duration::from_millis(self.now_ms().saturating_sub(last))
    }

    /// Awaits `work` as `key`'s current step `what`, which must end within
    /// `bound` (of its start or its last progress).
    pub(super) async fn during<F: Future>(
        &self,
        key: &str,
        what: &'static str,
        bound: Duration,
        work: F,
    ) -> F::Output {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let since_ms = self.now_ms();
        self.lock().insert(
            key.to_string(),
            Step {
                id,
                what,
                since_ms,
                bound,
            },
        );
        let _guard = StepGuard {
            life: self,
            key,
            id,
        };
        work.await
    }

    /// `key`'s step made progress: its clock starts again.
    pub(super) fn progressed(&self, key: &str) {
        let now = self.now_ms();
        if let Some(step) = self.lock().get_mut(key) {
            step.since_ms = now;
        }
    }

    /// The longest-overdue step that outlived its bound, if any.
    pub(super) fn stuck(&self) -> Option<Stuck> {
        self.stuck_at(self.now_ms())
    }

    fn stuck_at(&self, now: u64) -> Option<Stuck> {
        self.lock()
            .iter()
            .map(|(key, s)| {
                (
                    key,
                    s,
                    Duration::from_millis(now.saturating_sub(s.since_ms)),
                )
            })
            .filter(|(_, s, waiting)| *waiting > s.bound)
            .max_by_key(|(_, s, waiting)| waiting.saturating_sub(s.bound))
            .map(|(key, s, waiting)| Stuck {
                key: key.clone(),
                what: s.what,
                waiting,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_step_past_its_bound_is_stuck_until_it_ends_or_progresses() {
        let life = Liveness::new();
        assert_eq!(life.stuck(), None);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let step = life.during("dev", "reading the version", Duration::from_secs(5), rx);
        tokio::pin!(step);
        assert!(futures_util::poll!(step.as_mut()).is_pending());
        let since = life.lock()["dev"].since_ms;
        assert_eq!(life.stuck_at(since + 5_000), None);
        let stuck = life.stuck_at(since + 5_001).unwrap();
        assert_eq!(
            (stuck.key.as_str(), stuck.what),
            ("dev", "reading the version")
        );
        assert_eq!(stuck.waiting, Duration::from_millis(5_001));
        // Progress restarts the clock.
        life.lock().get_mut("dev").unwrap().since_ms = 0;
        life.progressed("dev");
        assert!(life.lock()["dev"].since_ms >= since);
        tx.send(()).unwrap();
        step.await.unwrap();
        assert!(life.lock().is_empty());
        assert_eq!(life.stuck_at(u64::MAX), None);
    }
}
