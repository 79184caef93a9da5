//! A source that hands the engine URLs: the engine downloads over real HTTP through
//! the download engine, verifies, and only then lets the handler see the image.

mod common;
mod support;

use std::sync::atomic::Ordering;

use async_trait::async_trait;
use common::*;
use fota_agent::checksum::{Checksum, ChecksumAlgorithm};
use fota_agent::config::DeviceConfig;
use fota_agent::engine::Engine;
use fota_agent::handler::UpdateHandler;
use fota_agent::model::{Firmware, FirmwareLocation, UpdatePolicy};
use fota_agent::progress::{Outcome, ProgressKind, ProgressStep};
use fota_agent::source::{FirmwareSource, SourceError};
use support::http_server::*;

struct UrlSource(Firmware);

#[async_trait]
impl FirmwareSource for UrlSource {
    fn describe(&self) -> String {
        "test URL source".into()
    }

    async fn firmware_for(&self, _device: &DeviceConfig) -> Result<Vec<Firmware>, SourceError> {
        Ok(vec![self.0.clone()])
    }
}

const LEN: u64 = 1 << 20;

fn firmware(url: String, sha256: &str) -> Firmware {
    Firmware {
        device_type: "gw".into(),
        version: "2.0".into(),
        location: FirmwareLocation::Url(url),
        size: Some(LEN),
        checksums: vec![Checksum::new(ChecksumAlgorithm::Sha256, sha256).unwrap()],
        prerequisite: None,
        vendor: None,
        model: None,
        description: None,
        changelog: None,
        deployment: None,
        download_headers: Default::default(),
        signature_url: None,
        parts: Vec::new(),
        release: Default::default(),
    }
}

fn engine(state: &std::path::Path, fw: Firmware, dev: std::sync::Arc<FakeDevice>) -> Engine {
    Engine::new(
        agent_config(state),
        &Default::default(),
        Box::new(UrlSource(fw)),
        vec![(
            device_config("gw-1", "gw", UpdatePolicy::Immediate),
            dev as std::sync::Arc<dyn UpdateHandler>,
        )],
    )
    .unwrap()
}

#[tokio::test]
async fn url_firmware_is_downloaded_verified_and_installed() {
    let s = TestServer::start(ServerOptions::default()).await;
    s.add_synthetic("/gw.bin", LEN, 5);
    s.push_faults("/gw.bin", Faults::new().drop_after(300_000), 1);
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::new("1.0");
    let engine = engine(
        state.path(),
        firmware(s.url("/gw.bin"), &synthetic_sha256_hex(5, LEN)),
        dev.clone(),
    );
    let mut rx = engine.subscribe();

    let results = engine.run_once().await;

    assert_eq!(results[0].outcome, Some(Outcome::Success));
    assert_eq!(*dev.received.lock().unwrap(), synthetic_bytes(5, 0..LEN));
    let kinds = drain(&mut rx);
    let downloading: Vec<u8> = kinds
        .iter()
        .filter_map(|k| match k {
            ProgressKind::Percent(ProgressStep::Downloading, p) => Some(*p),
            _ => None,
        })
        .collect();
    assert_eq!(downloading.last(), Some(&100));
    assert!(downloading.len() <= 101, "throttled to percent changes");
    // The dropped connection was resumed, not restarted.
    assert_eq!(s.served_body_bytes("/gw.bin"), LEN);
}

#[tokio::test]
async fn url_firmware_with_a_bad_checksum_never_reaches_the_device() {
    let s = TestServer::start(ServerOptions::default()).await;
    s.add_synthetic("/gw.bin", LEN, 5);
    s.set_faults("/gw.bin", Faults::new().wrong_body());
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::new("1.0");
    let engine = engine(
        state.path(),
        firmware(s.url("/gw.bin"), &synthetic_sha256_hex(5, LEN)),
        dev.clone(),
    );
    let results = engine.run_once().await;
    let Some(Outcome::Failed(reason)) = &results[0].outcome else {
        panic!("{:?}", results[0]);
    };
    assert!(reason.contains("SHA-256 mismatch"), "{reason}");
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
    assert_eq!(
        std::fs::read_dir(engine.store().downloads_dir())
            .unwrap()
            .count(),
        0,
        "nothing kept"
    );
}
