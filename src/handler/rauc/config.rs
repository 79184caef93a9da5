//! The keys of `handler = "rauc"` (see docs/handler-rauc.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::RaucHandler;
use crate::config::{ConfigError, DeviceConfig};
use crate::handler::UpdateHandler;
use crate::handler::config::{DeviceKeys, HandlerSpec};

const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_REBOOT_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_OS_RELEASE: &str = "/etc/os-release";

/// `handler = "rauc"`: the gateway's own root filesystem, A/B through the RAUC
/// service. Every key is optional.
#[derive(Debug, Clone, PartialEq)]
pub struct RaucConfig {
    /// Run after the reboot into the new slot; exit 0 = healthy. Without it only
    /// the version and `min_uptime` are checked.
    pub health_command: Option<Vec<String>>,
    /// Limit of `health_command`; default 60 s.
    pub health_timeout: Duration,
    /// How long the new system must have been up before it is marked good.
    pub min_uptime: Duration,
    /// For `policy = "background"`: exit 0 = the reboot may happen now (a
    /// maintenance window), exit 1 = not now. Without it: at once.
    pub executable_command: Option<Vec<String>>,
    /// Reboots the gateway; without it, logind's `Reboot` over D-Bus.
    pub reboot_command: Option<Vec<String>>,
    /// How long the update step waits for the reboot to take the agent down
    /// before it gives up and keeps the running slot; default 10 min.
    pub reboot_timeout: Duration,
    /// Where `VERSION_ID` is read while the booted slot has no bundle installed
    /// by RAUC (the factory image); default /etc/os-release.
    pub os_release: PathBuf,
}

/// `handler = "rauc"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRauc {
    health_command: Option<Spanned<Vec<String>>>,
    health_timeout: Option<Spanned<String>>,
    min_uptime: Option<Spanned<String>>,
    executable_command: Option<Spanned<Vec<String>>>,
    reboot_command: Option<Spanned<Vec<String>>>,
    reboot_timeout: Option<Spanned<String>>,
    os_release: Option<Spanned<String>>,
}

impl HandlerSpec for RaucConfig {
    const NAME: &'static str = "rauc";
    type Raw = RawRauc;

    fn from_raw(raw: RawRauc, device: &DeviceKeys<'_>) -> Result<Self, ConfigError> {
        let check = device.check;
        let name = |key: &str| format!("{}: {key}", device.dev);
        Ok(RaucConfig {
            health_command: device.command(&raw.health_command, "health_command")?,
            health_timeout: check.duration_or(
                &raw.health_timeout,
                "health_timeout",
                &name("health_timeout"),
                DEFAULT_HEALTH_TIMEOUT,
            )?,
            min_uptime: match &raw.min_uptime {
                Some(v) => check.duration(v, "min_uptime", &name("min_uptime"))?,
                None => Duration::ZERO,
            },
            executable_command: device.command(&raw.executable_command, "executable_command")?,
            reboot_command: device.command(&raw.reboot_command, "reboot_command")?,
            reboot_timeout: check.duration_or(
                &raw.reboot_timeout,
                "reboot_timeout",
                &name("reboot_timeout"),
                DEFAULT_REBOOT_TIMEOUT,
            )?,
            os_release: match &raw.os_release {
                Some(p) => check.base().join(p.get_ref()),
                None => PathBuf::from(DEFAULT_OS_RELEASE),
            },
        })
    }

    fn handler(&self, device: &DeviceConfig) -> Arc<dyn UpdateHandler> {
        Arc::new(RaucHandler::new(
            &device.id,
            &device.device_type,
            self.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn parse(keys: &str) -> Result<Config, String> {
        let text = format!(
            "[[device]]\nid = \"gw\"\ntype = \"acme-gw\"\nhandler = \"rauc\"\n{keys}"
        );
        Config::parse(&text, Path::new("/etc/fota-agent/config.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_relative_paths() {
        let config = parse("os_release = \"os-release\"\n").unwrap();
        let crate::handler::HandlerConfig::Rauc(rauc) = &config.devices[0].handler else {
            panic!("not a rauc device");
        };
        assert_eq!(rauc.os_release, Path::new("/etc/fota-agent/os-release"));
        assert_eq!(rauc.health_timeout, std::time::Duration::from_secs(60));
        assert!(rauc.health_command.is_none() && rauc.reboot_command.is_none());
    }

    #[test]
    fn bad_keys_name_the_key_and_line() {
        for (keys, says) in [
            ("min_uptime = \"soon\"\n", "config.toml:5: device \"gw\": min_uptime: invalid duration"),
            ("health_command = []\n", "config.toml:5: device \"gw\": health_command: must not be empty"),
            ("reboot_timeout = \"0s\"\n", "reboot_timeout: must not be zero"),
            ("port = \"/dev/ttyS0\"\n", "port"),
        ] {
            let err = parse(keys).unwrap_err();
            assert!(err.contains(says), "{keys}: {err}");
        }
    }
}
