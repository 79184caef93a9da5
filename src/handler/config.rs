//! The handler registry and what handlers' configs share.
//!
//! Each handler owns its `[[device]]` keys: a raw serde struct
//! (`deny_unknown_fields`, every field optional) and a validated config type
//! implementing [`HandlerSpec`], both beside the handler's code. The config file
//! parser reads the common keys of a `[[device]]` (`id`, `type`, `handler`,
//! `policy`, `version_scheme`, `only_newer`) and hands the rest of the table to the
//! handler the device names, through the registry below.
//!
//! Adding a handler: write its validated config type, its raw struct and their
//! `HandlerSpec` implementation beside its code (the checks go in `from_raw`, the
//! constructor in `handler`), add one line to the `handlers!` list in
//! `handler/mod.rs` (it declares the module too), and document its keys in its
//! docs page. The variant of
//! [`HandlerConfig`], its name in messages, the keys known to the parser and the
//! "does not apply to handler" checks all follow from that line.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::Spanned;

pub(crate) use super::HANDLERS;
pub use super::HandlerConfig;
use super::UpdateHandler;
use crate::config::check::Checker;
use crate::config::table::{Owner, Table, all_keys, names};
use crate::config::{ConfigError, DeviceConfig};

/// Default `command_timeout` of every handler.
const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_BAUD: u32 = 115_200;
const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_RETRIES: u32 = 10;

/// A handler's validated config: how it is named in the file, the raw struct its
/// keys are read into, the checks, and the handler it makes.
pub(crate) trait HandlerSpec: Sized + Into<HandlerConfig> {
    /// `handler = "<NAME>"`.
    const NAME: &'static str;
    /// The handler's keys as written (serde, `deny_unknown_fields`, all optional).
    type Raw: DeserializeOwned;
    /// Checks the keys and fills in defaults.
    fn from_raw(raw: Self::Raw, device: &DeviceKeys<'_>) -> Result<Self, ConfigError>;
    /// The handler for `device` (whose handler config is `self`).
    fn handler(&self, device: &DeviceConfig) -> Arc<dyn UpdateHandler>;
}

/// What a handler's checks know about its `[[device]]`.
pub(crate) struct DeviceKeys<'a> {
    pub check: &'a Checker<'a>,
    /// `device "<id>"`, the prefix of messages.
    pub dev: &'a str,
    /// Offset of the `[[device]]` table: where a missing key is reported.
    pub start: usize,
    /// The common `only_newer` key, when set.
    pub only_newer: Option<&'a Spanned<bool>>,
    /// `agent.state_dir`: where a handler keeps what it learns about its device.
    pub state_dir: &'a std::path::Path,
}

impl DeviceKeys<'_> {
    /// The error for the missing key `key` required by handler `S`; `why` ends
    /// the parenthesis (`""` or `": <reason>"`).
    pub fn missing<S: HandlerSpec>(&self, key: &str, why: &str) -> ConfigError {
        let msg = format!(
            "{}: missing key {key:?} (required by handler {:?}{why})",
            self.dev,
            S::NAME
        );
        self.check.error(self.start, Some(key), msg)
    }

    /// `version_command` and its limit `command_timeout` (which also bounds the
    /// command handler's `executable_command`): the keys every handler that can
    /// ask a device's version shares. The timeout is checked first.
    pub fn version_keys(
        &self,
        command: &Option<Spanned<Vec<String>>>,
        timeout: &Option<Spanned<String>>,
    ) -> Result<(Option<Vec<String>>, Duration), ConfigError> {
        let timeout = self.command_timeout(timeout)?;
        Ok((self.command(command, "version_command")?, timeout))
    }

    /// `command_timeout`: the limit of the version (and executable) commands.
    pub fn command_timeout(
        &self,
        value: &Option<Spanned<String>>,
    ) -> Result<Duration, ConfigError> {
        let name = format!("{}: command_timeout", self.dev);
        self.check
            .duration_or(value, "command_timeout", &name, DEFAULT_COMMAND_TIMEOUT)
    }

    /// An optional argv key such as `version_command`.
    pub fn command(
        &self,
        value: &Option<Spanned<Vec<String>>>,
        key: &str,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        self.check.opt_command(value, key, self.dev)
    }

    /// `port` (required) and `baud` of a serial handler `S`.
    pub fn serial<S: HandlerSpec>(
        &self,
        port: &Option<Spanned<String>>,
        baud: &Option<Spanned<i64>>,
    ) -> Result<SerialConfig, ConfigError> {
        let dev = self.dev;
        let port = match port {
            Some(p) if !p.get_ref().is_empty() => PathBuf::from(p.get_ref()),
            Some(p) => {
                let msg = format!("{dev}: port must not be empty");
                return Err(self.check.at(p, "port", msg));
            }
            None => return Err(self.missing::<S>("port", "")),
        };
        let baud = match baud {
            Some(b) => self.check.int(
                b,
                "baud",
                |b| (300..=4_000_000).contains(b),
                |b| format!("{dev}: baud must be between 300 and 4000000, got {b}"),
            )?,
            None => DEFAULT_BAUD,
        };
        Ok(SerialConfig { port, baud })
    }

    /// `response_timeout` of the xmodem and mt7681 handlers.
    pub fn response_timeout(
        &self,
        value: &Option<Spanned<String>>,
    ) -> Result<Duration, ConfigError> {
        let name = format!("{}: response_timeout", self.dev);
        self.check
            .duration_or(value, "response_timeout", &name, DEFAULT_RESPONSE_TIMEOUT)
    }

    /// `retries` of the xmodem and mt7681 handlers: 1 to 100.
    pub fn retries(&self, value: &Option<Spanned<i64>>) -> Result<u32, ConfigError> {
        let dev = self.dev;
        match value {
            Some(r) => self.check.int(
                r,
                "retries",
                |r| (1..=100).contains(r),
                |r| format!("{dev}: retries must be between 1 and 100, got {r}"),
            ),
            None => Ok(DEFAULT_RETRIES),
        }
    }
}

