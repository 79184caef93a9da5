//! How start-up recovery judges an update step left in flight: the handler's own
//! judgement when its update step restarts the agent (RAUC's reboot), otherwise
//! the version the device reports now (asked within the confirm window).

use std::cmp::Ordering;
use std::time::Duration;

use super::Device;
use crate::progress::Outcome;

/// The one outcome of the interrupted update of `device` to `version`.
pub(super) async fn judge(device: &Device, version: &str, window: Duration) -> Outcome {
    if let Some(judged) = device.handler.resolve_after_restart(version).await {
        return match judged {
            Ok(()) => Outcome::Success,
            Err(e) => Outcome::Failed(e.to_string()),
        };
    }
    match super::confirm::read_version(device, window).await {
        Ok(Some(v)) if device.config.version_scheme.compare(&v, version) == Ok(Ordering::Equal) => {
            Outcome::Success
        }
        Ok(Some(v)) => Outcome::Failed(format!(
            "interrupted by an agent restart; device reports version {v}, not {version}"
        )),
        Ok(None) => {
            Outcome::Failed("interrupted by an agent restart; device reports no version".into())
        }
        Err(e) => Outcome::Failed(format!(
            "interrupted by an agent restart; cannot read the device's version: {e}"
        )),
    }
}
