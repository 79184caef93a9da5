//! The keys of `kind = "mcs"`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::check::Checker;
use crate::config::secret_ref::SecretValue;
use crate::config::{ConfigError, Secret};
use crate::source::config::{SourceConfig, SourceKeys, SourceKind};

const DEFAULT_MCS_BASE_URL: &str = "https://api.mediatek.com/mcs/v2";
const DEFAULT_MCS_GATEWAY_DEVICE: &str = "gateway";
const DEFAULT_MCS_HEARTBEAT: Duration = Duration::from_secs(60);
const DEFAULT_MCS_MAX_PUSH_AGE: Duration = Duration::from_secs(10 * 60);
const DEFAULT_MCS_STATUS_CHANNEL: &str = "fota_status";
const DEFAULT_MCS_STARTUP_SPREAD: Duration = Duration::from_secs(60);

/// Keys of `kind = "mcs"`. See docs/source-mcs.md.
#[derive(Debug, Clone, PartialEq)]
pub struct McsConfig {
    /// The REST API root; default `https://api.mediatek.com/mcs/v2`.
    pub base_url: String,
    /// Which agent device each MCS device is: the gateway's own `device_id` /
    /// `device_key` (bound to `gateway_device`, default `"gateway"`) plus every
    /// `[source.devices]` entry. At least one; agent device ids and MCS device ids
    /// are unique among them.
    pub devices: Vec<McsDevice>,
    /// `host:port` of the command server; default: asked from the REST API
    /// (`GET devices/{deviceId}/connections`).
    pub command_server: Option<String>,
    /// How often the command channel sends its heartbeat; default 60 s (MCS drops
    /// a device silent for 120 s).
    pub heartbeat_interval: Duration,
    /// A push whose timestamp is older than this is refused as stale; default 10 min.
    pub max_push_age: Duration,
    /// The string data channel progress and outcomes are uploaded to; default
    /// `fota_status`; `""` turns reporting off.
    pub status_channel: Option<String>,
    /// The service's first query for available firmware waits a random time up
    /// to this, so a fleet that boots together does not query together; default
    /// 60 s, 0: at once (`run --once` never waits).
    pub startup_spread: Duration,
}

/// One agent device and its MCS identity. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct McsDevice {
    /// The `[[device]]` id in this config.
    pub agent_device: String,
    pub device_id: String,
    pub device_key: Secret,
}

impl std::fmt::Debug for McsDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McsDevice")
            .field("agent_device", &self.agent_device)
            .field("device_id", &self.device_id)
            .field("device_key", &"<redacted>")
            .finish()
    }
}

/// `kind = "mcs"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMcs {
    base_url: Option<Spanned<String>>,
    device_id: Option<Spanned<String>>,
    device_key: Option<Spanned<SecretValue>>,
    gateway_device: Option<Spanned<String>>,
    command_server: Option<Spanned<String>>,
    heartbeat_interval: Option<Spanned<String>>,
    max_push_age: Option<Spanned<String>>,
    status_channel: Option<Spanned<String>>,
    startup_spread: Option<Spanned<String>>,
    /// `[source.devices]`: agent device id -> its own MCS credentials.
    devices: Option<Spanned<BTreeMap<String, Spanned<RawMcsDevice>>>>,
}

/// One entry of `[source.devices]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMcsDevice {
    device_id: Option<Spanned<String>>,
    device_key: Option<Spanned<SecretValue>>,
}

impl SourceKind for RawMcs {
    const NAME: &'static str = "mcs";

    fn build(self, source: &SourceKeys<'_>) -> Result<SourceConfig, ConfigError> {
        let check = source.check;
        let base_url = match &self.base_url {
            Some(u) => source.server_url(u, "base_url")?,
            None => DEFAULT_MCS_BASE_URL.to_string(),
        };
        let mut bound = Bindings::default();
        self.gateway_binding(source, &mut bound)?;
        self.device_bindings(source, &mut bound)?;
        if bound.0.is_empty() {
            let msg = "source: kind \"mcs\" needs device_id and device_key (the gateway's \
                       own) or [source.devices]"
                .to_string();
            return Err(check.error(source.start, Some("device_id"), msg));
        }
        let command_server = self.command_server(check)?;
        let heartbeat_interval = check.duration_or(
            &self.heartbeat_interval,
            "heartbeat_interval",
            "source.heartbeat_interval",
            DEFAULT_MCS_HEARTBEAT,
        )?;
        let max_push_age = check.duration_or(
            &self.max_push_age,
            "max_push_age",
            "source.max_push_age",
            DEFAULT_MCS_MAX_PUSH_AGE,
        )?;
        let status_channel = match &self.status_channel {
            Some(c) if c.get_ref().is_empty() => None,
            Some(c) => Some(credential(
                check,
                c,
                "status_channel",
                "source.status_channel",
            )?),
            None => Some(DEFAULT_MCS_STATUS_CHANNEL.to_string()),
        };
        Ok(SourceConfig::Mcs(McsConfig {
            base_url,
            devices: bound.0,
            command_server,
            heartbeat_interval,
            max_push_age,
            status_channel,
            startup_spread: check.spread_or(
                &self.startup_spread,
                "startup_spread",
                "source.startup_spread",
                DEFAULT_MCS_STARTUP_SPREAD,
            )?,
        }))
    }
}

