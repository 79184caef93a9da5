//! Process supervision for the command handler: every command runs in its own
//! process group; a run whose future is dropped kills its whole group at once
//! ([`GroupGuard`]); `cancel` sends SIGTERM to the groups of cancelable commands and
//! SIGKILL after a grace period ([`Groups::cancel`]), looking in `/proc` for
//! survivors ([`group_alive`]); [`follow`] waits for the exit while the output is
//! read, and stops reading shortly after the exit when processes left behind keep
//! the pipes open.

use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::Step;
use super::line_protocol::{LineReader, next_line};

/// How long output is still read after the command exited, when a process it left
/// behind keeps stdout or stderr open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// How often `cancel` looks whether the process group is gone.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// A command that is running now.
#[derive(Debug)]
pub(super) struct Running {
    /// Its process group (= the pid of the command).
    group: Group,
    cancelable: bool,
    /// Set by `cancel`, so that the run reports [`super::HandlerError::Canceled`].
    canceled: Arc<AtomicBool>,
}

/// The process groups of the commands a handler runs now.
#[derive(Debug, Default)]
pub(super) struct Groups {
    running: Mutex<Vec<Running>>,
}

impl Groups {
    pub(super) fn running(&self) -> MutexGuard<'_, Vec<Running>> {
        // The list stays consistent even if a holder panicked.
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the group of a command just spawned: the returned guard kills it
    /// if the run does not finish, the flag tells whether `cancel` stopped it.
    pub(super) fn watch<'a>(
        &'a self,
        child: &Child,
        step: Step,
        device: &'a str,
    ) -> (Option<GroupGuard<'a>>, Arc<AtomicBool>) {
        let canceled = Arc::new(AtomicBool::new(false));
        let guard = child.id().and_then(|id| i32::try_from(id).ok()).map(|id| {
            let group = Group::of_leader(Pid::from_raw(id));
            self.running().push(Running {
                group,
                cancelable: step.cancelable(),
                canceled: canceled.clone(),
            });
            GroupGuard {
                groups: self,
                device,
                group,
                armed: true,
            }
        });
        (guard, canceled)
    }

    /// SIGTERM to every cancelable group, SIGKILL to what is left after `grace`.
    pub(super) async fn cancel(&self, grace: Duration, device: &str) {
        let targets: Vec<Group> = self
            .running()
            .iter()
            .filter(|r| r.cancelable)
            .map(|r| {
                r.canceled.store(true, Ordering::SeqCst);
                r.group
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        for group in &targets {
            tracing::info!(device, pgid = %group.pgid, "canceling: sending SIGTERM to the command");
            group.signal(Signal::SIGTERM, device);
        }
        let left = wait_gone(&targets, grace).await;
        for group in &left {
            tracing::warn!(device, pgid = %group.pgid, ?grace,
                "command still running after SIGTERM; sending SIGKILL");
        }
        // Also any group that still exists only as far as `/proc` could not tell
        // (zombies, or a `/proc` of another pid namespace): SIGKILL harms neither.
        for group in targets {
            if killpg(group.pgid, None).is_ok() {
                group.signal(Signal::SIGKILL, device);
            }
        }
    }
}

/// Waits up to `grace` for the groups to be gone; returns those still alive.
async fn wait_gone(groups: &[Group], grace: Duration) -> Vec<Group> {
    let deadline = Instant::now() + grace;
    let mut left = groups.to_vec();
    loop {
        // A `/proc` scan every CANCEL_POLL: on the blocking pool, not the runtime.
        left = tokio::task::spawn_blocking(move || {
            left.retain(Group::alive);
            left
        })
        .await
        .unwrap_or_default();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(CANCEL_POLL).await;
    }
}

/// Spawns `cmd` in its own process group, stdin `/dev/null`, stdout and stderr
/// piped, killed when the [`Child`] is dropped.
pub(super) fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

/// Hands every line of the child's stdout and stderr to `on_line` until it exited
/// and its output is read (or, when processes it left behind keep the output open,
/// [`DRAIN_AFTER_EXIT`] after it exited). `None` only if the loop ended without an
/// exit status, which it does not.
pub(super) async fn follow(
    child: &mut Child,
    device: &str,
    step: Step,
    mut on_line: impl FnMut(Stream, &str),
) -> std::io::Result<Option<ExitStatus>> {
    let mut stdout = child.stdout.take().map(LineReader::new);
    let mut stderr = child.stderr.take().map(LineReader::new);
    let mut status: Option<ExitStatus> = None;
    let mut drain_until: Option<Instant> = None;
    loop {
        if status.is_some() && stdout.is_none() && stderr.is_none() {
            break;
        }
        tokio::select! {
            line = next_line(&mut stdout), if stdout.is_some() => match line {
                Some(line) => on_line(Stream::Stdout, &line),
                None => stdout = None,
            },
            line = next_line(&mut stderr), if stderr.is_some() => match line {
                Some(line) => on_line(Stream::Stderr, &line),
                None => stderr = None,
            },
            exit = child.wait(), if status.is_none() => {
                status = Some(exit?);
                drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
            },
            () = tokio::time::sleep_until(drain_until.unwrap_or_else(Instant::now)),
                if drain_until.is_some() =>
            {
                tracing::debug!(device, step = step.env(),
                    "{} exited but processes it left behind keep its output open; \
                     no longer reading it", step.label());
                break;
            },
        }
    }
    Ok(status)
}

/// Kills the process group of a command whose run did not finish (its future was
/// dropped), and keeps the list of running commands current.
pub(super) struct GroupGuard<'a> {
    groups: &'a Groups,
    device: &'a str,
    group: Group,
    armed: bool,
}

