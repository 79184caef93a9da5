//! Which offered firmware a device should get, and its firmware status (ESH
//! `FirmwareStatus`): the newest offered image released to the device (see
//! `model::Release`) that its version rules (scheme, only-newer, prerequisites)
//! allow, or, when the device is locked, the locked version and nothing else.

use std::cmp::Ordering;

use super::lock::LockView;
use super::update::Mode;
use crate::config::DeviceConfig;
use crate::model::{Deployment, Firmware, FirmwareStatus, Handling, Release, UpdatePolicy};
use crate::version::{VersionScheme, check_upgrade};

/// The outcome of looking at what a source offers for one device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// The firmware to install, if any.
    pub candidate: Option<Firmware>,
    /// Offered images that were passed over, each with the reason (for `check`).
    pub refused: Vec<(String, String)>,
    /// True when the source offers anything at all for the device's type.
    pub offered_any: bool,
    /// The device's lock and what it waits for, in words ("locked to 7 (on
    /// reset): waiting for the device to restart"); `None` when not locked.
    pub lock: Option<String>,
    /// The locked version is offered but not due yet (flash on reset).
    pub pending: bool,
}

impl Selection {
    /// The firmware status, given whether the handler says it can update now.
    pub fn status(&self, current: Option<&str>, executable: bool) -> FirmwareStatus {
        match (&self.candidate, current) {
            (_, None) => FirmwareStatus::Unknown,
            (None, Some(_)) if self.pending => FirmwareStatus::UpdateAvailable,
            (None, Some(_)) if !self.offered_any => FirmwareStatus::Unknown,
            (None, Some(_)) => FirmwareStatus::UpToDate,
            (Some(_), Some(_)) if executable => FirmwareStatus::UpdateExecutable,
            (Some(_), Some(_)) => FirmwareStatus::UpdateAvailable,
        }
    }
}

/// Picks the newest suitable firmware for `device` running `current`, with no lock.
pub fn select(device: &DeviceConfig, current: Option<&str>, offered: &[Firmware]) -> Selection {
    choose(device, current, offered, None)
}

/// Picks the firmware for `device` running `current`: the locked version when
/// `lock` is set, else the newest one released to the device.
///
/// With `only_newer` off, the newest offered image is installed whenever it differs
/// from the current version — that is how an operator rolls a fleet back: withdraw
/// the bad image (or set `released = false`) and the previous one becomes the target.
pub fn choose(
    device: &DeviceConfig,
    current: Option<&str>,
    offered: &[Firmware],
    lock: Option<&LockView>,
) -> Selection {
    let scheme = device.version_scheme;
    let mut selection = Selection::default();
    let mut matching: Vec<&Firmware> = Vec::new();
    for fw in offered {
        if fw.device_type != device.device_type {
            selection.refused.push((
                fw.version.clone(),
                format!(
                    "built for type {:?}, device is {:?}",
                    fw.device_type, device.device_type
                ),
            ));
        } else if let Err(e) = scheme.validate(&fw.version) {
            selection.refused.push((fw.version.clone(), e.to_string()));
        } else {
            matching.push(fw);
        }
    }
    selection.offered_any = !matching.is_empty();
    if let Some(lock) = lock {
        locked(&mut selection, scheme, current, &matching, lock);
        return selection;
    }
    let Some(current) = current else {
        return selection;
    };
    matching.retain(
        |fw| match release_refusal(&fw.release, device.group.as_deref()) {
            Some(reason) => {
                selection.refused.push((fw.version.clone(), reason));
                false
            }
            None => true,
        },
    );
    // Newest first; versions already validated, so compare cannot fail here.
    matching.sort_by(|a, b| {
        scheme
            .compare(&b.version, &a.version)
            .unwrap_or(Ordering::Equal)
    });
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
                selection.candidate = Some(fw.clone());
                break;
            }
            Err(reason) => selection
                .refused
                .push((fw.version.clone(), reason.to_string())),
        }
    }
    selection
}

/// Why a firmware released as `release` does not reach a device in `group`.
/// A device in any group is a test device: it takes uploaded firmware too.
pub fn release_refusal(release: &Release, group: Option<&str>) -> Option<String> {
    match (release, group) {
        (Release::All, _) | (Release::Uploaded, Some(_)) => None,
        (Release::Uploaded, None) => Some("not released; device is not in a test group".into()),
        (Release::Groups(groups), g) if g.is_some_and(|g| groups.iter().any(|n| n == g)) => None,
        (Release::Groups(groups), _) => Some(format!(
            "released to group{} {} only",
            if groups.len() == 1 { "" } else { "s" },
            groups.join(", ")
        )),
    }
}

