//! The state directory's lock: one process at a time may touch devices and state.
//! Two agents on one state directory replace each other's staged images and run
//! two update commands on one device at once, so every entry point that can touch
//! a device or the state (`run`, `run --once`, `install`) holds an exclusive
//! `flock` on `<state_dir>/lock` for its whole life; read-only ones do not. The
//! file records the holder's PID and command line, so the one refused can say who
//! holds it. The kernel drops the lock when the holder dies, however it dies; the
//! descriptor is close-on-exec, so an update command left behind never holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: the state directory is in use by another fota-agent (PID {pid}: {command})")]
    Held {
        path: PathBuf,
        pid: String,
        command: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LockError {
    /// Whether the state directory's path itself is unusable (a regular file on
    /// the way, a name too long): a configuration mistake, not a runtime fault.
    pub fn is_bad_path(&self) -> bool {
        let LockError::Io { source, .. } = self else {
            return false;
        };
        let bad = [Errno::ENOTDIR, Errno::ENAMETOOLONG, Errno::EEXIST];
        source
            .raw_os_error()
            .is_some_and(|code| bad.iter().any(|e| *e as i32 == code))
    }
}

/// Held for as long as it lives.
#[derive(Debug)]
pub struct StateLock {
    _file: Flock<File>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LockError + '_ {
    move |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl StateLock {
    /// Creates `state_dir` if needed and takes its lock without waiting; records
    /// this process's PID and `command` in it.
    pub fn acquire(state_dir: &Path, command: &str) -> Result<StateLock, LockError> {
        std::fs::create_dir_all(state_dir).map_err(io_err(state_dir))?;
        let path = state_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => return Err(held(&path, &mut file)),
            Err((_, e)) => return Err(io_err(&path)(e.into())),
        };
        let record = format!("{}\n{}\n", std::process::id(), command);
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(record.as_bytes()))
            .map_err(io_err(&path))?;
        Ok(StateLock { _file: file })
    }
}

/// The refusal, naming the holder as its lock file records it.
fn held(path: &Path, file: &mut File) -> LockError {
    let mut text = String::new();
    // The holder may be between truncating and writing: then it is unknown.
    let _ = file.take(4096).read_to_string(&mut text);
    let mut lines = text.lines();
    let pid = lines.next().filter(|p| !p.is_empty()).unwrap_or("unknown");
    let command = lines.next().filter(|c| !c.is_empty()).unwrap_or("unknown");
    LockError::Held {
        path: path.to_path_buf(),
        pid: pid.to_string(),
        command: command.to_string(),
    }
}

/// This process's command line, as the lock file records it.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_told_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path(), "fota-agent run").unwrap();
        let err = StateLock::acquire(dir.path(), "fota-agent install").unwrap_err();
        let LockError::Held { pid, command, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(pid, &std::process::id().to_string());
        assert_eq!(command, "fota-agent run");
        drop(first);
        StateLock::acquire(dir.path(), "fota-agent install").unwrap();
    }

    #[test]
    fn a_regular_file_on_the_way_is_a_bad_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let err = StateLock::acquire(&dir.path().join("file/state"), "x").unwrap_err();
        assert!(err.is_bad_path(), "{err}");
    }
}
