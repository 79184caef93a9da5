//! The keys of `handler = "mt7681"`.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Mt7681Handler;
use crate::handler::UpdateHandler;
use crate::handler::config::{DeviceKeys, HandlerSpec, SerialConfig};
use crate::config::{ConfigError, DeviceConfig};

const KNOWN_MT7681_REGIONS: &str = "loader, recovery, eeprom, sta, sta-xip, ap, ap-xip";

/// The MT7681 flash region an image is written to: the "type" byte of the
/// 128-byte upgrade header (`UART_FlASH_UPG_ID` in the MT7681 SDK's
/// `flash_map.h`, 1 to 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum Mt7681Region {
    /// Type 1, the boot loader (flash 0x0000, 20 KiB).
    #[serde(rename = "loader")]
    Loader,
    /// Type 2, the recovery (uploader) firmware (0x6000, 64 KiB).
    #[serde(rename = "recovery")]
    Recovery,
    /// Type 3, the EEPROM / calibration block (0x17000, 4 KiB).
    #[serde(rename = "eeprom")]
    Eeprom,
    /// Type 4, the station firmware (0x1F000; 188 KiB with its XIP part).
    #[default]
    #[serde(rename = "sta")]
    Sta,
    /// Type 5, the station firmware's XIP/overlay part alone (0x30000, 120 KiB).
    #[serde(rename = "sta-xip")]
    StaXip,
    /// Type 6, the soft-AP firmware (0x4F000; 188 KiB with its XIP part).
    #[serde(rename = "ap")]
    Ap,
    /// Type 7, the soft-AP firmware's XIP/overlay part alone (0x60000, 120 KiB).
    #[serde(rename = "ap-xip")]
    ApXip,
}

/// Keys of `handler = "mt7681"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mt7681Config {
    /// Default 115200 (what MediaTek's `mt7681_uploader.py` uses).
    pub serial: SerialConfig,
    /// The region images must be built for (header type byte); default `sta`.
    pub region: Mt7681Region,
    /// Longest wait for "Recovery Mode", the receiver's start, an ACK or a NAK;
    /// default 10 s.
    pub response_timeout: Duration,
    /// Attempts of entering recovery mode, of the start and of each block; default 10.
    pub retries: u32,
    /// Reports the module's version (required: the MT7681 only upgrades to a
    /// higher version, so the handler must know the current one).
    pub version_command: Vec<String>,
    /// Resets the module (e.g. a GPIO or modem line wired to its reset pin), so
    /// that its recovery firmware starts even when the application does not
    /// answer `AT#Reboot` (a module left half-written); `AT#Reboot` when unset.
    pub reset_command: Option<Vec<String>>,
    /// Limit for `version_command` and `reset_command`; default 60 s.
    pub command_timeout: Duration,
}

impl crate::handler::command::VersionKeys for Mt7681Config {
    fn version_keys(&self) -> (Option<&Vec<String>>, Duration) {
        (Some(&self.version_command), self.command_timeout)
    }
}

/// `handler = "mt7681"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMt7681 {
    port: Option<Spanned<String>>,
    baud: Option<Spanned<i64>>,
    region: Option<Spanned<String>>,
    response_timeout: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    version_command: Option<Spanned<Vec<String>>>,
    reset_command: Option<Spanned<Vec<String>>>,
    command_timeout: Option<Spanned<String>>,
}

impl HandlerSpec for Mt7681Config {
    const NAME: &'static str = "mt7681";
    type Raw = RawMt7681;

    fn from_raw(raw: RawMt7681, device: &DeviceKeys<'_>) -> Result<Self, ConfigError> {
        let dev = device.dev;
        let (version_command, command_timeout) =
            device.version_keys(&raw.version_command, &raw.command_timeout)?;
        let reset_command = device.command(&raw.reset_command, "reset_command")?;
        // The MT7681 only upgrades to a higher version (MCS rule): the handler
        // needs the current version and never allows a downgrade.
        if let Some(o) = device.only_newer
            && !*o.get_ref()
        {
            let msg = format!(
                "{dev}: only_newer = false is not allowed for handler \"mt7681\" \
                 (an MT7681 only upgrades to a higher version)"
            );
            return Err(device.check.at(o, "only_newer", msg));
        }
        let Some(version_command) = version_command else {
            let why = ": an MT7681 only upgrades to a higher version";
            return Err(device.missing::<Self>("version_command", why));
        };
        Ok(Mt7681Config {
            serial: device.serial::<Self>(&raw.port, &raw.baud)?,
            region: device
                .check
                .named(&raw.region, "region", dev, KNOWN_MT7681_REGIONS)?
                .unwrap_or_default(),
            response_timeout: device.response_timeout(&raw.response_timeout)?,
            retries: device.retries(&raw.retries)?,
            version_command,
            reset_command,
            command_timeout,
        })
    }

    fn handler(&self, device: &DeviceConfig) -> Arc<dyn UpdateHandler> {
        Arc::new(Mt7681Handler::new(
            &device.id,
            &device.device_type,
            device.version_scheme,
            self,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::check::parse_enum;

    #[test]
    fn known_regions_parse() {
        for name in KNOWN_MT7681_REGIONS.split(", ") {
            assert!(parse_enum::<Mt7681Region>(name).is_some(), "{name}");
        }
    }
}
