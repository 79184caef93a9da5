//! Credentials never leak: the `fota-agent` binary runs against each server
//! source's stand-in with a unique canary token, an update fails (so error paths
//! run and are reported), and the canary must not appear in the agent's stderr,
//! its status answer, or any report the stand-in received.

mod hawkbit_ext;
#[path = "support/http_request.rs"]
mod http_request;
mod mcs_server;
mod process;
mod thingsboard_server;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};

use mcs_server::{McsServer, Offer};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use process::until_or;
use thingsboard_server::TbServer;

/// A command-handler device `dev` of type `t` running 1.0.
const DEVICE: &str = "[[device]]\nid = \"dev\"\ntype = \"t\"\nhandler = \"command\"\n\
                      version_command = [\"echo\", \"1.0\"]\nupdate_command = [\"true\"]\n";

/// `fota-agent run` with `source` (a `[source]` table) and the status endpoint on
/// its unix socket (no TCP port to race other tests for); stderr goes to a file.
struct Agent {
    child: Child,
    dir: tempfile::TempDir,
}

impl Agent {
    fn start(source: &str, files: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let d = dir.path().display();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\nstate_dir = \"{d}/state\"\npoll_interval = \"1h\"\n\
                 [status]\nlisten = \"off\"\nsocket = \"{d}/status.sock\"\n{source}\n{DEVICE}"
            ),
        )
        .unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fota-agent"))
            .env("RUST_LOG", "debug")
            .env_remove("FOTA_AGENT_CONFIG")
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Agent { child, dir }
    }

    /// Its stderr so far.
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// The `/status` answer, once the endpoint is up.
    fn status(&self) -> String {
        let socket = self.dir.path().join("status.sock");
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let request = "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    }

    /// Stops the agent (SIGTERM) and returns its stderr.
    fn stop(mut self) -> String {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
        self.stderr()
    }

    /// Asserts that `canary` is in none of: stderr, the status answer, `reports`.
    fn assert_no_leak(self, canary: &str, reports: &str) {
        let status = self.status();
        assert!(status.contains("\"dev\""), "{status}");
        let stderr = self.stop();
        assert!(stderr.contains("fota-agent"), "{stderr}");
        for (what, text) in [
            ("stderr", &stderr),
            ("status", &status),
            ("reports", &reports.to_string()),
        ] {
            assert!(
                !text.contains(canary),
                "the canary is in the {what}:\n{text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn thingsboard_http_never_shows_its_access_token() {
    const CANARY: &str = "tbCANARY5d1e7a93";
    let server = TbServer::start(&[CANARY]).await;
    // MD5 only and no signature: refused by the checksum policy, reported FAILED.
    server.assign(CANARY, "fw", "t-fw", "2.0", b"image 2.0", "MD5");
    let agent = Agent::start(
        &format!(
            "[source]\nkind = \"thingsboard\"\nurl = \"{}\"\nhttps_only = false\n\
         access_token = \"{CANARY}\"\ngateway_device = \"dev\"\n",
            server.url()
        ),
        &[],
    );
    let failed = || {
        server
            .states(CANARY, "fw_state")
            .contains(&"FAILED".to_string())
    };
    until_or("FAILED reported", failed, || agent.stderr()).await;
    let reports = format!("{:?}", server.telemetry(CANARY));
    agent.assert_no_leak(CANARY, &reports);
}

#[tokio::test(flavor = "multi_thread")]
async fn hawkbit_never_shows_its_target_token() {
    use hawkbit_ext::{DdiServer, TARGET, TOKEN};
    let server = DdiServer::start().await;
    let image = b"t image 2.0".to_vec();
    {
        let mut s = server.script();
        s.files.push(("t-2.0.bin".into(), image.clone()));
        let mut d = hawkbit_ext::deployment(
            &server.base_url,
            ("forced", "forced"),
            None,
            "t-2.0.bin",
            &image,
        );
        d["chunks"][0]["name"] = serde_json::json!("t");
        // A wrong hash: the download fails verification and the action closes failed.
        d["chunks"][0]["artifacts"][0]["hashes"]["sha256"] = serde_json::json!("00".repeat(32));
        s.deployment = Some(("20".into(), d));
    }
    let agent = Agent::start(
        &format!(
            "[source]\nkind = \"hawkbit\"\nurl = \"{}\"\ntenant = \"DEFAULT\"\n\
         controller_id = \"{TARGET}\"\ntarget_token = \"{TOKEN}\"\nhttps_only = false\n\
         min_poll_interval = \"100ms\"\nstartup_spread = \"0\"\n",
            server.base_url
        ),
        &[],
    );
    let closed = || {
        server
            .feedback("deploymentBase", "20")
            .iter()
            .any(|f| f["status"]["execution"] == "closed")
    };
    until_or("the action closed", closed, || agent.stderr()).await;
    let reports: Vec<String> = server
        .seen()
        .into_iter()
        .filter_map(|s| s.body.map(|b| b.to_string()))
        .collect();
    assert!(reports.iter().any(|r| r.contains("failure")), "{reports:?}");
    agent.assert_no_leak(TOKEN, &reports.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn mcs_never_shows_its_device_key() {
    const ID: &str = "DcAnary1";
    const CANARY: &str = "mcsCANARY0b8c44f2";
    let server = McsServer::start().await;
    server.add_device(ID, CANARY);
    let url = server.add_file("t-2.0.bin", b"t image 2.0");
    // An MD5 that does not match: the update fails and is reported.
    server.offer(
        ID,
        Offer {
            fwid: "F2".into(),
            version: "2.0".into(),
            url,
            md5: Some("0".repeat(32)),
            prerequisites: None,
        },
    );
    let agent = Agent::start(
        &format!(
            "[source]\nkind = \"mcs\"\nbase_url = \"{}\"\nhttps_only = false\n\
         device_id = \"{ID}\"\ndevice_key = {{ file = \"key\" }}\ngateway_device = \"dev\"\n\
         heartbeat_interval = \"200ms\"\nstartup_spread = \"0\"\n[trust]\nallow_weak_checksums = true\n",
            server.base_url()
        ),
        &[("key", &format!("{CANARY}\n"))],
    );
    let failed = || server.datapoints(ID).iter().any(|d| d.contains("FAILED"));
    until_or("FAILED reported", failed, || agent.stderr()).await;
    // Not the heartbeats: MCS's command channel carries the key by protocol.
    let reports = format!("{:?}", server.datapoints(ID));
    agent.assert_no_leak(CANARY, &reports);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcs_redirect_to_another_host_does_not_take_the_device_key_along() {
    const ID: &str = "DcAnary2";
    const CANARY: &str = "mcsCANARY6e20d7b1";
    let server = McsServer::start().await;
    server.add_device(ID, CANARY);
    // Another host, which records what it is sent and answers 404.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let location = format!(
        "http://{}/mcs/v2/elsewhere",
        elsewhere.local_addr().unwrap()
    );
    server.redirect("available", &location);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    tokio::spawn({
        let seen = seen.clone();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut sock, _)) = elsewhere.accept().await {
                let mut head = vec![0u8; 64 * 1024];
                let n = sock.read(&mut head).await.unwrap_or(0);
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&head[..n]));
                let answer =
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                let _ = sock.write_all(answer.as_bytes()).await;
            }
        }
    });
    let agent = Agent::start(
        &format!(
            "[source]\nkind = \"mcs\"\nbase_url = \"{}\"\nhttps_only = false\n\
             device_id = \"{ID}\"\ndevice_key = \"{CANARY}\"\ngateway_device = \"dev\"\n\
             startup_spread = \"0\"\n",
            server.base_url()
        ),
        &[],
    );
    let asked = || seen.lock().unwrap().contains("GET /mcs/v2/elsewhere");
    until_or("the other host asked", asked, || {
        format!("{:?}\n{}", server.requests(), agent.stderr())
    })
    .await;
    let other = seen.lock().unwrap().clone();
    assert!(!other.to_ascii_lowercase().contains("devicekey"), "{other}");
    let reports = format!("{:?} {other}", server.datapoints(ID));
    agent.assert_no_leak(CANARY, &reports);
}
