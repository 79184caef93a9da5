//! The keys of `kind = "hawkbit"`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::config::check::Checker;
use crate::config::secret_ref::SecretValue;
use crate::config::{ConfigError, Secret};
use crate::source::config::{SourceConfig, SourceKeys, SourceKind};

const DEFAULT_TENANT: &str = "DEFAULT";
const DEFAULT_MIN_POLL_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_STARTUP_SPREAD: Duration = Duration::from_secs(60);

/// Keys of `kind = "hawkbit"`.
#[derive(Debug, Clone, PartialEq)]
pub struct HawkbitConfig {
    /// The server's base URL (`https://hawkbit.example.com`), without a trailing `/`.
    pub url: String,
    /// Default `DEFAULT`.
    pub tenant: String,
    /// The gateway's controller id; `None`: the content of `/etc/machine-id`.
    pub controller_id: Option<String>,
    pub auth: HawkbitAuth,
    /// Never poll more often than this, whatever the server says; default 30 s.
    pub min_poll_interval: Duration,
    /// The first poll after start-up waits a random time up to this, so a fleet
    /// that boots together does not poll together; default 60 s, 0: at once.
    pub startup_spread: Duration,
    /// Which chunk of a deployment goes to which device (`chunks` table); a
    /// device not listed takes the chunk whose name is its id or else its type.
    pub devices: Vec<(String, ChunkSelector)>,
}

/// How the gateway authenticates to hawkBit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HawkbitAuth {
    /// No `Authorization` header (anonymous targets, tests).
    None,
    /// `target_token`: `Authorization: TargetToken <token>`.
    TargetToken(Secret),
    /// `gateway_token`: `Authorization: GatewayToken <token>`.
    GatewayToken(Secret),
}

impl HawkbitAuth {
    /// The `Authorization` header value, if any.
    pub fn header(&self) -> Option<String> {
        match self {
            HawkbitAuth::None => None,
            HawkbitAuth::TargetToken(t) => Some(format!("TargetToken {}", t.expose())),
            HawkbitAuth::GatewayToken(t) => Some(format!("GatewayToken {}", t.expose())),
        }
    }
}

/// Which chunk of a hawkBit deployment a device takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkSelector {
    /// `part:<part>`: the chunk whose `part` (software module type) is this.
    Part(String),
    /// `name:<name>`: the chunk whose `name` (software module name) is this.
    Name(String),
}

/// `kind = "hawkbit"` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHawkbit {
    url: Option<Spanned<String>>,
    tenant: Option<Spanned<String>>,
    controller_id: Option<Spanned<String>>,
    target_token: Option<Spanned<SecretValue>>,
    gateway_token: Option<Spanned<SecretValue>>,
    min_poll_interval: Option<Spanned<String>>,
    startup_spread: Option<Spanned<String>>,
    /// Device id → chunk selector (`part:<part>` or `name:<name>`).
    chunks: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
}

impl SourceKind for RawHawkbit {
    const NAME: &'static str = "hawkbit";

    fn build(self, source: &SourceKeys<'_>) -> Result<SourceConfig, ConfigError> {
        let check = source.check;
        let Some(url) = &self.url else {
            let msg = "source: missing key \"url\" (required by kind \"hawkbit\")".to_string();
            return Err(check.error(source.start, Some("url"), msg));
        };
        let url = source.server_url(url, "url")?;
        let tenant =
            segment(check, &self.tenant, "tenant")?.unwrap_or_else(|| DEFAULT_TENANT.into());
        let controller_id = segment(check, &self.controller_id, "controller_id")?;
        let auth = self.auth(check)?;
        let min_poll_interval = check.duration_or(
            &self.min_poll_interval,
            "min_poll_interval",
            "source.min_poll_interval",
            DEFAULT_MIN_POLL_INTERVAL,
        )?;
        let startup_spread = check.spread_or(
            &self.startup_spread,
            "startup_spread",
            "source.startup_spread",
            DEFAULT_STARTUP_SPREAD,
        )?;
        let devices = self.chunks(source)?;
        Ok(SourceConfig::Hawkbit(HawkbitConfig {
            url,
            tenant,
            controller_id,
            auth,
            min_poll_interval,
            startup_spread,
            devices,
        }))
    }
}

impl RawHawkbit {
    /// `target_token` or `gateway_token` (not both).
    fn auth(&self, check: &Checker<'_>) -> Result<HawkbitAuth, ConfigError> {
        let token = |v: &Spanned<SecretValue>, key: &str| {
            let v = &check.secret(v, key, &format!("source.{key}"))?;
            if v.get_ref().trim().is_empty() {
                Err(check.at(v, key, format!("source.{key}: must not be empty")))
            } else {
                Ok(Secret::new(v.get_ref().trim()))
            }
        };
        Ok(match (&self.target_token, &self.gateway_token) {
            (Some(_), Some(g)) => {
                let msg = "source: set target_token or gateway_token, not both".to_string();
                return Err(check.at(g, "gateway_token", msg));
            }
            (Some(t), None) => HawkbitAuth::TargetToken(token(t, "target_token")?),
            (None, Some(g)) => HawkbitAuth::GatewayToken(token(g, "gateway_token")?),
            (None, None) => HawkbitAuth::None,
        })
    }

    /// The `chunks` table: selectors, and devices that exist.
    fn chunks(&self, source: &SourceKeys<'_>) -> Result<Vec<(String, ChunkSelector)>, ConfigError> {
        let Some(map) = &self.chunks else {
            return Ok(Vec::new());
        };
        let mut devices = Vec::new();
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
                return Err(source.check.at(selector, "chunks", msg));
            };
            devices.push((id.clone(), parsed));
        }
        for (id, selector) in map.get_ref() {
            if !source.has_device(id) {
                let msg = format!("source.chunks: no [[device]] with id {id:?}");
                return Err(source.check.at(selector, "chunks", msg));
            }
        }
        Ok(devices)
    }
}

/// A key that becomes one URL path segment (`tenant`, `controller_id`).
fn segment(
    check: &Checker<'_>,
    value: &Option<Spanned<String>>,
    key: &str,
) -> Result<Option<String>, ConfigError> {
    match value {
        Some(s) if s.get_ref().is_empty() => {
            Err(check.at(s, key, format!("source.{key}: must not be empty")))
        }
        Some(s) if s.get_ref().contains(['/', '?', '#', ' ']) => Err(check.at(
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
}
