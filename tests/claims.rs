//! One test per README / docs claim that had none through the binary or the public
//! API (issue #19): proxies, the free-space refusal, resume after a reboot,
//! rollback with `only_newer = false`, the re-check of a staged image, the status
//! socket's mode and `fota-agent-generate`. Each was checked to fail when the
//! claim is broken in `src/` (see docs/testing.md).

mod common;
mod process;
mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use fota_agent::download::{DownloadConfig, DownloadError, DownloadRequest, Downloader};
use fota_agent::model::UpdatePolicy;
use fota_agent::progress::Outcome;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use process::{agent, start_run, text};
use support::http_server::*;
use support::proxy::TestProxy;

const LEN: u64 = 256 << 10;

/// `fota-agent fetch URL -o DEST --sha256 …` of the synthetic body (seed 7,
/// LEN bytes), with `env` added to a clean environment.
async fn fetch(url: &str, dest: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = agent();
    c.args(["fetch", url, "-o"])
        .arg(dest)
        .args(["--sha256", &synthetic_sha256_hex(7, LEN), "--attempts", "1"])
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::from(c).output(),
    )
    .await
    .expect("fetch did not end")
    .unwrap()
}

fn assert_fetched(out: &Output, dest: &Path) {
    assert!(out.status.success(), "{}", text(out));
    let got = std::fs::read(dest).unwrap();
    assert!(got == synthetic_bytes(7, 0..LEN), "content differs");
}

async fn tls_server() -> TestServer {
    let s = TestServer::start_tls(ServerOptions::default(), TlsSetup::server_only()).await;
    s.add_synthetic("/fw.bin", LEN, 7);
    s
}

#[tokio::test]
async fn https_goes_through_https_proxy_as_connect() {
    let (s, proxy, dir) = (tls_server().await, TestProxy::start().await, tempdir());
    let dest = dir.path().join("fw.bin");
    let ca = s.tls_files().ca_cert.display().to_string();
    let out = fetch(
        &s.url("/fw.bin"),
        &dest,
        &["--ca-bundle", &ca, "--https-only"],
        &[("HTTPS_PROXY", &proxy.url())],
    )
    .await;
    assert_fetched(&out, &dest);
    let lines = proxy.request_lines();
    assert!(!lines.is_empty(), "the proxy was not used");
    let connect = format!("CONNECT {} HTTP/1.1", s.addr());
    assert!(lines.iter().all(|l| *l == connect), "{lines:?}");
}

#[tokio::test]
async fn no_proxy_bypasses_the_proxy() {
    let (s, proxy, dir) = (tls_server().await, TestProxy::start().await, tempdir());
    let dest = dir.path().join("fw.bin");
    let ca = s.tls_files().ca_cert.display().to_string();
    let out = fetch(
        &s.url("/fw.bin"),
        &dest,
        &["--ca-bundle", &ca],
        &[("HTTPS_PROXY", &proxy.url()), ("NO_PROXY", "127.0.0.1")],
    )
    .await;
    assert_fetched(&out, &dest);
    assert_eq!(proxy.request_lines(), Vec::<String>::new());
    assert!(s.request_count("/fw.bin") > 0);
}

#[tokio::test]
async fn plain_http_goes_through_http_proxy_in_absolute_form() {
    let s = TestServer::start(ServerOptions::default()).await;
    s.add_synthetic("/fw.bin", LEN, 7);
    let (proxy, dir) = (TestProxy::start().await, tempdir());
    let dest = dir.path().join("fw.bin");
    let out = fetch(
        &s.url("/fw.bin"),
        &dest,
        &[],
        &[("HTTP_PROXY", &proxy.url())],
    )
    .await;
    assert_fetched(&out, &dest);
    let get = format!("GET {} HTTP/1.1", s.url("/fw.bin"));
    assert!(
        proxy.request_lines().contains(&get),
        "{:?}",
        proxy.request_lines()
    );
}

/// Free bytes in `dir` as statvfs tells them.
fn free_bytes(dir: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    #[allow(clippy::unnecessary_cast)]
    let free = (st.blocks_available() as u64) * (st.fragment_size() as u64);
    free
}

/// `fetch -o fw.bin` (a bare name, in the current folder) checks the free
/// space of that folder too: an image larger than the disk is refused before
/// any byte is written.
#[tokio::test]
async fn fetch_into_the_current_folder_refuses_an_image_larger_than_the_disk() {
    let s = TestServer::start(ServerOptions::default()).await;
    let dir = tempdir();
    let size = free_bytes(dir.path()).saturating_mul(2);
    s.add_synthetic("/huge.bin", size, 7);
    let mut c = agent();
    c.current_dir(dir.path())
        .args([
            "fetch",
            &s.url("/huge.bin"),
            "-o",
            "fw.bin",
            "--attempts",
            "1",
        ])
        .args(["--max-size", &size.to_string()])
        .stdin(Stdio::null());
    let mut c = tokio::process::Command::from(c);
    // A fetch that does not check the space downloads until the timeout: it
    // must not outlive the test.
    c.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), c.output())
        .await
        .expect("fetch did not end")
        .unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not enough space"), "{}", text(&out));
    assert_eq!(
        s.served_body_bytes("/huge.bin"),
        0,
        "refused before the body"
    );
}

