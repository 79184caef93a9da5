//! Firmware sources: where the agent learns which firmware exists for a device.
//! Each source converts its own wire format into [`crate::model::Firmware`] in one
//! place; the engine never sees a protocol.

pub mod directory;
pub mod properties;

use async_trait::async_trait;

use crate::config::{DeviceConfig, SourceConfig};
use crate::model::Firmware;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Something that offers firmware.
#[async_trait]
pub trait FirmwareSource: Send + Sync {
    /// A short name for logs and `check` (e.g. `directory /var/lib/fota-agent/firmware`).
    fn describe(&self) -> String;

    /// Every firmware the source offers for `device` (any version; the engine picks).
    async fn firmware_for(&self, device: &DeviceConfig) -> Result<Vec<Firmware>, SourceError>;
}

/// The source the config names.
pub fn from_config(config: &SourceConfig) -> Box<dyn FirmwareSource> {
    match config {
        SourceConfig::Directory { path } => Box::new(directory::DirectorySource::new(path)),
    }
}
