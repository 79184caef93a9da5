//! Tests of the test HTTP(S) server in `tests/support/http_server.rs` itself,
//! with a minimal raw client (plain TCP, or tokio-rustls for HTTPS), so the
//! download tests can rely on what the server puts on the wire.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use sha2::Digest;
use support::http_server::{
    ClientAuth, Faults, Framing, ServerOptions, TestServer, TlsSetup, http_date, synthetic_bytes,
    synthetic_md5_hex, synthetic_sha256_hex,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;

// ---------------------------------------------------------------------------
// Minimal client
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    /// Body after chunked decoding (if chunked).
    body: Vec<u8>,
    /// Whether the read ended with an error rather than a clean EOF.
    read_error: bool,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads until EOF or error; returns what arrived and whether it ended in error.
async fn read_all<S: AsyncRead + Unpin>(stream: &mut S) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return (out, false),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, true),
        }
    }
}

fn decode_chunked(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&data[..eol]).unwrap(), 16).unwrap();
        data = &data[eol + 2..];
        if size == 0 {
            break;
        }
        let take = size.min(data.len());
        out.extend_from_slice(&data[..take]);
        data = &data[(take + 2).min(data.len())..];
    }
    out
}

fn parse_response(raw: &[u8], read_error: bool) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_string(), v.trim().to_string())
        })
        .collect();
    let mut response = Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
        read_error,
    };
    if response.header("transfer-encoding") == Some("chunked") {
        response.body = decode_chunked(&response.body);
    }
    response
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> std::io::Result<Response> {
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;
    let (raw, read_error) = read_all(&mut stream).await;
    if raw.is_empty() {
        return Err(std::io::Error::other("no response"));
    }
    Ok(parse_response(&raw, read_error))
}

fn request_text(method: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: selftest/1\r\nConnection: close\r\n"
    );
    for (n, v) in headers {
        text.push_str(&format!("{n}: {v}\r\n"));
    }
    text.push_str("\r\n");
    text
}

async fn request(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Response {
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    exchange(tcp, &request_text(method, path, headers))
        .await
        .unwrap()
}

async fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Response {
    request(server, "GET", path, headers).await
}

fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(key).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
    };
    Arc::new(config)
}

async fn tls_get(
    server: &TestServer,
    config: Arc<ClientConfig>,
    host: &str,
    path: &str,
) -> std::io::Result<Response> {
    let tcp = TcpStream::connect(server.addr()).await?;
    let name = ServerName::try_from(host.to_string()).unwrap();
    let tls = TlsConnector::from(config).connect(name, tcp).await?;
    exchange(tls, &request_text("GET", path, &[])).await
}

async fn eventually(mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn body_100() -> Vec<u8> {
    (0..100u8).collect()
}

// ---------------------------------------------------------------------------
// Plain HTTP semantics
// ---------------------------------------------------------------------------

#[tokio::test]
async fn full_get_has_length_and_validators() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.add_file("/fw.bin", body_100());
    assert_eq!(
        server.url("fw.bin"),
        format!("http://{}/fw.bin", server.addr())
    );

    let r = get(&server, "/fw.bin?x=1", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body_100());
    assert!(!r.read_error);
    assert_eq!(r.header("content-length"), Some("100"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("connection"), Some("close"));
    let etag = r.header("etag").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(Some(etag.to_string()), server.etag("/fw.bin"));
    assert_eq!(
        r.header("last-modified").map(str::to_string),
        server.last_modified("/fw.bin")
    );

    assert_eq!(server.served_body_bytes("/fw.bin"), 100);
    assert_eq!(server.request_count("/fw.bin"), 1);
    let rec = &server.requests("/fw.bin")[0];
    assert_eq!(rec.method, "GET");
    assert_eq!(rec.target, "/fw.bin?x=1");
    assert_eq!(rec.user_agent(), Some("selftest/1"));
    assert_eq!(rec.status, 200);
    assert_eq!(rec.body_bytes, 100);
    assert!(!rec.client_cert);
}

#[tokio::test]
async fn head_sends_headers_only() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.add_synthetic("/big.bin", 5 << 30, 3);
    let r = request(&server, "HEAD", "/big.bin", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("5368709120"));
    assert!(r.header("etag").is_some());
    assert!(r.body.is_empty());
    assert_eq!(server.served_body_bytes("/big.bin"), 0);
    assert_eq!(server.requests("/big.bin")[0].method, "HEAD");
}

