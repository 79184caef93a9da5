//! Turns progress events into log lines (daemon) or a progress line (terminal).

use std::io::IsTerminal;

use fota_agent::progress::{Outcome, ProgressEvent, ProgressKind};

use super::bar::{Bar, gauge};
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
    let mut bar = Bar::new();
    let (mut step, mut percent, mut message) = (String::new(), 0u8, String::new());
    let line = |step: &str, percent: u8, message: &str| {
        let gauge = gauge(u64::from(percent), 100);
        format!("{step:>13} {gauge} {percent:>3}% {message}")
    };
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => break,
        };
        match &ev.kind {
            ProgressKind::Sequence(_) => message.clone_from(&ev.firmware_version),
            ProgressKind::Step(s) => {
                step = s.to_string();
                percent = 0;
            }
            ProgressKind::Percent(_, pct) => {
                percent = *pct;
                bar.show(|| line(&step, percent, &message));
                continue;
            }
            ProgressKind::Pending => message = "waiting".to_string(),
            ProgressKind::Finished(o) => {
                bar.finish(&line(&step, percent, &o.to_string()));
                break;
            }
        }
        bar.show_now(&line(&step, percent, &message));
    }
}
