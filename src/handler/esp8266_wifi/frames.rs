//! The cloud protocol's messages, as IoT_Demo (`user_esp_platform.c`) writes and
//! reads them. The device sends one JSON text ending in `\n` per message; it
//! reads the server's with `strstr` on each TCP read, so every server message
//! keeps the exact spacing the firmware searches for: `"action": "sys_upgrade"`,
//! `"version": "<15 characters>"` (copied from 12 characters after `"version":`),
//! `"nonce": N` followed by `,` and `"activate_status": 1`.

use serde_json::Value;

/// What a device said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceMessage {
    /// First contact of a device not yet activated; carries its version.
    Activate {
        nonce: i64,
        rom_version: Option<String>,
    },
    /// First message of an activated device on each connection.
    Identify,
    /// The 50 s beacon; two unanswered ones and the device reconnects.
    Ping,
    /// `/v1/messages/`: the upgrade library's verdict on the downloaded bin.
    Upgrade {
        success: bool,
        pre_rom_version: String,
        rom_version: String,
    },
    /// `{"status": 200, "nonce": N, ...}`: the answer to a server request.
    Ack { nonce: i64 },
    /// Anything else (datapoints, timers): answered with nothing.
    Other,
}

/// One device message and the key it was sent with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// From `"meta": {"Authorization": "token <key>"}` (RPC acks carry none).
    pub key: Option<String>,
    pub message: DeviceMessage,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not a JSON object: {0}")]
    Json(String),
    #[error("{0}: missing or malformed {1:?}")]
    Field(&'static str, &'static str),
}

/// Parses one line a device sent.
pub fn parse(line: &str) -> Result<Frame, FrameError> {
    let v: Value = serde_json::from_str(line).map_err(|e| FrameError::Json(e.to_string()))?;
    if !v.is_object() {
        return Err(FrameError::Json("not an object".into()));
    }
    let key = v
        .pointer("/meta/Authorization")
        .and_then(Value::as_str)
        .and_then(|a| a.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("token"))
        .map(|(_, key)| key.trim().to_string());
    let nonce = v.get("nonce").and_then(Value::as_i64);
    let text = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    let message = match v.get("path").and_then(Value::as_str) {
        Some("/v1/device/activate/") => DeviceMessage::Activate {
            nonce: nonce.ok_or(FrameError::Field("activate", "nonce"))?,
            rom_version: text("/body/rom_version"),
        },
        Some("/v1/device/identify") => DeviceMessage::Identify,
        Some("/v1/ping/") => DeviceMessage::Ping,
        Some("/v1/messages/") => {
            let success = match text("/get/action").as_deref() {
                Some("device_upgrade_success") => true,
                Some("device_upgrade_failed") => false,
                _ => {
                    return Ok(Frame {
                        key,
                        message: DeviceMessage::Other,
                    });
                }
            };
            DeviceMessage::Upgrade {
                success,
                pre_rom_version: text("/body/pre_rom_version")
                    .ok_or(FrameError::Field("upgrade message", "pre_rom_version"))?,
                rom_version: text("/body/rom_version")
                    .ok_or(FrameError::Field("upgrade message", "rom_version"))?,
            }
        }
        Some(_) => DeviceMessage::Other,
        None => match (v.get("status"), nonce) {
            (Some(_), Some(nonce)) => DeviceMessage::Ack { nonce },
            _ => DeviceMessage::Other,
        },
    };
    Ok(Frame { key, message })
}

/// A nonce as the firmware makes its own: 31 random bits.
pub fn nonce() -> i64 {
    i64::from(fastrand::u32(..) & 0x7FFF_FFFF)
}

/// The RPC that starts a download of `version` (exactly 15 characters).
pub fn sys_upgrade(version: &str, nonce: i64) -> String {
    format!(
        "{{\"deliver_to_device\": true, \"get\": {{\"action\": \"sys_upgrade\", \
         \"version\": \"{version}\"}}, \"meta\": {{}}, \"method\": \"GET\", \
         \"nonce\": {nonce}, \"path\": \"/v1/device/rpc/\"}}\n"
    )
}

/// The RPC that reboots the device into the partition it just wrote.
pub fn sys_reboot(nonce: i64) -> String {
    format!(
        "{{\"deliver_to_device\": true, \"get\": {{\"action\": \"sys_reboot\"}}, \
         \"meta\": {{}}, \"method\": \"GET\", \"nonce\": {nonce}, \"path\": \"/v1/device/rpc/\"}}\n"
    )
}

/// Activation accepted; the nonce must be the one of the device's request.
pub fn activated(nonce: i64) -> String {
    format!("{{\"device\": {{\"activate_status\": 1}}, \"nonce\": {nonce}, \"status\": 200}}\n")
}

pub const PING_SUCCESS: &str = "{\"status\": 200, \"message\": \"ping success\"}\n";
pub const MESSAGE_SUCCESS: &str = "{\"status\": 200, \"message\": \"send message success\"}\n";
pub const IDENTIFIED: &str = "{\"status\": 200, \"message\": \"identify success\"}\n";

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn reads_the_iot_demo_frames() {
        let activate = format!(
            "{{\"nonce\": 77,\"path\": \"/v1/device/activate/\", \"method\": \"POST\", \"body\": \
             {{\"encrypt_method\": \"PLAIN\", \"token\": \"t\", \"bssid\": \"aa:bb:cc:dd:ee:ff\",\
             \"rom_version\":\"v1.0.0t45772(a)\"}}, \"meta\": {{\"Authorization\": \"token {KEY}\"}}}}"
        );
        let f = parse(&activate).unwrap();
        assert_eq!(f.key.as_deref(), Some(KEY));
        assert_eq!(
            f.message,
            DeviceMessage::Activate {
                nonce: 77,
                rom_version: Some("v1.0.0t45772(a)".into())
            }
        );
        let up = format!(
            "{{\"path\": \"/v1/messages/\", \"method\": \"POST\", \"meta\": {{\"Authorization\": \
             \"token {KEY}\"}},\"get\":{{\"action\":\"device_upgrade_failed\"}},\"body\":\
             {{\"pre_rom_version\":\"a\",\"rom_version\":\"b\"}}}}"
        );
        assert_eq!(
            parse(&up).unwrap().message,
            DeviceMessage::Upgrade {
                success: false,
                pre_rom_version: "a".into(),
                rom_version: "b".into()
            }
        );
        let ack = "{\"status\": 200, \"nonce\": 5, \"deliver_to_device\": true}";
        assert_eq!(
            parse(ack).unwrap(),
            Frame {
                key: None,
                message: DeviceMessage::Ack { nonce: 5 }
            }
        );
        assert!(parse("[1]").is_err() && parse("{\"nonce\": 1").is_err());
        let no_nonce = "{\"path\": \"/v1/device/activate/\"}";
        assert_eq!(parse(no_nonce), Err(FrameError::Field("activate", "nonce")));
    }

    #[test]
    fn server_frames_keep_the_offsets_the_firmware_reads() {
        let m = sys_upgrade("v1.0.8t45772(a)", 684196666);
        let at = m.find("\"version\":").unwrap();
        assert_eq!(&m[at + 12..at + 27], "v1.0.8t45772(a)");
        assert!(m.contains("\"action\": \"sys_upgrade\"") && m.contains("\"nonce\": 684196666,"));
        let a = activated(9);
        let at = a.find("\"activate_status\": ").unwrap();
        assert_eq!(&a[at + 19..at + 20], "1");
        assert!(sys_reboot(1).contains("\"action\": \"sys_reboot\""));
    }
}