#[tokio::test]
async fn unknown_path_is_404_and_other_methods_405() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.add_file("/a", body_100());
    assert_eq!(get(&server, "/nope", &[]).await.status, 404);
    let r = request(&server, "POST", "/a", &[("Content-Length", "0")]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[tokio::test]
async fn byte_ranges_give_206_with_content_range() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.add_file("/fw.bin", body_100());

    let r = get(&server, "/fw.bin", &[("Range", "bytes=10-")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-99/100"));
    assert_eq!(r.header("content-length"), Some("90"));
    assert_eq!(r.body, body_100()[10..]);

    let r = get(&server, "/fw.bin", &[("Range", "bytes=10-19")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/100"));
    assert_eq!(r.body, body_100()[10..20]);

    let r = get(&server, "/fw.bin", &[("Range", "bytes=90-500")]).await;
    assert_eq!(r.header("content-range"), Some("bytes 90-99/100"));

    let r = get(&server, "/fw.bin", &[("Range", "bytes=-5")]).await;
    assert_eq!(r.header("content-range"), Some("bytes 95-99/100"));
    assert_eq!(r.body, body_100()[95..]);

    // Several ranges or nonsense: ignored, full body.
    let r = get(&server, "/fw.bin", &[("Range", "bytes=0-1,5-6")]).await;
    assert_eq!(r.status, 200);
    let r = get(&server, "/fw.bin", &[("Range", "lines=1-2")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body_100());

    assert_eq!(
        server.served_body_bytes("/fw.bin"),
        90 + 10 + 10 + 5 + 100 + 100
    );
    assert_eq!(server.requests("/fw.bin")[0].range(), Some("bytes=10-"));
}

#[tokio::test]
async fn unsatisfiable_range_is_416() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.add_file("/fw.bin", body_100());
    let r = get(&server, "/fw.bin", &[("Range", "bytes=100-")]).await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */100"));
    assert_eq!(server.served_body_bytes("/fw.bin"), 0);
}

#[tokio::test]
async fn if_range_mismatch_serves_full_body() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.add_file("/fw.bin", body_100());
    let etag = server.etag("/fw.bin").unwrap();
    let date = server.last_modified("/fw.bin").unwrap();

    let r = get(
        &server,
        "/fw.bin",
        &[("Range", "bytes=50-"), ("If-Range", &etag)],
    )
    .await;
    assert_eq!(r.status, 206);
    let r = get(
        &server,
        "/fw.bin",
        &[("Range", "bytes=50-"), ("If-Range", &date)],
    )
    .await;
    assert_eq!(r.status, 206);

    let r = get(
        &server,
        "/fw.bin",
        &[("Range", "bytes=50-"), ("If-Range", "\"other\"")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body_100());
    let old_date = http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000));
    let r = get(
        &server,
        "/fw.bin",
        &[("Range", "bytes=50-"), ("If-Range", &old_date)],
    )
    .await;
    assert_eq!(r.status, 200);
    let weak = format!("W/{etag}");
    let r = get(
        &server,
        "/fw.bin",
        &[("Range", "bytes=50-"), ("If-Range", &weak)],
    )
    .await;
    assert_eq!(r.status, 200);

    // New content under the same path: new ETag and date, old validators fail.
    server.replace_file("/fw.bin", vec![7u8; 100]);
    assert_ne!(server.etag("/fw.bin").unwrap(), etag);
    assert_ne!(server.last_modified("/fw.bin").unwrap(), date);
    let r = get(
        &server,
        "/fw.bin",
        &[("Range", "bytes=50-"), ("If-Range", &etag)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, vec![7u8; 100]);

    // ETag changed by hand, content the same.
    server.set_etag("/fw.bin", Some("v2"));
    assert_eq!(server.etag("/fw.bin").as_deref(), Some("\"v2\""));
    let r = get(
        &server,
        "/fw.bin",
        &[("Range", "bytes=50-"), ("If-Range", "\"v2\"")],
    )
    .await;
    assert_eq!(r.status, 206);
    server.set_etag("/fw.bin", None);
    let r = get(&server, "/fw.bin", &[]).await;
    assert_eq!(r.header("etag"), None);
}

#[tokio::test]
async fn synthetic_body_matches_helpers() {
    let server = TestServer::start(ServerOptions::default()).await;
    let len = 300_000;
    server.add_synthetic("/s.bin", len, 9);
    let r = get(&server, "/s.bin", &[]).await;
    assert_eq!(r.body, synthetic_bytes(9, 0..len));
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&r.body)),
        synthetic_sha256_hex(9, len)
    );
    assert_eq!(
        hex::encode(md5::Md5::digest(&r.body)),
        synthetic_md5_hex(9, len)
    );
    assert_ne!(synthetic_bytes(9, 0..64), synthetic_bytes(10, 0..64));
    // No short period: 256 bytes further on is different data.
    assert_ne!(synthetic_bytes(9, 0..64), synthetic_bytes(9, 256..320));

    let r = get(&server, "/s.bin", &[("Range", "bytes=12345-23456")]).await;
    assert_eq!(r.body, synthetic_bytes(9, 12345..23457));
}

