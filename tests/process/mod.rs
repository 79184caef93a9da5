//! Helpers for tests that run the `fota-agent` binary and shell scripts as real
//! processes: a process's whole output, executable scripts, waiting for a file.
#![allow(dead_code)]

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// stdout then stderr of a finished process, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Writes a `/bin/sh` script with `body` to `path`, executable.
pub fn write_exec(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Waits (bounded) until `path` holds a complete line, and returns it.
pub fn wait_for(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && s.ends_with('\n')
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP port free a moment ago on 127.0.0.1 (for a config's `[status] listen`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on the status endpoint at `port` (HTTP/1.0): the whole answer when
/// it is a 200, `None` otherwise or after 5 s.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.starts_with("HTTP/1.0 200").then_some(answer)
}

/// Waits (bounded) until `child` exits; `None` when it still runs after `within`.
pub fn exit_within(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// `fota-agent --config <config>` (see [`agent`]).
pub fn with_config(config: &Path) -> std::process::Command {
    let mut c = agent();
    c.arg("--config").arg(config);
    c
}

/// `fota-agent --config <config> run` started, its stderr to `stderr`.
pub fn start_run(config: &Path, stderr: std::process::Stdio) -> std::process::Child {
    with_config(config)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Runs `cmd` to its end (bounded, 90 s: a hang fails the test naming
/// `what`): whether it succeeded, and its whole output.
pub async fn finish(cmd: &mut tokio::process::Command, what: &str) -> (bool, String) {
    cmd.stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} hung"))
        .unwrap();
    (out.status.success(), text(&out))
}

/// Waits (bounded, 20 s) until `f` holds, without blocking the async runtime the
/// test's servers run on.
pub async fn until<F: Fn() -> bool>(what: &str, f: F) {
    until_or(what, f, String::new).await;
}

/// [`until`], and on a timeout the message carries `context()` (e.g. a log).
pub async fn until_or<F: Fn() -> bool>(what: &str, f: F, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        if Instant::now() >= deadline {
            panic!("timed out waiting for {what}\n{}", context());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `fota-agent` binary with an environment that cannot leak into a test: no
/// config path, systemd or journal sockets, or proxy variables of the caller.
pub fn agent() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fota-agent"));
    c.env("RUST_LOG", "info");
    for var in [
        "FOTA_AGENT_CONFIG",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "JOURNAL_STREAM",
        "FOTA_AGENT_JOURNAL_SOCKET",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        c.env_remove(var);
    }
    c
}
