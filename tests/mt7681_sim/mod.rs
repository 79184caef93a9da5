//! Test-only MT7681 module on a pty master: the application's `AT#` parser
//! (`AT#Reboot`), the recovery mode after a reboot, and the recovery firmware's
//! `AT#UpdateFW` XMODEM receiver writing into a simulated 1 MiB flash.
//!
//! Written from the MT7681 SDK sources (iot_at_cmd.c, iot_xmodem.c
//! `iot_xmodem_update_fw`, flash_map.h), independently of the agent's sender:
//! every block counts as 128 bytes (the SDK ignores STX's 1024), the first block
//! is the upgrade header (`76 81 AA`, length LE, type), and block `n >= 2` is
//! written at `region + (n - 2) * 128`, at most `length` bytes in all.
#![allow(dead_code)]

#[path = "../xmodem_sim/pty.rs"]
pub mod pty;

#[path = "../support/crc16.rs"]
pub mod crc16;

pub use crc16::crc16;
use std::path::PathBuf;
use std::time::Duration;

pub use pty::Pty;

pub const SOH: u8 = 0x01;
pub const STX: u8 = 0x02;
pub const EOT: u8 = 0x04;
pub const ACK: u8 = 0x06;
pub const NAK: u8 = 0x15;
pub const CAN: u8 = 0x18;

/// Flash size of the simulated module.
pub const FLASH_SIZE: usize = 0x10_0000;

/// Flash offset of the region with header type `t` (flash_map.h, default layout).
pub fn region_offset(t: u8) -> Option<usize> {
    Some(match t {
        1 => 0x0,     // loader
        2 => 0x6000,  // recovery firmware
        3 => 0x17000, // EEPROM
        4 => 0x1F000, // STA firmware
        5 => 0x30000, // STA XIP
        6 => 0x4F000, // AP firmware
        7 => 0x60000, // AP XIP
        _ => return None,
    })
}

/// Faults to inject.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Never answer anything (a dead or unplugged module).
    pub silent: bool,
    /// Stop answering from this data block arrival on (1-based, repeats counted).
    pub silent_from_block: Option<u32>,
    /// NAK this block arrival instead of storing it.
    pub nak: Option<u32>,
    /// This block arrival has a flipped bit (bad CRC: NAK).
    pub corrupt: Option<u32>,
    /// This block arrival is stored, but its ACK is lost on the line.
    pub lose_ack: Option<u32>,
    /// Printed before every ACK (debug output of the firmware).
    pub garbage_before_ack: Vec<u8>,
    /// Ignore this many `AT#Reboot`s before rebooting.
    pub ignore_reboots: u32,
    /// The application never answers (a module left half-written: only its
    /// recovery firmware runs, after a reset).
    pub app_dead: bool,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How long the recovery firmware waits for `AT#UpdateFW` (SDK: about 4 s).
    pub recovery_window: Duration,
    /// Gap between two 'C's (SDK: about 2 s).
    pub start_interval: Duration,
    /// 'C's before the receiver gives up.
    pub start_attempts: u32,
    /// Longest wait between bytes of a block (SDK: about 1 s).
    pub block_timeout: Duration,
    /// Line idle this long ends a silent or finished session.
    pub idle: Duration,
    /// How long the module waits for the agent's first byte (a deadline for a
    /// loaded machine, not a protocol time).
    pub first_byte: Duration,
    /// Written with `new_version` once an upgrade completed.
    pub version_file: Option<PathBuf>,
    /// The reset line: when this file appears (the agent's `reset_command`
    /// creates it), the module resets into its recovery window.
    pub reset_file: Option<PathBuf>,
    pub new_version: String,
    pub faults: Faults,
}