#[tokio::test]
async fn malformed_requests_get_400_and_server_keeps_going() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.add_file("/a", body_100());
    for garbage in [
        "GARBAGE\r\n\r\n",
        "GET /a HTTP/9.9\r\n\r\n",
        "GET /a HTTP/1.1\r\nno colon here\r\n\r\n",
        "GET a HTTP/1.1\r\n\r\n",
        "GET /a HTTP/1.1\r\nContent-Length: zz\r\n\r\n",
        "\u{7f}\u{1} / HTTP/1.1\r\n\r\n",
    ] {
        let tcp = TcpStream::connect(server.addr()).await.unwrap();
        let r = exchange(tcp, garbage).await.unwrap();
        assert_eq!(r.status, 400, "{garbage:?}");
    }
    // Invalid UTF-8 and an oversized head.
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(b"GET /\xff\xfe HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let (raw, _) = read_all(&mut tcp).await;
    assert!(raw.starts_with(b"HTTP/1.1 400"));
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    let _ = tcp.write_all(&vec![b'a'; 100 * 1024]).await;
    let (raw, _) = read_all(&mut tcp).await;
    assert!(raw.is_empty() || raw.starts_with(b"HTTP/1.1 400"));
    // A client that connects and leaves.
    drop(TcpStream::connect(server.addr()).await.unwrap());

    assert!(server.bad_request_count() >= 7);
    assert_eq!(get(&server, "/a", &[]).await.status, 200);
}

#[tokio::test]
async fn many_concurrent_connections() {
    let server = Arc::new(TestServer::start(ServerOptions::default()).await);
    server.add_synthetic("/s.bin", 200_000, 1);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let server = server.clone();
        tasks.push(tokio::spawn(
            async move { get(&server, "/s.bin", &[]).await },
        ));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 200_000);
    }
    assert_eq!(server.request_count("/s.bin"), 32);
    assert_eq!(server.served_body_bytes("/s.bin"), 32 * 200_000);
    assert_eq!(server.connection_count(), 32);
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let server = TestServer::start(ServerOptions {
        keep_alive: true,
        ..ServerOptions::default()
    })
    .await;
    server.add_file("/a", body_100());
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    let first = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let second = "GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    tcp.write_all(first.as_bytes()).await.unwrap();
    tcp.write_all(second.as_bytes()).await.unwrap();
    let (raw, _) = read_all(&mut tcp).await;
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2);
    assert!(text.contains("Connection: keep-alive"));
    assert_eq!(server.connection_count(), 1);
    assert_eq!(server.request_count("/a"), 2);
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

