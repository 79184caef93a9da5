//! Turns the raw, as-written config into the validated [`Config`]: fills in
//! defaults, parses durations and enums, checks ranges, ids and required keys, and
//! resolves relative paths. Every failure becomes a [`ConfigError`] carrying the
//! line of the offending value (from its toml span) and its key, so the operator
//! is pointed at the exact place to fix; nothing here panics, whatever the input.
//!
//! Relative paths are resolved against the directory of the config file as given
//! (`path.parent()`), so a config next to its scripts and firmware tree works from
//! anywhere: this applies to `agent.state_dir`, `source.path` and the program (first
//! element) of a command when it contains a `/`. A bare program name (`["sh", …]`)
//! is left alone for `PATH` lookup, as are all other arguments.
//!
//! Beyond what the field docs say, two upper bounds keep absurd values from
//! overflowing timers and semaphores later: durations are at most 10 years and
//! `max_concurrent_updates` at most [`MAX_CONCURRENT_UPDATES`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::value::StrDeserializer;
use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;

use super::error::{line_of, one_line};
use super::raw::{RawAgent, RawConfig, RawDevice, RawSource, RawStatus};
use super::{
    AccessToken, AgentConfig, CommandConfig, Config, ConfigError, DeviceConfig, Esp8266Config,
    HandlerConfig, McsConfig, McsDevice, Mt7681Config, OtaKind, SerialConfig, SourceConfig,
    StatusConfig, ThingsboardBinding, ThingsboardConfig, ThingsboardTransport, XmodemConfig,
};
use super::{ChunkSelector, HawkbitAuth, HawkbitConfig, Secret};
use crate::download::DownloadConfig;
use crate::model::UpdatePolicy;

/// Upper bound of `agent.max_concurrent_updates`.
pub const MAX_CONCURRENT_UPDATES: usize = 1024;

const DEFAULT_STATE_DIR: &str = "/var/lib/fota-agent";
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60 * 60);
const DEFAULT_UPDATE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Ten years as humantime counts them (365.25 days each), so it prints as `10years`.
const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600);

const KNOWN_SOURCE_KINDS: &str = "directory, hawkbit, mcs, thingsboard";
const KNOWN_TRANSPORTS: &str = "http, mqtt";
const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
const MAX_CHUNK_SIZE: i64 = 16 * 1024 * 1024;
const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MQTT_PORT: u16 = 1883;
const DEFAULT_MCS_BASE_URL: &str = "https://api.mediatek.com/mcs/v2";
const DEFAULT_MCS_GATEWAY_DEVICE: &str = "gateway";
const DEFAULT_MCS_HEARTBEAT: Duration = Duration::from_secs(60);
const DEFAULT_MCS_MAX_PUSH_AGE: Duration = Duration::from_secs(10 * 60);
const DEFAULT_MCS_STATUS_CHANNEL: &str = "fota_status";
const DEFAULT_TENANT: &str = "DEFAULT";
const DEFAULT_MIN_POLL_INTERVAL: Duration = Duration::from_secs(30);

const KNOWN_HANDLERS: &str = "command, esp8266, mt7681, xmodem";
const KNOWN_MT7681_REGIONS: &str = "loader, recovery, eeprom, sta, sta-xip, ap, ap-xip";
const KNOWN_RESETS: &str = "classic, none";
const KNOWN_PROTOCOLS: &str = "xmodem, xmodem-1k, ymodem";
const DEFAULT_BAUD: u32 = 115_200;
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RETRIES: u32 = 10;
const KNOWN_POLICIES: &str = "immediate, background";
const KNOWN_VERSION_SCHEMES: &str = "esh, espressif, particle, semver";
const MAX_ID_LEN: usize = 128;

/// Keys of `[[device]]` that belong to a handler, each with the handlers it
/// applies to.
const HANDLER_KEYS: &[(&str, &[&str])] = &[
    (
        "version_command",
        &["command", "esp8266", "xmodem", "mt7681"],
    ),
    ("executable_command", &["command"]),
    ("transfer_command", &["command"]),
    ("update_command", &["command"]),
    (
        "command_timeout",
        &["command", "esp8266", "xmodem", "mt7681"],
    ),
    ("port", &["esp8266", "xmodem", "mt7681"]),
    ("baud", &["esp8266", "xmodem", "mt7681"]),
    ("flash_offset", &["esp8266"]),
    ("reset", &["esp8266"]),
    ("protocol", &["xmodem"]),
    ("enter_command", &["xmodem"]),
    ("response_timeout", &["xmodem", "mt7681"]),
    ("retries", &["xmodem", "mt7681"]),
    ("region", &["mt7681"]),
];

/// Validation context: the text (for line numbers), the file name (for messages)
/// and the directory relative paths are resolved against.
pub(super) struct Validator<'a> {
    text: &'a str,
    path: &'a Path,
    base: &'a Path,
}

impl<'a> Validator<'a> {
    pub(super) fn new(text: &'a str, path: &'a Path) -> Self {
        let base = path.parent().unwrap_or(Path::new(""));
        Validator { text, path, base }
    }

