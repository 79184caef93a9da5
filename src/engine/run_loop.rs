//! The run loop: cycles every `poll_interval` or on request, with the
//! source's task, its progress events and its requests beside it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Engine, SOURCE_STOP_GRACE, source_task};
use crate::schedule;
use crate::source::EngineRequest;

impl Engine {
    /// Polls and applies every `poll_interval` (or when the source asks) until
    /// `shutdown`, while the source's own task runs and hears every progress event.
    /// Shutdown drops a running update (handlers stop their processes); its
    /// in-flight record lets the next start resolve it.
    pub async fn run(&self, shutdown: CancellationToken) {
        let (tx, requests) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = tokio::task::JoinSet::new();
        // The source's task ends by itself at `shutdown` (finishing a report the
        // server is answering, so a restart does not repeat it); it is aborted
        // only if it takes longer than SOURCE_STOP_GRACE. Before, it is restarted
        // whenever it ends.
        let mut source_task = tokio::task::JoinSet::new();
        source_task.spawn(source_task::supervise(self.clone(), tx, shutdown.clone()));
        let engine = self.clone();
        let early = self
            .inner
            .source_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut events = early.unwrap_or_else(|| self.subscribe());
        // What happened before `run` (recovery's outcomes) reaches the source
        // before the first cycle can act on a stale offer.
        while let Ok(ev) = events.try_recv() {
            self.inner.source.report(&ev).await;
        }
        tasks.spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ev) => engine.inner.source.report(&ev).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("source missed {n} progress events")
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        self.spawn_helpers(&mut tasks, requests);
        // The heartbeat ticks inside this loop's own `select!`s, so it stops when
        // the loop stops being polled.
        let every = self.inner.life.beat_every();
        let mut beat = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let beating = every.is_some();
        // The first cycle at a random time within the source's start-up spread
        // (a fleet that boots together must not ask the server together).
        let mut pause_for =
            schedule::spread(self.inner.source.startup_spread(), schedule::random());
        'run: loop {
            let pause = tokio::time::sleep(pause_for);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'run,
                    _ = &mut pause => break,
                    _ = self.inner.wake.notified() => break,
                    _ = beat.tick(), if beating => self.inner.life.beat(),
                }
            }
            let cycle = self.run_once();
            tokio::pin!(cycle);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'run,
                    results = &mut cycle => {
                        let report = self.report_versions(&results);
                        self.step("source", "reporting versions", Duration::ZERO, report).await;
                        // The next cycle is a poll interval away: its code
                        // need not stay mapped meanwhile (see `resident`).
                        crate::resident::release_file_pages();
                        break;
                    }
                    _ = beat.tick(), if beating => self.inner.life.beat(),
                }
            }
            // ±20 %, so a fleet's cycles (and MCS's availability queries) drift apart.
            pause_for = schedule::jittered(self.inner.agent.poll_interval, schedule::random());
        }
        tasks.abort_all();
        let stopped = tokio::time::timeout(SOURCE_STOP_GRACE, source_task.join_all()).await;
        if stopped.is_err() {
            tracing::warn!("source did not stop within {SOURCE_STOP_GRACE:?}; aborted");
        }
    }

    /// The run loop's helpers: progress as the watchdog's sign of life (see
    /// `liveness.rs`), and the source's requests.
    fn spawn_helpers(
        &self,
        tasks: &mut tokio::task::JoinSet<()>,
        mut requests: tokio::sync::mpsc::UnboundedReceiver<EngineRequest>,
    ) {
        let (engine, mut progress) = (self.clone(), self.subscribe());
        tasks.spawn(async move {
            loop {
                match progress.recv().await {
                    Ok(ev) => engine.inner.life.progressed(&ev.device_id),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let engine = self.clone();
        tasks.spawn(async move {
            while let Some(request) = requests.recv().await {
                match request {
                    EngineRequest::CheckNow => engine.check_now(),
                    EngineRequest::Cancel { device_id, reply } => {
                        let _ = reply.send(engine.cancel(&device_id));
                    }
                }
            }
        });
    }
}
