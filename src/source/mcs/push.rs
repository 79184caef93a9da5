//! The MCS command channel: one long-lived TCP connection per MCS device to the
//! command server, a heartbeat on it, and validation of every firmware push line
//! it delivers.
//!
//! What MCS documents (API reference "getConnection", "Command server format"):
//! the device asks `GET devices/{deviceId}/connections` for the command server's
//! `ip` and `port`, opens a TCP connection, and sends the heartbeat
//! `deviceId,deviceKey,timestamp` to be identified, then again at least every 120
//! seconds or the server disconnects it. Commands arrive as comma-separated lines
//! starting `deviceId,deviceKey,timestamp`; a firmware push (the Push button on
//! the device's firmware tab) is `deviceId,deviceKey,timestamp,FOTA,version,MD5,URL`.
//!
//! Messages arrive one per TCP write without a line ending (see [`framing`]);
//! spaces around fields are dropped (MCS's own examples write
//! `deviceId, deviceKey, …`), and echoed heartbeats (three fields) ignored. The timestamp
//! is Unix time in milliseconds (MCS data points use milliseconds) — a value below
//! 10^11 is taken as seconds; the agent's heartbeat sends milliseconds, newline
//! terminated. Data channel commands (`…,dataChnId,value`) on the same connection
//! are ignored. The URL is the last field and may itself contain commas.
//!
//! A line is accepted only when every field checks out: the device id is the
//! connection's, the key matches (compared in constant time), the timestamp is
//! neither older than `max_push_age` nor more than [`MAX_CLOCK_SKEW`] ahead nor
//! at or before the last accepted push of that device (replay), the version is
//! valid under the device's scheme and newer than what it runs (unless
//! `only_newer` is off), the MD5 is 32 hex digits (or `null`: none), and the URL is https (or http
//! when `https_only` is off) with a host. Anything else is logged with its reason
//! — never with the key or the raw line — and ignored; the connection stays up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::framing::{self, Framer};
use super::wire::{self, FOTA, PushFields};
use crate::checksum::{Checksum, ChecksumAlgorithm};
use crate::config::McsDevice;
use crate::schedule;
use crate::version::{VersionScheme, check_upgrade};

/// How far a push's timestamp may be ahead of the gateway's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// Longest message accepted from the command server; longer ones are dropped.
pub const MAX_LINE: usize = 8 * 1024;
/// Reconnect backoff: first step, and its ceiling.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5 * 60);
/// The shortest wait before a reconnect (full jitter may draw zero).
const RECONNECT_FLOOR: Duration = Duration::from_millis(100);
/// A connection that lived this long resets the backoff.
const STABLE: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A validated firmware push.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Push {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub version: String,
    /// Lowercase hex; `None` when the server sent `null` (its own example does).
    pub md5: Option<String>,
    pub url: String,
}

/// Why a line did not become a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Not a firmware push (a data channel command, an echo): ignored quietly.
    NotFota(String),
    /// A push line that fails validation: logged as a warning.
    Refused(String),
}

/// What a push line is checked against.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub device: &'a McsDevice,
    pub scheme: VersionScheme,
    pub only_newer: bool,
    /// The version the target device runs, when known.
    pub current: Option<&'a str>,
    /// Timestamp (ms) of the last push accepted for this MCS device.
    pub last_accepted_ms: Option<u64>,
    pub now_ms: u64,
    pub max_age: Duration,
    pub https_only: bool,
}

/// Splits a line into the push fields (the URL, last, keeps any commas).
pub fn split(line: &str) -> Result<PushFields<'_>, LineError> {
    let line = line.trim_end_matches(['\r', '\n']);
    let fields: Vec<&str> = line.splitn(7, ',').map(str::trim).collect();
    match fields.get(3) {
        Some(kind) if *kind == FOTA => {}
        Some(_) => return Err(LineError::NotFota("a data channel command".into())),
        None => return Err(LineError::NotFota(format!("{} field(s)", fields.len()))),
    }
    let [device_id, device_key, timestamp, kind, version, md5, url] = fields[..] else {
        return Err(LineError::Refused(format!(
            "expected 7 fields (deviceId,deviceKey,timestamp,FOTA,version,MD5,URL), got {}",
            fields.len()
        )));
    };
    Ok(PushFields {
        device_id,
        device_key,
        timestamp,
        kind,
        version,
        md5,
        url,
    })
}

