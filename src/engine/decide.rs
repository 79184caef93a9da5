//! Which offered firmware a device should get, and its firmware status (ESH
//! `FirmwareStatus`): the newest offered image that the device's version rules
//! (scheme, only-newer, prerequisites) allow.

use std::cmp::Ordering;

use super::update::Mode;
use crate::config::DeviceConfig;
use crate::model::{Deployment, Firmware, FirmwareStatus, Handling, UpdatePolicy};
use crate::version::check_upgrade;

/// The outcome of looking at what a source offers for one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

/// What to do with a candidate now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Run(Mode),
    /// Nothing now, and why (for the log).
    Wait(&'static str),
}

/// Chooses immediate update, transfer ahead, update of staged firmware, or waiting,
/// from the device's policy, the server's deployment instructions (hawkBit
/// `forced`/`attempt`/`skip`, maintenance window), whether the firmware is already
/// staged, and whether the handler says the update can run now.
///
/// `forced` overrides the device's policy, not the handler: a device that says it
/// cannot update now (busy, offline) is not updated.
pub fn plan(
    policy: UpdatePolicy,
    deployment: Option<&Deployment>,
    staged: bool,
    executable: bool,
) -> Plan {
    let update_allowed = deployment.is_none_or(|d| d.update_allowed());
    let forced = deployment.is_some_and(|d| d.update == Handling::Forced);
    if !update_allowed {
        return if staged {
            Plan::Wait("firmware staged; the server has not allowed the update yet")
        } else {
            Plan::Run(Mode::TransferOnly)
        };
    }
    let immediate = forced || policy == UpdatePolicy::Immediate;
    match (immediate, staged, executable) {
        (_, true, true) => Plan::Run(Mode::UpdateTransferred),
        (true, false, true) => Plan::Run(Mode::Immediate),
        (true, _, false) => Plan::Wait("update available but not executable now"),
        (false, false, _) => Plan::Run(Mode::TransferOnly),
        (false, true, false) => {
            Plan::Wait("firmware transferred; waiting until the update is executable")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use UpdatePolicy::*;

    fn dep(update: Handling, window: Option<bool>) -> Deployment {
        Deployment {
            id: "1".into(),
            download: Handling::Forced,
            update,
            maintenance_window_open: window,
        }
    }

    #[test]
    fn plans() {
        use Handling::*;
        let run = Plan::Run;
        let cases: &[(UpdatePolicy, Option<Deployment>, bool, bool, Plan)] = &[
            (Immediate, None, false, true, run(Mode::Immediate)),
            (
                Immediate,
                None,
                false,
                false,
                Plan::Wait("update available but not executable now"),
            ),
            (Background, None, false, false, run(Mode::TransferOnly)),
            (Background, None, false, true, run(Mode::TransferOnly)),
            (Background, None, true, true, run(Mode::UpdateTransferred)),
            (
                Background,
                Some(dep(Forced, None)),
                false,
                true,
                run(Mode::Immediate),
            ),
            (
                Background,
                Some(dep(Attempt, None)),
                false,
                true,
                run(Mode::TransferOnly),
            ),
            (
                Immediate,
                Some(dep(Skip, None)),
                false,
                true,
                run(Mode::TransferOnly),
            ),
            (
                Immediate,
                Some(dep(Forced, Some(false))),
                false,
                true,
                run(Mode::TransferOnly),
            ),
            (
                Immediate,
                Some(dep(Forced, Some(false))),
                true,
                true,
                Plan::Wait("firmware staged; the server has not allowed the update yet"),
            ),
            (
                Immediate,
                Some(dep(Attempt, Some(true))),
                true,
                true,
                run(Mode::UpdateTransferred),
            ),
        ];
        for (policy, d, staged, exec, expected) in cases {
            assert_eq!(
                &plan(*policy, d.as_ref(), *staged, *exec),
                expected,
                "{policy:?} {d:?} staged={staged} executable={exec}"
            );
        }
    }
}
