//! ThingsBoard's device-API payloads as they are on the wire, and their conversion
//! into the agent's types in one place: the shared OTA attributes (`fw_title`,
//! `fw_version`, `fw_checksum`, `fw_checksum_algorithm`, `fw_size`, and the `sw_*`
//! equivalents) and the OTA telemetry keys (`fw_state`, `fw_error`,
//! `current_fw_title`, `current_fw_version`, …).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::checksum::{Checksum, ChecksumAlgorithm};
use crate::config::OtaKind;
use crate::server_value;

/// The prefix of a package type's attribute and telemetry keys.
pub fn prefix(kind: OtaKind) -> &'static str {
    match kind {
        OtaKind::Firmware => "fw",
        OtaKind::Software => "sw",
    }
}

/// The path segment of the HTTP package endpoint (`/api/v1/{token}/firmware`).
pub fn http_resource(kind: OtaKind) -> &'static str {
    match kind {
        OtaKind::Firmware => "firmware",
        OtaKind::Software => "software",
    }
}

/// The shared attribute keys of one package type, as requested.
pub fn shared_keys(kind: OtaKind) -> Vec<String> {
    let p = prefix(kind);
    ["title", "version", "checksum", "checksum_algorithm", "size"]
        .iter()
        .map(|k| format!("{p}_{k}"))
        .collect()
}

/// `GET /api/v1/{token}/attributes` and the MQTT attribute response:
/// `{"client": {...}, "shared": {...}}`, either part absent when empty.
#[derive(Debug, Default, Deserialize)]
pub struct AttributesResponse {
    #[serde(default)]
    pub shared: Map<String, Value>,
}

/// The firmware (or software) ThingsBoard assigns to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub title: String,
    pub version: String,
    pub size: Option<u64>,
    /// Algorithm as ThingsBoard names it (`SHA256`, `MURMUR3_128`, …) and value.
    pub checksum_algorithm: Option<String>,
    pub checksum: Option<String>,
}

/// Why assigned attributes cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    #[error("{0}: expected a string")]
    NotAString(String),
    #[error("{0}: expected a non-negative integer of at most 64 GiB")]
    NotASize(String),
    #[error("{key}: {message}")]
    Checksum { key: String, message: String },
}

/// Reads the assignment of `kind` out of shared attributes; `Ok(None)` when no
/// package is assigned (no title or version).
pub fn assignment(
    shared: &Map<String, Value>,
    kind: OtaKind,
) -> Result<Option<Assignment>, AssignmentError> {
    let p = prefix(kind);
    let text = |k: &str| -> Result<Option<String>, AssignmentError> {
        let key = format!("{p}_{k}");
        match shared.get(&key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // ThingsBoard may store a version like 2 or 1.5 as a number.
            Some(Value::Number(n)) if k == "version" => Ok(Some(n.to_string())),
            Some(_) => Err(AssignmentError::NotAString(key)),
        }
    };
    let (Some(title), Some(version)) = (text("title")?, text("version")?) else {
        return Ok(None);
    };
    let size_key = format!("{p}_size");
    let size = match shared.get(&size_key) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_u64()
                .and_then(server_value::size)
                .ok_or(AssignmentError::NotASize(size_key))?,
        ),
        Some(Value::String(s)) => Some(
            s.parse()
                .ok()
                .and_then(server_value::size)
                .ok_or(AssignmentError::NotASize(size_key))?,
        ),
        Some(_) => return Err(AssignmentError::NotASize(size_key)),
    };
    Ok(Some(Assignment {
        title,
        version,
        size,
        checksum_algorithm: text("checksum_algorithm")?,
        checksum: text("checksum")?,
    }))
}

impl Assignment {
    /// The checksum to verify, in the agent's form. ThingsBoard (Guava) writes
    /// CRC32 as its little-endian bytes (`hello world` → `85114a0d`); the agent's
    /// CRC32 is the big-endian value (`0d4a1185`), so the bytes are reversed here.
    /// MURMUR3_32/128 keep ThingsBoard's form (see `checksum::murmur3`).
    pub fn checksum(&self, kind: OtaKind) -> Result<Option<Checksum>, AssignmentError> {
        let Some(value) = &self.checksum else {
            return Ok(None);
        };
        let key = format!("{}_checksum_algorithm", prefix(kind));
        // ThingsBoard's default when none is named.
        let name = self.checksum_algorithm.as_deref().unwrap_or("SHA256");
        let algorithm = algorithm(name).ok_or_else(|| AssignmentError::Checksum {
            key: key.clone(),
            message: format!("unknown checksum algorithm {name:?}"),
        })?;
        let mut hex = value.trim().to_ascii_lowercase();
        if algorithm == ChecksumAlgorithm::Crc32 && hex.len() == 8 {
            hex = hex
                .as_bytes()
                .chunks(2)
                .rev()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect();
        }
        Checksum::new(algorithm, &hex)
            .map(Some)
            .map_err(|e| AssignmentError::Checksum {
                key: format!("{}_checksum", prefix(kind)),
                message: e.to_string(),
            })
    }
}