impl SimConfig {
    pub fn new() -> Self {
        SimConfig {
            recovery_window: Duration::from_secs(4),
            start_interval: Duration::from_millis(200),
            start_attempts: 50,
            block_timeout: Duration::from_secs(1),
            idle: Duration::from_millis(800),
            first_byte: Duration::from_secs(20),
            version_file: None,
            reset_file: None,
            new_version: "2.0".into(),
            faults: Faults::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimOutcome {
    /// The image was received and the EOT acknowledged.
    Complete,
    /// The sender sent CAN CAN.
    SenderCanceled,
    /// The receiver canceled (bad header type, too many attempts).
    ReceiverCanceled(String),
    /// Silent by fault injection.
    Silent,
    /// Nothing (more) came from the sender.
    TimedOut(String),
    /// EOT came before the header's length of contents: nothing new boots.
    Incomplete(String),
}

#[derive(Clone)]
pub struct SimResult {
    pub outcome: SimOutcome,
    pub flash: Vec<u8>,
    /// Header type and length, from block 1.
    pub header: Option<(u8, u32)>,
    /// Contents bytes written into the region.
    pub written: u32,
    pub blocks_seen: u32,
    pub duplicates: u32,
    pub naks: u32,
    pub reboots: u32,
    /// Resets through the reset line.
    pub resets: u32,
    pub update_commands: u32,
    /// Every byte the module received.
    pub received: Vec<u8>,
}

impl std::fmt::Debug for SimResult {
    /// Everything but the flash (1 MiB).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimResult")
            .field("outcome", &self.outcome)
            .field("header", &self.header)
            .field("written", &self.written)
            .field("blocks_seen", &self.blocks_seen)
            .field("duplicates", &self.duplicates)
            .field("naks", &self.naks)
            .field("reboots", &self.reboots)
            .field("resets", &self.resets)
            .field("update_commands", &self.update_commands)
            .field("received_bytes", &self.received.len())
            .field(
                "received_start",
                &String::from_utf8_lossy(&self.received[..self.received.len().min(40)]),
            )
            .finish()
    }
}

impl SimResult {
    /// The region's contents as written (`header` length from the region offset).
    pub fn region_contents(&self) -> Option<&[u8]> {
        let (t, len) = self.header?;
        let off = region_offset(t)?;
        Some(&self.flash[off..off + len as usize])
    }
}

struct Sim<'a> {
    pty: &'a Pty,
    cfg: SimConfig,
    res: SimResult,
}

impl Sim<'_> {
    async fn byte(&mut self, timeout: Duration) -> Option<u8> {
        let b = self.pty.read_byte(timeout).await?;
        self.res.received.push(b);
        Some(b)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.pty.write_all(bytes).await.expect("pty write");
    }

    /// Swallows everything until the line is idle.
    async fn go_silent(&mut self) {
        while self.byte(self.cfg.idle).await.is_some() {}
    }

    /// The next `AT#<cmd>` line or reset (see [`SimConfig::reset_file`]); `None`
    /// when the line stays idle for `idle`.
    async fn app_event(&mut self, idle: Duration) -> Option<AppEvent> {
        let Some(reset) = self.cfg.reset_file.clone() else {
            return self.at_command(idle).await.map(AppEvent::Command);
        };
        let tick = Duration::from_millis(20);
        let mut deadline = tokio::time::Instant::now() + idle;
        let mut line: Vec<u8> = Vec::new();
        loop {
            if std::fs::remove_file(&reset).is_ok() {
                return Some(AppEvent::Reset);
            }
            let Some(b) = self.byte(tick).await else {
                if tokio::time::Instant::now() >= deadline {
                    return None;
                }
                continue;
            };
            deadline = tokio::time::Instant::now() + idle;
            if b == b'\r' || b == b'\n' {
                if let Some(pos) = line.windows(3).position(|w| w == b"AT#") {
                    let cmd = String::from_utf8_lossy(&line[pos + 3..]).into_owned();
                    return Some(AppEvent::Command(cmd));
                }
                line.clear();
            } else {
                line.push(b);
            }
        }
    }