/// The locked version, released or not, older or newer, and nothing else.
fn locked(
    selection: &mut Selection,
    scheme: VersionScheme,
    current: Option<&str>,
    matching: &[&Firmware],
    lock: &LockView,
) {
    let same = |v: &str| scheme.compare(v, &lock.version) == Ok(Ordering::Equal);
    let mut target = None;
    for fw in matching {
        if same(&fw.version) {
            target = Some(*fw);
        } else {
            selection
                .refused
                .push((fw.version.clone(), lock.describe()));
        }
    }
    let mut note = lock.describe();
    match (current, target) {
        (None, _) => {}
        (Some(current), _) if same(current) => {}
        (Some(_), None) => note += &format!(": version {} is not offered", lock.version),
        (Some(_), Some(_)) if !lock.ready => {
            note += ": waiting for the device to restart";
            selection.pending = true;
        }
        (Some(current), Some(fw)) => {
            // A lock is the one allowed downgrade; prerequisites still hold.
            match check_upgrade(
                scheme,
                current,
                &fw.version,
                fw.prerequisite.as_ref(),
                false,
            ) {
                Ok(()) => selection.candidate = Some(fw.clone()),
                Err(reason) => selection
                    .refused
                    .push((fw.version.clone(), reason.to_string())),
            }
        }
    }
    selection.lock = Some(note);
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

    fn fw(version: &str, release: Release) -> Firmware {
        let mut f = Firmware::new(
            "t",
            version,
            crate::model::FirmwareLocation::Url("http://x".into()),
        );
        f.release = release;
        f
    }

    fn lock(version: &str, on_reset: bool, ready: bool) -> LockView {
        LockView {
            version: version.into(),
            on_reset,
            ready,
        }
    }

    /// The selection table: device group, lock, current version, what it gets
    /// and why the others are refused.
    /// (group, lock, current, chosen, refused with reasons, lock note).
    type Row<'a> = (
        Option<&'a str>,
        Option<LockView>,
        &'a str,
        Option<&'a str>,
        &'a [(&'a str, &'a str)],
        Option<&'a str>,
    );

    const NOT_RELEASED: &str = "not released; device is not in a test group";
    const BETA_ONLY: &str = "released to group beta only";

    /// Checks each row against 5 and 6 released, 7 uploaded, 8 released to beta.
    fn check_rows(rows: &[Row]) {
        let groups = |g: &[&str]| Release::Groups(g.iter().map(|s| s.to_string()).collect());
        let offered = [
            fw("5", Release::All),
            fw("6", Release::All),
            fw("7", Release::Uploaded),
            fw("8", groups(&["beta"])),
        ];
        for (group, lock, current, expected, refused, note) in rows {
            let mut device = crate::config::tests::minimal_device("d", "t", &["u"]);
            device.group = group.map(str::to_string);
            let s = choose(&device, Some(current), &offered, lock.as_ref());
            let what = format!("group {group:?}, {lock:?}, current {current}");
            assert_eq!(
                s.candidate.map(|f| f.version).as_deref(),
                *expected,
                "{what}"
            );
            let got: Vec<(&str, &str)> = s
                .refused
                .iter()
                .map(|(v, r)| (v.as_str(), r.as_str()))
                .collect();
            assert_eq!(got, *refused, "{what}");
            assert_eq!(s.lock.as_deref(), *note, "{what}");
        }
    }

    #[test]
    fn release_and_group_table() {
        let (not_released, beta_only) = (NOT_RELEASED, BETA_ONLY);
        check_rows(&[
            // Not in a group: the newest released.
            (
                None,
                None,
                "5",
                Some("6"),
                &[("7", not_released), ("8", beta_only)],
                None,
            ),
            (
                None,
                None,
                "6",
                None,
                &[("7", not_released), ("8", beta_only)],
                None,
            ),
            // A test device: the newest uploaded, not another group's.
            (
                Some("test"),
                None,
                "5",
                Some("7"),
                &[("8", beta_only)],
                None,
            ),
            // Released to beta: beta devices take it.
            (Some("beta"), None, "5", Some("8"), &[], None),
        ]);
    }

    #[test]
    fn lock_table() {
        check_rows(&[
            // Locked: that version, older or newer, released or not.
            (
                None,
                Some(lock("5", false, true)),
                "6",
                Some("5"),
                &[
                    ("6", "locked to 5"),
                    ("7", "locked to 5"),
                    ("8", "locked to 5"),
                ],
                Some("locked to 5"),
            ),
            (
                Some("beta"),
                Some(lock("7", false, true)),
                "5",
                Some("7"),
                &[
                    ("5", "locked to 7"),
                    ("6", "locked to 7"),
                    ("8", "locked to 7"),
                ],
                Some("locked to 7"),
            ),
            (
                None,
                Some(lock("7", false, true)),
                "7",
                None,
                &[
                    ("5", "locked to 7"),
                    ("6", "locked to 7"),
                    ("8", "locked to 7"),
                ],
                Some("locked to 7"),
            ),
            (
                None,
                Some(lock("7", true, false)),
                "5",
                None,
                &[
                    ("5", "locked to 7 (on reset)"),
                    ("6", "locked to 7 (on reset)"),
                    ("8", "locked to 7 (on reset)"),
                ],
                Some("locked to 7 (on reset): waiting for the device to restart"),
            ),
            (
                None,
                Some(lock("7", true, true)),
                "5",
                Some("7"),
                &[
                    ("5", "locked to 7 (on reset)"),
                    ("6", "locked to 7 (on reset)"),
                    ("8", "locked to 7 (on reset)"),
                ],
                Some("locked to 7 (on reset)"),
            ),
            (
                None,
                Some(lock("9", false, true)),
                "5",
                None,
                &[
                    ("5", "locked to 9"),
                    ("6", "locked to 9"),
                    ("7", "locked to 9"),
                    ("8", "locked to 9"),
                ],
                Some("locked to 9: version 9 is not offered"),
            ),
        ]);
    }

    #[test]
    fn a_waiting_lock_is_an_available_update_and_only_newer_still_holds_without_one() {
        let offered = [fw("5", Release::All), fw("7", Release::All)];
        let device = crate::config::tests::minimal_device("d", "t", &["u"]);
        let s = choose(&device, Some("5"), &offered, Some(&lock("7", true, false)));
        assert_eq!(s.status(Some("5"), true), FirmwareStatus::UpdateAvailable);
        let s = choose(&device, Some("9"), &offered, None);
        assert_eq!(
            (s.status(Some("9"), true), s.candidate),
            (FirmwareStatus::UpToDate, None)
        );
        // Older images are not candidates at all, not refused ones for `check`.
        assert_eq!(s.refused, vec![]);
        // Unreleased 9 on a device outside any group: with only_newer off it
        // goes back to the newest released.
        let mut back = device.clone();
        back.only_newer = false;
        let s = choose(&back, Some("9"), &offered, None);
        assert_eq!(s.candidate.map(|f| f.version).as_deref(), Some("7"));
    }

    /// The ESH firmware status of every kind of selection.
    #[test]
    fn status_table() {
        use FirmwareStatus::*;
        let offered = [fw("5", Release::All), fw("7", Release::All)];
        let device = crate::config::tests::minimal_device("d", "t", &["u"]);
        let to_7 = select(&device, Some("5"), &offered);
        assert_eq!(
            to_7.candidate.as_ref().map(|f| f.version.as_str()),
            Some("7")
        );
        let up_to_date = select(&device, Some("7"), &offered);
        let nothing_offered = select(&device, Some("7"), &[]);
        let waiting = Selection {
            pending: true,
            offered_any: true,
            ..Selection::default()
        };
        let rows = [
            (&to_7, Some("5"), true, UpdateExecutable),
            (&to_7, Some("5"), false, UpdateAvailable),
            (&to_7, None, true, Unknown),
            (&up_to_date, Some("7"), true, UpToDate),
            (&nothing_offered, Some("7"), true, Unknown),
            (&waiting, Some("5"), false, UpdateAvailable),
        ];
        for (selection, current, executable, status) in rows {
            assert_eq!(
                selection.status(current, executable),
                status,
                "{selection:?} {current:?} {executable}"
            );
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
