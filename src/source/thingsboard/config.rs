//! The keys of `kind = "thingsboard"`. Messages never echo a token.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::check::Checker;
use crate::config::secret_ref::SecretValue;
use crate::config::{ConfigError, Secret};
use crate::source::config::{SourceConfig, SourceKeys, SourceKind};

const KNOWN_TRANSPORTS: &str = "http, mqtt";
const DEFAULT_CHUNK_SIZE: u32 = 64 * 1024;
const MAX_CHUNK_SIZE: i64 = 16 * 1024 * 1024;
const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MQTT_PORT: u16 = 1883;
const DEFAULT_MQTTS_PORT: u16 = 8883;

/// How the agent talks to ThingsBoard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThingsboardTransport {
    /// `transport = "http"` (default): the HTTP device API under `url`
    /// (e.g. `https://tb.example.com`).
    Http { url: String },
    /// `transport = "mqtt"`: the MQTT device API on `host`:`port`, one connection
    /// per access token (the token is the MQTT user name). Over TLS (port 8883,
    /// `[source]` `ca_bundle`, `client_cert`, `client_key`) unless `tls = false`,
    /// which needs `https_only = false` (then port 1883).
    Mqtt { host: String, port: u16, tls: bool },
}

/// A ThingsBoard device access token: a [`Secret`], never shown in `Debug` output
/// or logs.
pub use crate::config::Secret as AccessToken;

/// Which ThingsBoard OTA package type an engine device follows: `fw_*` or `sw_*`
/// attributes and telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtaKind {
    Firmware,
    Software,
}

/// One `[[device]]` bound to one ThingsBoard device (its token) and package type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingsboardBinding {
    pub device_id: String,
    pub token: AccessToken,
    pub kind: OtaKind,
}

/// Keys of `kind = "thingsboard"`.
#[derive(Debug, Clone, PartialEq)]
pub struct ThingsboardConfig {
    pub transport: ThingsboardTransport,
    /// Every device the source serves: `gateway_device` (the gateway's
    /// `access_token`, `fw_*`), `software_device` (the same token, `sw_*`) and each
    /// `[source.tokens]` entry (its own token, `fw_*`).
    pub bindings: Vec<ThingsboardBinding>,
    /// Bytes per firmware chunk request; default 64 KiB.
    pub chunk_size: u32,
    /// Long-poll timeout of the HTTP attribute subscription; default 30 s.
    pub poll_timeout: Duration,
    /// Where queued reports and the source's state live: `<state_dir>/thingsboard`.
    pub state_dir: PathBuf,
    /// TLS and retry settings shared with the download engine.
    pub download: crate::download::DownloadConfig,
}

/// `kind = "thingsboard"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawThingsboard {
    transport: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    port: Option<Spanned<i64>>,
    tls: Option<Spanned<bool>>,
    access_token: Option<Spanned<SecretValue>>,
    gateway_device: Option<Spanned<String>>,
    software_device: Option<Spanned<String>>,
    tokens: Option<Spanned<BTreeMap<String, Spanned<SecretValue>>>>,
    chunk_size: Option<Spanned<i64>>,
    poll_timeout: Option<Spanned<String>>,
}

impl SourceKind for RawThingsboard {
    const NAME: &'static str = "thingsboard";

