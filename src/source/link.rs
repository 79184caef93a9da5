//! How a source talks back to the engine from its own task: "look now" (a push, a
//! new deployment) and "cancel that device's update". Requests go through a
//! channel the engine serves concurrently with running updates, so a cancel never
//! waits for the update it cancels.

use tokio::sync::{mpsc, oneshot};

/// What a cancel request achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The update was stopped and ends as canceled.
    Canceled,
    /// No update of that device is running (it may be queued by the source only).
    NotRunning,
    /// The update step is running (the device is being written): stopping now
    /// could brick it, so it runs to its end.
    TooLate,
}

/// A request from a source.
#[derive(Debug)]
pub enum EngineRequest {
    CheckNow,
    Cancel {
        device_id: String,
        reply: oneshot::Sender<CancelOutcome>,
    },
}

/// A source's handle on the engine.
#[derive(Debug, Clone)]
pub struct EngineLink {
    tx: mpsc::UnboundedSender<EngineRequest>,
}

impl EngineLink {
    pub fn new(tx: mpsc::UnboundedSender<EngineRequest>) -> Self {
        EngineLink { tx }
    }

    /// Asks for a poll-and-apply cycle as soon as possible (coalesced).
    pub fn check_now(&self) {
        let _ = self.tx.send(EngineRequest::CheckNow);
    }

    /// Cancels the device's running update, if it can still be stopped.
    pub async fn cancel(&self, device_id: &str) -> CancelOutcome {
        let (reply, answer) = oneshot::channel();
        let request = EngineRequest::Cancel {
            device_id: device_id.to_string(),
            reply,
        };
        if self.tx.send(request).is_err() {
            return CancelOutcome::NotRunning;
        }
        answer.await.unwrap_or(CancelOutcome::NotRunning)
    }
}
