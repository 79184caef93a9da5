//! The version the agent itself installed and confirmed on a device that cannot
//! report one (an ESP8266 on its ROM bootloader without `version_command`): the
//! device's version when its handler knows none, so `run` can update it again.
//! A version the handler reports always wins.

use super::Device;
use crate::handler::HandlerError;
use crate::store::{Store, StoreError};

/// A device's current version and where it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Current {
    pub version: Option<String>,
    /// The version is the one the agent installed, not one the device reported.
    pub installed_by_agent: bool,
}

/// The handler's version, else the one the agent recorded for the device.
pub async fn current_version(device: &Device, store: &Store) -> Result<Current, HandlerError> {
    if let Some(v) = device.handler.current_version().await? {
        return Ok(Current {
            version: Some(v),
            installed_by_agent: false,
        });
    }
    let installed = match store.load(&device.config.id) {
        Ok(state) => state.installed,
        Err(e) => {
            tracing::warn!(device = %device.config.id, "cannot read the installed version: {e}");
            None
        }
    };
    Ok(Current {
        installed_by_agent: installed.is_some(),
        version: installed,
    })
}

/// Records `version` as installed on `id` (`None`: the device is being
/// written, what it runs is no longer known).
pub fn record(store: &Store, id: &str, version: Option<&str>) -> Result<(), StoreError> {
    store
        .update(id, |s| s.installed = version.map(str::to_string))
        .map(drop)
}

/// `version` as `check` and `status` show it: `?` when unknown, and who says so
/// when the agent does.
pub fn describe(version: Option<&str>, installed_by_agent: bool) -> String {
    match (version, installed_by_agent) {
        (None, _) => "?".to_string(),
        (Some(v), false) => v.to_string(),
        (Some(v), true) => format!("{v}, as installed by fota-agent"),
    }
}
