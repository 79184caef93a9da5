//! One device, one update: a device is claimed for a whole cycle (reading its
//! version, asking whether the update is executable, the update itself), so no
//! other cycle, status-endpoint request or `install` runs any of its commands
//! while it is being flashed. A device already claimed is skipped.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{CycleResult, Device, DeviceReport, Engine, EngineError, Inner, RunningUpdate};
use crate::engine::decide::Selection;
use crate::model::FirmwareStatus;

/// Marks a device busy for as long as it lives.
pub(super) struct Running {
    inner: Arc<Inner>,
    device_id: String,
    pub(super) token: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.inner.running().remove(&self.device_id);
    }
}

impl Engine {
    /// Claims the device, or says it is busy.
    pub(super) fn claim(&self, device_id: &str) -> Result<Running, EngineError> {
        let mut running = self.inner.running();
        if running.contains_key(device_id) {
            return Err(EngineError::Busy(device_id.to_string()));
        }
        let token = CancellationToken::new();
        running.insert(
            device_id.to_string(),
            RunningUpdate {
                token: token.clone(),
                progress: None,
                updating: false,
            },
        );
        Ok(Running {
            inner: self.inner.clone(),
            device_id: device_id.to_string(),
            token,
        })
    }

    /// Whether a cycle or an update of the device runs now.
    pub fn is_busy(&self, device_id: &str) -> bool {
        self.inner.running().contains_key(device_id)
    }

    /// One poll-and-apply cycle of the device, unless it is busy: then it is
    /// skipped, and its last report stands.
    pub(super) async fn cycle_device(&self, device: &Arc<Device>) -> CycleResult {
        let id = &device.config.id;
        match self.claim(id) {
            Ok(claim) => self.cycle_claimed(device, &claim).await,
            Err(e) => {
                tracing::info!(device = %id, "{e}; skipped in this cycle");
                let last = self.poll_state().reports.remove(id);
                CycleResult {
                    device_id: id.clone(),
                    status: last.as_ref().map_or(FirmwareStatus::Unknown, |r| r.status),
                    current_version: last.and_then(|r| r.current_version),
                    version: None,
                    outcome: None,
                }
            }
        }
    }

    /// `check`'s answer for a device whose commands must not run now: one this
    /// engine is updating, or one whose state has an update in flight (another
    /// process, the service, is flashing it; or it was interrupted and the next
    /// start resolves it). `None`: the device may be asked.
    pub(super) fn busy_report(&self, device: &Device) -> Option<DeviceReport> {
        let id = &device.config.id;
        let in_flight = self.store().load(id).ok().and_then(|s| s.in_flight);
        let why = match (self.is_busy(id), in_flight) {
            (true, _) => "busy: a cycle or update of this device runs".to_string(),
            (false, Some(f)) => format!(
                "busy: an update to {} is in flight (or was interrupted; the agent's next start \
                 resolves it); its commands are not run",
                f.version
            ),
            (false, None) => return None,
        };
        Some(DeviceReport {
            device_id: id.clone(),
            device_type: device.config.device_type.clone(),
            current_version: None,
            installed_by_agent: false,
            status: FirmwareStatus::Unknown,
            selection: Selection::default(),
            error: Some(why),
            source_error: None,
        })
    }
}
