//! A configured command (health check, reboot) run to its end within a limit.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Runs `argv` with its output discarded; `Err` says why it did not exit 0 in
/// time (a child still running at the limit is killed).
pub(super) async fn run(argv: &[String], limit: Duration) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    match tokio::time::timeout(limit, child.wait()).await {
        Err(_) => Err(format!(
            "{program} did not finish within {}",
            humantime::format_duration(limit)
        )),
        Ok(Err(e)) => Err(format!("waiting for {program}: {e}")),
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("{program} failed ({status})")),
    }
}
