//! The one download path every server source uses: HTTP(S) through reqwest with
//! rustls, streamed to `<dest>.part` while every requested digest is updated in the
//! same pass, resumed with `Range` + `If-Range` after a drop or a restart, retried
//! with backoff, and renamed into place only when size and every checksum match.
//!
//! Memory stays constant whatever the size: the network task copies the body into
//! a few pooled buffers (`pool`) that a blocking writer writes and fsyncs while
//! each digest is computed on its own thread, behind network I/O.
//!
//! Read top-down: [`Downloader::fetch`] retries [`Downloader::attempt`], which is
//! - `plan`: resume a partial download? how big? does it fit?
//! - `request`: the GET (ranged when resuming) and what its answer means;
//! - `stream`: the body written and hashed (`writer` is the disk side);
//!
//! and after a successful attempt `commit`: size and checksums checked, the file
//! renamed into place. `partial` is the record beside a partial file, `retry` the
//! backoff, `stage` the engine's own copies of local images into the same place.

mod commit;
mod limits;
mod partial;
mod plan;
mod pool;
mod request;
pub mod retry;
mod stage;
mod stream;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;

use crate::checksum::{Checksum, ChecksumAlgorithm, ChecksumError, Digests};
pub use commit::{commit_staged, replace_durably};
pub use limits::{SPACE_CHECK_EVERY, check_free_space};
pub use partial::{meta_path, part_path};
use request::Reply;
pub use stage::copy_to_part;

/// Download settings (`[source]` keys in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadConfig {
    /// PEM bundle of the CAs to trust instead of the system roots.
    pub ca_bundle: Option<PathBuf>,
    /// PEM client certificate (mTLS); the key may be in the same file.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate, if not in `client_cert`.
    pub client_key: Option<PathBuf>,
    /// Refuse `http://` URLs and redirects to them.
    pub https_only: bool,
    pub connect_timeout: Duration,
    /// No body bytes for this long: the attempt fails and is retried (resuming).
    pub stall_timeout: Duration,
    /// Attempts per download, the first included.
    pub max_attempts: u32,
    /// First backoff step; doubles per attempt up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Refuse images larger than this (before downloading when the size is known,
    /// else as soon as the body passes it). Default 1 GiB.
    pub max_image_size: Option<u64>,
    /// Keep retrying for at least this long after the last attempt that brought
    /// bytes, so a server outage of a few minutes does not lose the download.
    pub retry_budget: Duration,
    /// The whole download (every attempt and wait) ends in this time.
    pub deadline: Duration,
    /// Below this many bytes per second, measured over each `stall_timeout`
    /// window, an attempt is abandoned (and resumed); 0 disables the check.
    pub min_rate: u64,
    /// Bytes left free in the download folder whatever happens.
    pub free_space_reserve: u64,
}

/// `max_image_size` when the config does not say: no gateway image is larger,
/// and an endless body must not fill the disk.
pub const DEFAULT_MAX_IMAGE_SIZE: u64 = 1 << 30;

