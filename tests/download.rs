//! The download engine against a real HTTP(S) server on 127.0.0.1 that misbehaves
//! on demand (tests/support/http_server.rs).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fota_agent::checksum::{Checksum, ChecksumAlgorithm};
use fota_agent::download::{DownloadConfig, DownloadError, DownloadRequest, Downloader};
use support::http_server::*;

const LEN: u64 = 3 << 20;

fn config() -> DownloadConfig {
    DownloadConfig {
        stall_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_secs(5),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        max_attempts: 4,
        retry_budget: Duration::ZERO,
        ..DownloadConfig::default()
    }
}

fn sha256(seed: u8, len: u64) -> Vec<Checksum> {
    vec![Checksum::new(ChecksumAlgorithm::Sha256, &synthetic_sha256_hex(seed, len)).unwrap()]
}

struct Run {
    dir: tempfile::TempDir,
    progress: Mutex<Vec<(u64, Option<u64>)>>,
}

impl Run {
    fn new() -> Run {
        Run {
            dir: tempfile::tempdir().unwrap(),
            progress: Mutex::new(Vec::new()),
        }
    }

    fn dest(&self) -> PathBuf {
        self.dir.path().join("image.bin")
    }

    async fn fetch(
        &self,
        downloader: &Downloader,
        url: &str,
        checksums: &[Checksum],
        size: Option<u64>,
    ) -> Result<(), DownloadError> {
        let dest = self.dest();
        let request = DownloadRequest {
            url,
            dest: &dest,
            size,
            checksums,
            also_hash: &[ChecksumAlgorithm::Md5],
            headers: &[],
        };
        let report = |done, total| self.progress.lock().unwrap().push((done, total));
        downloader.fetch(&request, &report).await.map(|_| ())
    }

    fn assert_file(&self, seed: u8, len: u64) {
        let got = std::fs::read(self.dest()).unwrap();
        assert_eq!(got.len() as u64, len);
        assert!(got == synthetic_bytes(seed, 0..len), "content differs");
        assert_no_partial(&self.dest());
    }
}

fn assert_no_partial(dest: &Path) {
    for suffix in [".part", ".part.json"] {
        let p = PathBuf::from(format!("{}{suffix}", dest.display()));
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

async fn server() -> TestServer {
    let s = TestServer::start(ServerOptions::default()).await;
    s.add_synthetic("/fw.bin", LEN, 7);
    s
}

#[tokio::test]
async fn downloads_and_verifies_every_checksum_in_one_pass() {
    let s = server().await;
    let run = Run::new();
    let mut sums = sha256(7, LEN);
    sums.push(Checksum::new(ChecksumAlgorithm::Md5, &synthetic_md5_hex(7, LEN)).unwrap());
    run.fetch(
        &Downloader::new(config()).unwrap(),
        &s.url("/fw.bin"),
        &sums,
        Some(LEN),
    )
    .await
    .unwrap();
    run.assert_file(7, LEN);
    assert_eq!(s.served_body_bytes("/fw.bin"), LEN);
    let progress = run.progress.lock().unwrap();
    assert_eq!(progress.last(), Some(&(LEN, Some(LEN))));
    assert!(progress.windows(2).all(|w| w[0].0 <= w[1].0));
    let ua = s.requests("/fw.bin")[0]
        .user_agent()
        .unwrap_or("")
        .to_string();
    assert!(ua.starts_with("fota-agent/"), "{ua}");
}

#[tokio::test]
async fn dropped_connection_resumes_with_range_and_if_range() {
    let s = server().await;
    s.push_faults("/fw.bin", Faults::new().drop_after(1_000_000), 1);
    let run = Run::new();
    run.fetch(
        &Downloader::new(config()).unwrap(),
        &s.url("/fw.bin"),
        &sha256(7, LEN),
        Some(LEN),
    )
    .await
    .unwrap();
    run.assert_file(7, LEN);
    let gets: Vec<_> = s
        .requests("/fw.bin")
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(gets.len(), 2);
    let resumed = &gets[1];
    let range = resumed.range().unwrap();
    let from: u64 = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .unwrap()
        .parse()
        .unwrap();
    assert!(from > 0 && from <= 1_000_000, "{range}");
    assert_eq!(resumed.if_range(), s.etag("/fw.bin").as_deref());
    assert_eq!(resumed.status, 206);
    // Nothing already on disk was fetched twice.
    assert_eq!(resumed.body_bytes, LEN - from);
}

#[tokio::test]
async fn stalled_transfer_is_abandoned_and_resumed() {
    let s = server().await;
    s.push_faults(
        "/fw.bin",
        Faults::new().stall_after(500_000, Duration::from_secs(30)),
        1,
    );
    let run = Run::new();
    run.fetch(
        &Downloader::new(config()).unwrap(),
        &s.url("/fw.bin"),
        &sha256(7, LEN),
        Some(LEN),
    )
    .await
    .unwrap();
    run.assert_file(7, LEN);
    // A client that sat out the stall would have made one request, not two.
    let statuses: Vec<u16> = s.requests("/fw.bin").iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 206]);
    // Everything received before the stall was written, although it did not
    // fill the writer's last buffer: nothing is fetched twice.
    assert_eq!(s.requests("/fw.bin")[1].range(), Some("bytes=500000-"));
}

