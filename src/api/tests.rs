//! The API client against tiny loopback HTTP responders: each connection gets
//! the next scripted answer, and every request is recorded.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::download::DownloadConfig;

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Responder {
    listener: TcpListener,
    url: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

impl Responder {
    async fn bind() -> Responder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        Responder { listener, url }
    }

    /// Answers connection `n` with `replies[n]` (raw bytes; the connection is
    /// closed after it), then 500.
    fn serve(self, replies: Vec<Vec<u8>>) -> Log {
        let log: Log = Arc::default();
        let seen = log.clone();
        tokio::spawn(async move {
            let mut replies = replies.into_iter();
            loop {
                let Ok((stream, _)) = self.listener.accept().await else {
                    return;
                };
                let reply = replies.next().unwrap_or_else(|| status(500, ""));
                if let Some(request) = answer(stream, reply).await {
                    seen.lock().unwrap().push(request);
                }
            }
        });
        log
    }
}

async fn answer(mut stream: TcpStream, reply: Vec<u8>) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let _ = stream.write_all(&reply).await;
    let _ = stream.shutdown().await;
    Some(Seen {
        method,
        path,
        headers,
        body,
    })
}

fn reply(status: u16, extra: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn status(code: u16, body: &str) -> Vec<u8> {
    reply(code, "", body)
}

fn redirect(code: u16, to: &str) -> Vec<u8> {
    reply(code, &format!("Location: {to}\r\n"), "")
}

fn client(base: &str) -> ApiClient {
    ApiClient::new(&DownloadConfig::default(), base).unwrap()
}

#[tokio::test]
async fn sends_and_receives_json() {
    let server = Responder::bind().await;
    let base = format!("{}/api", server.url);
    let log = server.serve(vec![status(200, r#"{"answer": 42}"#)]);
    let api = client(&base);
    let url = api.url(&["devices", "a b", "firmwares"]);
    let got: serde_json::Value = api
        .request(Method::PUT, url.as_str())
        .json(&serde_json::json!({"version": "1.0"}))
        .fetch_json()
        .await
        .unwrap();
    assert_eq!(got["answer"], 42);
    let seen = log.lock().unwrap()[0].clone();
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.path, "/api/devices/a%20b/firmwares");
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.body, br#"{"version":"1.0"}"#);
}

#[tokio::test]
async fn an_answer_over_the_limit_is_an_error() {
    let big = "x".repeat(DEFAULT_MAX_BODY + 1);
    // Announced by Content-Length, and streamed until the connection closes.
    let unannounced = format!("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{big}").into_bytes();
    let server = Responder::bind().await;
    let base = server.url.clone();
    server.serve(vec![
        status(200, &big),
        unannounced.clone(),
        unannounced,
        status(200, "12345"),
    ]);
    let api = client(&base);
    for _ in 0..2 {
        let err = api.get(&base).send().await.unwrap_err();
        assert!(
            matches!(err, ApiError::TooLarge { limit, .. } if limit == DEFAULT_MAX_BODY),
            "{err}"
        );
        assert!(!err.is_transient());
    }
    let bigger = api.get(&base).max_body(2 << 20).send().await.unwrap();
    assert_eq!(bigger.body.len(), DEFAULT_MAX_BODY + 1);
    let err = api.get(&base).max_body(4).send().await.unwrap_err();
    assert!(
        err.to_string().ends_with("answer larger than 4 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn errors_say_status_transience_and_retry_after() {
    let server = Responder::bind().await;
    let base = server.url.clone();
    server.serve(vec![
        reply(503, "Retry-After: 7\r\n", ""),
        status(404, r#"{"message": "no such\ndevice"}"#),
        status(429, ""),
        status(408, ""),
        status(200, "not json"),
    ]);
    let api = client(&base);
    let err = api.get(&base).send().await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert!(err.is_transient());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    let err = api.get(&base).send().await.unwrap_err();
    assert!(!err.is_transient());
    assert_eq!(err.retry_after(), None);
    assert_eq!(
        err.to_string(),
        format!("GET {base}/: HTTP 404 Not Found (no such device)")
    );
    for _ in 0..2 {
        assert!(api.get(&base).send().await.unwrap_err().is_transient());
    }
    let err = api
        .get(&base)
        .fetch_json::<serde_json::Value>()
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::Decode { .. }), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn no_answer_is_transient() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let err = client(&url).get(&url).send().await.unwrap_err();
    assert!(matches!(err, ApiError::Network { .. }), "{err}");
    assert!(err.is_transient());
    assert_eq!(err.status(), None);
    let err = client(&url).get("not a url").send().await.unwrap_err();
    assert!(matches!(err, ApiError::Request { .. }) && !err.is_transient());
}

#[tokio::test]
async fn secrets_never_appear_in_errors_or_debug() {
    const TOKEN: &str = "tok/en 1";
    const KEY: &str = "key-2";
    let server = Responder::bind().await;
    let base = server.url.clone();
    let echo = format!(r#"{{"message": "bad key {KEY} for {TOKEN}"}}"#);
    let log = server.serve(vec![status(401, &echo)]);
    let api = client(&base).credential("Authorization", KEY).unwrap();
    let url = api.url(&["api", "v1", TOKEN, "attributes"]);
    let err = api
        .get(url.as_str())
        .secret(TOKEN)
        .send()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert_eq!(
        text,
        format!("GET {base}/api/v1/***/attributes: HTTP 401 Unauthorized (bad key *** for ***)")
    );
    assert!(!format!("{err:?}").contains("tok"), "{err:?}");
    let named = api
        .get(url.as_str())
        .secret(TOKEN)
        .shown_as(format!("TB attributes of {TOKEN}"))
        .send()
        .await
        .unwrap_err();
    assert!(
        named
            .to_string()
            .starts_with("TB attributes of ***: HTTP 500"),
        "{named}"
    );
    assert_eq!(log.lock().unwrap()[0].header("authorization"), Some(KEY));
    let debug = format!("{api:?}");
    assert!(
        debug.contains("authorization: ***") && !debug.contains(KEY),
        "{debug}"
    );
    let with_password = client("http://user:pw@127.0.0.1:1/");
    assert!(!format!("{with_password:?}").contains("pw"));
}

#[tokio::test]
async fn credentials_go_to_the_configured_origin_only() {
    let other = Responder::bind().await;
    let elsewhere = format!("{}/moved", other.url);
    let other_log = other.serve(vec![status(200, "{}")]);
    let home = Responder::bind().await;
    let base = home.url.clone();
    let home_log = home.serve(vec![
        redirect(307, "/again"),
        redirect(302, &elsewhere),
        status(200, "{}"),
    ]);
    let api = client(&base).credential("Authorization", "T").unwrap();
    let sent = api
        .request(Method::GET, &format!("{base}/start"))
        .credential("deviceKey", "K")
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status, StatusCode::OK);
    let home_seen = home_log.lock().unwrap().clone();
    assert_eq!(home_seen.len(), 2);
    for seen in &home_seen {
        assert_eq!(seen.header("authorization"), Some("T"));
        assert_eq!(seen.header("devicekey"), Some("K"));
    }
    assert_eq!(home_seen[1].path, "/again");
    let away = other_log.lock().unwrap()[0].clone();
    assert_eq!(away.path, "/moved");
    assert_eq!(away.header("authorization"), None);
    assert_eq!(away.header("devicekey"), None);
    // A URL on another host, or the same host over plain http, gets none either.
    assert!(api.credentials_for(&elsewhere).is_empty());
    assert_eq!(api.credentials_for(&format!("{base}/x")).len(), 1);
    let tls = client("https://h.example/").credential("k", "v").unwrap();
    assert!(tls.credentials_for("http://h.example:443/").is_empty());
    assert!(tls.credentials_for("http://h.example/").is_empty());
    assert_eq!(tls.credentials_for("https://h.example:443/p").len(), 1);
}

#[tokio::test]
async fn redirects_change_method_like_browsers_and_are_bounded() {
    let server = Responder::bind().await;
    let base = server.url.clone();
    let mut replies = vec![redirect(303, "/see"), status(200, "{}")];
    replies.extend((0..=10).map(|i| redirect(302, &format!("/loop{i}"))));
    let log = server.serve(replies);
    let api = client(&base);
    api.request(Method::POST, &base)
        .json(&[1, 2])
        .send()
        .await
        .unwrap();
    let seen = log.lock().unwrap().clone();
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("GET", "/see")
    );
    assert!(seen[1].body.is_empty());
    let err = api.get(&base).send().await.unwrap_err();
    assert!(err.to_string().ends_with("too many redirects"), "{err}");
    assert!(!err.is_transient());
}

#[test]
fn error_chain_names_every_cause() {
    let inner = std::io::Error::other("connection refused");
    assert_eq!(error_chain(&ChainTop(inner)), "top: connection refused");
}

#[derive(Debug)]
struct ChainTop(std::io::Error);

impl std::fmt::Display for ChainTop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("top")
    }
}

impl std::error::Error for ChainTop {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}
