//! The MQTT device API, one connection per access token (the token is the MQTT
//! user name), opened on first use and re-established by the event loop after any
//! drop (subscriptions are renewed on every CONNACK):
//! - attributes: publish `{"sharedKeys":"fw_title,…"}` to
//!   `v1/devices/me/attributes/request/{id}`, answer on
//!   `v1/devices/me/attributes/response/{id}`;
//! - updates: `v1/devices/me/attributes` (changed attributes, or `{"deleted":[…]}`);
//! - telemetry: `v1/devices/me/telemetry` (QoS 1);
//! - packages: publish the chunk size to `v2/fw/request/{id}/chunk/{n}`
//!   (`v2/sw/…` for software), the chunk arrives on `v2/fw/response/{id}/chunk/{n}`.
//!
//! Over TLS by default (rustls on ring, see [`crate::tls::client_config`]): the
//! access token travels as the user name of every CONNECT.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeFilter, TlsConfiguration,
};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch};

use super::transport::{ChunkRequest, TbError, Transport};
use super::wire::{self, AttributesResponse};
use crate::config::AccessToken;

const ATTRIBUTES: &str = "v1/devices/me/attributes";
const ATTRIBUTES_RESPONSE: &str = "v1/devices/me/attributes/response/";
const TELEMETRY: &str = "v1/devices/me/telemetry";
/// How long a request waits for its answer (or for the connection).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct MqttTransport {
    host: String,
    port: u16,
    /// The TLS config of every connection; `None`: plain TCP (`tls = false`).
    tls: Option<Arc<rustls::ClientConfig>>,
    chunk_size: u32,
    poll_timeout: Duration,
    connections: tokio::sync::Mutex<HashMap<String, Arc<Connection>>>,
}

