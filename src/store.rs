//! Persistent per-device state in `state_dir`: the last outcome, the firmware already
//! transferred in the background, and the update in flight, one
//! [`JsonFile`](crate::persist::JsonFile) per device (atomic, durable writes), so a
//! power cut leaves either the old or the new state, never a torn file. This is
//! what lets the agent resolve, after a restart, an update whose outcome it never
//! saw.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::progress::Outcome;

/// Which part of an update was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Downloading/verifying or transferring: nothing on the device changed yet
    /// that the update step depends on, so it simply restarts.
    Transfer,
    /// The handler's update step was running: the device may or may not run the
    /// new firmware now.
    Update,
}

/// An update that had started and not yet finished when the state was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub version: String,
    pub phase: Phase,
    /// Seconds since the Unix epoch.
    pub started_at: u64,
    /// The update command running for it, if any: what start-up recovery must
    /// stop before it decides anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<CommandProcess>,
    /// The handler passed its commit point: the device is (partly) written, and
    /// an update that does not end well leaves it needing a re-flash.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub written: bool,
    /// SHA-256 of the verified image the update step writes (set with
    /// [`Phase::Update`]): what a re-flash writes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The SHA-256 of each further file of that image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<StagedPart>,
}

/// A device left half-written (its update failed or was interrupted after the
/// handler's commit point): the next cycle writes the same verified image again
/// (`state_dir/downloads/<id>.img`, checked against `sha256`), whatever version
/// the device reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reflash {
    pub version: String,
    pub sha256: String,
    /// The SHA-256 of each further file of the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<StagedPart>,
    /// Why the write did not complete.
    pub reason: String,
    /// Re-flashes tried since (failed ones).
    #[serde(default)]
    pub attempts: u32,
}

/// A command's process group, identified by its leader's PID and start time
/// (`/proc/<pid>/stat` field 22, clock ticks since boot), so that a PID reused by
/// another process is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandProcess {
    pub pgid: i32,
    pub start_time: u64,
}

/// How the last update of the device ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    pub version: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Seconds since the Unix epoch.
    pub finished_at: u64,
}

/// Firmware moved to the device ahead of its update step (background policy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transferred {
    pub version: String,
    pub sha256: String,
    /// The SHA-256 of each further file of the firmware (see
    /// [`crate::model::FirmwarePart`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<StagedPart>,
}

/// One staged further file and the SHA-256 it was verified with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedPart {
    pub name: String,
    pub sha256: String,
}

/// An operator's `fota-agent lock`: the device gets this version and no other
/// until `unlock`. Kept in its own file (`locks/<id>.json`), written only by the
/// `lock` and `unlock` commands and only read by a running agent, so neither
/// can overwrite the other's changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    pub version: String,
    /// Flash on reset: wait until the device next comes online (or the agent
    /// restarts) instead of installing at the next cycle.
    #[serde(default)]
    pub on_reset: bool,
    /// Seconds since the Unix epoch; a new lock of the same version is still a
    /// new lock (an on-reset lock waits again).
    pub set_at: u64,
}

/// Everything the agent remembers about one device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<InFlight>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transferred: Option<Transferred>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<OutcomeRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reflash: Option<Reflash>,
    /// The version the agent installed and confirmed on a device that reports
    /// none (see `engine::installed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed: Option<String>,
}

