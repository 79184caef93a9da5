//! A configured command (health check, maintenance window, reboot) run to its end
//! within a limit.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Limit of the commands that only ask something (`executable_command`,
/// `reboot_command`).
pub(super) const SHORT_LIMIT: Duration = Duration::from_secs(60);

/// Runs `argv`; `Err` says why it did not exit 0 in time.
pub(super) async fn run(argv: &[String], limit: Duration) -> Result<(), String> {
    match exit_status(argv, limit).await? {
        Ok(()) => Ok(()),
        Err(status) => Err(format!("{} failed ({status})", argv[0])),
    }
}

/// Runs `argv` with its output discarded: `Ok(Err(status))` for a non-zero exit;
/// `Err` when it could not run or did not finish within `limit` (it is killed).
pub(super) async fn exit_status(
    argv: &[String],
    limit: Duration,
) -> Result<Result<(), std::process::ExitStatus>, String> {
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
        Ok(Ok(status)) if status.success() => Ok(Ok(())),
        Ok(Ok(status)) => Ok(Err(status)),
    }
}