impl Default for DownloadConfig {
    fn default() -> Self {
        DownloadConfig {
            ca_bundle: None,
            client_cert: None,
            client_key: None,
            https_only: false,
            connect_timeout: Duration::from_secs(15),
            stall_timeout: Duration::from_secs(60),
            max_attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_image_size: Some(DEFAULT_MAX_IMAGE_SIZE),
            retry_budget: Duration::from_secs(300),
            deadline: Duration::from_secs(4 * 3600),
            min_rate: 1024,
            free_space_reserve: 16 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{0}")]
    Config(String),
    #[error("refusing {0}: https_only is set")]
    Insecure(String),
    #[error("{url}: HTTP {status}")]
    Http {
        url: String,
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    #[error("{url}: {message}")]
    Network { url: String, message: String },
    #[error("{url}: no data for {after:?} (stalled at byte {at})")]
    Stalled {
        url: String,
        after: Duration,
        at: u64,
    },
    #[error("{url}: below {min_rate} bytes/s ({got} bytes in {window:?}, at byte {at})")]
    TooSlow {
        url: String,
        min_rate: u64,
        got: u64,
        window: Duration,
        at: u64,
    },
    #[error("{url}: not done within the download deadline of {after:?}")]
    Deadline { url: String, after: Duration },
    #[error("{url}: the body passed its limit of {limit} bytes ({what})")]
    Overrun {
        url: String,
        limit: u64,
        what: &'static str,
    },
    #[error(
        "{url}: the file changed on the server (206 with validator {got:?}, asked for {sent:?}); starting over"
    )]
    Changed {
        url: String,
        sent: String,
        got: String,
    },
    #[error("{url}: connection closed after {got} of {expected} bytes")]
    Truncated {
        url: String,
        expected: u64,
        got: u64,
    },
    #[error("{url}: unusable reply: {message}")]
    Protocol { url: String, message: String },
    #[error("image of {size} bytes exceeds max_image_size {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("not enough space in {dir}: need {needed} bytes, {available} available")]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    Size { expected: u64, actual: u64 },
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{last} (gave up after {attempts} attempts)")]
    GaveUp {
        attempts: u32,
        last: Box<DownloadError>,
    },
}

impl DownloadError {
    /// Worth another attempt: the network or the server may do better next time.
    fn retryable(&self) -> bool {
        match self {
            DownloadError::Network { .. }
            | DownloadError::Stalled { .. }
            | DownloadError::TooSlow { .. }
            | DownloadError::Changed { .. }
            | DownloadError::Truncated { .. } => true,
            DownloadError::Http { status, .. } => retry::retryable_status(*status),
            _ => false,
        }
    }
}

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct DownloadRequest<'a> {
    pub url: &'a str,
    /// The final path; `<dest>.part` and `<dest>.part.json` hold the partial state.
    pub dest: &'a Path,
    /// Expected size, when the source knows it.
    pub size: Option<u64>,
    /// Expected checksums; all must match.
    pub checksums: &'a [Checksum],
    /// Digests to compute even without an expected value (for reports).
    pub also_hash: &'a [ChecksumAlgorithm],
    /// Extra headers sent with every request for this file (a server's
    /// `Authorization`); never logged.
    pub headers: &'a [(String, String)],
}

/// Called with (bytes so far, total if known).
pub type ProgressFn<'a> = &'a (dyn Fn(u64, Option<u64>) + Send + Sync);

/// The HTTP client and its settings.
#[derive(Clone)]
pub struct Downloader {
    client: reqwest::Client,
    config: DownloadConfig,
}

/// Whether `url` is an https URL, the test `https_only` makes before any
/// request (redirects are checked the same way): the scheme as a URL parser reads
/// it, so `HTTPS://` counts, and a URL that does not parse does not.
pub fn is_https(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| u.scheme() == "https")
}

fn read(path: &Path) -> Result<Vec<u8>, DownloadError> {
    std::fs::read(path).map_err(|source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    })
}