    /// An error at byte `offset`.
    fn error(&self, offset: usize, key: Option<&str>, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: line_of(self.text, offset),
            key: key.map(str::to_string),
            message: one_line(&message),
        }
    }

    /// An error about the value `at` of `key`.
    fn at<T>(&self, at: &Spanned<T>, key: &str, message: String) -> ConfigError {
        self.error(at.span().start, Some(key), message)
    }

    pub(super) fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let agent = self.agent(raw.agent.unwrap_or_default())?;
        let mut devices = Vec::with_capacity(raw.device.len());
        // id -> line of its first definition
        let mut seen: HashMap<String, usize> = HashMap::new();
        for raw_device in raw.device {
            let device = self.device(raw_device, &mut seen)?;
            devices.push(device);
        }
        // Device ids named in hawkBit's `source.chunks`, with the offset of their
        // selector.
        let mapped: Vec<(String, usize)> = raw
            .source
            .as_ref()
            .and_then(|s| s.get_ref().chunks.as_ref())
            .map(|d| {
                d.get_ref()
                    .iter()
                    .map(|(id, sel)| (id.clone(), sel.span().start))
                    .collect()
            })
            .unwrap_or_default();
        // After the devices: a source may name them (MCS device mapping).
        let (source, download) = match raw.source {
            Some(source) => {
                let download = self.download(source.get_ref())?;
                (self.source(source, &agent, &devices, &download)?, download)
            }
            None => (
                SourceConfig::Directory {
                    path: agent.state_dir.join("firmware"),
                },
                DownloadConfig::default(),
            ),
        };
        for (id, offset) in mapped {
            if !devices.iter().any(|d| d.id == id) {
                let msg = format!("source.chunks: no [[device]] with id {id:?}");
                return Err(self.error(offset, Some("chunks"), msg));
            }
        }
        let status = self.status(raw.status.unwrap_or_default())?;
        Ok(Config {
            path: self.path.to_path_buf(),
            agent,
            source,
            download,
            status,
            devices,
        })
    }

    fn status(&self, raw: RawStatus) -> Result<StatusConfig, ConfigError> {
        let mut status = StatusConfig::default();
        if let Some(listen) = &raw.listen {
            let value = listen.get_ref().trim();
            status.listen = if value == "off" {
                None
            } else {
                Some(value.parse().map_err(|_| {
                    let msg = format!(
                        "status.listen: expected an address with a port such as \
                         \"127.0.0.1:8470\" or \"off\", got {value:?}"
                    );
                    self.at(listen, "listen", msg)
                })?)
            };
        }
        if let Some(socket) = &raw.socket {
            status.socket = Some(self.dir(socket, "socket", "status.socket")?);
        }
        if let Some(token) = &raw.token {
            let value = token.get_ref();
            if value.len() < 16 || !value.bytes().all(|b| b.is_ascii_graphic()) {
                let msg = "status.token: must be at least 16 printable ASCII characters \
                           without spaces"
                    .to_string();
                return Err(self.at(token, "token", msg));
            }
            status.token = Some(value.clone());
        }
        Ok(status)
    }

    fn agent(&self, raw: RawAgent) -> Result<AgentConfig, ConfigError> {
        let state_dir = match raw.state_dir {
            Some(dir) => self.dir(&dir, "state_dir", "agent.state_dir")?,
            None => PathBuf::from(DEFAULT_STATE_DIR),
        };
        let poll_interval = match raw.poll_interval {
            Some(d) => self.duration(&d, "poll_interval", "agent.poll_interval")?,
            None => DEFAULT_POLL_INTERVAL,
        };
        let update_timeout = match raw.update_timeout {
            Some(d) => self.duration(&d, "update_timeout", "agent.update_timeout")?,
            None => DEFAULT_UPDATE_TIMEOUT,
        };
        let max_concurrent_updates = match raw.max_concurrent_updates {
            Some(n) => usize::try_from(*n.get_ref())
                .ok()
                .filter(|n| (1..=MAX_CONCURRENT_UPDATES).contains(n))
                .ok_or_else(|| {
                    self.at(
                        &n,
                        "max_concurrent_updates",
                        format!(
                            "agent.max_concurrent_updates: must be between 1 and \
                             {MAX_CONCURRENT_UPDATES}, got {}",
                            n.get_ref()
                        ),
                    )
                })?,
            None => 1,
        };
        Ok(AgentConfig {
            state_dir,
            poll_interval,
            update_timeout,
            max_concurrent_updates,
        })
    }

    /// The download keys of `[source]`.
    fn download(&self, raw: &RawSource) -> Result<DownloadConfig, ConfigError> {
        let mut d = DownloadConfig::default();
        let file = |v: &Option<Spanned<String>>, key: &str| {
            v.as_ref()
                .map(|p| self.dir(p, key, &format!("source.{key}")))
                .transpose()
        };
        d.ca_bundle = file(&raw.ca_bundle, "ca_bundle")?;
        d.client_cert = file(&raw.client_cert, "client_cert")?;
        d.client_key = file(&raw.client_key, "client_key")?;
        if let (Some(key), None) = (&raw.client_key, &raw.client_cert) {
            let msg = "source.client_key: needs client_cert".to_string();
            return Err(self.at(key, "client_key", msg));
        }
        d.https_only = raw.https_only.unwrap_or(false);
        if let Some(t) = &raw.connect_timeout {
            d.connect_timeout = self.duration(t, "connect_timeout", "source.connect_timeout")?;
        }
        if let Some(t) = &raw.stall_timeout {
            d.stall_timeout = self.duration(t, "stall_timeout", "source.stall_timeout")?;
        }
        if let Some(n) = &raw.download_attempts {
            d.max_attempts = u32::try_from(*n.get_ref())
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    let msg = format!(
                        "source.download_attempts: must be between 1 and 100, got {}",
                        n.get_ref()
                    );
                    self.at(n, "download_attempts", msg)
                })?;
        }
        if let Some(n) = &raw.max_image_size {
            d.max_image_size = Some(
                u64::try_from(*n.get_ref())
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| {
                        let msg = format!(
                            "source.max_image_size: must be a positive number of bytes, got {}",
                            n.get_ref()
                        );
                        self.at(n, "max_image_size", msg)
                    })?,
            );
        }
        Ok(d)
    }

    fn source(
        &self,
        raw: Spanned<RawSource>,
        agent: &AgentConfig,
        devices: &[DeviceConfig],
        download: &DownloadConfig,
    ) -> Result<SourceConfig, ConfigError> {
        let start = raw.span().start;
        let raw = raw.into_inner();
        let Some(kind) = &raw.kind else {
            return Err(self.error(
                start,
                Some("kind"),
                format!("source: missing key \"kind\" (known: {KNOWN_SOURCE_KINDS})"),
            ));
        };
        let name = kind.get_ref().as_str();
        for (key, offset, kinds) in source_keys_present(&raw) {
            if !kinds.contains(&name) && KNOWN_SOURCE_KINDS.split(", ").any(|k| k == name) {
                let msg = format!("source: key {key:?} does not apply to kind {name:?}");
                return Err(self.error(offset, Some(key), msg));
            }
        }
        match name {
            "mcs" => self.mcs(&raw, start, devices).map(SourceConfig::Mcs),
            "hawkbit" => Ok(SourceConfig::Hawkbit(self.hawkbit(&raw, start)?)),
            "thingsboard" => Ok(SourceConfig::Thingsboard(Box::new(
                self.thingsboard(&raw, start, agent, devices, download)?,
            ))),
            "directory" => {
                let path = match &raw.path {
                    Some(path) => self.dir(path, "path", "source.path")?,
                    None => agent.state_dir.join("firmware"),
                };
                Ok(SourceConfig::Directory { path })
            }
            other => Err(self.at(
                kind,
                "kind",
                format!("source: unknown kind {other:?} (known: {KNOWN_SOURCE_KINDS})"),
            )),
        }
    }

    /// The keys of `kind = "mcs"`; `devices` are the configured `[[device]]`s the
    /// MCS identities are bound to.
    fn mcs(
        &self,
        raw: &RawSource,
        start: usize,
        devices: &[DeviceConfig],
    ) -> Result<McsConfig, ConfigError> {
        let base_url = match &raw.base_url {
            Some(u) => self.http_url(u, "base_url", "source.base_url")?,
            None => DEFAULT_MCS_BASE_URL.to_string(),
        };
        let known = |id: &str| devices.iter().any(|d| d.id == id);
        let mut bound: Vec<McsDevice> = Vec::new();
        let mut add = |binding: McsDevice, at: usize, key: &str| {
            if bound.iter().any(|b| b.agent_device == binding.agent_device) {
                let msg = format!(
                    "source: device {:?} has two MCS identities",
                    binding.agent_device
                );
                return Err(self.error(at, Some(key), msg));
            }
            if bound.iter().any(|b| b.device_id == binding.device_id) {
                let msg = format!(
                    "source: MCS device_id {:?} is bound to two devices",
                    binding.device_id
                );
                return Err(self.error(at, Some(key), msg));
            }
            bound.push(binding);
            Ok(())
        };
        match (&raw.device_id, &raw.device_key) {
            (Some(id), Some(key)) => {
                let device_id = self.mcs_credential(id, "device_id", "source.device_id")?;
                let device_key = self.mcs_credential(key, "device_key", "source.device_key")?;
                let (agent_device, at) = match &raw.gateway_device {
                    Some(g) => (g.get_ref().clone(), g.span().start),
                    None => (DEFAULT_MCS_GATEWAY_DEVICE.to_string(), id.span().start),
                };
                if !known(&agent_device) {
                    let msg = format!(
                        "source.gateway_device: no [[device]] with id {agent_device:?} \
                         (the device the gateway's own device_id stands for)"
                    );
                    return Err(self.error(at, Some("gateway_device"), msg));
                }
                let binding = McsDevice {
                    agent_device,
                    device_id,
                    device_key,
                };
                add(binding, at, "gateway_device")?;
            }
            (Some(id), None) => {
                let msg = "source.device_id: needs device_key".to_string();
                return Err(self.at(id, "device_key", msg));
            }
            (None, Some(key)) => {
                let msg = "source.device_key: needs device_id".to_string();
                return Err(self.at(key, "device_id", msg));
            }
            (None, None) => {
                if let Some(g) = &raw.gateway_device {
                    let msg = "source.gateway_device: needs device_id and device_key".to_string();
                    return Err(self.at(g, "gateway_device", msg));
                }
            }
        }
        if let Some(map) = &raw.devices {
            for (agent, entry) in map.get_ref() {
                let name = format!("source.devices.{agent}");
                let at = entry.span().start;
                if !known(agent) {
                    let msg = format!("{name}: no [[device]] with id {agent:?}");
                    return Err(self.error(at, Some(agent), msg));
                }
                let field = |v: &Option<Spanned<String>>, key: &str| match v {
                    Some(v) => self.mcs_credential(v, key, &format!("{name}.{key}")),
                    None => {
                        let msg = format!("{name}: missing key {key:?}");
                        Err(self.error(at, Some(key), msg))
                    }
                };
                let binding = McsDevice {
                    agent_device: agent.clone(),
                    device_id: field(&entry.get_ref().device_id, "device_id")?,
                    device_key: field(&entry.get_ref().device_key, "device_key")?,
                };
                add(binding, at, agent)?;
            }
        }
        if bound.is_empty() {
            let msg = "source: kind \"mcs\" needs device_id and device_key (the gateway's \
                       own) or [source.devices]"
                .to_string();
            return Err(self.error(start, Some("device_id"), msg));
        }
        let command_server = match &raw.command_server {
            Some(c) => {
                let value = c.get_ref();
                let ok = value
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !ok {
                    let msg = format!("source.command_server: expected host:port, got {value:?}");
                    return Err(self.at(c, "command_server", msg));
                }
                Some(value.clone())
            }
            None => None,
        };
        let heartbeat_interval = match &raw.heartbeat_interval {
            Some(d) => self.duration(d, "heartbeat_interval", "source.heartbeat_interval")?,
            None => DEFAULT_MCS_HEARTBEAT,
        };
        let max_push_age = match &raw.max_push_age {
            Some(d) => self.duration(d, "max_push_age", "source.max_push_age")?,
            None => DEFAULT_MCS_MAX_PUSH_AGE,
        };
        let status_channel = match &raw.status_channel {
            Some(c) if c.get_ref().is_empty() => None,
            Some(c) => Some(self.mcs_credential(c, "status_channel", "source.status_channel")?),
            None => Some(DEFAULT_MCS_STATUS_CHANNEL.to_string()),
        };
        Ok(McsConfig {
            base_url,
            devices: bound,
            command_server,
            heartbeat_interval,
            max_push_age,
            status_channel,
        })
    }

    /// An MCS id, key or channel: it travels inside comma-separated lines, so
    /// printable ASCII without commas or spaces. The message never shows the value
    /// (it may be a key).
    fn mcs_credential(
        &self,
        value: &Spanned<String>,
        key: &str,
        name: &str,
    ) -> Result<String, ConfigError> {
        let v = value.get_ref();
        if v.is_empty() {
            return Err(self.at(value, key, format!("{name}: must not be empty")));
        }
        if !v.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            let msg = format!("{name}: may only contain printable ASCII without ',' or spaces");
            return Err(self.at(value, key, msg));
        }
        Ok(v.clone())
    }

    /// An absolute http(s) URL, without a trailing `/`.
    fn http_url(
        &self,
        value: &Spanned<String>,
        key: &str,
        name: &str,
    ) -> Result<String, ConfigError> {
        let v = value.get_ref();
        match reqwest::Url::parse(v) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                Ok(v.trim_end_matches('/').to_string())
            }
            Ok(_) => Err(self.at(value, key, format!("{name}: {v:?} is not an http(s) URL"))),
            Err(e) => Err(self.at(value, key, format!("{name}: invalid URL {v:?}: {e}"))),
        }
    }

    /// The keys of `kind = "hawkbit"`.
    fn hawkbit(&self, raw: &RawSource, start: usize) -> Result<HawkbitConfig, ConfigError> {
        let Some(url) = &raw.url else {
            let msg = "source: missing key \"url\" (required by kind \"hawkbit\")".to_string();
            return Err(self.error(start, Some("url"), msg));
        };
        let trimmed = url.get_ref().trim_end_matches('/');
        let host = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"));
        let valid = host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace))
            && reqwest::Url::parse(trimmed).is_ok();
        if !valid {
            let msg = format!(
                "source.url: {:?} is not an http:// or https:// URL",
                url.get_ref()
            );
            return Err(self.at(url, "url", msg));
        }
        let segment = |v: &Option<Spanned<String>>, key: &str| -> Result<_, ConfigError> {
            match v {
                Some(s) if s.get_ref().is_empty() => {
                    Err(self.at(s, key, format!("source.{key}: must not be empty")))
                }
                Some(s) if s.get_ref().contains(['/', '?', '#', ' ']) => Err(self.at(
                    s,
                    key,
                    format!(
                        "source.{key}: {:?} may not contain '/', '?', '#' or spaces",
                        s.get_ref()
                    ),
                )),
                Some(s) => Ok(Some(s.get_ref().clone())),
                None => Ok(None),
            }
        };
        let tenant = segment(&raw.tenant, "tenant")?.unwrap_or_else(|| DEFAULT_TENANT.into());
        let controller_id = segment(&raw.controller_id, "controller_id")?;
        let token = |v: &Spanned<String>, key: &str| {
            if v.get_ref().trim().is_empty() {
                Err(self.at(v, key, format!("source.{key}: must not be empty")))
            } else {
                Ok(Secret::new(v.get_ref().trim()))
            }
        };
        let auth = match (&raw.target_token, &raw.gateway_token) {
            (Some(_), Some(g)) => {
                let msg = "source: set target_token or gateway_token, not both".to_string();
                return Err(self.at(g, "gateway_token", msg));
            }
            (Some(t), None) => HawkbitAuth::TargetToken(token(t, "target_token")?),
            (None, Some(g)) => HawkbitAuth::GatewayToken(token(g, "gateway_token")?),
            (None, None) => HawkbitAuth::None,
        };
        let min_poll_interval = match &raw.min_poll_interval {
            Some(d) => self.duration(d, "min_poll_interval", "source.min_poll_interval")?,
            None => DEFAULT_MIN_POLL_INTERVAL,
        };
        let mut devices = Vec::new();
        if let Some(map) = &raw.chunks {
            for (id, selector) in map.get_ref() {
                let value = selector.get_ref();
                let parsed = match value.split_once(':') {
                    Some(("part", p)) if !p.is_empty() => Some(ChunkSelector::Part(p.into())),
                    Some(("name", n)) if !n.is_empty() => Some(ChunkSelector::Name(n.into())),
                    _ => None,
                };
                let Some(parsed) = parsed else {
                    let msg = format!(
                        "source.chunks: {id:?} = {value:?}: expected \"part:<part>\" or \
                         \"name:<name>\""
                    );
                    return Err(self.at(selector, "chunks", msg));
                };
                devices.push((id.clone(), parsed));
            }
        }
        Ok(HawkbitConfig {
            url: trimmed.to_string(),
            tenant,
            controller_id,
            auth,
            min_poll_interval,
            devices,
        })
    }

    /// The keys of `kind = "thingsboard"`. Messages never echo a token.
    fn thingsboard(
        &self,
        raw: &RawSource,
        start: usize,
        agent: &AgentConfig,
        devices: &[DeviceConfig],
        download: &DownloadConfig,
    ) -> Result<ThingsboardConfig, ConfigError> {
        for (key, id, offset) in thingsboard_device_refs(raw) {
            if !devices.iter().any(|d| d.id == id) {
                let msg = format!("source.{key}: {id:?} is not the id of a [[device]]");
                return Err(self.error(offset, Some(key), msg));
            }
        }
        let transport_name = raw
            .transport
            .as_ref()
            .map_or("http", |t| t.get_ref().as_str());
        let transport = match transport_name {
            "http" => {
                if let Some(k) = [("host", &raw.host)]
                    .iter()
                    .find_map(|(k, v)| v.as_ref().map(|v| (*k, v.span().start)))
                    .or(raw.port.as_ref().map(|p| ("port", p.span().start)))
                {
                    let msg = format!("source: key {:?} does not apply to transport \"http\"", k.0);
                    return Err(self.error(k.1, Some(k.0), msg));
                }
                let Some(url) = &raw.url else {
                    let msg = "source: missing key \"url\" (required by transport \"http\")".into();
                    return Err(self.error(start, Some("url"), msg));
                };
                let value = url.get_ref().trim_end_matches('/');
                let rest = value
                    .strip_prefix("https://")
                    .or_else(|| value.strip_prefix("http://"));
                if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
                    let msg = format!(
                        "source.url: {:?} is not an http:// or https:// URL",
                        url.get_ref()
                    );
                    return Err(self.at(url, "url", msg));
                }
                if download.https_only && !value.starts_with("https://") {
                    let msg = "source.url: https_only is set but the URL is http://".into();
                    return Err(self.at(url, "url", msg));
                }
                ThingsboardTransport::Http {
                    url: value.to_string(),
                }
            }
            "mqtt" => {
                if let Some(url) = &raw.url {
                    let msg = "source: key \"url\" does not apply to transport \"mqtt\"".into();
                    return Err(self.at(url, "url", msg));
                }
                let host = match &raw.host {
                    Some(h) if !h.get_ref().trim().is_empty() => h.get_ref().trim().to_string(),
                    Some(h) => {
                        return Err(self.at(h, "host", "source.host: must not be empty".into()));
                    }
                    None => {
                        let msg =
                            "source: missing key \"host\" (required by transport \"mqtt\")".into();
                        return Err(self.error(start, Some("host"), msg));
                    }
                };
                let port = match &raw.port {
                    Some(p) => u16::try_from(*p.get_ref())
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| {
                            let msg = format!(
                                "source.port: must be between 1 and 65535, got {}",
                                p.get_ref()
                            );
                            self.at(p, "port", msg)
                        })?,
                    None => DEFAULT_MQTT_PORT,
                };
                ThingsboardTransport::Mqtt { host, port }
            }
            other => {
                let msg =
                    format!("source: unknown transport {other:?} (known: {KNOWN_TRANSPORTS})");
                let t = raw.transport.as_ref().map_or(start, |t| t.span().start);
                return Err(self.error(t, Some("transport"), msg));
            }
        };

        let token = |value: &Spanned<String>, key: &str, name: &str| {
            let t = value.get_ref();
            if t.is_empty()
                || t.chars().any(|c| {
                    c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '%')
                })
            {
                let msg = format!(
                    "{name}: a token must be non-empty without whitespace, '/', '?', '#' or '%'"
                );
                return Err(self.at(value, key, msg));
            }
            Ok(AccessToken(t.clone()))
        };
        let mut bindings: Vec<ThingsboardBinding> = Vec::new();
        let gateway_token = raw
            .access_token
            .as_ref()
            .map(|t| token(t, "access_token", "source.access_token"))
            .transpose()?;
        for (key, value, kind) in [
            ("gateway_device", &raw.gateway_device, OtaKind::Firmware),
            ("software_device", &raw.software_device, OtaKind::Software),
        ] {
            let Some(value) = value else { continue };
            let Some(gateway_token) = &gateway_token else {
                let msg = format!("source.{key}: needs access_token (the gateway's own token)");
                return Err(self.at(value, key, msg));
            };
            if bindings.iter().any(|b| b.device_id == *value.get_ref()) {
                let msg = format!(
                    "source.{key}: {:?} is already gateway_device; firmware and software \
                     need two [[device]] entries",
                    value.get_ref()
                );
                return Err(self.at(value, key, msg));
            }
            bindings.push(ThingsboardBinding {
                device_id: value.get_ref().clone(),
                token: gateway_token.clone(),
                kind,
            });
        }
        if let (Some(t), true) = (&raw.access_token, bindings.is_empty()) {
            let msg = "source.access_token: set gateway_device and/or software_device to name \
                       the [[device]] it updates"
                .into();
            return Err(self.at(t, "access_token", msg));
        }
        if let Some(tokens) = &raw.tokens {
            for (id, value) in tokens.get_ref() {
                let name = format!("source.tokens.{id:?}");
                let t = token(value, "tokens", &name)?;
                if bindings.iter().any(|b| b.device_id == *id) {
                    let msg = format!("{name}: device {id:?} is already the gateway's device");
                    return Err(self.at(value, "tokens", msg));
                }
                bindings.push(ThingsboardBinding {
                    device_id: id.clone(),
                    token: t,
                    kind: OtaKind::Firmware,
                });
            }
        }
        if bindings.is_empty() {
            let msg = "source: no device is bound to ThingsBoard: set access_token with \
                       gateway_device/software_device, or [source.tokens]"
                .into();
            return Err(self.error(start, Some("access_token"), msg));
        }
        let chunk_size = match &raw.chunk_size {
            Some(n) => u32::try_from(*n.get_ref())
                .ok()
                .filter(|n| *n >= 1 && i64::from(*n) <= MAX_CHUNK_SIZE)
                .ok_or_else(|| {
                    let msg = format!(
                        "source.chunk_size: must be between 1 and {MAX_CHUNK_SIZE} bytes, got {}",
                        n.get_ref()
                    );
                    self.at(n, "chunk_size", msg)
                })?,
            None => DEFAULT_CHUNK_SIZE,
        };
        let poll_timeout = match &raw.poll_timeout {
            Some(d) => self.duration(d, "poll_timeout", "source.poll_timeout")?,
            None => DEFAULT_POLL_TIMEOUT,
        };
        Ok(ThingsboardConfig {
            transport,
            bindings,
            chunk_size,
            poll_timeout,
            state_dir: agent.state_dir.join("thingsboard"),
            download: download.clone(),
        })
    }

    fn device(
        &self,
        raw: Spanned<RawDevice>,
        seen: &mut HashMap<String, usize>,
    ) -> Result<DeviceConfig, ConfigError> {
        let start = raw.span().start;
        let raw = raw.into_inner();

        let Some(id_value) = &raw.id else {
            return Err(self.error(start, Some("id"), "device: missing key \"id\"".into()));
        };
        let id = id_value.get_ref().clone();
        self.check_id(id_value)?;
        let id_line = line_of(self.text, id_value.span().start);
        if let Some(first) = seen.insert(id.clone(), id_line) {
            return Err(self.at(
                id_value,
                "id",
                format!("device {id:?}: duplicate id (first defined at line {first})"),
            ));
        }
        let dev = format!("device {id:?}");

        let device_type = match &raw.device_type {
            None => {
                let msg = format!("{dev}: missing key \"type\"");
                return Err(self.error(start, Some("type"), msg));
            }
            Some(t) if t.get_ref().trim().is_empty() => {
                let msg = format!("{dev}: type must not be empty");
                return Err(self.at(t, "type", msg));
            }
            Some(t) => t.get_ref().clone(),
        };

        let policy = self
            .named(&raw.policy, "policy", &dev, KNOWN_POLICIES)?
            .unwrap_or(UpdatePolicy::Immediate);
        let version_scheme = self
            .named(
                &raw.version_scheme,
                "version_scheme",
                &dev,
                KNOWN_VERSION_SCHEMES,
            )?
            .unwrap_or_default();

        let handler = self.handler(&raw, &dev, start)?;

        Ok(DeviceConfig {
            id,
            device_type,
            policy,
            version_scheme,
            only_newer: raw.only_newer.as_ref().is_none_or(|o| *o.get_ref()),
            handler,
        })
    }

    /// Checks the characters and length of a device id.
    fn check_id(&self, id: &Spanned<String>) -> Result<(), ConfigError> {
        let value = id.get_ref();
        let problem = if value.is_empty() {
            Some("must not be empty".to_string())
        } else if value.len() > MAX_ID_LEN {
            Some(format!("is longer than {MAX_ID_LEN} characters"))
        } else if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            Some("may only contain A-Z, a-z, 0-9, '.', '_' and '-'".to_string())
        } else {
            None
        };
        match problem {
            Some(problem) => Err(self.at(id, "id", format!("device: id {value:?} {problem}"))),
            None => Ok(()),
        }
    }

    /// The device's handler and its handler-specific keys.
    fn handler(
        &self,
        raw: &RawDevice,
        dev: &str,
        start: usize,
    ) -> Result<HandlerConfig, ConfigError> {
        let Some(handler) = &raw.handler else {
            let msg = format!("{dev}: missing key \"handler\" (known: {KNOWN_HANDLERS})");
            return Err(self.error(start, Some("handler"), msg));
        };
        let name = handler.get_ref().as_str();
        if !KNOWN_HANDLERS.split(", ").any(|known| known == name) {
            let msg = format!("{dev}: unknown handler {name:?} (known: {KNOWN_HANDLERS})");
            return Err(self.at(handler, "handler", msg));
        }

        // Keys of other handlers are mistakes, not silently ignored settings.
        for (key, offset) in handler_keys_present(raw) {
            let applies = HANDLER_KEYS
                .iter()
                .any(|(k, handlers)| *k == key && handlers.contains(&name));
            if !applies {
                let msg = format!("{dev}: key {key:?} does not apply to handler {name:?}");
                return Err(self.error(offset, Some(key), msg));
            }
        }

        let command_timeout = match &raw.command_timeout {
            Some(d) => self.duration(d, "command_timeout", &format!("{dev}: command_timeout"))?,
            None => DEFAULT_COMMAND_TIMEOUT,
        };
        let version_command = self.opt_command(&raw.version_command, "version_command", dev)?;
        match name {
            "esp8266" => Ok(HandlerConfig::Esp8266(Esp8266Config {
                serial: self.serial(raw, dev, start, name)?,
                flash_offset: match &raw.flash_offset {
                    Some(o) => u32::try_from(*o.get_ref())
                        .ok()
                        .filter(|o| o % 0x1000 == 0 && *o < 0x0100_0000)
                        .ok_or_else(|| {
                            let msg = format!(
                                "{dev}: flash_offset must be a multiple of 0x1000 below \
                                 16 MiB, got {:#x}",
                                o.get_ref()
                            );
                            self.at(o, "flash_offset", msg)
                        })?,
                    None => 0,
                },
                reset: self
                    .named(&raw.reset, "reset", dev, KNOWN_RESETS)?
                    .unwrap_or_default(),
                version_command,
                command_timeout,
            })),
            "xmodem" => Ok(HandlerConfig::Xmodem(XmodemConfig {
                serial: self.serial(raw, dev, start, name)?,
                protocol: self
                    .named(&raw.protocol, "protocol", dev, KNOWN_PROTOCOLS)?
                    .unwrap_or_default(),
                enter_command: raw.enter_command.as_ref().map(|c| c.get_ref().clone()),
                response_timeout: self.response_timeout(raw, dev)?,
                retries: self.retries(raw, dev)?,
                version_command,
                command_timeout,
            })),
            "mt7681" => {
                // The MT7681 only upgrades to a higher version (MCS rule): the
                // handler needs the current version and never allows a downgrade.
                if let Some(o) = &raw.only_newer
                    && !*o.get_ref()
                {
                    let msg = format!(
                        "{dev}: only_newer = false is not allowed for handler \"mt7681\" \
                         (an MT7681 only upgrades to a higher version)"
                    );
                    return Err(self.at(o, "only_newer", msg));
                }
                let Some(version_command) = version_command else {
                    let msg = format!(
                        "{dev}: missing key \"version_command\" (required by handler {name:?}: \
                         an MT7681 only upgrades to a higher version)"
                    );
                    return Err(self.error(start, Some("version_command"), msg));
                };
                Ok(HandlerConfig::Mt7681(Mt7681Config {
                    serial: self.serial(raw, dev, start, name)?,
                    region: self
                        .named(&raw.region, "region", dev, KNOWN_MT7681_REGIONS)?
                        .unwrap_or_default(),
                    response_timeout: self.response_timeout(raw, dev)?,
                    retries: self.retries(raw, dev)?,
                    version_command,
                    command_timeout,
                }))
            }
            _ => {
                // `name` was checked against KNOWN_HANDLERS above: "command".
                let Some(update) = &raw.update_command else {
                    let msg = format!(
                        "{dev}: missing key \"update_command\" (required by handler {name:?})"
                    );
                    return Err(self.error(start, Some("update_command"), msg));
                };
                Ok(HandlerConfig::Command(CommandConfig {
                    version_command,
                    executable_command: self.opt_command(
                        &raw.executable_command,
                        "executable_command",
                        dev,
                    )?,
                    transfer_command: self.opt_command(
                        &raw.transfer_command,
                        "transfer_command",
                        dev,
                    )?,
                    update_command: self.command(update, "update_command", dev)?,
                    command_timeout,
                }))
            }
        }
    }

    /// `response_timeout` of the xmodem and mt7681 handlers.
    fn response_timeout(&self, raw: &RawDevice, dev: &str) -> Result<Duration, ConfigError> {
        match &raw.response_timeout {
            Some(d) => self.duration(d, "response_timeout", &format!("{dev}: response_timeout")),
            None => Ok(DEFAULT_RESPONSE_TIMEOUT),
        }
    }

    /// `retries` of the xmodem and mt7681 handlers: 1 to 100.
    fn retries(&self, raw: &RawDevice, dev: &str) -> Result<u32, ConfigError> {
        match &raw.retries {
            Some(r) => u32::try_from(*r.get_ref())
                .ok()
                .filter(|r| (1..=100).contains(r))
                .ok_or_else(|| {
                    let msg = format!(
                        "{dev}: retries must be between 1 and 100, got {}",
                        r.get_ref()
                    );
                    self.at(r, "retries", msg)
                }),
            None => Ok(DEFAULT_RETRIES),
        }
    }

    /// The value of an enum-valued key, by its serde name; an unknown name is an
    /// error listing the `known` ones.
    fn named<T: DeserializeOwned>(
        &self,
        value: &Option<Spanned<String>>,
        key: &str,
        dev: &str,
        known: &str,
    ) -> Result<Option<T>, ConfigError> {
        let Some(v) = value else {
            return Ok(None);
        };
        parse_enum(v.get_ref()).map(Some).ok_or_else(|| {
            let msg = format!("{dev}: unknown {key} {:?} (known: {known})", v.get_ref());
            self.at(v, key, msg)
        })
    }

    /// `port` (required) and `baud` of a serial handler.
    fn serial(
        &self,
        raw: &RawDevice,
        dev: &str,
        start: usize,
        name: &str,
    ) -> Result<SerialConfig, ConfigError> {
        let port = match &raw.port {
            Some(p) if !p.get_ref().is_empty() => PathBuf::from(p.get_ref()),
            Some(p) => return Err(self.at(p, "port", format!("{dev}: port must not be empty"))),
            None => {
                let msg = format!("{dev}: missing key \"port\" (required by handler {name:?})");
                return Err(self.error(start, Some("port"), msg));
            }
        };
        let baud = match &raw.baud {
            Some(b) => u32::try_from(*b.get_ref())
                .ok()
                .filter(|b| (300..=4_000_000).contains(b))
                .ok_or_else(|| {
                    let msg = format!(
                        "{dev}: baud must be between 300 and 4000000, got {}",
                        b.get_ref()
                    );
                    self.at(b, "baud", msg)
                })?,
            None => DEFAULT_BAUD,
        };
        Ok(SerialConfig { port, baud })
    }

    fn opt_command(
        &self,
        argv: &Option<Spanned<Vec<String>>>,
        key: &str,
        dev: &str,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        argv.as_ref()
            .map(|argv| self.command(argv, key, dev))
            .transpose()
    }

    /// Checks an argv array and resolves a relative program path containing `/`.
    fn command(
        &self,
        argv: &Spanned<Vec<String>>,
        key: &str,
        dev: &str,
    ) -> Result<Vec<String>, ConfigError> {
        let mut out = argv.get_ref().clone();
        let Some(program) = out.first_mut() else {
            let msg = format!("{dev}: {key}: must not be empty");
            return Err(self.at(argv, key, msg));
        };
        if program.is_empty() {
            let msg = format!("{dev}: {key}: the program (first element) must not be empty");
            return Err(self.at(argv, key, msg));
        }
        if program.contains('/') && Path::new(program.as_str()).is_relative() {
            let resolved = self.base.join(program.as_str());
            let Some(resolved) = resolved.to_str() else {
                let msg = format!(
                    "{dev}: {key}: cannot resolve {program:?} against the config \
                     directory {:?}: not valid UTF-8",
                    self.base
                );
                return Err(self.at(argv, key, msg));
            };
            *program = resolved.to_string();
        }
        Ok(out)
    }

    /// A directory path: non-empty, relative ones resolved against the config's
    /// directory.
    fn dir(&self, value: &Spanned<String>, key: &str, name: &str) -> Result<PathBuf, ConfigError> {
        let raw = value.get_ref();
        if raw.is_empty() {
            return Err(self.at(value, key, format!("{name}: must not be empty")));
        }
        Ok(self.base.join(raw))
    }

    /// A humantime duration, neither zero nor longer than [`MAX_DURATION`]. `name`
    /// prefixes the message (e.g. `agent.update_timeout`).
    fn duration(
        &self,
        value: &Spanned<String>,
        key: &str,
        name: &str,
    ) -> Result<Duration, ConfigError> {
        let raw = value.get_ref();
        match humantime::parse_duration(raw) {
            Err(e) => Err(self.at(value, key, format!("{name}: invalid duration {raw:?}: {e}"))),
            Ok(d) if d.is_zero() => Err(self.at(value, key, format!("{name}: must not be zero"))),
            Ok(d) if d > MAX_DURATION => Err(self.at(
                value,
                key,
                format!(
                    "{name}: duration {raw:?} is too long (at most {})",
                    humantime::format_duration(MAX_DURATION)
                ),
            )),
            Ok(d) => Ok(d),
        }
    }
}

