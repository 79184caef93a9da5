//! An MCS stand-in on 127.0.0.1 for the MCS source's tests: the device REST API
//! (`/mcs/v2/devices/{id}/…`: firmwares report, available, url, connections,
//! datapoints — checking the `deviceKey` header), firmware files under `/files/`,
//! and a TCP command server that records heartbeats, echoes them back and sends
//! whatever messages a test pushes — as the real one does, one write per message
//! without a line ending. Written on plain tokio sockets (one request per connection,
//! `Connection: close`) so tests control every answer: failures can be queued per
//! resource and connections dropped on demand. Dropping it stops every task.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::http_request;

/// One firmware MCS offers a device.
#[derive(Debug, Clone)]
pub struct Offer {
    pub fwid: String,
    pub version: String,
    /// The download URL (given by `firmwares/{fwid}/url`).
    pub url: String,
    /// Given beside the URL when set.
    pub md5: Option<String>,
    pub prerequisites: Option<Vec<String>>,
}

#[derive(Default)]
struct State {
    keys: HashMap<String, String>,
    offers: HashMap<String, Vec<Offer>>,
    files: HashMap<String, Vec<u8>>,
    /// (device id, version) in arrival order.
    versions: Vec<(String, String)>,
    /// (device id, channel, value) in arrival order.
    datapoints: Vec<(String, String, String)>,
    /// Resource name ("available", "url", "firmwares", "datapoints",
    /// "connections") → answer 500 this many more times.
    fail: HashMap<String, u32>,
    /// Resource name → answer `302 Found` to this location, once.
    redirect: HashMap<String, String>,
    /// Every REST request: (method, path, key correct).
    requests: Vec<(String, String, bool)>,
    accepted: usize,
    /// Live command connections: device id of its heartbeat (once known) and a
    /// sender of lines (None closes it).
    live: Vec<(Option<String>, mpsc::UnboundedSender<Option<String>>)>,
    heartbeats: Vec<String>,
    /// Command connections closed for a malformed or unknown heartbeat.
    refused_heartbeats: usize,
}

pub struct McsServer {
    pub http: SocketAddr,
    pub command: SocketAddr,
    state: Arc<Mutex<State>>,
    _tasks: JoinSet<()>,
}

