//! A device's lock (the seed's "lock" of a Particle product): the version it must
//! run, and for a flash-on-reset lock whether the device has come online since
//! the lock was set. "Came online" is seen, not told: the device's version read
//! failed and then answered again, or the lock was already set when the agent
//! started. That memory lives only in the running agent: the lock files are
//! written by the `lock` and `unlock` commands alone (see `store::Lock`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::Engine;
use crate::config::DeviceConfig;
use crate::progress::{Outcome, Progress};
use crate::source::server_text;
use crate::store::{Lock, Store, StoreError};
use crate::version::VersionScheme;

/// The lock as the decision sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockView {
    pub version: String,
    /// Flash on reset (a `lock --on-reset`); a config `lock` flashes now.
    pub on_reset: bool,
    /// The locked version may be installed now: a flash-now lock, or an on-reset
    /// lock whose device came online since.
    pub ready: bool,
}

impl LockView {
    /// "locked to 7", "locked to 7 (on reset)": how `check` and `status` say it.
    pub fn describe(&self) -> String {
        if self.on_reset {
            format!("locked to {} (on reset)", self.version)
        } else {
            format!("locked to {}", self.version)
        }
    }
}

/// Why `version` cannot be a lock of a device with `scheme`: not a version of
/// the scheme, or text a firmware's version could not be (the config's `lock`
/// and `fota-agent lock` check the same).
pub fn version_problem(scheme: VersionScheme, version: &str) -> Option<String> {
    let checked = scheme.validate(version).map_err(|e| e.to_string());
    let checked = checked.and_then(|()| server_text::version(version).map_err(|e| e.to_string()));
    checked.err()
}

/// How far an on-reset lock's device got since the lock was first seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Seen answering; waiting for it to go away.
    Waiting,
    /// Its version read failed: the next answer means it came back.
    WentAway,
    /// Came online again (or the lock predates the agent's start).
    Ready,
}

/// The running agent's memory of each device's on-reset lock.
#[derive(Debug, Default)]
pub struct Watch {
    seen: Mutex<HashMap<String, (Lock, Phase)>>,
}

impl Watch {
    /// The device's lock after a version read that `answered` (or not): the
    /// stored lock (`fota-agent lock`), else the config's `lock`.
    pub fn view(
        &self,
        store: &Store,
        device: &DeviceConfig,
        answered: bool,
    ) -> Result<Option<LockView>, StoreError> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let Some(lock) = store.lock(&device.id)? else {
            seen.remove(&device.id);
            return Ok(device.lock.as_ref().map(|version| LockView {
                version: version.clone(),
                on_reset: false,
                ready: true,
            }));
        };
        let entry = seen
            .entry(device.id.clone())
            .or_insert_with(|| (lock.clone(), Phase::Waiting));
        if entry.0 != lock {
            *entry = (lock.clone(), Phase::Waiting);
        }
        entry.1 = match (entry.1, answered) {
            (Phase::Waiting, false) => Phase::WentAway,
            (Phase::WentAway, true) => Phase::Ready,
            (phase, _) => phase,
        };
        Ok(Some(LockView {
            ready: !lock.on_reset || entry.1 == Phase::Ready,
            on_reset: lock.on_reset,
            version: lock.version,
        }))
    }

    /// Counts every lock already set as seen across a restart.
    fn arm(&self, store: &Store, devices: &[&DeviceConfig]) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for device in devices {
            match store.lock(&device.id) {
                Ok(Some(lock)) => {
                    seen.insert(device.id.clone(), (lock, Phase::Ready));
                }
                Ok(None) => {}
                Err(e) => tracing::error!(device = %device.id, "{e}"),
            }
        }
    }
}

impl Engine {
    /// The agent (re)started: a flash-on-reset lock set before now is due, as
    /// the device may have restarted while nobody watched.
    pub fn locks_at_start(&self) {
        let devices: Vec<&DeviceConfig> = self.devices().collect();
        self.inner.locks.arm(&self.inner.store, &devices);
    }

    /// An `install` refused before it started, reported as its one outcome.
    pub(super) fn refused(&self, device_id: &str, version: &str, reason: String) -> Outcome {
        let progress = Progress::new(device_id, version, self.inner.events.clone());
        let _ = progress.failed(reason.clone());
        Outcome::Failed(reason)
    }

    /// Why `fota-agent install` of `version` must not touch the locked `device`.
    pub(super) fn locked_out(
        &self,
        device: &DeviceConfig,
        version: Option<&str>,
    ) -> Option<String> {
        let locked = match self.inner.store.lock(&device.id) {
            Ok(lock) => lock.map(|l| l.version).or_else(|| device.lock.clone()),
            Err(e) => return Some(format!("cannot read the device's lock: {e}")),
        }?;
        let same = version.is_some_and(|v| {
            device.version_scheme.compare(v, &locked) == Ok(std::cmp::Ordering::Equal)
        });
        (!same)
            .then(|| format!("device is locked to {locked}; unlock it to install another version"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(lock: Option<&str>) -> DeviceConfig {
        let mut d = crate::config::tests::minimal_device("d", "t", &["u"]);
        d.lock = lock.map(str::to_string);
        d
    }

    fn on_reset(version: &str, set_at: u64) -> Lock {
        Lock {
            version: version.into(),
            on_reset: true,
            set_at,
        }
    }

    #[test]
    fn an_on_reset_lock_is_ready_once_the_device_went_away_and_answered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        let watch = Watch::default();
        let d = device(None);
        let ready = |answered| watch.view(&store, &d, answered).unwrap().map(|v| v.ready);
        assert_eq!(ready(true), None);
        store.set_lock("d", &on_reset("7", 1)).unwrap();
        assert_eq!(ready(true), Some(false));
        assert_eq!(ready(true), Some(false));
        assert_eq!(ready(false), Some(false));
        assert_eq!(ready(true), Some(true));
        assert_eq!(ready(true), Some(true));
        // A new lock waits again.
        store.set_lock("d", &on_reset("7", 2)).unwrap();
        assert_eq!(ready(true), Some(false));
        store.remove_lock("d").unwrap();
        assert_eq!(ready(true), None);
    }

    #[test]
    fn a_corrupt_lock_file_is_an_error_and_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        std::fs::create_dir_all(dir.path().join("locks")).unwrap();
        std::fs::write(dir.path().join("locks/d.json"), b"{\"version\":").unwrap();
        let err = Watch::default()
            .view(&store, &device(None), true)
            .unwrap_err();
        let StoreError::Corrupt { moved_to, .. } = err else {
            panic!("expected Corrupt, got {err}");
        };
        assert_eq!(std::fs::read(moved_to).unwrap(), b"{\"version\":");
        assert_eq!(version_problem(VersionScheme::Particle, "7"), None);
        let problem = version_problem(VersionScheme::Particle, "7.1").unwrap();
        assert!(
            problem.contains("not a valid particle version"),
            "{problem}"
        );
    }

    #[test]
    fn a_lock_set_before_the_start_is_due_and_the_config_lock_flashes_now() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        let watch = Watch::default();
        store.set_lock("d", &on_reset("7", 1)).unwrap();
        let d = device(Some("5"));
        watch.arm(&store, &[&d]);
        let view = watch.view(&store, &d, true).unwrap().unwrap();
        assert_eq!((view.version.as_str(), view.ready), ("7", true));
        assert_eq!(view.describe(), "locked to 7 (on reset)");
        store.remove_lock("d").unwrap();
        let view = watch.view(&store, &d, false).unwrap().unwrap();
        assert_eq!((view.version.as_str(), view.ready), ("5", true));
        assert_eq!(view.describe(), "locked to 5");
    }
}
