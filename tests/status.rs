//! The status endpoint of the real binary: `/status` JSON through an update's life,
//! `/metrics`, `/events` (SSE), actions over TCP (token) and the unix socket,
//! `fota-agent status`, and a source that cannot be read.

mod process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use process::{agent, free_port, write_exec};
use serde_json::Value;

const TOKEN: &str = "test-token-0123456789";

/// One HTTP/1.0 request; (status code, body).
fn request<S: Read + Write>(
    mut s: S,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> (u16, String) {
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

struct Agent {
    child: Child,
    port: u16,
    socket: PathBuf,
    config: PathBuf,
    dir: PathBuf,
}

impl Agent {
    fn tcp(&self, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        request(s, method, path, auth)
    }

    fn unix(&self, method: &str, path: &str) -> (u16, String) {
        let s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        request(s, method, path, None)
    }

    fn status(&self) -> Value {
        let (code, body) = self.tcp("GET", "/status", None);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn wait_status(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status();
            if ok(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "never {what}: {s:#}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn metric(&self, line_start: &str) -> f64 {
        let (code, body) = self.tcp("GET", "/metrics", None);
        assert_eq!(code, 200);
        body.lines()
            .find_map(|l| l.strip_prefix(line_start)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {line_start} in\n{body}"))
            .parse()
            .unwrap()
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = agent()
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    fn stop(mut self) -> String {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "agent did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut log = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        assert!(status.success(), "{status}\n{log}");
        assert!(!self.socket.exists(), "socket file left behind");
        log
    }
}

/// A test that ends without `stop`, or fails before it, leaves no agent
/// running behind it.
impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An agent with one command-handler device `dev` of type `t` running 1.0, the
/// version offered. Its update waits for `<dir>/go`; its version and update
/// commands append `v` and `u` to `<dir>/calls`.
fn start(dir: &Path) -> Agent {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("firmware/t")).unwrap();
    offer(dir, "1.0");
    write_exec(
        &dir.join("version.sh"),
        &format!("echo v >> {d}/calls\ncat {d}/version 2>/dev/null || echo 1.0\n"),
    );
    write_exec(
        &dir.join("update.sh"),
        &format!(
            "echo u >> {d}/calls\necho 'PROGRESS 10'\nwhile [ ! -e {d}/go ]; do sleep 0.05; done\n\
             echo \"$FOTA_VERSION\" > {d}/version\necho 'PROGRESS 100'\n"
        ),
    );
    let port = free_port();
    let socket = dir.join("run/status.sock");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{d}/state\"\npoll_interval = \"1h\"\n\
             [source]\nkind = \"directory\"\npath = \"{d}/firmware\"\n\
             [status]\nlisten = \"127.0.0.1:{port}\"\nsocket = \"{}\"\ntoken = \"{TOKEN}\"\n\
             [[device]]\nid = \"dev\"\ntype = \"t\"\nhandler = \"command\"\n\
             version_command = [\"{d}/version.sh\"]\nupdate_command = [\"{d}/update.sh\"]\n",
            socket.display()
        ),
    )
    .unwrap();
    let child = agent()
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let agent = Agent {
        child,
        port,
        socket,
        config,
        dir: dir.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "status endpoint never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    agent
}

fn offer(dir: &Path, version: &str) -> usize {
    let image = format!("firmware {version}\n").repeat(100);
    std::fs::write(dir.join("firmware/t/fw.bin"), &image).unwrap();
    std::fs::write(
        dir.join("firmware/t/fw.properties"),
        format!("version = {version}\nimage = fw.bin\ndescription = test {version}\n"),
    )
    .unwrap();
    image.len()
}

/// Reads server-sent events until a `finished` one (or the deadline).
/// Reads the `/events` answer's head: once it arrived the agent has subscribed
/// this stream, so no later event can be missed.
fn subscribed(stream: TcpStream) -> BufReader<TcpStream> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "no /events head");
        if line == "\r\n" {
            return reader;
        }
    }
}

fn read_events(reader: BufReader<TcpStream>) -> Vec<(String, Value)> {
    let mut lines = reader.lines();
    let mut events = Vec::new();
    let mut name = String::new();
    while let Some(Ok(line)) = lines.next() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(data) = line.strip_prefix("data: ") {
            events.push((name.clone(), serde_json::from_str(data).unwrap()));
            if name == "finished" {
                break;
            }
        }
    }
    events
}

