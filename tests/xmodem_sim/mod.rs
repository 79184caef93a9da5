//! Test-only XMODEM / XMODEM-1K / YMODEM *receiver* on a pty master, playing an MCU
//! bootloader: optional enter command, CRC-16 or checksum mode, and fault
//! injection (NAK a block once, lose an ACK, corrupt a block, go silent, cancel).
//! Written from the protocol descriptions, independently of the agent's sender.
#![allow(dead_code)]

pub mod lrzsz;
pub mod pty;

#[path = "../support/crc16.rs"]
mod crc16;

use crc16::crc16;
use std::time::Duration;

pub use pty::Pty;

pub const SOH: u8 = 0x01;
pub const STX: u8 = 0x02;
pub const EOT: u8 = 0x04;
pub const ACK: u8 = 0x06;
pub const NAK: u8 = 0x15;
pub const CAN: u8 = 0x18;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// XMODEM; 128- and 1024-byte blocks are both accepted (XMODEM-1K).
    Xmodem,
    Ymodem,
}

/// Faults, each on the `n`th data block received (1-based, counting every block
/// arrival including repeats).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Answer NAK instead of ACK (the block is not stored).
    pub nak: Option<u32>,
    /// Store the block but send no ACK (the sender repeats it: a duplicate).
    pub drop_ack: Option<u32>,
    /// The block arrives with a flipped bit (bad CRC/checksum: NAK).
    pub corrupt: Option<u32>,
    /// From this block on, answer nothing (keep reading until the line is idle).
    pub silent: Option<u32>,
    /// Answer CAN CAN and stop.
    pub cancel: Option<u32>,
    /// Send these bytes before every ACK (line noise / debug prints).
    pub garbage_before_ack: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub mode: Mode,
    /// 'C' (CRC-16) or NAK (checksum) at the start.
    pub crc: bool,
    /// Bytes that must arrive before the receiver starts asking for the file.
    pub enter_command: Option<Vec<u8>>,
    /// Text the device prints (once) before its first start request, e.g. an
    /// application's "Checking…" that contains a 'C'.
    pub banner: Vec<u8>,
    /// Gap between two start requests.
    pub start_interval: Duration,
    /// Start requests before the receiver gives up.
    pub start_attempts: u32,
    /// Longest wait for a block (then NAK) and between bytes of a block.
    pub block_timeout: Duration,
    /// Line idle this long ends a silent or finished session.
    pub idle: Duration,
    pub faults: Faults,
}

