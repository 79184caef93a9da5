//! `fota-agent run`: recover, then poll and apply until SIGTERM/SIGINT (or once).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use fota_agent::progress::Outcome;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

pub async fn run(config: &Path, once: bool) -> anyhow::Result<ExitCode> {
    let config = super::load(config)?;
    let engine = super::engine(&config)?;
    let logger = tokio::spawn(super::render::log_events(engine.subscribe()));
    tracing::info!(
        source = %engine.source_description(),
        devices = config.devices.len(),
        "fota-agent {} starting", env!("CARGO_PKG_VERSION")
    );
    for r in engine.recover().await {
        tracing::info!(device = %r.device_id, firmware_version = %r.version,
            "recovered interrupted update: {}",
            r.outcome.as_ref().map_or("transfer restarts".into(), |o| o.to_string()));
    }
    if once {
        let results = engine.run_once().await;
        // Closing the event channel lets the log task print the last events and end.
        drop(engine);
        let _ = logger.await;
        let failed = results
            .iter()
            .filter(|r| matches!(r.outcome, Some(Outcome::Failed(_))))
            .count();
        for r in &results {
            let from = r.current_version.as_deref().unwrap_or("?");
            let summary = match (&r.version, &r.outcome) {
                (Some(v), Some(o)) => format!("{from} → {v}: {o}"),
                (Some(v), None) => format!("{from} → {v}: transferred, update pending"),
                (None, _) => format!("{from}: {}", r.status),
            };
            tracing::info!(device = %r.device_id, status = %r.status, "{}: {summary}", r.device_id);
        }
        return Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
        stopper.cancel();
    });
    engine.run(shutdown).await;
    Ok(ExitCode::SUCCESS)
}
