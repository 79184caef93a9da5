//! A scriptable DDI server for what `hawkbit_mock` cannot do: a server-chosen
//! polling sleep, maintenance windows that open later, a cancelAction while an
//! update runs, feedback refused with 503 for a while, and the body of every
//! feedback kept in order for inspection (the mock only matches one exact body per
//! expectation and answers 404 to anything else).
//!
//! Plain HTTP/1.1 on 127.0.0.1, one request per connection (`Connection: close`),
//! written on a tokio `TcpListener`. Paths are those of a real hawkBit:
//! `/{tenant}/controller/v1/{id}`, `…/deploymentBase/{action}`,
//! `…/deploymentBase/{action}/feedback`, `…/cancelAction/{id}`,
//! `…/cancelAction/{id}/feedback`, `…/configData`, and `/download/{file}`.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::http_request;

pub const TENANT: &str = "DEFAULT";
pub const TARGET: &str = "gw-1";
pub const TOKEN: &str = "KeyGw-canary-7f3e91c2";

/// One request the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    /// The request's `If-None-Match`.
    pub if_none_match: Option<String>,
    pub body: Option<serde_json::Value>,
    pub at: Instant,
}

#[derive(Default)]
pub struct Script {
    /// `HH:MM:SS` in the poll answer.
    pub sleep: String,
    /// The `deployment` object of the action offered, and its id.
    pub deployment: Option<(String, serde_json::Value)>,
    /// A cancelAction: (cancel id, stop id).
    pub cancel: Option<(String, String)>,
    /// hawkBit's `requestControllerAttributes`: links `configData` while set; set
    /// when an action's closing feedback arrives, cleared by a PUT of `configData`.
    pub config_data: bool,
    /// Artifacts by file name.
    pub files: Vec<(String, Vec<u8>)>,
    /// Feedback POSTs answered 503 while this is true.
    pub refuse_feedback: bool,
    /// Feedback paths (`…/deploymentBase/{id}/feedback`) whose action a
    /// `closed` message closed: like hawkBit, later feedback gets 410 Gone.
    pub closed: Vec<String>,
    /// Action ids a poll has linked so far: feedback for any other id gets 404,
    /// as hawkBit answers for an action the target does not have.
    pub actions: Vec<String>,
}