#[tokio::test]
async fn server_ignoring_range_restarts_cleanly() {
    let s = server().await;
    s.push_faults("/fw.bin", Faults::new().drop_after(800_000), 1);
    s.push_faults("/fw.bin", Faults::new().ignore_range(), 1);
    let run = Run::new();
    run.fetch(
        &Downloader::new(config()).unwrap(),
        &s.url("/fw.bin"),
        &sha256(7, LEN),
        Some(LEN),
    )
    .await
    .unwrap();
    run.assert_file(7, LEN);
    let reqs = s.requests("/fw.bin");
    assert_eq!(reqs[1].status, 200);
    assert!(reqs[1].range().is_some());
}

#[tokio::test]
async fn changed_file_restarts_from_zero() {
    let s = server().await;
    s.push_faults("/fw.bin", Faults::new().drop_after(600_000), 1);
    let run = Run::new();
    let downloader = Downloader::new(DownloadConfig {
        max_attempts: 1,
        ..config()
    })
    .unwrap();
    let err = run
        .fetch(&downloader, &s.url("/fw.bin"), &[], Some(LEN))
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::GaveUp { .. }), "{err}");
    // A new build appears under the same URL: new ETag, new bytes.
    s.add_synthetic("/fw.bin", LEN + 5, 9);
    run.fetch(
        &Downloader::new(config()).unwrap(),
        &s.url("/fw.bin"),
        &sha256(9, LEN + 5),
        None,
    )
    .await
    .unwrap();
    run.assert_file(9, LEN + 5);
    let last = s.requests("/fw.bin").pop().unwrap();
    assert!(last.if_range().is_some());
    assert_eq!(last.status, 200, "If-Range did not match: full body");
}

#[tokio::test]
async fn retries_5xx_and_honours_retry_after() {
    let s = server().await;
    s.push_faults("/fw.bin", Faults::new().status(503), 1);
    s.push_faults("/fw.bin", Faults::new().status(429).retry_after("1"), 1);
    let run = Run::new();
    let started = Instant::now();
    run.fetch(
        &Downloader::new(config()).unwrap(),
        &s.url("/fw.bin"),
        &sha256(7, LEN),
        Some(LEN),
    )
    .await
    .unwrap();
    run.assert_file(7, LEN);
    // The 429 asked for a second; backoff alone would be ≤ 100 ms.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(s.request_count("/fw.bin"), 3);
}

#[tokio::test]
async fn client_errors_are_not_retried_and_attempts_are_bounded() {
    let s = server().await;
    s.set_faults("/gone.bin", Faults::new().status(404));
    let run = Run::new();
    let d = Downloader::new(config()).unwrap();
    let err = run
        .fetch(&d, &s.url("/gone.bin"), &[], None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("HTTP 404"), "{err}");
    assert_eq!(
        s.requests("/gone.bin")
            .iter()
            .filter(|r| r.method == "GET")
            .count(),
        1
    );

    s.set_faults("/fw.bin", Faults::new().status(500));
    let err = run
        .fetch(&d, &s.url("/fw.bin"), &[], Some(LEN))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("HTTP 500") && err.to_string().contains("after 4 attempts"),
        "{err}"
    );
    assert_eq!(s.request_count("/fw.bin"), 4);
}