/// Validates one line from the command server.
pub fn validate(line: &str, expect: &Expect<'_>) -> Result<Push, LineError> {
    let f = split(line)?;
    let refuse = |m: String| Err(LineError::Refused(m));
    if f.device_id != expect.device.device_id {
        return refuse(format!(
            "for device id {}, this connection is {}",
            shown(f.device_id),
            expect.device.device_id
        ));
    }
    if !crate::secret_eq::constant_time_eq(
        f.device_key.as_bytes(),
        expect.device.device_key.expose().as_bytes(),
    ) {
        return refuse("wrong device key".into());
    }
    let timestamp_ms = check_timestamp(f.timestamp, expect)?;
    check_version(f.version, expect)?;
    let md5 = match Checksum::new(ChecksumAlgorithm::Md5, f.md5) {
        _ if wire::is_null(f.md5) => None,
        Ok(c) if f.md5.len() == 32 => Some(c.hex().to_string()),
        _ => return refuse(format!("MD5 {} is not 32 hex digits", shown(f.md5))),
    };
    check_url(f.url, expect)?;
    Ok(Push {
        timestamp_ms,
        version: f.version.to_string(),
        md5,
        url: f.url.to_string(),
    })
}

/// The push's time in milliseconds (seconds are accepted too): neither stale,
/// nor in the future beyond the clock skew, nor replayed.
fn check_timestamp(timestamp: &str, expect: &Expect<'_>) -> Result<u64, LineError> {
    let refuse = |m: String| Err(LineError::Refused(m));
    let Ok(raw_ts) = timestamp.parse::<u64>() else {
        return refuse(format!("timestamp {} is not a number", shown(timestamp)));
    };
    let timestamp_ms = if raw_ts < 100_000_000_000 {
        raw_ts.saturating_mul(1000)
    } else {
        raw_ts
    };
    let max_age = expect.max_age.as_millis() as u64;
    if timestamp_ms.saturating_add(max_age) < expect.now_ms {
        return refuse(format!(
            "stale: pushed {} s ago (max_push_age {})",
            (expect.now_ms - timestamp_ms) / 1000,
            humantime::format_duration(expect.max_age)
        ));
    }
    if timestamp_ms > expect.now_ms + MAX_CLOCK_SKEW.as_millis() as u64 {
        return refuse(format!(
            "timestamp {} s in the future",
            (timestamp_ms - expect.now_ms) / 1000
        ));
    }
    if let Some(last) = expect.last_accepted_ms
        && timestamp_ms <= last
    {
        return refuse(format!(
            "replayed: timestamp {timestamp_ms} is not after the last accepted push ({last})"
        ));
    }
    Ok(timestamp_ms)
}

/// A version of the device's scheme that the device may take.
fn check_version(version: &str, expect: &Expect<'_>) -> Result<(), LineError> {
    let refuse = |m: String| Err(LineError::Refused(m));
    if let Err(e) = crate::source::server_text::version(version) {
        return refuse(e.to_string());
    }
    if let Err(e) = expect.scheme.validate(version) {
        return refuse(format!("version {}: {e}", shown(version)));
    }
    if let Some(current) = expect.current
        && let Err(e) = check_upgrade(expect.scheme, current, version, None, expect.only_newer)
    {
        return refuse(format!("version {}: {e}", shown(version)));
    }
    Ok(())
}

/// An http(s) URL with a host (https only with `https_only`).
fn check_url(url: &str, expect: &Expect<'_>) -> Result<(), LineError> {
    let refuse = |m: String| Err(LineError::Refused(m));
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return refuse(format!("URL {}: {e}", shown(url))),
    };
    let scheme_ok = match parsed.scheme() {
        "https" => true,
        "http" => !expect.https_only,
        _ => false,
    };
    if !scheme_ok {
        let allowed = if expect.https_only {
            "https (https_only is set)"
        } else {
            "http or https"
        };
        return refuse(format!(
            "URL scheme {:?} not allowed (allowed: {allowed})",
            parsed.scheme()
        ));
    }
    if parsed.host().is_none() {
        return refuse("URL has no host".into());
    }
    Ok(())
}

/// A field from the wire as it may appear in a log: escaped and cut short.
fn shown(field: &str) -> String {
    let cut: String = field.chars().take(80).collect();
    let more = if cut.len() < field.len() { "…" } else { "" };
    format!("{:?}{more}", cut)
}