    fn build(self, source: &SourceKeys<'_>) -> Result<SourceConfig, ConfigError> {
        let check = source.check;
        for (key, id, offset) in self.device_refs() {
            if !source.has_device(&id) {
                let msg = format!("source.{key}: {id:?} is not the id of a [[device]]");
                return Err(check.error(offset, Some(key), msg));
            }
        }
        let transport = match self
            .transport
            .as_ref()
            .map_or("http", |t| t.get_ref().as_str())
        {
            "http" => self.http(source)?,
            "mqtt" => self.mqtt(source)?,
            other => {
                let msg =
                    format!("source: unknown transport {other:?} (known: {KNOWN_TRANSPORTS})");
                let t = self
                    .transport
                    .as_ref()
                    .map_or(source.start, |t| t.span().start);
                return Err(check.error(t, Some("transport"), msg));
            }
        };
        let bindings = self.bindings(source)?;
        let chunk_size = match &self.chunk_size {
            Some(n) => check.int(
                n,
                "chunk_size",
                |n: &u32| *n >= 1 && i64::from(*n) <= MAX_CHUNK_SIZE,
                |n| {
                    format!(
                        "source.chunk_size: must be between 1 and {MAX_CHUNK_SIZE} bytes, got {n}"
                    )
                },
            )?,
            None => DEFAULT_CHUNK_SIZE,
        };
        let poll_timeout = check.duration_or(
            &self.poll_timeout,
            "poll_timeout",
            "source.poll_timeout",
            DEFAULT_POLL_TIMEOUT,
        )?;
        Ok(SourceConfig::Thingsboard(Box::new(ThingsboardConfig {
            transport,
            bindings,
            chunk_size,
            poll_timeout,
            state_dir: source.agent.state_dir.join("thingsboard"),
            download: source.download.clone(),
        })))
    }
}

impl RawThingsboard {
    /// Device ids this source names (key, id, offset of the value).
    fn device_refs(&self) -> Vec<(&'static str, String, usize)> {
        let mut refs = Vec::new();
        for (key, value) in [
            ("gateway_device", &self.gateway_device),
            ("software_device", &self.software_device),
        ] {
            if let Some(v) = value {
                refs.push((key, v.get_ref().clone(), v.span().start));
            }
        }
        if let Some(tokens) = &self.tokens {
            for (id, value) in tokens.get_ref() {
                refs.push(("tokens", id.clone(), value.span().start));
            }
        }
        refs
    }

    /// `transport = "http"`: `url`, no `host`, `port` or `tls`.
    fn http(&self, source: &SourceKeys<'_>) -> Result<ThingsboardTransport, ConfigError> {
        let check = source.check;
        let stray = [
            self.host.as_ref().map(|h| ("host", h.span().start)),
            self.port.as_ref().map(|p| ("port", p.span().start)),
            self.tls.as_ref().map(|t| ("tls", t.span().start)),
        ];
        if let Some((key, at)) = stray.into_iter().flatten().next() {
            let msg = format!("source: key {key:?} does not apply to transport \"http\"");
            return Err(check.error(at, Some(key), msg));
        }
        let Some(url) = &self.url else {
            let msg = "source: missing key \"url\" (required by transport \"http\")".into();
            return Err(check.error(source.start, Some("url"), msg));
        };
        let url = source.server_url(url, "url")?;
        Ok(ThingsboardTransport::Http { url })
    }

    /// `transport = "mqtt"`: `host`, `port` and `tls`, no `url`. Plain MQTT sends
    /// the access token in clear, so `tls = false` needs `https_only = false`.
    fn mqtt(&self, source: &SourceKeys<'_>) -> Result<ThingsboardTransport, ConfigError> {
        let check = source.check;
        if let Some(url) = &self.url {
            let msg = "source: key \"url\" does not apply to transport \"mqtt\"".into();
            return Err(check.at(url, "url", msg));
        }
        let host = match &self.host {
            Some(h) if !h.get_ref().trim().is_empty() => h.get_ref().trim().to_string(),
            Some(h) => return Err(check.at(h, "host", "source.host: must not be empty".into())),
            None => {
                let msg = "source: missing key \"host\" (required by transport \"mqtt\")".into();
                return Err(check.error(source.start, Some("host"), msg));
            }
        };
        let tls = self.tls.as_ref().is_none_or(|t| *t.get_ref());
        if let (Some(t), false) = (&self.tls, tls || !source.download.https_only) {
            let msg = "source.tls: plain MQTT sends the access token in clear; use TLS or \
                       write https_only = false in [source] to allow cleartext"
                .into();
            return Err(check.at(t, "tls", msg));
        }
        let port = match &self.port {
            Some(p) => check.int(
                p,
                "port",
                |p: &u16| *p > 0,
                |p| format!("source.port: must be between 1 and 65535, got {p}"),
            )?,
            None if tls => DEFAULT_MQTTS_PORT,
            None => DEFAULT_MQTT_PORT,
        };
        Ok(ThingsboardTransport::Mqtt { host, port, tls })
    }