pub struct DdiServer {
    pub base_url: String,
    pub script: Arc<Mutex<Script>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DdiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DdiServer {
    pub async fn start() -> DdiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let script = Arc::new(Mutex::new(Script {
            sleep: "00:01:00".into(),
            ..Script::default()
        }));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, r, b) = (script.clone(), seen.clone(), base_url.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, r, b) = (s.clone(), r.clone(), b.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &s, &r, &b).await;
                });
            }
        });
        DdiServer {
            base_url,
            script,
            seen,
            task,
        }
    }

    pub fn controller(&self) -> String {
        format!("/{TENANT}/controller/v1/{TARGET}")
    }

    pub fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Bodies POSTed to `…/{resource}/{id}/feedback`, in order.
    pub fn feedback(&self, resource: &str, id: &str) -> Vec<serde_json::Value> {
        let path = format!("{}/{resource}/{id}/feedback", self.controller());
        self.seen()
            .into_iter()
            .filter(|s| s.method == "POST" && s.path == path)
            .filter_map(|s| s.body)
            .collect()
    }

    /// Sends `body` to `path` as a target would (its token, JSON), returning the
    /// answer's status.
    pub async fn post(&self, path: &str, body: &str) -> u16 {
        let headers =
            format!("Authorization: TargetToken {TOKEN}\r\nContent-Type: application/json\r\n");
        self.send("POST", path, &headers, body).await
    }

    /// Sends one request with the extra `headers` (CRLF-terminated lines).
    pub async fn send(&self, method: &str, path: &str, headers: &str, body: &str) -> u16 {
        let addr = self.base_url.trim_start_matches("http://");
        http_request::send(addr, method, path, headers, body).await
    }

    pub fn polls(&self) -> Vec<Instant> {
        let path = self.controller();
        self.seen()
            .into_iter()
            .filter(|s| s.method == "GET" && s.path == path)
            .map(|s| s.at)
            .collect()
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    script: &Mutex<Script>,
    seen: &Mutex<Vec<Seen>>,
    base_url: &str,
) -> std::io::Result<()> {
    let Some(request) = http_request::read(&mut stream).await? else {
        return Ok(());
    };
    let method = request.method.clone();
    let path = request.path().to_string();
    let authorization = request.header("authorization").map(str::to_string);
    let if_none_match = request.header("if-none-match").map(str::to_string);
    let range_from: Option<usize> = request
        .header("range")
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse().ok());
    let body: Option<serde_json::Value> = serde_json::from_slice(&request.body).ok();
    let malformed = feedback_problem(body.as_ref());
    let closes = body
        .as_ref()
        .is_some_and(|b| b["status"]["execution"] == "closed");
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        authorization: authorization.clone(),
        if_none_match: if_none_match.clone(),
        body,
        at: Instant::now(),
    });
    let controller = format!("/{TENANT}/controller/v1/{TARGET}");
    let reply: (u16, Vec<u8>, &str) = {
        let mut s = script.lock().unwrap();
        let authorized = authorization.as_deref() == Some(&format!("TargetToken {TOKEN}"));
        let json = |v: serde_json::Value| (200, v.to_string().into_bytes(), "application/json");
        if !authorized {
            (401, Vec::new(), "text/plain")
        } else if method == "GET" && path == controller {
            let mut links = serde_json::Map::new();
            let linked = [
                s.deployment.as_ref().map(|d| d.0.clone()),
                s.cancel.as_ref().map(|c| c.0.clone()),
            ];
            for id in linked.into_iter().flatten() {
                if !s.actions.contains(&id) {
                    s.actions.push(id);
                }
            }
            if let Some((id, _)) = &s.deployment {
                links.insert(
                    "deploymentBase".into(),
                    serde_json::json!({"href": format!("{base_url}{controller}/deploymentBase/{id}?c=-5")}),
                );
            }
            if let Some((id, _)) = &s.cancel {
                links.insert(
                    "cancelAction".into(),
                    serde_json::json!({"href": format!("{base_url}{controller}/cancelAction/{id}")}),
                );
            }
            if s.config_data {
                links.insert(
                    "configData".into(),
                    serde_json::json!({"href": format!("{base_url}{controller}/configData")}),
                );
            }
            json(serde_json::json!({"config": {"polling": {"sleep": s.sleep}}, "_links": links}))
        } else if method == "POST" && path.ends_with("/feedback") {
            let action = path
                .strip_suffix("/feedback")
                .and_then(|p| p.rsplit('/').next())
                .unwrap_or("");
            if s.refuse_feedback {
                (503, Vec::new(), "text/plain")
            } else if !request.is_json() {
                (415, Vec::new(), "text/plain")
            } else if let Some(problem) = &malformed {
                (400, problem.clone().into_bytes(), "text/plain")
            } else if !s.actions.iter().any(|a| a == action) {
                (404, Vec::new(), "text/plain")
            } else if s.closed.contains(&path) {
                (410, Vec::new(), "text/plain")
            } else {
                if closes {
                    s.closed.push(path.clone());
                    if path.contains("/deploymentBase/") {
                        s.config_data = true;
                    }
                }
                (200, Vec::new(), "text/plain")
            }
        } else if method == "PUT" && path == format!("{controller}/configData") {
            s.config_data = false;
            (200, Vec::new(), "text/plain")
        } else if let Some(id) = path.strip_prefix(&format!("{controller}/deploymentBase/")) {
            match &s.deployment {
                Some((d, dep)) if d == id => json(serde_json::json!({"id": d, "deployment": dep})),
                _ => (404, Vec::new(), "text/plain"),
            }
        } else if let Some(id) = path.strip_prefix(&format!("{controller}/cancelAction/")) {
            match &s.cancel {
                Some((c, stop)) if c == id => {
                    json(serde_json::json!({"id": c, "cancelAction": {"stopId": stop}}))
                }
                _ => (404, Vec::new(), "text/plain"),
            }
        } else if let Some(name) = path.strip_prefix("/download/") {
            match s.files.iter().find(|(n, _)| n == name) {
                Some((_, bytes)) => (200, bytes.clone(), "application/octet-stream"),
                None => (404, Vec::new(), "text/plain"),
            }
        } else {
            (404, Vec::new(), "text/plain")
        }
    };
    let (status, mut bytes, content_type) = reply;
    let mut extra = String::new();
    let mut status = status;
    // hawkBit's ShallowEtagHeaderFilter: every answer but an artifact download
    // carries an ETag of its body ("0" + MD5) and a matching If-None-Match gets
    // 304 without a body.
    let etag = if path.starts_with("/download/") {
        "\"e1\"".to_string()
    } else {
        use md5::Digest;
        format!("\"0{}\"", hex::encode(md5::Md5::digest(&bytes)))
    };
    if status == 200 && !path.starts_with("/download/") && if_none_match.as_deref() == Some(&etag) {
        status = 304;
        bytes.clear();
    }
    if status == 200
        && let Some(from) = range_from.filter(|f| *f < bytes.len())
    {
        extra = format!(
            "Content-Range: bytes {from}-{}/{}\r\n",
            bytes.len() - 1,
            bytes.len()
        );
        bytes = bytes[from..].to_vec();
        status = 206;
    }
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         ETag: {etag}\r\nAccept-Ranges: bytes\r\n{extra}Connection: close\r\n\r\n",
        bytes.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&bytes).await?;
    stream.shutdown().await
}

