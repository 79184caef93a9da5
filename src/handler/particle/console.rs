//! The listening-mode console of a Particle device over USB serial
//! (device-os `system/src/system_setup.cpp`): one-letter commands answered in
//! text. `s` prints the module info JSON (`system_info.cpp`
//! `system_module_info`): `{"p":<platform>,"m":[{"s","l","vc","vv","u","f",
//! "n","v","d"}…]}`, where only the user part (`"f":"u"`) carries `u`, the
//! SHA-256 from its suffix in uppercase hex. `v` prints `system firmware
//! version: 5.9.0`; `x` leaves listening mode.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::handler::HandlerError;
use crate::serial::{Link, SerialLink, read_byte};

/// Longest answer kept (module info of a device with many modules is ~2 KiB).
const MAX_ANSWER: usize = 16 * 1024;
/// Gap between two looks for a port that is away (the device resetting).
const PORT_POLL: Duration = Duration::from_millis(100);

/// What `s` says about the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    pub platform_id: u16,
    /// The user part's `u` (uppercase SHA-256), when the device has one.
    pub user_sha: Option<String>,
}

#[derive(Deserialize)]
struct RawInfo {
    p: u16,
    m: Vec<RawModule>,
}

#[derive(Deserialize)]
struct RawModule {
    f: String,
    #[serde(default)]
    u: Option<String>,
}

/// Parses the answer to `s`: the first line that starts with `{`.
pub fn parse_module_info(text: &str) -> Result<ModuleInfo, String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("no module info in {:?}", preview(text)))?;
    let raw: RawInfo = serde_json::from_str(line)
        .map_err(|e| format!("module info is not valid JSON ({e}): {:?}", preview(line)))?;
    let user_sha = raw
        .m
        .into_iter()
        .find(|m| m.f == "u")
        .and_then(|m| m.u)
        .filter(|u| u.len() == 64 && u.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|u| u.to_ascii_uppercase());
    Ok(ModuleInfo {
        platform_id: raw.p,
        user_sha,
    })
}

/// The start of `text`, for messages.
pub fn preview(text: &str) -> String {
    text.chars().take(120).collect()
}

/// `; it said "…"` for what the device said instead, or nothing.
pub fn said(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("; it said {:?}", preview(text))
    }
}

/// Reads text until `done(text)` holds: (whether it did, the text read).
pub async fn read_until<L: Link>(
    link: &mut L,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> std::io::Result<(bool, String)> {
    let deadline = Instant::now() + timeout;
    let mut bytes = Vec::new();
    loop {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if done(&text) {
            return Ok((true, text));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match read_byte(link, left).await? {
            Some(b) if bytes.len() < MAX_ANSWER => bytes.push(b),
            Some(_) => {}
            None => return Ok((false, text)),
        }
    }
}

/// Sends the one-letter command `cmd`.
pub async fn send<L: Link>(link: &mut L, cmd: u8) -> std::io::Result<()> {
    link.write_all(&[cmd]).await?;
    link.flush().await
}

/// One look for the module info: how long `s` may take to be answered.
const ATTEMPT: Duration = Duration::from_secs(1);

/// Opens `port` at `baud` (28800 puts the device in listening mode) and reads
/// `s`. The port may be away for up to `reset_timeout` (the device resetting);
/// the device must then answer within `timeout`. An attempt without answer
/// opens the port again: each open sets the line coding anew, and so starts
/// listening mode again if the device left it (`x`) meanwhile.
pub async fn enter_listening(
    port: &Path,
    baud: u32,
    reset_timeout: Duration,
    timeout: Duration,
) -> Result<(SerialLink, ModuleInfo), HandlerError> {
    let step = "particle module info (s)";
    let mut link = open_port(port, baud, reset_timeout).await?;
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        let wait = deadline.saturating_duration_since(Instant::now()).min(ATTEMPT);
        let (done, text) = ask(&mut link, b's', wait, |t| {
            t.lines().any(|l| l.trim().starts_with('{') && l.ends_with('\r'))
        })
        .await
        .map_err(|e| HandlerError::io(step, e))?;
        if done {
            let info = parse_module_info(&text).map_err(|m| HandlerError::failed(step, m))?;
            return Ok((link, info));
        }
        if !text.is_empty() {
            last = text;
        }
        if Instant::now() >= deadline {
            break;
        }
        drop(link);
        link = open_port(port, baud, reset_timeout).await?;
    }
    Err(HandlerError::failed(
        step,
        format!(
            "no answer within {} (is it a Particle device with Device OS 5 or older?){}",
            humantime::format_duration(timeout),
            said(&last)
        ),
    ))
}

/// Sends `cmd` and reads the answer until `done` holds or `wait` passed.
async fn ask<L: Link>(
    link: &mut L,
    cmd: u8,
    wait: Duration,
    done: impl Fn(&str) -> bool,
) -> std::io::Result<(bool, String)> {
    send(link, cmd).await?;
    read_until(link, wait, done).await
}

/// Opens `port`, waiting up to `within` for it to be there.
async fn open_port(port: &Path, baud: u32, within: Duration) -> Result<SerialLink, HandlerError> {
    let deadline = Instant::now() + within;
    loop {
        match SerialLink::open(port, baud) {
            Ok(link) => return Ok(link),
            Err(e) if Instant::now() >= deadline => {
                return Err(HandlerError::failed(
                    "particle open",
                    format!("{e} (waited {})", humantime::format_duration(within)),
                ));
            }
            Err(_) => tokio::time::sleep(PORT_POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_info_of_a_device() {
        let sha = "AB".repeat(32);
        let text = format!(
            "junk\r\n{{\"p\":12,\"imei\":\"x\",\"m\":[{{\"s\":49152,\"l\":\"m\",\"vc\":30,\"vv\":30,\
             \"f\":\"b\",\"n\":\"0\",\"v\":1200,\"d\":[]}},{{\"s\":262144,\"l\":\"m\",\"vc\":30,\
             \"vv\":30,\"u\":\"{sha}\",\"f\":\"u\",\"n\":\"1\",\"v\":6,\"d\":[]}}]}}\r\n"
        );
        let info = parse_module_info(&text).unwrap();
        assert_eq!(info.platform_id, 12);
        assert_eq!(info.user_sha.as_deref(), Some(sha.as_str()));
        let err = parse_module_info("{\"p\":").unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        assert!(parse_module_info("nothing").is_err());
    }
}
