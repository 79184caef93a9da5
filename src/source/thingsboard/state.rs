//! What the ThingsBoard source keeps on disk in `<state_dir>/thingsboard/`
//! (`state.json`, written atomically: temp file, fsync, rename, directory fsync):
//! the telemetry reports not yet accepted by the server, in order, so every
//! progress report and outcome reaches ThingsBoard once even across an agent
//! restart; the assignments whose update failed, so a failed package is not
//! retried until ThingsBoard assigns again; and the title each device runs.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::wire::Assignment;
use crate::store::fsync_dir;

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
struct Persisted {
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

/// The source's durable state; every change is written before it returns.
pub struct SourceState {
    dir: PathBuf,
    inner: Mutex<Persisted>,
}

impl SourceState {
    /// Opens `dir` (created if needed). A state file that does not parse is moved
    /// aside and the state starts empty.
    pub fn open(dir: &Path) -> SourceState {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::error!("{}: {e}", dir.display());
        }
        let path = dir.join("state.json");
        let persisted = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                let aside =
                    path.with_extension(format!("json.corrupt-{}", crate::store::now_secs()));
                tracing::error!(
                    "{}: corrupt ({e}); moved aside to {}",
                    path.display(),
                    aside.display()
                );
                let _ = std::fs::rename(&path, &aside);
                Persisted::default()
            }),
            Err(_) => Persisted::default(),
        };
        SourceState {
            dir: dir.to_path_buf(),
            inner: Mutex::new(persisted),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Persisted> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn change<T>(&self, f: impl FnOnce(&mut Persisted) -> T) -> T {
        let mut p = self.lock();
        let out = f(&mut p);
        if let Err(e) = self.write(&p) {
            tracing::error!("{}: cannot save ThingsBoard state: {e}", self.dir.display());
        }
        out
    }

    fn write(&self, p: &Persisted) -> std::io::Result<()> {
        let json = serde_json::to_vec(p)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&json)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.dir.join("state.json"))
            .map_err(|e| e.error)?;
        fsync_dir(&self.dir).map_err(std::io::Error::other)
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

    /// The oldest report not yet accepted.
    pub fn front(&self) -> Option<Queued> {
        self.lock().queue.front().cloned()
    }

    /// Removes report `seq` once the server accepted (or refused) it.
    pub fn remove(&self, seq: u64) {
        self.change(|p| p.queue.retain(|q| q.seq != seq));
    }

    pub fn queued(&self) -> Vec<Queued> {
        self.lock().queue.iter().cloned().collect()
    }

    pub fn failed(&self, device_id: &str) -> Option<Assignment> {
        self.lock().failed.get(device_id).cloned()
    }

    pub fn set_failed(&self, device_id: &str, assignment: Option<Assignment>) {
        if self.lock().failed.get(device_id) == assignment.as_ref() {
            return;
        }
        self.change(|p| match assignment {
            Some(a) => p.failed.insert(device_id.to_string(), a),
            None => p.failed.remove(device_id),
        });
    }

    pub fn title(&self, device_id: &str) -> Option<String> {
        self.lock().titles.get(device_id).cloned()
    }

    pub fn set_title(&self, device_id: &str, title: &str) {
        if self.lock().titles.get(device_id).map(String::as_str) == Some(title) {
            return;
        }
        self.change(|p| p.titles.insert(device_id.to_string(), title.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_survives_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let state = SourceState::open(dir.path());
        for i in 0..3 {
            let mut v = Map::new();
            v.insert("fw_state".into(), Value::from(format!("S{i}")));
            state.enqueue("d", i, v);
        }
        let first = state.front().unwrap();
        state.remove(first.seq);
        drop(state);
        let state = SourceState::open(dir.path());
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
        let state = SourceState::open(dir.path());
        assert!(state.front().is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
