//! The agent's configuration: `/etc/fota-agent/config.toml` parsed with serde
//! (`deny_unknown_fields`) and validated, so that every error names the file, the
//! line and the key, e.g. `config.toml:14: device "esp-1": unknown handler "esp8267"`.
//!
//! The agent runs unattended on a gateway, so a config mistake must be reported
//! once, precisely, before anything starts — never as a panic or a silently ignored
//! key. Parsing is therefore split in two: `parse` reads the file into spanned
//! tables and type-checks every key against the serde struct that owns it
//! (unknown keys are errors; checked values keep their spans), and `validate`
//! turns that into the types below, filling in defaults and resolving relative
//! paths against the config file's directory. Errors are [`ConfigError`]s, one line
//! each, `<path>:<line>: <message>`.
//!
//! This module owns the common keys (`[agent]`, `[status]`, `[source] kind` and the
//! download keys, each `[[device]]`'s `id`, `type`, `handler`, `policy`,
//! `version_scheme`, `only_newer`). Each source kind's and each handler's keys,
//! defaults and checks live beside its code (`source/<kind>/config.rs`,
//! `handler/<name>/config.rs`), found through the registries in
//! [`crate::source::config`] and [`crate::handler::config`]; their types are
//! re-exported here.

pub(crate) mod check;
mod error;
mod parse;
pub(crate) mod secret_ref;
pub(crate) mod table;
mod validate;

#[cfg(test)]
pub(crate) mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::UpdatePolicy;
use crate::version::VersionScheme;

pub use crate::handler::command::config::CommandConfig;
pub use crate::handler::config::{HandlerConfig, SerialConfig};
pub use crate::handler::esp8266::config::{Esp8266Config, EspReset};
pub use crate::handler::mt7681::config::{Mt7681Config, Mt7681Region};
pub use crate::handler::xmodem::config::{XmodemConfig, XmodemProtocol};
pub use crate::source::config::SourceConfig;
pub use crate::source::hawkbit::config::{ChunkSelector, HawkbitAuth, HawkbitConfig};
pub use crate::source::mcs::config::{McsConfig, McsDevice};
pub use crate::source::thingsboard::config::{
    AccessToken, OtaKind, ThingsboardBinding, ThingsboardConfig, ThingsboardTransport,
};
pub use error::ConfigError;
pub use validate::MAX_CONCURRENT_UPDATES;

/// Default location of the config file.
pub const DEFAULT_PATH: &str = "/etc/fota-agent/config.toml";

/// The whole, validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub agent: AgentConfig,
    pub source: SourceConfig,
    /// How firmware is downloaded over HTTP(S): the download keys of `[source]`
    /// (`ca_bundle`, `client_cert`, `client_key`, `https_only`, `connect_timeout`,
    /// `stall_timeout`, `download_attempts`, `max_image_size`).
    pub download: crate::download::DownloadConfig,
    pub status: StatusConfig,
    /// `[trust]`: signature keys and the checksum policy (see docs/trust.md).
    pub trust: crate::trust::TrustPolicy,
    pub devices: Vec<DeviceConfig>,
    /// The secret keys written as literals rather than `{ file = … }` or
    /// `{ credential = … }` (e.g. `source.access_token`), for
    /// [`Config::exposed_secrets_warning`].
    pub literal_secrets: Vec<String>,
}

/// `[status]`: the local status endpoint (see docs/operating.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    /// TCP address of the HTTP endpoint; default `127.0.0.1:8470`; `None` when
    /// `listen = "off"`.
    pub listen: Option<std::net::SocketAddr>,
    /// A unix socket serving the same endpoint, actions included (file mode 0660:
    /// the service's group may act). A relative path is resolved against the config
    /// file's directory. Default: none.
    pub socket: Option<PathBuf>,
    /// Bearer token that allows actions (POST) over TCP. Without it actions are
    /// refused over TCP.
    pub token: Option<String>,
    /// `listen` may be a non-loopback address; every request over TCP then needs
    /// the token (reads too). Default false.
    pub allow_remote: bool,
    /// Open connections served at once per listener; at the cap a new connection
    /// closes the oldest one still waiting for its first request (or is closed
    /// itself), so idle clients can never exhaust file descriptors. Default 64.
    pub max_connections: usize,
    /// A connection that has not sent a request's complete headers within this
    /// (after connecting, or idle between requests) is closed. Default 10 s.
    pub header_timeout: Duration,
}

/// Default `[status] listen`.
pub const DEFAULT_STATUS_LISTEN: &str = "127.0.0.1:8470";
/// Default `[status] max_connections`.
pub const DEFAULT_STATUS_MAX_CONNECTIONS: usize = 64;
/// Upper bound of `[status] max_connections` (the default fd limit is 1024).
pub const MAX_STATUS_CONNECTIONS: usize = 512;
/// Default `[status] header_timeout`.
pub const DEFAULT_STATUS_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            listen: DEFAULT_STATUS_LISTEN.parse().ok(),
            socket: None,
            token: None,
            allow_remote: false,
            max_connections: DEFAULT_STATUS_MAX_CONNECTIONS,
            header_timeout: DEFAULT_STATUS_HEADER_TIMEOUT,
        }
    }
}

/// `[agent]`. A relative `state_dir` is resolved against the config file's
/// directory.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Default `/var/lib/fota-agent`.
    pub state_dir: PathBuf,
    /// How often sources are polled; default 1 h.
    pub poll_interval: Duration,
    /// An update still running after this fails; default 30 min.
    pub update_timeout: Duration,
    /// After an update, a device that cannot say its version is asked again
    /// (with backoff) for this long before the update counts as failed: it may
    /// be rebooting. Default 3 min; part of `update_timeout`.
    pub confirm_window: Duration,
    /// At most this many updates at once across all devices; default 1, at least 1
    /// (and at most [`MAX_CONCURRENT_UPDATES`]).
    pub max_concurrent_updates: usize,
}

/// One `[[device]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    /// Unique among devices; `[A-Za-z0-9._-]+` (it names files in the state dir).
    pub id: String,
    /// The type (model) firmware must be built for (`type` in TOML).
    pub device_type: String,
    /// Default `immediate`.
    pub policy: UpdatePolicy,
    /// Default `esh`.
    pub version_scheme: VersionScheme,
    /// Refuse firmware that is not newer than what the device runs; default true.
    pub only_newer: bool,
    /// The device's group (`"test"`, freely named): it takes the newest uploaded
    /// firmware, released or not, unless a firmware is released to other groups only.
    pub group: Option<String>,
    /// The version the device is locked to (`lock`): installed whether older or
    /// newer, and no other update reaches the device.
    pub lock: Option<String>,
    pub handler: HandlerConfig,
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config `text`. `path` names the file in messages
    /// (`path.display()`, as given) and its directory is what relative paths are
    /// resolved against; the file itself is not read.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let check = check::Checker::new(text, path);
        let raw = parse::parse(text, &check)?;
        validate::config(&check, raw)
    }
}

/// A credential (hawkBit and ThingsBoard tokens): `Debug` and `Display` print
/// `***`, so it cannot end up in a log. The value is reached through
/// [`Secret::expose`] (or the field, for the transports that send it).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(pub String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}
