//! A simulated ESP8266 ROM serial bootloader on a pty, for the esp8266 handler's
//! tests and for esptool (faithfulness test, benchmark).
//!
//! It holds the pty's master side and a copy of the slave side (so the pty
//! survives clients opening and closing the slave path), and answers the ROM
//! commands as the ESP8266 mask ROM does: SYNC (answered 8 times), READ_REG
//! (chip magic, MAC/efuse words, UART divider), WRITE_REG, FLASH_BEGIN (erase
//! with the ROM's erase-length arithmetic), FLASH_DATA (length, checksum and
//! sequence checks, NOR-style programming), FLASH_END, MEM_* (accepted and
//! ignored), and anything else with status 1 / reason 0x05 ("invalid message"),
//! once, echoing the opcode.
//!
//! The protocol code here is written independently of the handler's, so the two
//! do not share a misunderstanding; esptool is the third opinion.
//!
//! Faults (keyed by FLASH_DATA sequence number): drop the reply, send a corrupt
//! frame instead of the reply, answer an error status without writing, go
//! silent (for every command) from a block on. Optional line-rate model: every
//! byte in either direction costs 10 bit times at the given baud.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::termios;

#[path = "../support/pty_pair.rs"]
mod pty_pair;

pub const MAGIC_REG: u32 = 0x4000_1000;
pub const ESP8266_MAGIC: u32 = 0xFFF0_C101;
pub const SECTOR: usize = 0x1000;

/// Injected misbehaviour, keyed by FLASH_DATA sequence number.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// seq → how many times to process the block but not answer.
    pub drop_reply: HashMap<u32, u32>,
    /// seq → how many times to answer with a corrupt frame (bad escape).
    pub corrupt_reply: HashMap<u32, u32>,
    /// seq → how many times to answer status 1 with `error_reason` (not writing).
    pub error_status: HashMap<u32, u32>,
    /// Reason byte of `error_status` answers (default 0x08, flash write error).
    pub error_reason: Option<u8>,
    /// From this block on, answer nothing at all until [`Simulator::recover`].
    pub silent_from_seq: Option<u32>,
    /// Make READ_REG of the chip-detect register return this (another chip).
    pub chip_magic: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub flash_size: usize,
    /// Line-rate model: bit time of this baud for every byte, both ways.
    pub line_rate: Option<u32>,
    /// How many times SYNC is answered (the ROM: 8).
    pub sync_replies: usize,
    pub faults: Faults,
    /// Flash content from offset 0 at start (the rest is erased, 0xFF).
    pub initial_flash: Vec<u8>,
    /// Written with the whole flash at start and after every FLASH_END (what a
    /// version command can read, as if asking the rebooted application).
    pub dump_on_end: Option<PathBuf>,
    /// Bytes per second the flash erases at: FLASH_BEGIN answers only after the
    /// erase, as the ROM does (None: at once).
    pub erase_rate: Option<u32>,
    /// Bytes per second the flash programs at: FLASH_DATA answers after the
    /// block is written (None: at once).
    pub write_rate: Option<u32>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            flash_size: 4 * 1024 * 1024,
            line_rate: None,
            sync_replies: 8,
            faults: Faults::default(),
            initial_flash: Vec::new(),
            dump_on_end: None,
            erase_rate: None,
            write_rate: None,
        }
    }
}

/// What the simulator saw.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub bytes_received: usize,
    /// Opcodes of every well-formed request, in order.
    pub ops: Vec<u8>,
    /// FLASH_DATA attempts per sequence number.
    pub data_attempts: HashMap<u32, u32>,
    /// (start, length) of every erase.
    pub erased: Vec<(usize, usize)>,
    /// Flags of every FLASH_END.
    pub flash_end: Vec<u32>,
    /// Time of the last FLASH_DATA written (for dump debouncing).
    pub last_write: Option<Instant>,
}

struct Begun {
    offset: usize,
    blocks: u32,
    block_size: usize,
    next_seq: u32,
}

struct State {
    flash: Vec<u8>,
    faults: Faults,
    silent: bool,
    begun: Option<Begun>,
    /// Registers written with WRITE_REG (and the SPI controller's results).
    regs: HashMap<u32, u32>,
    stats: Stats,
    /// How long the flash is busy with the last request before it answers.
    busy: Duration,
}

