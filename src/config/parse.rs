//! First pass over the file: TOML syntax and serde types. The document is parsed
//! once into spanned tables; the top level reads its own keys (`[agent]`,
//! `[status]`, and the common keys of `[source]` and of each `[[device]]`) into
//! the raw structs below and keeps the rest of each table for the source's or
//! handler's own struct (see [`crate::source::config`] and
//! [`crate::handler::config`]).
//!
//! Every key is type-checked here, in file order, against the struct that owns it
//! — a key of another handler or kind too, against that one's struct — so that a
//! wrong type or a key nobody knows is reported before any value is validated,
//! with the line and the list of known keys. Values that are checked later are
//! kept as `Spanned` strings so that the checks can report their line.

use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ConfigError;
use super::check::Checker;
use super::secret_ref::SecretValue;
use super::table::{Owner, Table, all_keys, check_entry, fields_of, type_error, unknown_field};
use crate::handler::config as handlers;
use crate::source::config as sources;

/// The keys of the top level.
const TOP_LEVEL: &[&str] = &["agent", "source", "status", "trust", "device"];

/// `[agent]`; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub state_dir: Option<Spanned<String>>,
    pub poll_interval: Option<Spanned<String>>,
    pub update_timeout: Option<Spanned<String>>,
    pub confirm_window: Option<Spanned<String>>,
    /// Signed so that `0` and `-1` reach validation and get its message.
    pub max_concurrent_updates: Option<Spanned<i64>>,
}

/// `[status]`; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatus {
    pub listen: Option<Spanned<String>>,
    pub socket: Option<Spanned<String>>,
    pub token: Option<Spanned<SecretValue>>,
    pub allow_remote: Option<Spanned<bool>>,
    pub max_connections: Option<Spanned<i64>>,
    pub header_timeout: Option<Spanned<String>>,
}

/// The keys of `[source]` every kind has: `kind` and the download keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub kind: Option<Spanned<String>>,
    pub ca_bundle: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
    pub https_only: Option<bool>,
    pub connect_timeout: Option<Spanned<String>>,
    pub stall_timeout: Option<Spanned<String>>,
    pub download_attempts: Option<Spanned<i64>>,
    pub max_image_size: Option<Spanned<i64>>,
    pub retry_budget: Option<Spanned<String>>,
    pub download_timeout: Option<Spanned<String>>,
    pub min_download_rate: Option<Spanned<i64>>,
    pub free_space_reserve: Option<Spanned<i64>>,
}

/// The keys of `[[device]]` every handler has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDevice {
    pub id: Option<Spanned<String>>,
    #[serde(rename = "type")]
    pub device_type: Option<Spanned<String>>,
    pub handler: Option<Spanned<String>>,
    pub policy: Option<Spanned<String>>,
    pub version_scheme: Option<Spanned<String>>,
    /// Spanned so that `handler = "mt7681"` can point at an `only_newer = false`.
    pub only_newer: Option<Spanned<bool>>,
    pub group: Option<Spanned<String>>,
    pub lock: Option<Spanned<String>>,
}

/// A `[source]` or `[[device]]`: where it starts, its common keys and the rest.
pub(super) struct Section<'i, C> {
    pub start: usize,
    pub common: C,
    /// The keys of sources or handlers, type-checked.
    pub rest: Table<'i>,
}

/// The whole file after the first pass.
#[derive(Default)]
pub(super) struct RawConfig<'i> {
    pub agent: Option<RawAgent>,
    pub source: Option<Section<'i, RawSource>>,
    pub status: Option<RawStatus>,
    pub trust: Option<crate::trust::config::RawTrust>,
    pub device: Vec<Section<'i, RawDevice>>,
}

