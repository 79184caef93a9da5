//! A hand-rolled HTTP/1.1 (and HTTPS) server on 127.0.0.1 for testing the
//! download engine against a real peer that misbehaves on demand.
//!
//! It is written directly on a tokio `TcpListener` so that every byte on the wire
//! is under the test's control: it can cut a body after N bytes, go silent in the
//! middle of a response, ignore `Range`, lie about the content, answer with any
//! status and `Retry-After`, redirect, or drop `Content-Length`. A framework
//! would normalise exactly the behaviour these tests need to provoke.
//!
//! What it serves:
//! - registered files ([`TestServer::add_file`]) and large synthetic bodies
//!   ([`TestServer::add_synthetic`]) generated on the fly from a seed, so a
//!   multi-GiB image costs no memory; [`synthetic_bytes`], [`synthetic_sha256_hex`]
//!   and friends compute what such a body contains;
//! - `GET` and `HEAD` with `Content-Length`, a strong `ETag`, `Last-Modified`,
//!   `Accept-Ranges: bytes`, single byte ranges (`bytes=N-`, `bytes=N-M`,
//!   `bytes=-S`) answered with 206 + `Content-Range`, 416 for unsatisfiable
//!   ranges, and `If-Range` (ETag or HTTP-date) falling back to a full 200 when it
//!   does not match;
//! - faults per path ([`Faults`]), either for every request
//!   ([`TestServer::set_faults`]) or queued for the next N requests
//!   ([`TestServer::push_faults`]), changeable while the server runs.
//!
//! What it records: every request (method, path, headers, time, status, body
//! bytes sent) and, per path, the total content bytes written to sockets.
//!
//! TLS: [`TestServer::start_tls`] generates a throw-away CA, a server certificate
//! for `127.0.0.1`/`localhost`, client certificates (one trusted, one from an
//! untrusted CA) and writes them as PEM files into a temporary directory owned
//! by the server ([`TlsFiles`]); the server can require client certificates.
//!
//! The server never panics on what a client sends: a malformed request gets a
//! 400 and the connection is closed. Misuse of the test-side API (for example
//! changing the ETag of a path that was never registered) panics with a message,
//! as test helpers do. Dropping the [`TestServer`] aborts every task it started.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// Largest request head (request line + headers) accepted before answering 400.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body the server reads (and discards) before answering 400.
const MAX_REQUEST_BODY: u64 = 1024 * 1024;
/// `Last-Modified` of the first resource registered; every later registration
/// or replacement is one second later, so each version has its own date.
const BASE_LAST_MODIFIED_SECS: u64 = 1_700_000_000;

// ---------------------------------------------------------------------------
// Synthetic content
// ---------------------------------------------------------------------------

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn synthetic_word(seed: u8, word_index: u64) -> [u8; 8] {
    splitmix64(word_index ^ (u64::from(seed) << 56)).to_le_bytes()
}

/// Fills `buf` with the synthetic body for `seed`, starting at byte `offset`.
///
/// The pattern is a hash of the byte's offset (not a short cycle), so a body
/// resumed at a wrong offset never happens to match the expected bytes.
pub fn synthetic_fill(seed: u8, offset: u64, buf: &mut [u8]) {
    let mut at = offset;
    let mut pos = 0;
    while pos < buf.len() {
        let word = synthetic_word(seed, at >> 3);
        let k = (at & 7) as usize;
        let n = (8 - k).min(buf.len() - pos);
        buf[pos..pos + n].copy_from_slice(&word[k..k + n]);
        pos += n;
        at += n as u64;
    }
}

/// The bytes `range` of the synthetic body for `seed`.
pub fn synthetic_bytes(seed: u8, range: Range<u64>) -> Vec<u8> {
    let len = usize::try_from(range.end.saturating_sub(range.start)).expect("range fits in memory");
    let mut buf = vec![0; len];
    synthetic_fill(seed, range.start, &mut buf);
    buf
}

/// Calls `f` with consecutive chunks (at most 64 KiB each) of the synthetic body
/// for `seed` over `range`, without holding it in memory.
pub fn for_each_synthetic_chunk(seed: u8, range: Range<u64>, mut f: impl FnMut(&[u8])) {
    let mut buf = vec![0; 64 * 1024];
    let mut at = range.start;
    while at < range.end {
        let n = usize::try_from((range.end - at).min(buf.len() as u64)).unwrap_or(buf.len());
        synthetic_fill(seed, at, &mut buf[..n]);
        f(&buf[..n]);
        at += n as u64;
    }
}

/// Digest of the first `len` bytes of the synthetic body for `seed`, with any
/// RustCrypto hasher (`sha2::Sha256`, `md5::Md5`, `sha1::Sha1`, ...).
pub fn synthetic_digest<D: Digest>(seed: u8, len: u64) -> Vec<u8> {
    let mut hasher = D::new();
    for_each_synthetic_chunk(seed, 0..len, |chunk| hasher.update(chunk));
    hasher.finalize().to_vec()
}

/// Lower-case hex SHA-256 of the synthetic body (`seed`, `len`).
pub fn synthetic_sha256_hex(seed: u8, len: u64) -> String {
    hex::encode(synthetic_digest::<sha2::Sha256>(seed, len))
}