impl GroupGuard<'_> {
    /// The run finished: nothing to kill, and `cancel` no longer concerns it.
    pub(super) fn disarm(&mut self) {
        self.armed = false;
        self.forget();
    }

    fn forget(&self) {
        self.groups.running().retain(|r| r.group.pgid != self.group.pgid);
    }
}

impl Drop for GroupGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            let pgid = self.group.pgid;
            if self.group.is_ours() {
                match killpg(pgid, Signal::SIGKILL) {
                    Ok(()) => tracing::info!(device = %self.device, %pgid,
                        "command abandoned while running; killed its process group"),
                    Err(Errno::ESRCH) => {}
                    Err(e) => tracing::warn!(device = %self.device, %pgid,
                        "cannot kill process group of abandoned command: {e}"),
                }
            }
            self.forget();
        }
    }
}

/// `exited with status 3`, `killed by signal SIGKILL`.
pub(super) fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else if let Some(signal) = status.signal() {
        match Signal::try_from(signal) {
            Ok(s) => format!("killed by signal {}", s.as_str()),
            Err(_) => format!("killed by signal {signal}"),
        }
    } else {
        format!("ended with {status}")
    }
}

/// A command's process group, and how to tell it from a later group that got
/// the same number.
#[derive(Debug, Clone, Copy)]
struct Group {
    pgid: Pid,
    /// The leader's start time (`/proc/<pid>/stat` field 22), read at spawn.
    leader_start: Option<u64>,
}

impl Group {
    fn of_leader(pid: Pid) -> Group {
        Group {
            pgid: pid,
            leader_start: proc_stat(pid.as_raw()).map(|s| s.start_time),
        }
    }

    /// Whether the number still names our group. The kernel does not reuse a
    /// pid while a process of the group lives; once none does (all gone, on a
    /// gateway with pid_max 32768 within minutes) a new process may get it and
    /// lead a group of the same number, which must never be waited for or
    /// signaled: a process with the leader's pid but another start time is such
    /// a newcomer.
    fn is_ours(&self) -> bool {
        match (proc_stat(self.pgid.as_raw()), self.leader_start) {
            (Some(now), Some(ours)) => now.start_time == ours,
            _ => true,
        }
    }

    /// Whether a process of the group is still alive (zombies do not count:
    /// they are dead, only not reaped yet, which nobody may do in a container
    /// without init).
    fn alive(&self) -> bool {
        self.is_ours() && group_alive(self.pgid)
    }

    /// Sends `signal` to the group, unless its number now names another one.
    fn signal(&self, signal: Signal, device: &str) {
        if self.is_ours() {
            signal_group(self.pgid, signal, device);
        }
    }
}

/// Whether a process of the group is still alive (zombies do not count).
fn group_alive(pgid: Pid) -> bool {
    if let Err(Errno::ESRCH) = killpg(pgid, None) {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(s) = parse_stat(&stat)
            && s.pgrp == pgid.as_raw()
            && s.state != 'Z'
            && s.state != 'X'
        {
            return true;
        }
    }
    false
}

/// What the supervision reads of `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), ...
    pub state: char,
    /// Field 5.
    pub pgrp: i32,
    /// Field 22: clock ticks after boot.
    pub start_time: u64,
}

/// `/proc/<pid>/stat` of `pid`, if it exists (zombies included).
pub(crate) fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// State, process group and start time from `/proc/<pid>/stat`.
pub(crate) fn parse_stat(stat: &str) -> Option<ProcStat> {
    // The command name may contain spaces and parentheses; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().take(20).collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(22 - 3)?.parse().ok()?,
    })
}

fn signal_group(pgid: Pid, signal: Signal, device: &str) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(device, %pgid, "cannot send {signal} to process group: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let stat = "77 (a) b (c)) S 1 77 77 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 50";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                state: 'S',
                pgrp: 77,
                start_time: 98765
            })
        );
        assert_eq!(parse_stat("123 (a) S 1 77 77 0 -1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    /// A group whose number now leads another process (another start time) is
    /// not ours: not alive, never signaled.
    #[test]
    fn a_group_number_taken_by_a_newcomer_is_not_ours() {
        use std::os::unix::process::CommandExt as _;
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let ours = Group::of_leader(pid);
        assert!(ours.is_ours() && ours.alive());
        let newcomer = Group {
            leader_start: ours.leader_start.map(|t| t + 1),
            ..ours
        };
        assert!(!newcomer.is_ours() && !newcomer.alive());
        newcomer.signal(Signal::SIGKILL, "test");
        assert!(ours.alive(), "a newcomer's signal reached the group");
        ours.signal(Signal::SIGKILL, "test");
        child.wait().unwrap();
    }
}
