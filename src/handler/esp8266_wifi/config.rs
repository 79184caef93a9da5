//! The keys of `handler = "esp8266-wifi"`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Esp8266WifiHandler;
use crate::config::{ConfigError, DeviceConfig, Secret};
use crate::handler::UpdateHandler;
use crate::handler::config::{DeviceKeys, HandlerSpec};

/// IoT_Demo's cloud port (`iot.espressif.cn:8000`, plain TCP).
const DEFAULT_CLOUD: &str = "0.0.0.0:8000";
/// The ROM download port the firmware fixes (`server->port = 80`).
const DEFAULT_ROM: &str = "0.0.0.0:80";
const DEFAULT_STALL: Duration = Duration::from_secs(30);
/// Longer than two of the device's 50 s beacons: a device that is on reconnects
/// within it.
const DEFAULT_CONNECT: Duration = Duration::from_secs(120);
/// IoT_Demo copies exactly 40 bytes of its master device key into every frame.
const KEY_LEN: usize = 40;

/// Keys of `handler = "esp8266-wifi"`.
#[derive(Debug, Clone, PartialEq)]
pub struct Esp8266WifiConfig {
    /// The device's master device key: the `Authorization: token <key>` it sends.
    pub key: Secret,
    /// The product type in its versions (`v1.1.0t45772(a)` has ptype 45772).
    pub ptype: u32,
    /// Where the gateway's cloud server listens (the device connects to port 8000
    /// of whatever `iot.espressif.cn` resolves to).
    pub cloud_listen: SocketAddr,
    /// Where the ROM download server listens (port 80 of the same address).
    pub rom_listen: SocketAddr,
    /// An update fails when the device fetches no byte for this long.
    pub stall_timeout: Duration,
    /// How long the first version query waits for a device not yet seen.
    pub connect_timeout: Duration,
}

/// `handler = "esp8266-wifi"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEsp8266Wifi {
    key: Option<Spanned<String>>,
    ptype: Option<Spanned<i64>>,
    cloud_listen: Option<Spanned<String>>,
    rom_listen: Option<Spanned<String>>,
    stall_timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
}

impl HandlerSpec for Esp8266WifiConfig {
    const NAME: &'static str = "esp8266-wifi";
    type Raw = RawEsp8266Wifi;

    fn from_raw(raw: RawEsp8266Wifi, device: &DeviceKeys<'_>) -> Result<Self, ConfigError> {
        let dev = device.dev;
        let check = device.check;
        let key = match &raw.key {
            Some(k) if valid_key(k.get_ref()) => Secret(k.get_ref().clone()),
            Some(k) => {
                let msg = format!(
                    "{dev}: key must be the {KEY_LEN}-character master device key \
                     (printable ASCII without quotes or backslashes)"
                );
                return Err(check.at(k, "key", msg));
            }
            None => return Err(device.missing::<Self>("key", ": the master device key")),
        };
        let ptype = match &raw.ptype {
            Some(p) => check.int(
                p,
                "ptype",
                |p: &u32| *p > 0,
                |p| format!("{dev}: ptype must be a positive product type, got {p}"),
            )?,
            None => return Err(device.missing::<Self>("ptype", "")),
        };
        let addr = |value: &Option<Spanned<String>>, key: &str, default: &str| match value {
            Some(v) => v.get_ref().parse::<SocketAddr>().map_err(|e| {
                let msg = format!("{dev}: {key} {:?} is not an address:port: {e}", v.get_ref());
                check.at(v, key, msg)
            }),
            None => Ok(default.parse().expect("valid default address")),
        };
        let duration = |value: &Option<Spanned<String>>, key: &str, default| {
            check.duration_or(value, key, &format!("{dev}: {key}"), default)
        };
        Ok(Esp8266WifiConfig {
            key,
            ptype,
            cloud_listen: addr(&raw.cloud_listen, "cloud_listen", DEFAULT_CLOUD)?,
            rom_listen: addr(&raw.rom_listen, "rom_listen", DEFAULT_ROM)?,
            stall_timeout: duration(&raw.stall_timeout, "stall_timeout", DEFAULT_STALL)?,
            connect_timeout: duration(&raw.connect_timeout, "connect_timeout", DEFAULT_CONNECT)?,
        })
    }

    fn handler(&self, device: &DeviceConfig) -> Arc<dyn UpdateHandler> {
        Arc::new(Esp8266WifiHandler::new(&device.id, self))
    }
}

/// The key goes into JSON and an HTTP header verbatim, as the firmware sends it.
fn valid_key(key: &str) -> bool {
    key.len() == KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}
