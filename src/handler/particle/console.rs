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

/// Reads text until `done(text)` holds; `None` when `timeout` passed first.
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

/// Opens `port` at `listen_baud` (which puts the device in listening mode),
/// waiting up to `within` for the port to be there (it is away for a moment
/// while the device resets), then switches to `console_baud`.
pub async fn open_listening(
    port: &Path,
    listen_baud: u32,
    console_baud: u32,
    within: Duration,
) -> Result<SerialLink, HandlerError> {
    let deadline = Instant::now() + within;
    let mut link = loop {
        match SerialLink::open(port, listen_baud) {
            Ok(link) => break link,
            Err(e) if Instant::now() >= deadline => {
                return Err(HandlerError::failed(
                    "particle open",
                    format!("{e} (waited {})", humantime::format_duration(within)),
                ));
            }
            Err(_) => tokio::time::sleep(PORT_POLL).await,
        }
    };
    if console_baud != listen_baud {
        link.set_baud(console_baud)
            .map_err(|e| HandlerError::failed("particle open", e.to_string()))?;
    }
    Ok(link)
}

/// Asks `s` until the module info comes (listening mode may take a moment to
/// start after the port opened), within `timeout`.
pub async fn module_info<L: Link>(
    link: &mut L,
    timeout: Duration,
) -> Result<ModuleInfo, HandlerError> {
    let step = "particle module info (s)";
    let io = |e: std::io::Error| HandlerError::io(step, e);
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        send(link, b's').await.map_err(io)?;
        let wait = (deadline - Instant::now()).min(Duration::from_secs(1));
        let (done, text) = read_until(link, wait, |t| {
            t.lines().any(|l| l.trim().starts_with('{') && l.ends_with('\r'))
        })
        .await
        .map_err(io)?;
        if done {
            return parse_module_info(&text).map_err(|m| HandlerError::failed(step, m));
        }
        last = text;
    }
    Err(HandlerError::failed(
        step,
        format!(
            "no answer within {} (is it a Particle device in listening mode?){}",
            humantime::format_duration(timeout),
            if last.is_empty() {
                String::new()
            } else {
                format!("; it said {:?}", preview(&last))
            }
        ),
    ))
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
