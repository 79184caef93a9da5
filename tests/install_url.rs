//! `fota-agent install --device ID URL`: the run path from a URL in one process
//! (download into the state directory, verify, handler), through the binary
//! against a loopback HTTP server.

mod minisign;
mod process;
mod support;

use std::path::{Path, PathBuf};

use process::{agent, finish, write_exec};
use support::http_server::*;

const LEN: u64 = 3 << 20;

struct Rig {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Rig {
    /// A command-handler device `box` on version 1.0 whose update command copies
    /// the image to `dest`, records each run in `runs` and the version in
    /// `version`; plain `http://` allowed.
    fn new() -> Rig {
        Rig::with("https_only = false\n", "")
    }

    /// [`Rig::new`] with `source` as the `[source]` table's further keys and
    /// `tables` after it (keys live in the rig's `keys/`).
    fn with(source: &str, tables: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("firmware")).unwrap();
        std::fs::create_dir_all(d.join("keys")).unwrap();
        write_exec(
            &d.join("update"),
            &format!(
                "echo run >> {runs:?}\ncat \"$1\" > {dest:?}\necho \"$FOTA_VERSION\" > {version:?}\n",
                runs = d.join("runs"),
                dest = d.join("dest"),
                version = d.join("version"),
            ),
        );
        write_exec(
            &d.join("current"),
            &format!("cat {:?} 2>/dev/null || echo 1.0\n", d.join("version")),
        );
        let config = d.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nstate_dir = {state:?}\n\
                 [source]\nkind = \"directory\"\npath = {fw:?}\n{source}{tables}\n\
                 [[device]]\nid = \"box\"\ntype = \"box\"\nhandler = \"command\"\n\
                 update_command = [{update:?}]\nversion_command = [{current:?}]\n",
                state = d.join("state"),
                fw = d.join("firmware"),
                update = d.join("update"),
                current = d.join("current"),
            ),
        )
        .unwrap();
        Rig { dir, config }
    }

    async fn install(&self, url: &str, sha256: &str) -> (bool, String) {
        self.install_with(&[url, "--sha256", sha256]).await
    }

    /// `install --device box ARGS…`.
    async fn install_with(&self, args: &[&str]) -> (bool, String) {
        let mut c = agent();
        c.arg("--config")
            .arg(&self.config)
            .args(["install", "--device", "box"])
            .args(args);
        finish(&mut tokio::process::Command::from(c), "install").await
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Nothing is left in the state directory's downloads folder: an image
    /// installed or refused is not kept, nor is its partial file.
    fn assert_nothing_staged(&self) {
        let downloads = self.path("state").join("downloads");
        let left: Vec<String> = std::fs::read_dir(&downloads)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(left.is_empty(), "left in {}: {left:?}", downloads.display());
    }
}

/// A loopback server with the image at `/fw.bin`: LEN synthetic bytes (seed 9)
/// under a validator, so an interrupted download can resume.
async fn serving_fw() -> TestServer {
    let s = TestServer::start(ServerOptions::default()).await;
    s.add_synthetic("/fw.bin", LEN, 9);
    s.set_etag("/fw.bin", Some("\"v9\""));
    s
}