/// Lower-case hex MD5 of the synthetic body (`seed`, `len`).
pub fn synthetic_md5_hex(seed: u8, len: u64) -> String {
    hex::encode(synthetic_digest::<md5::Md5>(seed, len))
}

/// Formats `time` as an HTTP-date (`Sun, 06 Nov 1994 08:49:37 GMT`), e.g. for a
/// `Retry-After` date or an `If-Range` value.
pub fn http_date(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

/// How the body of a response is delimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` (the normal case).
    #[default]
    ContentLength,
    /// `Transfer-Encoding: chunked`, no `Content-Length`.
    Chunked,
    /// Neither header: the body ends when the server closes the connection.
    CloseDelimited,
}

/// Misbehaviour applied to one response. Build with [`Faults::new`] and the
/// chaining methods; several faults combine (e.g. a 206 that is also cut short).
///
/// Order of evaluation for a request: `delay_headers`, then `redirect`, then
/// `status`, then the resource itself (404 if unknown) with `ignore_range`,
/// `wrong_body`, `framing`, `stall_after`, `drop_after` and `rate_limit`
/// applied to its body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Wait this long before sending anything.
    pub delay_headers: Option<Duration>,
    /// Answer with this redirect status (301/302/303/307/308) and `Location`.
    pub redirect: Option<(u16, String)>,
    /// Answer with this status (e.g. 500, 503, 429, 408, 404, 403) and a short
    /// text body instead of the resource.
    pub status: Option<u16>,
    /// `Retry-After` value sent with `status` (seconds like `"2"` or an HTTP-date).
    pub retry_after: Option<String>,
    /// Answer 200 with the full body even if `Range` was sent.
    pub ignore_range: bool,
    /// Flip (XOR 0xFF) the first body byte of the response.
    pub wrong_body: bool,
    /// How the body is delimited.
    pub framing: Framing,
    /// Send this many body bytes, then go silent for the duration (socket stays
    /// open), then send the rest.
    pub stall_after: Option<(u64, Duration)>,
    /// Send the headers and this many body bytes, then close the connection
    /// abruptly (no chunked terminator, no TLS close_notify).
    pub drop_after: Option<u64>,
    /// Send the body at about this many bytes per second.
    pub rate_limit: Option<u64>,
    /// Extra response headers (name, value), added to every response this
    /// fault set applies to.
    pub extra_headers: Vec<(String, String)>,
}

impl Faults {
    /// No fault at all.
    pub fn new() -> Self {
        Self::default()
    }

    /// See [`Faults::delay_headers`].
    pub fn delay_headers(mut self, delay: Duration) -> Self {
        self.delay_headers = Some(delay);
        self
    }

    /// Redirect with `code` to `location` (an absolute URL, e.g. from
    /// [`TestServer::url`]).
    pub fn redirect(mut self, code: u16, location: impl Into<String>) -> Self {
        self.redirect = Some((code, location.into()));
        self
    }

    /// Answer with status `code` instead of the resource.
    pub fn status(mut self, code: u16) -> Self {
        self.status = Some(code);
        self
    }

    /// `Retry-After` header value for [`Faults::status`].
    pub fn retry_after(mut self, value: impl Into<String>) -> Self {
        self.retry_after = Some(value.into());
        self
    }

    /// Serve the full body with 200 even when a range was asked for.
    pub fn ignore_range(mut self) -> Self {
        self.ignore_range = true;
        self
    }

    /// Serve content that differs from the registered one in one byte.
    pub fn wrong_body(mut self) -> Self {
        self.wrong_body = true;
        self
    }

    /// Use `Transfer-Encoding: chunked` instead of `Content-Length`.
    pub fn no_content_length(self) -> Self {
        self.framing(Framing::Chunked)
    }

    /// Choose how the body is delimited.
    pub fn framing(mut self, framing: Framing) -> Self {
        self.framing = framing;
        self
    }

    /// Send `n` body bytes, stay silent for `pause`, then send the rest.
    pub fn stall_after(mut self, n: u64, pause: Duration) -> Self {
        self.stall_after = Some((n, pause));
        self
    }

    /// Send `n` body bytes, then close the connection.
    pub fn drop_after(mut self, n: u64) -> Self {
        self.drop_after = Some(n);
        self
    }

    /// Send the body at about `bytes_per_second`.
    pub fn rate_limit(mut self, bytes_per_second: u64) -> Self {
        self.rate_limit = Some(bytes_per_second.max(1));
        self
    }

    /// Add a response header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }
}

/// Faults of one path: a queue consumed one request at a time, then a standing
/// set used once the queue is empty.
#[derive(Default)]
struct FaultPlan {
    queued: VecDeque<(Faults, usize)>,
    always: Option<Faults>,
}

impl FaultPlan {
    fn next(&mut self) -> Faults {
        if let Some((faults, left)) = self.queued.front_mut() {
            let faults = faults.clone();
            *left -= 1;
            if *left == 0 {
                self.queued.pop_front();
            }
            return faults;
        }
        self.always.clone().unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// 0-based order of arrival across the whole server.
    pub seq: usize,
    /// 1-based id of the connection it came on (see [`TestServer::connection_count`]).
    pub connection: usize,
    pub method: String,
    /// Request target as sent (may include a query).
    pub target: String,
    /// Path part of the target (no query), the key used for files and faults.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// When the request head was complete (tokio clock, so it follows a paused clock).
    pub at: Instant,
    /// Status answered (0 while the answer is not decided yet).
    pub status: u16,
    /// Content bytes written to the socket for this response so far.
    pub body_bytes: u64,
    /// Whether the connection was TLS with a client certificate.
    pub client_cert: bool,
}

impl RecordedRequest {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// The `Range` header.
    pub fn range(&self) -> Option<&str> {
        self.header("range")
    }

