//! Progress of one update (ESH `ProgressCallback`): a declared sequence of steps,
//! `next` through them, percent within a step, `pending`, and exactly one terminal
//! outcome. Every change is broadcast as a [`ProgressEvent`] so the CLI, the logs and
//! (later) servers and the status endpoint all see the same story.

use std::fmt;
use std::sync::Mutex;

use tokio::sync::broadcast;

/// A phase of an update, named as ESH, ThingsBoard and hawkBit name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProgressStep {
    Downloading,
    Transferring,
    Updating,
    Waiting,
    Rebooting,
}

impl fmt::Display for ProgressStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProgressStep::Downloading => "DOWNLOADING",
            ProgressStep::Transferring => "TRANSFERRING",
            ProgressStep::Updating => "UPDATING",
            ProgressStep::Waiting => "WAITING",
            ProgressStep::Rebooting => "REBOOTING",
        })
    }
}

/// How an update ended. Every update ends in exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failed(String),
    Canceled,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Success => f.write_str("success"),
            Outcome::Failed(r) => write!(f, "failed: {r}"),
            Outcome::Canceled => f.write_str("canceled"),
        }
    }
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressKind {
    /// The sequence of steps this update will go through.
    Sequence(Vec<ProgressStep>),
    /// A step started.
    Step(ProgressStep),
    /// Percent done within the current step.
    Percent(ProgressStep, u8),
    /// The update waits for something outside the agent (device busy, user).
    Pending,
    /// The terminal outcome.
    Finished(Outcome),
}

/// One progress event of one update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressEvent {
    pub device_id: String,
    pub firmware_version: String,
    pub kind: ProgressKind,
}

/// A misuse of the progress protocol by a handler or the engine.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProgressError {
    #[error("progress sequence already defined")]
    SequenceAlreadyDefined,
    #[error("progress sequence is empty")]
    EmptySequence,
    #[error("no further progress step after {0:?}")]
    NoMoreSteps(Option<ProgressStep>),
    #[error("step {0} is not ahead in the progress sequence")]
    StepNotAhead(ProgressStep),
    #[error("no progress step started")]
    NoCurrentStep,
    #[error("percent {0} out of range 0..=100")]
    PercentOutOfRange(u8),
    #[error("percent {new} is lower than {previous}")]
    PercentDecreased { previous: u8, new: u8 },
    #[error("update already finished ({0})")]
    AlreadyFinished(Outcome),
    #[error("canceled before the device was written")]
    CanceledBeforeCommit,
}

/// Whether the device has been written yet: the line between a cancel that is
/// safe and one that would leave the device half-written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Commit {
    #[default]
    Open,
    /// The handler is writing the device: a cancel is too late.
    Committed,
    /// A cancel came first: the handler must not write.
    Canceled,
}

#[derive(Debug, Default)]
struct State {
    sequence: Vec<ProgressStep>,
    current: Option<usize>,
    percent: Option<u8>,
    outcome: Option<Outcome>,
    commit: Commit,
}

/// The progress of one update; shared by the engine and the handler.
#[derive(Debug)]
pub struct Progress {
    device_id: String,
    firmware_version: String,
    events: broadcast::Sender<ProgressEvent>,
    state: Mutex<State>,
    on_process: Mutex<Option<ProcessHook>>,
    on_commit: Mutex<Option<CommitHook>>,
}

/// Called once when the handler passes its commit point (the engine marks the
/// in-flight record: a device left half-written is flashed again).
pub struct CommitHook(pub Box<dyn Fn() + Send + Sync>);

/// Called with the process group of each command a handler starts for the update.
pub struct ProcessHook(pub Box<dyn Fn(i32) + Send + Sync>);

impl std::fmt::Debug for CommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitHook")
    }
}

impl std::fmt::Debug for ProcessHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProcessHook")
    }
}

impl Progress {
    pub fn new(
        device_id: impl Into<String>,
        firmware_version: impl Into<String>,
        events: broadcast::Sender<ProgressEvent>,
    ) -> Self {
        Progress {
            device_id: device_id.into(),
            firmware_version: firmware_version.into(),
            events,
            state: Mutex::new(State::default()),
            on_process: Mutex::new(None),
            on_commit: Mutex::new(None),
        }
    }