#[tokio::test]
async fn drop_after_truncates_the_body() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.add_synthetic("/s.bin", 1 << 20, 5);
    server.push_faults("/s.bin", Faults::new().drop_after(1000), 1);
    let r = get(&server, "/s.bin", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1048576"));
    assert_eq!(r.body, synthetic_bytes(5, 0..1000));
    assert_eq!(server.served_body_bytes("/s.bin"), 1000);

    // Also for a 206: the count is within this response's body.
    server.push_faults("/s.bin", Faults::new().drop_after(10), 1);
    let r = get(&server, "/s.bin", &[("Range", "bytes=1000-")]).await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, synthetic_bytes(5, 1000..1010));
    assert_eq!(server.served_body_bytes("/s.bin"), 1010);

    // The queue is used up: the next request is whole.
    assert_eq!(server.queued_faults("/s.bin"), 0);
    let r = get(&server, "/s.bin", &[("Range", "bytes=1010-")]).await;
    assert_eq!(r.body.len(), (1 << 20) - 1010);
    assert_eq!(server.served_body_bytes("/s.bin"), 1 << 20);
}

#[tokio::test]
async fn stall_after_goes_silent_then_resumes() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.add_file("/a", body_100());
    server.set_faults(
        "/a",
        Faults::new().stall_after(40, Duration::from_millis(2000)),
    );
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(request_text("GET", "/a", &[]).as_bytes())
        .await
        .unwrap();
    // Everything up to the stall arrives promptly.
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    loop {
        let n = timeout(Duration::from_secs(2), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        raw.extend_from_slice(&buf[..n]);
        let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n");
        if head_end.is_some_and(|e| raw.len() - (e + 4) >= 40) {
            break;
        }
    }
    // Then nothing for a while (the stall is far longer than this wait, so a
    // slow machine does not turn it into a pass or a failure).
    assert!(
        timeout(Duration::from_millis(300), tcp.read(&mut buf))
            .await
            .is_err()
    );
    // Then the rest.
    let (rest, _) = read_all(&mut tcp).await;
    raw.extend_from_slice(&rest);
    assert!(start.elapsed() >= Duration::from_millis(2000));
    assert_eq!(parse_response(&raw, false).body, body_100());
}

#[tokio::test]
async fn status_with_retry_after_for_next_requests() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.add_file("/a", body_100());
    server.push_faults("/a", Faults::new().status(503).retry_after("2"), 2);
    let date = http_date(SystemTime::now() + Duration::from_secs(3));
    server.push_faults("/a", Faults::new().status(429).retry_after(date.clone()), 1);
    assert_eq!(server.queued_faults("/a"), 3);

    for _ in 0..2 {
        let r = get(&server, "/a", &[]).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after"), Some("2"));
    }
    let r = get(&server, "/a", &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some(date.as_str()));
    let r = get(&server, "/a", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("retry-after"), None);

    let statuses: Vec<u16> = server.requests("/a").iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 429, 200]);
    assert_eq!(server.served_body_bytes("/a"), 100);

    // Faults work on paths with no resource, and standing faults stay.
    server.set_faults("/gone", Faults::new().status(403));
    assert_eq!(get(&server, "/gone", &[]).await.status, 403);
    assert_eq!(get(&server, "/gone", &[]).await.status, 403);
    server.clear_faults("/gone");
    assert_eq!(get(&server, "/gone", &[]).await.status, 404);
}

