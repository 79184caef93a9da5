//! The keys of `handler = "particle"`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ParticleHandler;
use crate::config::{ConfigError, DeviceConfig};
use crate::handler::UpdateHandler;
use crate::handler::config::{DeviceKeys, HandlerSpec};

/// Opening the USB serial port at this rate puts the device in listening mode
/// (`particle flash --serial` opens at it and sends `f`).
pub const LISTEN_BAUD: u32 = 28_800;
/// The device answers `f` at once; listening mode takes a moment to start.
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the port may stay away while the device resets.
const DEFAULT_RESET_TIMEOUT: Duration = Duration::from_secs(60);

/// Keys of `handler = "particle"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticleConfig {
    /// The device's USB serial port, e.g. `/dev/serial/by-id/usb-Particle_…`.
    pub port: PathBuf,
    /// The platform the device is (`p` of its `s` answer; 12 Argon, 13 Boron …).
    pub platform_id: u16,
    /// The product a binary must be built for (its suffix's product id).
    pub product_id: u16,
    /// Opens listening mode and carries the console and YMODEM; default 28800.
    /// Over USB the rate means nothing else: particle-cli sends `s`, `v`, `i`
    /// at 9600 to a device already in listening mode, which answers at any
    /// rate, so the agent stays at this one.
    pub baud: u32,
    /// Longest wait for one answer of the device (console, YMODEM); at least 6 s
    /// because the receiver's first 'C' comes after its 5 s timeout. Default 10 s.
    pub response_timeout: Duration,
    /// Attempts of each YMODEM block; default 10.
    pub retries: u32,
    /// Longest time the port may be gone (device resetting); default 60 s.
    pub reset_timeout: Duration,
    /// `agent.state_dir`: holds `<device id>.particle.json`, the SHA-256 →
    /// PRODUCT_VERSION map of the binaries this device was given.
    pub state_dir: PathBuf,
}

/// `handler = "particle"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawParticle {
    port: Option<Spanned<String>>,
    platform_id: Option<Spanned<i64>>,
    product_id: Option<Spanned<i64>>,
    baud: Option<Spanned<i64>>,
    response_timeout: Option<Spanned<String>>,
    retries: Option<Spanned<i64>>,
    reset_timeout: Option<Spanned<String>>,
}

impl ParticleConfig {
    fn id(
        device: &DeviceKeys<'_>,
        value: &Option<Spanned<i64>>,
        key: &str,
    ) -> Result<u16, ConfigError> {
        let dev = device.dev;
        match value {
            Some(v) => device.check.int(
                v,
                key,
                |v| (1..=0xFFFE).contains(v),
                |v| format!("{dev}: {key} must be between 1 and 65534, got {v}"),
            ),
            None => Err(device.missing::<Self>(key, "")),
        }
    }

}

impl HandlerSpec for ParticleConfig {
    const NAME: &'static str = "particle";
    type Raw = RawParticle;

    fn from_raw(raw: RawParticle, device: &DeviceKeys<'_>) -> Result<Self, ConfigError> {
        let serial = device.serial::<Self>(&raw.port, &raw.baud)?;
        let duration = |value: &Option<Spanned<String>>, key: &str, default| {
            let name = format!("{}: {key}", device.dev);
            device.check.duration_or(value, key, &name, default)
        };
        let response_timeout = duration(
            &raw.response_timeout,
            "response_timeout",
            DEFAULT_RESPONSE_TIMEOUT,
        )?;
        let reset_timeout = duration(&raw.reset_timeout, "reset_timeout", DEFAULT_RESET_TIMEOUT)?;
        Ok(ParticleConfig {
            port: serial.port,
            platform_id: Self::id(device, &raw.platform_id, "platform_id")?,
            product_id: Self::id(device, &raw.product_id, "product_id")?,
            baud: raw.baud.as_ref().map_or(LISTEN_BAUD, |_| serial.baud),
            response_timeout,
            retries: device.retries(&raw.retries)?,
            reset_timeout,
            state_dir: device.state_dir.to_path_buf(),
        })
    }

    fn handler(&self, device: &DeviceConfig) -> Arc<dyn UpdateHandler> {
        Arc::new(ParticleHandler::new(&device.id, self))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, HandlerConfig};

    const BASE: &str = "[[device]]\nid = \"e\"\ntype = \"t\"\nhandler = \"particle\"\n";

    #[test]
    fn defaults_and_state_file() {
        let text = format!(
            "[agent]\nstate_dir = \"/s\"\n{BASE}port = \"/dev/x\"\nplatform_id = 13\nproduct_id = 4321\n"
        );
        let cfg = Config::parse(&text, std::path::Path::new("c.toml")).unwrap();
        let HandlerConfig::Particle(p) = &cfg.devices[0].handler else {
            panic!("not particle");
        };
        assert_eq!((p.platform_id, p.product_id, p.baud), (13, 4321, 28_800));
        assert_eq!(p.state_dir, std::path::Path::new("/s"));
    }

    #[test]
    fn keys_are_checked() {
        let ids = "platform_id = 13\nproduct_id = 4321\n";
        let cases = [
            (
                format!("{BASE}port = \"/dev/x\"\nproduct_id = 4321\n"),
                1,
                "platform_id",
                "missing key \"platform_id\" (required by handler \"particle\")",
            ),
            (
                format!("{BASE}port = \"/dev/x\"\nplatform_id = 13\nproduct_id = 0\n"),
                7,
                "product_id",
                "product_id must be between 1 and 65534, got 0",
            ),
            (
                format!("{BASE}{ids}"),
                1,
                "port",
                "missing key \"port\" (required by handler \"particle\")",
            ),
            (
                format!("{BASE}port = \"/dev/x\"\n{ids}region = \"sta\"\n"),
                8,
                "region",
                "key \"region\" does not apply to handler \"particle\"",
            ),
        ];
        for (text, line, key, message) in cases {
            let err = Config::parse(&text, std::path::Path::new("c.toml")).unwrap_err();
            let shown = err.to_string();
            assert_eq!((err.line(), err.key()), (Some(line), Some(key)), "{shown}");
            assert!(
                shown.starts_with(&format!("c.toml:{line}: device \"e\": {message}")),
                "{shown}"
            );
        }
    }
}
