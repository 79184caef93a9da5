//! Shared test fixtures: an in-process fake device handler, firmware folders and
//! engine construction.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use fota_agent::config::{AgentConfig, CommandConfig, DeviceConfig, HandlerConfig};
use fota_agent::engine::Engine;
use fota_agent::handler::{BackgroundTransfer, HandlerError, UpdateHandler, VerifiedImage};
use fota_agent::model::UpdatePolicy;
use fota_agent::progress::{Progress, ProgressEvent, ProgressKind, ProgressStep};
use fota_agent::source::directory::DirectorySource;
use fota_agent::version::VersionScheme;
use tokio::sync::broadcast;

/// A device simulated in process: it "runs" whatever version it was last updated to.
pub struct FakeDevice {
    pub version: Mutex<Option<String>>,
    pub executable: AtomicBool,
    pub background: bool,
    pub updates: AtomicUsize,
    pub transfers: AtomicUsize,
    pub cancels: AtomicUsize,
    /// The update step takes this long (tokio time).
    pub update_takes: Option<Duration>,
    /// Bytes of the image the handler was given last.
    pub received: Mutex<Vec<u8>>,
    /// The transfer step takes this long (tokio time).
    pub transfer_takes: Mutex<Option<Duration>>,
    /// The largest image the device takes (`UpdateHandler::image_limit`).
    pub image_limit: Mutex<Option<u64>>,
}

impl FakeDevice {
    pub fn new(version: &str) -> Arc<Self> {
        Self::build(version, false, None)
    }

    pub fn build(version: &str, background: bool, update_takes: Option<Duration>) -> Arc<Self> {
        Arc::new(FakeDevice {
            version: Mutex::new(Some(version.to_string())),
            executable: AtomicBool::new(true),
            background,
            updates: AtomicUsize::new(0),
            transfers: AtomicUsize::new(0),
            cancels: AtomicUsize::new(0),
            update_takes,
            received: Mutex::new(Vec::new()),
            transfer_takes: Mutex::new(None),
            image_limit: Mutex::new(None),
        })
    }

    pub fn transfer_takes(&self, d: Duration) {
        *self.transfer_takes.lock().unwrap() = Some(d);
    }

    pub fn version(&self) -> Option<String> {
        self.version.lock().unwrap().clone()
    }
}

#[async_trait]
impl UpdateHandler for FakeDevice {
    async fn current_version(&self) -> Result<Option<String>, HandlerError> {
        Ok(self.version())
    }

    fn image_limit(&self) -> Option<u64> {
        *self.image_limit.lock().unwrap()
    }

    async fn is_update_executable(&self) -> Result<bool, HandlerError> {
        Ok(self.executable.load(Ordering::SeqCst))
    }

    async fn update(&self, image: &VerifiedImage, progress: &Progress) -> Result<(), HandlerError> {
        self.updates.fetch_add(1, Ordering::SeqCst);
        *self.received.lock().unwrap() = std::fs::read(image.path()).unwrap();
        progress.advance_to(ProgressStep::Updating).unwrap();
        progress.update(50).unwrap();
        if let Some(d) = self.update_takes {
            tokio::time::sleep(d).await;
        }
        *self.version.lock().unwrap() = Some(image.firmware().version.clone());
        Ok(())
    }

    async fn cancel(&self) {
        self.cancels.fetch_add(1, Ordering::SeqCst);
    }

    fn background_transfer(&self) -> Option<&dyn BackgroundTransfer> {
        self.background.then_some(self as &dyn BackgroundTransfer)
    }
}

#[async_trait]
impl BackgroundTransfer for FakeDevice {
    async fn transfer(
        &self,
        image: &VerifiedImage,
        progress: &Progress,
    ) -> Result<(), HandlerError> {
        self.transfers.fetch_add(1, Ordering::SeqCst);
        *self.received.lock().unwrap() = std::fs::read(image.path()).unwrap();
        progress.update(1).unwrap();
        let takes = *self.transfer_takes.lock().unwrap();
        if let Some(d) = takes {
            tokio::time::sleep(d).await;
        }
        progress.update(100).unwrap();
        Ok(())
    }
}

