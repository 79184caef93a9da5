//! Which offered firmware a device should get, and its firmware status (ESH
//! `FirmwareStatus`): the newest offered image that the device's version rules
//! (scheme, only-newer, prerequisites) allow.

use std::cmp::Ordering;

use crate::config::DeviceConfig;
use crate::model::{Firmware, FirmwareStatus};
use crate::version::check_upgrade;

/// The outcome of looking at what a source offers for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The firmware to install, if any.
    pub candidate: Option<Firmware>,
    /// Offered images that were passed over, each with the reason (for `check`).
    pub refused: Vec<(String, String)>,
    /// True when the source offers anything at all for the device's type.
    pub offered_any: bool,
}

impl Selection {
    /// The firmware status, given whether the handler says it can update now.
    pub fn status(&self, current: Option<&str>, executable: bool) -> FirmwareStatus {
        match (&self.candidate, current) {
            (_, None) => FirmwareStatus::Unknown,
            (None, Some(_)) if !self.offered_any => FirmwareStatus::Unknown,
            (None, Some(_)) => FirmwareStatus::UpToDate,
            (Some(_), Some(_)) if executable => FirmwareStatus::UpdateExecutable,
            (Some(_), Some(_)) => FirmwareStatus::UpdateAvailable,
        }
    }
}

/// Picks the newest suitable firmware for `device` running `current`.
///
/// With `only_newer` off, the newest offered image is installed whenever it differs
/// from the current version — that is how an operator rolls a fleet back: withdraw
/// the bad image and the previous one becomes the newest offered.
pub fn select(device: &DeviceConfig, current: Option<&str>, offered: &[Firmware]) -> Selection {
    let scheme = device.version_scheme;
    let mut refused = Vec::new();
    let mut matching: Vec<&Firmware> = Vec::new();
    for fw in offered {
        if fw.device_type != device.device_type {
            refused.push((
                fw.version.clone(),
                format!(
                    "built for type {:?}, device is {:?}",
                    fw.device_type, device.device_type
                ),
            ));
        } else if let Err(e) = scheme.validate(&fw.version) {
            refused.push((fw.version.clone(), e.to_string()));
        } else {
            matching.push(fw);
        }
    }
    let offered_any = !matching.is_empty();
    let Some(current) = current else {
        return Selection {
            candidate: None,
            refused,
            offered_any,
        };
    };
    // Newest first; versions already validated, so compare cannot fail here.
    matching.sort_by(|a, b| {
        scheme
            .compare(&b.version, &a.version)
            .unwrap_or(Ordering::Equal)
    });
    let mut candidate = None;
    for fw in matching {
        match scheme.compare(&fw.version, current) {
            Ok(Ordering::Equal) => break,
            Ok(Ordering::Less) if device.only_newer => break,
            _ => {}
        }
        match check_upgrade(
            scheme,
            current,
            &fw.version,
            fw.prerequisite.as_ref(),
            device.only_newer,
        ) {
            Ok(()) => {
                candidate = Some(fw.clone());
                break;
            }
            Err(reason) => refused.push((fw.version.clone(), reason.to_string())),
        }
    }
    Selection {
        candidate,
        refused,
        offered_any,
    }
}