impl Downloader {
    pub fn new(config: DownloadConfig) -> Result<Downloader, DownloadError> {
        let https_only = config.https_only;
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                attempt.error("too many redirects")
            } else if https_only && attempt.url().scheme() != "https" {
                let msg = format!("refusing redirect to {}: https_only is set", attempt.url());
                attempt.error(msg)
            } else {
                attempt.follow()
            }
        });
        let client = Self::client_builder(&config)?
            .redirect(redirect)
            .build()
            .map_err(|e| DownloadError::Config(format!("HTTP client: {e}")))?;
        Ok(Downloader { client, config })
    }

    /// A client builder with these settings' TLS trust, client certificate,
    /// `https_only`, user agent and timeouts; the caller picks the redirect policy
    /// (the API client follows redirects itself, see [`crate::api`]).
    pub fn client_builder(
        config: &DownloadConfig,
    ) -> Result<reqwest::ClientBuilder, DownloadError> {
        crate::tls::install_ring();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("fota-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.stall_timeout)
            .https_only(config.https_only);
        if let Some(ca) = &config.ca_bundle {
            let certs = reqwest::Certificate::from_pem_bundle(&read(ca)?).map_err(|e| {
                DownloadError::Config(format!("{}: not a PEM CA bundle: {e}", ca.display()))
            })?;
            if certs.is_empty() {
                return Err(DownloadError::Config(format!(
                    "{}: no certificate in the CA bundle",
                    ca.display()
                )));
            }
            builder = builder.tls_certs_only(certs);
        }
        if let Some(cert) = &config.client_cert {
            let mut pem = read(cert)?;
            if let Some(key) = &config.client_key {
                pem.push(b'\n');
                pem.extend(read(key)?);
            }
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                DownloadError::Config(format!(
                    "{}: not a PEM client certificate and key: {e}",
                    cert.display()
                ))
            })?;
            builder = builder.identity(identity);
        }
        Ok(builder)
    }

    pub fn config(&self) -> &DownloadConfig {
        &self.config
    }

    /// The HTTP client with these settings (TLS roots, client certificate,
    /// `https_only`, timeouts), for a source's own API calls to the same server.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Fetches `req.url` to `req.dest`, resuming a partial download left by an
    /// earlier attempt or process, and returns the digests of the verified file.
    pub async fn fetch(
        &self,
        req: &DownloadRequest<'_>,
        progress: ProgressFn<'_>,
    ) -> Result<Digests, DownloadError> {
        if self.config.https_only && !is_https(req.url) {
            return Err(DownloadError::Insecure(req.url.to_string()));
        }
        if let (Some(size), Some(max)) = (req.size, self.config.max_image_size)
            && size > max
        {
            return Err(DownloadError::TooLarge { size, max });
        }
        let deadline = self.config.deadline;
        match tokio::time::timeout(deadline, self.retry(req, progress)).await {
            Ok(result) => result,
            Err(_) => Err(DownloadError::Deadline {
                url: req.url.to_string(),
                after: deadline,
            }),
        }
    }

    /// Attempts until one succeeds, an error is final, or both `max_attempts`
    /// and the retry budget (time since the last attempt that brought bytes)
    /// are spent.
    async fn retry(
        &self,
        req: &DownloadRequest<'_>,
        progress: ProgressFn<'_>,
    ) -> Result<Digests, DownloadError> {
        let furthest = std::sync::atomic::AtomicU64::new(0);
        let track = |done: u64, total: Option<u64>| {
            furthest.fetch_max(done, std::sync::atomic::Ordering::Relaxed);
            progress(done, total);
        };
        let mut attempt = 0;
        let mut budget = limits::RetryBudget::new(self.config.retry_budget);
        loop {
            attempt += 1;
            let before = furthest.load(std::sync::atomic::Ordering::Relaxed);
            let err = match self.attempt(req, &track).await {
                Ok(digests) => return commit::commit(req, digests),
                Err(e) => e,
            };
            if !err.retryable() {
                return Err(err);
            }
            if furthest.load(std::sync::atomic::Ordering::Relaxed) > before {
                budget.progressed();
            }
            let left = budget.left();
            if attempt >= self.config.max_attempts && left.is_zero() {
                return Err(DownloadError::GaveUp {
                    attempts: attempt,
                    last: Box::new(err),
                });
            }
            let wait = match &err {
                DownloadError::Http {
                    retry_after: Some(w),
                    ..
                } => *w,
                _ => retry::backoff(attempt, self.config.backoff_base, self.config.backoff_max),
            };
            // Past max_attempts only the budget is left to spend; do not oversleep it.
            let wait = if attempt >= self.config.max_attempts {
                wait.min(left)
            } else {
                wait
            };
            tracing::warn!(url = %req.url, attempt, "download attempt failed: {err}; retrying in {wait:?}");
            tokio::time::sleep(wait).await;
        }
    }

    /// One HTTP exchange: plan where to start, request, stream the body to the
    /// partial file; returns the digests of the whole partial file.
    async fn attempt(
        &self,
        req: &DownloadRequest<'_>,
        progress: ProgressFn<'_>,
    ) -> Result<Digests, DownloadError> {
        let plan = plan::plan(self, req).await?;
        match request::request(self, req, &plan).await? {
            // Everything was already here; verify what is on disk.
            Reply::Complete => writer::hash_file(&part_path(req.dest), &plan.algorithms).await,
            Reply::Body(body) => stream::stream(self, req, body, &plan.algorithms, progress).await,
        }
    }
}
