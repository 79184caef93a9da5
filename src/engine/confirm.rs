//! Reading the device's version to judge an update (after the handler's update
//! step, and in start-up recovery). A device that has just been flashed often
//! reboots and cannot answer for a while; a failed read is retried with backoff
//! within the confirm window (`[agent] confirm_window`) before it counts. An
//! answer, whatever it says, is final at once.

use std::time::Duration;

use tokio::time::Instant;

use super::Device;
use crate::handler::HandlerError;

/// The first wait after a failed read; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// The device's version, asked again after failed reads until `window` has
/// passed; then the last read's error.
pub(super) async fn read_version(
    device: &Device,
    window: Duration,
) -> Result<Option<String>, HandlerError> {
    let deadline = Instant::now() + window;
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1u32;
    loop {
        match device.handler.current_version().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(e);
                }
                tracing::info!(device = %device.config.id, attempt,
                    "cannot read the version yet (the device may be rebooting): {e}");
                tokio::time::sleep(backoff.min(deadline - now)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                attempt += 1;
            }
        }
    }
}