    /// The `If-Range` header.
    pub fn if_range(&self) -> Option<&str> {
        self.header("if-range")
    }

    /// The `User-Agent` header.
    pub fn user_agent(&self) -> Option<&str> {
        self.header("user-agent")
    }
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

#[derive(Clone)]
enum Content {
    Bytes(Bytes),
    Synthetic { len: u64, seed: u8 },
}

impl Content {
    fn len(&self) -> u64 {
        match self {
            Content::Bytes(b) => b.len() as u64,
            Content::Synthetic { len, .. } => *len,
        }
    }

    /// Fills `buf` from `offset`; the caller keeps `offset + buf.len() <= len`.
    fn fill(&self, offset: u64, buf: &mut [u8]) {
        match self {
            Content::Bytes(b) => {
                let start = offset as usize;
                buf.copy_from_slice(&b[start..start + buf.len()]);
            }
            Content::Synthetic { seed, .. } => synthetic_fill(*seed, offset, buf),
        }
    }

    fn default_etag(&self) -> String {
        match self {
            Content::Bytes(b) => {
                let digest = sha2::Sha256::digest(b);
                format!("\"f-{}\"", &hex::encode(digest)[..16])
            }
            Content::Synthetic { len, seed } => format!("\"s-{len:x}-{seed:02x}\""),
        }
    }
}

#[derive(Clone)]
struct Resource {
    content: Content,
    etag: Option<String>,
    last_modified: Option<SystemTime>,
}

#[derive(Default)]
struct Shared {
    resources: HashMap<String, Resource>,
    faults: HashMap<String, FaultPlan>,
    records: Vec<RecordedRequest>,
    served: HashMap<String, u64>,
    generation: u64,
    connections: usize,
    tls_failures: usize,
    bad_requests: usize,
}

type SharedState = Arc<Mutex<Shared>>;

fn lock(shared: &SharedState) -> MutexGuard<'_, Shared> {
    // A panic while the lock was held (there is none in the server) must not
    // hide the state from the test's assertions.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

fn normalize_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

fn quote_etag(etag: &str) -> String {
    if etag.starts_with('"') || etag.starts_with("W/") {
        etag.to_string()
    } else {
        format!("\"{etag}\"")
    }
}

// ---------------------------------------------------------------------------
// Public server
// ---------------------------------------------------------------------------

/// Server-wide options.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Keep connections open between requests (HTTP/1.1 clients that did not
    /// ask for `Connection: close`). Off by default: every response carries
    /// `Connection: close` and the server closes after it.
    pub keep_alive: bool,
    /// Largest body write, in bytes.
    pub chunk_size: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            keep_alive: false,
            chunk_size: 64 * 1024,
        }
    }
}

/// Whether and how the TLS server asks for client certificates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for.
    #[default]
    None,
    /// A client certificate is asked for and verified if sent, but not required.
    Optional,
    /// mTLS: a client without a certificate trusted by the client CA fails the
    /// handshake.
    Required,
}

/// What [`TestServer::start_tls`] generates.
#[derive(Clone, Debug, Default)]
pub struct TlsSetup {
    pub client_auth: ClientAuth,
    /// Sign client certificates with a CA of their own instead of the server's.
    pub separate_client_ca: bool,
}

impl TlsSetup {
    /// Server authentication only.
    pub fn server_only() -> Self {
        Self::default()
    }

    /// Client certificates required (mTLS), signed by the server's CA.
    pub fn mtls() -> Self {
        Self {
            client_auth: ClientAuth::Required,
            separate_client_ca: false,
        }
    }
}

/// PEM files written by [`TestServer::start_tls`], all inside `dir` (deleted
/// when the server is dropped). Keys are PKCS#8 (`BEGIN PRIVATE KEY`); every
/// certificate is ECDSA P-256 and valid from 2020 to 2100.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub dir: PathBuf,
    /// The CA that signed the server certificate: what a client must trust.
    pub ca_cert: PathBuf,
    /// Server certificate (SANs `127.0.0.1`, `localhost`) and its key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The CA the server trusts for client certificates (same content as
    /// `ca_cert` unless [`TlsSetup::separate_client_ca`]).
    pub client_ca_cert: PathBuf,
    /// A client certificate the server accepts, its key, and both in one file
    /// (certificate first, then key).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub client_identity: PathBuf,
    /// A CA unrelated to anything the server uses: trusting only it must make
    /// server verification fail.
    pub untrusted_ca_cert: PathBuf,
    /// A client certificate signed by `untrusted_ca_cert`, which the server
    /// rejects; its key, and both in one file.
    pub untrusted_client_cert: PathBuf,
    pub untrusted_client_key: PathBuf,
    pub untrusted_client_identity: PathBuf,
}