#[tokio::test]
async fn redirect_points_elsewhere() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.add_file("/real", body_100());
    server.set_faults("/old", Faults::new().redirect(302, server.url("/real")));
    let r = get(&server, "/old", &[]).await;
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some(server.url("/real").as_str()));
    server.set_faults("/old", Faults::new().redirect(307, "/real"));
    assert_eq!(get(&server, "/old", &[]).await.status, 307);
}

#[tokio::test]
async fn ignore_range_and_wrong_body() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.add_file("/a", body_100());
    server.push_faults("/a", Faults::new().ignore_range(), 1);
    let r = get(&server, "/a", &[("Range", "bytes=50-")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body_100());
    assert_eq!(r.header("content-range"), None);

    server.push_faults("/a", Faults::new().wrong_body(), 1);
    let r = get(&server, "/a", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 100);
    let differing = r
        .body
        .iter()
        .zip(body_100())
        .filter(|(a, b)| **a != *b)
        .count();
    assert_eq!(differing, 1);
}

#[tokio::test]
async fn chunked_and_close_delimited_bodies() {
    let server = TestServer::start(ServerOptions {
        chunk_size: 7,
        ..ServerOptions::default()
    })
    .await;
    server.add_file("/a", body_100());
    server.push_faults("/a", Faults::new().no_content_length(), 1);
    let r = get(&server, "/a", &[]).await;
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body, body_100());

    server.push_faults("/a", Faults::new().framing(Framing::CloseDelimited), 1);
    let r = get(&server, "/a", &[]).await;
    assert_eq!(r.header("content-length"), None);
    assert_eq!(r.header("transfer-encoding"), None);
    assert_eq!(r.body, body_100());

    // A chunked body cut short has no terminating chunk.
    server.push_faults("/a", Faults::new().no_content_length().drop_after(20), 1);
    let tcp = TcpStream::connect(server.addr()).await.unwrap();
    let mut tcp = tcp;
    tcp.write_all(request_text("GET", "/a", &[]).as_bytes())
        .await
        .unwrap();
    let (raw, _) = read_all(&mut tcp).await;
    assert!(!raw.ends_with(b"0\r\n\r\n"));
    assert_eq!(parse_response(&raw, false).body, body_100()[..20]);
}

#[tokio::test]
async fn rate_limit_and_header_delay() {
    let server = TestServer::start(ServerOptions::default()).await;
    server.add_file("/a", vec![1u8; 2000]);
    server.set_faults(
        "/a",
        Faults::new()
            .delay_headers(Duration::from_millis(100))
            .rate_limit(10_000)
            .header("X-Test", "yes"),
    );
    let start = Instant::now();
    let r = get(&server, "/a", &[]).await;
    assert_eq!(r.body.len(), 2000);
    assert_eq!(r.header("x-test"), Some("yes"));
    // 100 ms delay + 2000 bytes at 10 kB/s.
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tls_handshake_with_generated_ca() {
    let server = TestServer::start_tls(ServerOptions::default(), TlsSetup::server_only()).await;
    server.add_file("/a", body_100());
    assert!(server.url("/a").starts_with("https://127.0.0.1:"));
    let files = server.tls_files().clone();
    for path in [
        &files.ca_cert,
        &files.server_cert,
        &files.server_key,
        &files.client_cert,
        &files.client_key,
        &files.client_identity,
    ] {
        assert!(path.starts_with(&files.dir) && path.is_file(), "{path:?}");
    }
    let identity = std::fs::read_to_string(&files.client_identity).unwrap();
    assert!(identity.contains("BEGIN CERTIFICATE") && identity.contains("BEGIN PRIVATE KEY"));

    let config = client_config(&files.ca_cert, None);
    for host in ["127.0.0.1", "localhost"] {
        let r = tls_get(&server, config.clone(), host, "/a").await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body_100());
    }

    // A client trusting some other CA refuses the server.
    let wrong = client_config(&files.untrusted_ca_cert, None);
    assert!(tls_get(&server, wrong, "127.0.0.1", "/a").await.is_err());
    eventually(|| server.tls_handshake_failures() == 1).await;
    assert_eq!(server.request_count("/a"), 2);

    // The files go away with the server.
    drop(server);
    assert!(!files.dir.exists());
}

