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

/// The `fota-agent` binary with an environment that cannot leak into a test: no
/// config path, systemd or journal sockets, or proxy variables of the caller.
pub fn agent() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_fota-agent"));
    c.env("RUST_LOG", "info");
    for var in [
        "FOTA_AGENT_CONFIG",
        "NOTIFY_SOCKET",
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