#[test]
fn status_metrics_events_and_actions_follow_an_update() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = start(tmp.path());

    // The first poll: up to date.
    let s = agent.wait_status("polled", |s| !s["source"]["last_poll"].is_null());
    assert_eq!(s["agent"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(s["agent"]["uptime_seconds"].is_u64());
    assert_eq!(s["source"]["reachable"], true);
    assert!(
        s["source"]["description"]
            .as_str()
            .unwrap()
            .starts_with("directory ")
    );
    let dev = &s["devices"][0];
    assert_eq!(dev["id"], "dev");
    assert_eq!(dev["type"], "t");
    assert_eq!(dev["current_version"], "1.0");
    assert_eq!(dev["status"], "UP_TO_DATE");
    assert!(dev["available"].is_null() && dev["update"].is_null());
    assert!(dev["last_outcome"].is_null());

    let (code, metrics) = agent.tcp("GET", "/metrics", None);
    assert_eq!(code, 200);
    for needle in [
        "# TYPE fota_agent_updates_total counter",
        "fota_agent_updates_total{outcome=\"success\"} 0",
        "# TYPE fota_agent_update_duration_seconds histogram",
        "fota_agent_downloaded_bytes_total 0",
        "fota_agent_poll_errors_total 0",
        "fota_agent_devices{status=\"UP_TO_DATE\"} 1",
    ] {
        assert!(metrics.contains(needle), "no {needle:?} in\n{metrics}");
    }

    // Actions: refused over TCP without the token, allowed with it.
    for (path, auth) in [
        ("/check", None),
        ("/check", Some("wrong-token-0123456789")),
        ("/devices/dev/update", None),
        ("/devices/dev/cancel", None),
    ] {
        let (code, body) = agent.tcp("POST", path, auth);
        assert_eq!(code, 403, "{path} {auth:?}: {body}");
    }
    let (code, _) = agent.tcp("POST", "/devices/nope/update", Some(TOKEN));
    assert_eq!(code, 404);
    let (code, body) = agent.unix("POST", "/devices/dev/cancel");
    assert_eq!((code, body.contains("not_running")), (409, true), "{body}");

    // Live events: subscribe, then offer 2.0 and ask for a check with the token.
    let mut sse = TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
    write!(sse, "GET /events HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let sse = subscribed(sse);
    let events = std::thread::spawn(move || read_events(sse));
    let size = offer(&agent.dir, "2.0");
    let (code, body) = agent.tcp("POST", "/check", Some(TOKEN));
    assert_eq!(code, 202, "{body}");

    // In flight: the update step waits for `go`.
    // Events reach the tracker one by one: wait for the step and its percent.
    let s = agent.wait_status("updating", |s| {
        let update = &s["devices"][0]["update"];
        update["step"] == "UPDATING" && update["percent"] == 10
    });
    let update = &s["devices"][0]["update"];
    assert_eq!(update["version"], "2.0");
    assert_eq!(update["percent"], 10);
    assert_eq!(
        update["steps"],
        serde_json::json!(["DOWNLOADING", "TRANSFERRING", "UPDATING"])
    );
    assert!(update["started_at"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(s["devices"][0]["available"]["version"], "2.0");
    assert_eq!(s["devices"][0]["status"], "UPDATE_EXECUTABLE");
    assert_eq!(agent.metric("fota_agent_updates_in_progress"), 1.0);
    let table = agent.cli(&["status"]);
    assert!(
        table.contains("DEVICE") && table.contains("2.0 UPDATING 10%"),
        "{table}"
    );
    let raw: Value = serde_json::from_str(&agent.cli(&["status", "--json"])).unwrap();
    assert_eq!(raw["devices"][0]["id"], "dev");

    // Too late to cancel once the device is being written (the unix socket needs no
    // token).
    let (code, body) = agent.unix("POST", "/devices/dev/cancel");
    assert_eq!((code, body.contains("too_late")), (409, true), "{body}");

    // One device, one update: asking to update it again is refused, and neither
    // the endpoint nor `fota-agent check` runs any of its commands beside it.
    let calls = std::fs::read_to_string(agent.dir.join("calls")).unwrap();
    assert_eq!(calls.matches('u').count(), 1, "{calls}");
    let (code, body) = agent.unix("POST", "/devices/dev/update");
    assert_eq!((code, body.contains("busy")), (409, true), "{body}");
    let out = process::agent()
        .arg("--config")
        .arg(&agent.config)
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("busy: an update to 2.0 is in flight"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(agent.dir.join("calls")).unwrap(),
        calls
    );

    std::fs::write(agent.dir.join("go"), "").unwrap();
    // The outcome (an event) and the confirmed version (the engine's record
    // after the update returns) arrive separately.
    let s = agent.wait_status("done", |s| {
        !s["devices"][0]["last_outcome"].is_null() && s["devices"][0]["current_version"] == "2.0"
    });
    let dev = &s["devices"][0];
    assert_eq!(dev["last_outcome"]["outcome"], "success");
    assert_eq!(dev["last_outcome"]["version"], "2.0");
    assert!(dev["update"].is_null(), "{dev:#}");
    assert_eq!(dev["current_version"], "2.0");
    assert_eq!(dev["status"], "UP_TO_DATE");

    assert_eq!(
        agent.metric("fota_agent_updates_total{outcome=\"success\"}"),
        1.0
    );
    assert_eq!(
        agent.metric("fota_agent_update_duration_seconds_count"),
        1.0
    );
    assert_eq!(
        agent.metric("fota_agent_downloaded_bytes_total"),
        size as f64
    );

    let events = events.join().unwrap();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"sequence"), "{events:?}");
    assert!(
        events
            .iter()
            .any(|(n, v)| n == "step" && v["step"] == "DOWNLOADING"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(n, v)| n == "percent" && v["step"] == "UPDATING" && v["percent"] == 10),
        "{events:?}"
    );
    let (_, last) = events.last().unwrap();
    assert_eq!(
        (
            &last["device_id"],
            &last["firmware_version"],
            &last["outcome"]
        ),
        (
            &Value::from("dev"),
            &Value::from("2.0"),
            &Value::from("success")
        )
    );

    // A source that cannot be read: reachable false, a poll error counted.
    std::fs::remove_dir_all(agent.dir.join("firmware/t")).unwrap();
    std::fs::write(agent.dir.join("firmware/t"), "not a folder").unwrap();
    let (code, _) = agent.unix("POST", "/devices/dev/update");
    assert_eq!(code, 202);
    let s = agent.wait_status("unreachable", |s| s["source"]["reachable"] == false);
    assert!(
        s["source"]["error"].as_str().unwrap().contains("source"),
        "{s:#}"
    );
    assert_eq!(agent.metric("fota_agent_poll_errors_total"), 1.0);
    assert_eq!(agent.metric("fota_agent_source_up"), 0.0);
    assert!(agent.cli(&["status"]).contains("UNREACHABLE"));

    agent.stop();
}

/// `fota-agent status` with `config`, which must fail.
fn failed_status(config: &Path) -> std::process::Output {
    let out = agent()
        .arg("--config")
        .arg(config)
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    out
}

#[test]
fn status_command_says_when_the_agent_is_not_running() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[status]\nlisten = \"127.0.0.1:{}\"\n", free_port()),
    )
    .unwrap();
    let out = failed_status(&config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is it running?"), "{err}");

    std::fs::write(&config, "[status]\nlisten = \"off\"\n").unwrap();
    let out = failed_status(&config);
    assert!(String::from_utf8_lossy(&out.stderr).contains("status endpoint is off"));
}