pub fn device_config(id: &str, device_type: &str, policy: UpdatePolicy) -> DeviceConfig {
    DeviceConfig {
        id: id.into(),
        device_type: device_type.into(),
        policy,
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

pub fn agent_config(state_dir: &Path) -> AgentConfig {
    AgentConfig {
        state_dir: state_dir.to_path_buf(),
        poll_interval: Duration::from_secs(3600),
        update_timeout: Duration::from_secs(30 * 60),
        confirm_window: Duration::from_secs(30),
        max_concurrent_updates: 1,
    }
}

/// Writes `<root>/<type>/fw-<version>.bin` and its `.properties`; `extra` lines
/// are appended to the properties (checksums, prerequisites).
pub fn offer(
    root: &Path,
    device_type: &str,
    version: &str,
    content: &[u8],
    extra: &str,
) -> PathBuf {
    let dir = root.join(device_type);
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join(format!("fw-{version}.bin"));
    std::fs::write(&image, content).unwrap();
    std::fs::write(
        dir.join(format!("fw-{version}.properties")),
        format!("version = {version}\nimage = fw-{version}.bin\n{extra}"),
    )
    .unwrap();
    image
}

pub fn engine(
    state: &Path,
    firmware: &Path,
    devices: Vec<(DeviceConfig, Arc<FakeDevice>)>,
) -> Engine {
    engine_with(agent_config(state), firmware, devices)
}

pub fn engine_with(
    agent: AgentConfig,
    firmware: &Path,
    devices: Vec<(DeviceConfig, Arc<FakeDevice>)>,
) -> Engine {
    Engine::new(
        agent,
        &Default::default(),
        Box::new(DirectorySource::new(firmware)),
        devices
            .into_iter()
            .map(|(c, h)| (c, h as Arc<dyn UpdateHandler>))
            .collect(),
    )
    .unwrap()
}

/// Every event received so far.
pub fn drain(rx: &mut broadcast::Receiver<ProgressEvent>) -> Vec<ProgressKind> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|e| e.kind)
        .collect()
}

/// The events without percent updates.
pub fn steps_only(kinds: &[ProgressKind]) -> Vec<ProgressKind> {
    kinds
        .iter()
        .filter(|k| !matches!(k, ProgressKind::Percent(..)))
        .cloned()
        .collect()
}

pub fn md5_hex(data: &[u8]) -> String {
    let mut h =
        fota_agent::checksum::MultiHasher::new([fota_agent::checksum::ChecksumAlgorithm::Md5]);
    h.update(data);
    h.finish()
        .get(fota_agent::checksum::ChecksumAlgorithm::Md5)
        .unwrap()
        .to_string()
}

/// The failure reason of an outcome that must be a failure.
pub fn failure(o: &fota_agent::progress::Outcome) -> String {
    match o {
        fota_agent::progress::Outcome::Failed(r) => r.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// A serial transfer's events: at least `min_percents` TRANSFERRING percents,
/// strictly increasing to 100, then UPDATING, then success.
pub fn assert_transfer_progress(kinds: &[ProgressKind], min_percents: usize) {
    use fota_agent::progress::Outcome;
    let percents: Vec<u8> = kinds
        .iter()
        .filter_map(|k| match k {
            ProgressKind::Percent(ProgressStep::Transferring, p) => Some(*p),
            _ => None,
        })
        .collect();
    assert!(percents.len() >= min_percents, "{kinds:?}");
    assert!(percents.windows(2).all(|w| w[0] < w[1]), "{percents:?}");
    assert_eq!(percents.last(), Some(&100), "{percents:?}");
    let last_percent = kinds
        .iter()
        .rposition(|k| matches!(k, ProgressKind::Percent(ProgressStep::Transferring, _)))
        .unwrap();
    let updating = kinds
        .iter()
        .position(|k| *k == ProgressKind::Step(ProgressStep::Updating))
        .expect("UPDATING");
    assert!(updating > last_percent, "{kinds:?}");
    assert_eq!(
        kinds.last(),
        Some(&ProgressKind::Finished(Outcome::Success)),
        "{kinds:?}"
    );
}