impl SimConfig {
    pub fn new(mode: Mode) -> Self {
        SimConfig {
            mode,
            crc: true,
            enter_command: None,
            banner: Vec::new(),
            start_interval: Duration::from_millis(100),
            start_attempts: 100,
            block_timeout: Duration::from_secs(2),
            idle: Duration::from_millis(600),
            faults: Faults::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimOutcome {
    /// The file arrived and the transfer was closed properly.
    Complete,
    /// The sender sent CAN CAN.
    SenderCanceled,
    /// The receiver canceled (fault injection or a protocol error).
    ReceiverCanceled(String),
    /// The receiver went silent (fault injection).
    Silent,
    /// Nothing (more) came from the sender.
    TimedOut(String),
}

#[derive(Debug, Clone)]
pub struct SimResult {
    pub outcome: SimOutcome,
    /// The data blocks' contents in order, padding included (YMODEM: cut to the
    /// header's size).
    pub data: Vec<u8>,
    /// YMODEM header: file name and size.
    pub name: Option<String>,
    pub size: Option<u64>,
    /// Block arrivals, repeats included.
    pub blocks_seen: u32,
    /// Repeats of a block already stored (ACKed, not stored again).
    pub duplicates: u32,
    /// Data block sizes in order of storing.
    pub block_sizes: Vec<usize>,
    /// The enter command arrived before the first start request.
    pub saw_enter_command: bool,
    /// Whether the sender's EOT was answered NAK first (YMODEM style).
    pub eots: u32,
    /// Bytes received after the end (or while silent).
    pub trailing: Vec<u8>,
}

impl SimResult {
    /// The trailing bytes contain CAN CAN.
    pub fn saw_can_can(&self) -> bool {
        self.trailing.windows(2).any(|w| w == [CAN, CAN])
    }
}

enum Got {
    Block { number: u8, data: Vec<u8> },
    Bad,
    Eot,
    Cancel,
    Quiet,
}

struct Receiver<'a> {
    pty: &'a Pty,
    cfg: SimConfig,
    res: SimResult,
}

impl Receiver<'_> {
    fn check_len(&self) -> usize {
        if self.cfg.crc { 2 } else { 1 }
    }

    /// The next thing from the sender (garbage before a header byte is skipped).
    async fn get(&mut self, timeout: Duration) -> Got {
        let mut last_can = false;
        loop {
            let Some(b) = self.pty.read_byte(timeout).await else {
                return Got::Quiet;
            };
            let size = match b {
                SOH => 128,
                STX => 1024,
                EOT => return Got::Eot,
                CAN if last_can => return Got::Cancel,
                _ => {
                    last_can = b == CAN;
                    continue;
                }
            };
            let Some(rest) = self
                .pty
                .read_exact(2 + size + self.check_len(), self.cfg.block_timeout)
                .await
            else {
                return Got::Bad;
            };
            self.res.blocks_seen += 1;
            let mut data = rest[2..2 + size].to_vec();
            let check = &rest[2 + size..];
            if Some(self.res.blocks_seen) == self.cfg.faults.corrupt {
                data[size / 2] ^= 0x10;
            }
            let ok = if self.cfg.crc {
                check == crc16(&data).to_be_bytes()
            } else {
                check[0] == data.iter().fold(0u8, |a, &x| a.wrapping_add(x))
            };
            if rest[0] != !rest[1] || !ok {
                return Got::Bad;
            }
            return Got::Block {
                number: rest[0],
                data,
            };
        }
    }

    async fn send(&self, bytes: &[u8]) {
        let _ = self.pty.write_all(bytes).await;
    }

    async fn finish(mut self, outcome: SimOutcome) -> SimResult {
        self.res.trailing = self.pty.drain(self.cfg.idle).await;
        self.res.outcome = outcome;
        self.res
    }

    /// Waits for the enter command, then sends start requests until a block
    /// header arrives (left unread). `Err` when the sender never started.
    async fn start(&mut self, start_char: u8) -> Result<(), SimOutcome> {
        for _ in 0..self.cfg.start_attempts {
            self.send(&[start_char]).await;
            // Other bytes (a repeated enter command) do not hurry the next request.
            let next = tokio::time::Instant::now() + self.cfg.start_interval;
            loop {
                let left = next.saturating_duration_since(tokio::time::Instant::now());
                match self.pty.read_byte(left).await {
                    None => break,
                    Some(b) if matches!(b, SOH | STX | EOT) => {
                        self.pty.unread(&[b]);
                        return Ok(());
                    }
                    Some(_) => {}
                }
            }
        }
        Err(SimOutcome::TimedOut("sender never started".into()))
    }

    async fn wait_enter_command(&mut self) {
        let Some(cmd) = self.cfg.enter_command.clone() else {
            return;
        };
        let mut seen = Vec::new();
        loop {
            let Some(b) = self.pty.read_byte(Duration::from_secs(30)).await else {
                return;
            };
            seen.push(b);
            if seen.ends_with(&cmd) {
                self.res.saw_enter_command = true;
                return;
            }
        }
    }

    /// Receives data blocks numbered from 1 until EOT. Returns when the file is
    /// complete (EOT acknowledged) or with the outcome that ended it.
    async fn receive_data(&mut self) -> Result<(), SimOutcome> {
        let mut expected: u8 = 1;
        let mut errors = 0;
        loop {
            let got = self.get(self.cfg.block_timeout).await;
            let n = self.res.blocks_seen;
            let f = self.cfg.faults.clone();
            match got {
                Got::Block { number, data } => {
                    if Some(n) == f.silent {
                        return Err(SimOutcome::Silent);
                    }
                    if Some(n) == f.cancel {
                        self.send(&[CAN, CAN, CAN]).await;
                        return Err(SimOutcome::ReceiverCanceled(format!("fault at block {n}")));
                    }
                    if Some(n) == f.nak {
                        self.send(&[NAK]).await;
                        continue;
                    }
                    if number == expected {
                        self.res.block_sizes.push(data.len());
                        self.res.data.extend_from_slice(&data);
                        expected = expected.wrapping_add(1);
                    } else if number == expected.wrapping_sub(1) {
                        self.res.duplicates += 1;
                    } else {
                        self.send(&[CAN, CAN, CAN]).await;
                        return Err(SimOutcome::ReceiverCanceled(format!(
                            "block number {number}, expected {expected}"
                        )));
                    }
                    errors = 0;
                    if Some(n) == f.drop_ack {
                        continue;
                    }
                    if !f.garbage_before_ack.is_empty() {
                        self.send(&f.garbage_before_ack).await;
                    }
                    self.send(&[ACK]).await;
                }
                Got::Bad | Got::Quiet => {
                    errors += 1;
                    if errors > 10 {
                        return Err(SimOutcome::TimedOut("too many bad blocks".into()));
                    }
                    // Let the rest of a damaged block pass, then ask again.
                    self.pty.drain(Duration::from_millis(20)).await;
                    self.send(&[NAK]).await;
                }
                Got::Cancel => return Err(SimOutcome::SenderCanceled),
                Got::Eot => {
                    self.res.eots += 1;
                    if self.cfg.mode == Mode::Ymodem && self.res.eots == 1 {
                        self.send(&[NAK]).await;
                        continue;
                    }
                    self.send(&[ACK]).await;
                    return Ok(());
                }
            }
        }
    }

    /// YMODEM block 0: `None` for the empty block that ends a batch.
    async fn receive_header(&mut self) -> Result<Option<(String, u64)>, SimOutcome> {
        for _ in 0..10 {
            match self.get(self.cfg.block_timeout).await {
                Got::Block { number: 0, data } => {
                    if data[0] == 0 {
                        self.send(&[ACK]).await;
                        return Ok(None);
                    }
                    let name_end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                    let name = String::from_utf8_lossy(&data[..name_end]).into_owned();
                    let info = &data[(name_end + 1).min(data.len())..];
                    let info_end = info.iter().position(|&b| b == 0).unwrap_or(info.len());
                    let info = String::from_utf8_lossy(&info[..info_end]).into_owned();
                    let size = info
                        .split(' ')
                        .next()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    self.send(&[ACK]).await;
                    return Ok(Some((name, size)));
                }
                Got::Cancel => return Err(SimOutcome::SenderCanceled),
                Got::Block { .. } | Got::Bad | Got::Quiet | Got::Eot => {
                    self.pty.drain(Duration::from_millis(20)).await;
                    self.send(b"C").await;
                }
            }
        }
        Err(SimOutcome::TimedOut("no YMODEM header".into()))
    }

    async fn run(mut self) -> SimResult {
        self.wait_enter_command().await;
        if !self.cfg.banner.is_empty() {
            let banner = self.cfg.banner.clone();
            self.send(&banner).await;
        }
        let start_char = if self.cfg.crc { b'C' } else { NAK };
        if let Err(o) = self.start(start_char).await {
            return self.finish(o).await;
        }
        if self.cfg.mode == Mode::Ymodem {
            match self.receive_header().await {
                Ok(Some((name, size))) => {
                    self.res.name = Some(name);
                    self.res.size = Some(size);
                }
                Ok(None) => return self.finish(SimOutcome::Complete).await,
                Err(o) => return self.finish(o).await,
            }
            self.send(b"C").await;
        }
        if let Err(o) = self.receive_data().await {
            return self.finish(o).await;
        }
        if self.cfg.mode == Mode::Ymodem {
            if let Some(size) = self.res.size {
                self.res.data.truncate(size as usize);
            }
            self.send(b"C").await;
            match self.receive_header().await {
                Ok(None) => {}
                Ok(Some(_)) => {
                    return self
                        .finish(SimOutcome::TimedOut("second file in the batch".into()))
                        .await;
                }
                Err(o) => return self.finish(o).await,
            }
        }
        self.finish(SimOutcome::Complete).await
    }
}

/// Plays one receiver session on `pty`, returning when it has ended and the line
/// has been idle for `cfg.idle`.
pub async fn receive(pty: &Pty, cfg: SimConfig) -> SimResult {
    Receiver {
        pty,
        cfg,
        res: SimResult {
            outcome: SimOutcome::Complete,
            data: Vec::new(),
            name: None,
            size: None,
            blocks_seen: 0,
            duplicates: 0,
            block_sizes: Vec::new(),
            saw_enter_command: false,
            eots: 0,
            trailing: Vec::new(),
        },
    }
    .run()
    .await
}
