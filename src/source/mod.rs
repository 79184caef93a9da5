//! Firmware sources: where the agent learns which firmware exists for a device.
//! Each source converts its own wire format into [`crate::model::Firmware`] in one
//! place; the engine never sees a protocol.

pub mod config;
pub mod directory;
pub mod hawkbit;
pub mod mcs;
pub mod properties;
pub mod release;
pub mod server_text;
pub mod thingsboard;

mod folder_file;
mod link;

use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DeviceConfig, SourceConfig};
use crate::model::Firmware;
use crate::progress::ProgressEvent;
pub use link::{CancelOutcome, EngineLink, EngineRequest};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

/// Something that offers firmware.
#[async_trait]
pub trait FirmwareSource: Send + Sync {
    /// A short name for logs and `check` (e.g. `directory /var/lib/fota-agent/firmware`).
    fn describe(&self) -> String;

    /// Every firmware the source offers for `device` (any version; the engine picks).
    async fn firmware_for(&self, device: &DeviceConfig) -> Result<Vec<Firmware>, SourceError>;

    /// Every progress event of every update, in order, for servers that track
    /// progress (feedback, telemetry). Called from one task; a slow server delays
    /// only its own reports.
    async fn report(&self, _event: &ProgressEvent) {}

    /// The version each device runs (`None`: unknown), after start-up and after
    /// every cycle.
    async fn report_versions(&self, _versions: &[DeviceVersion]) {}

    /// The service's first cycle waits a random time up to this, so a fleet
    /// that boots together does not ask the server together (sources whose own
    /// task polls spread that task instead).
    fn startup_spread(&self) -> Duration {
        Duration::ZERO
    }

    /// The source's own background work — polling its server on the server's
    /// schedule, keeping a push channel open — until `shutdown`. It asks the engine
    /// for a check or a cancel through `link`. It returns only at `shutdown`: the
    /// engine restarts a task that ends (or panics) before. Without background
    /// work, it just waits.
    async fn run(&self, _link: EngineLink, shutdown: CancellationToken) {
        shutdown.cancelled().await
    }
}

/// A device and the version it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceVersion {
    pub device_id: String,
    pub device_type: String,
    pub version: Option<String>,
}

/// What keeps the configured source from offering anything, found without
/// contacting a server (a missing firmware directory), for `check-config`.
pub fn problem(config: &Config) -> Option<String> {
    match &config.source {
        SourceConfig::Directory { path } => directory::root_problem(path),
        _ => None,
    }
}

/// The source the config names (a server source also needs the download
/// settings, the devices and the state directory).
pub fn from_config(config: &Config) -> Result<Box<dyn FirmwareSource>, SourceError> {
    Ok(match &config.source {
        SourceConfig::Directory { path } => Box::new(directory::DirectorySource::new(path)),
        SourceConfig::Mcs(mcs) => Box::new(mcs::McsSource::new(
            mcs,
            &config.devices,
            &config.download,
            &config.agent.state_dir,
        )),
        SourceConfig::Hawkbit(h) => Box::new(hawkbit::HawkbitSource::new(
            h,
            &config.download,
            &config.devices,
            &config.agent.state_dir,
        )?),
        SourceConfig::Thingsboard(tb) => {
            Box::new(thingsboard::ThingsboardSource::new((**tb).clone())?)
        }
    })
}
