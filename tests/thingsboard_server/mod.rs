//! A ThingsBoard stand-in for tests: the documented HTTP device API on 127.0.0.1,
//! hand-written on a tokio listener so faults are exact.
//!
//! - `GET /api/v1/{token}/attributes?sharedKeys=a,b` → `{"shared":{…}}`
//! - `GET /api/v1/{token}/attributes/updates?timeout=ms` → 200 with the changed
//!   shared attributes, or 408 when none arrive in time
//! - `POST /api/v1/{token}/telemetry` → recorded (token, JSON)
//! - `GET /api/v1/{token}/firmware|software?title=&version=&size=&chunk=` → bytes
//!   `size*chunk ..` of the package (empty past the end; 404 for an unknown one)
//! - unknown token → 401; faults queued per path fragment ([`Fault`]).
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fota_agent::checksum::{ChecksumAlgorithm, MultiHasher};
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::http_request;

/// What the next matching request gets instead of its answer.
#[derive(Debug, Clone)]
pub enum Fault {
    Status(u16),
    /// 200 with a body that is not JSON.
    Malformed,
    /// The connection is closed without an answer.
    Drop,
}

#[derive(Default)]
struct Device {
    shared: Map<String, Value>,
    updates: VecDeque<Map<String, Value>>,
}

#[derive(Default)]
struct State {
    devices: HashMap<String, Device>,
    packages: HashMap<(String, String, String), Vec<u8>>,
    telemetry: Vec<(String, Value)>,
    faults: VecDeque<(String, Fault)>,
    requests: Vec<String>,
}

pub struct TbServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TbServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// ThingsBoard's hex form of `algorithm` over `data` (Guava: CRC32 little-endian).
pub fn tb_checksum(algorithm: &str, data: &[u8]) -> String {
    let alg: ChecksumAlgorithm = algorithm.parse().unwrap();
    let mut h = MultiHasher::new([alg]);
    h.update(data);
    let hex = h.finish().get(alg).unwrap().to_string();
    if alg == ChecksumAlgorithm::Crc32 {
        let b = hex::decode(&hex).unwrap();
        hex::encode(b.iter().rev().copied().collect::<Vec<u8>>())
    } else {
        hex
    }
}

