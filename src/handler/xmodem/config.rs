//! The keys of `handler = "xmodem"`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::XmodemHandler;
use crate::config::{ConfigError, DeviceConfig};
use crate::handler::UpdateHandler;
use crate::handler::config::{DeviceKeys, HandlerSpec, SerialConfig};

const KNOWN_PROTOCOLS: &str = "xmodem, xmodem-1k, ymodem";

/// Which XMODEM family protocol a bootloader speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum XmodemProtocol {
    /// 128-byte blocks (CRC-16 or checksum, as the receiver asks).
    #[default]
    #[serde(rename = "xmodem")]
    Xmodem,
    /// 1024-byte blocks.
    #[serde(rename = "xmodem-1k")]
    Xmodem1k,
    /// 1024-byte blocks after a header block with file name and size.
    #[serde(rename = "ymodem")]
    Ymodem,
}

/// Keys of `handler = "xmodem"`.
#[derive(Debug, Clone, PartialEq)]
pub struct XmodemConfig {
    pub serial: SerialConfig,
    /// Default `xmodem`.
    pub protocol: XmodemProtocol,
    /// Sent first to make the application jump into its bootloader (e.g. "update\r").
    pub enter_command: Option<String>,
    /// How long to wait for the receiver's start, ACK or NAK; default 10 s.
    pub response_timeout: Duration,
    /// Retries of one block (and of the start) before the update fails; default 10.
    pub retries: u32,
    /// Reports the application's version; see the command handler.
    pub version_command: Option<Vec<String>>,
    /// Limit for `version_command`; default 60 s.
    pub command_timeout: Duration,
}

impl crate::handler::command::VersionKeys for XmodemConfig {
    fn version_keys(&self) -> (Option<&Vec<String>>, Duration) {
        (self.version_command.as_ref(), self.command_timeout)
    }
}

/// `handler = "xmodem"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawXmodem {
    port: Option<Spanned<String>>,
    baud: Option<Spanned<i64>>,
    protocol: Option<Spanned<String>>,
    enter_command: Option<Spanned<String>>,
    response_timeout: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    version_command: Option<Spanned<Vec<String>>>,
    command_timeout: Option<Spanned<String>>,
}

impl HandlerSpec for XmodemConfig {
    const NAME: &'static str = "xmodem";
    type Raw = RawXmodem;

    fn from_raw(raw: RawXmodem, device: &DeviceKeys<'_>) -> Result<Self, ConfigError> {
        let (version_command, command_timeout) =
            device.version_keys(&raw.version_command, &raw.command_timeout)?;
        Ok(XmodemConfig {
            serial: device.serial::<Self>(&raw.port, &raw.baud)?,
            protocol: device
                .check
                .named(&raw.protocol, "protocol", device.dev, KNOWN_PROTOCOLS)?
                .unwrap_or_default(),
            enter_command: raw.enter_command.map(Spanned::into_inner),
            response_timeout: device.response_timeout(&raw.response_timeout)?,
            retries: device.retries(&raw.retries)?,
            version_command,
            command_timeout,
        })
    }

    fn handler(&self, device: &DeviceConfig) -> Arc<dyn UpdateHandler> {
        Arc::new(XmodemHandler::new(&device.id, &device.device_type, self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check::parse_enum;

    #[test]
    fn known_protocols_parse() {
        for name in KNOWN_PROTOCOLS.split(", ") {
            assert!(parse_enum::<XmodemProtocol>(name).is_some(), "{name}");
        }
    }
}