    /// The gateway's token bound to `gateway_device` / `software_device`, and the
    /// `[source.tokens]` entries; at least one.
    fn bindings(&self, source: &SourceKeys<'_>) -> Result<Vec<ThingsboardBinding>, ConfigError> {
        let check = source.check;
        let mut bindings: Vec<ThingsboardBinding> = Vec::new();
        let gateway_token = self
            .access_token
            .as_ref()
            .map(|t| {
                let name = "source.access_token";
                token(
                    check,
                    &check.secret(t, "access_token", name)?,
                    "access_token",
                    name,
                )
            })
            .transpose()?;
        for (key, value, kind) in [
            ("gateway_device", &self.gateway_device, OtaKind::Firmware),
            ("software_device", &self.software_device, OtaKind::Software),
        ] {
            let Some(value) = value else { continue };
            let Some(gateway_token) = &gateway_token else {
                let msg = format!("source.{key}: needs access_token (the gateway's own token)");
                return Err(check.at(value, key, msg));
            };
            if bindings.iter().any(|b| b.device_id == *value.get_ref()) {
                let msg = format!(
                    "source.{key}: {:?} is already gateway_device; firmware and software \
                     need two [[device]] entries",
                    value.get_ref()
                );
                return Err(check.at(value, key, msg));
            }
            bindings.push(ThingsboardBinding {
                device_id: value.get_ref().clone(),
                token: gateway_token.clone(),
                kind,
            });
        }
        if let (Some(t), true) = (&self.access_token, bindings.is_empty()) {
            let msg = "source.access_token: set gateway_device and/or software_device to name \
                       the [[device]] it updates"
                .into();
            return Err(check.at(t, "access_token", msg));
        }
        self.token_bindings(check, &mut bindings)?;
        if bindings.is_empty() {
            let msg = "source: no device is bound to ThingsBoard: set access_token with \
                       gateway_device/software_device, or [source.tokens]"
                .into();
            return Err(check.error(source.start, Some("access_token"), msg));
        }
        Ok(bindings)
    }

    /// The `[source.tokens]` entries: a device's own token.
    fn token_bindings(
        &self,
        check: &Checker<'_>,
        bindings: &mut Vec<ThingsboardBinding>,
    ) -> Result<(), ConfigError> {
        let Some(tokens) = &self.tokens else {
            return Ok(());
        };
        for (id, value) in tokens.get_ref() {
            let name = format!("source.tokens.{id:?}");
            let t = token(
                check,
                &check.secret(value, "tokens", &name)?,
                "tokens",
                &name,
            )?;
            if bindings.iter().any(|b| b.device_id == *id) {
                let msg = format!("{name}: device {id:?} is already the gateway's device");
                return Err(check.at(value, "tokens", msg));
            }
            bindings.push(ThingsboardBinding {
                device_id: id.clone(),
                token: t,
                kind: OtaKind::Firmware,
            });
        }
        Ok(())
    }
}

/// A token: non-empty, without whitespace or URL delimiters (it is a URL path
/// segment). The message never shows it.
fn token(
    check: &Checker<'_>,
    value: &Spanned<String>,
    key: &str,
    name: &str,
) -> Result<Secret, ConfigError> {
    let t = value.get_ref();
    if t.is_empty()
        || t.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '%'))
    {
        let msg =
            format!("{name}: a token must be non-empty without whitespace, '/', '?', '#' or '%'");
        return Err(check.at(value, key, msg));
    }
    Ok(Secret::new(t.clone()))
}
