//! Cancelling a running update, up to the handler's commit point.

use super::Engine;
use crate::progress::ProgressStep;
use crate::source::CancelOutcome;

impl Engine {
    /// Cancels the device's running update, unless the device is being written:
    /// its update step runs or the handler passed its commit point.
    pub fn cancel(&self, device_id: &str) -> CancelOutcome {
        let running = self.inner.running();
        let Some(update) = running.get(device_id).filter(|u| u.updating) else {
            return CancelOutcome::NotRunning;
        };
        let step = update.progress.as_ref().and_then(|p| p.current_step());
        if matches!(step, Some(ProgressStep::Updating | ProgressStep::Rebooting)) {
            return CancelOutcome::TooLate;
        }
        // The handler's commit point (its first write to the device) decides,
        // atomically: either no write starts, or the cancel is too late.
        if let Some(p) = &update.progress
            && !p.cancel_before_commit()
        {
            return CancelOutcome::TooLate;
        }
        update.token.cancel();
        CancelOutcome::Canceled
    }
}