/// The UART a serial handler talks to (`port`, `baud`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialConfig {
    /// E.g. `/dev/ttyUSB0`.
    pub port: PathBuf,
    /// Default 115200.
    pub baud: u32,
}

/// One registered handler: its keys and how its config is built from them.
pub(crate) struct HandlerEntry {
    pub owner: Owner,
    pub build: fn(Table<'_>, &DeviceKeys<'_>) -> Result<HandlerConfig, ConfigError>,
}

pub(crate) const fn entry<S: HandlerSpec>() -> HandlerEntry {
    HandlerEntry {
        owner: Owner::of::<S::Raw>(S::NAME),
        build: build::<S>,
    }
}

fn build<S: HandlerSpec>(
    table: Table<'_>,
    device: &DeviceKeys<'_>,
) -> Result<HandlerConfig, ConfigError> {
    let raw = device.check.deserialize::<S::Raw>(table)?;
    S::from_raw(raw, device).map(Into::into)
}

/// The registered handler named `name`.
pub(crate) fn find(name: &str) -> Option<&'static HandlerEntry> {
    HANDLERS.iter().find(|h| h.owner.name == name)
}

/// The handlers' names, sorted and comma-separated (for messages).
pub(crate) fn known() -> &'static str {
    static KNOWN: OnceLock<String> = OnceLock::new();
    let owners: Vec<&Owner> = HANDLERS.iter().map(|h| &h.owner).collect();
    names(&KNOWN, &owners)
}

/// The keys of every handler, each once, in registry order.
pub(crate) fn handler_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    let owners: Vec<&Owner> = HANDLERS.iter().map(|h| &h.owner).collect();
    all_keys(&KEYS, &[], &owners, &[])
}

/// Generates [`HandlerConfig`] (one variant per handler), its `name()` and
/// `handler()`, and the registry `HANDLERS`.
macro_rules! handlers {
    ($( $(#[$doc:meta])* $module:ident => $variant:ident($config:ty), )*) => {
        $( pub mod $module; )*

        /// The device's handler and its handler-specific keys.
        #[derive(Debug, Clone, PartialEq)]
        pub enum HandlerConfig {
            $( $(#[$doc])* $variant($config), )*
        }

        impl HandlerConfig {
            /// The handler's name as written in the config.
            pub fn name(&self) -> &'static str {
                match self {
                    $( HandlerConfig::$variant(_) => <$config as $crate::handler::config::HandlerSpec>::NAME, )*
                }
            }

            /// The handler for `device` (whose handler config is `self`).
            pub(crate) fn handler(
                &self,
                device: &$crate::config::DeviceConfig,
            ) -> std::sync::Arc<dyn $crate::handler::UpdateHandler> {
                match self {
                    $( HandlerConfig::$variant(c) => $crate::handler::config::HandlerSpec::handler(c, device), )*
                }
            }
        }

        $(
            impl From<$config> for HandlerConfig {
                fn from(config: $config) -> Self {
                    HandlerConfig::$variant(config)
                }
            }
        )*

        /// Every handler, in the order their keys are listed in messages.
        pub(crate) static HANDLERS: &[$crate::handler::config::HandlerEntry] =
            &[$( $crate::handler::config::entry::<$config>(), )*];
    };
}
pub(crate) use handlers;
