//! The one download path every server source uses: HTTP(S) through reqwest with
//! rustls, streamed to `<dest>.part` while every requested digest is updated in the
//! same pass, resumed with `Range` + `If-Range` after a drop or a restart, retried
//! with backoff, and renamed into place only when size and every checksum match.
//!
//! Memory stays constant whatever the size: the network task hands chunks through
//! a small bounded queue to a blocking writer that writes, hashes and periodically
//! fsyncs, so hashing runs on the second core behind network I/O.

mod partial;
pub mod retry;
mod writer;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};

use crate::checksum::{Checksum, ChecksumAlgorithm, ChecksumError, Digests, MultiHasher};
use partial::Partial;
pub use partial::{meta_path, part_path};

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
    /// Refuse images larger than this (before downloading when the size is known).
    pub max_image_size: Option<u64>,
}

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
            max_image_size: None,
        }
    }
}

/// The longest `Retry-After` honoured; a server asking for more gets retried then.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// Space kept free in the state directory beyond the image itself.
const FREE_SPACE_MARGIN: u64 = 1 << 20;

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
        if self.config.https_only && !req.url.starts_with("https://") {
            return Err(DownloadError::Insecure(req.url.to_string()));
        }
        if let (Some(size), Some(max)) = (req.size, self.config.max_image_size)
            && size > max
        {
            return Err(DownloadError::TooLarge { size, max });
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.attempt(req, progress).await {
                Ok(digests) => return self.finish(req, digests),
                Err(e) => e,
            };
            if !err.retryable() {
                return Err(err);
            }
            if attempt >= self.config.max_attempts {
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
            tracing::warn!(url = %req.url, attempt, "download attempt failed: {err}; retrying in {wait:?}");
            tokio::time::sleep(wait).await;
        }
    }

    /// Checks size and checksums; renames into place or discards.
    fn finish(
        &self,
        req: &DownloadRequest<'_>,
        digests: Digests,
    ) -> Result<Digests, DownloadError> {
        let checked = match req.size {
            Some(expected) if expected != digests.length => Err(DownloadError::Size {
                expected,
                actual: digests.length,
            }),
            _ => digests.verify(req.checksums).map_err(DownloadError::from),
        };
        if let Err(e) = checked {
            partial::discard(req.dest);
            return Err(e);
        }
        let part = part_path(req.dest);
        std::fs::rename(&part, req.dest).map_err(|source| DownloadError::Io {
            path: req.dest.to_path_buf(),
            source,
        })?;
        if let Some(dir) = req.dest.parent() {
            let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
        }
        let _ = std::fs::remove_file(meta_path(req.dest));
        Ok(digests)
    }

    /// One HTTP exchange: resume or start, stream the body to the partial file.
    async fn attempt(
        &self,
        req: &DownloadRequest<'_>,
        progress: ProgressFn<'_>,
    ) -> Result<Digests, DownloadError> {
        let part = part_path(req.dest);
        let algorithms: Vec<ChecksumAlgorithm> = req
            .checksums
            .iter()
            .map(|c| c.algorithm)
            .chain(req.also_hash.iter().copied())
            .collect();
        let mut resume = partial::load(req.dest)
            .filter(|p| p.url == req.url && p.validator().is_some())
            .map(|p| {
                let on_disk = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
                let trusted = p.trusted_len(on_disk);
                (p, trusted)
            })
            .filter(|(_, len)| *len > 0);
        if resume.is_none() {
            partial::discard(req.dest);
        }

        let mut total = req.size.or(resume.as_ref().and_then(|(p, _)| p.total));
        if total.is_none() && resume.is_none() {
            total = self.head_length(req.url, req.headers).await;
        }
        self.check_room(req.dest, total, resume.as_ref().map_or(0, |(_, l)| *l))?;

        let mut request = self.client.get(req.url);
        for (name, value) in req.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some((p, len)) = &resume {
            request = request
                .header(header::RANGE, format!("bytes={len}-"))
                .header(header::IF_RANGE, p.validator().unwrap_or_default());
        }
        let response = request.send().await.map_err(|e| network(req.url, e))?;
        let status = response.status();
        let url = req.url.to_string();
        let start = match (status, &resume) {
            (StatusCode::PARTIAL_CONTENT, Some((_, len))) => {
                let (from, all) =
                    content_range(response.headers()).ok_or_else(|| DownloadError::Protocol {
                        url: url.clone(),
                        message: "206 without a valid Content-Range".into(),
                    })?;
                if from != *len {
                    partial::discard(req.dest);
                    return Err(DownloadError::Protocol {
                        url,
                        message: format!("asked for bytes from {len}, got them from {from}"),
                    });
                }
                total = all.or(total);
                from
            }
            (StatusCode::OK, _) => {
                if resume.is_some() {
                    tracing::info!(url = %req.url, "server sent the whole file (changed, or no range support): starting over");
                }
                resume = None;
                total = response.content_length().or(req.size);
                0
            }
            (StatusCode::RANGE_NOT_SATISFIABLE, Some((p, len))) if p.total == Some(*len) => {
                // Everything was already here; verify what is on disk.
                return writer::hash_file(&part, &algorithms).await;
            }
            (s, _) if s.is_success() => {
                return Err(DownloadError::Protocol {
                    url,
                    message: format!("unexpected status {s}"),
                });
            }
            (s, _) => {
                if s == StatusCode::RANGE_NOT_SATISFIABLE {
                    partial::discard(req.dest);
                }
                let retry_after = response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry::retry_after(v, SystemTime::now(), MAX_RETRY_AFTER));
                return Err(DownloadError::Http {
                    url,
                    status: s,
                    retry_after,
                });
            }
        };
        if let (Some(size), Some(max)) = (total, self.config.max_image_size)
            && size > max
        {
            partial::discard(req.dest);
            return Err(DownloadError::TooLarge { size, max });
        }
        if let (Some(expected), Some(announced)) = (req.size, total)
            && expected != announced
        {
            return Err(DownloadError::Size {
                expected,
                actual: announced,
            });
        }

        let record = Partial {
            url: req.url.to_string(),
            etag: header_str(response.headers(), header::ETAG),
            last_modified: header_str(response.headers(), header::LAST_MODIFIED),
            total,
            durable: if resume.is_some() { start } else { 0 },
            boot_id: partial::boot_id(),
        };
        partial::save(req.dest, &record).map_err(|source| DownloadError::Io {
            path: meta_path(req.dest),
            source,
        })?;

        // Digests of what is already on disk, then the rest as it arrives.
        let hasher = if start > 0 {
            writer::hash_prefix(&part, start, &algorithms).await?
        } else {
            MultiHasher::new(algorithms.iter().copied())
        };
        let sink = writer::Writer::start(req.dest.to_path_buf(), start, hasher, record)?;
        let mut received = start;
        progress(received, total);
        let mut body = response.bytes_stream();
        let stall = self.config.stall_timeout;
        let outcome = loop {
            let next = match tokio::time::timeout(stall, body.next()).await {
                Err(_) => {
                    break Err(DownloadError::Stalled {
                        url: url.clone(),
                        after: stall,
                        at: received,
                    });
                }
                Ok(n) => n,
            };
            match next {
                None => break Ok(()),
                Some(Err(e)) => break Err(network(&url, e)),
                Some(Ok(chunk)) => {
                    received += chunk.len() as u64;
                    if let Some(max) = self.config.max_image_size
                        && received > max
                    {
                        break Err(DownloadError::TooLarge {
                            size: received,
                            max,
                        });
                    }
                    if sink.send(chunk).await.is_err() {
                        // The writer stopped; `finish` below says why.
                        break Ok(());
                    }
                    progress(received, total);
                }
            }
        };
        // A disk error is the root cause of anything that follows it.
        let hasher = match (sink.finish().await, outcome) {
            (Err(disk), _) => return Err(disk),
            (Ok(_), Err(e)) => {
                if matches!(e, DownloadError::TooLarge { .. }) {
                    partial::discard(req.dest);
                }
                return Err(e);
            }
            (Ok(h), Ok(())) => h,
        };
        if let Some(expected) = total
            && hasher.length() < expected
        {
            return Err(DownloadError::Truncated {
                url,
                expected,
                got: hasher.length(),
            });
        }
        Ok(hasher.finish())
    }

    /// The size from a HEAD request (the ESP8266 FOTA guide's custom-server rule);
    /// `None` when the server does not say.
    async fn head_length(&self, url: &str, headers: &[(String, String)]) -> Option<u64> {
        let mut request = self.client.head(url);
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = request.send().await.ok()?;
        if !response.status().is_success() {
            return None;
        }
        header_str(response.headers(), header::CONTENT_LENGTH)?
            .parse()
            .ok()
    }

    /// Refuses before downloading when the image cannot fit.
    fn check_room(&self, dest: &Path, total: Option<u64>, have: u64) -> Result<(), DownloadError> {
        let Some(total) = total else {
            return Ok(());
        };
        if let Some(max) = self.config.max_image_size
            && total > max
        {
            return Err(DownloadError::TooLarge { size: total, max });
        }
        let dir = dest.parent().unwrap_or(Path::new("."));
        let Ok(stat) = nix::sys::statvfs::statvfs(dir) else {
            return Ok(());
        };
        // fsblkcnt_t and c_ulong are 32-bit on armhf gateways.
        #[allow(clippy::unnecessary_cast)]
        let available =
            (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64);
        let needed = total.saturating_sub(have);
        if needed.saturating_add(FREE_SPACE_MARGIN) > available {
            return Err(DownloadError::NoSpace {
                dir: dir.to_path_buf(),
                needed,
                available,
            });
        }
        Ok(())
    }
}

fn network(url: &str, e: reqwest::Error) -> DownloadError {
    // The chain carries the useful part ("connection refused", "certificate ...").
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    DownloadError::Network {
        url: url.to_string(),
        message,
    }
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `Content-Range: bytes FROM-TO/TOTAL` → (FROM, TOTAL if not `*`).
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?;
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (from, _to) = range.split_once('-')?;
    Some((from.trim().parse().ok()?, total.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_RANGE, "bytes 100-199/1000".parse().unwrap());
        assert_eq!(content_range(&h), Some((100, Some(1000))));
        h.insert(header::CONTENT_RANGE, "bytes 5-9/*".parse().unwrap());
        assert_eq!(content_range(&h), Some((5, None)));
        h.insert(header::CONTENT_RANGE, "items 1-2/3".parse().unwrap());
        assert_eq!(content_range(&h), None);
    }
}