/// The running server. See the module documentation.
pub struct TestServer {
    addr: SocketAddr,
    tls: Option<TlsFiles>,
    shared: SharedState,
    accept_task: JoinHandle<()>,
    _tls_dir: Option<tempfile::TempDir>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every
        // connection task.
        self.accept_task.abort();
    }
}

impl TestServer {
    /// Starts a plain HTTP server on 127.0.0.1 with an ephemeral port.
    pub async fn start(options: ServerOptions) -> TestServer {
        Self::start_inner(options, None, None).await
    }

    /// Starts an HTTPS server on 127.0.0.1 with freshly generated certificates
    /// (see [`TlsFiles`]).
    pub async fn start_tls(options: ServerOptions, setup: TlsSetup) -> TestServer {
        let dir = tempfile::tempdir().expect("create TLS temp dir");
        let (files, config) = generate_tls(dir.path(), &setup);
        let acceptor = TlsAcceptor::from(Arc::new(config));
        Self::start_inner(options, Some((files, acceptor)), Some(dir)).await
    }

    async fn start_inner(
        options: ServerOptions,
        tls: Option<(TlsFiles, TlsAcceptor)>,
        tls_dir: Option<tempfile::TempDir>,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = SharedState::default();
        let (files, acceptor) = match tls {
            Some((f, a)) => (Some(f), Some(a)),
            None => (None, None),
        };
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone(), options, acceptor));
        TestServer {
            addr,
            tls: files,
            shared,
            accept_task,
            _tls_dir: tls_dir,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// URL of `path` (a leading `/` is added if missing).
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), normalize_path(path))
    }

    /// The certificate files of a TLS server. Panics for a plain server.
    pub fn tls_files(&self) -> &TlsFiles {
        self.tls
            .as_ref()
            .expect("tls_files() on a server started without TLS")
    }

    fn register(&self, path: &str, content: Content) {
        let mut s = lock(&self.shared);
        let last_modified =
            UNIX_EPOCH + Duration::from_secs(BASE_LAST_MODIFIED_SECS + s.generation);
        s.generation += 1;
        let etag = Some(content.default_etag());
        s.resources.insert(
            normalize_path(path),
            Resource {
                content,
                etag,
                last_modified: Some(last_modified),
            },
        );
    }

    /// Serves `body` at `path`. Registering a path again replaces it: the new
    /// version gets the ETag of its content and a later `Last-Modified`.
    pub fn add_file(&self, path: &str, body: impl Into<Bytes>) {
        self.register(path, Content::Bytes(body.into()));
    }

    /// Same as [`TestServer::add_file`]; reads better where a test changes the
    /// content under a client.
    pub fn replace_file(&self, path: &str, body: impl Into<Bytes>) {
        self.add_file(path, body);
    }

    /// Serves `len` bytes of the synthetic body for `seed` at `path` (see
    /// [`synthetic_fill`]), generated as it is sent. Default ETag
    /// `"s-<len hex>-<seed hex>"`.
    pub fn add_synthetic(&self, path: &str, len: u64, seed: u8) {
        self.register(path, Content::Synthetic { len, seed });
    }

    /// Stops serving `path` (404 from then on).
    pub fn remove(&self, path: &str) {
        lock(&self.shared).resources.remove(&normalize_path(path));
    }

    fn with_resource<T>(&self, path: &str, f: impl FnOnce(&mut Resource) -> T) -> T {
        let mut s = lock(&self.shared);
        let resource = s
            .resources
            .get_mut(&normalize_path(path))
            .unwrap_or_else(|| panic!("no resource registered at {path}"));
        f(resource)
    }

    /// Sets the ETag of `path` (quoted if given bare; `W/"..."` makes a weak
    /// one), or removes the header with `None`. Content is unchanged.
    pub fn set_etag(&self, path: &str, etag: Option<&str>) {
        self.with_resource(path, |r| r.etag = etag.map(quote_etag));
    }

    /// Sets `Last-Modified` of `path`, or removes the header with `None`.
    pub fn set_last_modified(&self, path: &str, time: Option<SystemTime>) {
        self.with_resource(path, |r| r.last_modified = time);
    }

    /// The current ETag of `path` as sent (with quotes).
    pub fn etag(&self, path: &str) -> Option<String> {
        self.with_resource(path, |r| r.etag.clone())
    }

    /// The current `Last-Modified` of `path` as sent (an HTTP-date).
    pub fn last_modified(&self, path: &str) -> Option<String> {
        self.with_resource(path, |r| r.last_modified.map(http_date))
    }

    /// Applies `faults` to every request for `path` (after any queued by
    /// [`TestServer::push_faults`]) until changed or cleared. Works for paths
    /// with no resource too.
    pub fn set_faults(&self, path: &str, faults: Faults) {
        lock(&self.shared)
            .faults
            .entry(normalize_path(path))
            .or_default()
            .always = Some(faults);
    }

    /// Applies `faults` to the next `times` requests for `path`, after those
    /// already queued; then the standing faults (if any) apply again.
    pub fn push_faults(&self, path: &str, faults: Faults, times: usize) {
        if times == 0 {
            return;
        }
        lock(&self.shared)
            .faults
            .entry(normalize_path(path))
            .or_default()
            .queued
            .push_back((faults, times));
    }

    /// Removes queued and standing faults of `path`.
    pub fn clear_faults(&self, path: &str) {
        lock(&self.shared).faults.remove(&normalize_path(path));
    }

    /// Requests for `path` still covered by queued faults.
    pub fn queued_faults(&self, path: &str) -> usize {
        lock(&self.shared)
            .faults
            .get(&normalize_path(path))
            .map_or(0, |p| p.queued.iter().map(|(_, n)| n).sum())
    }

    /// Content bytes of `path` written to sockets, over all requests (only the
    /// resource's bytes: headers, chunk framing and error pages do not count).
    pub fn served_body_bytes(&self, path: &str) -> u64 {
        lock(&self.shared)
            .served
            .get(&normalize_path(path))
            .copied()
            .unwrap_or(0)
    }

    /// Requests for `path`, in order of arrival.
    pub fn requests(&self, path: &str) -> Vec<RecordedRequest> {
        let path = normalize_path(path);
        lock(&self.shared)
            .records
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Number of requests for `path`.
    pub fn request_count(&self, path: &str) -> usize {
        let path = normalize_path(path);
        lock(&self.shared)
            .records
            .iter()
            .filter(|r| r.path == path)
            .count()
    }

    /// Every well-formed request, in order of arrival.
    pub fn all_requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared).records.clone()
    }

    /// Connections accepted (TCP level, including failed TLS handshakes).
    pub fn connection_count(&self) -> usize {
        lock(&self.shared).connections
    }

    /// TLS handshakes that failed on the server side (e.g. no client
    /// certificate under mTLS, or a client that did not trust the server).
    pub fn tls_handshake_failures(&self) -> usize {
        lock(&self.shared).tls_failures
    }

    /// Malformed requests answered with 400.
    pub fn bad_request_count(&self) -> usize {
        lock(&self.shared).bad_requests
    }

    /// Forgets recorded requests and served byte counts (resources and faults stay).
    pub fn reset_records(&self) {
        let mut s = lock(&self.shared);
        s.records.clear();
        s.served.clear();
    }
}

