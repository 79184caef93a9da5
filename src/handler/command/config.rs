//! The keys of `handler = "command"`: argv arrays of executables (see
//! docs/handler-command.md).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::CommandHandler;
use crate::config::{ConfigError, DeviceConfig};
use crate::handler::UpdateHandler;
use crate::handler::config::{DeviceKeys, HandlerSpec};

/// Keys of `handler = "command"`: argv arrays of executables (see
/// docs/handler-command.md). Each array is non-empty with a non-empty program (first
/// element). A program containing `/` that is relative (`./bin/update.sh`) is
/// resolved against the config file's directory; a bare name (`sh`) is left for
/// `PATH` lookup, and the other arguments are passed as written.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandConfig {
    /// Prints the device's current version on stdout. Without it the version is
    /// unknown.
    pub version_command: Option<Vec<String>>,
    /// Exit 0: the update can run now; exit 1: not now. Without it: always.
    pub executable_command: Option<Vec<String>>,
    /// Moves the image to the device ahead of the update (background transfer).
    pub transfer_command: Option<Vec<String>>,
    /// Installs the image (required).
    pub update_command: Vec<String>,
    /// Limit for the version and executable commands; default 60 s. Transfer and
    /// update are bounded by `agent.update_timeout`.
    pub command_timeout: Duration,
}

/// `handler = "command"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCommand {
    version_command: Option<Spanned<Vec<String>>>,
    executable_command: Option<Spanned<Vec<String>>>,
    transfer_command: Option<Spanned<Vec<String>>>,
    update_command: Option<Spanned<Vec<String>>>,
    command_timeout: Option<Spanned<String>>,
}

impl HandlerSpec for CommandConfig {
    const NAME: &'static str = "command";
    type Raw = RawCommand;

    fn from_raw(raw: RawCommand, device: &DeviceKeys<'_>) -> Result<Self, ConfigError> {
        let (version_command, command_timeout) =
            device.version_keys(&raw.version_command, &raw.command_timeout)?;
        let Some(update) = &raw.update_command else {
            return Err(device.missing::<Self>("update_command", ""));
        };
        Ok(CommandConfig {
            version_command,
            executable_command: device.command(&raw.executable_command, "executable_command")?,
            transfer_command: device.command(&raw.transfer_command, "transfer_command")?,
            update_command: device.check.command(update, "update_command", device.dev)?,
            command_timeout,
        })
    }

    fn handler(&self, device: &DeviceConfig) -> Arc<dyn UpdateHandler> {
        Arc::new(CommandHandler::new(
            &device.id,
            &device.device_type,
            self.clone(),
        ))
    }
}