/// Parses `text` and reads its top level.
pub(super) fn parse<'i>(text: &'i str, check: &Checker<'_>) -> Result<RawConfig<'i>, ConfigError> {
    let root = DeTable::parse(text).map_err(|e| check.toml(&e))?;
    let mut raw = RawConfig::default();
    for (key, value) in Table::from_document(root).entries {
        match key.get_ref().as_ref() {
            "agent" => raw.agent = Some(value_as(value, check)?),
            "status" => raw.status = Some(value_as(value, check)?),
            "trust" => raw.trust = Some(value_as(value, check)?),
            "source" => raw.source = Some(source(value, check)?),
            "device" => raw.device = devices(value, check)?,
            other => {
                let msg = unknown_field(other, TOP_LEVEL);
                return Err(check.unknown_key(&msg, key.span()));
            }
        }
    }
    Ok(raw)
}

/// `value` as `T`.
fn value_as<T: DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    check: &Checker<'_>,
) -> Result<T, ConfigError> {
    T::deserialize(toml::de::ValueDeserializer::from(value)).map_err(|e| check.toml(&e))
}

/// `[source]`: `kind`, the download keys, and the keys of the source kinds.
fn source<'i>(
    value: Spanned<DeValue<'i>>,
    check: &Checker<'_>,
) -> Result<Section<'i, RawSource>, ConfigError> {
    static ALL: OnceLock<Vec<&'static str>> = OnceLock::new();
    let owners: Vec<&Owner> = sources::SOURCES.iter().map(|s| &s.owner).collect();
    // As listed in messages: `kind`, the kinds' keys, then the download keys.
    let common = fields_of::<RawSource>();
    let all = all_keys(&ALL, &common[..1], &owners, &common[1..]);
    section(value, "kind", &owners, all, check)
}

/// `[[device]]`, each with its common keys and the keys of the handlers.
fn devices<'i>(
    value: Spanned<DeValue<'i>>,
    check: &Checker<'_>,
) -> Result<Vec<Section<'i, RawDevice>>, ConfigError> {
    static ALL: OnceLock<Vec<&'static str>> = OnceLock::new();
    let owners: Vec<&Owner> = handlers::HANDLERS.iter().map(|h| &h.owner).collect();
    let all = all_keys(&ALL, fields_of::<RawDevice>(), &owners, &[]);
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items
            .into_iter()
            .map(|item| section(item, "handler", &owners, all, check))
            .collect(),
        other => {
            let value = Spanned::new(span, other);
            Err(check.toml(&type_error::<Vec<IgnoredAny>>(value)))
        }
    }
}

/// Splits the table `value` into the common keys `C` and the rest, type-checking
/// every key in file order: a common key against `C`, another against the owner
/// `selector` names if it has that key, else against the first owner that has
/// it; a key no one has is an unknown field (`all` are the known ones).
fn section<'i, C: DeserializeOwned>(
    value: Spanned<DeValue<'i>>,
    selector: &str,
    owners: &[&Owner],
    all: &'static [&'static str],
    check: &Checker<'_>,
) -> Result<Section<'i, C>, ConfigError> {
    let mut table = Table::from_value(value).map_err(|v| check.toml(&type_error::<C>(v)))?;
    let common = fields_of::<C>();
    let selected = table
        .str(selector)
        .and_then(|name| owners.iter().find(|o| o.name == name));
    for entry in &table.entries {
        let key = entry.0.get_ref().as_ref();
        let checked = if common.contains(&key) {
            check_entry::<C>(table.span.clone(), entry.clone())
        } else if let Some(owner) = selected
            .filter(|o| o.owns(key))
            .or_else(|| owners.iter().find(|o| o.owns(key)))
        {
            (owner.check)(table.span.clone(), entry.clone())
        } else {
            let msg = unknown_field(key, all);
            return Err(check.unknown_key(&msg, entry.0.span()));
        };
        checked.map_err(|e| check.toml(&e))?;
    }
    let start = table.span.start;
    let common = check.deserialize(table.split_off(|k| common.contains(&k)))?;
    Ok(Section {
        start,
        common,
        rest: table,
    })
}
