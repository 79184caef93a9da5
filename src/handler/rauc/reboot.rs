//! Rebooting the gateway: logind's `Reboot` over D-Bus (so the unit's sandbox
//! holds; polkit decides), or the configured `reboot_command`.

use super::config::RaucConfig;
use super::dbus::Rauc;
use crate::handler::HandlerError;
use crate::handler::command::{CommandHandler, Step};

/// Asks for the reboot; returns once it was accepted (`reboot_command` exited
/// 0 within `commands`' limit, its group killed after it).
pub(super) async fn request(
    config: &RaucConfig,
    commands: &CommandHandler,
    rauc: &Rauc,
) -> Result<(), HandlerError> {
    match &config.reboot_command {
        Some(argv) => commands.run_checked(Step::Reboot, argv, commands.config().command_timeout).await,
        None => rauc.logind_reboot().await,
    }
}