/// The store's errors are the persistence layer's.
pub use crate::persist::PersistError as StoreError;
use crate::persist::{JsonFile, remove_leftovers};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Now, in seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (and creates) `state_dir` with its `devices/` and `downloads/` folders,
    /// and removes temp files an interrupted save left in `devices/`.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        let store = Store {
            root: state_dir.to_path_buf(),
        };
        for dir in [store.devices_dir(), store.downloads_dir()] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        remove_leftovers(&store.devices_dir());
        Ok(store)
    }

    /// The state directory as it is, for reading only: nothing is created or
    /// removed (`fota-agent check`).
    pub fn at(state_dir: &Path) -> Store {
        Store {
            root: state_dir.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn devices_dir(&self) -> PathBuf {
        self.root.join("devices")
    }

    /// Where verified images are kept until their update is done.
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }

    fn device_file(&self, device_id: &str) -> JsonFile<DeviceState> {
        JsonFile::at(self.devices_dir().join(format!("{device_id}.json")))
    }

    /// The device's state; empty when none was written yet. A file that does not
    /// parse is moved aside (never deleted) and reported.
    pub fn load(&self, device_id: &str) -> Result<DeviceState, StoreError> {
        Ok(self.device_file(device_id).load()?.unwrap_or_default())
    }

    /// Replaces the device's state atomically and durably.
    pub fn save(&self, device_id: &str, state: &DeviceState) -> Result<(), StoreError> {
        self.device_file(device_id).save_blocking(state)
    }

    fn lock_file(&self, device_id: &str) -> JsonFile<Lock> {
        JsonFile::at(self.root.join("locks").join(format!("{device_id}.json")))
    }

    /// The device's lock, if an operator set one.
    pub fn lock(&self, device_id: &str) -> Result<Option<Lock>, StoreError> {
        self.lock_file(device_id).load()
    }

    /// Locks the device (replacing an earlier lock), atomically and durably.
    pub fn set_lock(&self, device_id: &str, lock: &Lock) -> Result<(), StoreError> {
        self.lock_file(device_id).save_blocking(lock)
    }

    /// Removes the device's lock durably; false when it had none.
    pub fn remove_lock(&self, device_id: &str) -> Result<bool, StoreError> {
        let file = self.lock_file(device_id);
        match fs::remove_file(file.path()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(file.path())(e)),
        }
        crate::persist::fsync_dir(&self.root.join("locks"))?;
        Ok(true)
    }

    /// Loads, changes and saves the device's state.
    pub fn update(
        &self,
        device_id: &str,
        change: impl FnOnce(&mut DeviceState),
    ) -> Result<DeviceState, StoreError> {
        let mut state = self.load(device_id)?;
        change(&mut state);
        self.save(device_id, &state)?;
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load("a").unwrap(), DeviceState::default());
        let state = DeviceState {
            in_flight: Some(InFlight {
                version: "2.0".into(),
                phase: Phase::Update,
                started_at: 7,
                process: Some(CommandProcess {
                    pgid: 42,
                    start_time: 1234,
                }),
                written: true,
                sha256: Some("ab".repeat(32)),
                parts: vec![StagedPart {
                    name: "user2".into(),
                    sha256: "cd".repeat(32),
                }],
            }),
            transferred: None,
            installed: Some("1.9".into()),
            last_outcome: Some(OutcomeRecord {
                version: "1.0".into(),
                outcome: Outcome::Failed("boom".into()),
                finished_at: 3,
            }),
            reflash: Some(Reflash {
                version: "2.0".into(),
                sha256: "ab".repeat(32),
                parts: Vec::new(),
                reason: "cut".into(),
                attempts: 1,
            }),
        };
        store.save("a", &state).unwrap();
        assert_eq!(Store::open(dir.path()).unwrap().load("a").unwrap(), state);
        // No temp files are left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("devices"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    #[test]
    fn locks_are_set_replaced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        assert_eq!(store.lock("a").unwrap(), None);
        assert!(!store.remove_lock("a").unwrap());
        let lock = Lock {
            version: "7".into(),
            on_reset: true,
            set_at: 5,
        };
        store.set_lock("a", &lock).unwrap();
        assert_eq!(store.lock("a").unwrap(), Some(lock));
        assert_eq!(store.lock("b").unwrap(), None);
        assert!(store.remove_lock("a").unwrap());
        assert_eq!(store.lock("a").unwrap(), None);
    }

    #[test]
    fn corrupt_file_is_moved_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(dir.path().join("devices/b.json"), b"{not json").unwrap();
        let err = store.load("b").unwrap_err();
        let StoreError::Corrupt { moved_to, .. } = err else {
            panic!("expected Corrupt, got {err}");
        };
        assert_eq!(fs::read(moved_to).unwrap(), b"{not json");
        assert_eq!(store.load("b").unwrap(), DeviceState::default());
    }
}