impl TbServer {
    pub async fn start(tokens: &[&str]) -> TbServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut state = State::default();
        for t in tokens {
            state.devices.insert(t.to_string(), Device::default());
        }
        let state = Arc::new(Mutex::new(state));
        let notify = Arc::new(Notify::new());
        let (s, n) = (state.clone(), notify.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let (s, n) = (s.clone(), n.clone());
                tokio::spawn(async move {
                    let _ = serve(sock, s, n).await;
                });
            }
        });
        TbServer {
            addr,
            state,
            notify,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// POSTs `body` as `token`'s telemetry (no `Content-Type`, which ThingsBoard
    /// ignores) and returns the answer's status.
    pub async fn post_telemetry(&self, token: &str, body: &str) -> u16 {
        let path = format!("/api/v1/{token}/telemetry");
        http_request::send(&self.addr.to_string(), "POST", &path, "", body).await
    }

    /// Assigns a package (`prefix` "fw" or "sw") and pushes the attribute update.
    pub fn assign(
        &self,
        token: &str,
        prefix: &str,
        title: &str,
        version: &str,
        data: &[u8],
        algorithm: &str,
    ) {
        let checksum = tb_checksum(algorithm, data);
        self.assign_raw(token, prefix, title, version, data, algorithm, &checksum);
    }

    #[allow(clippy::too_many_arguments)]
    pub fn assign_raw(
        &self,
        token: &str,
        prefix: &str,
        title: &str,
        version: &str,
        data: &[u8],
        algorithm: &str,
        checksum: &str,
    ) {
        let mut s = self.state.lock().unwrap();
        s.packages.insert(
            (prefix.to_string(), title.to_string(), version.to_string()),
            data.to_vec(),
        );
        let attrs = json!({
            format!("{prefix}_title"): title,
            format!("{prefix}_version"): version,
            format!("{prefix}_size"): data.len(),
            format!("{prefix}_checksum_algorithm"): algorithm,
            format!("{prefix}_checksum"): checksum,
        });
        let attrs = attrs.as_object().unwrap().clone();
        let dev = s.devices.get_mut(token).unwrap();
        dev.shared.extend(attrs.clone());
        dev.updates.push_back(attrs);
        drop(s);
        self.notify.notify_waiters();
    }

    pub fn push_fault(&self, path_contains: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .push_back((path_contains.to_string(), fault));
    }

    /// Telemetry values received for `token`, in order: one map per record, as
    /// ThingsBoard's `JsonConverter` reads them (the `values` of a `{ts, values}`
    /// record, a plain object as it is, each element of an array).
    pub fn telemetry(&self, token: &str) -> Vec<Map<String, Value>> {
        self.state
            .lock()
            .unwrap()
            .telemetry
            .iter()
            .filter(|(t, _)| t == token)
            .flat_map(|(_, v)| match v {
                Value::Array(records) => records.clone(),
                record => vec![record.clone()],
            })
            .filter_map(|record| {
                let timestamped = record.get("ts").is_some() && record.get("values").is_some();
                let values = if timestamped {
                    &record["values"]
                } else {
                    &record
                };
                values.as_object().cloned()
            })
            .collect()
    }

    /// The `fw_state` (or `sw_state`) values received, in order.
    pub fn states(&self, token: &str, key: &str) -> Vec<String> {
        self.telemetry(token)
            .iter()
            .filter_map(|v| v.get(key).and_then(Value::as_str).map(str::to_string))
            .collect()
    }

    /// Every request line received (method and path with query).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

async fn serve(
    mut sock: TcpStream,
    state: Arc<Mutex<State>>,
    notify: Arc<Notify>,
) -> std::io::Result<()> {
    let Some(request) = http_request::read(&mut sock).await? else {
        return Ok(());
    };
    let (method, target, body) = (
        request.method.clone(),
        request.target.clone(),
        request.body.clone(),
    );
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let params: HashMap<String, String> = url_params(query);

    let fault = {
        let mut s = state.lock().unwrap();
        s.requests.push(format!("{method} {target}"));
        let idx = s
            .faults
            .iter()
            .position(|(p, _)| target.contains(p.as_str()));
        idx.and_then(|i| s.faults.remove(i)).map(|(_, f)| f)
    };
    match fault {
        Some(Fault::Drop) => return Ok(()),
        Some(Fault::Status(code)) => return respond(&mut sock, code, b"").await,
        Some(Fault::Malformed) => return respond(&mut sock, 200, b"{\"shared\": [oops").await,
        None => {}
    }

    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["api", "v1", token, rest @ ..] = segments.as_slice() else {
        return respond(&mut sock, 404, b"").await;
    };
    let token = token.to_string();
    if !state.lock().unwrap().devices.contains_key(&token) {
        return respond(&mut sock, 401, b"").await;
    }
    match (method.as_str(), rest) {
        ("GET", ["attributes"]) => {
            let body = {
                let s = state.lock().unwrap();
                let shared = &s.devices[&token].shared;
                let keys = params.get("sharedKeys").cloned().unwrap_or_default();
                let picked: Map<String, Value> = keys
                    .split(',')
                    .filter_map(|k| shared.get(k).map(|v| (k.to_string(), v.clone())))
                    .collect();
                json!({ "shared": picked }).to_string()
            };
            respond(&mut sock, 200, body.as_bytes()).await
        }
        ("GET", ["attributes", "updates"]) => {
            let timeout: u64 = params
                .get("timeout")
                .and_then(|t| t.parse().ok())
                .unwrap_or(1000);
            let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout);
            loop {
                let notified = notify.notified();
                let update = state
                    .lock()
                    .unwrap()
                    .devices
                    .get_mut(&token)
                    .and_then(|d| d.updates.pop_front());
                if let Some(update) = update {
                    return respond(&mut sock, 200, Value::Object(update).to_string().as_bytes())
                        .await;
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return respond(&mut sock, 408, b"").await;
                }
            }
        }
        ("POST", ["telemetry"]) => match serde_json::from_slice::<Value>(&body) {
            Ok(v) if telemetry_problem(&v).is_none() => {
                state.lock().unwrap().telemetry.push((token, v));
                respond(&mut sock, 200, b"").await
            }
            Ok(v) => respond(&mut sock, 400, telemetry_problem(&v).unwrap().as_bytes()).await,
            Err(e) => respond(&mut sock, 400, e.to_string().as_bytes()).await,
        },
        ("GET", [kind @ ("firmware" | "software")]) => {
            let prefix = if *kind == "firmware" { "fw" } else { "sw" };
            let key = (
                prefix.to_string(),
                params.get("title").cloned().unwrap_or_default(),
                params.get("version").cloned().unwrap_or_default(),
            );
            let size: usize = params.get("size").and_then(|v| v.parse().ok()).unwrap_or(0);
            let chunk: usize = params
                .get("chunk")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let data = state.lock().unwrap().packages.get(&key).cloned();
            let Some(data) = data else {
                return respond(&mut sock, 404, b"").await;
            };
            let slice = if size == 0 {
                data
            } else {
                let start = (size * chunk).min(data.len());
                data[start..(start + size).min(data.len())].to_vec()
            };
            respond(&mut sock, 200, &slice).await
        }
        _ => respond(&mut sock, 404, b"").await,
    }
}

/// Why ThingsBoard's `JsonConverter.convertToTelemetry` would refuse `v`: it
/// takes an object or an array of objects; an object with both `ts` and `values`
/// needs a numeric `ts` and an object `values`, any other object is the values.
/// (The HTTP transport reads the body as a `String`, so it does not look at
/// `Content-Type`; neither does this stand-in.)
pub fn telemetry_problem(v: &Value) -> Option<String> {
    let record = |r: &Value| -> Option<String> {
        let Some(o) = r.as_object() else {
            return Some(format!("Can't parse value: {r}"));
        };
        if o.contains_key("ts") && o.contains_key("values") {
            let ts_ok =
                o["ts"].is_i64() || o["ts"].as_str().is_some_and(|t| t.parse::<i64>().is_ok());
            if !ts_ok {
                return Some(format!("bad ts {}", o["ts"]));
            }
            if !o["values"].is_object() {
                return Some(format!("values is not an object: {}", o["values"]));
            }
        }
        None
    };
    match v {
        Value::Array(records) => records.iter().find_map(record),
        other => record(other),
    }
}

fn url_params(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let h = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?');
                out.push(h);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn respond(sock: &mut TcpStream, code: u16, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    sock.write_all(body).await?;
    sock.shutdown().await
}