// ---------------------------------------------------------------------------
// Connection handling
// ---------------------------------------------------------------------------

async fn accept_loop(
    listener: TcpListener,
    shared: SharedState,
    options: ServerOptions,
    acceptor: Option<TlsAcceptor>,
) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let tcp = match listener.accept().await {
            Ok((tcp, _peer)) => tcp,
            Err(_) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let id = {
            let mut s = lock(&shared);
            s.connections += 1;
            s.connections
        };
        let shared = shared.clone();
        let options = options.clone();
        match acceptor.clone() {
            None => {
                connections.spawn(serve_connection(tcp, id, false, shared, options));
            }
            Some(acceptor) => {
                connections.spawn(async move {
                    match acceptor.accept(tcp).await {
                        Ok(tls) => {
                            let client_cert = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .is_some_and(|c| !c.is_empty());
                            serve_connection(tls, id, client_cert, shared, options).await;
                        }
                        Err(_) => lock(&shared).tls_failures += 1,
                    }
                });
            }
        }
    }
}

/// What to do with the connection after a response.
enum After {
    KeepAlive,
    /// Orderly close: flush, TLS close_notify, FIN.
    Close,
    /// Drop the socket as it is.
    Abort,
}

async fn serve_connection<S>(
    mut stream: S,
    connection: usize,
    client_cert: bool,
    shared: SharedState,
    options: ServerOptions,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    loop {
        let request = match read_request(&mut stream, &mut buf).await {
            ReadOutcome::Request(r) => r,
            ReadOutcome::Closed => return,
            ReadOutcome::Bad(reason) => {
                lock(&shared).bad_requests += 1;
                let head = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reason}\n",
                    reason.len() + 1
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.shutdown().await;
                return;
            }
        };
        let ctx = Ctx {
            shared: &shared,
            options: &options,
            connection,
            client_cert,
        };
        match respond(&mut stream, request, &ctx).await {
            Ok(After::KeepAlive) => continue,
            Ok(After::Close) => {
                let _ = stream.flush().await;
                let _ = stream.shutdown().await;
                return;
            }
            Ok(After::Abort) | Err(_) => return,
        }
    }
}

struct Request {
    method: String,
    target: String,
    path: String,
    version: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    fn wants_keep_alive(&self) -> bool {
        let close = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        self.version == "HTTP/1.1" && !close
    }
}

