//! The source's background task (polling its server, a push channel), supervised:
//! a task that panics or ends before shutdown (a hostile server value once
//! panicked hawkBit's poll loop and polling stopped for good) is logged and
//! started again after a backoff, so one bad answer never ends the source's work.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::source::{EngineLink, EngineRequest};

/// The first wait before a restart; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A task that ran this long before it ended starts again after the first backoff.
const STABLE: Duration = Duration::from_secs(600);

/// Runs the engine's source task until `stop`, restarting it whenever it ends
/// early. Dropping this future aborts the task.
pub(super) async fn supervise(
    engine: Engine,
    requests: UnboundedSender<EngineRequest>,
    stop: CancellationToken,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = Instant::now();
        let mut task = JoinSet::new();
        let (e, link, until) = (
            engine.clone(),
            EngineLink::new(requests.clone()),
            stop.clone(),
        );
        task.spawn(async move { e.inner.source.run(link, until).await });
        let ended = task.join_next().await;
        if stop.is_cancelled() {
            return;
        }
        let why = match ended {
            Some(Err(e)) if e.is_panic() => format!("panicked: {}", panic_text(e.into_panic())),
            Some(Err(e)) => format!("failed: {e}"),
            _ => "ended".to_string(),
        };
        if started.elapsed() >= STABLE {
            backoff = FIRST_BACKOFF;
        }
        tracing::error!(
            source = %engine.source_description(),
            "source task {why}; restarting in {}",
            humantime::format_duration(backoff)
        );
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
