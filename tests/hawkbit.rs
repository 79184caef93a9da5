//! The hawkBit DDI source end to end: poll → deploymentBase → artifact download
//! through the engine → handler → feedback, checked on a server.
//!
//! Two servers: `hawkbit_mock` (the hawkbit-rs project's DDI mock on httpmock)
//! for the flows it models — token auth on every request, deployment, artifact,
//! exact closing feedback, configData, cancel before start — and
//! `hawkbit_ext::DdiServer` for what it cannot do (see that module).

mod common;
mod hawkbit_ext;
#[path = "support/http_request.rs"]
mod http_request;
mod minisign;
mod process;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use fota_agent::checksum::{ChecksumAlgorithm, MultiHasher};
use fota_agent::config::{DeviceConfig, HawkbitAuth, HawkbitConfig, Secret};
use fota_agent::engine::Engine;
use fota_agent::handler::UpdateHandler;
use fota_agent::model::UpdatePolicy;
use fota_agent::source::hawkbit::HawkbitSource;
use hawkbit::ddi::{Execution, Finished, MaintenanceWindow, Type};
use hawkbit_ext::{DdiServer, TARGET, TOKEN};
use hawkbit_mock::ddi::{ChunkProtocol, DeploymentBuilder, ServerBuilder};
use process::until;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn digest(data: &[u8], a: ChecksumAlgorithm) -> String {
    let mut h = MultiHasher::new([a]);
    h.update(data);
    h.finish().get(a).unwrap().to_string()
}

fn config(url: &str, controller: &str, token: &str) -> HawkbitConfig {
    HawkbitConfig {
        url: url.trim_end_matches('/').to_string(),
        tenant: "DEFAULT".into(),
        controller_id: Some(controller.into()),
        auth: HawkbitAuth::TargetToken(Secret::new(token)),
        min_poll_interval: Duration::from_millis(100),
        startup_spread: Duration::ZERO,
        devices: Vec::new(),
    }
}

fn engine(
    state: &std::path::Path,
    hb: &HawkbitConfig,
    devices: Vec<(DeviceConfig, Arc<FakeDevice>)>,
) -> Engine {
    let configs: Vec<DeviceConfig> = devices.iter().map(|(c, _)| c.clone()).collect();
    let source = HawkbitSource::new(hb, &Default::default(), &configs, state).unwrap();
    Engine::new(
        agent_config(state),
        &Default::default(),
        Box::new(source),
        devices
            .into_iter()
            .map(|(c, h)| (c, h as Arc<dyn UpdateHandler>))
            .collect(),
    )
    .unwrap()
}

struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(engine: &Engine) -> Running {
    let shutdown = CancellationToken::new();
    let (e, s) = (engine.clone(), shutdown.clone());
    Running {
        shutdown,
        task: tokio::spawn(async move { e.run(s).await }),
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Waits until the agent's durable feedback queue (`hawkbit.json`) is empty:
/// everything it had to say was delivered, so nothing more can follow from it.
async fn queue_drained(state: &std::path::Path) {
    let saved = state.join("hawkbit.json");
    until("feedback queue drained", || {
        std::fs::read(&saved)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["queue"] == json!([]))
    })
    .await;
}

/// Waits for `n` more root polls: the agent went round its loop again, so what
/// it would repeat would have been repeated.
async fn more_polls(server: &DdiServer, n: usize) {
    let before = server.polls().len();
    until("more polls", || server.polls().len() >= before + n).await;
}

fn status_of(fb: &serde_json::Value) -> (String, String, Vec<String>) {
    let s = &fb["status"];
    (
        s["execution"].as_str().unwrap().to_string(),
        s["result"]["finished"].as_str().unwrap().to_string(),
        s["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_string())
            .collect(),
    )
}

// ---------------------------------------------------------------------------
// Against hawkbit_mock
// ---------------------------------------------------------------------------

/// hawkbit_mock 0.7 predates the DDI feedback's `timestamp` (hawkBit's
/// `DdiActionFeedback`, milliseconds) and matches feedback bodies exactly. This
/// shim sits between the agent and the mock: it takes `timestamp` out of each
/// request body (keeping it for the test to check), forwards the rest, and points
/// the links in the mock's answers back at itself.
struct TimestampShim {
    base_url: String,
    timestamps: Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

async fn timestamp_shim(upstream: String) -> TimestampShim {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    fota_agent::tls::install_ring();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let timestamps = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (seen, own) = (timestamps.clone(), base_url.clone());
    let client = reqwest::Client::new();
    let forward = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (client, seen, upstream, own) =
            (client.clone(), seen.clone(), upstream.clone(), own.clone());
        async move {
            let mut body = body.to_vec();
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&body)
                && let Some(t) = v.as_object_mut().and_then(|o| o.remove("timestamp"))
            {
                seen.lock().unwrap().push(t);
                body = serde_json::to_vec(&v).unwrap();
            }
            let mut req = client
                .request(method, format!("{upstream}{uri}"))
                .body(body);
            for name in ["authorization", "content-type", "accept"] {
                if let Some(v) = headers.get(name) {
                    req = req.header(name, v.as_bytes());
                }
            }
            let answer = req.send().await.unwrap();
            let code = StatusCode::from_u16(answer.status().as_u16()).unwrap();
            let kind = answer
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_string();
            let mut bytes = answer.bytes().await.unwrap().to_vec();
            if kind.contains("json") {
                bytes = String::from_utf8(bytes)
                    .unwrap()
                    .replace(&upstream, &own)
                    .into_bytes();
            }
            (code, [("content-type", kind)], bytes)
        }
    };
    let app = axum::Router::new().fallback(forward);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    TimestampShim {
        base_url,
        timestamps,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_deployment_is_downloaded_installed_and_closed_with_attributes() {
    let (state, files) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let image = b"esp firmware 2.0 image".repeat(500);
    let artifact = files.path().join("esp-2.0.bin");
    std::fs::write(&artifact, &image).unwrap();

    let server = ServerBuilder::default().build();
    let target = server.add_target("gw-mock");
    let deployment = DeploymentBuilder::new("10", Type::Forced, Type::Attempt)
        .maintenance_window(MaintenanceWindow::Available)
        .chunk(
            ChunkProtocol::HTTP,
            "bApp",
            "2.0",
            "esp-1",
            vec![(
                artifact.clone(),
                &digest(&image, ChecksumAlgorithm::Md5),
                &digest(&image, ChecksumAlgorithm::Sha1),
                &digest(&image, ChecksumAlgorithm::Sha256),
            )],
        )
        .build();
    target.push_deployment(deployment);
    let closed = target.expect_deployment_feedback(
        "10",
        Execution::Closed,
        Finished::Success,
        Some(json!({"cnt": 1, "of": 1})),
        vec!["esp-1: 2.0 installed"],
    );
    target.request_config(json!({
        "mode": "merge",
        "data": {
            "fota_agent.version": env!("CARGO_PKG_VERSION"),
            "esp-1.type": "esp8266",
            "esp-1.version": "2.0",
        },
        "status": {"execution": "closed", "result": {"finished": "success"}, "details": []},
    }));

    let shim = timestamp_shim(server.base_url()).await;
    let dev = FakeDevice::new("1.0");
    let hb = config(&shim.base_url, "gw-mock", "Keygw-mock");
    let eng = engine(
        state.path(),
        &hb,
        vec![(
            device_config("esp-1", "esp8266", UpdatePolicy::Immediate),
            dev.clone(),
        )],
    );
    let run = start(&eng);
    until("closing feedback", || closed.calls() == 1).await;
    until("attributes", || target.config_data_hits() >= 1).await;
    assert_eq!(dev.version().as_deref(), Some("2.0"));
    assert_eq!(*dev.received.lock().unwrap(), image);
    assert!(target.poll_hits() >= 1);
    assert!(target.deployment_hits() >= 1);
    // The server has the feedback before the outbox dequeues it: wait for the
    // dequeue instead of racing it with the stop.
    let saved_queue = state.path().join("hawkbit.json");
    until("closing feedback dequeued", || {
        std::fs::read(&saved_queue)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["queue"] == json!([]))
    })
    .await;
    run.stop().await;
    // Exactly once, and the durable queue is empty.
    assert_eq!(closed.calls(), 1);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.path().join("hawkbit.json")).unwrap()).unwrap();
    assert_eq!(saved["queue"], json!([]));
    assert!(saved.get("action").is_none());
    let stamps = shim.timestamps.lock().unwrap().clone();
    assert!(
        !stamps.is_empty() && stamps.iter().all(|t| t.as_u64().is_some()),
        "{stamps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_cancel_of_an_action_not_started_is_acknowledged_and_nothing_installs() {
    let (state, files) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let artifact = files.path().join("fw.bin");
    std::fs::write(&artifact, b"x").unwrap();
    let server = ServerBuilder::default().build();
    let target = server.add_target("gw-c");
    let deployment = DeploymentBuilder::new("11", Type::Forced, Type::Forced)
        .chunk(
            ChunkProtocol::HTTP,
            "bApp",
            "2.0",
            "d",
            vec![(artifact, "00", "00", "00")],
        )
        .build();
    target.push_deployment(deployment);
    target.cancel_action("11");
    let answered = target.expect_cancel_feedback(
        "11",
        Execution::Closed,
        Finished::Success,
        vec!["action 11: nothing running here"],
    );
    let dev = FakeDevice::new("1.0");
    let shim = timestamp_shim(server.base_url()).await;
    let hb = config(&shim.base_url, "gw-c", "Keygw-c");
    let eng = engine(
        state.path(),
        &hb,
        vec![(
            device_config("d", "t", UpdatePolicy::Immediate),
            dev.clone(),
        )],
    );
    let run = start(&eng);
    until("cancel feedback", || answered.calls() == 1).await;
    queue_drained(state.path()).await;
    run.stop().await;
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
    assert_eq!(target.cancel_action_hits(), 1);
}

// ---------------------------------------------------------------------------
// Against the scriptable server
// ---------------------------------------------------------------------------

struct Ext {
    server: DdiServer,
    image: Vec<u8>,
}

async fn ext(download: &str, update: &str, window: Option<&str>) -> Ext {
    let server = DdiServer::start().await;
    let image = b"mcu image 2.0 ".repeat(4000);
    {
        let mut s = server.script();
        s.files.push(("mcu-2.0.bin".into(), image.clone()));
        s.deployment = Some((
            "20".into(),
            hawkbit_ext::deployment(
                &server.base_url,
                (download, update),
                window,
                "mcu-2.0.bin",
                &image,
            ),
        ));
    }
    Ext { server, image }
}

fn ext_config(server: &DdiServer) -> HawkbitConfig {
    config(&server.base_url, TARGET, TOKEN)
}

/// An engine with one immediate device `mcu-1` of type `mcu` against `server`.
fn mcu_engine(state: &std::path::Path, server: &DdiServer, dev: &Arc<FakeDevice>) -> Engine {
    mcu_engine_with(state, &ext_config(server), dev)
}

/// [`mcu_engine`] with a config of the test's own.
fn mcu_engine_with(state: &std::path::Path, hb: &HawkbitConfig, dev: &Arc<FakeDevice>) -> Engine {
    let device = device_config("mcu-1", "mcu", UpdatePolicy::Immediate);
    engine(state, hb, vec![(device, dev.clone())])
}

/// A forced deployment for `mcu-1` from a server that refuses feedback for now:
/// the server, the state folder, the device and a first engine.
async fn refusing_feedback() -> (DdiServer, tempfile::TempDir, Arc<FakeDevice>, Engine) {
    let Ext { server, .. } = ext("forced", "forced", None).await;
    server.script().refuse_feedback = true;
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::new("1.0");
    let first = mcu_engine(state.path(), &server, &dev);
    (server, state, dev, first)
}

/// The stand-in answers feedback like hawkBit's `DdiRootController`: 400 for a
/// body that is not a `DdiActionFeedback`, 404 for an action the target was never
/// offered, 410 once a `closed` message closed the action.
#[tokio::test]
async fn the_stand_in_answers_feedback_like_hawkbit() {
    let Ext { server, .. } = ext("forced", "forced", None).await;
    let feedback = format!("{}/deploymentBase/20/feedback", server.controller());
    let ok = r#"{"status":{"execution":"proceeding","result":{"finished":"none"}}}"#;
    assert_eq!(
        server.post(&feedback, ok).await,
        404,
        "not linked by a poll yet"
    );
    let token = format!("Authorization: TargetToken {TOKEN}\r\n");
    assert_eq!(
        server.send("GET", &server.controller(), &token, "").await,
        200
    );
    assert_eq!(
        server.send("POST", &feedback, &token, ok).await,
        415,
        "no JSON type"
    );
    for bad in [
        "not json",
        r#"{"timestamp":1}"#,
        r#"{"status":{"result":{"finished":"none"}}}"#,
        r#"{"status":{"execution":"done","result":{"finished":"none"}}}"#,
        r#"{"status":{"execution":"closed"}}"#,
        r#"{"status":{"execution":"closed","result":{"finished":"ok"}}}"#,
        r#"{"status":{"execution":"proceeding","result":{"finished":"none","progress":{"of":2}}}}"#,
    ] {
        assert_eq!(server.post(&feedback, bad).await, 400, "{bad}");
    }
    let other = format!("{}/deploymentBase/99/feedback", server.controller());
    assert_eq!(server.post(&other, ok).await, 404);
    assert_eq!(server.post(&feedback, ok).await, 200);
    let close = r#"{"status":{"execution":"closed","result":{"finished":"success"}}}"#;
    assert_eq!(server.post(&feedback, close).await, 200);
    assert_eq!(server.post(&feedback, ok).await, 410);
}

fn closed(server: &DdiServer) -> Vec<serde_json::Value> {
    server
        .feedback("deploymentBase", "20")
        .into_iter()
        .filter(|f| f["status"]["execution"] == "closed")
        .collect()
}

/// An idle agent polls with `If-None-Match` (hawkBit answers 304 while nothing
/// changed) and still sees a deployment as soon as one appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_are_conditional_and_a_change_still_gets_through() {
    let Ext { server, image } = ext("forced", "forced", None).await;
    let offered = server.script().deployment.take();
    server.script().sleep = "00:00:01".into();
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::new("1.0");
    let eng = mcu_engine(state.path(), &server, &dev);
    let root = format!("/DEFAULT/controller/v1/{TARGET}");
    let polls = || {
        server
            .seen()
            .into_iter()
            .filter(|s| s.method == "GET" && s.path == root)
            .collect::<Vec<_>>()
    };
    let run = start(&eng);
    until("three polls", || polls().len() >= 3).await;
    let seen = polls();
    assert_eq!(
        seen[0].if_none_match, None,
        "the first poll has nothing to compare"
    );
    assert!(
        seen[1..].iter().all(|p| p
            .if_none_match
            .as_deref()
            .is_some_and(|e| e.starts_with("\"0"))),
        "later polls are conditional"
    );
    server.script().deployment = offered;
    until("closed", || closed(&server).len() == 1).await;
    run.stop().await;
    assert_eq!(*dev.received.lock().unwrap(), image);
}