    /// Reads one `AT#<cmd>` line (text after `AT#` up to CR/LF); `None` when the
    /// line stays idle for `wait`.
    async fn at_command(&mut self, wait: Duration) -> Option<String> {
        let mut line: Vec<u8> = Vec::new();
        loop {
            let b = self.byte(wait).await?;
            if b == b'\r' || b == b'\n' {
                if let Some(pos) = line.windows(3).position(|w| w == b"AT#") {
                    return Some(String::from_utf8_lossy(&line[pos + 3..]).into_owned());
                }
                line.clear();
            } else {
                line.push(b);
            }
        }
    }
}

/// What the application sees.
enum AppEvent {
    Command(String),
    Reset,
}

/// Plays one session: application, `AT#Reboot`, recovery mode, `AT#UpdateFW`,
/// XMODEM; returns when the transfer ended or the line stayed idle.
pub async fn run(pty: &Pty, cfg: SimConfig) -> SimResult {
    let mut sim = Sim {
        pty,
        res: SimResult {
            outcome: SimOutcome::TimedOut("no AT#Reboot".into()),
            flash: vec![0xFF; FLASH_SIZE],
            header: None,
            written: 0,
            blocks_seen: 0,
            duplicates: 0,
            naks: 0,
            reboots: 0,
            resets: 0,
            update_commands: 0,
            received: Vec::new(),
        },
        cfg,
    };
    if sim.cfg.faults.silent {
        sim.go_silent().await;
        sim.res.outcome = SimOutcome::Silent;
        return sim.res;
    }
    let idle = sim.cfg.idle;
    let mut ignored = 0;
    loop {
        // Application: wait for AT#Reboot, or a reset through the reset line.
        let wait = if sim.res.received.is_empty() && sim.res.resets == 0 {
            sim.cfg.first_byte
        } else {
            idle
        };
        match sim.app_event(wait).await {
            None => return sim.res,
            Some(AppEvent::Reset) => sim.res.resets += 1,
            Some(AppEvent::Command(cmd)) => {
                if !cmd.starts_with("Reboot") || sim.cfg.faults.app_dead {
                    continue;
                }
                if ignored < sim.cfg.faults.ignore_reboots {
                    ignored += 1;
                    continue;
                }
                sim.res.reboots += 1;
            }
        }
        sim.send(b"\r\n[loader] boot\r\n==> Recovery Mode\r\n")
            .await;
        // Recovery: wait for AT#UpdateFW within the window.
        let window_end = tokio::time::Instant::now() + sim.cfg.recovery_window;
        loop {
            let left = window_end.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let Some(cmd) = sim.at_command(left).await else {
                break;
            };
            if cmd.starts_with("UpdateFW") {
                sim.res.update_commands += 1;
                // The AT parser's debug print, then the receiver.
                sim.send(format!("AtCmdLen={}, Type=1 \n", cmd.len()).as_bytes())
                    .await;
                sim.receive().await;
                return sim.res;
            }
        }
        sim.send(b"<== RecoveryMode\n").await;
    }
}

