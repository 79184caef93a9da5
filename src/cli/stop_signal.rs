//! SIGTERM/SIGINT for the one-shot commands (`run --once`, `install`): the work
//! future is dropped, which kills the update command's process group the way the
//! service's shutdown does, and the in-flight record stays for the next start.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};

/// Runs `work` until it ends or a stop signal arrives (exit 128 + signal).
pub async fn until_stopped<F: Future<Output = ExitCode>>(work: F) -> anyhow::Result<ExitCode> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let (name, code) = tokio::select! {
        code = work => return Ok(code),
        _ = term.recv() => ("SIGTERM", 143),
        _ = int.recv() => ("SIGINT", 130),
    };
    tracing::warn!(
        "{name}: stopped; the running update's command was killed, the next start resolves it"
    );
    Ok(ExitCode::from(code))
}