enum ReadOutcome {
    Request(Request),
    /// EOF or I/O error before a complete request: nothing to answer.
    Closed,
    Bad(&'static str),
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 8192];
    match stream.read(&mut tmp).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> ReadOutcome {
    loop {
        // Empty lines before a request line are to be ignored (RFC 9112 2.2).
        let blank = buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        buf.drain(..blank);
        if let Some(end) = find_head_end(buf) {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            let request = match parse_head(&head[..end]) {
                Ok(r) => r,
                Err(reason) => return ReadOutcome::Bad(reason),
            };
            if request.header("transfer-encoding").is_some() {
                return ReadOutcome::Bad("request bodies with Transfer-Encoding are not supported");
            }
            if let Some(value) = request.header("content-length") {
                let Ok(len) = value.trim().parse::<u64>() else {
                    return ReadOutcome::Bad("invalid Content-Length");
                };
                if len > MAX_REQUEST_BODY {
                    return ReadOutcome::Bad("request body too large");
                }
                let len = len as usize;
                while buf.len() < len {
                    if !read_more(stream, buf).await {
                        return ReadOutcome::Closed;
                    }
                }
                buf.drain(..len);
            }
            return ReadOutcome::Request(request);
        }
        if buf.len() > MAX_HEAD {
            return ReadOutcome::Bad("request head too large");
        }
        if !read_more(stream, buf).await {
            return ReadOutcome::Closed;
        }
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_head(head: &[u8]) -> Result<Request, &'static str> {
    let head = std::str::from_utf8(head).map_err(|_| "request head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().ok_or("empty request")?;
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err("malformed request line");
    };
    if !is_token(method) {
        return Err("malformed method");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("unsupported HTTP version");
    }
    let origin_form = if target.starts_with('/') {
        target
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        // Absolute form: keep the path of it.
        rest.find('/').map_or("/", |i| &rest[i..])
    } else {
        return Err("malformed request target");
    };
    if origin_form
        .bytes()
        .any(|b| b.is_ascii_control() || b == b' ')
    {
        return Err("malformed request target");
    }
    let path = origin_form
        .split(['?', '#'])
        .next()
        .unwrap_or("/")
        .to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            return Err("obsolete header line folding");
        }
        let (name, value) = line.split_once(':').ok_or("malformed header line")?;
        if !is_token(name) {
            return Err("malformed header name");
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Ok(Request {
        method: method.to_string(),
        target: target.to_string(),
        path,
        version: version.to_string(),
        headers,
    })
}

/// A byte range to serve, or why none is.
#[derive(Debug, PartialEq, Eq)]
enum RangeDecision {
    Full,
    /// Inclusive first and last byte.
    Partial(u64, u64),
    Unsatisfiable,
}

/// Parses a `Range` value against a body of `total` bytes. Anything this server
/// does not serve as a single range (other units, several ranges, syntax errors)
/// is ignored as RFC 9110 allows: the full body is sent.
fn parse_range(value: &str, total: u64) -> RangeDecision {
    let Some((unit, spec)) = value.trim().split_once('=') else {
        return RangeDecision::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeDecision::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeDecision::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        if !digits(last) {
            return RangeDecision::Full;
        }
        let Ok(n) = last.parse::<u64>() else {
            return RangeDecision::Full;
        };
        if n == 0 || total == 0 {
            return RangeDecision::Unsatisfiable;
        }
        return RangeDecision::Partial(total - n.min(total), total - 1);
    }
    if !digits(first) || !(last.is_empty() || digits(last)) {
        return RangeDecision::Full;
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeDecision::Unsatisfiable;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        // A last byte past u64 means "to the end".
        last.parse::<u64>().unwrap_or(u64::MAX)
    };
    if end < start {
        return RangeDecision::Full;
    }
    if start >= total {
        return RangeDecision::Unsatisfiable;
    }
    RangeDecision::Partial(start, end.min(total - 1))
}

/// Whether an `If-Range` value still names the current representation.
fn if_range_matches(value: &str, resource: &Resource) -> bool {
    let value = value.trim();
    if value.starts_with("W/") {
        return false; // weak validators never match If-Range
    }
    if value.starts_with('"') {
        return resource
            .etag
            .as_deref()
            .is_some_and(|etag| !etag.starts_with("W/") && etag == value);
    }
    match (httpdate::parse_http_date(value), resource.last_modified) {
        (Ok(date), Some(last_modified)) => {
            // Compare at HTTP-date (second) resolution.
            let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok();
            secs(date) == secs(last_modified)
        }
        _ => false,
    }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

struct Ctx<'a> {
    shared: &'a SharedState,
    options: &'a ServerOptions,
    connection: usize,
    client_cert: bool,
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    keep_alive: bool,
}

impl Head {
    fn new(status: u16, keep_alive: bool) -> Self {
        Head {
            status,
            headers: vec![
                ("Server".into(), "fota-test-server".into()),
                ("Date".into(), http_date(SystemTime::now())),
            ],
            keep_alive,
        }
    }

    fn add(&mut self, name: &str, value: impl Into<String>) {
        self.headers.push((name.to_string(), value.into()));
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        for (name, value) in &self.headers {
            out.push_str(name);
            out.push_str(": ");
            out.push_str(value);
            out.push_str("\r\n");
        }
        out.push_str(if self.keep_alive {
            "Connection: keep-alive\r\n"
        } else {
            "Connection: close\r\n"
        });
        out.push_str("\r\n");
        out.into_bytes()
    }

    fn after(&self) -> After {
        if self.keep_alive {
            After::KeepAlive
        } else {
            After::Close
        }
    }
}

fn set_status(shared: &SharedState, seq: usize, status: u16) {
    if let Some(r) = lock(shared).records.get_mut(seq) {
        r.status = status;
    }
}

/// Sends a short text response (errors, redirects) with `Content-Length`.
async fn send_simple<S: AsyncWrite + Unpin>(
    stream: &mut S,
    mut head: Head,
    head_only: bool,
) -> std::io::Result<After> {
    let body = format!("{} {}\n", head.status, reason_phrase(head.status));
    head.add("Content-Type", "text/plain");
    head.add("Content-Length", body.len().to_string());
    let mut out = head.encode();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(head.after())
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    request: Request,
    ctx: &Ctx<'_>,
) -> std::io::Result<After> {
    let keep_alive = ctx.options.keep_alive && request.wants_keep_alive();
    let Request {
        method,
        target,
        path,
        version,
        headers,
    } = request;
    let range_header = header_value(&headers, "range").map(str::to_string);
    let if_range_header = header_value(&headers, "if-range").map(str::to_string);

    let (faults, resource, seq) = {
        let mut s = lock(ctx.shared);
        let faults = s
            .faults
            .get_mut(&path)
            .map(FaultPlan::next)
            .unwrap_or_default();
        let resource = s.resources.get(&path).cloned();
        let seq = s.records.len();
        s.records.push(RecordedRequest {
            seq,
            connection: ctx.connection,
            method: method.clone(),
            target,
            path: path.clone(),
            version,
            headers,
            at: Instant::now(),
            status: 0,
            body_bytes: 0,
            client_cert: ctx.client_cert,
        });
        (faults, resource, seq)
    };

    if let Some(delay) = faults.delay_headers {
        tokio::time::sleep(delay).await;
    }
    let head_only = method == "HEAD";
    let with_extra = |mut head: Head| {
        for (name, value) in &faults.extra_headers {
            head.add(name, value.clone());
        }
        head
    };

    if let Some((code, location)) = &faults.redirect {
        set_status(ctx.shared, seq, *code);
        let mut head = Head::new(*code, keep_alive);
        head.add("Location", location.clone());
        return send_simple(stream, with_extra(head), head_only).await;
    }
    if let Some(code) = faults.status {
        set_status(ctx.shared, seq, code);
        let mut head = Head::new(code, keep_alive);
        if let Some(retry_after) = &faults.retry_after {
            head.add("Retry-After", retry_after.clone());
        }
        return send_simple(stream, with_extra(head), head_only).await;
    }
    let Some(resource) = resource else {
        set_status(ctx.shared, seq, 404);
        return send_simple(stream, with_extra(Head::new(404, keep_alive)), head_only).await;
    };
    if method != "GET" && method != "HEAD" {
        set_status(ctx.shared, seq, 405);
        let mut head = Head::new(405, keep_alive);
        head.add("Allow", "GET, HEAD");
        return send_simple(stream, with_extra(head), head_only).await;
    }

    let total = resource.content.len();
    let mut decision = match &range_header {
        Some(value) if !faults.ignore_range => parse_range(value, total),
        _ => RangeDecision::Full,
    };
    if let (Some(value), RangeDecision::Partial(..) | RangeDecision::Unsatisfiable) =
        (&if_range_header, &decision)
        && !if_range_matches(value, &resource)
    {
        decision = RangeDecision::Full;
    }

    let (status, start, end) = match decision {
        RangeDecision::Full => (200, 0, total),
        RangeDecision::Partial(first, last) => (206, first, last + 1),
        RangeDecision::Unsatisfiable => {
            set_status(ctx.shared, seq, 416);
            let mut head = Head::new(416, keep_alive);
            head.add("Content-Range", format!("bytes */{total}"));
            return send_simple(stream, with_extra(head), head_only).await;
        }
    };
    set_status(ctx.shared, seq, status);

    let close_delimited = faults.framing == Framing::CloseDelimited;
    let mut head = Head::new(status, keep_alive && !close_delimited);
    head.add("Content-Type", "application/octet-stream");
    head.add("Accept-Ranges", "bytes");
    if let Some(etag) = &resource.etag {
        head.add("ETag", etag.clone());
    }
    if let Some(last_modified) = resource.last_modified {
        head.add("Last-Modified", http_date(last_modified));
    }
    if status == 206 {
        head.add(
            "Content-Range",
            format!("bytes {start}-{}/{total}", end - 1),
        );
    }
    match faults.framing {
        Framing::ContentLength => head.add("Content-Length", (end - start).to_string()),
        Framing::Chunked => head.add("Transfer-Encoding", "chunked"),
        Framing::CloseDelimited => {}
    }
    let head = with_extra(head);
    stream.write_all(&head.encode()).await?;
    if head_only {
        stream.flush().await?;
        return Ok(head.after());
    }

    let body = BodyPlan {
        content: &resource.content,
        start,
        end,
        faults: &faults,
        chunk_size: ctx.options.chunk_size.max(1),
        path: &path,
        seq,
        shared: ctx.shared,
    };
    if send_body(stream, body).await? {
        return Ok(After::Abort);
    }
    Ok(head.after())
}

struct BodyPlan<'a> {
    content: &'a Content,
    start: u64,
    end: u64,
    faults: &'a Faults,
    chunk_size: usize,
    path: &'a str,
    seq: usize,
    shared: &'a SharedState,
}

/// Streams the body, applying the body faults. Returns true when the
/// connection must be dropped without an orderly close.
async fn send_body<S: AsyncWrite + Unpin>(
    stream: &mut S,
    plan: BodyPlan<'_>,
) -> std::io::Result<bool> {
    let faults = plan.faults;
    let len = plan.end - plan.start;
    let chunked = faults.framing == Framing::Chunked;
    let drop_at = faults.drop_after.map(|n| n.min(len));
    let mut stall = faults.stall_after.map(|(n, d)| (n.min(len), d));
    let mut chunk_size = plan.chunk_size as u64;
    if let Some(rate) = faults.rate_limit {
        // About ten writes per second.
        chunk_size = chunk_size.min((rate / 10).max(1));
    }
    let mut buf = vec![0u8; chunk_size as usize];
    let mut sent = 0u64;
    loop {
        if let Some((at, pause)) = stall
            && sent == at
        {
            stream.flush().await?;
            tokio::time::sleep(pause).await;
            stall = None;
        }
        if drop_at == Some(sent) {
            stream.flush().await?;
            return Ok(true);
        }
        if sent == len {
            break;
        }
        let mut n = chunk_size.min(len - sent);
        if let Some((at, _)) = stall {
            n = n.min(at - sent);
        }
        if let Some(at) = drop_at {
            n = n.min(at - sent);
        }
        let chunk = &mut buf[..n as usize];
        plan.content.fill(plan.start + sent, chunk);
        if sent == 0 && faults.wrong_body {
            chunk[0] ^= 0xFF;
        }
        if chunked {
            stream.write_all(format!("{n:x}\r\n").as_bytes()).await?;
            stream.write_all(chunk).await?;
            stream.write_all(b"\r\n").await?;
        } else {
            stream.write_all(chunk).await?;
        }
        sent += n;
        {
            let mut s = lock(plan.shared);
            *s.served.entry(plan.path.to_string()).or_default() += n;
            if let Some(r) = s.records.get_mut(plan.seq) {
                r.body_bytes += n;
            }
        }
        if let Some(rate) = faults.rate_limit {
            stream.flush().await?;
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
        }
    }
    if chunked {
        stream.write_all(b"0\r\n\r\n").await?;
    }
    stream.flush().await?;
    Ok(false)
}

// ---------------------------------------------------------------------------
// TLS material
// ---------------------------------------------------------------------------

struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let key = KeyPair::generate().expect("generate CA key");
    let cert = params.self_signed(&key).expect("self-sign CA");
    Ca {
        pem: cert.pem(),
        der: cert.der().clone(),
        issuer: Issuer::new(params, key),
    }
}

