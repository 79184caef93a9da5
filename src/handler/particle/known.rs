//! The binaries the agent gave this device: the device reports only its user
//! module's SHA-256 over serial (never its PRODUCT_VERSION), and each binary's
//! suffix holds both, so this map turns what the device says into a version.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::persist::{JsonFile, PersistError};

/// `{"versions": {"<SHA-256 uppercase hex>": "<PRODUCT_VERSION>"}}`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Doc {
    versions: BTreeMap<String, String>,
}

/// The durable SHA-256 → PRODUCT_VERSION map of one device.
pub struct KnownFirmware {
    file: JsonFile<Doc>,
    /// One read-modify-write at a time.
    lock: Mutex<()>,
}

impl KnownFirmware {
    pub fn open(path: &Path) -> Self {
        KnownFirmware {
            file: JsonFile::open(path),
            lock: Mutex::new(()),
        }
    }

    /// Remembers that the binary with `sha256` is `version`.
    pub async fn record(&self, sha256: &str, version: &str) -> Result<(), PersistError> {
        let _g = self.lock.lock().await;
        let mut doc = self.file.load_or_default();
        if doc.versions.get(sha256).map(String::as_str) == Some(version) {
            return Ok(());
        }
        doc.versions
            .insert(sha256.to_ascii_uppercase(), version.to_string());
        self.file.save(&doc).await
    }

    /// The version of the binary with `sha256`, when the agent knows it.
    pub async fn version_of(&self, sha256: &str) -> Option<String> {
        let _g = self.lock.lock().await;
        let doc = self.file.load_or_default();
        doc.versions.get(&sha256.to_ascii_uppercase()).cloned()
    }
}
