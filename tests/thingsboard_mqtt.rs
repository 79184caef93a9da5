//! The ThingsBoard source over MQTT: Debian's Mosquitto, started here on a free
//! port, stands in for ThingsBoard's MQTT transport, and a responder (a rumqttc
//! client, the same crate the agent uses) answers the device API topics as
//! ThingsBoard does: attribute requests, attribute updates, firmware chunk
//! requests, telemetry. Without `mosquitto` installed the test fails and says to
//! run `.ci/run`, which installs it.

mod common;
#[path = "support/http_request.rs"]
mod http_request;
mod process;
mod support;
mod thingsboard_server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use fota_agent::config::{
    AccessToken, OtaKind, ThingsboardBinding, ThingsboardConfig, ThingsboardTransport,
};
use fota_agent::download::DownloadConfig;
use fota_agent::engine::Engine;
use fota_agent::handler::UpdateHandler;
use fota_agent::model::UpdatePolicy;
use fota_agent::source::thingsboard::ThingsboardSource;
use process::{free_port, until};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{Map, Value, json};
use support::http_server::{TlsFiles, TlsSetup, write_tls_files};
use thingsboard_server::tb_checksum;
use tokio_util::sync::CancellationToken;

/// Mosquitto on free loopback ports, killed on drop: `port` is plain MQTT (the
/// responder's), `tls_port` a TLS listener with the certificates of `tls`.
struct Broker {
    child: Child,
    port: u16,
    tls_port: u16,
    tls: TlsFiles,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mosquitto() -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = Path::new(dir).join("mosquitto");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "mosquitto is not installed: the MQTT test needs Debian's mosquitto broker; \
         run .ci/run (it installs it) or apt-get install mosquitto"
    );
}

/// Starts Mosquitto; its TLS listener asks for a client certificate signed by
/// the test CA when `require_certificate`. A port found free can be taken by a
/// parallel test before Mosquitto binds it (it then exits): such a start is
/// tried again on other ports.
fn start_broker(require_certificate: bool) -> Broker {
    for _ in 0..5 {
        if let Some(broker) = try_start_broker(require_certificate) {
            return broker;
        }
    }
    panic!("mosquitto did not start in 5 attempts");
}

