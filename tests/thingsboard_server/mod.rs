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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

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

    /// Telemetry values received for `token`, in order (the `values` of
    /// timestamped records).
    pub fn telemetry(&self, token: &str) -> Vec<Map<String, Value>> {
        self.state
            .lock()
            .unwrap()
            .telemetry
            .iter()
            .filter(|(t, _)| t == token)
            .map(|(_, v)| {
                v.get("values")
                    .unwrap_or(v)
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
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
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or("").to_string();
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = buf[head_end..].to_vec();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
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
            Ok(v) => {
                state.lock().unwrap().telemetry.push((token, v));
                respond(&mut sock, 200, b"").await
            }
            Err(_) => respond(&mut sock, 400, b"").await,
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
