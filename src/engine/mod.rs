//! The update engine: per device, it asks the handler what runs now, asks the
//! source what is offered, decides (`decide`), and runs updates (`update`) —
//! immediate devices in one go, background devices transfer first and update when
//! the handler says the update is executable. One update per device at a time, at
//! most `max_concurrent_updates` overall. Nothing but the engine talks to both a
//! source and a handler.

mod cancel;
mod check;
mod claim;
mod confirm;
mod cycle;
pub mod decide;
pub mod fetch;
mod install;
pub mod installed;
mod liveness;
pub mod lock;
mod read_only;
pub mod recover;
mod reflash;
mod run_loop;
mod source_task;
mod survivor;
pub mod update;
mod vet;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, Config, DeviceConfig};
use crate::download::{DownloadConfig, Downloader};
use crate::handler::UpdateHandler;
use crate::model::{FirmwareStatus, UpdatePolicy};
use crate::progress::{Outcome, Progress, ProgressEvent};
use crate::source::{self, FirmwareSource};
use crate::store::{Store, StoreError};
use crate::trust::TrustPolicy;
use decide::Selection;
use liveness::Liveness;
pub use liveness::Stuck;

/// A configured device and its handler.
pub struct Device {
    pub config: DeviceConfig,
    pub handler: Arc<dyn UpdateHandler>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("state directory: {0}")]
    Store(#[from] StoreError),
    #[error("device {0:?}: policy \"background\" needs a handler with background transfer ({1})")]
    NoBackgroundTransfer(String, String),
    #[error("unknown device {0:?}; configured devices: {1}")]
    UnknownDevice(String, String),
    #[error("image {}: {reason}", path.display())]
    Image {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("device {0:?} is already updating")]
    Busy(String),
    #[error(transparent)]
    Handler(#[from] crate::handler::HandlerError),
    #[error(transparent)]
    Download(#[from] crate::download::DownloadError),
    #[error("source: {0}")]
    Source(#[from] source::SourceError),
}

/// What `check` found for one device.
#[derive(Debug, Clone)]
pub struct DeviceReport {
    pub device_id: String,
    pub device_type: String,
    pub current_version: Option<String>,
    /// `current_version` is the one the agent installed (the device reports none).
    pub installed_by_agent: bool,
    pub status: FirmwareStatus,
    pub selection: Selection,
    /// Why the status could not be fully determined (handler or source error).
    pub error: Option<String>,
    /// The source's error, when it could not say what it offers.
    pub source_error: Option<String>,
}

/// What the last poll-and-apply cycles found (for the status endpoint): each
/// device's latest report, when the source was last asked and whether it answered.
#[derive(Debug, Clone, Default)]
pub struct PollState {
    /// The end of the last device check against the source.
    pub last_poll: Option<SystemTime>,
    /// The latest report of each device checked by a cycle.
    pub reports: HashMap<String, DeviceReport>,
    /// Device checks whose source query failed, since the start.
    pub poll_errors: u64,
    /// The source's error in the latest check; `None` when it answered.
    pub source_error: Option<String>,
}

/// What one poll-and-apply cycle did for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleResult {
    pub device_id: String,
    pub status: FirmwareStatus,
    /// The version the device ran at the start of the cycle.
    pub current_version: Option<String>,
    /// The version installed or transferred, if anything was attempted.
    pub version: Option<String>,
    /// `None` when nothing was attempted or a background transfer now waits.
    pub outcome: Option<Outcome>,
}

struct Inner {
    agent: AgentConfig,
    source: Box<dyn FirmwareSource>,
    devices: Vec<Arc<Device>>,
    store: Store,
    downloader: Downloader,
    /// What firmware must prove before a handler sees it (`[trust]`).
    trust: TrustPolicy,
    events: broadcast::Sender<ProgressEvent>,
    /// The source's receiver, subscribed when the engine is made, so events before
    /// `run` (start-up recovery) reach the source too.
    source_events: Mutex<Option<broadcast::Receiver<ProgressEvent>>>,
    permits: Semaphore,
    running: Mutex<HashMap<String, RunningUpdate>>,
    /// Wakes the run loop for a cycle now (sources, the status endpoint).
    wake: tokio::sync::Notify,
    poll: Mutex<PollState>,
    /// Firmware bytes fetched since the start.
    bytes: AtomicU64,
    /// The run loop's heartbeat and the steps cycles await (the watchdog's view).
    life: Liveness,
    /// Which flash-on-reset locks are due (see `lock.rs`).
    locks: lock::Watch,
}

/// An update in progress: how to stop it and how far it got.
struct RunningUpdate {
    token: CancellationToken,
    progress: Option<Arc<Progress>>,
    /// An update was started (not only the device's check).
    updating: bool,
}

/// How long [`Engine::run`] waits, at shutdown, for the source's task to end by itself.
const SOURCE_STOP_GRACE: Duration = Duration::from_secs(5);

/// How long past `update_timeout` (since its last progress) an update may run
/// before it counts as stuck: time for the timeout to stop it and clean up.
pub const STUCK_GRACE: Duration = Duration::from_secs(60);

/// The engine; cheap to clone, all clones share one state.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Inner {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, RunningUpdate>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Engine {
    /// An engine over explicit handlers (tests and embedders plug their own in).
    pub fn new(
        agent: AgentConfig,
        download: &DownloadConfig,
        source: Box<dyn FirmwareSource>,
        devices: Vec<(DeviceConfig, Arc<dyn UpdateHandler>)>,
    ) -> Result<Engine, EngineError> {
        let store = Store::open(&agent.state_dir)?;
        Engine::with_store(agent, download, source, devices, store)
    }

    pub(super) fn with_store(
        agent: AgentConfig,
        download: &DownloadConfig,
        source: Box<dyn FirmwareSource>,
        devices: Vec<(DeviceConfig, Arc<dyn UpdateHandler>)>,
        store: Store,
    ) -> Result<Engine, EngineError> {
        for (config, handler) in &devices {
            if config.policy == UpdatePolicy::Background && handler.background_transfer().is_none()
            {
                return Err(EngineError::NoBackgroundTransfer(
                    config.id.clone(),
                    match config.handler.name() {
                        "command" => "command handler: set transfer_command".into(),
                        other => format!("handler {other:?} has none"),
                    },
                ));
            }
        }
        let downloader = Downloader::new(download.clone())?;
        let (events, source_events) = broadcast::channel(1024);
        Ok(Engine {
            inner: Arc::new(Inner {
                permits: Semaphore::new(agent.max_concurrent_updates.max(1)),
                agent,
                source,
                devices: devices
                    .into_iter()
                    .map(|(config, handler)| Arc::new(Device { config, handler }))
                    .collect(),
                store,
                downloader,
                trust: TrustPolicy::default(),
                events,
                source_events: Mutex::new(Some(source_events)),
                running: Mutex::new(HashMap::new()),
                wake: tokio::sync::Notify::new(),
                poll: Mutex::new(PollState::default()),
                bytes: AtomicU64::new(0),
                life: Liveness::new(),
                locks: lock::Watch::default(),
            }),
        })
    }

    /// The engine the config describes.
    pub fn from_config(config: &Config) -> Result<Engine, EngineError> {
        let devices = read_only::devices_of(config)?;
        Ok(Engine::new(
            config.agent.clone(),
            &config.download,
            source::from_config(config)?,
            devices,
        )?
        .with_trust(config.trust.clone()))
    }

    /// This engine with `trust` as its trust policy (default: no keys, strong
    /// checksums required). Call it on a new engine, before it is cloned.
    pub fn with_trust(mut self, trust: TrustPolicy) -> Engine {
        if !trust.require_signature {
            tracing::warn!("firmware authenticity: {}", trust.describe());
        }
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.trust = trust,
            None => tracing::error!("trust policy set on a shared engine: ignored"),
        }
        self
    }

    /// The trust policy in force.
    pub fn trust(&self) -> &TrustPolicy {
        &self.inner.trust
    }

    /// Progress events of every update from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ProgressEvent> {
        self.inner.events.subscribe()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn source_description(&self) -> String {
        self.inner.source.describe()
    }

    pub fn devices(&self) -> impl Iterator<Item = &DeviceConfig> {
        self.inner.devices.iter().map(|d| &d.config)
    }

    /// What the poll-and-apply cycles found so far.
    pub fn poll_state(&self) -> PollState {
        self.inner
            .poll
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Firmware bytes fetched (downloaded or copied) since the engine started.
    pub fn bytes_fetched(&self) -> u64 {
        self.inner.bytes.load(Ordering::Relaxed)
    }

    /// Asks the run loop for a poll-and-apply cycle as soon as possible
    /// (coalesced; a cycle that runs already is not interrupted).
    pub fn check_now(&self) {
        self.inner.wake.notify_one();
    }

    /// Makes [`Engine::run`]'s loop beat every `every` (for a watchdog: see
    /// [`Engine::since_heartbeat`]). Set before `run`.
    pub fn set_heartbeat(&self, every: Duration) {
        self.inner.life.set_beat_every(every);
    }

    /// How long ago the run loop last beat. The loop beats between and during
    /// cycles; when it stops being polled (a hung or ended loop), this grows.
    pub fn since_heartbeat(&self) -> Duration {
        self.inner.life.since_beat()
    }

    /// A step of a cycle (reading a version, asking the source, an update without
    /// progress) that has been awaited longer than `update_timeout` (an update:
    /// plus [`STUCK_GRACE`]): the loop still runs, but that cycle hangs.
    pub fn stuck(&self) -> Option<Stuck> {
        self.inner.life.stuck()
    }

    /// Awaits `work` as a recorded step of `key`'s cycle, bounded by
    /// `update_timeout` (plus `extra`).
    async fn step<F: Future>(
        &self,
        key: &str,
        what: &'static str,
        extra: Duration,
        work: F,
    ) -> F::Output {
        let bound = self.inner.agent.update_timeout.saturating_add(extra);
        self.inner.life.during(key, what, bound, work).await
    }

    fn device(&self, id: &str) -> Result<Arc<Device>, EngineError> {
        self.inner
            .devices
            .iter()
            .find(|d| d.config.id == id)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<&str> = self.devices().map(|d| d.id.as_str()).collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                EngineError::UnknownDevice(id.to_string(), known)
            })
    }

    pub(crate) fn inner_devices(&self) -> &[Arc<Device>] {
        &self.inner.devices
    }

    pub(crate) fn events(&self) -> broadcast::Sender<ProgressEvent> {
        self.inner.events.clone()
    }
}
