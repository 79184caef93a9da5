//! The ThingsBoard source end to end over HTTP against `thingsboard_server` (the
//! documented device API): attributes → chunked download (with faults) →
//! verification → handler → telemetry; bad checksums; retries of 5xx and
//! malformed JSON; every checksum algorithm; reports queued across a restart;
//! resume by chunk index. The MQTT transport is tested in `thingsboard_mqtt.rs`.

mod common;
#[path = "support/http_request.rs"]
mod http_request;
mod minisign;
mod process;
mod thingsboard_server;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fota_agent::config::{
    AccessToken, OtaKind, ThingsboardBinding, ThingsboardConfig, ThingsboardTransport,
};
use fota_agent::download::DownloadConfig;
use fota_agent::engine::Engine;
use fota_agent::handler::UpdateHandler;
use fota_agent::model::{RemoteFetch, UpdatePolicy};
use fota_agent::source::thingsboard::chunks::ChunkFetcher;
use fota_agent::source::thingsboard::http::HttpTransport;
use fota_agent::source::thingsboard::{ThingsboardSource, queued_reports};
use fota_agent::trust::{TrustPolicy, TrustedKey};
use process::until;
use thingsboard_server::{Fault, TbServer};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "ESP1TOKEN";

fn fast_download() -> DownloadConfig {
    DownloadConfig {
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..DownloadConfig::default()
    }
}

fn tb_config(url: &str, state_dir: &Path) -> ThingsboardConfig {
    ThingsboardConfig {
        transport: ThingsboardTransport::Http { url: url.into() },
        bindings: vec![ThingsboardBinding {
            device_id: "esp-1".into(),
            token: AccessToken(TOKEN.into()),
            kind: OtaKind::Firmware,
        }],
        chunk_size: 1024,
        poll_timeout: Duration::from_millis(500),
        state_dir: state_dir.join("thingsboard"),
        download: fast_download(),
    }
}