#[tokio::test]
async fn a_reserve_larger_than_the_free_space_refuses_before_any_byte() {
    let s = TestServer::start(ServerOptions::default()).await;
    s.add_synthetic("/fw.bin", LEN, 7);
    let dir = tempdir();
    let dest = dir.path().join("fw.bin");
    let downloader = Downloader::new(DownloadConfig {
        free_space_reserve: free_bytes(dir.path()).saturating_mul(2),
        max_attempts: 1,
        ..DownloadConfig::default()
    })
    .unwrap();
    let request = DownloadRequest {
        url: &s.url("/fw.bin"),
        dest: &dest,
        size: None,
        checksums: &[],
        also_hash: &[],
        headers: &[],
    };
    let err = downloader.fetch(&request, &|_, _| {}).await.unwrap_err();
    assert!(matches!(err, DownloadError::NoSpace { .. }), "{err}");
    assert!(err.to_string().contains("not enough space"), "{err}");
    assert_eq!(s.served_body_bytes("/fw.bin"), 0, "refused before the body");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "left files"
    );

    // The same download with no reserve succeeds: it was the reserve.
    let downloader = Downloader::new(DownloadConfig::default()).unwrap();
    downloader.fetch(&request, &|_, _| {}).await.unwrap();
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), LEN);
}

/// A partial download of `on_disk` bytes whose first `durable` bytes are the
/// real content and the rest garbage, recorded as written in boot `boot_id`.
fn partial(dest: &Path, s: &TestServer, durable: u64, on_disk: u64, boot_id: &str, garbage: bool) {
    let mut bytes = synthetic_bytes(7, 0..on_disk);
    if garbage {
        bytes[durable as usize..].fill(0xEE);
    }
    std::fs::write(format!("{}.part", dest.display()), bytes).unwrap();
    let record = serde_json::json!({
        "url": s.url("/fw.bin"),
        "etag": s.etag("/fw.bin"),
        "last_modified": null,
        "total": LEN,
        "durable": durable,
        "boot_id": boot_id,
    });
    std::fs::write(format!("{}.part.json", dest.display()), record.to_string()).unwrap();
}

fn this_boot() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_string()
}

/// The `Range` of the one GET the server saw.
fn resumed_from(s: &TestServer) -> Option<String> {
    let gets: Vec<_> = s
        .requests("/fw.bin")
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    gets[0].range().map(str::to_string)
}

#[tokio::test]
async fn after_a_reboot_only_the_fsynced_prefix_is_trusted() {
    let s = TestServer::start(ServerOptions::default()).await;
    s.add_synthetic("/fw.bin", LEN, 7);
    let dir = tempdir();
    let dest = dir.path().join("fw.bin");
    // Bytes past `durable` were in the page cache when the power went: garbage now.
    partial(&dest, &s, 64 << 10, 192 << 10, "another-boot", true);
    let out = fetch(&s.url("/fw.bin"), &dest, &[], &[]).await;
    assert_fetched(&out, &dest);
    assert_eq!(resumed_from(&s).as_deref(), Some("bytes=65536-"));
}

#[tokio::test]
async fn within_the_same_boot_every_byte_on_disk_is_trusted() {
    let s = TestServer::start(ServerOptions::default()).await;
    s.add_synthetic("/fw.bin", LEN, 7);
    let dir = tempdir();
    let dest = dir.path().join("fw.bin");
    // A killed agent: the page cache kept what was written after the last fsync.
    partial(&dest, &s, 64 << 10, 192 << 10, &this_boot(), false);
    let out = fetch(&s.url("/fw.bin"), &dest, &[], &[]).await;
    assert_fetched(&out, &dest);
    assert_eq!(resumed_from(&s).as_deref(), Some("bytes=196608-"));
}

#[tokio::test]
async fn only_newer_false_installs_an_older_version() {
    let (state, fw) = (tempdir(), tempdir());
    offer(fw.path(), "rollback", "1.0", b"old firmware", "");
    offer(fw.path(), "guarded", "1.0", b"old firmware", "");
    let (free, guarded) = (FakeDevice::new("2.0"), FakeDevice::new("2.0"));
    let mut config = device_config("r1", "rollback", UpdatePolicy::Immediate);
    config.only_newer = false;
    let engine = engine(
        state.path(),
        fw.path(),
        vec![
            (config, free.clone()),
            (
                device_config("g1", "guarded", UpdatePolicy::Immediate),
                guarded.clone(),
            ),
        ],
    );
    let results = engine.run_once().await;
    assert_eq!(results[0].outcome, Some(Outcome::Success), "{results:?}");
    assert_eq!(free.version().as_deref(), Some("1.0"));
    assert_eq!(*free.received.lock().unwrap(), b"old firmware");
    // The same offer to a device with the default is refused.
    assert_eq!(results[1].outcome, None, "{results:?}");
    assert_eq!(guarded.updates.load(Ordering::SeqCst), 0);
    assert_eq!(guarded.version().as_deref(), Some("2.0"));
}

