//! The MCS wire formats exactly as the device API speaks them (JSON bodies of the
//! REST resources, and the fields of a command-server line), separate from the
//! agent's domain types; `mod.rs` converts in one place.
//!
//! Documented fields (MCS API reference, `mcs-resources` on GitHub): every
//! response carries `code` and `message`; `firmwares/available` has `results`
//! with `fwid`, `name`, `description`, `version` and, with `?url=true`, `url`;
//! `firmwares/{fwId}/url` has `url`; `connections` has `ip` and `port`.
//! Assumed (not in the public reference, accepted when present): `md5` (or
//! `checksum`) and `prerequisites` (versions the device must run) on a firmware,
//! `md5` beside `url`. All other fields are ignored.

use serde::{Deserialize, Serialize};

/// `GET devices/{deviceId}/firmwares/available[?url=true]`.
#[derive(Debug, Clone, Deserialize)]
pub struct AvailableFirmwares {
    #[serde(default)]
    pub results: Vec<AvailableFirmware>,
}

/// One entry of `results`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct AvailableFirmware {
    pub fwid: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prerequisites: Option<Vec<String>>,
}

/// `GET devices/{deviceId}/firmwares/{fwId}/url`.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FirmwareUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
}

/// `PUT devices/{deviceId}/firmwares` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ReportFirmware {
    pub version: String,
}

/// `GET devices/{deviceId}/connections`. MCS documents `port` as an integer but
/// shows a string in one example; both are accepted.
#[derive(Debug, Clone, Deserialize)]
pub struct Connection {
    pub ip: String,
    pub port: PortValue,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PortValue {
    Number(u16),
    Text(String),
}

impl PortValue {
    pub fn get(&self) -> Option<u16> {
        match self {
            PortValue::Number(n) => Some(*n),
            PortValue::Text(s) => s.trim().parse().ok(),
        }
    }
}

/// `POST devices/{deviceId}/datapoints` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Datapoints {
    pub datapoints: Vec<Datapoint>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Datapoint {
    #[serde(rename = "dataChnId")]
    pub data_chn_id: String,
    /// Milliseconds since the Unix epoch: the time of the event, so that a resent
    /// point is the same point.
    pub timestamp: u64,
    pub values: DatapointValue,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct DatapointValue {
    pub value: String,
}

/// The literal in the fourth field of a firmware push line.
pub const FOTA: &str = "FOTA";

/// The fields of `deviceId,deviceKey,timestamp,FOTA,version,MD5,URL`, as text.
#[derive(Clone, PartialEq, Eq)]
pub struct PushFields<'a> {
    pub device_id: &'a str,
    pub device_key: &'a str,
    pub timestamp: &'a str,
    pub kind: &'a str,
    pub version: &'a str,
    pub md5: &'a str,
    pub url: &'a str,
}

/// The heartbeat line: `deviceId,deviceKey,timestamp` (Unix milliseconds),
/// newline terminated.
pub fn heartbeat(device_id: &str, device_key: &str, now_ms: u64) -> String {
    format!("{device_id},{device_key},{now_ms}\n")
}

/// MCS writes a missing MD5 as the literal `null` (its own push example) or
/// leaves it empty.
pub fn is_null(md5: &str) -> bool {
    md5.is_empty() || md5.eq_ignore_ascii_case("null")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_examples_parse() {
        let a: AvailableFirmwares = serde_json::from_str(
            r#"{"apiVersion":"2.8.0","code":200,"message":"Request has succeeded",
               "results":[{"fwid":"FAdJBknrDsOM","name":"hello firmware","description":null,"version":"1"},
                          {"fwid":"Fwnx3ZBxOLCK","name":"firmware_2","description":null,"version":"2"}]}"#,
        )
        .unwrap();
        assert_eq!(a.results.len(), 2);
        assert_eq!(a.results[1].version, "2");
        let u: FirmwareUrl = serde_json::from_str(
            r#"{"apiVersion":"2.8.0","code":200,"message":"Request has succeeded",
               "url":"https://s3-ap-southeast-1.amazonaws.com/mtk.linkit/firmwares/x/firmware1.bin"}"#,
        )
        .unwrap();
        assert!(u.md5.is_none());
        let c: Connection =
            serde_json::from_str(r#"{"apiVersion":"0.0.1","code":200,"ip":"1.2.3.4","port":443}"#)
                .unwrap();
        assert_eq!(c.port.get(), Some(443));
        let c: Connection = serde_json::from_str(r#"{"ip":"1.2.3.4","port":"8080"}"#).unwrap();
        assert_eq!(c.port.get(), Some(8080));
    }
}