/// Why hawkBit would refuse `body` as a `DdiActionFeedback` with 400 Bad Request
/// (`DdiActionFeedback`, `DdiStatus`, `DdiResult`: `status`, `execution`,
/// `result.finished` are required, enums are closed, `progress.cnt` is required).
pub fn feedback_problem(body: Option<&serde_json::Value>) -> Option<String> {
    const EXECUTIONS: [&str; 8] = [
        "closed",
        "proceeding",
        "canceled",
        "scheduled",
        "rejected",
        "resumed",
        "downloaded",
        "download",
    ];
    const FINISHED: [&str; 3] = ["success", "failure", "none"];
    let Some(body) = body else {
        return Some("body is not JSON".into());
    };
    let status = &body["status"];
    let execution = status["execution"].as_str();
    let finished = status["result"]["finished"].as_str();
    let progress = &status["result"]["progress"];
    if !status.is_object() {
        Some("status missing".into())
    } else if !execution.is_some_and(|e| EXECUTIONS.contains(&e)) {
        Some(format!("bad status.execution {}", status["execution"]))
    } else if !finished.is_some_and(|f| FINISHED.contains(&f)) {
        Some(format!(
            "bad status.result.finished {}",
            status["result"]["finished"]
        ))
    } else if !progress.is_null() && !progress["cnt"].is_u64() {
        Some(format!("bad status.result.progress {progress}"))
    } else if !(status["details"].is_null() || status["details"].is_array()) {
        Some("status.details is not a list".into())
    } else {
        None
    }
}

/// A deployment object (`download`, `update`, maintenance window) with one chunk,
/// `mcu` version 2.0, of one artifact `file` served by this server, with its
/// SHA-256.
pub fn deployment(
    base_url: &str,
    (download, update): (&str, &str),
    window: Option<&str>,
    file: &str,
    image: &[u8],
) -> serde_json::Value {
    use sha2::Digest;
    let sha256 = hex::encode(sha2::Sha256::digest(image));
    let mut d = serde_json::json!({
        "download": download,
        "update": update,
        "chunks": [{"part": "bApp", "version": "2.0", "name": "mcu", "artifacts": [{
            "filename": file, "size": image.len(),
            "hashes": {"sha256": sha256},
            "_links": {"download-http": {"href": format!("{base_url}/download/{file}")}}}]}]
    });
    if let Some(w) = window {
        d["maintenanceWindow"] = serde_json::json!(w);
        // hawkBit's calculateUpdateType: outside the window the update is `skip`.
        if w == "unavailable" {
            d["update"] = serde_json::json!("skip");
        }
    }
    d
}