/// A running simulator; stops when dropped.
pub struct Simulator {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl Simulator {
    pub fn start(config: SimConfig) -> io::Result<Simulator> {
        let (master, slave, path) = pty_pair::open_cloexec()?;
        let pty = nix::pty::OpenptyResult { master, slave };
        // Raw, no echo: the client reconfigures the port anyway, but until it
        // does, the line discipline must not echo or translate.
        let mut t = termios::tcgetattr(pty.slave.as_fd()).map_err(io::Error::from)?;
        termios::cfmakeraw(&mut t);
        termios::tcsetattr(pty.slave.as_fd(), termios::SetArg::TCSANOW, &t)
            .map_err(io::Error::from)?;
        // Non-blocking master: answers nobody reads are dropped, like a UART's.
        let flags = OFlag::from_bits_truncate(
            fcntl(pty.master.as_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?,
        );
        fcntl(
            pty.master.as_fd(),
            FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK),
        )
        .map_err(io::Error::from)?;
        let mut flash = vec![0xFF; config.flash_size];
        let n = config.initial_flash.len().min(flash.len());
        flash[..n].copy_from_slice(&config.initial_flash[..n]);
        if let Some(dump) = &config.dump_on_end {
            std::fs::write(dump, &flash)?;
        }
        let state = Arc::new(Mutex::new(State {
            flash,
            faults: config.faults.clone(),
            silent: false,
            begun: None,
            regs: HashMap::new(),
            stats: Stats::default(),
            busy: Duration::ZERO,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            let master = File::from(pty.master);
            let slave = pty.slave;
            std::thread::Builder::new()
                .name("esp8266-sim".into())
                .spawn(move || serve(master, slave, config, state, stop))?
        };
        Ok(Simulator {
            path,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// The slave path (`/dev/pts/N`) a client opens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn flash(&self) -> Vec<u8> {
        lock(&self.state).flash.clone()
    }

    pub fn stats(&self) -> Stats {
        lock(&self.state).stats.clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        lock(&self.state).faults = faults;
    }

    /// Like a power cycle into the bootloader: faults cleared, loader state
    /// reset, flash kept.
    pub fn recover(&self) {
        let mut s = lock(&self.state);
        s.faults = Faults::default();
        s.silent = false;
        s.begun = None;
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(
    mut master: File,
    _slave: OwnedFd,
    config: SimConfig,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
) {
    let byte_time = config
        .line_rate
        .map(|baud| Duration::from_secs_f64(10.0 / f64::from(baud)));
    let mut decoder = SlipDecoder::default();
    let mut buf = [0u8; 4096];
    // When the simulated wire is next free (line-rate model).
    let mut wire_free = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let ready = {
            let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, 20u8) {
                Ok(n) if n > 0 => fds[0]
                    .revents()
                    .is_some_and(|r| r.intersects(PollFlags::POLLIN)),
                _ => false,
            }
        };
        if !ready {
            continue;
        }
        let n = match master.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // EIO: no slave open (cannot happen while we hold one); back off.
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if let Some(bt) = byte_time {
            wire_free = wire_free.max(Instant::now()) + bt * n as u32;
            sleep_until(wire_free);
        }
        lock(&state).stats.bytes_received += n;
        for &b in &buf[..n] {
            let Some(frame) = decoder.push(b) else {
                continue;
            };
            let (replies, busy) = {
                let mut s = lock(&state);
                let replies = handle(&mut s, &config, &frame);
                (replies, std::mem::take(&mut s.busy))
            };
            // The flash works before the ROM answers; the line stays free.
            sleep_until(Instant::now() + busy);
            for reply in replies {
                if let Some(bt) = byte_time {
                    wire_free = wire_free.max(Instant::now()) + bt * reply.len() as u32;
                    sleep_until(wire_free);
                }
                write_dropping(&mut master, &reply);
            }
        }
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Writes what the pty takes; the rest is lost, as on a UART nobody listens to.
fn write_dropping(master: &mut File, mut bytes: &[u8]) {
    let give_up = Instant::now() + Duration::from_millis(200);
    while !bytes.is_empty() && Instant::now() < give_up {
        match master.write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(_) => return,
        }
    }
}

#[derive(Default)]
struct SlipDecoder {
    buf: Vec<u8>,
    in_frame: bool,
    esc: bool,
    bad: bool,
}

impl SlipDecoder {
    fn push(&mut self, b: u8) -> Option<Vec<u8>> {
        match (b, self.in_frame) {
            (0xC0, false) => {
                self.in_frame = true;
                None
            }
            (0xC0, true) if self.buf.is_empty() && !self.bad => None,
            (0xC0, true) => {
                let frame = std::mem::take(&mut self.buf);
                let bad = self.bad || self.esc;
                self.in_frame = false;
                self.esc = false;
                self.bad = false;
                (!bad).then_some(frame)
            }
            (_, false) => None,
            (b, true) => {
                if self.esc {
                    self.esc = false;
                    match b {
                        0xDC => self.buf.push(0xC0),
                        0xDD => self.buf.push(0xDB),
                        _ => self.bad = true,
                    }
                } else if b == 0xDB {
                    self.esc = true;
                } else {
                    self.buf.push(b);
                }
                if self.buf.len() > 65536 {
                    self.bad = true;
                    self.buf.clear();
                }
                None
            }
        }
    }
}

pub fn slip(payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0xC0];
    for &b in payload {
        match b {
            0xC0 => out.extend_from_slice(&[0xDB, 0xDC]),
            0xDB => out.extend_from_slice(&[0xDB, 0xDD]),
            b => out.push(b),
        }
    }
    out.push(0xC0);
    out
}

/// A response frame as the ESP8266 ROM sends it: data is just the two status bytes.
fn response(op: u8, value: u32, status: u8, reason: u8) -> Vec<u8> {
    let mut p = vec![0x01, op, 2, 0];
    p.extend_from_slice(&value.to_le_bytes());
    p.extend_from_slice(&[status, reason]);
    slip(&p)
}

fn word(data: &[u8], i: usize) -> Option<u32> {
    let b = data.get(i * 4..i * 4 + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn take(map: &mut HashMap<u32, u32>, seq: u32) -> bool {
    match map.get_mut(&seq) {
        Some(n) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    }
}

/// Handles one request frame; returns the frames to send back.
fn handle(s: &mut State, config: &SimConfig, frame: &[u8]) -> Vec<Vec<u8>> {
    if frame.len() < 8 || frame[0] != 0x00 {
        return vec![];
    }
    let op = frame[1];
    let len = usize::from(u16::from_le_bytes([frame[2], frame[3]]));
    let chk = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let data = &frame[8..];
    if data.len() != len {
        return vec![response(op, 0, 1, 0x05)];
    }
    s.stats.ops.push(op);
    if s.silent {
        return vec![];
    }
    match op {
        0x08 => {
            let mut want = vec![0x07, 0x07, 0x12, 0x20];
            want.extend_from_slice(&[0x55; 32]);
            if data != want.as_slice() {
                return vec![];
            }
            (0..config.sync_replies)
                .map(|_| response(op, 0x2012_0707, 0, 0))
                .collect()
        }
        0x0A => {
            let Some(addr) = word(data, 0) else {
                return vec![response(op, 0, 1, 0x05)];
            };
            let value = match addr {
                MAGIC_REG => s.faults.chip_magic.unwrap_or(ESP8266_MAGIC),
                // OTP MAC words (OUI 18:FE:34 is implied by MAC1[23:16] == 0).
                0x3FF0_0050 => 0x5600_0000,
                0x3FF0_0054 => 0x0000_AB34,
                0x3FF0_0058 => 0x0000_0000,
                0x3FF0_005C => 0x0000_0000,
                // UART_CLKDIV for a 26 MHz crystal at 115200 baud.
                0x6000_0014 => 26_000_000 * 2 / 115_200,
                other => s.regs.get(&other).copied().unwrap_or(0),
            };
            vec![response(op, value, 0, 0)]
        }
        0x09 => {
            let (Some(addr), Some(value), Some(mask)) =
                (word(data, 0), word(data, 1), word(data, 2))
            else {
                return vec![response(op, 0, 1, 0x05)];
            };
            let old = s.regs.get(&addr).copied().unwrap_or(0);
            s.regs.insert(addr, (old & !mask) | (value & mask));
            if addr == SPI_CMD && value & SPI_CMD_USR != 0 {
                spi_user_command(s, config);
            }
            vec![response(op, 0, 0, 0)]
        }
        0x05..=0x07 => vec![response(op, 0, 0, 0)],
        0x02 => {
            let erased = s.stats.erased.len();
            let replies = flash_begin(s, data);
            if let (Some(rate), Some((_, len))) = (config.erase_rate, s.stats.erased.get(erased)) {
                s.busy = Duration::from_secs_f64(*len as f64 / f64::from(rate));
            }
            replies
        }
        0x03 => {
            if let Some(rate) = config.write_rate {
                let block = word(data, 0).unwrap_or(0);
                s.busy = Duration::from_secs_f64(f64::from(block) / f64::from(rate));
            }
            flash_data(s, data, chk)
        }
        0x04 => {
            s.stats.flash_end.push(word(data, 0).unwrap_or(0));
            s.begun = None;
            if let Some(dump) = &config.dump_on_end {
                let _ = std::fs::write(dump, &s.flash);
            }
            vec![response(op, 0, 0, 0)]
        }
        // Everything else (SPI_ATTACH, GET_SECURITY_INFO, ...) is not in the
        // ESP8266 ROM: "invalid message".
        _ => vec![response(op, 0, 1, 0x05)],
    }
}

const SPI_CMD: u32 = 0x6000_0200;
const SPI_USR2: u32 = 0x6000_0224;
const SPI_W0: u32 = 0x6000_0240;
const SPI_CMD_USR: u32 = 1 << 18;

/// The SPI controller's "user command", as esptool drives it through registers
/// to read the flash chip's JEDEC id and status: a Winbond-like chip of the
/// simulated size; the command completes at once.
fn spi_user_command(s: &mut State, config: &SimConfig) {
    let command = s.regs.get(&SPI_USR2).copied().unwrap_or(0) & 0xFF;
    let result = match command {
        // RDID: manufacturer 0xEF, memory type 0x40, capacity log2(size).
        0x9F => Some(0xEF | 0x40 << 8 | (config.flash_size.trailing_zeros() & 0xFF) << 16),
        // RDSR, RDSR2, RDSR3: nothing busy, nothing protected.
        0x05 | 0x35 | 0x15 => Some(0),
        _ => None,
    };
    if let Some(v) = result {
        s.regs.insert(SPI_W0, v);
    }
    s.regs.insert(SPI_CMD, 0);
}

fn flash_begin(s: &mut State, data: &[u8]) -> Vec<Vec<u8>> {
    let (Some(erase), Some(blocks), Some(block_size), Some(offset)) =
        (word(data, 0), word(data, 1), word(data, 2), word(data, 3))
    else {
        return vec![response(0x02, 0, 1, 0x05)];
    };
    // The ROM's erase arithmetic: it counts the sectors up to the next 64 KiB
    // block twice, which is what esptool's get_erase_size compensates for.
    let num_sectors = (erase as usize).div_ceil(SECTOR);
    let start_sector = offset as usize / SECTOR;
    let head = (16 - start_sector % 16).min(num_sectors);
    let start = start_sector * SECTOR;
    let len = (num_sectors + head) * SECTOR;
    if num_sectors > 0 {
        let end = (start + len).min(s.flash.len());
        if start < end {
            s.flash[start..end].fill(0xFF);
        }
        s.stats.erased.push((start, len));
    }
    s.begun = Some(Begun {
        offset: offset as usize,
        blocks,
        block_size: block_size as usize,
        next_seq: 0,
    });
    vec![response(0x02, 0, 0, 0)]
}

fn flash_data(s: &mut State, data: &[u8], chk: u32) -> Vec<Vec<u8>> {
    let op = 0x03;
    let (Some(len), Some(seq)) = (word(data, 0), word(data, 1)) else {
        return vec![response(op, 0, 1, 0x05)];
    };
    *s.stats.data_attempts.entry(seq).or_default() += 1;
    if s.faults.silent_from_seq.is_some_and(|from| seq >= from) {
        s.silent = true;
        return vec![];
    }
    if take(&mut s.faults.error_status, seq) {
        let reason = s.faults.error_reason.unwrap_or(0x08);
        return vec![response(op, 0, 1, reason)];
    }
    let block = &data[16.min(data.len())..];
    if block.len() != len as usize {
        return vec![response(op, 0, 1, 0x05)];
    }
    let sum = block.iter().fold(0xEFu8, |a, b| a ^ b);
    if u32::from(sum) != chk {
        return vec![response(op, 0, 1, 0x07)];
    }
    let Some(begun) = s.begun.as_mut() else {
        return vec![response(op, 0, 1, 0x06)];
    };
    if seq > begun.next_seq || seq >= begun.blocks.max(1) || block.len() > begun.block_size {
        return vec![response(op, 0, 1, 0x06)];
    }
    let addr = begun.offset + seq as usize * begun.block_size;
    let Some(dst) = s.flash.get_mut(addr..addr + block.len()) else {
        return vec![response(op, 0, 1, 0x08)];
    };
    // NOR flash: programming only clears bits.
    for (d, b) in dst.iter_mut().zip(block) {
        *d &= b;
    }
    if seq == begun.next_seq {
        begun.next_seq += 1;
    }
    s.stats.last_write = Some(Instant::now());
    if take(&mut s.faults.drop_reply, seq) {
        return vec![];
    }
    if take(&mut s.faults.corrupt_reply, seq) {
        return vec![vec![0xC0, 0x01, 0x03, 0xDB, 0x42, 0x00, 0xC0]];
    }
    vec![response(op, 0, 0, 0)]
}