/// One token's connection.
struct Connection {
    client: AsyncClient,
    /// Response topic → who waits for it.
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Bytes>>>>,
    updates: tokio::sync::Mutex<mpsc::UnboundedReceiver<Map<String, Value>>>,
    /// True while connected and subscribed.
    ready: watch::Receiver<bool>,
    next_id: AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

static CLIENT_IDS: AtomicU64 = AtomicU64::new(0);

impl MqttTransport {
    pub fn new(
        host: &str,
        port: u16,
        tls: Option<Arc<rustls::ClientConfig>>,
        chunk_size: u32,
        poll_timeout: Duration,
    ) -> Self {
        MqttTransport {
            host: host.to_string(),
            port,
            tls,
            chunk_size,
            poll_timeout,
            connections: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    async fn connection(&self, token: &AccessToken) -> Arc<Connection> {
        let mut conns = self.connections.lock().await;
        if let Some(c) = conns.get(&token.0) {
            return c.clone();
        }
        let id = format!(
            "fota-agent-{}-{}",
            std::process::id(),
            CLIENT_IDS.fetch_add(1, Ordering::Relaxed)
        );
        let mut options = MqttOptions::new(id, &self.host, self.port);
        options.set_credentials(token.0.clone(), "");
        options.set_keep_alive(Duration::from_secs(30));
        if let Some(tls) = &self.tls {
            let config = TlsConfiguration::Rustls(tls.clone());
            options.set_transport(rumqttc::Transport::tls_with_config(config));
        }
        let max = self.chunk_size as usize + 4096;
        options.set_max_packet_size(max, max.max(64 * 1024));
        let (client, eventloop) = AsyncClient::new(options, 64);
        let waiting = Arc::new(Mutex::new(HashMap::new()));
        let (updates_tx, updates_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = watch::channel(false);
        let task = tokio::spawn(drive(
            eventloop,
            client.clone(),
            waiting.clone(),
            updates_tx,
            ready_tx,
            format!("{}:{}", self.host, self.port),
        ));
        let conn = Arc::new(Connection {
            client,
            waiting,
            updates: tokio::sync::Mutex::new(updates_rx),
            ready: ready_rx,
            next_id: AtomicU64::new(1),
            task,
        });
        conns.insert(token.0.clone(), conn.clone());
        conn
    }

    /// Publishes `payload` to `topic` and waits for a message on `answer`.
    async fn request(
        &self,
        token: &AccessToken,
        topic: String,
        answer: String,
        payload: Vec<u8>,
    ) -> Result<Bytes, TbError> {
        let conn = self.connection(token).await;
        conn.wait_ready().await?;
        let (tx, rx) = oneshot::channel();
        lock(&conn.waiting).insert(answer.clone(), tx);
        let published = conn
            .client
            .publish(topic.clone(), QoS::AtLeastOnce, false, payload)
            .await;
        if let Err(e) = published {
            lock(&conn.waiting).remove(&answer);
            return Err(TbError::Transient(format!("{topic}: {e}")));
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(bytes)) => Ok(bytes),
            _ => {
                lock(&conn.waiting).remove(&answer);
                Err(TbError::Transient(format!(
                    "{topic}: no answer within {REQUEST_TIMEOUT:?}"
                )))
            }
        }
    }
}

impl Connection {
    async fn wait_ready(&self) -> Result<(), TbError> {
        let mut ready = self.ready.clone();
        match tokio::time::timeout(REQUEST_TIMEOUT, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(TbError::Transient("MQTT: not connected".into())),
        }
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls the event loop for the life of the connection: subscribes after every
/// CONNACK, routes answers and updates, and backs off after errors (the next poll
/// reconnects).
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Bytes>>>>,
    updates: mpsc::UnboundedSender<Map<String, Value>>,
    ready: watch::Sender<bool>,
    server: String,
) {
    let mut failures = 0u32;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                let topics = [
                    ATTRIBUTES.to_string(),
                    format!("{ATTRIBUTES_RESPONSE}+"),
                    "v2/fw/response/+/chunk/+".to_string(),
                    "v2/sw/response/+/chunk/+".to_string(),
                ];
                let filters = topics
                    .into_iter()
                    .map(|t| SubscribeFilter::new(t, QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(filters) {
                    tracing::warn!("thingsboard MQTT {server}: subscribe: {e}");
                }
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let _ = ready.send(true);
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if p.topic == ATTRIBUTES {
                    match serde_json::from_slice::<Value>(&p.payload) {
                        Ok(Value::Object(map)) => {
                            let _ = updates.send(map);
                        }
                        _ => tracing::warn!(
                            "thingsboard MQTT {server}: malformed attribute update ignored"
                        ),
                    }
                } else if let Some(tx) = lock(&waiting).remove(&p.topic) {
                    let _ = tx.send(p.payload);
                }
            }
            Ok(_) => {}
            Err(e) => {
                let _ = ready.send(false);
                failures += 1;
                let wait = crate::download::retry::backoff(
                    failures,
                    Duration::from_millis(200),
                    Duration::from_secs(60),
                )
                .max(Duration::from_millis(50));
                tracing::warn!("thingsboard MQTT {server}: {e}; reconnecting in {wait:?}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[async_trait]
impl Transport for MqttTransport {
    async fn shared_attributes(
        &self,
        token: &AccessToken,
        keys: &[String],
    ) -> Result<Map<String, Value>, TbError> {
        let id = self.connection(token).await.id();
        let payload = serde_json::json!({ "sharedKeys": keys.join(",") }).to_string();
        let body = self
            .request(
                token,
                format!("v1/devices/me/attributes/request/{id}"),
                format!("{ATTRIBUTES_RESPONSE}{id}"),
                payload.into_bytes(),
            )
            .await?;
        let parsed: AttributesResponse = serde_json::from_slice(&body)
            .map_err(|e| TbError::Malformed(format!("attributes response: {e}")))?;
        Ok(parsed.shared)
    }

    async fn next_update(
        &self,
        token: &AccessToken,
    ) -> Result<Option<Map<String, Value>>, TbError> {
        let conn = self.connection(token).await;
        let mut rx = conn.updates.lock().await;
        match tokio::time::timeout(self.poll_timeout, rx.recv()).await {
            Ok(Some(map)) => Ok(Some(map)),
            Ok(None) => Err(TbError::Transient("MQTT connection ended".into())),
            Err(_) => Ok(None),
        }
    }

    async fn telemetry(&self, token: &AccessToken, record: &Value) -> Result<(), TbError> {
        let conn = self.connection(token).await;
        conn.wait_ready().await?;
        conn.client
            .publish(TELEMETRY, QoS::AtLeastOnce, false, record.to_string())
            .await
            .map_err(|e| TbError::Transient(format!("{TELEMETRY}: {e}")))
    }

    async fn chunk(
        &self,
        token: &AccessToken,
        request: ChunkRequest<'_>,
    ) -> Result<Bytes, TbError> {
        let id = self.connection(token).await.id();
        let p = wire::prefix(request.kind);
        let n = request.index;
        self.request(
            token,
            format!("v2/{p}/request/{id}/chunk/{n}"),
            format!("v2/{p}/response/{id}/chunk/{n}"),
            request.chunk_size.to_string().into_bytes(),
        )
        .await
    }
}