#[tokio::test]
async fn tls_faults_apply_too() {
    let server = TestServer::start_tls(ServerOptions::default(), TlsSetup::server_only()).await;
    server.add_synthetic("/s.bin", 100_000, 2);
    server.push_faults("/s.bin", Faults::new().drop_after(5000), 1);
    let config = client_config(&server.tls_files().ca_cert, None);
    let r = tls_get(&server, config, "127.0.0.1", "/s.bin")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, synthetic_bytes(2, 0..5000));
    // No close_notify: the TLS client sees an unexpected EOF.
    assert!(r.read_error);
}

#[tokio::test]
async fn mtls_requires_a_trusted_client_certificate() {
    let server = TestServer::start_tls(ServerOptions::default(), TlsSetup::mtls()).await;
    server.add_file("/a", body_100());
    let files = server.tls_files().clone();

    let anonymous = client_config(&files.ca_cert, None);
    assert!(
        tls_get(&server, anonymous, "127.0.0.1", "/a")
            .await
            .is_err()
    );
    eventually(|| server.tls_handshake_failures() == 1).await;

    let rogue = client_config(
        &files.ca_cert,
        Some((&files.untrusted_client_cert, &files.untrusted_client_key)),
    );
    assert!(tls_get(&server, rogue, "127.0.0.1", "/a").await.is_err());
    eventually(|| server.tls_handshake_failures() == 2).await;
    assert_eq!(server.request_count("/a"), 0);

    let trusted = client_config(
        &files.ca_cert,
        Some((&files.client_cert, &files.client_key)),
    );
    let r = tls_get(&server, trusted, "127.0.0.1", "/a").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body_100());
    assert!(server.requests("/a")[0].client_cert);

    // The combined file holds the same identity.
    let combined = client_config(
        &files.ca_cert,
        Some((&files.client_identity, &files.client_identity)),
    );
    let r = tls_get(&server, combined, "localhost", "/a").await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn mtls_with_separate_client_ca_and_optional_auth() {
    let setup = TlsSetup {
        client_auth: ClientAuth::Required,
        separate_client_ca: true,
    };
    let server = TestServer::start_tls(ServerOptions::default(), setup).await;
    server.add_file("/a", body_100());
    let files = server.tls_files().clone();
    assert_ne!(
        std::fs::read(&files.ca_cert).unwrap(),
        std::fs::read(&files.client_ca_cert).unwrap()
    );
    let trusted = client_config(
        &files.ca_cert,
        Some((&files.client_cert, &files.client_key)),
    );
    assert_eq!(
        tls_get(&server, trusted, "127.0.0.1", "/a")
            .await
            .unwrap()
            .status,
        200
    );

    let setup = TlsSetup {
        client_auth: ClientAuth::Optional,
        separate_client_ca: false,
    };
    let server = TestServer::start_tls(ServerOptions::default(), setup).await;
    server.add_file("/a", body_100());
    let files = server.tls_files().clone();
    let anonymous = client_config(&files.ca_cert, None);
    assert_eq!(
        tls_get(&server, anonymous, "127.0.0.1", "/a")
            .await
            .unwrap()
            .status,
        200
    );
    let trusted = client_config(
        &files.ca_cert,
        Some((&files.client_cert, &files.client_key)),
    );
    assert_eq!(
        tls_get(&server, trusted, "127.0.0.1", "/a")
            .await
            .unwrap()
            .status,
        200
    );
    let flags: Vec<bool> = server
        .requests("/a")
        .iter()
        .map(|r| r.client_cert)
        .collect();
    assert_eq!(flags, [false, true]);
}