impl McsServer {
    pub async fn start() -> McsServer {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let command = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let (http_addr, command_addr) = (http.local_addr().unwrap(), command.local_addr().unwrap());
        let mut tasks = JoinSet::new();
        let st = state.clone();
        tasks.spawn(async move {
            loop {
                let Ok((sock, _)) = http.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve_http(sock, st, command_addr).await;
                });
            }
        });
        let st = state.clone();
        tasks.spawn(async move {
            loop {
                let Ok((sock, _)) = command.accept().await else {
                    return;
                };
                let st = st.clone();
                tokio::spawn(async move { serve_command(sock, st).await });
            }
        });
        McsServer {
            http: http_addr,
            command: command_addr,
            state,
            _tasks: tasks,
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// POSTs `body` as `device`'s datapoints with its `key`; the answer's status.
    pub async fn post_datapoints(&self, device: &str, key: &str, body: &str) -> u16 {
        let path = format!("/mcs/v2/devices/{device}/datapoints");
        let headers = format!("deviceKey: {key}\r\nContent-Type: application/json\r\n");
        http_request::send(&self.http.to_string(), "POST", &path, &headers, body).await
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/mcs/v2", self.http)
    }

    pub fn add_device(&self, id: &str, key: &str) {
        self.st().keys.insert(id.into(), key.into());
    }

    /// Serves `bytes` at `/files/{name}` and returns its URL.
    pub fn add_file(&self, name: &str, bytes: &[u8]) -> String {
        self.st().files.insert(name.into(), bytes.to_vec());
        format!("http://{}/files/{name}", self.http)
    }

    pub fn offer(&self, device_id: &str, offer: Offer) {
        self.st()
            .offers
            .entry(device_id.into())
            .or_default()
            .push(offer);
    }

    pub fn fail(&self, resource: &str, times: u32) {
        self.st().fail.insert(resource.into(), times);
    }

    /// The next request for `resource` (see [`McsServer::fail`]) is answered with
    /// a redirect to `location`.
    pub fn redirect(&self, resource: &str, location: &str) {
        self.st().redirect.insert(resource.into(), location.into());
    }

    pub fn versions(&self, device_id: &str) -> Vec<String> {
        let st = self.st();
        st.versions
            .iter()
            .filter(|(d, _)| d == device_id)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn datapoints(&self, device_id: &str) -> Vec<String> {
        let st = self.st();
        st.datapoints
            .iter()
            .filter(|(d, c, _)| d == device_id && c == "fota_status")
            .map(|(_, _, v)| v.clone())
            .collect()
    }

    pub fn requests(&self) -> Vec<(String, String, bool)> {
        self.st().requests.clone()
    }

    /// Command connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.st().accepted
    }

    /// Command connections closed for a bad heartbeat.
    pub fn refused_heartbeats(&self) -> usize {
        self.st().refused_heartbeats
    }

    pub fn heartbeats(&self) -> Vec<String> {
        self.st().heartbeats.clone()
    }

    /// Sends `line` as one write **without a line ending**, as the real command
    /// server does, to the live connections identified as `device_id`; returns
    /// how many got it.
    pub fn push(&self, device_id: &str, line: &str) -> usize {
        let st = self.st();
        let mut n = 0;
        for (id, tx) in &st.live {
            if id.as_deref() == Some(device_id) && tx.send(Some(line.to_string())).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Closes every command connection.
    pub fn drop_connections(&self) {
        let mut st = self.st();
        for (_, tx) in st.live.drain(..) {
            let _ = tx.send(None);
        }
    }
}

async fn serve_command(sock: TcpStream, st: Arc<Mutex<State>>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<String>>();
    let index = {
        let mut s = st.lock().unwrap();
        s.accepted += 1;
        s.live.push((None, tx.clone()));
        s.live.len() - 1
    };
    let _ = index;
    let (reader, mut writer) = sock.into_split();
    let mut lines = BufReader::new(reader).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Ok(Some(line)) = line else { break };
                let mut s = st.lock().unwrap();
                s.heartbeats.push(line.clone());
                let fields: Vec<&str> = line.split(',').collect();
                let known = fields.len() == 3
                    && s.keys.get(fields[0]).map(String::as_str) == Some(fields[1])
                    && fields[2].parse::<u64>().is_ok();
                if !known {
                    // Not `deviceId,deviceKey,timestamp` of a known device: the
                    // server closes the connection without an answer.
                    s.refused_heartbeats += 1;
                    break;
                }
                // The real server echoes every heartbeat back, unterminated.
                let _ = tx.send(Some(line.clone()));
                {
                    let id = fields[0].to_string();
                    for (who, sender) in s.live.iter_mut() {
                        if sender.same_channel(&tx) {
                            *who = Some(id.clone());
                        }
                    }
                }
            }
            out = rx.recv() => {
                match out {
                    Some(Some(text)) => {
                        if writer.write_all(text.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
    }
    let mut s = st.lock().unwrap();
    s.live.retain(|(_, sender)| !sender.same_channel(&tx));
}

async fn serve_http(
    mut sock: TcpStream,
    st: Arc<Mutex<State>>,
    command: SocketAddr,
) -> std::io::Result<()> {
    let Some(request) = http_request::read(&mut sock).await? else {
        return Ok(());
    };
    let headers: HashMap<String, String> = request.headers.iter().cloned().collect();
    let (method, target, body) = (&request.method, &request.target, &request.body);
    let (status, content) = route(method, target, &headers, body, &st, command);
    let location = match status {
        302 => format!("Location: {}\r\n", String::from_utf8_lossy(&content)),
        _ => String::new(),
    };
    let response = format!(
        "HTTP/1.1 {status} X\r\n{location}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    );
    sock.write_all(response.as_bytes()).await?;
    sock.write_all(&content).await?;
    // Connection: close, and the request was read whole: a FIN, no reset.
    sock.shutdown().await?;
    Ok(())
}

/// Why MCS would refuse a datapoints upload: it needs a non-empty
/// `datapoints` list whose every entry has a `dataChnId` string and a
/// `values` object holding a `value`.
pub fn datapoints_problem(v: &serde_json::Value) -> Option<String> {
    let Some(points) = v["datapoints"].as_array().filter(|p| !p.is_empty()) else {
        return Some("datapoints is missing or empty".into());
    };
    points.iter().find_map(|p| {
        if !p["dataChnId"].is_string() {
            Some(format!("dataChnId missing in {p}"))
        } else if p["values"]["value"].is_null() {
            Some(format!("values.value missing in {p}"))
        } else {
            None
        }
    })
}

fn json(status: u16, v: serde_json::Value) -> (u16, Vec<u8>) {
    (status, serde_json::to_vec(&v).unwrap())
}

fn error(status: u16, message: &str) -> (u16, Vec<u8>) {
    json(
        status,
        serde_json::json!({"apiVersion": "2.8.0", "code": status, "message": message}),
    )
}

fn route(
    method: &str,
    target: &str,
    headers: &HashMap<String, String>,
    body: &[u8],
    st: &Arc<Mutex<State>>,
    command: SocketAddr,
) -> (u16, Vec<u8>) {
    let mut s = st.lock().unwrap();
    let path = target.split('?').next().unwrap_or_default();
    if let Some(name) = path.strip_prefix("/files/") {
        return match s.files.get(name) {
            Some(bytes) => (200, bytes.clone()),
            None => error(404, "404 Not Found"),
        };
    }
    let Some(rest) = path.strip_prefix("/mcs/v2/devices/") else {
        return error(404, "404 Not Found");
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let device = segments[0].to_string();
    let key_ok = s.keys.get(&device).map(String::as_str)
        == headers.get("devicekey").map(String::as_str)
        && s.keys.contains_key(&device);
    s.requests.push((method.into(), path.into(), key_ok));
    let resource = match (method, &segments[1..]) {
        ("PUT", ["firmwares"]) => "firmwares",
        ("GET", ["firmwares", "available"]) => "available",
        ("GET", ["firmwares", _, "url"]) => "url",
        ("GET", ["connections"]) => "connections",
        ("POST", ["datapoints"]) => "datapoints",
        _ => return error(404, "404 Not Found"),
    };
    if !key_ok {
        return error(401, "401 Unauthorized");
    }
    if let Some(location) = s.redirect.remove(resource) {
        return (302, location.into_bytes());
    }
    if let Some(n) = s.fail.get_mut(resource)
        && *n > 0
    {
        *n -= 1;
        return error(500, "internal error");
    }
    let ok = |extra: serde_json::Value| {
        let mut v = serde_json::json!({"apiVersion": "2.8.0", "code": 200, "message": "Request has succeeded"});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        json(200, v)
    };
    match resource {
        "firmwares" => {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
            let Some(version) = v.get("version").and_then(|v| v.as_str()) else {
                return error(400, "no version");
            };
            s.versions.push((device, version.to_string()));
            ok(serde_json::json!({"fwId": "F1"}))
        }
        "available" => {
            let results: Vec<serde_json::Value> = s
                .offers
                .get(&device)
                .into_iter()
                .flatten()
                .map(|o| {
                    let mut v = serde_json::json!({
                        "fwid": o.fwid, "name": format!("fw {}", o.version),
                        "description": null, "version": o.version
                    });
                    if let Some(p) = &o.prerequisites {
                        v["prerequisites"] = serde_json::json!(p);
                    }
                    v
                })
                .collect();
            ok(serde_json::json!({ "results": results }))
        }
        "url" => {
            let fwid = segments[2];
            match s
                .offers
                .get(&device)
                .and_then(|l| l.iter().find(|o| o.fwid == fwid))
            {
                Some(o) => {
                    let mut v = serde_json::json!({"url": o.url});
                    if let Some(m) = &o.md5 {
                        v["md5"] = serde_json::json!(m);
                    }
                    ok(v)
                }
                None => error(404, "404 Not Found"),
            }
        }
        "connections" => {
            ok(serde_json::json!({"ip": command.ip().to_string(), "port": command.port()}))
        }
        "datapoints" => {
            let v: serde_json::Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return error(400, &format!("body is not JSON: {e}")),
            };
            if let Some(problem) = datapoints_problem(&v) {
                return error(400, &problem);
            }
            for p in v["datapoints"].as_array().into_iter().flatten() {
                let channel = p["dataChnId"].as_str().unwrap_or_default().to_string();
                let value = p["values"]["value"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                s.datapoints.push((device.clone(), channel, value));
            }
            ok(serde_json::json!({"results": "success"}))
        }
        _ => error(404, "404 Not Found"),
    }
}
