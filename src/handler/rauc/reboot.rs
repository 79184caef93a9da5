//! Rebooting the gateway: logind's `Reboot` over D-Bus (so the unit's sandbox
//! holds; polkit decides), or the configured `reboot_command`.

use super::config::RaucConfig;
use super::dbus::Rauc;
use crate::handler::HandlerError;

/// Asks for the reboot; returns once it was accepted.
pub(super) async fn request(config: &RaucConfig, rauc: &Rauc) -> Result<(), HandlerError> {
    match &config.reboot_command {
        Some(argv) => super::process::run(argv, super::process::SHORT_LIMIT)
            .await
            .map_err(|e| HandlerError::failed("reboot", e)),
        None => rauc.logind_reboot().await,
    }
}
