//! A forwarding HTTP proxy on 127.0.0.1 that records what it was asked, so a test
//! can prove the agent went through it (`HTTPS_PROXY`, `HTTP_PROXY`) or did not
//! (`NO_PROXY`).
//!
//! It speaks the two proxy forms clients use (RFC 9110 §9.3.6, RFC 9112 §3.2.2):
//! `CONNECT host:port` is answered `200` and becomes a byte tunnel (HTTPS), and
//! an absolute-form request (`GET http://host:port/path`) is rewritten to origin
//! form and forwarded (plain HTTP). It relies on the origin closing the
//! connection after one response (the [`super::http_server::TestServer`]
//! default), so every forwarded connection carries exactly one request.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The proxy; dropping it stops it.
pub struct TestProxy {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl TestProxy {
    pub async fn start() -> TestProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, record.clone()));
            }
        });
        TestProxy { addr, seen, task }
    }

    /// `http://127.0.0.1:PORT`, the value for `HTTPS_PROXY` / `HTTP_PROXY`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request line of every request the proxy received, in order.
    pub fn request_lines(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut client: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let Some((head, rest)) = read_head(&mut client).await else {
        return;
    };
    let line = head.lines().next().unwrap_or_default().to_string();
    seen.lock().unwrap().push(line.clone());
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        return;
    };
    if method == "CONNECT" {
        let Ok(mut origin) = TcpStream::connect(target).await else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
            return;
        };
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_ok()
        {
            let _ = origin.write_all(&rest).await;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut origin).await;
        }
        return;
    }
    // Absolute form: http://authority/path → connect to authority, send /path.
    let Some((authority, path)) = target
        .strip_prefix("http://")
        .map(|t| t.split_at(t.find('/').unwrap_or(t.len())))
    else {
        let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        return;
    };
    let Ok(mut origin) = TcpStream::connect(authority).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    let path = if path.is_empty() { "/" } else { path };
    let rewritten = head.replacen(target, path, 1);
    if origin.write_all(rewritten.as_bytes()).await.is_ok() && origin.write_all(&rest).await.is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut origin).await;
    }
}

/// The request head (through the blank line) and any bytes read past it.
async fn read_head(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