/// ThingsBoard's algorithm names: MD5, SHA256, SHA384, SHA512, CRC32, MURMUR3_32,
/// MURMUR3_128.
pub fn algorithm(name: &str) -> Option<ChecksumAlgorithm> {
    Some(match name.trim().to_ascii_uppercase().as_str() {
        "MD5" => ChecksumAlgorithm::Md5,
        "SHA256" => ChecksumAlgorithm::Sha256,
        "SHA384" => ChecksumAlgorithm::Sha384,
        "SHA512" => ChecksumAlgorithm::Sha512,
        "CRC32" => ChecksumAlgorithm::Crc32,
        "MURMUR3_32" => ChecksumAlgorithm::Murmur3_32,
        "MURMUR3_128" => ChecksumAlgorithm::Murmur3_128,
        _ => return None,
    })
}

/// ThingsBoard's OTA states (`fw_state` / `sw_state` telemetry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtaState {
    Downloading,
    Downloaded,
    Verified,
    Updating,
    Updated,
    Failed,
}

impl OtaState {
    pub fn as_str(self) -> &'static str {
        match self {
            OtaState::Downloading => "DOWNLOADING",
            OtaState::Downloaded => "DOWNLOADED",
            OtaState::Verified => "VERIFIED",
            OtaState::Updating => "UPDATING",
            OtaState::Updated => "UPDATED",
            OtaState::Failed => "FAILED",
        }
    }
}

/// Telemetry values with `kind`'s prefix: `("state", "UPDATING")` → `fw_state`;
/// `current_` and `target_` keys put it after themselves (`current_fw_version`,
/// `target_fw_title`), as ThingsBoard's `OtaPackageUtil` names them.
pub fn telemetry(kind: OtaKind, values: &[(&str, Value)]) -> Map<String, Value> {
    let p = prefix(kind);
    values
        .iter()
        .map(|(k, v)| {
            let key = match ["current_", "target_"]
                .iter()
                .find_map(|pre| k.strip_prefix(pre).map(|rest| (pre, rest)))
            {
                Some((pre, rest)) => format!("{pre}{p}_{rest}"),
                None => format!("{p}_{k}"),
            };
            (key, v.clone())
        })
        .collect()
}

/// One telemetry record as ThingsBoard takes it with a timestamp:
/// `{"ts": <ms>, "values": {...}}`.
pub fn timestamped(ts_ms: u64, values: &Map<String, Value>) -> Value {
    serde_json::json!({ "ts": ts_ms, "values": values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shared(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn reads_an_assignment_and_converts_guava_crc32() {
        let attrs = shared(json!({
            "fw_title": "esp", "fw_version": "2.0", "fw_size": 11,
            "fw_checksum_algorithm": "CRC32", "fw_checksum": "85114a0d"
        }));
        let a = assignment(&attrs, OtaKind::Firmware).unwrap().unwrap();
        assert_eq!(a.size, Some(11));
        let c = a.checksum(OtaKind::Firmware).unwrap().unwrap();
        assert_eq!(c.algorithm, ChecksumAlgorithm::Crc32);
        assert_eq!(c.hex(), "0d4a1185");
        assert_eq!(assignment(&attrs, OtaKind::Software).unwrap(), None);
    }

    #[test]
    fn every_thingsboard_algorithm_is_known() {
        for name in [
            "MD5",
            "SHA256",
            "SHA384",
            "SHA512",
            "CRC32",
            "MURMUR3_32",
            "MURMUR3_128",
        ] {
            assert!(algorithm(name).is_some(), "{name}");
        }
        assert_eq!(algorithm("SHA1"), None);
    }

    #[test]
    fn bad_attributes_are_errors_not_panics() {
        let attrs = shared(json!({"fw_title": "t", "fw_version": "1", "fw_size": -1}));
        assert!(assignment(&attrs, OtaKind::Firmware).is_err());
        // A size past any firmware's (here 16 EiB) is refused, as a number or text.
        for size in [json!(u64::MAX), json!(u64::MAX.to_string())] {
            let attrs = shared(json!({"fw_title": "t", "fw_version": "1", "fw_size": size}));
            let e = assignment(&attrs, OtaKind::Firmware).unwrap_err();
            assert!(e.to_string().contains("at most 64 GiB"), "{e}");
        }
        let attrs = shared(json!({"fw_title": ["t"], "fw_version": "1"}));
        assert!(assignment(&attrs, OtaKind::Firmware).is_err());
        let attrs = shared(
            json!({"fw_title": "t", "fw_version": 2, "fw_checksum": "zz",
            "fw_checksum_algorithm": "SHA256"}),
        );
        let a = assignment(&attrs, OtaKind::Firmware).unwrap().unwrap();
        assert_eq!(a.version, "2");
        assert!(a.checksum(OtaKind::Firmware).is_err());
    }

    #[test]
    fn telemetry_keys_carry_the_prefix() {
        let t = telemetry(
            OtaKind::Software,
            &[
                ("state", json!("UPDATED")),
                ("current_version", json!("3")),
                ("target_title", json!("t")),
            ],
        );
        assert_eq!(t.get("sw_state"), Some(&json!("UPDATED")));
        assert_eq!(t.get("current_sw_version"), Some(&json!("3")));
        assert_eq!(t.get("target_sw_title"), Some(&json!("t")));
        assert_eq!(t.len(), 3);
    }
}