/// hawkBit asks for attributes when an action closes; the agent answers with one
/// PUT carrying the new version, and every feedback carries the event's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attributes_are_sent_once_after_an_action_and_feedback_is_timestamped() {
    let Ext { server, .. } = ext("forced", "forced", None).await;
    server.script().sleep = "00:00:01".into();
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::new("1.0");
    let eng = mcu_engine(state.path(), &server, &dev);
    let started = std::time::SystemTime::now();
    let run = start(&eng);
    until("closed", || closed(&server).len() == 1).await;
    let puts = || {
        server
            .seen()
            .into_iter()
            .filter(|s| s.method == "PUT" && s.path.ends_with("/configData"))
            .collect::<Vec<_>>()
    };
    until("configData", || !puts().is_empty()).await;
    // Three more polls: a second PUT would come with the first of them.
    let polls = || server.seen().iter().filter(|s| s.method == "GET").count();
    let after = polls();
    until("three more polls", || polls() >= after + 3).await;
    run.stop().await;
    assert_eq!(puts().len(), 1, "attributes PUT once");
    let body = puts()[0].body.clone().unwrap();
    assert_eq!(body["data"]["mcu-1.version"], "2.0");
    let ms = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
    };
    let (from, to) = (ms(started), ms(std::time::SystemTime::now()));
    for fb in server.feedback("deploymentBase", "20") {
        let t = fb["timestamp"].as_u64().expect("timestamp in ms");
        assert!((from..=to).contains(&t), "{t} not in {from}..={to}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_follows_the_update_step_by_step() {
    let Ext { server, image } = ext("forced", "forced", None).await;
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::new("1.0");
    let eng = mcu_engine(state.path(), &server, &dev);
    let run = start(&eng);
    until("closed", || closed(&server).len() == 1).await;
    run.stop().await;
    assert_eq!(*dev.received.lock().unwrap(), image);

    let all = server.feedback("deploymentBase", "20");
    let lines: Vec<(String, String, Vec<String>)> = all.iter().map(status_of).collect();
    assert_eq!(
        lines.first().unwrap(),
        &(
            "proceeding".into(),
            "none".into(),
            vec!["mcu-1: mcu 2.0 offered".into()]
        )
    );
    let details: Vec<String> = lines.iter().flat_map(|l| l.2.clone()).collect();
    let pos = |needle: &str| {
        details
            .iter()
            .position(|d| d == needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {details:#?}"))
    };
    assert!(pos("mcu-1: DOWNLOADING") < pos("mcu-1: TRANSFERRING"));
    assert!(pos("mcu-1: TRANSFERRING") < pos("mcu-1: UPDATING"));
    assert!(pos("mcu-1: UPDATING") < pos("mcu-1: 2.0 installed"));
    assert_eq!(
        lines.last().unwrap(),
        &(
            "closed".into(),
            "success".into(),
            vec!["mcu-1: 2.0 installed".into()]
        )
    );
    assert_eq!(
        all.last().unwrap()["status"]["result"]["progress"],
        json!({"cnt": 1, "of": 1})
    );
    // Every request carried the token, including the artifact download.
    let seen = server.seen();
    assert!(seen.iter().any(|s| s.path == "/download/mcu-2.0.bin"));
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some(&format!("TargetToken {TOKEN}")))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_artifact_closes_the_action_with_failure_and_the_reason() {
    let Ext { server, .. } = ext("forced", "forced", None).await;
    server.script().files[0].1[0] ^= 0xff; // corrupted on the server
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::new("1.0");
    let eng = mcu_engine(state.path(), &server, &dev);
    let run = start(&eng);
    until("closed", || closed(&server).len() == 1).await;
    queue_drained(state.path()).await;
    run.stop().await;
    let (execution, finished, details) = status_of(&closed(&server)[0]);
    assert_eq!(
        (execution.as_str(), finished.as_str()),
        ("closed", "failure")
    );
    assert!(
        details[0].starts_with("mcu-1: failed: ") && details[0].contains("SHA-256 mismatch"),
        "{details:?}"
    );
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
    assert_eq!(closed(&server).len(), 1, "the failure is reported once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_transfers_ahead_for_a_background_device_and_forced_installs_now() {
    // attempt + background policy: transfer, report scheduled, no update.
    let Ext { server, .. } = ext("forced", "attempt", None).await;
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::build("1.0", true, None);
    dev.executable.store(false, Ordering::SeqCst);
    let eng = engine(
        state.path(),
        &ext_config(&server),
        vec![(
            device_config("mcu-1", "mcu", UpdatePolicy::Background),
            dev.clone(),
        )],
    );
    let run = start(&eng);
    until("scheduled", || {
        server
            .feedback("deploymentBase", "20")
            .iter()
            .any(|f| f["status"]["execution"] == "scheduled")
    })
    .await;
    run.stop().await;
    assert_eq!(dev.transfers.load(Ordering::SeqCst), 1);
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
    assert!(closed(&server).is_empty());

    // forced, for the same kind of background device: installs now.
    let Ext { server, .. } = ext("forced", "forced", None).await;
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::build("1.0", true, None);
    let eng = engine(
        state.path(),
        &ext_config(&server),
        vec![(
            device_config("mcu-1", "mcu", UpdatePolicy::Background),
            dev.clone(),
        )],
    );
    let run = start(&eng);
    until("closed", || closed(&server).len() == 1).await;
    run.stop().await;
    assert_eq!(dev.updates.load(Ordering::SeqCst), 1);
    assert_eq!(status_of(&closed(&server)[0]).1, "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_maintenance_window_stages_then_resumes_when_it_opens() {
    let Ext { server, image } = ext("forced", "forced", Some("unavailable")).await;
    server.script().sleep = "00:00:01".into();
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::new("1.0");
    let eng = mcu_engine(state.path(), &server, &dev);
    let run = start(&eng);
    let executions = || -> Vec<String> {
        server
            .feedback("deploymentBase", "20")
            .iter()
            .map(|f| f["status"]["execution"].as_str().unwrap().to_string())
            .collect()
    };
    until("downloaded", || {
        executions().contains(&"downloaded".to_string())
    })
    .await;
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
    // The window opens.
    server.script().deployment = Some((
        "20".into(),
        hawkbit_ext::deployment(
            &server.base_url,
            ("forced", "forced"),
            Some("available"),
            "mcu-2.0.bin",
            &image,
        ),
    ));
    until("closed", || closed(&server).len() == 1).await;
    run.stop().await;
    let e = executions();
    let at = |x: &str| e.iter().position(|y| y == x).unwrap();
    assert!(
        at("downloaded") < at("resumed") && at("resumed") < at("closed"),
        "{e:?}"
    );
    assert_eq!(dev.updates.load(Ordering::SeqCst), 1);
    assert_eq!(dev.version().as_deref(), Some("2.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_action_stops_a_running_transfer_and_is_answered() {
    let Ext { server, .. } = ext("forced", "forced", None).await;
    server.script().sleep = "00:00:01".into();
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::build("1.0", true, None);
    dev.transfer_takes(Duration::from_secs(60));
    let eng = mcu_engine(state.path(), &server, &dev);
    let run = start(&eng);
    until("transfer started", || {
        dev.transfers.load(Ordering::SeqCst) == 1
    })
    .await;
    server.script().cancel = Some(("21".into(), "20".into()));
    until("cancel answered", || {
        !server.feedback("cancelAction", "21").is_empty()
    })
    .await;
    queue_drained(state.path()).await;
    more_polls(&server, 2).await;
    run.stop().await;
    let answers = server.feedback("cancelAction", "21");
    assert_eq!(answers.len(), 1);
    assert_eq!(
        status_of(&answers[0]),
        (
            "closed".into(),
            "success".into(),
            vec!["mcu-1: canceled".into()]
        )
    );
    assert_eq!(dev.cancels.load(Ordering::SeqCst), 1);
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
    assert!(
        closed(&server).is_empty(),
        "a canceled action gets no closing feedback"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_that_cannot_be_delivered_survives_a_restart() {
    let (server, state, dev, first) = refusing_feedback().await;
    let run = start(&first);
    until("update done", || dev.version().as_deref() == Some("2.0")).await;
    until("feedback tried", || {
        server
            .feedback("deploymentBase", "20")
            .iter()
            .any(|f| f["status"]["execution"] == "closed")
            || std::fs::read_to_string(state.path().join("hawkbit.json"))
                .is_ok_and(|s| s.contains("\"closed\""))
    })
    .await;
    run.stop().await;
    drop(first);
    // Feedback was tried and refused; in order, so nothing after the first went out.
    assert!(!server.feedback("deploymentBase", "20").is_empty());
    let saved = std::fs::read_to_string(state.path().join("hawkbit.json")).unwrap();
    assert!(
        saved.contains("\"closed\""),
        "closing feedback queued on disk: {saved}"
    );

    // The server is back; a new agent process delivers it, once.
    server.script().refuse_feedback = false;
    let before = server.seen().len();
    let second = mcu_engine(state.path(), &server, &dev);
    let run = start(&second);
    until("delivered", || {
        server.seen()[before..].iter().any(|s| {
            s.path.ends_with("/deploymentBase/20/feedback")
                && s.body
                    .as_ref()
                    .is_some_and(|b| b["status"]["execution"] == "closed")
        })
    })
    .await;
    queue_drained(state.path()).await;
    run.stop().await;
    let delivered_after = server.seen()[before..]
        .iter()
        .filter(|s| {
            s.path.ends_with("/feedback")
                && s.body
                    .as_ref()
                    .is_some_and(|b| b["status"]["execution"] == "closed")
        })
        .count();
    assert_eq!(delivered_after, 1);
    // Delivered in order: the first message queued (the acknowledgement) came first.
    let after: Vec<_> = server.seen()[before..]
        .iter()
        .filter(|s| s.path.ends_with("/deploymentBase/20/feedback"))
        .filter_map(|s| s.body.clone())
        .collect();
    assert_eq!(
        status_of(&after[0]).2,
        vec!["mcu-1: mcu 2.0 offered".to_string()]
    );
    assert_eq!(dev.updates.load(Ordering::SeqCst), 1, "not installed again");
}

/// An agent stopped after the server took `closed` and before it was dequeued
/// sends it again at its next start; the server answers 410 (the action is
/// closed), which counts as delivered: the queue drains and what follows it
/// still goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_sent_again_after_a_restart_is_answered_410_and_delivered() {
    let (server, state, dev, first) = refusing_feedback().await;
    let run = start(&first);
    let saved_queue = state.path().join("hawkbit.json");
    let queued_closed =
        || std::fs::read_to_string(&saved_queue).is_ok_and(|s| s.contains("\"closed\""));
    until("closed queued", queued_closed).await;
    run.stop().await;
    drop(first);
    // What the disk holds if the agent stops between sending and dequeuing.
    let unsent = std::fs::read(&saved_queue).unwrap();

    server.script().refuse_feedback = false;
    let run = start(&mcu_engine(state.path(), &server, &dev));
    until("closed delivered", || !server.script().closed.is_empty()).await;
    until("queue drained", || !queued_closed()).await;
    run.stop().await;

    std::fs::write(&saved_queue, unsent).unwrap();
    let before = server.seen().len();
    let run = start(&mcu_engine(state.path(), &server, &dev));
    until("queue drained again", || !queued_closed()).await;
    run.stop().await;
    // Only feedback counts: the configData PUT that follows a delivered
    // `closed` carries `execution: closed` too, and may or may not go out
    // before the stop.
    let repeats: Vec<_> = server.seen()[before..]
        .iter()
        .filter(|s| s.path.ends_with("/feedback"))
        .filter(|s| {
            s.path.ends_with("/feedback")
                && s.body
                    .as_ref()
                    .is_some_and(|b| b["status"]["execution"] == "closed")
        })
        .map(|s| s.path.clone())
        .collect();
    // (A configData PUT, which also carries a `closed` status, may follow here
    // when the agent had not yet answered hawkBit's attribute request.)
    assert_eq!(repeats.len(), 1, "{repeats:?}");
    assert_eq!(dev.updates.load(Ordering::SeqCst), 1, "not installed again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_interrupted_by_a_restart_reports_its_true_outcome_once() {
    let Ext { server, .. } = ext("forced", "forced", None).await;
    let state = tempfile::tempdir().unwrap();
    let dev = FakeDevice::build("1.0", false, Some(Duration::from_secs(60)));
    let first = mcu_engine(state.path(), &server, &dev);
    let run = start(&first);
    until("update step", || dev.updates.load(Ordering::SeqCst) == 1).await;
    // The agent stops mid-update; the device finishes flashing on its own.
    run.stop().await;
    drop(first);
    *dev.version.lock().unwrap() = Some("2.0".into());
    assert!(closed(&server).is_empty());

    let second = mcu_engine(state.path(), &server, &dev);
    let recovered = second.recover().await;
    assert_eq!(recovered.len(), 1);
    let run = start(&second);
    until("closed", || closed(&server).len() == 1).await;
    queue_drained(state.path()).await;
    run.stop().await;
    assert_eq!(closed(&server).len(), 1);
    assert_eq!(
        status_of(&closed(&server)[0]),
        (
            "closed".into(),
            "success".into(),
            vec!["mcu-1: 2.0 installed".into()]
        )
    );
    assert_eq!(dev.updates.load(Ordering::SeqCst), 1, "not installed again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_honours_the_server_sleep_and_the_floor() {
    let server = DdiServer::start().await;
    server.script().sleep = "00:00:01".into();
    let state = tempfile::tempdir().unwrap();
    let mut hb = ext_config(&server);
    hb.min_poll_interval = Duration::from_millis(100);
    let dev = FakeDevice::new("1.0");
    let eng = mcu_engine_with(state.path(), &hb, &dev);
    let run = start(&eng);
    until("four polls", || server.polls().len() >= 4).await;
    run.stop().await;
    // 1 s - 20 % at least between polls (the jitter's lower end): never faster
    // than the server asked, whatever the machine's load.
    for pair in server.polls().windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(790), "{gap:?}");
    }

    // A server asking for no sleep at all is held to the floor.
    let server = DdiServer::start().await;
    server.script().sleep = "00:00:00".into();
    let state = tempfile::tempdir().unwrap();
    let mut hb = ext_config(&server);
    hb.min_poll_interval = Duration::from_millis(500);
    let eng = mcu_engine_with(state.path(), &hb, &dev);
    let run = start(&eng);
    until("four polls", || server.polls().len() >= 4).await;
    run.stop().await;
    for pair in server.polls().windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(490),
            "{gap:?} below the 500 ms floor"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_back_off_and_attributes_follow_the_server_request() {
    let server = DdiServer::start().await;
    server.script().config_data = true;
    let state = tempfile::tempdir().unwrap();
    let mut hb = ext_config(&server);
    hb.auth = HawkbitAuth::TargetToken(Secret::new("wrong"));
    hb.min_poll_interval = Duration::from_millis(200);
    let dev = FakeDevice::new("1.0");
    let eng = mcu_engine_with(state.path(), &hb, &dev);
    let run = start(&eng);
    // 401s: waits random below 0.2, 0.4, 0.8, 1.6 s (full jitter), never below
    // the 200 ms floor.
    until("four polls", || server.polls().len() >= 4).await;
    run.stop().await;
    for pair in server.polls().windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(190),
            "{:?}",
            pair[1] - pair[0]
        );
    }

    hb.auth = HawkbitAuth::TargetToken(Secret::new(TOKEN));
    let eng = mcu_engine_with(state.path(), &hb, &dev);
    let run = start(&eng);
    let put = || {
        server
            .seen()
            .into_iter()
            .find(|s| s.method == "PUT" && s.path.ends_with("/configData"))
    };
    until("configData", || put().is_some()).await;
    run.stop().await;
    let body = put().unwrap().body.unwrap();
    assert_eq!(body["mode"], "merge");
    assert_eq!(body["data"]["mcu-1.type"], "mcu");
    assert_eq!(body["data"]["mcu-1.version"], "1.0");
}

// ---------------------------------------------------------------------------
// Signed firmware: the `<file>.minisig` artifact beside the image
// ---------------------------------------------------------------------------

/// A deployment of `esp-2.0.bin` with its `.minisig` (trusted comment
/// `comment`) as a second artifact of the chunk, on hawkbit_mock; `run` checks
/// the closing feedback `details` and `finished`.
async fn signed_deployment(comment: &str, finished: Finished, details: &str) -> Arc<FakeDevice> {
    let (state, files) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let release = minisign::keypair(files.path(), "release");
    let image = b"signed esp firmware 2.0".repeat(300);
    let artifact = files.path().join("esp-2.0.bin");
    std::fs::write(&artifact, &image).unwrap();
    let sig = release.sign(&artifact, comment);
    let sig_bytes = std::fs::read(&sig).unwrap();
    let hashes = |d: &[u8]| {
        [
            ChecksumAlgorithm::Md5,
            ChecksumAlgorithm::Sha1,
            ChecksumAlgorithm::Sha256,
        ]
        .map(|a| digest(d, a))
    };
    let (hi, hs) = (hashes(&image), hashes(&sig_bytes));
    let server = ServerBuilder::default().build();
    let target = server.add_target("gw-sig");
    let deployment = DeploymentBuilder::new("12", Type::Forced, Type::Forced)
        .chunk(
            ChunkProtocol::HTTP,
            "bApp",
            "2.0",
            "esp-1",
            vec![
                (artifact, &hi[0], &hi[1], &hi[2]),
                (sig, &hs[0], &hs[1], &hs[2]),
            ],
        )
        .build();
    target.push_deployment(deployment);
    let closed = target.expect_deployment_feedback(
        "12",
        Execution::Closed,
        finished,
        Some(json!({"cnt": 1, "of": 1})),
        vec![details],
    );
    let dev = FakeDevice::new("1.0");
    let shim = timestamp_shim(server.base_url()).await;
    let hb = config(&shim.base_url, "gw-sig", "Keygw-sig");
    let eng = engine(
        state.path(),
        &hb,
        vec![(
            device_config("esp-1", "esp8266", UpdatePolicy::Immediate),
            dev.clone(),
        )],
    )
    .with_trust(fota_agent::trust::TrustPolicy {
        keys: vec![fota_agent::trust::TrustedKey::load(&release.public).unwrap()],
        require_signature: true,
        allow_weak_checksums: false,
    });
    let run = start(&eng);
    until("closing feedback", || closed.calls() == 1).await;
    run.stop().await;
    dev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_artifact_installs_and_a_replayed_signature_is_refused() {
    let dev = signed_deployment(
        "type=esp8266 version=2.0",
        Finished::Success,
        "esp-1: 2.0 installed",
    )
    .await;
    assert_eq!(dev.version().as_deref(), Some("2.0"));

    let dev = signed_deployment(
        "type=esp8266 version=1.9",
        Finished::Failure,
        "esp-1: failed: signature: signed for version 1.9, offered as 2.0",
    )
    .await;
    assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
    assert_eq!(dev.version().as_deref(), Some("1.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_versions_names_and_file_names_close_the_action_without_repeating_them() {
    let long = "n".repeat(200);
    let cases = [
        (
            "version",
            "2.0\n$(reboot)",
            "version: control character U+000A at character 4",
        ),
        (
            "version",
            "2.0$(reboot)",
            "version: shell character '$' at character 4",
        ),
        ("part", long.as_str(), "part: 200 characters (at most 128)"),
        ("filename", "../../etc/reboot", "file name: contains '/'"),
    ];
    for (field, value, reason) in cases {
        let Ext { server, .. } = ext("forced", "forced", None).await;
        {
            let mut s = server.script();
            let chunk = &mut s.deployment.as_mut().unwrap().1["chunks"][0];
            match field {
                "filename" => chunk["artifacts"][0]["filename"] = json!(value),
                _ => chunk[field] = json!(value),
            }
        }
        let state = tempfile::tempdir().unwrap();
        let dev = FakeDevice::new("1.0");
        let eng = mcu_engine(state.path(), &server, &dev);
        let run = start(&eng);
        until("closed", || closed(&server).len() == 1).await;
        run.stop().await;
        let (_, finished, details) = status_of(&closed(&server)[0]);
        assert_eq!(finished, "failure");
        assert_eq!(details, vec![format!("mcu-1: failed: chunk 1: {reason}")]);
        assert_eq!(dev.updates.load(Ordering::SeqCst), 0);
        let sent = format!("{:?}", server.feedback("deploymentBase", "20"));
        assert!(!sent.contains("reboot") && !sent.contains(&long), "{sent}");
    }
}
