//! What the ThingsBoard source keeps on disk in `<state_dir>/thingsboard/state.json`:
//! the telemetry reports not yet accepted by the server, in order (its
//! [`Outbox`]), so every progress report and outcome reaches ThingsBoard even
//! across an agent restart; the assignments whose update failed, so a failed
//! package is not retried until ThingsBoard assigns again; and the title each
//! device runs.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::wire::Assignment;
use crate::persist::{Backoff, Document, JsonFile, Outbox};

/// One telemetry record waiting to be sent for a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    /// Increases with every report; identifies it for removal.
    pub seq: u64,
    pub device_id: String,
    pub ts_ms: u64,
    pub values: Map<String, Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Persisted {
    #[serde(default)]
    next_seq: u64,
    #[serde(default)]
    queue: VecDeque<Queued>,
    /// device id → the assignment whose update failed.
    #[serde(default)]
    failed: BTreeMap<String, Assignment>,
    /// device id → the title of the package it runs (for `current_fw_title`).
    #[serde(default)]
    titles: BTreeMap<String, String>,
}

impl Document for Persisted {
    type Entry = Queued;

    fn queue(&self) -> &VecDeque<Queued> {
        &self.queue
    }

    fn queue_mut(&mut self) -> &mut VecDeque<Queued> {
        &mut self.queue
    }
}

/// The source's durable state; every change is written before it returns.
pub struct SourceState {
    /// The telemetry queue, with the rest of the state in the same file.
    pub outbox: Outbox<Persisted>,
}

impl SourceState {
    /// Opens `dir` (created if needed); reports are retried with `backoff`. A
    /// state file that does not parse is moved aside and the state starts empty.
    pub fn open(dir: &Path, backoff: Backoff) -> SourceState {
        let file = JsonFile::open(dir.join("state.json")).compact();
        SourceState {
            outbox: Outbox::open("ThingsBoard telemetry", file, backoff),
        }
    }

    fn change<T>(&self, f: impl FnOnce(&mut Persisted) -> T) -> T {
        self.outbox.change(f)
    }

    /// Queues a report durably.
    pub fn enqueue(&self, device_id: &str, ts_ms: u64, values: Map<String, Value>) {
        self.change(|p| {
            let seq = p.next_seq;
            p.next_seq += 1;
            p.queue.push_back(Queued {
                seq,
                device_id: device_id.to_string(),
                ts_ms,
                values,
            });
        });
    }

    pub fn queued(&self) -> Vec<Queued> {
        self.outbox.lock().queue.iter().cloned().collect()
    }

    pub fn failed(&self, device_id: &str) -> Option<Assignment> {
        self.outbox.lock().failed.get(device_id).cloned()
    }

    pub fn set_failed(&self, device_id: &str, assignment: Option<Assignment>) {
        if self.outbox.lock().failed.get(device_id) == assignment.as_ref() {
            return;
        }
        self.change(|p| match assignment {
            Some(a) => p.failed.insert(device_id.to_string(), a),
            None => p.failed.remove(device_id),
        });
    }

    pub fn title(&self, device_id: &str) -> Option<String> {
        self.outbox.lock().titles.get(device_id).cloned()
    }

    pub fn set_title(&self, device_id: &str, title: &str) {
        if self.outbox.lock().titles.get(device_id).map(String::as_str) == Some(title) {
            return;
        }
        self.change(|p| p.titles.insert(device_id.to_string(), title.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        base: std::time::Duration::from_secs(1),
        max: std::time::Duration::from_secs(5),
    };

    #[test]
    fn queue_survives_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let state = SourceState::open(dir.path(), BACKOFF);
        for i in 0..3 {
            let mut v = Map::new();
            v.insert("fw_state".into(), Value::from(format!("S{i}")));
            state.enqueue("d", i, v);
        }
        // The first was delivered.
        state.change(|p| p.queue.pop_front());
        drop(state);
        let state = SourceState::open(dir.path(), BACKOFF);
        let left: Vec<u64> = state.queued().iter().map(|q| q.ts_ms).collect();
        assert_eq!(left, vec![1, 2]);
        // New reports never reuse a sequence number.
        state.enqueue("d", 9, Map::new());
        let seqs: Vec<u64> = state.queued().iter().map(|q| q.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn corrupt_state_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), b"{oops").unwrap();
        let state = SourceState::open(dir.path(), BACKOFF);
        assert!(state.queued().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
