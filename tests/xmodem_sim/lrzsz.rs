//! Debian's lrzsz (`rx`, `rb`) as an independent receiver.
//!
//! Set-up: the handler opens the pty *slave* by path; `rx`/`rb` run as children
//! with stdin/stdout on pipes, and two tasks copy bytes between those pipes and
//! the pty *master*. On pipes lrzsz leaves terminal modes alone (its tty calls
//! fail quietly), so nothing changes the pty's raw mode under the handler, and
//! everything the receiver prints besides protocol bytes goes to stderr (kept for
//! failure messages). The handler discards input that was waiting when it opened
//! the port, and lrzsz repeats its first start request only after 13 s, so tests
//! start it with `--delay-startup 1`: its first 'C' comes after the handler is
//! listening. `-t` (tenths of a second) shortens its other timeouts.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::Pty;

/// Panics (the test fails) when lrzsz is missing: CI installs it.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` (Debian package lrzsz) is not installed: run `bash .ci/run`, \
         or `apt-get install lrzsz`, before these tests"
    );
}

pub struct Receiver {
    child: Child,
    to_pty: JoinHandle<()>,
    from_pty: JoinHandle<()>,
    stderr: JoinHandle<String>,
}

impl Receiver {
    /// Starts `program args…` in `dir`, connected to `pty`'s master.
    pub fn spawn(pty: Arc<Pty>, program: &str, args: &[&str], dir: &Path) -> Receiver {
        require(program);
        let mut child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let mut out = child.stdout.take().unwrap();
        let mut input = child.stdin.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let p = pty.clone();
        let to_pty = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf).await {
                if n == 0 || p.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let from_pty = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pty.read_some(&mut buf).await {
                if n == 0 || input.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                let _ = input.flush().await;
            }
        });
        let stderr = tokio::spawn(async move {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s).await;
            String::from_utf8_lossy(&s).into_owned()
        });
        Receiver {
            child,
            to_pty,
            from_pty,
            stderr,
        }
    }

    /// Waits for the receiver to exit (killing it after `limit`); its status and
    /// stderr.
    pub async fn finish(mut self, limit: Duration) -> (Option<ExitStatus>, String) {
        let status = match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.to_pty).await;
        self.from_pty.abort();
        let stderr = tokio::time::timeout(Duration::from_secs(2), &mut self.stderr)
            .await
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_default();
        (status, stderr)
    }
}