/// Every checksum the source gives must match: the right SHA-256 first does not
/// excuse a wrong MD5 after it.
#[tokio::test]
async fn a_right_first_checksum_does_not_excuse_a_wrong_second() {
    let s = server().await;
    let run = Run::new();
    let mut sums = sha256(7, LEN);
    sums.push(Checksum::new(ChecksumAlgorithm::Md5, &synthetic_md5_hex(8, LEN)).unwrap());
    let err = run
        .fetch(
            &Downloader::new(config()).unwrap(),
            &s.url("/fw.bin"),
            &sums,
            Some(LEN),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("MD5 mismatch"), "{err}");
    assert!(!run.dest().exists());
    assert_no_partial(&run.dest());
}

#[tokio::test]
async fn wrong_checksum_fails_naming_both_and_keeps_nothing() {
    let s = server().await;
    s.set_faults("/fw.bin", Faults::new().wrong_body());
    let run = Run::new();
    let expected = synthetic_sha256_hex(7, LEN);
    let err = run
        .fetch(
            &Downloader::new(config()).unwrap(),
            &s.url("/fw.bin"),
            &sha256(7, LEN),
            Some(LEN),
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("SHA-256 mismatch") && msg.contains(&expected),
        "{msg}"
    );
    assert!(!run.dest().exists());
    assert_no_partial(&run.dest());
}

#[tokio::test]
async fn body_without_content_length_uses_head_size_or_streams() {
    let s = server().await;
    s.set_faults("/fw.bin", Faults::new().no_content_length());
    let run = Run::new();
    run.fetch(
        &Downloader::new(config()).unwrap(),
        &s.url("/fw.bin"),
        &sha256(7, LEN),
        None,
    )
    .await
    .unwrap();
    run.assert_file(7, LEN);
    // HEAD first, to learn the size (the ESP8266 FOTA guide's custom-server rule).
    assert_eq!(s.requests("/fw.bin")[0].method, "HEAD");
}

/// With no length announced (chunked) a body longer or shorter than the
/// source's size never lands at `dest`, although its checksum is the one given:
/// the longer one stops at the size, the shorter one is resumed and refused.
#[tokio::test]
async fn a_body_of_the_wrong_size_is_refused() {
    let s = server().await;
    s.set_faults("/fw.bin", Faults::new().no_content_length());
    for size in [LEN - 1, LEN + 1] {
        let run = Run::new();
        let downloader = Downloader::new(config()).unwrap();
        let err = run
            .fetch(&downloader, &s.url("/fw.bin"), &sha256(7, LEN), Some(size))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("passed its limit of") || msg.contains("416"),
            "{size}: {msg}"
        );
        assert!(!run.dest().exists(), "{size}: {msg}");
    }
}

#[tokio::test]
async fn too_large_or_no_room_is_refused_before_downloading() {
    let s = server().await;
    let run = Run::new();
    let small = Downloader::new(DownloadConfig {
        max_image_size: Some(LEN - 1),
        ..config()
    })
    .unwrap();
    let err = run
        .fetch(&small, &s.url("/fw.bin"), &[], None)
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::TooLarge { .. }), "{err}");
    assert_eq!(s.served_body_bytes("/fw.bin"), 0, "refused on HEAD");

    s.add_synthetic("/huge.bin", 1 << 60, 1);
    let err = run
        .fetch(
            &Downloader::new(DownloadConfig {
                max_image_size: None,
                ..config()
            })
            .unwrap(),
            &s.url("/huge.bin"),
            &[],
            None,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not enough space"), "{err}");
    assert_eq!(s.served_body_bytes("/huge.bin"), 0);
}