fn runs(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_image_from_a_url_is_downloaded_verified_and_installed() {
    let (s, rig) = (serving_fw().await, Rig::new());
    // The first GET breaks off mid-body (the fault is queued for the size
    // probe's HEAD too, which has no body): the next resumes where it stopped.
    s.push_faults("/fw.bin", Faults::new().drop_after(LEN / 3), 2);
    let (ok, out) = rig
        .install(&s.url("/fw.bin"), &synthetic_sha256_hex(9, LEN))
        .await;
    assert!(ok, "{out}");
    assert!(out.contains("box: success"), "{out}");
    let written = std::fs::read(rig.path("dest")).unwrap();
    assert!(
        written == synthetic_bytes(9, 0..LEN),
        "the device got other bytes"
    );
    assert_eq!(runs(&rig.path("runs")), 1);
    let gets: Vec<_> = s
        .requests("/fw.bin")
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert!(gets.len() >= 2, "the body was not cut: {gets:#?}");
    let from = gets[gets.len() - 1]
        .range()
        .and_then(|r| r.strip_prefix("bytes="));
    assert!(
        from.is_some_and(|f| f != "0-"),
        "the last attempt did not resume: {from:?}"
    );
    rig.assert_nothing_staged();
}

#[tokio::test]
async fn an_image_from_a_url_with_another_digest_never_reaches_the_handler() {
    let (s, rig) = (serving_fw().await, Rig::new());
    let (ok, out) = rig
        .install(&s.url("/fw.bin"), &synthetic_sha256_hex(8, LEN))
        .await;
    assert!(!ok, "{out}");
    assert!(out.to_lowercase().contains("sha-256"), "{out}");
    assert_eq!(runs(&rig.path("runs")), 0, "the handler ran");
    assert!(!rig.path("dest").exists());
    rig.assert_nothing_staged();
}

#[tokio::test]
async fn a_plain_http_url_is_refused_unless_https_only_is_off() {
    let (s, rig) = (serving_fw().await, Rig::with("", ""));
    let (ok, out) = rig
        .install(&s.url("/fw.bin"), &synthetic_sha256_hex(9, LEN))
        .await;
    assert!(!ok, "{out}");
    assert!(out.contains("https_only is set"), "{out}");
    assert_eq!(s.requests("/fw.bin").len(), 0, "the server was asked");
    assert_eq!(runs(&rig.path("runs")), 0, "the handler ran");
}

#[tokio::test]
async fn with_keys_a_signed_bundle_from_a_url_installs_and_a_bare_image_is_refused() {
    let (s, rig) = (
        TestServer::start(ServerOptions::default()).await,
        Rig::with(
            "https_only = false\n",
            "[trust]\npublic_keys = [\"keys/release.pub\"]",
        ),
    );
    let release = minisign::keypair(&rig.path("keys"), "release");
    let image = rig.path("box-2.0.bin");
    std::fs::write(&image, b"box firmware 2.0").unwrap();
    release.sign(&image, "type=box version=2.0");
    minisign::bundle(&image, &rig.path("box-2.0.tar"));
    s.add_file("/box-2.0.bin", std::fs::read(&image).unwrap());
    s.add_file(
        "/box-2.0.tar",
        std::fs::read(rig.path("box-2.0.tar")).unwrap(),
    );

    let (ok, out) = rig
        .install_with(&[&s.url("/box-2.0.bin"), "--version", "2.0"])
        .await;
    assert!(!ok, "{out}");
    assert!(out.contains("no .minisig"), "{out}");
    assert_eq!(runs(&rig.path("runs")), 0, "the handler ran");

    let (ok, out) = rig
        .install_with(&[&s.url("/box-2.0.tar"), "--version", "2.0"])
        .await;
    assert!(ok, "{out}");
    assert!(out.contains("signature verified"), "{out}");
    assert_eq!(
        std::fs::read(rig.path("dest")).unwrap(),
        b"box firmware 2.0"
    );
    assert_eq!(runs(&rig.path("runs")), 1);
    rig.assert_nothing_staged();
}

#[tokio::test]
async fn a_downgrade_from_a_url_is_refused_before_any_byte_is_fetched() {
    let (s, rig) = (serving_fw().await, Rig::new());
    let (ok, out) = rig
        .install_with(&[&s.url("/fw.bin"), "--version", "0.9"])
        .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("target version 0.9 is not newer than current 1.0"),
        "{out}"
    );
    assert_eq!(s.requests("/fw.bin").len(), 0, "the server was asked");
    assert_eq!(runs(&rig.path("runs")), 0, "the handler ran");
    rig.assert_nothing_staged();
}