/// Handler-specific keys set on `raw`, with the offset of their values.
fn handler_keys_present(raw: &RawDevice) -> Vec<(&'static str, usize)> {
    let argv = |v: &Option<Spanned<Vec<String>>>| v.as_ref().map(|v| v.span().start);
    fn at<T>(v: &Option<Spanned<T>>) -> Option<usize> {
        v.as_ref().map(|v| v.span().start)
    }
    [
        ("version_command", argv(&raw.version_command)),
        ("executable_command", argv(&raw.executable_command)),
        ("transfer_command", argv(&raw.transfer_command)),
        ("update_command", argv(&raw.update_command)),
        ("command_timeout", at(&raw.command_timeout)),
        ("port", at(&raw.port)),
        ("baud", at(&raw.baud)),
        ("flash_offset", at(&raw.flash_offset)),
        ("reset", at(&raw.reset)),
        ("protocol", at(&raw.protocol)),
        ("enter_command", at(&raw.enter_command)),
        ("response_timeout", at(&raw.response_timeout)),
        ("retries", at(&raw.retries)),
        ("region", at(&raw.region)),
    ]
    .into_iter()
    .filter_map(|(key, offset)| offset.map(|o| (key, o)))
    .collect()
}

/// Kind-specific keys of `[source]` set on `raw`, with the offset of their values
/// and the kinds they apply to.
fn source_keys_present(raw: &RawSource) -> Vec<(&'static str, usize, &'static [&'static str])> {
    fn at<T>(v: &Option<Spanned<T>>) -> Option<usize> {
        v.as_ref().map(|v| v.span().start)
    }
    const DIR: &[&str] = &["directory"];
    const MCS: &[&str] = &["mcs"];
    const HAWKBIT: &[&str] = &["hawkbit"];
    const TB: &[&str] = &["thingsboard"];
    [
        ("path", at(&raw.path), DIR),
        ("base_url", at(&raw.base_url), MCS),
        ("device_id", at(&raw.device_id), MCS),
        ("device_key", at(&raw.device_key), MCS),
        (
            "gateway_device",
            at(&raw.gateway_device),
            &["mcs", "thingsboard"],
        ),
        ("command_server", at(&raw.command_server), MCS),
        ("heartbeat_interval", at(&raw.heartbeat_interval), MCS),
        ("max_push_age", at(&raw.max_push_age), MCS),
        ("status_channel", at(&raw.status_channel), MCS),
        ("devices", at(&raw.devices), MCS),
        ("url", at(&raw.url), &["hawkbit", "thingsboard"]),
        ("tenant", at(&raw.tenant), HAWKBIT),
        ("controller_id", at(&raw.controller_id), HAWKBIT),
        ("target_token", at(&raw.target_token), HAWKBIT),
        ("gateway_token", at(&raw.gateway_token), HAWKBIT),
        ("min_poll_interval", at(&raw.min_poll_interval), HAWKBIT),
        ("chunks", at(&raw.chunks), HAWKBIT),
        ("transport", at(&raw.transport), TB),
        ("host", at(&raw.host), TB),
        ("port", at(&raw.port), TB),
        ("access_token", at(&raw.access_token), TB),
        ("software_device", at(&raw.software_device), TB),
        ("tokens", at(&raw.tokens), TB),
        ("chunk_size", at(&raw.chunk_size), TB),
        ("poll_timeout", at(&raw.poll_timeout), TB),
    ]
    .into_iter()
    .filter_map(|(key, offset, kinds)| offset.map(|o| (key, o, kinds)))
    .collect()
}

/// Device ids `kind = "thingsboard"` names (key, id, offset of the value).
fn thingsboard_device_refs(raw: &RawSource) -> Vec<(&'static str, String, usize)> {
    let mut refs = Vec::new();
    for (key, value) in [
        ("gateway_device", &raw.gateway_device),
        ("software_device", &raw.software_device),
    ] {
        if let Some(v) = value {
            refs.push((key, v.get_ref().clone(), v.span().start));
        }
    }
    if let Some(tokens) = &raw.tokens {
        for (id, value) in tokens.get_ref() {
            refs.push(("tokens", id.clone(), value.span().start));
        }
    }
    refs
}

/// A unit enum from its serde name, so the accepted names are exactly those of the
/// type's `#[serde(rename_all)]`.
fn parse_enum<T: DeserializeOwned>(name: &str) -> Option<T> {
    let de: StrDeserializer<'_, serde::de::value::Error> = name.into_deserializer();
    T::deserialize(de).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::VersionScheme;

    #[test]
    fn known_names_parse() {
        for name in KNOWN_POLICIES.split(", ") {
            assert!(parse_enum::<UpdatePolicy>(name).is_some(), "{name}");
        }
        for name in KNOWN_VERSION_SCHEMES.split(", ") {
            assert!(parse_enum::<VersionScheme>(name).is_some(), "{name}");
        }
        for name in KNOWN_MT7681_REGIONS.split(", ") {
            assert!(
                parse_enum::<crate::config::Mt7681Region>(name).is_some(),
                "{name}"
            );
        }
        assert_eq!(parse_enum::<UpdatePolicy>("Immediate"), None);
    }

    #[test]
    fn handler_keys_table_covers_every_handler_key() {
        let keys: Vec<&str> = HANDLER_KEYS.iter().map(|(k, _)| *k).collect();
        let raw: RawDevice = toml::from_str(
            "version_command = ['a']\nexecutable_command = ['a']\ntransfer_command = ['a']\n\
             update_command = ['a']\ncommand_timeout = '1s'\nport = 'p'\nbaud = 1\n\
             flash_offset = 0\nreset = 'r'\nprotocol = 'p'\nenter_command = 'e'\n\
             response_timeout = '1s'\nretries = 1\nregion = 'sta'",
        )
        .unwrap();
        let present: Vec<&str> = handler_keys_present(&raw).iter().map(|(k, _)| *k).collect();
        assert_eq!(present, keys);
    }
}
