//! The check/report path: what each device runs and is offered, what the
//! status endpoint shows, and what the source hears back after a cycle.

use std::time::{Duration, SystemTime};

use super::{CycleResult, Device, DeviceReport, Engine, decide, installed, vet};
use crate::model::FirmwareStatus;
use crate::progress::Outcome;
use crate::source::DeviceVersion;

impl Engine {
    /// Each device's firmware status and the firmware it would get; a device
    /// being updated is not asked (see `claim.rs`).
    pub async fn check(&self) -> Vec<DeviceReport> {
        let mut reports = Vec::new();
        for device in &self.inner.devices {
            match self.busy_report(device) {
                Some(busy) => reports.push(busy),
                None => reports.push(self.check_device(device).await),
            }
        }
        reports
    }

    pub(super) async fn check_device(&self, device: &Device) -> DeviceReport {
        let mut errors = Vec::new();
        let id = device.config.id.as_str();
        let read = self
            .step(
                id,
                "reading the version",
                Duration::ZERO,
                installed::current_version(device, &self.inner.store),
            )
            .await;
        let answered = read.is_ok();
        let current = match read {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("current version: {e}"));
                installed::Current::default()
            }
        };
        let installed_by_agent = current.installed_by_agent;
        let current = current.version;
        let offered = match self
            .step(
                id,
                "asking the source",
                Duration::ZERO,
                self.inner.source.firmware_for(&device.config),
            )
            .await
        {
            Ok(f) => f,
            Err(e) => {
                errors.push(format!("source: {e}"));
                Vec::new()
            }
        };
        let source_error = errors.last().filter(|e| e.starts_with("source: ")).cloned();
        let vetted = vet::vet(device, offered).await;
        let offered = &vetted.admitted;
        let mut selection = match self
            .inner
            .locks
            .view(&self.inner.store, &device.config, answered)
        {
            Ok(lock) => decide::choose(&device.config, current.as_deref(), offered, lock.as_ref()),
            Err(e) => {
                errors.push(format!("lock: {e}"));
                decide::Selection::default()
            }
        };
        vetted.into_selection(&mut selection);
        let executable = if selection.candidate.is_some() {
            match self
                .step(
                    id,
                    "asking if executable",
                    Duration::ZERO,
                    self.executable(device),
                )
                .await
            {
                Ok(x) => x,
                Err(e) => {
                    errors.push(format!("update executable: {e}"));
                    false
                }
            }
        } else {
            false
        };
        DeviceReport {
            device_id: device.config.id.clone(),
            device_type: device.config.device_type.clone(),
            status: selection.status(current.as_deref(), executable),
            current_version: current,
            installed_by_agent,
            selection,
            error: (!errors.is_empty()).then(|| errors.join("; ")),
            source_error,
        }
    }

    pub(super) fn record_poll(&self, report: &DeviceReport) {
        let mut poll = self.inner.poll.lock().unwrap_or_else(|p| p.into_inner());
        poll.last_poll = Some(SystemTime::now());
        if report.source_error.is_some() {
            poll.poll_errors += 1;
        }
        poll.source_error.clone_from(&report.source_error);
        poll.reports
            .insert(report.device_id.clone(), report.clone());
    }

    /// ESH: a background device's update is executable only once its firmware is
    /// on the device, and when the handler says so.
    pub(super) async fn executable(&self, device: &Device) -> Result<bool, String> {
        device
            .handler
            .is_update_executable()
            .await
            .map_err(|e| e.to_string())
    }

    /// The device confirmed the new version: what the status endpoint shows
    /// until the next poll.
    pub(super) fn confirmed(&self, result: &CycleResult) {
        if result.outcome != Some(Outcome::Success) {
            return;
        }
        let mut poll = self.inner.poll.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = poll.reports.get_mut(&result.device_id) {
            r.current_version.clone_from(&result.version);
            r.status = FirmwareStatus::UpToDate;
            r.selection.candidate = None;
            r.error = None;
        }
    }

    /// Tells the source what each device runs after a cycle.
    pub async fn report_versions(&self, results: &[CycleResult]) {
        let versions: Vec<DeviceVersion> = results
            .iter()
            .zip(self.devices())
            .map(|(r, d)| DeviceVersion {
                device_id: r.device_id.clone(),
                device_type: d.device_type.clone(),
                version: match (&r.outcome, &r.version) {
                    (Some(Outcome::Success), Some(v)) => Some(v.clone()),
                    _ => r.current_version.clone(),
                },
            })
            .collect();
        self.inner.source.report_versions(&versions).await;
    }
}
