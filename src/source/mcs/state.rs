//! What the MCS source remembers across restarts, in `<state_dir>/mcs/state.json`:
//! the timestamp of the last accepted push per MCS device (replay protection), the
//! accepted pushes not yet finished (so a push received during another update, or
//! before a restart, still happens), and the reports not yet acknowledged by the
//! server (the outbox). Written atomically like the engine's store (temp file in
//! the same directory, fsync, rename, directory fsync).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::push::Push;

/// One report waiting for the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Unique within the outbox, increasing.
    pub seq: u64,
    /// The MCS device it is about.
    pub mcs_device_id: String,
    pub what: ReportKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ReportKind {
    /// `PUT devices/{id}/firmwares`.
    Version { version: String },
    /// A data point on the status channel.
    Status {
        channel: String,
        timestamp_ms: u64,
        value: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// MCS device id → timestamp (ms) of its last accepted push.
    #[serde(default)]
    pub last_push: BTreeMap<String, u64>,
    /// Agent device id → the accepted push it is still to get.
    #[serde(default)]
    pub pending: BTreeMap<String, Push>,
    /// Oldest first.
    #[serde(default)]
    pub outbox: Vec<Report>,
    #[serde(default)]
    pub next_seq: u64,
    /// Agent device id → the last outcome queued (`version outcome`), to notice an
    /// outcome the engine resolved while the source was not listening (restart
    /// recovery).
    #[serde(default)]
    pub last_outcome: BTreeMap<String, String>,
}

impl State {
    /// Queues a report. A version report replaces a queued one of the same
    /// device (only the latest matters).
    pub fn enqueue(&mut self, mcs_device_id: &str, what: ReportKind) {
        if matches!(what, ReportKind::Version { .. }) {
            self.outbox.retain(|r| {
                !(r.mcs_device_id == mcs_device_id && matches!(r.what, ReportKind::Version { .. }))
            });
        }
        self.next_seq += 1;
        self.outbox.push(Report {
            seq: self.next_seq,
            mcs_device_id: mcs_device_id.to_string(),
            what,
        });
    }
}

/// The state file.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    pub fn new(state_dir: &Path) -> StateFile {
        StateFile {
            dir: state_dir.join("mcs"),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The saved state; empty when none. A corrupt file is moved aside (never
    /// deleted) and reported; the agent starts afresh.
    pub fn load(&self) -> (State, Option<String>) {
        let path = self.path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (State::default(), None),
            Err(e) => return (State::default(), Some(format!("{}: {e}", path.display()))),
        };
        match serde_json::from_slice(&bytes) {
            Ok(s) => (s, None),
            Err(e) => {
                let aside =
                    path.with_extension(format!("json.corrupt-{}", crate::store::now_secs()));
                let _ = std::fs::rename(&path, &aside);
                let msg = format!(
                    "{}: corrupt ({e}); moved aside to {}",
                    path.display(),
                    aside.display()
                );
                (State::default(), Some(msg))
            }
        }
    }

    /// Replaces the state atomically and durably.
    pub fn save(&self, state: &State) -> Result<(), String> {
        let path = self.path();
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        std::fs::create_dir_all(&self.dir).map_err(err)?;
        let json = serde_json::to_vec_pretty(state).map_err(|e| err(e.into()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(err)?;
        tmp.write_all(&json).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        tmp.persist(&path).map_err(|e| err(e.error))?;
        crate::store::fsync_dir(&self.dir).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_coalescing() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        assert_eq!(file.load(), (State::default(), None));
        let mut s = State::default();
        s.enqueue(
            "a",
            ReportKind::Version {
                version: "1".into(),
            },
        );
        s.enqueue(
            "a",
            ReportKind::Status {
                channel: "c".into(),
                timestamp_ms: 5,
                value: "2,UPDATING".into(),
            },
        );
        s.enqueue(
            "a",
            ReportKind::Version {
                version: "2".into(),
            },
        );
        assert_eq!(s.outbox.len(), 2);
        assert_eq!(s.outbox[1].seq, 3);
        s.last_push.insert("a".into(), 7);
        file.save(&s).unwrap();
        assert_eq!(file.load(), (s, None));
    }

    #[test]
    fn corrupt_state_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path());
        std::fs::create_dir_all(dir.path().join("mcs")).unwrap();
        std::fs::write(file.path(), b"{oops").unwrap();
        let (s, err) = file.load();
        assert_eq!(s, State::default());
        assert!(err.unwrap().contains("moved aside"));
    }
}
