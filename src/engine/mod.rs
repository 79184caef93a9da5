//! The update engine: per device, it asks the handler what runs now, asks the
//! source what is offered, decides (`decide`), and runs updates (`update`) —
//! immediate devices in one go, background devices transfer first and update when
//! the handler says the update is executable. One update per device at a time, at
//! most `max_concurrent_updates` overall. Nothing but the engine talks to both a
//! source and a handler.

mod claim;
mod confirm;
pub mod decide;
pub mod fetch;
pub mod installed;
mod liveness;
pub mod lock;
mod read_only;
pub mod recover;
mod reflash;
mod source_task;
mod survivor;
pub mod update;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, broadcast};
use tokio_util::sync::CancellationToken;

use crate::config::{AgentConfig, Config, DeviceConfig};
use crate::download::{DownloadConfig, Downloader};
use crate::handler::UpdateHandler;
use crate::model::{Firmware, FirmwareLocation, FirmwareStatus, UpdatePolicy};
use crate::progress::{CommitHook, Outcome, ProcessHook, Progress, ProgressEvent, ProgressStep};
use crate::schedule;
use crate::source::{self, CancelOutcome, DeviceVersion, EngineRequest, FirmwareSource};
use crate::store::{Store, StoreError};
use crate::trust::TrustPolicy;
use claim::Running;
use decide::Selection;
use liveness::Liveness;
pub use liveness::Stuck;
use update::Mode;

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

    /// One poll-and-apply cycle of one device now, beside the run loop (the
    /// status endpoint's "update this device"). A device already updating is
    /// left alone.
    pub async fn cycle(&self, device_id: &str) -> Result<CycleResult, EngineError> {
        let device = self.device(device_id)?;
        let claim = self.claim(device_id)?;
        Ok(self.cycle_claimed(&device, &claim).await)
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

    /// Each device's firmware status and the firmware it would get; a device
    /// being updated is not asked (see `claim.rs`).
    pub async fn check(&self) -> Vec<DeviceReport> {
        let mut reports = Vec::new();
        for device in &self.inner.devices {
            match self.busy_report(device) {
                Some(busy) => reports.push(busy),
                None => reports.push(self.check_device(device).await),
            }
        }
        reports
    }

    async fn check_device(&self, device: &Device) -> DeviceReport {
        let mut errors = Vec::new();
        let id = device.config.id.as_str();
        let read = self
            .step(
                id,
                "reading the version",
                Duration::ZERO,
                installed::current_version(device, &self.inner.store),
            )
            .await;
        let answered = read.is_ok();
        let current = match read {
            Ok(c) => c,
            Err(e) => {
                errors.push(format!("current version: {e}"));
                installed::Current::default()
            }
        };
        let installed_by_agent = current.installed_by_agent;
        let current = current.version;
        let offered = match self
            .step(
                id,
                "asking the source",
                Duration::ZERO,
                self.inner.source.firmware_for(&device.config),
            )
            .await
        {
            Ok(f) => f,
            Err(e) => {
                errors.push(format!("source: {e}"));
                Vec::new()
            }
        };
        let source_error = errors.last().filter(|e| e.starts_with("source: ")).cloned();
        let selection = match self
            .inner
            .locks
            .view(&self.inner.store, &device.config, answered)
        {
            Ok(lock) => decide::choose(&device.config, current.as_deref(), &offered, lock.as_ref()),
            Err(e) => {
                errors.push(format!("lock: {e}"));
                Selection::default()
            }
        };
        let executable = if selection.candidate.is_some() {
            match self
                .step(
                    id,
                    "asking if executable",
                    Duration::ZERO,
                    self.executable(device),
                )
                .await
            {
                Ok(x) => x,
                Err(e) => {
                    errors.push(format!("update executable: {e}"));
                    false
                }
            }
        } else {
            false
        };
        DeviceReport {
            device_id: device.config.id.clone(),
            device_type: device.config.device_type.clone(),
            status: selection.status(current.as_deref(), executable),
            current_version: current,
            installed_by_agent,
            selection,
            error: (!errors.is_empty()).then(|| errors.join("; ")),
            source_error,
        }
    }

    fn record_poll(&self, report: &DeviceReport) {
        let mut poll = self.inner.poll.lock().unwrap_or_else(|p| p.into_inner());
        poll.last_poll = Some(SystemTime::now());
        if report.source_error.is_some() {
            poll.poll_errors += 1;
        }
        poll.source_error.clone_from(&report.source_error);
        poll.reports
            .insert(report.device_id.clone(), report.clone());
    }

    /// ESH: a background device's update is executable only once its firmware is
    /// on the device, and when the handler says so.
    async fn executable(&self, device: &Device) -> Result<bool, String> {
        device
            .handler
            .is_update_executable()
            .await
            .map_err(|e| e.to_string())
    }

    /// One poll-and-apply cycle over all devices, concurrently.
    pub async fn run_once(&self) -> Vec<CycleResult> {
        let mut set = tokio::task::JoinSet::new();
        for (idx, device) in self.inner.devices.iter().enumerate() {
            let engine = self.clone();
            let device = device.clone();
            set.spawn(async move { (idx, engine.cycle_device(&device).await) });
        }
        let mut results: Vec<(usize, CycleResult)> = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(r) => results.push(r),
                Err(e) => tracing::error!("device task failed: {e}"),
            }
        }
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    /// One cycle of a device this cycle has claimed, so that nothing else runs
    /// its commands meanwhile (see `claim.rs`).
    async fn cycle_claimed(&self, device: &Arc<Device>, claim: &Running) -> CycleResult {
        let report = self.check_device(device).await;
        self.record_poll(&report);
        let id = device.config.id.clone();
        if let Some(e) = &report.error {
            tracing::warn!(device = %id, "{e}");
        }
        for (version, reason) in &report.selection.refused {
            tracing::info!(device = %id, firmware_version = %version, "not installing: {reason}");
        }
        let mut result = CycleResult {
            device_id: id.clone(),
            status: report.status,
            current_version: report.current_version.clone(),
            version: None,
            outcome: None,
        };
        if let Some((version, outcome)) = self.reflash(device, claim).await {
            result.version = Some(version);
            result.outcome = outcome;
            self.confirmed(&result);
            return result;
        }
        let Some(firmware) = report.selection.candidate else {
            return result;
        };
        let staged = match self.inner.store.load(&id) {
            Ok(s) => s.transferred.is_some_and(|t| t.version == firmware.version),
            Err(e) => {
                tracing::error!(device = %id, "{e}");
                false
            }
        };
        let plan = decide::plan(
            device.config.policy,
            firmware.deployment.as_ref(),
            staged,
            report.status == FirmwareStatus::UpdateExecutable,
        );
        let mode = match plan {
            decide::Plan::Run(mode) => mode,
            decide::Plan::Wait(why) => {
                tracing::info!(device = %id, firmware_version = %firmware.version, "{why}");
                return result;
            }
        };
        result.version = Some(firmware.version.clone());
        match self.start(device, &firmware, mode, claim).await {
            Ok(outcome) => result.outcome = outcome,
            Err(e) => tracing::info!(device = %id, "{e}"),
        }
        // A background transfer that finished may be followed by its update at once,
        // unless the server said not yet.
        let update_allowed = firmware
            .deployment
            .as_ref()
            .is_none_or(|d| d.update_allowed());
        if mode == Mode::TransferOnly
            && result.outcome.is_none()
            && update_allowed
            && let Ok(true) = self.executable(device).await
        {
            result.outcome = self
                .start(device, &firmware, Mode::UpdateTransferred, claim)
                .await
                .unwrap_or(None);
            result.status = FirmwareStatus::UpdateExecutable;
        }
        self.confirmed(&result);
        result
    }

    /// The device confirmed the new version: what the status endpoint shows
    /// until the next poll.
    fn confirmed(&self, result: &CycleResult) {
        if result.outcome != Some(Outcome::Success) {
            return;
        }
        let mut poll = self.inner.poll.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = poll.reports.get_mut(&result.device_id) {
            r.current_version.clone_from(&result.version);
            r.status = FirmwareStatus::UpToDate;
            r.selection.candidate = None;
            r.error = None;
        }
    }

    /// Runs one update of `device` (one at a time per device; waits for a global
    /// permit).
    async fn start(
        &self,
        device: &Arc<Device>,
        firmware: &Firmware,
        mode: Mode,
        running: &Running,
    ) -> Result<Option<Outcome>, EngineError> {
        if let Some(r) = self.inner.running().get_mut(&device.config.id) {
            r.updating = true;
        }
        let _permit = self.inner.permits.acquire().await;
        let progress = Arc::new(Progress::new(
            &device.config.id,
            &firmware.version,
            self.inner.events.clone(),
        ));
        if let Some(r) = self.inner.running().get_mut(&device.config.id) {
            r.progress = Some(progress.clone());
        }
        if running.token.is_cancelled() {
            // Canceled while waiting for a permit: nothing may be written.
            progress.cancel_before_commit();
        }
        let (store, id) = (self.inner.store.clone(), device.config.id.clone());
        progress.on_process(ProcessHook(Box::new(move |pgid| {
            survivor::record(&store, &id, pgid)
        })));
        let (store, id) = (self.inner.store.clone(), device.config.id.clone());
        progress.on_commit(CommitHook(Box::new(move || {
            update::mark_written(&store, &id)
        })));
        let ctx = update::Context {
            store: &self.inner.store,
            downloader: &self.inner.downloader,
            trust: &self.inner.trust,
            timeout: self.inner.agent.update_timeout,
            confirm_window: self.inner.agent.confirm_window,
            bytes: &self.inner.bytes,
        };
        let work = update::run(
            &ctx,
            device,
            firmware,
            mode,
            progress,
            running.token.clone(),
        );
        Ok(self
            .step(&device.config.id, "updating", STUCK_GRACE, work)
            .await)
    }

    /// Cancels the device's running update, unless the device is being written:
    /// its update step runs or the handler passed its commit point.
    pub fn cancel(&self, device_id: &str) -> CancelOutcome {
        let running = self.inner.running();
        let Some(update) = running.get(device_id).filter(|u| u.updating) else {
            return CancelOutcome::NotRunning;
        };
        let step = update.progress.as_ref().and_then(|p| p.current_step());
        if matches!(step, Some(ProgressStep::Updating | ProgressStep::Rebooting)) {
            return CancelOutcome::TooLate;
        }
        // The handler's commit point (its first write to the device) decides,
        // atomically: either no write starts, or the cancel is too late.
        if let Some(p) = &update.progress
            && !p.cancel_before_commit()
        {
            return CancelOutcome::TooLate;
        }
        update.token.cancel();
        CancelOutcome::Canceled
    }

    /// Installs a local image on a device now (`fota-agent install`): verified like
    /// any other, and checked against the device's version rules when `version` is
    /// given.
    pub async fn install(
        &self,
        device_id: &str,
        image: &Path,
        version: Option<&str>,
        checksums: Vec<crate::checksum::Checksum>,
    ) -> Result<Outcome, EngineError> {
        let device = self.device(device_id)?;
        // A wrong path is the operator's typo, not a failed update: nothing is
        // recorded for the device.
        readable_file(image)?;
        // Claimed before the version is read: no command of a busy device runs.
        let claim = self.claim(device_id)?;
        let mut firmware = Firmware::new(
            &device.config.device_type,
            version.unwrap_or("unknown"),
            FirmwareLocation::File(image.to_path_buf()),
        );
        firmware.checksums = checksums;
        if let Some(reason) = self.locked_out(&device.config, version) {
            return Ok(self.refused(device_id, version.unwrap_or("unknown"), reason));
        }
        if let Some(target) = version {
            let current = installed::current_version(&device, &self.inner.store)
                .await
                .map(|c| c.version);
            let refusal = match current {
                Ok(Some(current)) => crate::version::check_upgrade(
                    device.config.version_scheme,
                    &current,
                    target,
                    None,
                    device.config.only_newer,
                )
                .err()
                .map(|e| e.to_string()),
                Ok(None) => None,
                Err(e) => Some(format!("cannot read the current version: {e}")),
            };
            if let Some(reason) = refusal {
                return Ok(self.refused(device_id, target, reason));
            }
        }
        let mode = if version.is_some() {
            Mode::Immediate
        } else {
            Mode::Install
        };
        Ok(self
            .start(&device, &firmware, mode, &claim)
            .await?
            .unwrap_or(Outcome::Success))
    }

    /// Polls and applies every `poll_interval` (or when the source asks) until
    /// `shutdown`, while the source's own task runs and hears every progress event.
    /// Shutdown drops a running update (handlers stop their processes); its
    /// in-flight record lets the next start resolve it.
    pub async fn run(&self, shutdown: CancellationToken) {
        let (tx, requests) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = tokio::task::JoinSet::new();
        // The source's task ends by itself at `shutdown` (finishing a report the
        // server is answering, so a restart does not repeat it); it is aborted
        // only if it takes longer than SOURCE_STOP_GRACE. Before, it is restarted
        // whenever it ends.
        let mut source_task = tokio::task::JoinSet::new();
        source_task.spawn(source_task::supervise(self.clone(), tx, shutdown.clone()));
        let engine = self.clone();
        let early = self
            .inner
            .source_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let mut events = early.unwrap_or_else(|| self.subscribe());
        // What happened before `run` (recovery's outcomes) reaches the source
        // before the first cycle can act on a stale offer.
        while let Ok(ev) = events.try_recv() {
            self.inner.source.report(&ev).await;
        }
        tasks.spawn(async move {
            loop {
                match events.recv().await {
                    Ok(ev) => engine.inner.source.report(&ev).await,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("source missed {n} progress events")
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        self.spawn_helpers(&mut tasks, requests);
        // The heartbeat ticks inside this loop's own `select!`s, so it stops when
        // the loop stops being polled.
        let every = self.inner.life.beat_every();
        let mut beat = tokio::time::interval(every.unwrap_or(Duration::from_secs(3600)));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let beating = every.is_some();
        'run: loop {
            let cycle = self.run_once();
            tokio::pin!(cycle);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'run,
                    results = &mut cycle => {
                        let report = self.report_versions(&results);
                        self.step("source", "reporting versions", Duration::ZERO, report).await;
                        break;
                    }
                    _ = beat.tick(), if beating => self.inner.life.beat(),
                }
            }
            // ±20 %, so a fleet's cycles (and MCS's availability queries) drift apart.
            let interval = self.inner.agent.poll_interval;
            let pause = tokio::time::sleep(schedule::jittered(interval, schedule::random()));
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'run,
                    _ = &mut pause => break,
                    _ = self.inner.wake.notified() => break,
                    _ = beat.tick(), if beating => self.inner.life.beat(),
                }
            }
        }
        tasks.abort_all();
        let stopped = tokio::time::timeout(SOURCE_STOP_GRACE, source_task.join_all()).await;
        if stopped.is_err() {
            tracing::warn!("source did not stop within {SOURCE_STOP_GRACE:?}; aborted");
        }
    }

    /// The run loop's helpers: progress as the watchdog's sign of life (see
    /// `liveness.rs`), and the source's requests.
    fn spawn_helpers(
        &self,
        tasks: &mut tokio::task::JoinSet<()>,
        mut requests: tokio::sync::mpsc::UnboundedReceiver<EngineRequest>,
    ) {
        let (engine, mut progress) = (self.clone(), self.subscribe());
        tasks.spawn(async move {
            loop {
                match progress.recv().await {
                    Ok(ev) => engine.inner.life.progressed(&ev.device_id),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let engine = self.clone();
        tasks.spawn(async move {
            while let Some(request) = requests.recv().await {
                match request {
                    EngineRequest::CheckNow => engine.check_now(),
                    EngineRequest::Cancel { device_id, reply } => {
                        let _ = reply.send(engine.cancel(&device_id));
                    }
                }
            }
        });
    }

    /// Tells the source what each device runs after a cycle.
    pub async fn report_versions(&self, results: &[CycleResult]) {
        let versions: Vec<DeviceVersion> = results
            .iter()
            .zip(self.devices())
            .map(|(r, d)| DeviceVersion {
                device_id: r.device_id.clone(),
                device_type: d.device_type.clone(),
                version: match (&r.outcome, &r.version) {
                    (Some(Outcome::Success), Some(v)) => Some(v.clone()),
                    _ => r.current_version.clone(),
                },
            })
            .collect();
        self.inner.source.report_versions(&versions).await;
    }

    pub(crate) fn inner_devices(&self) -> &[Arc<Device>] {
        &self.inner.devices
    }

    pub(crate) fn events(&self) -> broadcast::Sender<ProgressEvent> {
        self.inner.events.clone()
    }
}

/// `Ok` when `path` is a regular file this process can open.
fn readable_file(path: &Path) -> Result<(), EngineError> {
    let refused = |reason: String| EngineError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| refused(e.to_string()))?;
    if !meta.is_file() {
        return Err(refused("not a regular file".into()));
    }
    std::fs::File::open(path).map_err(|e| refused(e.to_string()))?;
    Ok(())
}
