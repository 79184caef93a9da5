//! A source's side of the engine loop: it hears every progress event and the
//! versions after a cycle, and can ask for a check now or a cancel.

mod common;
mod process;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use fota_agent::config::DeviceConfig;
use fota_agent::engine::Engine;
use fota_agent::handler::UpdateHandler;
use fota_agent::model::{Firmware, FirmwareLocation, UpdatePolicy};
use fota_agent::progress::{Outcome, ProgressEvent, ProgressKind};
use fota_agent::source::{CancelOutcome, DeviceVersion, EngineLink, FirmwareSource, SourceError};
use process::until;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Recorder {
    offer: Mutex<Vec<Firmware>>,
    events: Mutex<Vec<ProgressEvent>>,
    versions: Mutex<Vec<Vec<DeviceVersion>>>,
    link: Mutex<Option<EngineLink>>,
}

struct Source(Arc<Recorder>);

#[async_trait]
impl FirmwareSource for Source {
    fn describe(&self) -> String {
        "recorder".into()
    }
    async fn firmware_for(&self, _d: &DeviceConfig) -> Result<Vec<Firmware>, SourceError> {
        Ok(self.0.offer.lock().unwrap().clone())
    }
    async fn report(&self, event: &ProgressEvent) {
        self.0.events.lock().unwrap().push(event.clone());
    }
    async fn report_versions(&self, versions: &[DeviceVersion]) {
        self.0.versions.lock().unwrap().push(versions.to_vec());
    }
    async fn run(&self, link: EngineLink, shutdown: CancellationToken) {
        *self.0.link.lock().unwrap() = Some(link);
        shutdown.cancelled().await;
    }
}

#[tokio::test]
async fn pushes_trigger_cycles_and_the_source_hears_everything() {
    let (state, fw) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let image = offer(fw.path(), "t", "2.0", b"new firmware", "");
    let rec = Arc::new(Recorder::default());
    let dev = FakeDevice::new("1.0");
    let engine = Engine::new(
        agent_config(state.path()),
        &Default::default(),
        Box::new(Source(rec.clone())),
        vec![(
            device_config("d", "t", UpdatePolicy::Immediate),
            dev.clone() as Arc<dyn UpdateHandler>,
        )],
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn({
        let (engine, shutdown) = (engine.clone(), shutdown.clone());
        async move { engine.run(shutdown).await }
    });

    // First cycle: nothing offered; versions reported.
    until("first versions", || rec.versions.lock().unwrap().len() == 1).await;
    assert_eq!(
        rec.versions.lock().unwrap()[0][0].version.as_deref(),
        Some("1.0")
    );

    // The server offers firmware and pushes: a cycle runs at once (the poll
    // interval is an hour).
    rec.offer
        .lock()
        .unwrap()
        .push(Firmware::new("t", "2.0", FirmwareLocation::File(image)));
    let link = rec.link.lock().unwrap().clone().unwrap();
    link.check_now();
    until("second versions", || {
        rec.versions.lock().unwrap().len() == 2
    })
    .await;
    assert_eq!(
        rec.versions.lock().unwrap()[1][0].version.as_deref(),
        Some("2.0")
    );
    let kinds: Vec<ProgressKind> = rec
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert!(matches!(kinds.first(), Some(ProgressKind::Sequence(_))));
    assert_eq!(
        kinds.last(),
        Some(&ProgressKind::Finished(Outcome::Success))
    );

    assert_eq!(link.cancel("d").await, CancelOutcome::NotRunning);
    shutdown.cancel();
    runner.await.unwrap();
}

/// A source whose background task panics on its first run and ends on its
/// second: the engine starts it again each time (issue #12, item 6).
struct Crashing(Arc<std::sync::atomic::AtomicUsize>);

#[async_trait]
impl FirmwareSource for Crashing {
    fn describe(&self) -> String {
        "crashing".into()
    }
    async fn firmware_for(&self, _d: &DeviceConfig) -> Result<Vec<Firmware>, SourceError> {
        Ok(Vec::new())
    }
    async fn run(&self, _link: EngineLink, shutdown: CancellationToken) {
        match self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => panic!("hostile server value"),
            1 => {}
            _ => shutdown.cancelled().await,
        }
    }
}

#[tokio::test]
async fn a_source_task_that_panics_or_ends_is_restarted() {
    let state = tempfile::tempdir().unwrap();
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let engine = Engine::new(
        agent_config(state.path()),
        &Default::default(),
        Box::new(Crashing(runs.clone())),
        vec![(
            device_config("d", "t", UpdatePolicy::Immediate),
            FakeDevice::new("1.0") as Arc<dyn UpdateHandler>,
        )],
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let runner = tokio::spawn({
        let (engine, shutdown) = (engine.clone(), shutdown.clone());
        async move { engine.run(shutdown).await }
    });
    // Restarted after 1 s (the panic), then after 2 s (the early end).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while runs.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "source task not restarted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown.cancel();
    runner.await.unwrap();
    assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// A source that asks for a start-up spread and tells when the engine first
/// asks it for firmware.
struct Spread {
    window: Duration,
    asked: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl FirmwareSource for Spread {
    fn describe(&self) -> String {
        "spread".into()
    }
    fn startup_spread(&self) -> Duration {
        self.window
    }
    async fn firmware_for(&self, _d: &DeviceConfig) -> Result<Vec<Firmware>, SourceError> {
        self.asked.notify_one();
        Ok(Vec::new())
    }
}

/// The service's first cycle comes at a random time within the source's
/// start-up spread, so agents that boot together do not ask together (issue
/// #18). On tokio's paused clock: the hour passes in no time.
#[tokio::test(start_paused = true)]
async fn the_first_cycle_waits_a_random_time_within_the_start_up_spread() {
    let window = Duration::from_secs(3600);
    let mut delays = Vec::new();
    for _ in 0..8 {
        let state = tempfile::tempdir().unwrap();
        let asked = Arc::new(tokio::sync::Notify::new());
        let engine = Engine::new(
            agent_config(state.path()),
            &Default::default(),
            Box::new(Spread {
                window,
                asked: asked.clone(),
            }),
            vec![(
                device_config("d", "t", UpdatePolicy::Immediate),
                FakeDevice::new("1.0") as Arc<dyn UpdateHandler>,
            )],
        )
        .unwrap();
        let shutdown = CancellationToken::new();
        let started = tokio::time::Instant::now();
        let runner = tokio::spawn({
            let (engine, shutdown) = (engine.clone(), shutdown.clone());
            async move { engine.run(shutdown).await }
        });
        asked.notified().await;
        delays.push(started.elapsed());
        shutdown.cancel();
        runner.await.unwrap();
    }
    assert!(delays.iter().all(|d| *d <= window), "{delays:?}");
    // Uniform over the hour: four or more of eight under a minute would happen
    // about once in ten million runs.
    let late = delays
        .iter()
        .filter(|d| **d > Duration::from_secs(60))
        .count();
    assert!(late >= 4, "{delays:?}");
}
