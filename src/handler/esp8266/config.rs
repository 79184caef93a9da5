//! The keys of `handler = "esp8266"`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Esp8266Handler;
use crate::config::{ConfigError, DeviceConfig};
use crate::handler::UpdateHandler;
use crate::handler::config::{DeviceKeys, HandlerSpec, SerialConfig};

const KNOWN_RESETS: &str = "classic, none";

/// How the ESP8266 is put into its ROM bootloader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EspReset {
    /// esptool's classic DTR/RTS sequence (EN and GPIO0 wired to RTS and DTR).
    #[default]
    Classic,
    /// The device is already in its bootloader (or is put there by other means).
    None,
}

/// Keys of `handler = "esp8266"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Esp8266Config {
    pub serial: SerialConfig,
    /// Flash address of the image; a multiple of 4 KiB; default 0.
    pub flash_offset: u32,
    /// Default `classic`.
    pub reset: EspReset,
    /// Reports the application's version (the ROM cannot); see the command handler.
    pub version_command: Option<Vec<String>>,
    /// Limit for `version_command`; default 60 s.
    pub command_timeout: Duration,
}

impl crate::handler::command::VersionKeys for Esp8266Config {
    fn version_keys(&self) -> (Option<&Vec<String>>, Duration) {
        (self.version_command.as_ref(), self.command_timeout)
    }
}

/// `handler = "esp8266"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEsp8266 {
    port: Option<Spanned<String>>,
    baud: Option<Spanned<i64>>,
    flash_offset: Option<Spanned<i64>>,
    reset: Option<Spanned<String>>,
    version_command: Option<Spanned<Vec<String>>>,
    command_timeout: Option<Spanned<String>>,
}

impl HandlerSpec for Esp8266Config {
    const NAME: &'static str = "esp8266";
    type Raw = RawEsp8266;

    fn from_raw(raw: RawEsp8266, device: &DeviceKeys<'_>) -> Result<Self, ConfigError> {
        let dev = device.dev;
        let (version_command, command_timeout) =
            device.version_keys(&raw.version_command, &raw.command_timeout)?;
        let serial = device.serial::<Self>(&raw.port, &raw.baud)?;
        let flash_offset = match &raw.flash_offset {
            Some(o) => device.check.int(
                o,
                "flash_offset",
                |o: &u32| o.is_multiple_of(0x1000) && *o < 0x0100_0000,
                |o| {
                    format!(
                        "{dev}: flash_offset must be a multiple of 0x1000 below 16 MiB, got {o:#x}"
                    )
                },
            )?,
            None => 0,
        };
        Ok(Esp8266Config {
            serial,
            flash_offset,
            reset: device
                .check
                .named(&raw.reset, "reset", dev, KNOWN_RESETS)?
                .unwrap_or_default(),
            version_command,
            command_timeout,
        })
    }

    fn handler(&self, device: &DeviceConfig) -> Arc<dyn UpdateHandler> {
        Arc::new(Esp8266Handler::new(&device.id, &device.device_type, self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check::parse_enum;

    #[test]
    fn known_resets_parse() {
        for name in KNOWN_RESETS.split(", ") {
            assert!(parse_enum::<EspReset>(name).is_some(), "{name}");
        }
    }
}
