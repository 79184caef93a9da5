//! `GET /metrics`: Prometheus text exposition format 0.0.4.

use std::fmt::Write;

use super::{Counters, DURATION_BUCKETS, Tracker};
use crate::engine::{Engine, PollState};
use crate::model::FirmwareStatus;

/// The content type Prometheus expects.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A metric with one sample and no labels.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// Renders every metric.
pub fn render(tracker: &Tracker, engine: &Engine) -> String {
    let c = tracker.counters();
    let poll = engine.poll_state();
    let mut out = String::new();
    outcomes(&mut out, &c);
    single(
        &mut out,
        "fota_agent_downloaded_bytes_total",
        "counter",
        "Firmware bytes fetched into the state directory (downloads and local copies).",
        engine.bytes_fetched(),
    );
    polls(&mut out, &poll);
    devices(&mut out, tracker, engine, &poll);
    single(
        &mut out,
        "fota_agent_start_time_seconds",
        "gauge",
        "When the agent started, seconds since the Unix epoch.",
        tracker.started_at(),
    );
    header(
        &mut out,
        "fota_agent_build_info",
        "gauge",
        "Always 1; the agent's version as a label.",
    );
    let _ = writeln!(
        out,
        "fota_agent_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    out
}

/// Finished updates: by outcome, and the histogram of their durations.
fn outcomes(out: &mut String, c: &Counters) {
    header(
        out,
        "fota_agent_updates_total",
        "counter",
        "Updates finished since the agent started, by outcome.",
    );
    for (outcome, n) in [
        ("success", c.success),
        ("failed", c.failed),
        ("canceled", c.canceled),
    ] {
        let _ = writeln!(out, "fota_agent_updates_total{{outcome=\"{outcome}\"}} {n}");
    }

    header(
        out,
        "fota_agent_update_duration_seconds",
        "histogram",
        "Duration of finished updates, from their start to their outcome.",
    );
    let mut cumulative = 0;
    for (i, le) in DURATION_BUCKETS.iter().enumerate() {
        cumulative += c.duration_buckets[i];
        let _ = writeln!(
            out,
            "fota_agent_update_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "fota_agent_update_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        c.finished()
    );
    let _ = writeln!(
        out,
        "fota_agent_update_duration_seconds_sum {}",
        c.duration_sum
    );
    let _ = writeln!(
        out,
        "fota_agent_update_duration_seconds_count {}",
        c.finished()
    );
}

/// The source: failed queries, and whether it answered the last one.
fn polls(out: &mut String, poll: &PollState) {
    single(
        out,
        "fota_agent_poll_errors_total",
        "counter",
        "Device checks whose firmware source query failed.",
        poll.poll_errors,
    );
    header(
        out,
        "fota_agent_source_up",
        "gauge",
        "1 if the firmware source answered the last poll, 0 if not (absent before the first).",
    );
    if poll.last_poll.is_some() {
        let up = u8::from(poll.source_error.is_none());
        let _ = writeln!(out, "fota_agent_source_up {up}");
    }
}

/// The devices: updates running now, and how many are in each firmware status.
fn devices(out: &mut String, tracker: &Tracker, engine: &Engine, poll: &PollState) {
    let running = engine
        .devices()
        .filter(|d| tracker.update(&d.id).is_some())
        .count();
    single(
        out,
        "fota_agent_updates_in_progress",
        "gauge",
        "Updates running now (a transferred update waiting to become executable included).",
        running,
    );
    header(
        out,
        "fota_agent_devices",
        "gauge",
        "Configured devices by firmware status at their last check.",
    );
    for status in [
        FirmwareStatus::Unknown,
        FirmwareStatus::UpToDate,
        FirmwareStatus::UpdateAvailable,
        FirmwareStatus::UpdateExecutable,
    ] {
        let n = engine
            .devices()
            .filter(|d| {
                poll.reports
                    .get(&d.id)
                    .map_or(FirmwareStatus::Unknown, |r| r.status)
                    == status
            })
            .count();
        let _ = writeln!(out, "fota_agent_devices{{status=\"{status}\"}} {n}");
    }
}
