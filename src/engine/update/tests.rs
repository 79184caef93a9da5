//! The records one update leaves in the store (in flight, transferred, re-flash,
//! installed, the staged image) and the step sequence of each mode, through
//! [`run`] with a real store on a real file system and an in-process device.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use sha2::Digest;
use tokio::sync::broadcast;

use super::*;
use crate::checksum::{Checksum, ChecksumAlgorithm};
use crate::config::{CommandConfig, DeviceConfig, HandlerConfig};
use crate::download::{DownloadConfig, Downloader};
use crate::handler::{BackgroundTransfer, UpdateHandler};
use crate::model::{FirmwareLocation, UpdatePolicy};
use crate::progress::{CommitHook, ProgressEvent, ProgressKind};
use crate::store::{Reflash, Transferred};
use crate::trust::TrustPolicy;
use crate::version::VersionScheme;
use ProgressStep::*;

const ID: &str = "dev";

/// How the device's next update step goes.
#[derive(Clone, Copy, PartialEq)]
enum Step {
    Succeeds,
    FailsBeforeCommit,
    FailsAfterCommit,
}

/// A device in process: it runs what it was last written with.
struct Dev {
    version: Mutex<Option<String>>,
    background: bool,
    /// Its update step ends in the gateway's reboot (RAUC's).
    reboots: bool,
    next: Mutex<Step>,
    updates: AtomicUsize,
}

