//! `fota-agent install`: a local image onto a device, verified like any other.

use std::path::Path;

use super::update::Mode;
use super::{Engine, EngineError, installed};
use crate::model::{Firmware, FirmwareLocation};
use crate::progress::Outcome;

impl Engine {
    /// Installs an image on a device now (`fota-agent install`): a local file, or
    /// a URL downloaded as a server's offer would be; verified like any other, and
    /// checked against the device's version rules when `version` is given.
    pub async fn install(
        &self,
        device_id: &str,
        image: FirmwareLocation,
        version: Option<&str>,
        checksums: Vec<crate::checksum::Checksum>,
    ) -> Result<Outcome, EngineError> {
        let device = self.device(device_id)?;
        // A wrong path is the operator's typo, not a failed update: nothing is
        // recorded for the device.
        if let FirmwareLocation::File(path) = &image {
            readable_file(path)?;
        }
        // Claimed before the version is read: no command of a busy device runs.
        let claim = self.claim(device_id)?;
        let mut firmware = Firmware::new(
            &device.config.device_type,
            version.unwrap_or("unknown"),
            image,
        );
        firmware.checksums = checksums;
        if let Some(reason) = self.locked_out(&device.config, version) {
            return Ok(self.refused(device_id, version.unwrap_or("unknown"), reason));
        }
        if let Some(target) = version {
            let current = installed::current_version(&device, &self.inner.store)
                .await
                .map(|c| c.version);
            let refusal = match current {
                Ok(Some(current)) => crate::version::check_upgrade(
                    device.config.version_scheme,
                    &current,
                    target,
                    None,
                    device.config.only_newer,
                )
                .err()
                .map(|e| e.to_string()),
                Ok(None) => None,
                Err(e) => Some(format!("cannot read the current version: {e}")),
            };
            if let Some(reason) = refusal {
                return Ok(self.refused(device_id, target, reason));
            }
        }
        let mode = if version.is_some() {
            Mode::Immediate
        } else {
            Mode::Install
        };
        Ok(self
            .start(&device, &firmware, mode, &claim)
            .await?
            .unwrap_or(Outcome::Success))
    }
}

/// `Ok` when `path` is a regular file this process can open.
fn readable_file(path: &Path) -> Result<(), EngineError> {
    let refused = |reason: String| EngineError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| refused(e.to_string()))?;
    if !meta.is_file() {
        return Err(refused("not a regular file".into()));
    }
    std::fs::File::open(path).map_err(|e| refused(e.to_string()))?;
    Ok(())
}