fn image(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

struct Agent {
    engine: Engine,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    fn start(server: &TbServer, state_dir: &Path, dev: &Arc<FakeDevice>) -> Agent {
        // The tests send MD5, CRC32 and MurmurHash3 too: the documented opt-in.
        let weak = TrustPolicy {
            allow_weak_checksums: true,
            ..Default::default()
        };
        Agent::start_trusting(server, state_dir, dev, weak)
    }

    fn start_trusting(
        server: &TbServer,
        state_dir: &Path,
        dev: &Arc<FakeDevice>,
        trust: TrustPolicy,
    ) -> Agent {
        let source = ThingsboardSource::new(tb_config(&server.url(), state_dir)).unwrap();
        let engine = Engine::new(
            agent_config(state_dir),
            &fast_download(),
            Box::new(source),
            vec![(
                device_config("esp-1", "esp", UpdatePolicy::Immediate),
                dev.clone() as Arc<dyn UpdateHandler>,
            )],
        )
        .unwrap()
        .with_trust(trust);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (engine, shutdown) = (engine.clone(), shutdown.clone());
            async move { engine.run(shutdown).await }
        });
        Agent {
            engine,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// The stand-in takes telemetry as ThingsBoard's `JsonConverter` does: a plain
/// object, `{ts, values}`, or an array of those; anything else is refused.
#[tokio::test]
async fn the_stand_in_takes_telemetry_shaped_like_thingsboard() {
    let server = TbServer::start(&[TOKEN]).await;
    for good in [
        r#"{"fw_state":"DOWNLOADING"}"#,
        r#"{"ts":1700000000000,"values":{"fw_state":"DOWNLOADED"}}"#,
        r#"[{"ts":"1700000000001","values":{"fw_state":"VERIFIED"}},{"fw_state":"UPDATING"}]"#,
    ] {
        assert_eq!(server.post_telemetry(TOKEN, good).await, 200, "{good}");
    }
    for bad in [
        "fw_state=UPDATED",
        r#""UPDATED""#,
        r#"[1,2]"#,
        r#"{"ts":"soon","values":{"fw_state":"UPDATED"}}"#,
        r#"{"ts":1700000000000,"values":"UPDATED"}"#,
    ] {
        assert_eq!(server.post_telemetry(TOKEN, bad).await, 400, "{bad}");
    }
    let states = server.states(TOKEN, "fw_state");
    assert_eq!(
        states,
        ["DOWNLOADING", "DOWNLOADED", "VERIFIED", "UPDATING"]
    );
}

/// The `fw_state` values the agent keeps queued (saved in `state`) for `server`.
fn queued_states(server: &TbServer, state: &Path) -> Vec<String> {
    let source = ThingsboardSource::new(tb_config(&server.url(), state)).unwrap();
    queued_reports(&source)
        .iter()
        .filter_map(|(_, v)| {
            v.get("fw_state")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .collect()
}

/// Telemetry POSTs the server received (answered or refused).
fn telemetry_posts(server: &TbServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST ") && r.contains("/telemetry"))
        .count()
}

const FLOW: [&str; 5] = [
    "DOWNLOADING",
    "DOWNLOADED",
    "VERIFIED",
    "UPDATING",
    "UPDATED",
];

#[tokio::test]
async fn full_flow_with_dropped_chunk_5xx_and_malformed_json() {
    let server = TbServer::start(&[TOKEN]).await;
    let data = image(4500, 1);
    server.assign(TOKEN, "fw", "esp-fw", "2.0", &data, "SHA256");
    // The first attribute reads fail: a 503, then malformed JSON.
    server.push_fault("/attributes?", Fault::Status(503));
    server.push_fault("/attributes?", Fault::Malformed);
    // Chunk 2's connection drops, chunk 3 gets a 500: both are retried.
    server.push_fault("chunk=2", Fault::Drop);
    server.push_fault("chunk=3", Fault::Status(500));
    // The first telemetry post fails too.
    server.push_fault("/telemetry", Fault::Status(502));

    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::new("1.0");
    let agent = Agent::start(&server, state.path(), &dev);
    until("UPDATED", || {
        server
            .states(TOKEN, "fw_state")
            .contains(&"UPDATED".to_string())
    })
    .await;
    assert_eq!(*dev.received.lock().unwrap(), data);
    assert_eq!(dev.version().as_deref(), Some("2.0"));
    assert_eq!(server.states(TOKEN, "fw_state"), FLOW);

    let telemetry = server.telemetry(TOKEN);
    let updated = telemetry
        .iter()
        .find(|v| v.get("fw_state").is_some_and(|s| s == "UPDATED"))
        .unwrap();
    assert_eq!(updated["current_fw_title"], "esp-fw");
    // The target as ThingsBoard's OTA views read it (OtaPackageUtil.getTargetTelemetryKey).
    let downloading = telemetry
        .iter()
        .find(|v| v.get("fw_state").is_some_and(|s| s == "DOWNLOADING"))
        .unwrap();
    assert_eq!(downloading["target_fw_title"], "esp-fw");
    assert_eq!(downloading["target_fw_version"], "2.0");
    assert_eq!(updated["current_fw_version"], "2.0");
    // Percent of the download reached 100.
    assert!(
        telemetry.iter().any(|v| v
            .get("fw_progress_step")
            .is_some_and(|s| s == "DOWNLOADING")
            && v["fw_progress"] == 100),
        "{telemetry:?}"
    );
    let chunk2 = server
        .requests()
        .iter()
        .filter(|r| r.contains("/firmware?") && r.contains("chunk=2"))
        .count();
    assert_eq!(chunk2, 2, "chunk 2 was fetched again after the drop");
    for r in server.requests() {
        if r.contains("/firmware?") {
            assert!(
                r.contains("title=esp-fw") && r.contains("version=2.0") && r.contains("size=1024"),
                "{r}"
            );
        }
    }
    agent.stop().await;
}

#[tokio::test]
async fn bad_checksum_fails_without_running_the_handler_and_is_not_retried() {
    let server = TbServer::start(&[TOKEN]).await;
    let data = image(3000, 2);
    server.assign_raw(
        TOKEN,
        "fw",
        "esp-fw",
        "2.0",
        &data,
        "SHA256",
        &"ab".repeat(32),
    );
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::new("1.0");
    let agent = Agent::start(&server, state.path(), &dev);
    until("FAILED", || {
        server
            .states(TOKEN, "fw_state")
            .contains(&"FAILED".to_string())
    })
    .await;
    assert_eq!(server.states(TOKEN, "fw_state"), ["DOWNLOADING", "FAILED"]);
    let failed = server
        .telemetry(TOKEN)
        .into_iter()
        .find(|v| v.contains_key("fw_error"))
        .unwrap();
    let error = failed["fw_error"].as_str().unwrap();
    assert!(error.contains("SHA-256 mismatch"), "{error}");
    assert_eq!(dev.updates.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Another cycle does not try the failed assignment again.
    agent.engine.run_once().await;
    // Whatever that cycle reported has been delivered once its queue is empty.
    until("reports delivered", || {
        queued_states(&server, state.path()).is_empty()
    })
    .await;
    assert_eq!(server.states(TOKEN, "fw_state"), ["DOWNLOADING", "FAILED"]);
    // A new assignment is taken.
    let fixed = image(3000, 3);
    server.assign(TOKEN, "fw", "esp-fw", "2.1", &fixed, "SHA256");
    until("UPDATED", || {
        server
            .states(TOKEN, "fw_state")
            .contains(&"UPDATED".to_string())
    })
    .await;
    assert_eq!(*dev.received.lock().unwrap(), fixed);
    agent.stop().await;
}

#[tokio::test]
async fn every_thingsboard_checksum_algorithm_verifies_and_updates_push() {
    let server = TbServer::start(&[TOKEN]).await;
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::new("1.0");
    let agent = Agent::start(&server, state.path(), &dev);
    // Let the agent report its version and settle on "nothing assigned".
    until("current version", || {
        server
            .telemetry(TOKEN)
            .iter()
            .any(|v| v.get("current_fw_version").is_some_and(|s| s == "1.0"))
    })
    .await;
    let algorithms = [
        "MD5",
        "SHA256",
        "SHA384",
        "SHA512",
        "CRC32",
        "MURMUR3_32",
        "MURMUR3_128",
    ];
    for (i, alg) in algorithms.iter().enumerate() {
        let version = format!("2.{}", i + 1);
        let data = image(2048 + i * 100, i as u8);
        // Pushed through the long-poll: the agent re-reads and updates at once.
        server.assign(TOKEN, "fw", "esp-fw", &version, &data, alg);
        until(&format!("{alg} update"), || {
            dev.version().as_deref() == Some(version.as_str())
        })
        .await;
        assert_eq!(*dev.received.lock().unwrap(), data, "{alg}");
    }
    until("seven UPDATED", || {
        server
            .states(TOKEN, "fw_state")
            .iter()
            .filter(|s| *s == "UPDATED")
            .count()
            == 7
    })
    .await;
    let expected: Vec<&str> = FLOW.iter().copied().cycle().take(35).collect();
    assert_eq!(server.states(TOKEN, "fw_state"), expected);
    agent.stop().await;
}

#[tokio::test]
async fn reports_are_queued_durably_and_sent_once_after_a_restart() {
    let server = TbServer::start(&[TOKEN]).await;
    let data = image(2000, 4);
    server.assign(TOKEN, "fw", "esp-fw", "2.0", &data, "MD5");
    for _ in 0..1000 {
        server.push_fault("/telemetry", Fault::Status(503));
    }
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::new("1.0");
    let agent = Agent::start(&server, state.path(), &dev);
    until("device updated", || dev.version().as_deref() == Some("2.0")).await;
    until("every report queued", || {
        queued_states(&server, state.path()) == FLOW
    })
    .await;
    // The agent did try to deliver them; the server refused every one.
    until("a refused delivery", || telemetry_posts(&server) > 0).await;
    agent.stop().await;

    // The server recovers; a new agent process sends the queue, in order, once.
    let healthy = TbServer::start(&[TOKEN]).await;
    healthy.assign(TOKEN, "fw", "esp-fw", "2.0", &data, "MD5");
    let agent = Agent::start(&healthy, state.path(), &dev);
    until("queue drained", || {
        queued_states(&healthy, state.path()).is_empty()
    })
    .await;
    agent.stop().await;
    assert_eq!(healthy.states(TOKEN, "fw_state"), FLOW);
}

/// The fetcher of `esp-fw` `version` from the stand-in, 1 KiB chunks.
fn chunk_fetcher(
    server: &TbServer,
    version: &str,
    size: Option<u64>,
    download: DownloadConfig,
) -> ChunkFetcher {
    let transport = HttpTransport::new(
        &DownloadConfig::default(),
        &server.url(),
        Duration::from_millis(200),
    );
    ChunkFetcher {
        transport: Arc::new(transport),
        token: AccessToken(TOKEN.into()),
        kind: OtaKind::Firmware,
        title: "esp-fw".into(),
        version: version.into(),
        size,
        chunk_size: 1024,
        download,
    }
}

#[tokio::test]
async fn an_interrupted_download_resumes_at_its_chunk() {
    let server = TbServer::start(&[TOKEN]).await;
    let data = image(10 * 1024 + 17, 5);
    server.assign(TOKEN, "fw", "esp-fw", "3.0", &data, "SHA256");
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("esp-1.img.part");
    let fetcher = |attempts: u32| {
        let download = DownloadConfig {
            max_attempts: attempts,
            ..fast_download()
        };
        chunk_fetcher(&server, "3.0", Some(data.len() as u64), download)
    };
    // Chunk 4 fails every attempt of the first fetch.
    for _ in 0..2 {
        server.push_fault("chunk=4", Fault::Status(503));
    }
    let noop = |_: u64, _: Option<u64>| {};
    let err = fetcher(2).fetch(&part, &noop).await.unwrap_err();
    assert!(err.message.contains("chunk 4"), "{err}");
    assert!(err.transient, "{err}");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 4 * 1024);
    let before = server.requests().len();
    fetcher(2).fetch(&part, &noop).await.unwrap();
    assert_eq!(std::fs::read(&part).unwrap(), data);
    let asked: Vec<String> = server.requests()[before..]
        .iter()
        .map(|r| {
            r.split("chunk=")
                .nth(1)
                .unwrap_or("")
                .split(['&', ' '])
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(asked, ["4", "5", "6", "7", "8", "9", "10"]);

    // A partial file of another package starts over.
    std::fs::write(&part, vec![0u8; 2048]).unwrap();
    let other = ChunkFetcher {
        version: "3.0".into(),
        title: "other".into(),
        ..fetcher(2)
    };
    server.assign(TOKEN, "fw", "other", "3.0", &data, "SHA256");
    let before = server.requests().len();
    other.fetch(&part, &noop).await.unwrap();
    assert!(server.requests()[before].contains("chunk=0"));
    assert_eq!(std::fs::read(&part).unwrap(), data);
}

/// A package without a size is still bounded: the chunk that passes
/// `max_image_size` fails the fetch and is not written; a reserve larger than
/// the free space refuses it before the first chunk.
#[tokio::test]
async fn chunk_downloads_honour_max_image_size_and_the_free_space_reserve() {
    let server = TbServer::start(&[TOKEN]).await;
    let data = image(10 * 1024, 6);
    server.assign(TOKEN, "fw", "esp-fw", "4.0", &data, "SHA256");
    let dir = tempfile::tempdir().unwrap();
    let part = dir.path().join("esp-1.img.part");
    let fetcher = |download| chunk_fetcher(&server, "4.0", None, download);
    let noop = |_: u64, _: Option<u64>| {};
    let capped = DownloadConfig {
        max_image_size: Some(3 * 1024 + 100),
        ..fast_download()
    };
    let err = fetcher(capped).fetch(&part, &noop).await.unwrap_err();
    assert!(
        err.message.contains("chunk 3") && err.message.contains("max_image_size"),
        "{err}"
    );
    assert!(!err.transient, "{err}");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 3 * 1024);

    std::fs::remove_file(&part).unwrap();
    let before = server.requests().len();
    let no_room = DownloadConfig {
        free_space_reserve: u64::MAX / 2,
        ..fast_download()
    };
    let err = fetcher(no_room).fetch(&part, &noop).await.unwrap_err();
    assert!(err.message.contains("not enough space"), "{err}");
    assert_eq!(server.requests().len(), before, "no chunk asked for");
}

/// A signed bundle (tar of the image and its `.minisig`) as the package, with
/// only an MD5 of the bundle from the server, as ThingsBoard's defaults send.
fn signed_bundle(dir: &Path, signer: &minisign::KeyPair, data: &[u8], comment: &str) -> Vec<u8> {
    let image = dir.join("esp.bin");
    std::fs::write(&image, data).unwrap();
    signer.sign(&image, comment);
    let bundle = dir.join("esp.tar");
    minisign::bundle(&image, &bundle);
    std::fs::read(bundle).unwrap()
}

async fn failed_with(server: &TbServer) -> String {
    until("FAILED", || {
        server
            .states(TOKEN, "fw_state")
            .contains(&"FAILED".to_string())
    })
    .await;
    let failed = server
        .telemetry(TOKEN)
        .into_iter()
        .find(|v| v.contains_key("fw_error"))
        .unwrap();
    failed["fw_error"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_signed_bundle_installs_its_image_alone_and_a_foreign_one_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let release = minisign::keypair(keys.path(), "release");
    let mallory = minisign::keypair(keys.path(), "mallory");
    let trust = TrustPolicy {
        keys: vec![TrustedKey::load(&release.public).unwrap()],
        require_signature: true,
        allow_weak_checksums: false,
    };

    let server = TbServer::start(&[TOKEN]).await;
    let data = image(5000, 7);
    let foreign = signed_bundle(keys.path(), &mallory, &data, "type=esp version=2.0");
    server.assign(TOKEN, "fw", "esp-fw", "2.0", &foreign, "MD5");
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::new("1.0");
    let agent = Agent::start_trusting(&server, state.path(), &dev, trust.clone());
    let error = failed_with(&server).await;
    assert!(
        error.contains("signature: not signed by a trusted key"),
        "{error}"
    );
    assert_eq!(dev.updates.load(std::sync::atomic::Ordering::SeqCst), 0);
    agent.stop().await;

    let server = TbServer::start(&[TOKEN]).await;
    let bundle = signed_bundle(keys.path(), &release, &data, "type=esp version=2.0");
    server.assign(TOKEN, "fw", "esp-fw", "2.0", &bundle, "MD5");
    let agent = Agent::start_trusting(&server, state.path(), &dev, trust);
    until("UPDATED", || {
        server
            .states(TOKEN, "fw_state")
            .contains(&"UPDATED".to_string())
    })
    .await;
    assert_eq!(
        *dev.received.lock().unwrap(),
        data,
        "the handler got the image alone"
    );
    agent.stop().await;
}

#[tokio::test]
async fn unsigned_firmware_with_only_md5_is_refused_by_default() {
    let server = TbServer::start(&[TOKEN]).await;
    server.assign(TOKEN, "fw", "esp-fw", "2.0", &image(2000, 4), "MD5");
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::new("1.0");
    let agent = Agent::start_trusting(&server, state.path(), &dev, TrustPolicy::default());
    let error = failed_with(&server).await;
    assert!(
        error.contains("checksum: unsigned firmware needs SHA-256, SHA-384 or SHA-512")
            && error.contains("got MD5"),
        "{error}"
    );
    assert_eq!(dev.updates.load(std::sync::atomic::Ordering::SeqCst), 0);
    agent.stop().await;
}

#[tokio::test]
async fn hostile_titles_and_versions_are_refused_and_reported_without_repeating_them() {
    let long = "t".repeat(200);
    let cases = [
        (
            "esp-fw",
            "2.0\n$(reboot)",
            "version: control character U+000A at character 4",
        ),
        (
            "esp-fw",
            "2.0$(reboot)",
            "version: shell character '$' at character 4",
        ),
        (long.as_str(), "2.0", "title: 200 characters (at most 128)"),
    ];
    for (title, version, reason) in cases {
        let server = TbServer::start(&[TOKEN]).await;
        server.assign(TOKEN, "fw", title, version, &image(100, 2), "SHA256");
        let state = tempfile::tempdir().unwrap();
        let dev = FakeDevice::new("1.0");
        let agent = Agent::start(&server, state.path(), &dev);
        let error = failed_with(&server).await;
        assert_eq!(error, reason);
        assert_eq!(dev.updates.load(std::sync::atomic::Ordering::SeqCst), 0);
        let reports = format!("{:?}", server.telemetry(TOKEN));
        assert!(
            !reports.contains("reboot") && !reports.contains(&long),
            "{reports}"
        );
        agent.stop().await;
    }
}