/// What the channel needs from the source.
pub trait LineSink: Send + Sync + 'static {
    /// Where the command server is: the configured address or the REST answer.
    fn address(
        &self,
        device: &McsDevice,
    ) -> impl std::future::Future<Output = Result<String, String>> + Send;
    /// One line received for `device`.
    fn line(&self, device: &McsDevice, line: &str);
}

/// Keeps the device's command channel open until `shutdown`: connect, heartbeat
/// every `heartbeat`, hand every line to `sink`; on any failure reconnect after
/// a full-jitter exponential backoff (so a fleet that lost the server does not
/// come back in waves), reset once a connection has been stable.
pub async fn run_channel<S: LineSink>(
    sink: Arc<S>,
    device: McsDevice,
    heartbeat: Duration,
    shutdown: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = session(&*sink, &device, heartbeat) => r,
        };
        let problem = match result {
            Ok(()) => "the command server closed the connection".to_string(),
            Err(e) => e,
        };
        if started.elapsed() >= STABLE {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let wait = schedule::backoff(failures, BACKOFF_MIN, BACKOFF_MAX, schedule::random())
            .max(RECONNECT_FLOOR);
        tracing::warn!(mcs_device = %device.device_id,
            "command channel: {problem}; reconnecting in {}",
            humantime::format_duration(Duration::from_millis(wait.as_millis() as u64)));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One connection, until it fails or is closed (`Ok`).
async fn session<S: LineSink>(
    sink: &S,
    device: &McsDevice,
    heartbeat: Duration,
) -> Result<(), String> {
    let address = sink.address(device).await?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&address))
        .await
        .map_err(|_| format!("connecting to {address}: timed out"))?
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    tracing::info!(mcs_device = %device.device_id, "command channel connected to {address}");
    let mut beat = tokio::time::interval(heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut framer = Framer::new(&device.device_id, device.device_key.expose(), MAX_LINE);
    let mut chunk = [0u8; 4096];
    // When the buffered bytes count as a whole message (the server went quiet).
    let mut quiet_at: Option<tokio::time::Instant> = None;
    loop {
        let quiet = async {
            match quiet_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let framed = tokio::select! {
            _ = beat.tick() => {
                let line = wire::heartbeat(&device.device_id, device.device_key.expose(), crate::store::now_secs() * 1000);
                writer.write_all(line.as_bytes()).await
                    .map_err(|e| format!("sending the heartbeat: {e}"))?;
                continue;
            }
            _ = quiet => framer.flush(),
            n = reader.read(&mut chunk) => {
                let n = n.map_err(|e| format!("reading: {e}"))?;
                if n == 0 {
                    return Ok(());
                }
                framer.push(&chunk[..n])
            }
        };
        quiet_at = framer
            .pending()
            .then(|| tokio::time::Instant::now() + framing::QUIET);
        if framed.oversized {
            tracing::warn!(mcs_device = %device.device_id,
                "command channel: ignoring a message longer than {MAX_LINE} bytes");
        }
        for message in framed.messages {
            match std::str::from_utf8(&message) {
                Ok(text) => sink.line(device, text),
                Err(_) => tracing::warn!(mcs_device = %device.device_id,
                    "command channel: ignoring a message that is not UTF-8"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> McsDevice {
        McsDevice {
            agent_device: "gw".into(),
            device_id: "Dev1".into(),
            device_key: "Key1".into(),
        }
    }

    const NOW: u64 = 1_700_000_000_000;
    const MD5: &str = "0123456789abcdef0123456789ABCDEF";

    fn expect(d: &McsDevice) -> Expect<'_> {
        Expect {
            device: d,
            scheme: VersionScheme::Esh,
            only_newer: true,
            current: Some("1.0"),
            last_accepted_ms: Some(NOW - 60_000),
            now_ms: NOW,
            max_age: Duration::from_secs(600),
            https_only: false,
        }
    }

    fn line(id: &str, key: &str, ts: u64, version: &str, md5: &str, url: &str) -> String {
        format!("{id},{key},{ts},FOTA,{version},{md5},{url}\n")
    }

    #[test]
    fn a_valid_push_is_accepted_with_spaces_and_crlf() {
        let d = device();
        let p = validate(
            &format!("Dev1, Key1, {NOW}, FOTA, 2.0, {MD5}, https://h/f.bin?a=1,2\r\n"),
            &expect(&d),
        )
        .unwrap();
        assert_eq!(p.version, "2.0");
        assert_eq!(p.md5, Some(MD5.to_ascii_lowercase()));
        assert_eq!(p.url, "https://h/f.bin?a=1,2");
        assert_eq!(p.timestamp_ms, NOW);
        // MediaTek's own example: the MD5 is the literal `null`.
        let p = validate(
            &line("Dev1", "Key1", NOW, "2.0", "null", "https://h/f"),
            &expect(&d),
        )
        .unwrap();
        assert_eq!(p.md5, None);
        // Seconds are taken as seconds.
        let p = validate(
            &line("Dev1", "Key1", NOW / 1000, "2.0", MD5, "http://h/f"),
            &expect(&d),
        )
        .unwrap();
        assert_eq!(p.timestamp_ms, NOW);
    }

    #[test]
    fn every_field_is_checked() {
        let d = device();
        let e = expect(&d);
        let cases: Vec<(String, &str)> = vec![
            (
                line("Dev2", "Key1", NOW, "2.0", MD5, "https://h/f"),
                "for device id",
            ),
            (
                line("Dev1", "Key2", NOW, "2.0", MD5, "https://h/f"),
                "wrong device key",
            ),
            (
                line("Dev1", "Key1", NOW - 601_000, "2.0", MD5, "https://h/f"),
                "stale",
            ),
            (
                line("Dev1", "Key1", NOW + 301_000, "2.0", MD5, "https://h/f"),
                "timestamp ",
            ),
            (
                line("Dev1", "Key1", NOW - 60_000, "2.0", MD5, "https://h/f"),
                "replayed",
            ),
            ("Dev1,Key1,x,FOTA,2.0,a,b\n".into(), "timestamp \"x\""),
            (
                line("Dev1", "Key1", NOW, "", MD5, "https://h/f"),
                "version: empty",
            ),
            (
                line("Dev1", "Key1", NOW, "1.0", MD5, "https://h/f"),
                "version \"1.0\"",
            ),
            (
                line("Dev1", "Key1", NOW, "0.9", MD5, "https://h/f"),
                "version \"0.9\"",
            ),
            (
                line("Dev1", "Key1", NOW, "2.0", "abc", "https://h/f"),
                "MD5",
            ),
            (
                line("Dev1", "Key1", NOW, "2.0", &"g".repeat(32), "https://h/f"),
                "MD5",
            ),
            (
                line("Dev1", "Key1", NOW, "2.0", MD5, "ftp://h/f"),
                "URL scheme",
            ),
            (line("Dev1", "Key1", NOW, "2.0", MD5, "not a url"), "URL"),
            ("Dev1,Key1,1,FOTA,2.0\n".into(), "expected 7 fields"),
        ];
        for (l, want) in cases {
            match validate(&l, &e) {
                Err(LineError::Refused(r)) => assert!(r.contains(want), "{l:?}: {r}"),
                other => panic!("{l:?}: {other:?}"),
            }
        }
        // The key never appears in a refusal.
        let Err(LineError::Refused(r)) = validate(
            &line("Dev1", "Key1", NOW, "2.0", "short", "https://h/f"),
            &e,
        ) else {
            panic!()
        };
        assert!(!r.contains("Key1"));
    }

    #[test]
    fn https_only_refuses_http() {
        let d = device();
        let mut e = expect(&d);
        e.https_only = true;
        let r = validate(&line("Dev1", "Key1", NOW, "2.0", MD5, "http://h/f"), &e);
        assert!(matches!(r, Err(LineError::Refused(m)) if m.contains("https_only")));
    }

    #[test]
    fn other_commands_and_unknown_versions() {
        let d = device();
        let e = expect(&d);
        assert!(matches!(
            validate("Dev1,Key1,1,switch01,1\n", &e),
            Err(LineError::NotFota(_))
        ));
        assert!(matches!(
            validate("Dev1,Key1,1\n", &e),
            Err(LineError::NotFota(_))
        ));
        let mut e = expect(&d);
        e.current = None;
        e.last_accepted_ms = None;
        assert!(validate(&line("Dev1", "Key1", NOW, "0.1", MD5, "https://h/f"), &e).is_ok());
    }
}
