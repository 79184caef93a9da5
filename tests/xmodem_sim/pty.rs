//! A raw pty pair: the handler opens the slave by path, the test drives the master
//! without blocking the runtime (non-blocking fd under `AsyncFd`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use tokio::io::unix::AsyncFd;

#[path = "../support/pty_pair.rs"]
mod pty_pair;

pub struct Pty {
    master: AsyncFd<File>,
    buffered: Mutex<VecDeque<u8>>,
    /// Kept open so the master never sees EIO between two openings of the slave.
    _slave: OwnedFd,
    pub slave_path: PathBuf,
}

impl Pty {
    /// A pty pair in raw mode (no echo, no line discipline), before anyone opens
    /// the slave.
    pub fn open() -> Pty {
        let (master, slave, slave_path) = pty_pair::open_cloexec().expect("pty");
        let mut t = tcgetattr(&slave).expect("tcgetattr");
        cfmakeraw(&mut t);
        tcsetattr(&slave, SetArg::TCSANOW, &t).expect("tcsetattr");
        let flags = OFlag::from_bits_truncate(fcntl(&master, FcntlArg::F_GETFL).unwrap());
        fcntl(&master, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).unwrap();
        Pty {
            // SAFETY: the `File` owns the master fd, which nothing else closes or
            // replaces while the `AsyncFd` holds it.
            master: unsafe { AsyncFd::register(File::from(master)) }.expect("AsyncFd"),
            buffered: Mutex::new(VecDeque::new()),
            _slave: slave,
            slave_path,
        }
    }

    /// Whatever bytes are available (waits for at least one).
    pub async fn read_some(&self, buf: &mut [u8]) -> io::Result<usize> {
        {
            let mut b = self.buffered.lock().unwrap();
            if !b.is_empty() {
                let n = buf.len().min(b.len());
                for (slot, byte) in buf.iter_mut().zip(b.drain(..n)) {
                    *slot = byte;
                }
                return Ok(n);
            }
        }
        loop {
            let mut guard = self.master.readable().await?;
            match guard.try_io(|f| f.get_ref().read(buf)) {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// One byte, or `None` after `timeout`.
    pub async fn read_byte(&self, timeout: Duration) -> Option<u8> {
        let mut b = [0u8; 1];
        match tokio::time::timeout(timeout, self.read_some(&mut b)).await {
            Ok(Ok(1)) => Some(b[0]),
            _ => None,
        }
    }

    /// Exactly `n` bytes, each within `timeout` of the previous; `None` if the line
    /// went quiet first (the bytes read so far are dropped).
    pub async fn read_exact(&self, n: usize, timeout: Duration) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.read_byte(timeout).await?);
        }
        Some(out)
    }

    /// Puts bytes back to be read first.
    pub fn unread(&self, bytes: &[u8]) {
        let mut b = self.buffered.lock().unwrap();
        for &x in bytes.iter().rev() {
            b.push_front(x);
        }
    }

    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.master.writable().await?;
            match guard.try_io(|f| f.get_ref().write(data)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// The baud rate the slave side set last (Linux shares one termios between
    /// the two sides; `TCGETS2` reads the exact rate, also a non-standard one
    /// such as 28800 set with `BOTHER`).
    #[allow(dead_code)]
    pub fn baud(&self) -> u32 {
        let mut t: nix::libc::termios2 = unsafe { std::mem::zeroed() };
        // SAFETY: TCGETS2 fills a `termios2` the pointer refers to.
        let rc = unsafe {
            nix::libc::ioctl(
                self.master.get_ref().as_raw_fd(),
                nix::libc::TCGETS2,
                &mut t,
            )
        };
        if rc == 0 { t.c_ospeed } else { 0 }
    }

    /// Sets the line's baud rate from this side (as a host's line coding
    /// returns to its default).
    #[allow(dead_code)]
    pub fn set_baud(&self, baud: u32) {
        let fd = self.master.get_ref().as_raw_fd();
        let mut t: nix::libc::termios2 = unsafe { std::mem::zeroed() };
        // SAFETY: TCGETS2 / TCSETS2 read and write the `termios2` given.
        unsafe {
            if nix::libc::ioctl(fd, nix::libc::TCGETS2, &mut t) == 0 {
                t.c_cflag &= !nix::libc::CBAUD;
                t.c_cflag |= nix::libc::BOTHER;
                t.c_ispeed = baud;
                t.c_ospeed = baud;
                nix::libc::ioctl(fd, nix::libc::TCSETS2, &t);
            }
        }
    }

    /// Reads and discards until the line has been quiet for `quiet`; returns what
    /// was discarded.
    pub async fn drain(&self, quiet: Duration) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = self.read_byte(quiet).await {
            out.push(b);
        }
        out
    }
}
