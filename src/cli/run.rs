//! `fota-agent run`: recover, serve the status endpoint, tell systemd READY=1, then
//! poll and apply until SIGTERM/SIGINT (or once, without endpoint and systemd).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use fota_agent::config::Config;
use fota_agent::engine::Engine;
use fota_agent::progress::Outcome;
use fota_agent::status::{self, Tracker};
use fota_agent::systemd::{self, Notifier};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub async fn run(config: &Path, once: bool) -> anyhow::Result<ExitCode> {
    let config = super::load(config)?;
    let _lock = super::lock_state(&config)?;
    let engine = super::engine(&config)?;
    let logger = tokio::spawn(super::render::log_events(engine.subscribe()));
    // Subscribed before recovery, so recovered outcomes count too.
    let tracker = Arc::new(Tracker::new());
    tokio::spawn(tracker.clone().follow(engine.subscribe()));
    tracing::info!(
        source = %engine.source_description(),
        devices = config.devices.len(),
        workers = tokio::runtime::Handle::current().metrics().num_workers(),
        "fota-agent {} starting", env!("CARGO_PKG_VERSION")
    );
    if let Some(warning) = config.exposed_secrets_warning() {
        tracing::warn!("{warning}");
    }
    for r in engine.recover().await {
        tracing::info!(device = %r.device_id, firmware_version = %r.version,
            "recovered interrupted update: {}",
            r.outcome.as_ref().map_or("transfer restarts".into(), |o| o.to_string()));
    }
    // A flash-on-reset lock set before this start is due now.
    engine.locks_at_start();
    if once {
        return super::stop_signal::until_stopped(run_once(engine, logger)).await;
    }
    serve(&config, engine, tracker).await
}

/// `--once`: one cycle, a summary line per device; fails when an update failed.
async fn run_once(engine: Engine, logger: JoinHandle<()>) -> ExitCode {
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
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The service: status endpoint, systemd notifications and watchdog, the engine's
/// loop until SIGTERM or SIGINT.
async fn serve(config: &Config, engine: Engine, tracker: Arc<Tracker>) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let notifier = Notifier::from_env();
    // READY=1 only once the config is loaded, recovery is done and the status
    // endpoint listens (a bind error ends the start here).
    let endpoint = status::server::start(
        &config.status,
        engine.clone(),
        tracker.clone(),
        shutdown.clone(),
    )
    .await?;
    if let Some(addr) = endpoint.tcp {
        tracing::info!("status endpoint on http://{addr}/status");
    }
    if let Some(path) = &endpoint.socket {
        tracing::info!("status endpoint on unix socket {}", path.display());
    }
    notifier.ready(&tracker.status_line(&engine));
    // Start-up is over: what runs from here on is cycles, the endpoint and the
    // timers.
    fota_agent::resident::release_file_pages();
    if let Some(period) = systemd::watchdog_period() {
        // The engine's loop beats twice per ping period; the pinger checks it.
        engine.set_heartbeat(period / 2);
        tokio::spawn(systemd::watchdog(
            notifier,
            engine.clone(),
            period,
            shutdown.clone(),
        ));
    }
    if notifier.enabled() {
        tokio::spawn(systemd::status_lines(
            notifier,
            tracker.clone(),
            engine.clone(),
            shutdown.clone(),
        ));
    }
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
        notifier.stopping();
        stopper.cancel();
    });
    engine.run(shutdown).await;
    endpoint.finish().await;
    Ok(ExitCode::SUCCESS)
}
