//! Rebooting the gateway: logind's `Reboot` over D-Bus (so the unit's sandbox
//! holds; polkit decides), or the configured `reboot_command`.

use std::time::Duration;

use super::config::RaucConfig;
use super::dbus::Rauc;
use crate::handler::HandlerError;

/// Limit of `reboot_command` itself (it should only ask for the reboot).
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

/// Asks for the reboot; returns once it was accepted.
pub(super) async fn request(config: &RaucConfig, rauc: &Rauc) -> Result<(), HandlerError> {
    match &config.reboot_command {
        Some(argv) => super::process::run(argv, COMMAND_LIMIT)
            .await
            .map_err(|e| HandlerError::failed("reboot", e)),
        None => rauc.logind_reboot().await,
    }
}
