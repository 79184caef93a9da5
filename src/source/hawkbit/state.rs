//! What the hawkBit source remembers across restarts, in `<state_dir>/hawkbit.json`:
//! the action in flight (its deployment as the server sent it and how far each
//! device got), the feedback not yet delivered, and the ids of actions and cancels
//! already answered (so a server that still lists them while queued feedback waits
//! is not answered twice). One document, so queueing feedback and the state change
//! it reports are one atomic write; the feedback queue is its
//! [`Outbox`](crate::persist::Outbox).

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::wire::DeploymentBase;
use crate::persist::{Document, JsonFile};
use crate::progress::{Outcome, ProgressStep};

/// How many answered action/cancel ids are kept.
const DONE_KEPT: usize = 32;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default)]
    pub queue: VecDeque<Queued>,
    /// `action:<id>` and `cancel:<id>` already answered.
    #[serde(default)]
    pub done: VecDeque<String>,
}

impl Saved {
    pub fn is_done(&self, key: &str) -> bool {
        self.done.iter().any(|d| d == key)
    }

    pub fn mark_done(&mut self, key: String) {
        if !self.is_done(&key) {
            self.done.push_back(key);
        }
        while self.done.len() > DONE_KEPT {
            self.done.pop_front();
        }
    }
}

/// The deployment being worked on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub base: DeploymentBase,
    /// `deploymentBase/{id}` as linked by the server (query removed).
    pub href: String,
    pub devices: BTreeMap<String, DeviceAction>,
    /// A `cancelAction` for it is being carried out: the devices' own outcomes
    /// (canceled) must not close it; the cancel's answer does. Not saved: after
    /// a restart the server offers the cancel again.
    #[serde(skip)]
    pub canceling: bool,
}

impl Action {
    pub fn id(&self) -> &str {
        &self.base.id
    }

    pub fn all_done(&self) -> bool {
        self.devices
            .values()
            .all(|d| matches!(d.phase, DevicePhase::Done { .. }))
    }

    pub fn done_count(&self) -> u32 {
        self.devices
            .values()
            .filter(|d| matches!(d.phase, DevicePhase::Done { .. }))
            .count() as u32
    }
}

/// One device's part of the action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceAction {
    /// Index of its chunk in the deployment.
    pub chunk: usize,
    pub version: String,
    pub phase: DevicePhase,
    /// The step running now and the last percent reported for it (not persisted:
    /// progress restarts with the update).
    #[serde(skip)]
    pub step: Option<ProgressStep>,
    #[serde(skip)]
    pub sent_percent: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "lowercase")]
pub enum DevicePhase {
    /// Offered to the engine; no progress seen yet.
    Offered,
    /// Progress seen: the update runs (or ran when the agent stopped).
    Running,
    /// Transferred ahead; the update waits (maintenance window, `update: skip`).
    Staged,
    /// Finished; `detail` is the feedback line.
    Done { outcome: Outcome, detail: String },
}

/// A feedback message waiting to be delivered, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    pub url: String,
    pub body: serde_json::Value,
    /// Intermediate progress: a newer one replaces it, and it is not worth a disk
    /// write of its own.
    #[serde(default)]
    pub progress: bool,
}

impl Document for Saved {
    type Entry = Queued;

    fn queue(&self) -> &VecDeque<Queued> {
        &self.queue
    }

    fn queue_mut(&mut self) -> &mut VecDeque<Queued> {
        &mut self.queue
    }

    /// Intermediate progress is not worth a write of its own.
    fn dequeue_is_written(entry: &Queued) -> bool {
        !entry.progress
    }
}

/// `<state_dir>/hawkbit.json`.
pub fn file(state_dir: &Path) -> JsonFile<Saved> {
    JsonFile::open(state_dir.join("hawkbit.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_moves_a_corrupt_file_aside() {
        let dir = tempfile::tempdir().unwrap();
        let file = file(dir.path());
        let p = file.path();
        assert_eq!(file.load_or_default(), Saved::default());
        let mut s = Saved::default();
        s.queue.push_back(Queued {
            url: "http://x/feedback".into(),
            body: serde_json::json!({"a": 1}),
            progress: false,
        });
        for i in 0..40 {
            s.mark_done(format!("action:{i}"));
        }
        assert_eq!(s.done.len(), DONE_KEPT);
        assert!(s.is_done("action:39") && !s.is_done("action:0"));
        file.save_blocking(&s).unwrap();
        assert_eq!(file.load_or_default(), s);
        std::fs::write(p, b"{nope").unwrap();
        assert_eq!(file.load_or_default(), Saved::default());
        assert!(!p.exists());
    }
}
