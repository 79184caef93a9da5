//! Config errors. Each one displays as a single line, `<path>:<line>: <message>`
//! (or `<path>: cannot read: <io error>`), the form editors and `grep -n` use, so an
//! operator can jump straight to the offending line; the key is kept separately for
//! callers and tests. Line numbers are computed from the byte spans toml reports,
//! clamped so that a span outside the text can never panic.

use std::path::{Path, PathBuf};

/// Why the config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid config: bad TOML, an unknown key, a
    /// value of the wrong type or one that fails validation.
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// The offending TOML key (e.g. `handler`, `update_timeout`), when known.
        key: Option<String>,
        /// One line, without the path and line prefix.
        message: String,
    },
}

impl ConfigError {
    /// The 1-based line of the problem (`None` for read errors).
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { line, .. } => Some(*line),
        }
    }

    /// The offending key, when the error is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Read { .. } => None,
            ConfigError::Invalid { key, .. } => key.as_deref(),
        }
    }

    /// The config file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Read { path, .. } | ConfigError::Invalid { path, .. } => path,
        }
    }

    /// The message without the `<path>:<line>: ` prefix.
    pub fn message(&self) -> String {
        match self {
            ConfigError::Read { source, .. } => format!("cannot read: {source}"),
            ConfigError::Invalid { message, .. } => message.clone(),
        }
    }

    /// A toml/serde error (syntax, unknown field, wrong type, missing field): its
    /// message and span.
    pub(super) fn from_toml(
        message: &str,
        span: Option<std::ops::Range<usize>>,
        text: &str,
        path: &Path,
    ) -> ConfigError {
        let key = if message.starts_with("unknown field") {
            // The span covers the key as written; fall back to the message.
            span.as_ref()
                .and_then(|s| text.get(s.clone()))
                .map(unquote_key)
                .filter(|k| !k.is_empty())
                .or_else(|| backticked(message))
        } else if message.starts_with("missing field") {
            backticked(message)
        } else {
            None
        };
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line: span.map_or(1, |s| line_of(text, s.start)),
            key,
            message: one_line(message),
        }
    }
}

/// The 1-based line holding byte `offset` of `text` (offsets past the end count as
/// the last line).
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// Forces a message onto one line: line breaks and other control characters (which
/// can only come from quoted keys or values echoed back) are escaped.
pub(super) fn one_line(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The key as written in the source, without surrounding quotes or whitespace.
fn unquote_key(raw: &str) -> String {
    let raw = raw.trim();
    let unquoted = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .or_else(|| raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')))
        .unwrap_or(raw);
    unquoted.to_string()
}

/// The text between the first pair of backticks of `message`.
fn backticked(message: &str) -> Option<String> {
    let (_, rest) = message.split_once('`')?;
    let (inner, _) = rest.split_once('`')?;
    Some(inner.to_string())
}
