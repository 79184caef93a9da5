//! One poll-and-apply cycle: per device, check, decide, and start the update
//! under a global permit.

use std::sync::Arc;

use super::claim::Running;
use super::update::{self, Mode};
use super::{CycleResult, Device, Engine, EngineError, STUCK_GRACE, decide, survivor};
use crate::model::{Firmware, FirmwareStatus};
use crate::progress::{CommitHook, Outcome, ProcessHook, Progress};

impl Engine {
    /// One poll-and-apply cycle of one device now, beside the run loop (the
    /// status endpoint's "update this device"). A device already updating is
    /// left alone.
    pub async fn cycle(&self, device_id: &str) -> Result<CycleResult, EngineError> {
        let device = self.device(device_id)?;
        let claim = self.claim(device_id)?;
        Ok(self.cycle_claimed(&device, &claim).await)
    }

    /// One poll-and-apply cycle over all devices, concurrently.
    pub async fn run_once(&self) -> Vec<CycleResult> {
        let mut set = tokio::task::JoinSet::new();
        for (idx, device) in self.inner.devices.iter().enumerate() {
            let engine = self.clone();
            let device = device.clone();
            set.spawn(async move { (idx, engine.cycle_device(&device).await) });
        }
        let mut results: Vec<(usize, CycleResult)> = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(r) => results.push(r),
                Err(e) => tracing::error!("device task failed: {e}"),
            }
        }
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    /// One cycle of a device this cycle has claimed, so that nothing else runs
    /// its commands meanwhile (see `claim.rs`).
    pub(super) async fn cycle_claimed(&self, device: &Arc<Device>, claim: &Running) -> CycleResult {
        let report = self.check_device(device).await;
        self.record_poll(&report);
        let id = device.config.id.clone();
        if let Some(e) = &report.error {
            tracing::warn!(device = %id, "{e}");
        }
        for (version, reason) in &report.selection.refused {
            tracing::info!(device = %id, firmware_version = %version, "not installing: {reason}");
        }
        let mut result = CycleResult {
            device_id: id.clone(),
            status: report.status,
            current_version: report.current_version.clone(),
            version: None,
            outcome: None,
        };
        if let Some((version, outcome)) = self.reflash(device, claim).await {
            result.version = Some(version);
            result.outcome = outcome;
            self.confirmed(&result);
            return result;
        }
        let Some(firmware) = report.selection.candidate else {
            return result;
        };
        let staged = match self.inner.store.load(&id) {
            Ok(s) => s.transferred.is_some_and(|t| t.version == firmware.version),
            Err(e) => {
                tracing::error!(device = %id, "{e}");
                false
            }
        };
        let plan = decide::plan(
            device.config.policy,
            firmware.deployment.as_ref(),
            staged,
            report.status == FirmwareStatus::UpdateExecutable,
        );
        let mode = match plan {
            decide::Plan::Run(mode) => mode,
            decide::Plan::Wait(why) => {
                tracing::info!(device = %id, firmware_version = %firmware.version, "{why}");
                return result;
            }
        };
        result.version = Some(firmware.version.clone());
        match self.start(device, &firmware, mode, claim).await {
            Ok(outcome) => result.outcome = outcome,
            Err(e) => tracing::info!(device = %id, "{e}"),
        }
        // A background transfer that finished may be followed by its update at once,
        // unless the server said not yet.
        let update_allowed = firmware
            .deployment
            .as_ref()
            .is_none_or(|d| d.update_allowed());
        if mode == Mode::TransferOnly
            && result.outcome.is_none()
            && update_allowed
            && let Ok(true) = self.executable(device).await
        {
            result.outcome = self
                .start(device, &firmware, Mode::UpdateTransferred, claim)
                .await
                .unwrap_or(None);
            result.status = FirmwareStatus::UpdateExecutable;
        }
        self.confirmed(&result);
        result
    }

    /// Runs one update of `device` (one at a time per device; waits for a global
    /// permit).
    pub(super) async fn start(
        &self,
        device: &Arc<Device>,
        firmware: &Firmware,
        mode: Mode,
        running: &Running,
    ) -> Result<Option<Outcome>, EngineError> {
        if let Some(r) = self.inner.running().get_mut(&device.config.id) {
            r.updating = true;
        }
        let _permit = self.inner.permits.acquire().await;
        let progress = Arc::new(Progress::new(
            &device.config.id,
            &firmware.version,
            self.inner.events.clone(),
        ));
        if let Some(r) = self.inner.running().get_mut(&device.config.id) {
            r.progress = Some(progress.clone());
        }
        if running.token.is_cancelled() {
            // Canceled while waiting for a permit: nothing may be written.
            progress.cancel_before_commit();
        }
        let (store, id) = (self.inner.store.clone(), device.config.id.clone());
        progress.on_process(ProcessHook(Box::new(move |pgid| {
            survivor::record(&store, &id, pgid)
        })));
        let (store, id) = (self.inner.store.clone(), device.config.id.clone());
        progress.on_commit(CommitHook(Box::new(move || {
            update::mark_written(&store, &id)
        })));
        let ctx = update::Context {
            store: &self.inner.store,
            downloader: &self.inner.downloader,
            trust: &self.inner.trust,
            timeout: self.inner.agent.update_timeout,
            confirm_window: self.inner.agent.confirm_window,
            bytes: &self.inner.bytes,
        };
        let work = update::run(
            &ctx,
            device,
            firmware,
            mode,
            progress,
            running.token.clone(),
        );
        Ok(self
            .step(&device.config.id, "updating", STUCK_GRACE, work)
            .await)
    }
}