    /// Who hears that the device is being written (see [`CommitHook`]).
    pub fn on_commit(&self, hook: CommitHook) {
        *self.on_commit.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// The handler's commit point, called right before its first write to the
    /// device (ESP8266 FLASH_BEGIN, the first XMODEM data block): from now on a
    /// cancel is too late. Refused when a cancel came first; the handler then
    /// stops without writing.
    pub fn commit(&self) -> Result<(), ProgressError> {
        let mut s = self.state();
        Self::live(&s)?;
        match s.commit {
            Commit::Canceled => return Err(ProgressError::CanceledBeforeCommit),
            Commit::Committed => return Ok(()),
            Commit::Open => s.commit = Commit::Committed,
        }
        drop(s);
        if let Some(hook) = &*self.on_commit.lock().unwrap_or_else(|p| p.into_inner()) {
            (hook.0)();
        }
        Ok(())
    }

    /// Asks to cancel before the commit point: `false` when the device is
    /// already being written (too late), `true` when no write will start.
    pub fn cancel_before_commit(&self) -> bool {
        let mut s = self.state();
        match s.commit {
            Commit::Committed => false,
            Commit::Open | Commit::Canceled => {
                s.commit = Commit::Canceled;
                true
            }
        }
    }

    /// Whether the handler passed its commit point.
    pub fn committed(&self) -> bool {
        self.state().commit == Commit::Committed
    }

    /// Who hears of the commands started for this update (the engine records
    /// them in the in-flight record, so recovery can stop a survivor).
    pub fn on_process(&self, hook: ProcessHook) {
        *self.on_process.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    /// A handler started a command for this update in process group `pgid`.
    pub fn process_started(&self, pgid: i32) {
        if let Some(hook) = &*self.on_process.lock().unwrap_or_else(|p| p.into_inner()) {
            (hook.0)(pgid);
        }
    }

    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    pub fn firmware_version(&self) -> &str {
        &self.firmware_version
    }

    fn emit(&self, kind: ProgressKind) {
        // No subscriber is not an error: progress still has to be tracked.
        let _ = self.events.send(ProgressEvent {
            device_id: self.device_id.clone(),
            firmware_version: self.firmware_version.clone(),
            kind,
        });
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of plain
        // data; the data is still consistent enough to report.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live(state: &State) -> Result<(), ProgressError> {
        match &state.outcome {
            Some(o) => Err(ProgressError::AlreadyFinished(o.clone())),
            None => Ok(()),
        }
    }

    /// Declares the steps; allowed once, before the first `next`.
    pub fn define_sequence(&self, steps: &[ProgressStep]) -> Result<(), ProgressError> {
        let mut s = self.state();
        Self::live(&s)?;
        if !s.sequence.is_empty() {
            return Err(ProgressError::SequenceAlreadyDefined);
        }
        if steps.is_empty() {
            return Err(ProgressError::EmptySequence);
        }
        s.sequence = steps.to_vec();
        drop(s);
        self.emit(ProgressKind::Sequence(steps.to_vec()));
        Ok(())
    }

    /// Starts the next step of the sequence.
    pub fn next(&self) -> Result<ProgressStep, ProgressError> {
        let mut s = self.state();
        Self::live(&s)?;
        let idx = s.current.map_or(0, |i| i + 1);
        let Some(&step) = s.sequence.get(idx) else {
            return Err(ProgressError::NoMoreSteps(s.current.map(|i| s.sequence[i])));
        };
        s.current = Some(idx);
        s.percent = None;
        drop(s);
        self.emit(ProgressKind::Step(step));
        Ok(step)
    }

    /// Moves forward to `step` (through any steps before it); a no-op when it is
    /// already the current step. Lets a handler say "now the update step starts"
    /// whether the engine entered it at TRANSFERRING or at UPDATING.
    pub fn advance_to(&self, step: ProgressStep) -> Result<(), ProgressError> {
        loop {
            let (current, ahead) = {
                let s = self.state();
                Self::live(&s)?;
                let cur = s.current.map(|i| s.sequence[i]);
                let from = s.current.map_or(0, |i| i + 1);
                (
                    cur,
                    s.sequence[from.min(s.sequence.len())..].contains(&step),
                )
            };
            if current == Some(step) {
                return Ok(());
            }
            if !ahead {
                return Err(ProgressError::StepNotAhead(step));
            }
            self.next()?;
        }
    }

    /// Percent done within the current step; never decreases within a step. Repeated
    /// values are not re-broadcast.
    pub fn update(&self, percent: u8) -> Result<(), ProgressError> {
        let mut s = self.state();
        Self::live(&s)?;
        let Some(idx) = s.current else {
            return Err(ProgressError::NoCurrentStep);
        };
        if percent > 100 {
            return Err(ProgressError::PercentOutOfRange(percent));
        }
        if let Some(previous) = s.percent {
            if percent < previous {
                return Err(ProgressError::PercentDecreased {
                    previous,
                    new: percent,
                });
            }
            if percent == previous {
                return Ok(());
            }
        }
        s.percent = Some(percent);
        let step = s.sequence[idx];
        drop(s);
        self.emit(ProgressKind::Percent(step, percent));
        Ok(())
    }

    /// The update waits for something outside the agent.
    pub fn pending(&self) -> Result<(), ProgressError> {
        Self::live(&self.state())?;
        self.emit(ProgressKind::Pending);
        Ok(())
    }

    fn finish(&self, outcome: Outcome) -> Result<(), ProgressError> {
        let mut s = self.state();
        Self::live(&s)?;
        s.outcome = Some(outcome.clone());
        drop(s);
        self.emit(ProgressKind::Finished(outcome));
        Ok(())
    }

    pub fn success(&self) -> Result<(), ProgressError> {
        self.finish(Outcome::Success)
    }

    pub fn failed(&self, reason: impl Into<String>) -> Result<(), ProgressError> {
        self.finish(Outcome::Failed(reason.into()))
    }

    pub fn canceled(&self) -> Result<(), ProgressError> {
        self.finish(Outcome::Canceled)
    }

    pub fn current_step(&self) -> Option<ProgressStep> {
        let s = self.state();
        s.current.map(|i| s.sequence[i])
    }

    pub fn percent(&self) -> Option<u8> {
        self.state().percent
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.state().outcome.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProgressStep::*;

    fn progress() -> (Progress, broadcast::Receiver<ProgressEvent>) {
        let (tx, rx) = broadcast::channel(64);
        (Progress::new("dev", "2.0", tx), rx)
    }

    fn kinds(rx: &mut broadcast::Receiver<ProgressEvent>) -> Vec<ProgressKind> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.kind)
            .collect()
    }

    #[test]
    fn a_cancel_wins_only_before_the_commit_point() {
        let (p, _rx) = progress();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let h = hits.clone();
        p.on_commit(CommitHook(Box::new(move || {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })));
        p.commit().unwrap();
        p.commit().unwrap();
        assert!(p.committed());
        assert!(!p.cancel_before_commit(), "too late once committed");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);

        let (q, _rx) = progress();
        assert!(q.cancel_before_commit());
        assert_eq!(q.commit(), Err(ProgressError::CanceledBeforeCommit));
        assert!(!q.committed());
    }

