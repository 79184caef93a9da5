//! The config file exactly as written: serde structs mirroring the TOML, before any
//! validation. Every table denies unknown fields so that a misspelt key is an error
//! naming it instead of a silently ignored setting. Values that are checked later
//! are kept as `Spanned` strings (not parsed by serde into their final types) so
//! that the checks in `validate` can report the line and the key of a bad value.
//! `#[serde(flatten)]` is deliberately not used: it loses spans and does not work
//! together with `deny_unknown_fields`.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub agent: Option<RawAgent>,
    pub source: Option<Spanned<RawSource>>,
    pub status: Option<RawStatus>,
    #[serde(default)]
    pub device: Vec<Spanned<RawDevice>>,
}

/// `[agent]`; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub state_dir: Option<Spanned<String>>,
    pub poll_interval: Option<Spanned<String>>,
    pub update_timeout: Option<Spanned<String>>,
    /// Signed so that `0` and `-1` reach validation and get its message.
    pub max_concurrent_updates: Option<Spanned<i64>>,
}

/// `[status]`; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatus {
    pub listen: Option<Spanned<String>>,
    pub socket: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
}

/// `[source]`: `kind` plus the keys of every kind (validation checks which apply).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub kind: Option<Spanned<String>>,
    /// `kind = "directory"`.
    pub path: Option<Spanned<String>>,

    // kind = "mcs"
    pub base_url: Option<Spanned<String>>,
    pub device_id: Option<Spanned<String>>,
    pub device_key: Option<Spanned<String>>,
    pub gateway_device: Option<Spanned<String>>,
    pub command_server: Option<Spanned<String>>,
    pub heartbeat_interval: Option<Spanned<String>>,
    pub max_push_age: Option<Spanned<String>>,
    pub status_channel: Option<Spanned<String>>,
    /// `[source.devices]`: agent device id -> its own MCS credentials.
    pub devices: Option<Spanned<BTreeMap<String, Spanned<RawMcsDevice>>>>,

    // kind = "hawkbit"
    pub url: Option<Spanned<String>>,
    pub tenant: Option<Spanned<String>>,
    pub controller_id: Option<Spanned<String>>,
    pub target_token: Option<Spanned<String>>,
    pub gateway_token: Option<Spanned<String>>,
    pub min_poll_interval: Option<Spanned<String>>,
    /// Device id → chunk selector (`part:<part>` or `name:<name>`).
    pub chunks: Option<Spanned<BTreeMap<String, Spanned<String>>>>,

    // kind = "thingsboard" (gateway_device is shared with mcs)
    pub transport: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub port: Option<Spanned<i64>>,
    pub access_token: Option<Spanned<String>>,
    pub software_device: Option<Spanned<String>>,
    pub tokens: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    pub chunk_size: Option<Spanned<i64>>,
    pub poll_timeout: Option<Spanned<String>>,

    // Downloads over HTTP(S), for every kind.
    pub ca_bundle: Option<Spanned<String>>,
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
    pub https_only: Option<bool>,
    pub connect_timeout: Option<Spanned<String>>,
    pub stall_timeout: Option<Spanned<String>>,
    pub download_attempts: Option<Spanned<i64>>,
    pub max_image_size: Option<Spanned<i64>>,
}

/// One `[[device]]`: the common keys plus the keys of every handler (validation
/// checks which apply to the device's handler).
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

    // handler = "command"
    pub version_command: Option<Spanned<Vec<String>>>,
    pub executable_command: Option<Spanned<Vec<String>>>,
    pub transfer_command: Option<Spanned<Vec<String>>>,
    pub update_command: Option<Spanned<Vec<String>>>,
    pub command_timeout: Option<Spanned<String>>,

    // serial handlers (esp8266, xmodem, mt7681)
    pub port: Option<Spanned<String>>,
    pub baud: Option<Spanned<i64>>,
    // handler = "esp8266"
    pub flash_offset: Option<Spanned<i64>>,
    pub reset: Option<Spanned<String>>,
    // handler = "xmodem"
    pub protocol: Option<Spanned<String>>,
    pub enter_command: Option<Spanned<String>>,
    // handler = "xmodem" and "mt7681"
    pub response_timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
    // handler = "mt7681"
    pub region: Option<Spanned<String>>,
}

/// One entry of `[source.devices]` (`kind = "mcs"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMcsDevice {
    pub device_id: Option<Spanned<String>>,
    pub device_key: Option<Spanned<String>>,
}
