//! A pty pair whose two fds are close-on-exec from the moment they exist.
//!
//! `openpty(3)` returns inheritable fds; setting `FD_CLOEXEC` afterwards leaves
//! a window in which another test thread's `fork` + `exec` (an agent started by
//! a parallel test) inherits the master. That child then holds the master open,
//! so dropping the pty no longer hangs the slave up: a handler waiting for a
//! simulated device to go away (a USB reset) waits in vain. The simulators
//! include this file with `#[path]`.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};

/// `(master, slave, slave path)`, both fds `O_CLOEXEC`, neither the
/// controlling terminal.
pub fn open_cloexec() -> std::io::Result<(OwnedFd, OwnedFd, PathBuf)> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let path = PathBuf::from(ptsname_r(&master)?);
    // std opens with O_CLOEXEC.
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NOCTTY)
        .open(&path)?;
    // SAFETY: the fd comes from `into_raw_fd`, so nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    Ok((master, OwnedFd::from(slave), path))
}