/// The MCS identities bound so far.
#[derive(Default)]
struct Bindings(Vec<McsDevice>);

impl Bindings {
    /// Adds `binding` unless its agent device or MCS device is bound already.
    fn add(
        &mut self,
        check: &Checker<'_>,
        binding: McsDevice,
        at: usize,
        key: &str,
    ) -> Result<(), ConfigError> {
        if self
            .0
            .iter()
            .any(|b| b.agent_device == binding.agent_device)
        {
            let msg = format!(
                "source: device {:?} has two MCS identities",
                binding.agent_device
            );
            return Err(check.error(at, Some(key), msg));
        }
        if self.0.iter().any(|b| b.device_id == binding.device_id) {
            let msg = format!(
                "source: MCS device_id {:?} is bound to two devices",
                binding.device_id
            );
            return Err(check.error(at, Some(key), msg));
        }
        self.0.push(binding);
        Ok(())
    }
}

impl RawMcs {
    /// The gateway's own `device_id` / `device_key`, bound to `gateway_device`.
    fn gateway_binding(
        &self,
        source: &SourceKeys<'_>,
        bound: &mut Bindings,
    ) -> Result<(), ConfigError> {
        let check = source.check;
        match (&self.device_id, &self.device_key) {
            (Some(id), Some(key)) => {
                let device_id = credential(check, id, "device_id", "source.device_id")?;
                let name = "source.device_key";
                let key = &check.secret(key, "device_key", name)?;
                let device_key = credential(check, key, "device_key", name)?;
                let (agent_device, at) = match &self.gateway_device {
                    Some(g) => (g.get_ref().clone(), g.span().start),
                    None => (DEFAULT_MCS_GATEWAY_DEVICE.to_string(), id.span().start),
                };
                if !source.has_device(&agent_device) {
                    let msg = format!(
                        "source.gateway_device: no [[device]] with id {agent_device:?} \
                         (the device the gateway's own device_id stands for)"
                    );
                    return Err(check.error(at, Some("gateway_device"), msg));
                }
                let binding = McsDevice {
                    agent_device,
                    device_id,
                    device_key: Secret::new(device_key),
                };
                bound.add(check, binding, at, "gateway_device")
            }
            (Some(id), None) => {
                let msg = "source.device_id: needs device_key".to_string();
                Err(check.at(id, "device_key", msg))
            }
            (None, Some(key)) => {
                let msg = "source.device_key: needs device_id".to_string();
                Err(check.at(key, "device_id", msg))
            }
            (None, None) => match &self.gateway_device {
                Some(g) => {
                    let msg = "source.gateway_device: needs device_id and device_key".to_string();
                    Err(check.at(g, "gateway_device", msg))
                }
                None => Ok(()),
            },
        }
    }

    /// The `[source.devices]` entries.
    fn device_bindings(
        &self,
        source: &SourceKeys<'_>,
        bound: &mut Bindings,
    ) -> Result<(), ConfigError> {
        let check = source.check;
        let Some(map) = &self.devices else {
            return Ok(());
        };
        for (agent, entry) in map.get_ref() {
            let name = format!("source.devices.{agent}");
            let at = entry.span().start;
            if !source.has_device(agent) {
                let msg = format!("{name}: no [[device]] with id {agent:?}");
                return Err(check.error(at, Some(agent), msg));
            }
            let field = |v: Option<Spanned<String>>, key: &str| match v {
                Some(v) => credential(check, &v, key, &format!("{name}.{key}")),
                None => {
                    let msg = format!("{name}: missing key {key:?}");
                    Err(check.error(at, Some(key), msg))
                }
            };
            let entry = entry.get_ref();
            let key_name = format!("{name}.device_key");
            let device_key = check.opt_secret(&entry.device_key, "device_key", &key_name)?;
            let binding = McsDevice {
                agent_device: agent.clone(),
                device_id: field(entry.device_id.clone(), "device_id")?,
                device_key: Secret::new(field(device_key, "device_key")?),
            };
            bound.add(check, binding, at, agent)?;
        }
        Ok(())
    }

    /// `command_server`: `host:port`.
    fn command_server(&self, check: &Checker<'_>) -> Result<Option<String>, ConfigError> {
        let Some(c) = &self.command_server else {
            return Ok(None);
        };
        let value = c.get_ref();
        let ok = value
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !ok {
            let msg = format!("source.command_server: expected host:port, got {value:?}");
            return Err(check.at(c, "command_server", msg));
        }
        Ok(Some(value.clone()))
    }
}

/// An MCS id, key or channel: it travels inside comma-separated lines, so
/// printable ASCII without commas or spaces. The message never shows the value
/// (it may be a key).
fn credential(
    check: &Checker<'_>,
    value: &Spanned<String>,
    key: &str,
    name: &str,
) -> Result<String, ConfigError> {
    let v = value.get_ref();
    if v.is_empty() {
        return Err(check.at(value, key, format!("{name}: must not be empty")));
    }
    if !v.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        let msg = format!("{name}: may only contain printable ASCII without ',' or spaces");
        return Err(check.at(value, key, msg));
    }
    Ok(v.clone())
}
