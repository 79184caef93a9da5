//! Tests of config parsing: valid files (defaults, paths) in `valid`, every kind of
//! error with its exact line and key in `errors`.

mod errors;
mod mcs;
mod thingsboard;
mod valid;

use std::path::Path;

use super::{CommandConfig, Config, ConfigError, DeviceConfig, HandlerConfig};
use crate::model::UpdatePolicy;
use crate::version::VersionScheme;

const PATH: &str = "/etc/fota-agent/config.toml";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(PATH))
}

fn parse_err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(config) => panic!("expected an error, got {config:#?}\nfor:\n{text}"),
        Err(e) => e,
    }
}

/// A device with every default and just an update command (also used by other
/// modules' tests).
pub(crate) fn minimal_device(id: &str, device_type: &str, update: &[&str]) -> DeviceConfig {
    DeviceConfig {
        id: id.into(),
        device_type: device_type.into(),
        policy: UpdatePolicy::Immediate,
        version_scheme: VersionScheme::Esh,
        only_newer: true,
        group: None,
        lock: None,
        handler: HandlerConfig::Command(CommandConfig {
            version_command: None,
            executable_command: None,
            transfer_command: None,
            update_command: update.iter().map(|s| s.to_string()).collect(),
            command_timeout: std::time::Duration::from_secs(60),
        }),
    }
}
