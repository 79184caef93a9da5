//! Logging: natively to journald under systemd, plain text to stderr otherwise.
//!
//! Under systemd (stderr is the journal stream named by `JOURNAL_STREAM`) every
//! `tracing` event becomes one journal entry sent over the native protocol to
//! `/run/systemd/journal/socket`, with its fields as journal fields: `MESSAGE`,
//! `PRIORITY`, `SYSLOG_IDENTIFIER=fota-agent`, `TARGET`, and each event field
//! upper-cased (`firmware_version` → `FIRMWARE_VERSION`, `step` → `STEP`,
//! `percent`, `outcome`, `error`; the code base's `device` field is written as
//! `DEVICE_ID`). An entry with an `OUTCOME` of `success`, `failed` or `canceled`
//! also carries that outcome's fixed `MESSAGE_ID`, so
//! `journalctl MESSAGE_ID=<id>` lists every update result of that kind.
//!
//! `FOTA_AGENT_JOURNAL_SOCKET=<path>` forces journald logging to another socket
//! (tests run a fake journald there).
//!
//! The native protocol is written here rather than with `tracing-journald`: that
//! crate's socket path is fixed (a test could not inject a fake journald) and it
//! prefixes or passes through field names as they are, where we map `device` to
//! `DEVICE_ID` and add `MESSAGE_ID` by outcome; the protocol itself is ~50 lines.

use std::fmt::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::Context;

use crate::progress::Outcome;

/// `MESSAGE_ID` of every successful update's journal entry.
pub const MESSAGE_ID_SUCCESS: &str = "1c1dcf88416545298baaa85946b0730f";
/// `MESSAGE_ID` of every failed update's journal entry.
pub const MESSAGE_ID_FAILED: &str = "280af67a78ca49329fb3fe6bed755820";
/// `MESSAGE_ID` of every canceled update's journal entry.
pub const MESSAGE_ID_CANCELED: &str = "611da7611ec8480eaac58186c660bbdb";

/// The journald socket systemd provides.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Environment variable that points journald logging at another socket.
pub const JOURNAL_SOCKET_ENV: &str = "FOTA_AGENT_JOURNAL_SOCKET";

/// The outcome's name in logs, journal fields and JSON.
pub fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::Failed(_) => "failed",
        Outcome::Canceled => "canceled",
    }
}

/// The fixed `MESSAGE_ID` of an outcome name.
pub fn message_id(outcome: &str) -> Option<&'static str> {
    match outcome {
        "success" => Some(MESSAGE_ID_SUCCESS),
        "failed" => Some(MESSAGE_ID_FAILED),
        "canceled" => Some(MESSAGE_ID_CANCELED),
        _ => None,
    }
}

/// Where logs go: the journald socket when the agent runs under systemd with
/// stderr connected to the journal (or [`JOURNAL_SOCKET_ENV`] says so), else
/// `None` (stderr).
pub fn journal_target() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(JOURNAL_SOCKET_ENV) {
        return Some(PathBuf::from(path));
    }
    let stream = std::env::var("JOURNAL_STREAM").ok()?;
    let (dev, ino) = stream.split_once(':')?;
    use std::os::unix::fs::MetadataExt;
    let stderr = std::fs::metadata("/proc/self/fd/2").ok()?;
    let socket = Path::new(JOURNAL_SOCKET);
    (dev.parse() == Ok(stderr.dev()) && ino.parse() == Ok(stderr.ino()) && socket.exists())
        .then(|| socket.to_path_buf())
}

/// The level filter `RUST_LOG` names: `level`, `target=level` or a comma-separated
/// list of those (`info,fota_agent::download=debug`); `info` when unset or empty.
/// `Targets` rather than `EnvFilter`: the same directives without regex in the binary.
pub fn filter(rust_log: Option<&str>) -> Result<Targets, String> {
    let default = Targets::new().with_default(LevelFilter::INFO);
    match rust_log.map(str::trim) {
        None | Some("") => Ok(default),
        Some(text) => text
            .parse::<Targets>()
            .map_err(|e| format!("RUST_LOG={text:?}: {e}; logging at info")),
    }
}

/// Installs the global subscriber: journald or stderr (see the module doc);
/// `RUST_LOG` overrides the default `info` level (a malformed one is reported and
/// `info` used).
pub fn init() {
    use tracing_subscriber::prelude::*;
    let rust_log = std::env::var("RUST_LOG").ok();
    let (targets, bad) = match filter(rust_log.as_deref()) {
        Ok(targets) => (targets, None),
        Err(e) => (Targets::new().with_default(LevelFilter::INFO), Some(e)),
    };
    let filter = || targets.clone();
    let journald = journal_target().and_then(|path| JournaldLayer::new(&path).ok());
    match journald {
        Some(layer) => tracing_subscriber::registry()
            .with(layer.with_filter(filter()))
            .init(),
        None => tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_target(false)
                    .with_filter(filter()),
            )
            .init(),
    }
    if let Some(e) = bad {
        tracing::warn!("{e}");
    }
}

/// A `tracing` layer writing journald's native protocol.
pub struct JournaldLayer {
    socket: UnixDatagram,
    path: PathBuf,
}

impl JournaldLayer {
    pub fn new(path: &Path) -> std::io::Result<JournaldLayer> {
        Ok(JournaldLayer {
            socket: UnixDatagram::unbound()?,
            path: path.to_path_buf(),
        })
    }
}