#[tokio::test]
async fn a_staged_image_changed_on_disk_is_not_installed() {
    let (state, fw) = (tempdir(), tempdir());
    offer(fw.path(), "valve", "3.0", b"valve firmware 3.0", "");
    let dev = FakeDevice::build("2.9", true, None);
    dev.executable.store(false, Ordering::SeqCst);
    let engine = engine(
        state.path(),
        fw.path(),
        vec![(
            device_config("v1", "valve", UpdatePolicy::Background),
            dev.clone(),
        )],
    );
    engine.run_once().await;
    assert_eq!(dev.transfers.load(Ordering::SeqCst), 1);
    let staged = engine.store().downloads_dir().join("v1.img");
    assert_eq!(std::fs::read(&staged).unwrap(), b"valve firmware 3.0");

    // Same length, one byte different: only the digest can tell.
    std::fs::write(&staged, b"valve firmware 3.1").unwrap();
    dev.executable.store(true, Ordering::SeqCst);
    let results = engine.run_once().await;
    let reason = failure(results[0].outcome.as_ref().expect("an outcome"));
    assert!(
        reason.to_lowercase().contains("sha-256") || reason.contains("sha256"),
        "{reason}"
    );
    assert_eq!(
        dev.updates.load(Ordering::SeqCst),
        0,
        "the device was written"
    );
    assert_eq!(dev.version().as_deref(), Some("2.9"));
}

#[test]
fn the_status_socket_is_mode_0660() {
    let dir = tempdir();
    let d = dir.path().display();
    let socket = dir.path().join("status.sock");
    let config = dir.path().join("config.toml");
    std::fs::create_dir_all(dir.path().join("firmware")).unwrap();
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{d}/state\"\npoll_interval = \"1h\"\n\
             [source]\nkind = \"directory\"\npath = \"{d}/firmware\"\n\
             [status]\nlisten = \"off\"\nsocket = \"{}\"\n\
             [[device]]\nid = \"dev\"\ntype = \"t\"\nhandler = \"command\"\n\
             update_command = [\"/bin/false\"]\n",
            socket.display()
        ),
    )
    .unwrap();
    let mut child = start_run(&config, Stdio::null());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mode = loop {
        // The socket is chmod-ed right after bind: wait for the final mode.
        if let Ok(m) = std::fs::metadata(&socket)
            && m.file_type().is_socket()
            && m.permissions().mode() & 0o777 == 0o660
        {
            break m.permissions().mode() & 0o777;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let m = std::fs::metadata(&socket).map(|m| m.permissions().mode() & 0o777);
            let _ = child.kill();
            let _ = child.wait();
            panic!("no socket of mode 0660: {m:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(mode, 0o660);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(child.wait().unwrap().success());
}

/// `fota-agent-generate WHAT DIR`, the package build's man page and completion
/// writer.
fn generate(what: &str, dir: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fota-agent-generate"))
        .arg(what)
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn generate_writes_valid_man_pages() {
    let dir = tempdir();
    generate("man", dir.path());
    for page in ["fota-agent.1", "fota-agent-run.1", "fota-agent-fetch.1"] {
        let path = dir.path().join(page);
        let roff = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(roff.contains(".TH "), "{page}: no title header");
        // groff renders it without a warning (-ww: all warnings; -P-cbou: plain
        // text, no overstrike or escape sequences).
        let out = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-P-cbou"])
            .arg(&path)
            .output()
            .expect("groff (apt-get install groff-base)");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{page}: {}",
            text(&out)
        );
        let page_text = String::from_utf8_lossy(&out.stdout);
        assert!(page_text.contains("SYNOPSIS"), "{page}: {page_text}");
    }
    let main = std::fs::read_to_string(dir.path().join("fota-agent.1")).unwrap();
    for sub in ["run", "check", "status", "install", "fetch"] {
        assert!(main.contains(sub), "fota-agent.1 does not list {sub}");
    }
}

#[test]
fn generate_writes_completions_for_bash_zsh_and_fish() {
    let dir = tempdir();
    generate("completions", dir.path());
    let bash = dir.path().join("fota-agent.bash");
    let out = std::process::Command::new("bash")
        .arg("-n")
        .arg(&bash)
        .output()
        .unwrap();
    assert!(out.status.success(), "bash -n: {}", text(&out));
    for file in ["fota-agent.bash", "_fota-agent", "fota-agent.fish"] {
        let script = std::fs::read_to_string(dir.path().join(file)).unwrap();
        for sub in ["run", "check", "install", "fetch"] {
            assert!(script.contains(sub), "{file} does not complete {sub}");
        }
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}
