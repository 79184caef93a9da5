//! What the MCS source remembers across restarts, in `<state_dir>/mcs/state.json`:
//! the timestamp of the last accepted push per MCS device (replay protection), the
//! accepted pushes not yet finished (so a push received during another update, or
//! before a restart, still happens), and the reports not yet acknowledged by the
//! server (the outbox, an [`crate::persist::Outbox`] in this same document, so a
//! report and the state change it tells of are one write).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::push::Push;
use crate::persist::{Document, JsonFile};

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
    pub outbox: VecDeque<Report>,
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
        self.outbox.push_back(Report {
            seq: self.next_seq,
            mcs_device_id: mcs_device_id.to_string(),
            what,
        });
    }
}

impl Document for State {
    type Entry = Report;

    fn queue(&self) -> &VecDeque<Report> {
        &self.outbox
    }

    fn queue_mut(&mut self) -> &mut VecDeque<Report> {
        &mut self.outbox
    }
}

/// `<state_dir>/mcs/state.json`.
pub fn file(state_dir: &Path) -> JsonFile<State> {
    JsonFile::open(state_dir.join("mcs").join("state.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_coalescing() {
        let dir = tempfile::tempdir().unwrap();
        let file = file(dir.path());
        assert_eq!(file.load_or_default(), State::default());
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
        file.save_blocking(&s).unwrap();
        assert_eq!(file.load().unwrap(), Some(s));
    }

    #[test]
    fn corrupt_state_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let file = file(dir.path());
        std::fs::create_dir_all(dir.path().join("mcs")).unwrap();
        std::fs::write(file.path(), b"{oops").unwrap();
        let err = file.load().unwrap_err();
        assert_eq!(file.load_or_default(), State::default());
        assert!(err.to_string().contains("moved aside"));
    }
}
