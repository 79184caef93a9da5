//! The source registry: which `[source] kind`s exist and how each one's keys are
//! read.
//!
//! Each source kind owns its `[source]` keys: a raw serde struct
//! (`deny_unknown_fields`, every field optional) implementing [`SourceKind`] and
//! the validated config type, both beside the source's code. The config file
//! parser reads the common keys (`kind` and the download keys) and hands the rest
//! of the table to the kind `kind` names.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use toml::Spanned;

use super::hawkbit::config::RawHawkbit;
use super::mcs::config::RawMcs;
use super::thingsboard::config::RawThingsboard;
use crate::config::check::Checker;
use crate::config::table::{Owner, Table, all_keys, names};
use crate::config::{AgentConfig, ConfigError, DeviceConfig};
use crate::download::DownloadConfig;

pub use super::hawkbit::config::HawkbitConfig;
pub use super::mcs::config::McsConfig;
pub use super::thingsboard::config::ThingsboardConfig;

/// `[source]`, chosen by `kind`.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// `kind = "directory"`: an ESH filesystem-provider tree at `path`
    /// (default `<state_dir>/firmware`). Also the default when `[source]` is absent.
    /// A relative `path` is resolved against the config file's directory.
    Directory { path: PathBuf },
    /// `kind = "hawkbit"`: an Eclipse hawkBit server over its Direct Device
    /// Integration (DDI) API.
    Hawkbit(HawkbitConfig),
    /// `kind = "mcs"`: MediaTek Cloud Sandbox (REST + command server push).
    Mcs(McsConfig),
    /// `kind = "thingsboard"`: ThingsBoard's device API (see
    /// docs/source-thingsboard.md).
    Thingsboard(Box<ThingsboardConfig>),
}

/// A source kind's keys as written: its name and how its config is built.
pub(crate) trait SourceKind: DeserializeOwned {
    /// `kind = "<NAME>"`.
    const NAME: &'static str;
    /// Checks the keys and fills in defaults.
    fn build(self, source: &SourceKeys<'_>) -> Result<SourceConfig, ConfigError>;
}

/// What a source's checks know: the rest of the config, already checked.
pub(crate) struct SourceKeys<'a> {
    pub check: &'a Checker<'a>,
    /// Offset of the `[source]` table: where a missing key is reported.
    pub start: usize,
    pub agent: &'a AgentConfig,
    /// The `[[device]]`s, which a source may name.
    pub devices: &'a [DeviceConfig],
    /// The download keys of `[source]`.
    pub download: &'a DownloadConfig,
}

impl SourceKeys<'_> {
    /// Whether a `[[device]]` has this id.
    pub fn has_device(&self, id: &str) -> bool {
        self.devices.iter().any(|d| d.id == id)
    }

    /// Refuses a plain `http://` server URL unless `https_only = false` is written:
    /// tokens and device keys travel with every request, so cleartext must be a
    /// deliberate choice (a test server on loopback, a lab).
    /// A server URL key (`url`, `base_url`): http:// or https:// with a host,
    /// plain http only with `https_only = false`; returned without a trailing `/`.
    pub fn server_url(&self, url: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let trimmed = url.get_ref().trim_end_matches('/');
        let host = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"));
        let valid = host.is_some_and(|h| !h.is_empty() && !h.contains(char::is_whitespace))
            && reqwest::Url::parse(trimmed).is_ok_and(|u| u.host().is_some());
        if !valid {
            let msg = format!(
                "source.{key}: {:?} is not an http:// or https:// URL",
                url.get_ref()
            );
            return Err(self.check.at(url, key, msg));
        }
        self.require_https(url, key)?;
        Ok(trimmed.to_string())
    }

    pub fn require_https(&self, url: &Spanned<String>, key: &str) -> Result<(), ConfigError> {
        let plain = url
            .get_ref()
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
        if plain && self.download.https_only {
            let msg = format!(
                "source.{key}: {:?} is plain http://; use https:// or write \
                 https_only = false in [source] to allow cleartext",
                url.get_ref()
            );
            return Err(self.check.at(url, key, msg));
        }
        Ok(())
    }
}

/// One registered source kind.
pub(crate) struct SourceEntry {
    pub owner: Owner,
    pub build: fn(Table<'_>, &SourceKeys<'_>) -> Result<SourceConfig, ConfigError>,
}

const fn entry<K: SourceKind>() -> SourceEntry {
    SourceEntry {
        owner: Owner::of::<K>(K::NAME),
        build: build::<K>,
    }
}

fn build<K: SourceKind>(
    table: Table<'_>,
    source: &SourceKeys<'_>,
) -> Result<SourceConfig, ConfigError> {
    source.check.deserialize::<K>(table)?.build(source)
}

/// Every source kind, in the order their keys are listed in messages.
pub(crate) static SOURCES: &[SourceEntry] = &[
    entry::<super::directory::RawDirectory>(),
    entry::<RawMcs>(),
    entry::<RawHawkbit>(),
    entry::<RawThingsboard>(),
];

/// The registered source kind named `name`.
pub(crate) fn find(name: &str) -> Option<&'static SourceEntry> {
    SOURCES.iter().find(|s| s.owner.name == name)
}

/// The kinds' names, sorted and comma-separated (for messages).
pub(crate) fn known() -> &'static str {
    static KNOWN: OnceLock<String> = OnceLock::new();
    names(&KNOWN, &owners())
}

/// The kinds' keys, each once, in registry order.
pub(crate) fn source_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    all_keys(&KEYS, &[], &owners(), &[])
}

fn owners() -> Vec<&'static Owner> {
    SOURCES.iter().map(|s| &s.owner).collect()
}