#[tokio::test]
async fn tls_with_the_configured_ca_and_mtls() {
    let s = TestServer::start_tls(ServerOptions::default(), TlsSetup::mtls()).await;
    s.add_synthetic("/fw.bin", LEN, 3);
    let files = s.tls_files().clone();
    let run = Run::new();

    // System roots do not know the test CA.
    let err = run
        .fetch(
            &Downloader::new(config()).unwrap(),
            &s.url("/fw.bin"),
            &[],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // Trusted CA but no client certificate: the server refuses.
    let no_cert = Downloader::new(DownloadConfig {
        ca_bundle: Some(files.ca_cert.clone()),
        max_attempts: 1,
        ..config()
    })
    .unwrap();
    assert!(
        run.fetch(&no_cert, &s.url("/fw.bin"), &[], None)
            .await
            .is_err()
    );
    assert_eq!(s.served_body_bytes("/fw.bin"), 0);

    let mtls = Downloader::new(DownloadConfig {
        ca_bundle: Some(files.ca_cert.clone()),
        client_cert: Some(files.client_cert.clone()),
        client_key: Some(files.client_key.clone()),
        https_only: true,
        ..config()
    })
    .unwrap();
    run.fetch(&mtls, &s.url("/fw.bin"), &sha256(3, LEN), Some(LEN))
        .await
        .unwrap();
    run.assert_file(3, LEN);
}

/// A downloader with `https_only` that trusts `tls`'s test CA.
fn https_only_trusting(tls: &TestServer) -> Downloader {
    Downloader::new(DownloadConfig {
        https_only: true,
        ca_bundle: Some(tls.tls_files().ca_cert.clone()),
        ..config()
    })
    .unwrap()
}

#[tokio::test]
async fn https_only_refuses_http_and_redirects_to_it() {
    let plain = server().await;
    let tls = TestServer::start_tls(ServerOptions::default(), TlsSetup::server_only()).await;
    tls.set_faults("/fw.bin", Faults::new().redirect(302, plain.url("/fw.bin")));
    let d = https_only_trusting(&tls);
    let run = Run::new();
    let err = run
        .fetch(&d, &plain.url("/fw.bin"), &[], None)
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::Insecure(_)), "{err}");
    let err = run
        .fetch(&d, &tls.url("/fw.bin"), &[], None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("https_only"), "{err}");
    assert_eq!(plain.request_count("/fw.bin"), 0);
}

/// `https_only` reads the scheme as a URL parser does: `HTTPS://` is https and
/// is fetched, `HTTP://` is refused before any request.
#[tokio::test]
async fn https_only_reads_the_scheme_case_insensitively() {
    let plain = server().await;
    let tls = TestServer::start_tls(ServerOptions::default(), TlsSetup::server_only()).await;
    tls.add_synthetic("/fw.bin", LEN, 7);
    let d = https_only_trusting(&tls);
    let run = Run::new();
    let upper = plain.url("/fw.bin").replacen("http://", "HTTP://", 1);
    let err = run.fetch(&d, &upper, &[], None).await.unwrap_err();
    assert!(matches!(err, DownloadError::Insecure(_)), "{err}");
    assert_eq!(plain.request_count("/fw.bin"), 0);
    let upper = tls.url("/fw.bin").replacen("https://", "HTTPS://", 1);
    run.fetch(&d, &upper, &sha256(7, LEN), Some(LEN))
        .await
        .unwrap();
    run.assert_file(7, LEN);
}

/// The agent process is killed mid-download and started again: the final file is
/// byte-identical and the bytes already on disk are not fetched again.
#[tokio::test]
async fn resume_after_sigkill_of_the_agent() {
    let s = server().await;
    s.set_faults("/fw.bin", Faults::new().rate_limit(1 << 20));
    let run = Run::new();
    let dest = run.dest();
    let part = PathBuf::from(format!("{}.part", dest.display()));
    let fetch = |url: &str| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_fota-agent"));
        c.args(["fetch", url, "-o"])
            .arg(&dest)
            .args(["--sha256", &synthetic_sha256_hex(7, LEN)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c
    };
    let mut child = fetch(&s.url("/fw.bin")).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0) < 1_000_000 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap(); // SIGKILL, and reaped

    let on_disk = std::fs::metadata(&part).unwrap().len();
    assert!(on_disk < LEN);

    s.clear_faults("/fw.bin");
    let out = fetch(&s.url("/fw.bin")).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run.assert_file(7, LEN);
    let last = s.requests("/fw.bin").pop().unwrap();
    assert_eq!(last.range(), Some(format!("bytes={on_disk}-").as_str()));
    assert_eq!(last.body_bytes, LEN - on_disk);
}

