//! Turns progress events into log lines (daemon) or a progress bar (terminal).

use std::io::IsTerminal;

use fota_agent::progress::{Outcome, ProgressEvent, ProgressKind};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::broadcast;

/// Logs one event with structured fields.
pub fn log_event(ev: &ProgressEvent) {
    let device = &ev.device_id;
    let version = &ev.firmware_version;
    match &ev.kind {
        ProgressKind::Sequence(steps) => {
            let steps: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
            tracing::info!(device = %device, firmware_version = %version, "update started: {}", steps.join(" → "));
        }
        ProgressKind::Step(step) => {
            tracing::info!(device = %device, firmware_version = %version, step = %step, "{step}")
        }
        ProgressKind::Percent(step, pct) if pct % 10 == 0 => {
            tracing::info!(device = %device, firmware_version = %version, step = %step, percent = pct, "{step} {pct}%")
        }
        ProgressKind::Percent(step, pct) => {
            tracing::debug!(device = %device, firmware_version = %version, step = %step, percent = pct, "{step} {pct}%")
        }
        ProgressKind::Pending => {
            tracing::info!(device = %device, firmware_version = %version, "waiting")
        }
        ProgressKind::Finished(Outcome::Success) => {
            tracing::info!(device = %device, firmware_version = %version, outcome = "success", "update succeeded")
        }
        ProgressKind::Finished(Outcome::Failed(reason)) => {
            tracing::error!(device = %device, firmware_version = %version, outcome = "failed", error = %reason, "update failed: {reason}")
        }
        ProgressKind::Finished(Outcome::Canceled) => {
            tracing::warn!(device = %device, firmware_version = %version, outcome = "canceled", "update canceled")
        }
    }
}

/// Logs every event until the channel closes.
pub async fn log_events(mut rx: broadcast::Receiver<ProgressEvent>) {
    loop {
        match rx.recv().await {
            Ok(ev) => log_event(&ev),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("{n} progress events dropped (slow log)")
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Shows a progress bar on a terminal, log lines otherwise.
pub async fn show_progress(mut rx: broadcast::Receiver<ProgressEvent>) {
    if !std::io::stderr().is_terminal() {
        return log_events(rx).await;
    }
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>13} [{bar:40}] {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => break,
        };
        match &ev.kind {
            ProgressKind::Sequence(_) => bar.set_message(ev.firmware_version.clone()),
            ProgressKind::Step(step) => {
                bar.set_prefix(step.to_string());
                bar.set_position(0);
            }
            ProgressKind::Percent(_, pct) => bar.set_position(u64::from(*pct)),
            ProgressKind::Pending => bar.set_message("waiting"),
            ProgressKind::Finished(o) => {
                bar.finish_with_message(o.to_string());
                break;
            }
        }
    }
}