/// One start of Mosquitto on two ports free a moment ago; `None` when it exited
/// (a port was taken meanwhile).
fn try_start_broker(require_certificate: bool) -> Option<Broker> {
    let binary = mosquitto();
    let (port, tls_port) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let tls = write_tls_files(dir.path(), &TlsSetup::server_only());
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\n\
             listener {port} 127.0.0.1\n\
             listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n\
             require_certificate {require_certificate}\n",
            tls.ca_cert.display(),
            tls.server_cert.display(),
            tls.server_key.display(),
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto");
    // The broker is killed and waited for on drop, also if it never listens.
    let mut broker = Broker {
        child,
        port,
        tls_port,
        tls,
        _dir: dir,
    };
    for _ in 0..500 {
        let up = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
        if up(port) && up(tls_port) {
            return Some(broker);
        }
        if broker.child.try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("mosquitto did not listen on ports {port} and {tls_port}");
}

/// ThingsBoard's side of the device topics.
#[derive(Default)]
struct Tb {
    shared: Map<String, Value>,
    packages: HashMap<String, Vec<u8>>,
    telemetry: Vec<Map<String, Value>>,
    chunk_requests: Vec<(u64, usize)>,
}

async fn responder(port: u16, tb: Arc<Mutex<Tb>>) -> AsyncClient {
    let mut options = MqttOptions::new("thingsboard-responder", "127.0.0.1", port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    for topic in [
        "v1/devices/me/attributes/request/+",
        "v2/fw/request/+/chunk/+",
        "v1/devices/me/telemetry",
    ] {
        client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    }
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let answer = client.clone();
    tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        let mut acks = 0;
        loop {
            let event = match eventloop.poll().await {
                Ok(e) => e,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let p = match event {
                Event::Incoming(Packet::SubAck(_)) => {
                    acks += 1;
                    if acks == 3
                        && let Some(tx) = subscribed_tx.take()
                    {
                        let _ = tx.send(());
                    }
                    continue;
                }
                Event::Incoming(Packet::Publish(p)) => p,
                _ => continue,
            };
            let parts: Vec<&str> = p.topic.split('/').collect();
            match parts.as_slice() {
                ["v1", "devices", "me", "attributes", "request", id] => {
                    let request: Value = serde_json::from_slice(&p.payload).unwrap();
                    let keys = request["sharedKeys"].as_str().unwrap_or("").to_string();
                    let shared: Map<String, Value> = {
                        let tb = tb.lock().unwrap();
                        keys.split(',')
                            .filter_map(|k| tb.shared.get(k).map(|v| (k.to_string(), v.clone())))
                            .collect()
                    };
                    let body = json!({ "shared": shared }).to_string();
                    let topic = format!("v1/devices/me/attributes/response/{id}");
                    let _ = answer.publish(topic, QoS::AtLeastOnce, false, body).await;
                }
                ["v2", "fw", "request", id, "chunk", n] => {
                    let size: usize = std::str::from_utf8(&p.payload)
                        .unwrap()
                        .trim()
                        .parse()
                        .unwrap();
                    let n: u64 = n.parse().unwrap();
                    let slice = {
                        let mut tb = tb.lock().unwrap();
                        tb.chunk_requests.push((n, size));
                        // ThingsBoard serves the package assigned to the device.
                        let version = tb.shared["fw_version"].as_str().unwrap().to_string();
                        let data = &tb.packages[&version];
                        let start = (size * n as usize).min(data.len());
                        data[start..(start + size).min(data.len())].to_vec()
                    };
                    let topic = format!("v2/fw/response/{id}/chunk/{n}");
                    let _ = answer.publish(topic, QoS::AtLeastOnce, false, slice).await;
                }
                ["v1", "devices", "me", "telemetry"] => {
                    let v: Value = serde_json::from_slice(&p.payload).unwrap();
                    let values = v.get("values").unwrap_or(&v).as_object().unwrap().clone();
                    tb.lock().unwrap().telemetry.push(values);
                }
                _ => {}
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed)
        .await
        .expect("responder subscribed")
        .unwrap();
    client
}

/// An engine serving device `esp-1` (running 1.0) from ThingsBoard over MQTT.
struct Agent {
    dev: Arc<FakeDevice>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _state: tempfile::TempDir,
}

impl Agent {
    fn start(transport: ThingsboardTransport, download: DownloadConfig) -> Agent {
        let state = tempfile::tempdir().unwrap();
        let config = ThingsboardConfig {
            transport,
            bindings: vec![ThingsboardBinding {
                device_id: "esp-1".into(),
                token: AccessToken("MQTTTOKEN".into()),
                kind: OtaKind::Firmware,
            }],
            chunk_size: 1000,
            poll_timeout: Duration::from_millis(500),
            state_dir: state.path().join("thingsboard"),
            download: download.clone(),
        };
        let dev = FakeDevice::new("1.0");
        let engine = Engine::new(
            agent_config(state.path()),
            &download,
            Box::new(ThingsboardSource::new(config).unwrap()),
            vec![(
                device_config("esp-1", "esp", UpdatePolicy::Immediate),
                dev.clone() as Arc<dyn UpdateHandler>,
            )],
        )
        .unwrap()
        // The server sends MD5 (and other weak checksums) only: the documented opt-in.
        .with_trust(fota_agent::trust::TrustPolicy {
            allow_weak_checksums: true,
            ..Default::default()
        });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (engine, shutdown) = (engine.clone(), shutdown.clone());
            async move { engine.run(shutdown).await }
        });
        Agent {
            dev,
            shutdown,
            task,
            _state: state,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// TLS to the broker's TLS listener, trusting `ca_bundle` only.
fn over_tls(broker: &Broker, ca_bundle: &Path) -> (ThingsboardTransport, DownloadConfig) {
    let transport = ThingsboardTransport::Mqtt {
        host: "localhost".into(),
        port: broker.tls_port,
        tls: true,
    };
    let download = DownloadConfig {
        ca_bundle: Some(ca_bundle.to_path_buf()),
        ..DownloadConfig::default()
    };
    (transport, download)
}

async fn reports_current_version(tb: &Arc<Mutex<Tb>>) {
    until("current version at start", || {
        tb.lock()
            .unwrap()
            .telemetry
            .iter()
            .any(|v| v.get("current_fw_version").is_some_and(|s| s == "1.0"))
    })
    .await;
}

#[tokio::test]
async fn mqtt_over_tls_attributes_push_chunks_and_telemetry() {
    let broker = start_broker(false);
    let tb = Arc::new(Mutex::new(Tb::default()));
    let server = responder(broker.port, tb.clone()).await;
    let (transport, download) = over_tls(&broker, &broker.tls.ca_cert);
    let agent = Agent::start(transport, download);
    let dev = agent.dev.clone();
    reports_current_version(&tb).await;

    // ThingsBoard assigns firmware: shared attributes change and are pushed.
    let data: Vec<u8> = (0..4321u32).map(|i| (i * 13 % 251) as u8).collect();
    let attrs = json!({
        "fw_title": "esp-fw", "fw_version": "2.0", "fw_size": data.len(),
        "fw_checksum_algorithm": "MURMUR3_128",
        "fw_checksum": tb_checksum("MURMUR3_128", &data),
    });
    {
        let mut tb = tb.lock().unwrap();
        tb.packages.insert("2.0".into(), data.clone());
        tb.shared = attrs.as_object().unwrap().clone();
    }
    server
        .publish(
            "v1/devices/me/attributes",
            QoS::AtLeastOnce,
            false,
            attrs.to_string(),
        )
        .await
        .unwrap();

    until("UPDATED", || {
        tb.lock()
            .unwrap()
            .telemetry
            .iter()
            .any(|v| v.get("fw_state").is_some_and(|s| s == "UPDATED"))
    })
    .await;
    assert_eq!(*dev.received.lock().unwrap(), data);
    let (states, chunks) = {
        let tb = tb.lock().unwrap();
        let states: Vec<String> = tb
            .telemetry
            .iter()
            .filter_map(|v| {
                v.get("fw_state")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        (states, tb.chunk_requests.clone())
    };
    let flow = [
        "DOWNLOADING",
        "DOWNLOADED",
        "VERIFIED",
        "UPDATING",
        "UPDATED",
    ];
    assert_eq!(states, flow);
    assert_eq!(chunks, (0..5).map(|n| (n, 1000)).collect::<Vec<_>>());
    agent.stop().await;
}

#[tokio::test]
async fn plain_mqtt_when_tls_is_off() {
    let broker = start_broker(false);
    let tb = Arc::new(Mutex::new(Tb::default()));
    let _server = responder(broker.port, tb.clone()).await;
    let transport = ThingsboardTransport::Mqtt {
        host: "127.0.0.1".into(),
        port: broker.port,
        tls: false,
    };
    let agent = Agent::start(transport, DownloadConfig::default());
    reports_current_version(&tb).await;
    agent.stop().await;
}

#[tokio::test]
async fn a_broker_that_requires_a_client_certificate_gets_it() {
    let broker = start_broker(true);
    let tb = Arc::new(Mutex::new(Tb::default()));
    let _server = responder(broker.port, tb.clone()).await;
    let (transport, mut download) = over_tls(&broker, &broker.tls.ca_cert);
    download.client_cert = Some(broker.tls.client_cert.clone());
    download.client_key = Some(broker.tls.client_key.clone());
    let agent = Agent::start(transport, download);
    reports_current_version(&tb).await;
    agent.stop().await;
}

/// Connection failures as the agent logs them (the engine's tasks run on this
/// test's thread, so a thread-local subscriber sees them).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn no_connection_without_the_client_certificate_or_to_an_untrusted_server() {
    let broker = start_broker(true);
    let tb = Arc::new(Mutex::new(Tb::default()));
    let _server = responder(broker.port, tb.clone()).await;
    let log = Log::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // No client certificate: the broker ends the handshake.
    let (transport, download) = over_tls(&broker, &broker.tls.ca_cert);
    let agent = Agent::start(transport, download);
    until("the broker's CertificateRequired alert logged", || {
        log.text()
            .contains("received fatal alert: CertificateRequired")
    })
    .await;
    agent.stop().await;

    // A broker certificate that the configured CA did not sign.
    let before = log.text().len();
    let (transport, mut download) = over_tls(&broker, &broker.tls.untrusted_ca_cert);
    download.client_cert = Some(broker.tls.client_cert.clone());
    download.client_key = Some(broker.tls.client_key.clone());
    let agent = Agent::start(transport, download);
    until("the untrusted broker certificate logged", || {
        log.text()[before..].contains("invalid peer certificate: UnknownIssuer")
    })
    .await;
    agent.stop().await;
    assert!(tb.lock().unwrap().telemetry.is_empty());
    assert!(!log.text().contains("MQTTTOKEN"));
}
