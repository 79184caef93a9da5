//! The MCS source end to end against the MCS stand-in (`mcs_server`): the REST
//! flow (version report, available firmware, URL + MD5, prerequisite refusal, a
//! wrong MD5 reported as FAILED), the command channel (heartbeat, malformed,
//! forged and replayed pushes ignored on a connection that survives, a push to an
//! attached device, a push during a running update queued behind it, a dropped
//! connection re-established), server errors shown by `check`, and reports that
//! survive a restart and reach the server exactly once.

mod common;
#[path = "support/http_request.rs"]
mod http_request;
mod mcs_server;
mod process;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fota_agent::config::{DeviceConfig, McsConfig, McsDevice};
use fota_agent::engine::Engine;
use fota_agent::handler::UpdateHandler;
use fota_agent::model::UpdatePolicy;
use fota_agent::progress::{Outcome, ProgressKind};
use fota_agent::source::mcs::McsSource;
use mcs_server::{McsServer, Offer};
use process::until;
use tokio_util::sync::CancellationToken;

const GW_ID: &str = "DgW1";
const GW_KEY: &str = "KgWsecret";
const ESP_ID: &str = "DeSp1";
const ESP_KEY: &str = "KeSpsecret";

fn mcs_config(server: &McsServer) -> McsConfig {
    McsConfig {
        base_url: server.base_url(),
        devices: vec![
            McsDevice {
                agent_device: "gw".into(),
                device_id: GW_ID.into(),
                device_key: GW_KEY.into(),
            },
            McsDevice {
                agent_device: "esp-1".into(),
                device_id: ESP_ID.into(),
                device_key: ESP_KEY.into(),
            },
        ],
        command_server: None,
        heartbeat_interval: Duration::from_millis(200),
        max_push_age: Duration::from_secs(600),
        status_channel: Some("fota_status".into()),
        startup_spread: Duration::ZERO,
    }
}

struct Rig {
    server: McsServer,
    state: tempfile::TempDir,
    gw: Arc<FakeDevice>,
    esp: Arc<FakeDevice>,
}

impl Rig {
    async fn new(gw: Arc<FakeDevice>) -> Rig {
        let server = McsServer::start().await;
        server.add_device(GW_ID, GW_KEY);
        server.add_device(ESP_ID, ESP_KEY);
        Rig {
            server,
            state: tempfile::tempdir().unwrap(),
            gw,
            esp: FakeDevice::new("1.0"),
        }
    }

    fn devices(&self) -> Vec<DeviceConfig> {
        vec![
            device_config("gw", "gateway", UpdatePolicy::Immediate),
            device_config("esp-1", "esp", UpdatePolicy::Immediate),
        ]
    }

    /// Reports the agent keeps queued in the state folder, not yet acknowledged.
    fn queued(&self) -> usize {
        let config = mcs_config(&self.server);
        McsSource::new(
            &config,
            &self.devices(),
            &Default::default(),
            self.state.path(),
        )
        .queued_reports()
    }

    /// The status values (`version,STATE`) queued in the saved outbox, in order.
    fn queued_statuses(&self) -> Vec<String> {
        let saved = self.state.path().join("mcs").join("state.json");
        let doc: serde_json::Value = std::fs::read(saved)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        doc["outbox"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["what"]["kind"] == "status")
            .filter_map(|r| r["what"]["value"].as_str().map(str::to_string))
            .collect()
    }

    fn engine(&self) -> Engine {
        self.engine_in(self.state.path())
    }

    fn engine_in(&self, state: &Path) -> Engine {
        let devices = self.devices();
        let source = McsSource::new(
            &mcs_config(&self.server),
            &devices,
            &Default::default(),
            state,
        );
        Engine::new(
            agent_config(state),
            &Default::default(),
            Box::new(source),
            vec![
                (
                    devices[0].clone(),
                    self.gw.clone() as Arc<dyn UpdateHandler>,
                ),
                (
                    devices[1].clone(),
                    self.esp.clone() as Arc<dyn UpdateHandler>,
                ),
            ],
        )
        .unwrap()
        // The server sends MD5 (and other weak checksums) only: the documented opt-in.
        .with_trust(fota_agent::trust::TrustPolicy {
            allow_weak_checksums: true,
            ..Default::default()
        })
    }