/// Whatever answers on the status port, `status` reads at most 4 MiB of it.
#[test]
fn status_command_caps_the_answer_it_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = tmp.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[status]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    // An endless answer, until the reader hangs up.
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n{\"devices\": [");
        let chunk = vec![b' '; 64 * 1024];
        while s.write_all(&chunk).is_ok() {}
    });
    let out = failed_status(&config);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("larger than 4194304 bytes"), "{err}");
}

#[test]
fn version_flag_prints_the_version() {
    let out = agent().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("fota-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

/// DNS rebinding: a request under a foreign `Host` gets 421 and no device data.
#[test]
fn a_foreign_host_header_gets_421() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = start(tmp.path());
    let get = |host: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    for host in ["attacker.example", "attacker.example:8470", "10.1.2.3"] {
        let answer = get(host);
        assert!(answer.starts_with("HTTP/1.1 421"), "{host}: {answer}");
        assert!(!answer.contains("\"devices\""), "{host}: {answer}");
    }
    for host in ["localhost", &format!("127.0.0.1:{}", agent.port), "[::1]"] {
        let answer = get(host);
        assert!(answer.starts_with("HTTP/1.1 200"), "{host}: {answer}");
    }
}

/// Plain HTTP answers off the routes: 404 for an unknown path, 405 with `Allow`
/// for a known path asked with another method, HEAD as GET without a body, and
/// a device id percent-decoded (400 when that is not UTF-8).
#[test]
fn unknown_paths_and_methods_get_plain_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let agent = start(tmp.path());
    let raw = |method: &str, path: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", agent.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer.to_ascii_lowercase()
    };
    let answer = raw("GET", "/nope");
    assert!(answer.starts_with("http/1.1 404"), "{answer}");
    let answer = raw("POST", "/status");
    assert!(answer.starts_with("http/1.1 405"), "{answer}");
    assert!(answer.contains("\r\nallow: get,head\r\n"), "{answer}");
    let answer = raw("GET", "/devices/dev/update");
    assert!(answer.starts_with("http/1.1 405"), "{answer}");
    assert!(answer.contains("\r\nallow: post\r\n"), "{answer}");
    let answer = raw("HEAD", "/status");
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(
        answer.contains("content-type: application/json"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\n"), "a body after HEAD: {answer}");
    let answer = raw("POST", "/devices/d%65v/cancel");
    assert!(answer.starts_with("http/1.1 409"), "{answer}");
    assert!(answer.contains(r#""device":"dev""#), "{answer}");
    let answer = raw("POST", "/devices/%ff/cancel");
    assert!(answer.starts_with("http/1.1 400"), "{answer}");
    agent.stop();
}