impl Sim<'_> {
    /// `iot_xmodem_update_fw`: 128-byte blocks, CRC-16 ('C').
    async fn receive(&mut self) {
        let mut packetno: u8 = 1;
        let mut pkt_num: u32 = 0;
        let mut started = false;
        let mut attempts = 0;
        loop {
            if !started {
                if attempts >= self.cfg.start_attempts {
                    self.send(&[CAN, CAN, CAN]).await;
                    self.res.outcome = SimOutcome::ReceiverCanceled("no start".into());
                    return;
                }
                attempts += 1;
                self.send(b"C").await;
            }
            let wait = if started {
                self.cfg.block_timeout * 3
            } else {
                self.cfg.start_interval
            };
            let Some(c) = self.byte(wait).await else {
                if started {
                    self.res.outcome = SimOutcome::TimedOut(format!("after block {pkt_num}"));
                    return;
                }
                continue;
            };
            match c {
                SOH | STX => {}
                EOT => {
                    // The SDK only marks the image bootable when the header's
                    // length arrived; otherwise the old firmware keeps running.
                    let expected = self.res.header.map(|(_, len)| len);
                    if expected != Some(self.res.written) {
                        self.send(&[ACK]).await;
                        self.res.outcome = SimOutcome::Incomplete(format!(
                            "{} of {expected:?} bytes at EOT",
                            self.res.written
                        ));
                        return;
                    }
                    // The new version is in place before the ACK: the agent asks
                    // for it as soon as the ACK arrives, and a real version
                    // command waits for the rebooted module to answer.
                    if let Some(f) = &self.cfg.version_file {
                        std::fs::write(f, format!("{}\n", self.cfg.new_version)).unwrap();
                    }
                    self.send(&[ACK]).await;
                    self.res.outcome = SimOutcome::Complete;
                    return;
                }
                CAN => {
                    if self.byte(self.cfg.block_timeout).await == Some(CAN) {
                        self.send(&[ACK]).await;
                        self.res.outcome = SimOutcome::SenderCanceled;
                        return;
                    }
                    continue;
                }
                _ => continue,
            }
            started = true;
            // Number, complement, 128 data bytes, CRC-16 (the SDK reads 128 bytes
            // even after STX).
            let mut rest = Vec::with_capacity(132);
            let mut short = false;
            for _ in 0..132 {
                match self.byte(self.cfg.block_timeout).await {
                    Some(b) => rest.push(b),
                    None => {
                        short = true;
                        break;
                    }
                }
            }
            self.res.blocks_seen += 1;
            let arrival = self.res.blocks_seen;
            if self
                .cfg
                .faults
                .silent_from_block
                .is_some_and(|n| arrival >= n)
            {
                self.go_silent().await;
                self.res.outcome = SimOutcome::Silent;
                return;
            }
            if self.cfg.faults.corrupt == Some(arrival) && !short {
                rest[10] ^= 0x01;
            }
            let nak_fault = self.cfg.faults.nak == Some(arrival);
            let good = !short
                && rest[0] == !rest[1]
                && (rest[0] == packetno || rest[0] == packetno.wrapping_sub(1))
                && crc16(&rest[2..130]) == u16::from_be_bytes([rest[130], rest[131]]);
            if !good || nak_fault {
                self.res.naks += 1;
                self.send(&[NAK]).await;
                continue;
            }
            if rest[0] == packetno {
                pkt_num += 1;
                let data = &rest[2..130];
                if pkt_num == 1 {
                    if data[..3] == [0x76, 0x81, 0xAA] {
                        let len = u32::from_le_bytes([data[3], data[4], data[5], data[6]]);
                        self.res.header = Some((data[7], len));
                    }
                } else {
                    let Some((t, len)) = self.res.header else {
                        self.send(&[CAN, CAN, CAN]).await;
                        self.res.outcome = SimOutcome::ReceiverCanceled("no header".into());
                        return;
                    };
                    let Some(base) = region_offset(t) else {
                        self.send(&[CAN, CAN, CAN]).await;
                        self.res.outcome =
                            SimOutcome::ReceiverCanceled(format!("invalid type {t}"));
                        return;
                    };
                    let count = (len - self.res.written).min(128) as usize;
                    let at = base + (pkt_num as usize - 2) * 128;
                    self.res.flash[at..at + count].copy_from_slice(&data[..count]);
                    self.res.written += count as u32;
                }
                packetno = packetno.wrapping_add(1);
            } else {
                self.res.duplicates += 1;
            }
            if self.cfg.faults.lose_ack == Some(arrival) {
                continue;
            }
            let garbage = self.cfg.faults.garbage_before_ack.clone();
            self.send(&garbage).await;
            self.send(&[ACK]).await;
        }
    }
}