impl Dev {
    fn new(background: bool, next: Step) -> Arc<Dev> {
        Arc::new(Dev {
            version: Mutex::new(Some("1.0".into())),
            background,
            reboots: false,
            next: Mutex::new(next),
            updates: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl UpdateHandler for Dev {
    async fn current_version(&self) -> Result<Option<String>, HandlerError> {
        Ok(self.version.lock().unwrap().clone())
    }

    async fn update(&self, image: &VerifiedImage, progress: &Progress) -> Result<(), HandlerError> {
        self.updates.fetch_add(1, Ordering::SeqCst);
        let next = *self.next.lock().unwrap();
        if next == Step::FailsBeforeCommit {
            return Err(HandlerError::failed("update", "device busy"));
        }
        progress.commit().map_err(|_| HandlerError::Canceled)?;
        if next == Step::FailsAfterCommit {
            return Err(HandlerError::failed("update", "link lost mid-write"));
        }
        progress
            .advance_to(Updating)
            .map_err(|e| HandlerError::failed("update", e.to_string()))?;
        if self.reboots {
            progress
                .advance_to(Rebooting)
                .map_err(|e| HandlerError::failed("update", e.to_string()))?;
        }
        *self.version.lock().unwrap() = Some(image.firmware().version.clone());
        Ok(())
    }

    fn reboots(&self) -> bool {
        self.reboots
    }

    fn background_transfer(&self) -> Option<&dyn BackgroundTransfer> {
        self.background.then_some(self as &dyn BackgroundTransfer)
    }
}

#[async_trait]
impl BackgroundTransfer for Dev {
    async fn transfer(&self, _: &VerifiedImage, _: &Progress) -> Result<(), HandlerError> {
        Ok(())
    }
}

/// A state directory, a firmware folder and what `run` needs around them.
struct Bench {
    _dir: tempfile::TempDir,
    firmware_dir: std::path::PathBuf,
    store: Store,
    downloader: Downloader,
    trust: TrustPolicy,
    bytes: AtomicU64,
    events: broadcast::Sender<ProgressEvent>,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let firmware_dir = dir.path().join("firmware");
        std::fs::create_dir(&firmware_dir).unwrap();
        Bench {
            store: Store::open(&dir.path().join("state")).unwrap(),
            firmware_dir,
            _dir: dir,
            downloader: Downloader::new(DownloadConfig::default()).unwrap(),
            trust: TrustPolicy::default(),
            bytes: AtomicU64::new(0),
            events: broadcast::channel(256).0,
        }
    }

    /// Firmware `version` with content of its own and its SHA-256.
    fn firmware(&self, version: &str) -> Firmware {
        let content = format!("image of version {version}");
        let path = self.firmware_dir.join(format!("fw-{version}.bin"));
        std::fs::write(&path, &content).unwrap();
        let mut firmware = Firmware::new("sensor", version, FirmwareLocation::File(path));
        firmware.checksums =
            vec![Checksum::new(ChecksumAlgorithm::Sha256, &sha256(&content)).unwrap()];
        firmware
    }

    fn staged(&self) -> bool {
        fetch::image_path(&self.store.downloads_dir(), ID).exists()
    }

    fn state(&self) -> crate::store::DeviceState {
        self.store.load(ID).unwrap()
    }

    /// Runs one update as the engine does (the commit hook marks the in-flight
    /// record written); returns its outcome and the steps it announced.
    async fn run(
        &self,
        dev: &Arc<Dev>,
        firmware: &Firmware,
        mode: Mode,
    ) -> (Option<Outcome>, Vec<ProgressKind>) {
        let device = Device {
            config: device_config(),
            handler: dev.clone(),
        };
        let mut rx = self.events.subscribe();
        let progress = Arc::new(Progress::new(ID, &firmware.version, self.events.clone()));
        let store = self.store.clone();
        progress.on_commit(CommitHook(Box::new(move || mark_written(&store, ID))));
        let ctx = Context {
            store: &self.store,
            downloader: &self.downloader,
            trust: &self.trust,
            timeout: Duration::from_secs(60),
            confirm_window: Duration::ZERO,
            bytes: &self.bytes,
        };
        let outcome = super::run(
            &ctx,
            &device,
            firmware,
            mode,
            progress,
            CancellationToken::new(),
        )
        .await;
        let kinds = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.kind)
            .filter(|k| !matches!(k, ProgressKind::Percent(..)))
            .collect();
        (outcome, kinds)
    }
}

fn device_config() -> DeviceConfig {
    DeviceConfig {
        id: ID.into(),
        device_type: "sensor".into(),
        policy: UpdatePolicy::Immediate,
        version_scheme: VersionScheme::Esh,
        only_newer: true,
        group: None,
        lock: None,
        handler: HandlerConfig::Command(CommandConfig {
            version_command: None,
            executable_command: None,
            transfer_command: None,
            update_command: vec!["/bin/false".into()],
            command_timeout: Duration::from_secs(60),
        }),
    }
}

fn sha256(data: impl AsRef<[u8]>) -> String {
    hex::encode(sha2::Sha256::digest(data.as_ref()))
}

fn failed(outcome: &Option<Outcome>) -> String {
    match outcome {
        Some(Outcome::Failed(reason)) => reason.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A write that fails after the commit point leaves a re-flash record of the
/// image (no attempt counted yet) and keeps the image; the re-flash of a
/// background device goes through TRANSFERRING again, and its success clears
/// the record and the image.
#[tokio::test]
async fn a_failure_after_the_commit_point_is_reflashed_from_the_kept_image() {
    let bench = Bench::new();
    let fw = bench.firmware("2.0");
    let dev = Dev::new(true, Step::FailsAfterCommit);

    let (outcome, _) = bench.run(&dev, &fw, Mode::Immediate).await;
    assert!(failed(&outcome).contains("link lost mid-write"));
    let state = bench.state();
    assert_eq!(state.in_flight, None);
    let record = state
        .reflash
        .expect("a half-written device needs a re-flash");
    assert_eq!(record.version, "2.0");
    assert_eq!(record.sha256, sha256("image of version 2.0"));
    assert_eq!(record.attempts, 0, "no re-flash was tried yet");
    assert!(bench.staged(), "the image the re-flash writes is kept");

    *dev.next.lock().unwrap() = Step::Succeeds;
    let (outcome, kinds) = bench.run(&dev, &fw, Mode::Reflash).await;
    assert_eq!(outcome, Some(Outcome::Success));
    assert_eq!(
        kinds,
        [
            ProgressKind::Sequence(vec![Transferring, Updating]),
            ProgressKind::Step(Transferring),
            ProgressKind::Step(Updating),
            ProgressKind::Finished(Outcome::Success),
        ]
    );
    assert_eq!(bench.state().reflash, None);
    assert!(!bench.staged());
}

/// A re-flash that fails again counts an attempt and keeps the record.
#[tokio::test]
async fn a_failed_reflash_counts_an_attempt() {
    let bench = Bench::new();
    let fw = bench.firmware("2.0");
    let dev = Dev::new(false, Step::FailsAfterCommit);
    bench.run(&dev, &fw, Mode::Immediate).await;

    *dev.next.lock().unwrap() = Step::FailsBeforeCommit;
    let (outcome, _) = bench.run(&dev, &fw, Mode::Reflash).await;
    assert!(failed(&outcome).contains("device busy"));
    let record = bench.state().reflash.expect("still half-written");
    assert_eq!((record.version.as_str(), record.attempts), ("2.0", 1));
    assert!(bench.staged());
}

/// A write that fails before the commit point leaves the device as it was:
/// no re-flash record, no staged image, nothing in flight.
#[tokio::test]
async fn a_failure_before_the_commit_point_leaves_nothing_behind() {
    let bench = Bench::new();
    let fw = bench.firmware("2.0");
    let dev = Dev::new(false, Step::FailsBeforeCommit);

    let (outcome, _) = bench.run(&dev, &fw, Mode::Immediate).await;
    assert!(failed(&outcome).contains("device busy"));
    let state = bench.state();
    assert_eq!(
        (state.in_flight, state.reflash, state.transferred),
        (None, None, None)
    );
    assert!(!bench.staged());
    assert_eq!(state.last_outcome.unwrap().version, "2.0");
}

/// A re-flash or a staged update runs only with a record of the very version
/// asked for, never with another version's record (and its image).
#[tokio::test]
async fn a_record_of_another_version_is_not_used() {
    let bench = Bench::new();
    let dev = Dev::new(false, Step::Succeeds);
    let old = bench.firmware("2.0");
    std::fs::copy(
        match &old.location {
            FirmwareLocation::File(p) => p,
            _ => unreachable!(),
        },
        fetch::image_path(&bench.store.downloads_dir(), ID),
    )
    .unwrap();
    let sha = sha256("image of version 2.0");
    bench
        .store
        .update(ID, |s| {
            s.reflash = Some(Reflash {
                version: "2.0".into(),
                sha256: sha.clone(),
                parts: vec![],
                reason: "link lost".into(),
                attempts: 0,
            });
            s.transferred = Some(Transferred {
                version: "2.0".into(),
                sha256: sha.clone(),
                parts: vec![],
            });
        })
        .unwrap();
    let newer = bench.firmware("3.0");

    let (outcome, _) = bench.run(&dev, &newer, Mode::UpdateTransferred).await;
    assert_eq!(
        failed(&outcome),
        "no firmware was transferred for version 3.0"
    );
    let (outcome, _) = bench.run(&dev, &newer, Mode::Reflash).await;
    assert_eq!(failed(&outcome), "no re-flash is recorded for version 3.0");
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0, "nothing was written");
    assert_eq!(bench.state().reflash.unwrap().version, "2.0");
}

/// Staged ahead for a device without background transfer (a closed
/// maintenance window): DOWNLOADING only, then pending; the later update goes
/// TRANSFERRING → UPDATING and clears the transferred record and the image.
#[tokio::test]
async fn staged_ahead_without_background_transfer() {
    let bench = Bench::new();
    let fw = bench.firmware("2.0");
    let dev = Dev::new(false, Step::Succeeds);

    let (outcome, kinds) = bench.run(&dev, &fw, Mode::TransferOnly).await;
    assert_eq!(outcome, None);
    assert_eq!(
        kinds,
        [
            ProgressKind::Sequence(vec![Downloading]),
            ProgressKind::Step(Downloading),
            ProgressKind::Pending,
        ]
    );
    let state = bench.state();
    assert_eq!(state.transferred.unwrap().version, "2.0");
    assert_eq!(state.in_flight, None);
    assert!(bench.staged());
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0);

    let (outcome, kinds) = bench.run(&dev, &fw, Mode::UpdateTransferred).await;
    assert_eq!(outcome, Some(Outcome::Success));
    assert_eq!(
        kinds,
        [
            ProgressKind::Sequence(vec![Transferring, Updating]),
            ProgressKind::Step(Transferring),
            ProgressKind::Step(Updating),
            ProgressKind::Finished(Outcome::Success),
        ]
    );
    let state = bench.state();
    assert_eq!((state.transferred, state.in_flight), (None, None));
    assert!(!bench.staged());
}

/// The version the agent recorded as installed (for a device that reports
/// none) stays through a failed download and is void once the update step
/// starts writing.
#[tokio::test]
async fn an_installed_record_is_void_only_from_the_update_step_on() {
    let bench = Bench::new();
    let dev = Dev::new(false, Step::FailsBeforeCommit);
    bench
        .store
        .update(ID, |s| s.installed = Some("1.5".into()))
        .unwrap();
    let mut corrupt = bench.firmware("2.0");
    corrupt.checksums = vec![Checksum::new(ChecksumAlgorithm::Sha256, &sha256("other")).unwrap()];

    let (outcome, _) = bench.run(&dev, &corrupt, Mode::Immediate).await;
    failed(&outcome);
    assert_eq!(bench.state().installed.as_deref(), Some("1.5"));

    let (outcome, _) = bench
        .run(&dev, &bench.firmware("2.0"), Mode::Immediate)
        .await;
    assert!(failed(&outcome).contains("device busy"));
    assert_eq!(bench.state().installed, None);
}

/// A device whose update step reboots the gateway ends its sequence with
/// REBOOTING after UPDATING; a transfer ahead of time, which does not reboot,
/// has no REBOOTING step.
#[tokio::test]
async fn a_rebooting_device_announces_rebooting_after_updating_only() {
    let bench = Bench::new();
    let fw = bench.firmware("2.0");
    let dev = Arc::new(Dev {
        reboots: true,
        ..Arc::into_inner(Dev::new(true, Step::Succeeds)).unwrap()
    });

    let (outcome, kinds) = bench.run(&dev, &fw, Mode::TransferOnly).await;
    assert_eq!(outcome, None);
    assert_eq!(
        kinds[0],
        ProgressKind::Sequence(vec![Downloading, Transferring])
    );
    let (outcome, kinds) = bench.run(&dev, &fw, Mode::UpdateTransferred).await;
    assert_eq!(outcome, Some(Outcome::Success));
    assert_eq!(
        kinds,
        [
            ProgressKind::Sequence(vec![Updating, Rebooting]),
            ProgressKind::Step(Updating),
            ProgressKind::Step(Rebooting),
            ProgressKind::Finished(Outcome::Success),
        ]
    );

    let fw = bench.firmware("3.0");
    let (outcome, kinds) = bench.run(&dev, &fw, Mode::Immediate).await;
    assert_eq!(outcome, Some(Outcome::Success));
    assert_eq!(
        kinds[0],
        ProgressKind::Sequence(vec![Downloading, Transferring, Updating, Rebooting])
    );
}