    #[test]
    fn walks_the_sequence_and_ends_once() {
        let (p, mut rx) = progress();
        p.define_sequence(&[Downloading, Transferring, Updating])
            .unwrap();
        assert_eq!(p.next(), Ok(Downloading));
        p.update(10).unwrap();
        p.update(10).unwrap();
        p.update(50).unwrap();
        assert!(matches!(
            p.update(40),
            Err(ProgressError::PercentDecreased { .. })
        ));
        assert_eq!(p.update(101), Err(ProgressError::PercentOutOfRange(101)));
        assert_eq!(p.next(), Ok(Transferring));
        p.update(5).unwrap();
        p.advance_to(Updating).unwrap();
        p.advance_to(Updating).unwrap();
        assert_eq!(p.next(), Err(ProgressError::NoMoreSteps(Some(Updating))));
        p.success().unwrap();
        assert!(matches!(
            p.failed("late"),
            Err(ProgressError::AlreadyFinished(Outcome::Success))
        ));
        assert!(p.next().is_err());
        assert_eq!(
            kinds(&mut rx),
            vec![
                ProgressKind::Sequence(vec![Downloading, Transferring, Updating]),
                ProgressKind::Step(Downloading),
                ProgressKind::Percent(Downloading, 10),
                ProgressKind::Percent(Downloading, 50),
                ProgressKind::Step(Transferring),
                ProgressKind::Percent(Transferring, 5),
                ProgressKind::Step(Updating),
                ProgressKind::Finished(Outcome::Success),
            ]
        );
    }

    #[test]
    fn rejects_misuse() {
        let (p, _rx) = progress();
        assert_eq!(p.update(1), Err(ProgressError::NoCurrentStep));
        assert_eq!(p.define_sequence(&[]), Err(ProgressError::EmptySequence));
        p.define_sequence(&[Updating]).unwrap();
        assert_eq!(
            p.define_sequence(&[Updating]),
            Err(ProgressError::SequenceAlreadyDefined)
        );
        assert_eq!(
            p.advance_to(Transferring),
            Err(ProgressError::StepNotAhead(Transferring))
        );
        p.canceled().unwrap();
        assert_eq!(p.outcome(), Some(Outcome::Canceled));
    }
}