/// Bounds a test that would hang on a download engine without limits.
async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("the download was not bounded")
}

#[tokio::test]
async fn a_trickling_body_fails_on_the_minimum_rate() {
    let s = server().await;
    s.set_faults("/fw.bin", Faults::new().rate_limit(1));
    let run = Run::new();
    let dl = Downloader::new(DownloadConfig {
        stall_timeout: Duration::from_secs(3),
        min_rate: 100,
        max_attempts: 1,
        ..config()
    })
    .unwrap();
    let err = bounded(run.fetch(&dl, &s.url("/fw.bin"), &[], Some(LEN)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bytes/s"), "{err}");
}

#[tokio::test]
async fn the_whole_download_has_a_deadline() {
    let s = server().await;
    s.set_faults("/fw.bin", Faults::new().rate_limit(20_000));
    let run = Run::new();
    let dl = Downloader::new(DownloadConfig {
        deadline: Duration::from_millis(500),
        min_rate: 0,
        ..config()
    })
    .unwrap();
    let err = bounded(run.fetch(&dl, &s.url("/fw.bin"), &[], Some(LEN)))
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::Deadline { .. }), "{err}");
}

#[tokio::test]
async fn retries_are_a_time_budget_that_outlasts_an_outage() {
    let s = server().await;
    s.set_faults("/fw.bin", Faults::new().status(503));
    let run = Run::new();
    let dl = Downloader::new(DownloadConfig {
        max_attempts: 2,
        retry_budget: Duration::from_secs(30),
        ..config()
    })
    .unwrap();
    let outage = async {
        // The outage ends once the agent has retried past max_attempts.
        while s.request_count("/fw.bin") < 5 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s.clear_faults("/fw.bin");
    };
    let (url, sums) = (s.url("/fw.bin"), sha256(7, LEN));
    let (result, ()) =
        bounded(async { tokio::join!(run.fetch(&dl, &url, &sums, Some(LEN)), outage) }).await;
    result.unwrap();
    run.assert_file(7, LEN);
}

#[tokio::test]
async fn a_chunked_body_stops_as_soon_as_it_passes_the_expected_size() {
    let s = TestServer::start(ServerOptions::default()).await;
    s.add_synthetic("/big.bin", 64 << 20, 3);
    s.set_faults("/big.bin", Faults::new().no_content_length());
    let run = Run::new();
    let err = bounded(run.fetch(
        &Downloader::new(config()).unwrap(),
        &s.url("/big.bin"),
        &[],
        Some(1 << 20),
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, DownloadError::Overrun { .. }), "{err}");
    assert!(s.served_body_bytes("/big.bin") < 32 << 20);
    assert_no_partial(&run.dest());
}

#[tokio::test]
async fn head_refused_then_the_get_length_is_checked_against_the_reserve() {
    let s = server().await;
    s.push_faults("/fw.bin", Faults::new().status(405), 1);
    let run = Run::new();
    let dl = Downloader::new(DownloadConfig {
        free_space_reserve: u64::MAX / 4,
        ..config()
    })
    .unwrap();
    let err = bounded(run.fetch(&dl, &s.url("/fw.bin"), &[], None))
        .await
        .unwrap_err();
    assert!(matches!(err, DownloadError::NoSpace { .. }), "{err}");
    assert_eq!(s.requests("/fw.bin")[0].method, "HEAD");
}

#[test]
fn max_image_size_defaults_to_one_gib() {
    assert_eq!(DownloadConfig::default().max_image_size, Some(1 << 30));
}
