//! What every config check needs: the file's text (for line numbers), its name
//! (for messages) and its directory (for relative paths), plus the checks shared
//! by several tables — durations, paths, enum names, integer ranges and argv
//! arrays. Each failure is a [`ConfigError`] at the line of the offending value,
//! naming its key; nothing here panics, whatever the input.
//!
//! An upper bound keeps absurd durations from overflowing timers later: at most
//! 10 years.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::value::StrDeserializer;
use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;

use super::ConfigError;
use super::error::{line_of, one_line};
use super::secret_ref::LiteralSecrets;
use super::table::Table;

/// Ten years as humantime counts them (365.25 days each), so it prints as `10years`.
const MAX_DURATION: Duration = Duration::from_secs(10 * 31_557_600);

/// Check context: the text, the file name and the directory relative paths are
/// resolved against (`path.parent()`).
pub(crate) struct Checker<'a> {
    text: &'a str,
    path: &'a Path,
    base: &'a Path,
    literal_secrets: LiteralSecrets,
}

impl<'a> Checker<'a> {
    pub(crate) fn new(text: &'a str, path: &'a Path) -> Self {
        let base = path.parent().unwrap_or(Path::new(""));
        Checker {
            text,
            path,
            base,
            literal_secrets: LiteralSecrets::default(),
        }
    }

    /// The folder relative paths are resolved against.
    pub fn base(&self) -> &Path {
        self.base
    }

    /// The secret keys written as literals so far.
    pub fn literal_secrets(&self) -> &LiteralSecrets {
        &self.literal_secrets
    }

    /// The config file as given.
    pub fn path(&self) -> &Path {
        self.path
    }

    /// The 1-based line of byte `offset`.
    pub fn line(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    /// An error at byte `offset`.
    pub fn error(&self, offset: usize, key: Option<&str>, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: line_of(self.text, offset),
            key: key.map(str::to_string),
            message: one_line(&message),
        }
    }

    /// An error about the value `at` of `key`.
    pub fn at<T>(&self, at: &Spanned<T>, key: &str, message: String) -> ConfigError {
        self.error(at.span().start, Some(key), message)
    }

    /// A toml/serde error (syntax, unknown field, wrong type).
    pub fn toml(&self, err: &toml::de::Error) -> ConfigError {
        ConfigError::from_toml(err.message(), err.span(), self.text, self.path)
    }

    /// serde's message for an unknown key, at the key (`span`).
    pub fn unknown_key(&self, message: &str, span: Range<usize>) -> ConfigError {
        ConfigError::from_toml(message, Some(span), self.text, self.path)
    }

    /// `table` as the raw struct `T` (whose entries were type-checked already).
    pub fn deserialize<T: DeserializeOwned>(&self, table: Table<'_>) -> Result<T, ConfigError> {
        table.deserialize().map_err(|e| self.toml(&e))
    }

    /// A path: non-empty, a relative one resolved against the config's directory.
    /// `name` prefixes the message (e.g. `agent.state_dir`).
    pub fn dir(
        &self,
        value: &Spanned<String>,
        key: &str,
        name: &str,
    ) -> Result<PathBuf, ConfigError> {
        let raw = value.get_ref();
        if raw.is_empty() {
            return Err(self.at(value, key, format!("{name}: must not be empty")));
        }
        Ok(self.base.join(raw))
    }

    /// A humantime duration, neither zero nor longer than [`MAX_DURATION`]. `name`
    /// prefixes the message (e.g. `agent.update_timeout`).
    pub fn duration(
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

    /// An optional duration (see [`Checker::duration`]), `default` when absent.
    pub fn duration_or(
        &self,
        value: &Option<Spanned<String>>,
        key: &str,
        name: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            Some(v) => self.duration(v, key, name),
            None => Ok(default),
        }
    }

    /// A start-up spread (see [`crate::schedule::spread`]): a duration, where
    /// "0" or "0s" means at once (the one key where zero makes sense);
    /// `default` when absent.
    pub fn spread_or(
        &self,
        value: &Option<Spanned<String>>,
        key: &str,
        name: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            Some(s) if humantime::parse_duration(s.get_ref()).is_ok_and(|d| d.is_zero()) => {
                Ok(Duration::ZERO)
            }
            _ => self.duration_or(value, key, name, default),
        }
    }

    /// An integer converted to `T` and accepted by `ok`; otherwise the error
    /// `message(value)` at the value.
    pub fn int<T: TryFrom<i64>>(
        &self,
        value: &Spanned<i64>,
        key: &str,
        ok: impl Fn(&T) -> bool,
        message: impl FnOnce(i64) -> String,
    ) -> Result<T, ConfigError> {
        T::try_from(*value.get_ref())
            .ok()
            .filter(ok)
            .ok_or_else(|| self.at(value, key, message(*value.get_ref())))
    }

    /// The value of an enum-valued key, by its serde name; an unknown name is an
    /// error listing the `known` ones, prefixed by `prefix` (e.g. `device "d"`).
    pub fn named<T: DeserializeOwned>(
        &self,
        value: &Option<Spanned<String>>,
        key: &str,
        prefix: &str,
        known: &str,
    ) -> Result<Option<T>, ConfigError> {
        let Some(v) = value else {
            return Ok(None);
        };
        parse_enum(v.get_ref()).map(Some).ok_or_else(|| {
            let msg = format!("{prefix}: unknown {key} {:?} (known: {known})", v.get_ref());
            self.at(v, key, msg)
        })
    }

    /// An optional argv array (see [`Checker::command`]).
    pub fn opt_command(
        &self,
        argv: &Option<Spanned<Vec<String>>>,
        key: &str,
        dev: &str,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        argv.as_ref()
            .map(|argv| self.command(argv, key, dev))
            .transpose()
    }

    /// Checks an argv array and resolves a relative program path containing `/`
    /// against the config's directory (a bare name is left for `PATH` lookup).
    pub fn command(
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
}

/// A unit enum from its serde name, so the accepted names are exactly those of the
/// type's `#[serde(rename_all)]`.
pub(crate) fn parse_enum<T: DeserializeOwned>(name: &str) -> Option<T> {
    let de: StrDeserializer<'_, serde::de::value::Error> = name.into_deserializer();
    T::deserialize(de).ok()
}