struct Leaf {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

fn new_leaf(ca: &Ca, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Leaf {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2100, 1, 1);
    let key = KeyPair::generate().expect("generate leaf key");
    let cert = params.signed_by(&key, &ca.issuer).expect("sign leaf");
    Leaf {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key,
    }
}

fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

/// The PEM files of [`TlsFiles`] for a peer other than this server (e.g. an MQTT
/// broker that loads them itself).
pub fn write_tls_files(dir: &Path, setup: &TlsSetup) -> TlsFiles {
    generate_tls(dir, setup).0
}

fn generate_tls(dir: &Path, setup: &TlsSetup) -> (TlsFiles, rustls::ServerConfig) {
    let ca = new_ca("fota-agent test CA");
    let separate_client_ca = setup
        .separate_client_ca
        .then(|| new_ca("fota-agent test client CA"));
    let client_ca = separate_client_ca.as_ref().unwrap_or(&ca);
    let untrusted_ca = new_ca("fota-agent untrusted CA");

    let server = new_leaf(
        &ca,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client = new_leaf(
        client_ca,
        &["fota-agent-test-client"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let untrusted_client = new_leaf(
        &untrusted_ca,
        &["fota-agent-untrusted-client"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );

    let identity = |leaf: &Leaf| format!("{}{}", leaf.cert_pem, leaf.key.serialize_pem());
    let files = TlsFiles {
        dir: dir.to_path_buf(),
        ca_cert: write_file(dir, "ca.pem", &ca.pem),
        server_cert: write_file(dir, "server.pem", &server.cert_pem),
        server_key: write_file(dir, "server.key", &server.key.serialize_pem()),
        client_ca_cert: write_file(dir, "client-ca.pem", &client_ca.pem),
        client_cert: write_file(dir, "client.pem", &client.cert_pem),
        client_key: write_file(dir, "client.key", &client.key.serialize_pem()),
        client_identity: write_file(dir, "client-identity.pem", &identity(&client)),
        untrusted_ca_cert: write_file(dir, "untrusted-ca.pem", &untrusted_ca.pem),
        untrusted_client_cert: write_file(dir, "untrusted-client.pem", &untrusted_client.cert_pem),
        untrusted_client_key: write_file(
            dir,
            "untrusted-client.key",
            &untrusted_client.key.serialize_pem(),
        ),
        untrusted_client_identity: write_file(
            dir,
            "untrusted-client-identity.pem",
            &identity(&untrusted_client),
        ),
    };

    // An explicit provider, so the config does not depend on which rustls
    // crypto features other crates in the build enable.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS protocol versions");
    let builder = match setup.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Optional | ClientAuth::Required => {
            let mut roots = RootCertStore::empty();
            roots.add(client_ca.der.clone()).expect("client CA root");
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if setup.client_auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().expect("client verifier"))
        }
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key.serialize_der()));
    let mut config = builder
        .with_single_cert(vec![server.cert_der.clone()], key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (files, config)
}
