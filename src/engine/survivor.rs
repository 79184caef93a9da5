//! Update commands that outlive their agent. An agent killed mid-update (SIGKILL,
//! OOM) leaves its update command running; the next start must stop it before it
//! judges the device, or it records a failure while the command still flashes and
//! starts a second one beside it. The in-flight record holds the command's process
//! group and its leader's start time; a survivor is killed only when a process with
//! that PID and that start time still exists, so a reused PID is never hit.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::store::{CommandProcess, Store};

/// How long recovery waits for a killed survivor to be gone.
const GONE_WITHIN: Duration = Duration::from_secs(10);
const GONE_POLL: Duration = Duration::from_millis(20);

/// Writes the command's process group into the device's in-flight record.
pub(super) fn record(store: &Store, device_id: &str, pgid: i32) {
    let Some(start_time) = start_time(pgid) else {
        // Already gone: nothing could survive the agent.
        return;
    };
    let saved = store.update(device_id, |s| {
        if let Some(in_flight) = &mut s.in_flight {
            in_flight.process = Some(CommandProcess { pgid, start_time });
        }
    });
    if let Err(e) = saved {
        tracing::error!(device = %device_id, "cannot record the update command's process: {e}");
    }
}

/// Kills the recorded command's process group if its leader still runs, and
/// waits until it is gone. Returns whether it killed anything.
pub(super) async fn stop(device_id: &str, process: CommandProcess) -> bool {
    if start_time(process.pgid) != Some(process.start_time) {
        return false;
    }
    let pgid = Pid::from_raw(process.pgid);
    tracing::warn!(device = %device_id, %pgid,
        "the update command of the interrupted update still runs; killing its process group");
    match killpg(pgid, Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            tracing::error!(device = %device_id, %pgid, "cannot kill the surviving update command: {e}");
            return false;
        }
    }
    let deadline = tokio::time::Instant::now() + GONE_WITHIN;
    while start_time(process.pgid) == Some(process.start_time) {
        if tokio::time::Instant::now() >= deadline {
            tracing::error!(device = %device_id, %pgid, "the surviving update command does not end");
            break;
        }
        tokio::time::sleep(GONE_POLL).await;
    }
    true
}

/// The start time of live process `pid` (`None` when it does not exist or is a
/// zombie: dead, only not reaped yet).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of `/proc/<pid>/stat`, unless the state (field 3) is zombie or dead.
fn parse_start_time(stat: &str) -> Option<u64> {
    crate::handler::command::parse_stat(stat)
        .filter(|s| !matches!(s.state, 'Z' | 'X'))
        .map(|s| s.start_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt as _;

    #[test]
    fn parses_the_start_time_and_ignores_zombies() {
        let stat = "77 (a) b (c)) S 1 77 77 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 50";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(parse_start_time(&stat.replace(") S ", ") Z ")), None);
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[tokio::test]
    async fn a_reused_pid_is_never_hit_and_the_same_process_is_killed() {
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let real = start_time(pid).unwrap();
        // Same PID, another start time: another process that got the PID.
        let reused = CommandProcess {
            pgid: pid,
            start_time: real + 1,
        };
        assert!(!stop("d", reused).await);
        assert_eq!(child.try_wait().unwrap(), None, "the other process was hit");
        let same = CommandProcess {
            pgid: pid,
            start_time: real,
        };
        assert!(stop("d", same).await);
        assert!(child.wait().unwrap().code().is_none(), "killed by a signal");
    }
}