    /// Waits until the gateway's command channel has sent a heartbeat.
    async fn gateway_channel_up(&self, what: &str) {
        until(what, || {
            self.server
                .heartbeats()
                .iter()
                .any(|l| l.starts_with(&format!("{GW_ID},")))
        })
        .await;
    }

    fn offer(&self, device: &str, version: &str, content: &[u8], md5: Option<String>) {
        let url = self
            .server
            .add_file(&format!("{device}-{version}.bin"), content);
        self.server.offer(
            device,
            Offer {
                fwid: format!("F{version}"),
                version: version.into(),
                url,
                md5,
                prerequisites: None,
            },
        );
    }
}

/// Runs `engine` until the returned token is cancelled.
fn start(engine: &Engine) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let (e, s) = (engine.clone(), shutdown.clone());
    (shutdown, tokio::spawn(async move { e.run(s).await }))
}

/// The stand-in answers like MCS: a malformed datapoints upload gets 400, a
/// heartbeat that is not `deviceId,deviceKey,timestamp` of a known device gets
/// its connection closed without an echo.
#[tokio::test]
async fn the_stand_in_refuses_malformed_datapoints_and_heartbeats() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = McsServer::start().await;
    server.add_device(GW_ID, GW_KEY);
    let good = r#"{"datapoints":[{"dataChnId":"fota_status","values":{"value":"2.0,SUCCESS"}}]}"#;
    assert_eq!(server.post_datapoints(GW_ID, GW_KEY, good).await, 200);
    for bad in [
        "2.0,SUCCESS",
        "{}",
        r#"{"datapoints":[]}"#,
        r#"{"datapoints":[{"values":{"value":"x"}}]}"#,
        r#"{"datapoints":[{"dataChnId":"fota_status","values":{}}]}"#,
    ] {
        assert_eq!(
            server.post_datapoints(GW_ID, GW_KEY, bad).await,
            400,
            "{bad}"
        );
    }
    assert_eq!(server.datapoints(GW_ID), ["2.0,SUCCESS"]);
    for bad in [format!("{GW_ID},{GW_KEY}\n"), format!("{GW_ID},wrong,1\n")] {
        let mut c = tokio::net::TcpStream::connect(server.command)
            .await
            .unwrap();
        c.write_all(bad.as_bytes()).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut rest));
        assert!(read.await.is_ok(), "{bad:?}: connection left open");
        assert!(rest.is_empty(), "{bad:?} was echoed");
    }
    assert_eq!(server.refused_heartbeats(), 2);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn push_line(id: &str, key: &str, ts: u64, version: &str, md5: &str, url: &str) -> String {
    format!("{id},{key},{ts},FOTA,{version},{md5},{url}")
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_flow_reports_versions_offers_firmware_and_honours_prerequisites() {
    let rig = Rig::new(FakeDevice::new("1.0")).await;
    let image = b"gateway firmware 2.0".as_slice();
    rig.offer(GW_ID, "2.0", image, Some(md5_hex(image)));
    let url3 = rig.server.add_file("gw-3.0.bin", b"three");
    rig.server.offer(
        GW_ID,
        Offer {
            fwid: "F3".into(),
            version: "3.0".into(),
            url: url3,
            md5: Some(md5_hex(b"three")),
            prerequisites: Some(vec!["2.5".into()]),
        },
    );
    let engine = rig.engine();

    // `check`: 2.0 is offered (URL and MD5 from the url resource), 3.0 is
    // refused by its prerequisite list.
    let reports = engine.check().await;
    let gw = &reports[0];
    assert_eq!(gw.error, None);
    assert_eq!(
        gw.selection.candidate.as_ref().map(|f| f.version.as_str()),
        Some("2.0")
    );
    let refused: Vec<_> = gw
        .selection
        .refused
        .iter()
        .map(|(v, r)| (v.as_str(), r.as_str()))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, "3.0");
    assert!(refused[0].1.contains("2.5"), "{}", refused[0].1);
    // Nothing offered to esp-1.
    assert_eq!(reports[1].selection.candidate, None);

    let (shutdown, runner) = start(&engine);
    until("gateway updated", || {
        rig.gw.version().as_deref() == Some("2.0")
    })
    .await;
    until("success reported", || {
        rig.server
            .datapoints(GW_ID)
            .contains(&"2.0,SUCCESS".to_string())
    })
    .await;
    until("version 2.0 reported", || {
        rig.server.versions(GW_ID).contains(&"2.0".to_string())
    })
    .await;
    assert_eq!(rig.gw.received.lock().unwrap().as_slice(), image);
    assert_eq!(
        rig.server.datapoints(GW_ID),
        vec![
            "2.0,DOWNLOADING",
            "2.0,TRANSFERRING",
            "2.0,UPDATING",
            "2.0,SUCCESS"
        ]
    );
    // Each version the device ran is reported once per change, 2.0 last.
    until("gateway version", || {
        let v = rig.server.versions(GW_ID);
        let mut unique = v.clone();
        unique.dedup();
        v.last().map(String::as_str) == Some("2.0") && unique == v
    })
    .await;
    until("esp-1 version", || {
        rig.server.versions(ESP_ID) == vec!["1.0"]
    })
    .await;
    // Every REST request carried the right key.
    assert!(rig.server.requests().iter().all(|(_, _, key_ok)| *key_ok));
    shutdown.cancel();
    runner.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_md5_is_reported_failed() {
    let rig = Rig::new(FakeDevice::new("1.0")).await;
    rig.offer(
        GW_ID,
        "2.0",
        b"the real bytes",
        Some(md5_hex(b"other bytes")),
    );
    let engine = rig.engine();
    let (shutdown, runner) = start(&engine);
    until("failure reported", || {
        rig.server
            .datapoints(GW_ID)
            .iter()
            .any(|v| v.starts_with("2.0,FAILED,"))
    })
    .await;
    let failed: Vec<String> = rig
        .server
        .datapoints(GW_ID)
        .into_iter()
        .filter(|v| v.starts_with("2.0,FAILED"))
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].to_lowercase().contains("md5"), "{failed:?}");
    assert_eq!(rig.gw.updates.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(rig.gw.version().as_deref(), Some("1.0"));
    shutdown.cancel();
    runner.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_show_in_check_and_do_not_crash() {
    let rig = Rig::new(FakeDevice::new("1.0")).await;
    rig.server.fail("available", 1);
    let engine = rig.engine();
    let reports = engine.check().await;
    let e = reports[0].error.as_deref().unwrap_or_default();
    assert!(
        e.contains("MCS GET devices/DgW1/firmwares/available: HTTP 500"),
        "{e}"
    );
    assert!(!e.contains(GW_KEY));
    // A wrong key: 401, named, key not shown.
    let mut config = mcs_config(&rig.server);
    config.devices[0].device_key = "wrong".into();
    let devices = rig.devices();
    let source = McsSource::new(&config, &devices, &Default::default(), rig.state.path());
    let err = fota_agent::source::FirmwareSource::firmware_for(&source, &devices[0])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("HTTP 401"), "{err}");
    // An unreachable server.
    let mut config = mcs_config(&rig.server);
    config.base_url = "http://127.0.0.1:9/mcs/v2".into();
    let source = McsSource::new(&config, &devices, &Default::default(), rig.state.path());
    let err = fota_agent::source::FirmwareSource::firmware_for(&source, &devices[0])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("MCS GET devices/DgW1/firmwares/available"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_are_validated_and_bad_lines_leave_the_connection_up() {
    let rig = Rig::new(FakeDevice::new("1.0")).await;
    let engine = rig.engine();
    let (shutdown, runner) = start(&engine);
    let server = &rig.server;
    until("both channels identified", || {
        let hb = server.heartbeats();
        hb.iter()
            .any(|l| l.starts_with(&format!("{GW_ID},{GW_KEY},")))
            && hb
                .iter()
                .any(|l| l.starts_with(&format!("{ESP_ID},{ESP_KEY},")))
    })
    .await;
    // Heartbeats keep coming (every 200 ms here).
    let before = server.heartbeats().len();
    until("more heartbeats", || {
        server.heartbeats().len() >= before + 2
    })
    .await;
    assert_eq!(server.refused_heartbeats(), 0, "{:?}", server.heartbeats());

    let image = b"esp firmware 2.0".as_slice();
    let url = server.add_file("esp-2.0.bin", image);
    let md5 = md5_hex(image);
    let now = now_ms();
    let bad = [
        "complete garbage".to_string(),
        format!("{ESP_ID},{ESP_KEY},{now},switch01,1"),
        push_line(ESP_ID, "forged", now, "9.0", &md5, &url),
        push_line(GW_ID, GW_KEY, now, "9.0", &md5, &url),
        push_line(ESP_ID, ESP_KEY, now - 3_600_000, "9.0", &md5, &url),
        push_line(ESP_ID, ESP_KEY, now, "0.9", &md5, &url),
        push_line(ESP_ID, ESP_KEY, now, "9.0", "1234", &url),
        push_line(ESP_ID, ESP_KEY, now, "9.0", &md5, "ftp://127.0.0.1/x"),
        format!("{ESP_ID},{ESP_KEY},{now},FOTA,9.0"),
        "x".repeat(20_000),
    ];
    for line in &bad {
        assert_eq!(server.push(ESP_ID, line), 1);
    }
    // A valid push to the attached device updates it now (the poll interval is
    // an hour), over the same connection, after the bad lines: had one of them
    // been taken, the device would have gone to 9.0 or 0.9 first.
    let good = push_line(ESP_ID, ESP_KEY, now, "2.0", &md5, &url);
    assert_eq!(server.push(ESP_ID, &good), 1);
    until("esp-1 updated", || {
        rig.esp.version().as_deref() == Some("2.0")
    })
    .await;
    assert_eq!(rig.esp.updates.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(rig.esp.received.lock().unwrap().as_slice(), image);
    assert_eq!(rig.gw.updates.load(std::sync::atomic::Ordering::SeqCst), 0);
    until("success reported", || {
        server
            .datapoints(ESP_ID)
            .contains(&"2.0,SUCCESS".to_string())
    })
    .await;

    // The same line again is a replay; a later push works.
    assert_eq!(server.push(ESP_ID, &good), 1);
    let url3 = server.add_file("esp-3.0.bin", b"esp three");
    let three = push_line(
        ESP_ID,
        ESP_KEY,
        now + 1,
        "3.0",
        &md5_hex(b"esp three"),
        &url3,
    );
    assert_eq!(server.push(ESP_ID, &three), 1);
    until("esp-1 at 3.0", || {
        rig.esp.version().as_deref() == Some("3.0")
    })
    .await;
    assert_eq!(rig.esp.updates.load(std::sync::atomic::Ordering::SeqCst), 2);
    // One connection per MCS device the whole time.
    assert_eq!(server.accepted(), 2);
    until("3.0 reported", || {
        server
            .datapoints(ESP_ID)
            .contains(&"3.0,SUCCESS".to_string())
    })
    .await;
    let successes = server
        .datapoints(ESP_ID)
        .iter()
        .filter(|v| v.ends_with("SUCCESS"))
        .count();
    assert_eq!(successes, 2);
    shutdown.cancel();
    runner.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_during_a_running_update_runs_after_it() {
    let rig = Rig::new(FakeDevice::build(
        "1.0",
        false,
        Some(Duration::from_millis(1500)),
    ))
    .await;
    let image2 = b"gw two".as_slice();
    rig.offer(GW_ID, "2.0", image2, Some(md5_hex(image2)));
    let engine = rig.engine();
    let mut events = engine.subscribe();
    let (shutdown, runner) = start(&engine);
    until("update 2.0 running", || {
        rig.gw.updates.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    rig.gateway_channel_up("gateway channel up").await;
    let url = rig.server.add_file("gw-3.0.bin", b"gw three");
    let line = push_line(GW_ID, GW_KEY, now_ms(), "3.0", &md5_hex(b"gw three"), &url);
    assert_eq!(rig.server.push(GW_ID, &line), 1);
    until("gateway at 3.0", || {
        rig.gw.version().as_deref() == Some("3.0")
    })
    .await;
    assert_eq!(rig.gw.updates.load(std::sync::atomic::Ordering::SeqCst), 2);

    // Not concurrent: 3.0 started only after 2.0 finished.
    let mut order = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e.kind {
            ProgressKind::Sequence(_) => order.push(format!("start {}", e.firmware_version)),
            ProgressKind::Finished(o) => order.push(format!("end {} {o}", e.firmware_version)),
            _ => {}
        }
    }
    assert_eq!(
        order,
        vec![
            "start 2.0",
            "end 2.0 success",
            "start 3.0",
            "end 3.0 success"
        ]
    );
    shutdown.cancel();
    runner.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_command_connection_is_reestablished() {
    let rig = Rig::new(FakeDevice::new("1.0")).await;
    let engine = rig.engine();
    let (shutdown, runner) = start(&engine);
    until("connected", || rig.server.accepted() == 2).await;
    rig.gateway_channel_up("identified").await;
    rig.server.drop_connections();
    until("reconnected", || rig.server.accepted() == 4).await;
    // The new connection still delivers pushes.
    let url = rig.server.add_file("gw-2.0.bin", b"gw two");
    let line = push_line(GW_ID, GW_KEY, now_ms(), "2.0", &md5_hex(b"gw two"), &url);
    until("identified again", || rig.server.push(GW_ID, &line) == 1).await;
    until("gateway at 2.0", || {
        rig.gw.version().as_deref() == Some("2.0")
    })
    .await;
    shutdown.cancel();
    runner.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_survive_a_restart_and_arrive_once() {
    let rig = Rig::new(FakeDevice::new("1.0")).await;
    let image = b"gw two".as_slice();
    rig.offer(GW_ID, "2.0", image, Some(md5_hex(image)));
    // The server refuses data points for a while.
    rig.server.fail("datapoints", 1000);
    let engine = rig.engine();
    let (shutdown, runner) = start(&engine);
    until("gateway at 2.0", || {
        rig.gw.version().as_deref() == Some("2.0")
    })
    .await;
    let flow = [
        "2.0,DOWNLOADING",
        "2.0,TRANSFERRING",
        "2.0,UPDATING",
        "2.0,SUCCESS",
    ];
    until("every status queued", || rig.queued_statuses() == flow).await;
    until("a refused delivery", || {
        rig.server
            .requests()
            .iter()
            .any(|(m, p, _)| m == "POST" && p.ends_with("/datapoints"))
    })
    .await;
    shutdown.cancel();
    runner.await.unwrap();
    drop(engine);

    // Restarted: the queued reports go out, each once.
    rig.server.fail("datapoints", 0);
    let engine = rig.engine();
    let (shutdown, runner) = start(&engine);
    until("outcome delivered", || {
        rig.server
            .datapoints(GW_ID)
            .contains(&"2.0,SUCCESS".to_string())
    })
    .await;
    until("queue drained", || rig.queued() == 0).await;
    assert_eq!(
        rig.server.datapoints(GW_ID),
        vec![
            "2.0,DOWNLOADING",
            "2.0,TRANSFERRING",
            "2.0,UPDATING",
            "2.0,SUCCESS"
        ]
    );
    assert_eq!(rig.gw.updates.load(std::sync::atomic::Ordering::SeqCst), 1);
    shutdown.cancel();
    runner.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outcome_resolved_by_restart_recovery_is_reported() {
    let rig = Rig::new(FakeDevice::new("2.0")).await;
    // A previous run was killed during the update step of 2.0.
    let store = fota_agent::store::Store::open(rig.state.path()).unwrap();
    store
        .update("gw", |s| {
            s.in_flight = Some(fota_agent::store::InFlight {
                version: "2.0".into(),
                phase: fota_agent::store::Phase::Update,
                started_at: 1,
                process: None,
                written: false,
                sha256: None,
                parts: Vec::new(),
            })
        })
        .unwrap();
    let engine = rig.engine();
    let recovered = engine.recover().await;
    assert_eq!(recovered[0].outcome, Some(Outcome::Success));
    let (shutdown, runner) = start(&engine);
    until("recovered outcome reported", || {
        rig.server
            .datapoints(GW_ID)
            .contains(&"2.0,SUCCESS".to_string())
    })
    .await;
    shutdown.cancel();
    runner.await.unwrap();
    // Not again after another restart.
    let engine = rig.engine();
    let polled = rig.server.requests().len();
    let (shutdown, runner) = start(&engine);
    // A whole cycle ran (it asked for firmware) and left nothing queued.
    until("a poll after the restart", || {
        rig.server.requests()[polled..]
            .iter()
            .any(|(_, p, _)| p.ends_with("/firmwares/available"))
    })
    .await;
    until("nothing queued", || rig.queued() == 0).await;
    shutdown.cancel();
    runner.await.unwrap();
    assert_eq!(
        rig.server
            .datapoints(GW_ID)
            .iter()
            .filter(|v| *v == "2.0,SUCCESS")
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn firmware_without_md5_is_taken_under_the_weak_checksum_opt_in() {
    // The documented `available` answer has no MD5 field at all.
    let rig = Rig::new(FakeDevice::new("1.0")).await;
    let image = b"gateway firmware 2.0, no md5".as_slice();
    rig.offer(GW_ID, "2.0", image, None);
    let engine = rig.engine();
    let (shutdown, runner) = start(&engine);
    until("gateway at 2.0", || {
        rig.gw.version().as_deref() == Some("2.0")
    })
    .await;
    assert_eq!(*rig.gw.received.lock().unwrap(), image);
    // MediaTek's own push example: MD5 `null`, unterminated, after an echoed heartbeat.
    rig.gateway_channel_up("gateway channel up").await;
    let url = rig.server.add_file("gw-3.0.bin", b"gw three");
    let line = push_line(GW_ID, GW_KEY, now_ms(), "3.0", "null", &url);
    assert_eq!(rig.server.push(GW_ID, &line), 1);
    until("gateway at 3.0", || {
        rig.gw.version().as_deref() == Some("3.0")
    })
    .await;
    assert_eq!(*rig.gw.received.lock().unwrap(), b"gw three");
    shutdown.cancel();
    runner.await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_versions_from_mcs_are_refused_without_repeating_them() {
    let rig = Rig::new(FakeDevice::new("1.0")).await;
    let image = b"gateway firmware".as_slice();
    let url = rig.server.add_file("gw.bin", image);
    let long = "9".repeat(200);
    let cases = [
        (
            "2.0\n$(reboot)",
            "version: control character U+000A at character 4",
        ),
        (
            "2.0$(reboot)",
            "version: shell character '$' at character 4",
        ),
        (long.as_str(), "version: 200 characters (at most 128)"),
    ];
    for (version, reason) in cases {
        rig.server.offer(
            GW_ID,
            Offer {
                fwid: "F1".into(),
                version: version.into(),
                url: url.clone(),
                md5: Some(md5_hex(image)),
                prerequisites: None,
            },
        );
        let reports = rig.engine().check().await;
        let error = reports[0].error.clone().unwrap_or_default();
        assert!(
            error.contains(&format!("a firmware refused: {reason}")),
            "{error}"
        );
        assert!(!error.contains("reboot") && !error.contains(&long));
    }

    // Pushed: refused, the connection stays up and nothing installs.
    let engine = rig.engine();
    let (shutdown, runner) = start(&engine);
    rig.gateway_channel_up("gateway channel up").await;
    let line = push_line(
        GW_ID,
        GW_KEY,
        now_ms(),
        "2.0$(reboot)",
        &md5_hex(image),
        &url,
    );
    assert_eq!(rig.server.push(GW_ID, &line), 1);
    let good = push_line(GW_ID, GW_KEY, now_ms(), "2.0", &md5_hex(image), &url);
    assert_eq!(rig.server.push(GW_ID, &good), 1);
    until("gw updated to 2.0", || {
        rig.gw.version().as_deref() == Some("2.0")
    })
    .await;
    assert_eq!(rig.gw.updates.load(std::sync::atomic::Ordering::SeqCst), 1);
    let sent = format!("{:?}", rig.server.datapoints(GW_ID));
    assert!(!sent.contains("reboot"), "{sent}");
    shutdown.cancel();
    runner.await.unwrap();
}