/// Collects an event's fields as journal fields.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.add(field.name(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.add(field.name(), format!("{value:?}"));
    }
}

impl Fields {
    fn add(&mut self, name: &str, value: String) {
        if name == "message" {
            self.message = value;
            return;
        }
        let name = match name {
            "device" => "DEVICE_ID".to_string(),
            other => journal_name(other),
        };
        if !name.is_empty() {
            self.fields.push((name, value));
        }
    }
}

/// A valid journal field name: `A-Z0-9_`, not starting with `_` or a digit.
fn journal_name(name: &str) -> String {
    let upper: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' | '_' => c,
            _ => '_',
        })
        .collect();
    upper
        .trim_start_matches(|c: char| c == '_' || c.is_ascii_digit())
        .to_string()
}

/// Appends one field in the native protocol's encoding.
fn put(buf: &mut Vec<u8>, name: &str, value: &str) {
    buf.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value.as_bytes());
    buf.push(b'\n');
}

fn priority(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "6",
        _ => "7",
    }
}

/// The journal datagram of one entry.
pub fn encode(level: &Level, target: &str, message: &str, fields: &[(String, String)]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(256);
    put(&mut buf, "MESSAGE", message);
    put(&mut buf, "PRIORITY", priority(level));
    put(&mut buf, "SYSLOG_IDENTIFIER", "fota-agent");
    put(&mut buf, "TARGET", target);
    let mut has_id = false;
    for (name, value) in fields {
        has_id |= name == "MESSAGE_ID";
        put(&mut buf, name, value);
    }
    if !has_id
        && let Some(id) = fields
            .iter()
            .find(|(n, _)| n == "OUTCOME")
            .and_then(|(_, v)| message_id(v))
    {
        put(&mut buf, "MESSAGE_ID", id);
    }
    buf
}

impl<S: Subscriber> Layer<S> for JournaldLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let meta = event.metadata();
        let datagram = encode(meta.level(), meta.target(), &fields.message, &fields.fields);
        if let Err(e) = self.socket.send_to(&datagram, &self.path) {
            // Never lose a line: fall back to stderr.
            let mut line = format!("{} {}", meta.level(), fields.message);
            for (k, v) in &fields.fields {
                let _ = write!(line, " {k}={v}");
            }
            eprintln!("{line} (journald {}: {e})", self.path.display());
        }
    }
}

/// Parses native-protocol datagrams back into fields (for tests and tools).
pub fn decode(mut datagram: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    while !datagram.is_empty() {
        let Some(nl) = datagram.iter().position(|&b| b == b'\n') else {
            break;
        };
        let line = &datagram[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.push((
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            ));
            datagram = &datagram[nl + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let rest = &datagram[nl + 1..];
            if rest.len() < 8 {
                break;
            }
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap_or([0; 8])) as usize;
            let Some(value) = rest.get(8..8 + len) else {
                break;
            };
            out.push((name, String::from_utf8_lossy(value).into_owned()));
            datagram = rest.get(8 + len + 1..).unwrap_or(&[]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_fields_and_adds_the_outcome_message_id() {
        let fields = vec![
            ("DEVICE_ID".to_string(), "esp-1".to_string()),
            ("OUTCOME".to_string(), "failed".to_string()),
            ("ERROR".to_string(), "line one\nline two".to_string()),
        ];
        let d = encode(&Level::ERROR, "fota", "update failed", &fields);
        let back = decode(&d);
        let get = |k: &str| back.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MESSAGE"), Some("update failed"));
        assert_eq!(get("PRIORITY"), Some("3"));
        assert_eq!(get("DEVICE_ID"), Some("esp-1"));
        assert_eq!(get("ERROR"), Some("line one\nline two"));
        assert_eq!(get("MESSAGE_ID"), Some(MESSAGE_ID_FAILED));
    }

    #[test]
    fn rust_log_directives_set_levels_per_target() {
        use tracing::Level;
        let f = filter(Some("warn,fota_agent::download=debug")).unwrap();
        assert!(f.would_enable("fota_agent::download::stream", &Level::DEBUG));
        assert!(!f.would_enable("fota_agent::engine", &Level::INFO));
        assert!(f.would_enable("fota_agent::engine", &Level::WARN));
        let f = filter(Some("debug")).unwrap();
        assert!(f.would_enable("anything", &Level::DEBUG));
        let f = filter(None).unwrap();
        assert!(f.would_enable("fota_agent", &Level::INFO));
        assert!(!f.would_enable("fota_agent", &Level::DEBUG));
        let err = filter(Some("fota_agent=loud")).unwrap_err();
        assert!(err.contains("RUST_LOG=\"fota_agent=loud\""), "{err}");
    }

    #[test]
    fn field_names_are_sanitised() {
        assert_eq!(journal_name("firmware_version"), "FIRMWARE_VERSION");
        assert_eq!(journal_name("_x.y"), "X_Y");
        assert_eq!(journal_name("9a"), "A");
    }

    #[test]
    fn message_ids_are_distinct_uuids() {
        let ids = [MESSAGE_ID_SUCCESS, MESSAGE_ID_FAILED, MESSAGE_ID_CANCELED];
        for id in ids {
            assert_eq!(id.len(), 32);
            assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2]);
    }
}
