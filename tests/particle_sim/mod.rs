//! Test-only Particle device (Device OS 5.9 on nRF52840) in and out of
//! listening mode, on a pty whose path is reached through a symlink (as
//! `/dev/serial/by-id/…`): the link disappears while the device resets and
//! comes back pointing at a fresh pty, as a USB device re-enumerates.
//!
//! Written from device-os v5.9.0, independently of the agent:
//! - `system_update.cpp` `system_lineCodingBitRateHandler`: the host setting
//!   28800 baud starts listening mode. A pty carries the baud rate in its
//!   termios, which both sides share: the simulator reads it with `TCGETS2`
//!   and, when the device leaves listening mode or resets, sets 9600 again so
//!   that the next open at 28800 is a change it sees.
//! - `system_setup.cpp`: `s`, `v`, `i`, `x`, `f`; a SOH/STX starts a transfer
//!   without `f`. Device OS 6 (`os6`) answers `f` with CAs and a notice.
//! - `system_ymodem.cpp`: the receiver (no CRC-16 check, 'C' only after a
//!   timeout, validation before the last ACK), `ota_flash_hal.cpp`: the
//!   checks and their codes (end address -1300, CRC -1330, platform -1360).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use super::xmodem_sim::Pty;
use super::xmodem_sim::crc16;

const SOH: u8 = 0x01;
const STX: u8 = 0x02;
const EOT: u8 = 0x04;
const ACK: u8 = 0x06;
const NAK: u8 = 0x15;
const CA: u8 = 0x18;
const CRC16: u8 = b'C';
const LISTEN_BAUD: u32 = 28_800;
const IDLE_BAUD: u32 = 9_600;
/// `MAX_ERRORS` of the receiver.
const MAX_ERRORS: u32 = 5;
/// The user part's bounds on nRF52840 (256 KiB at 0xB4000 in 5.x).
const USER_START: u32 = 0x000B_4000;
const USER_MAX: usize = 256 * 1024;

/// A user binary as the Particle toolchain builds it: module prefix, code,
/// product suffix, SHA-256, CRC-32 big-endian.
pub fn user_binary(
    platform: u16,
    product: u16,
    version: u16,
    code_len: usize,
    seed: u8,
) -> Vec<u8> {
    let len = 24 + code_len + 40 + 4;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&USER_START.to_le_bytes());
    b.extend_from_slice(&(USER_START + (len - 4) as u32).to_le_bytes());
    b.extend_from_slice(&[0, 0]); // reserved, flags
    b.extend_from_slice(&6u16.to_le_bytes()); // module version
    b.extend_from_slice(&platform.to_le_bytes());
    b.extend_from_slice(&[5, 1]); // user part, index 1
    b.extend_from_slice(&[4, 1, 0x0C, 0x17]); // needs system part 1 v5900
    b.extend_from_slice(&[0, 0, 0, 0]);
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    b.extend((0..code_len).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x >> 8) as u8
    }));
    b.extend_from_slice(&product.to_le_bytes());
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    let sha: [u8; 32] = Sha256::digest(&b).into();
    b.extend_from_slice(&sha);
    b.extend_from_slice(&40u16.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

/// The suffix SHA-256 of a user binary, as `s` prints it.
pub fn sha_of(binary: &[u8]) -> String {
    let n = binary.len();
    hex::encode_upper(&binary[n - 38..n - 6])
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub platform_id: u16,
    /// Device OS 6: no YMODEM.
    pub os6: bool,
    /// The receiver's `NAK_TIMEOUT` (device: 5 s).
    pub nak_timeout: Duration,
    /// How long the port is away while the device resets.
    pub reset_gap: Duration,
    /// The user binary the device runs.
    pub user: Option<Vec<u8>>,
    /// The symlink the agent opens.
    pub port_link: PathBuf,
}

/// What the device did, for assertions.
#[derive(Debug, Clone, Default)]
pub struct SimState {
    pub user_sha: Option<String>,
    pub listening: bool,
    /// `f` commands and transfers started by a block.
    pub flash_starts: u32,
    /// Every `Validation failed:` code sent.
    pub validation_failures: Vec<i32>,
    pub applied: u32,
    pub resets: u32,
    /// Blocks whose CRC-16 was wrong (the device does not check it).
    pub bad_crc16: u32,
    /// Data blocks received in all.
    pub blocks: u32,
}

/// A running simulated device; stops when dropped.
pub struct Sim {
    pub state: Arc<Mutex<SimState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sim {
    pub fn start(cfg: SimConfig) -> Sim {
        let state = Arc::new(Mutex::new(SimState {
            user_sha: cfg.user.as_deref().map(sha_of),
            ..SimState::default()
        }));
        let task = tokio::spawn(run(cfg, state.clone()));
        Sim { state, task }
    }

    pub fn state(&self) -> SimState {
        self.state.lock().unwrap().clone()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One boot after another: a fresh pty behind the link each time.
async fn run(cfg: SimConfig, state: Arc<Mutex<SimState>>) {
    let mut user = cfg.user.clone();
    loop {
        let pty = Pty::open();
        pty.set_baud(IDLE_BAUD);
        let _ = std::fs::remove_file(&cfg.port_link);
        std::os::unix::fs::symlink(&pty.slave_path, &cfg.port_link).unwrap();
        boot(&cfg, &state, &pty, &mut user).await;
        // Reset: the USB device goes away, then enumerates again.
        std::fs::remove_file(&cfg.port_link).unwrap();
        drop(pty);
        {
            let mut s = state.lock().unwrap();
            s.resets += 1;
            s.listening = false;
            s.user_sha = user.as_deref().map(sha_of);
        }
        tokio::time::sleep(cfg.reset_gap).await;
    }
}

/// Runs until the device resets.
async fn boot(cfg: &SimConfig, state: &Mutex<SimState>, pty: &Pty, user: &mut Option<Vec<u8>>) {
    let mut last_baud = pty.baud();
    let mut listening = false;
    let opens = OpenWatch::new(&pty.slave_path);
    let mut coding_pending = false;
    // A host open sets the line coding (cdc-acm does on every open), a baud
    // change sets it too: either at 28800 starts listening mode.
    let mut line_coding = |listening: &mut bool| {
        coding_pending |= opens.opened();
        let baud = pty.baud();
        if baud != last_baud || coding_pending {
            if baud == LISTEN_BAUD {
                *listening = true;
                coding_pending = false;
            }
            last_baud = baud;
        }
    };
    loop {
        line_coding(&mut listening);
        state.lock().unwrap().listening = listening;
        let Some(b) = pty.read_byte(Duration::from_millis(10)).await else {
            continue;
        };
        // The line coding (a control request) reaches the device before any
        // byte the host writes after it: a host that writes `f` right after
        // opening at 28800 (particle-cli) is heard in listening mode.
        line_coding(&mut listening);
        if !listening {
            continue; // the application does not read the USB serial
        }
        state.lock().unwrap().listening = listening;
        match b {
            b's' => {
                let info = module_info(cfg.platform_id, user.as_deref());
                let _ = pty.write_all(format!("{{{info}}}\r\n").as_bytes()).await;
            }
            b'v' => {
                let _ = pty.write_all(b"system firmware version: 5.9.0\n\r\n").await;
            }
            b'i' => {
                let _ = pty
                    .write_all(b"Device ID: e00fce68aabbccddeeff0011\r\n")
                    .await;
            }
            b'x' => listening = false,
            b'f' if cfg.os6 => {
                let mut out =
                    b"Waiting for the binary file to be sent ... (press 'a' to abort)\r\n".to_vec();
                out.extend_from_slice(&[CA; 4]);
                out.extend_from_slice(b"Serial/YModem flashing is no longer supported\r\n");
                let _ = pty.write_all(&out).await;
            }
            b'f' | SOH | STX => {
                if b == b'f' {
                    let _ = pty
                        .write_all(
                            b"Waiting for the binary file to be sent ... (press 'a' to abort)\r\n",
                        )
                        .await;
                } else {
                    pty.unread(&[b]);
                }
                state.lock().unwrap().flash_starts += 1;
                if flash_update(cfg, state, pty, user).await {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// Opens of the pty's slave, seen through inotify (`IN_OPEN`).
struct OpenWatch {
    fd: std::os::fd::OwnedFd,
}

impl OpenWatch {
    fn new(path: &std::path::Path) -> OpenWatch {
        use nix::libc;
        use std::os::fd::FromRawFd;
        let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: plain syscalls on a fresh fd that `OwnedFd` then owns.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0, "inotify_init1");
            assert!(libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_OPEN) >= 0);
            OpenWatch {
                fd: std::os::fd::OwnedFd::from_raw_fd(fd),
            }
        }
    }

    /// Whether the slave was opened since the last call.
    fn opened(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut buf = [0u8; 4096];
        let mut any = false;
        // SAFETY: reads into a buffer of the given size.
        while unsafe { nix::libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) }
            > 0
        {
            any = true;
        }
        any
    }
}

/// `system_module_info` of a device with a bootloader, a system part and
/// (maybe) a user part.
fn module_info(platform: u16, user: Option<&[u8]>) -> String {
    let mut m = vec![
        r#"{"s":49152,"l":"m","vc":30,"vv":30,"f":"b","n":"0","v":2300,"d":[]}"#.to_string(),
        r#"{"s":1036288,"l":"m","vc":30,"vv":30,"f":"s","n":"1","v":5900,"d":[{"f":"b","n":"0","v":2300}]}"#.to_string(),
    ];
    if let Some(u) = user {
        m.push(format!(
            r#"{{"s":262144,"l":"m","vc":30,"vv":30,"u":"{}","f":"u","n":"1","v":6,"d":[{{"f":"s","n":"1","v":5900}}]}}"#,
            sha_of(u)
        ));
    }
    format!(r#""p":{platform},"imei":"","m":[{}]"#, m.join(","))
}

/// `Ymodem_Serial_Flash_Update` then `system_fileTransfer`: true when the
/// device resets.
async fn flash_update(
    cfg: &SimConfig,
    state: &Mutex<SimState>,
    pty: &Pty,
    user: &mut Option<Vec<u8>>,
) -> bool {
    let (size, image, name) = receive_file(cfg, state, pty).await;
    if size <= 0 {
        let _ = pty.write_all(&[CA, CA]).await;
        let msg = match size {
            -1 => "The file size is higher than the allowed space memory!",
            -2 => "Failed to save chunk!",
            -3 => "Aborted by user.",
            _ => "Failed to receive the file!",
        };
        let _ = pty.write_all(format!("{msg}\r\n").as_bytes()).await;
        return false;
    }
    match validate(&image, cfg.platform_id) {
        Ok(()) => {
            let mut out = vec![ACK];
            out.extend_from_slice(
                format!(
                    "\r\nDownloaded file successfully!\r\nName: {name}\r\nSize: {size} bytes\r\n\
                     Restarting system to apply firmware update...\r\n"
                )
                .as_bytes(),
            );
            let _ = pty.write_all(&out).await;
            *user = Some(image);
            state.lock().unwrap().applied += 1;
        }
        Err(code) => {
            let _ = pty.write_all(&[CA, CA]).await;
            let _ = pty
                .write_all(format!("Validation failed: {code}\r\n").as_bytes())
                .await;
            state.lock().unwrap().validation_failures.push(code);
        }
    }
    // The device flushes, waits and resets, after success and failure alike.
    tokio::time::sleep(Duration::from_millis(100)).await;
    true
}

/// The module checks of `HAL_FLASH_End` in their order.
fn validate(image: &[u8], platform: u16) -> Result<(), i32> {
    if image.len() < 24 + 4 {
        return Err(-1300);
    }
    let le32 = |at: usize| u32::from_le_bytes(image[at..at + 4].try_into().unwrap());
    let (start, end) = (le32(0), le32(4));
    let module_len = end.wrapping_sub(start) as usize;
    if end < start || module_len + 4 > USER_MAX || module_len + 4 > image.len() {
        return Err(-1300);
    }
    let stored = u32::from_be_bytes(image[module_len..module_len + 4].try_into().unwrap());
    if crc32fast::hash(&image[..module_len]) != stored {
        return Err(-1330);
    }
    if u16::from_le_bytes([image[12], image[13]]) != platform {
        return Err(-1360);
    }
    Ok(())
}

enum Packet {
    Data(Vec<u8>),
    Eot,
    SenderAbort,
    UserAbort,
    Space,
    Error,
}

/// `YModem::receive_packet`.
async fn receive_packet(pty: &Pty, timeout: Duration, state: &Mutex<SimState>) -> Packet {
    let Some(c) = pty.read_byte(timeout).await else {
        return Packet::Error;
    };
    let size = match c {
        SOH => 128,
        STX => 1024,
        EOT => return Packet::Eot,
        CA => {
            return match pty.read_byte(timeout).await {
                Some(CA) => Packet::SenderAbort,
                _ => Packet::Error,
            };
        }
        b'A' | b'a' => return Packet::UserAbort,
        b' ' => return Packet::Space,
        _ => return Packet::Error,
    };
    let Some(rest) = pty.read_exact(size + 4, timeout).await else {
        return Packet::Error;
    };
    if rest[0] != !rest[1] {
        return Packet::Error;
    }
    let crc = u16::from_be_bytes([rest[size + 2], rest[size + 3]]);
    if crc != crc16(&rest[2..size + 2]) {
        state.lock().unwrap().bad_crc16 += 1;
    }
    let mut p = vec![rest[0]];
    p.extend_from_slice(&rest[2..size + 2]);
    Packet::Data(p)
}

/// `YModem::receive_file` with `handle_packet`: (size or error code, image, name).
async fn receive_file(
    cfg: &SimConfig,
    state: &Mutex<SimState>,
    pty: &Pty,
) -> (i64, Vec<u8>, String) {
    let mut image = Vec::new();
    let (mut name, mut file_length) = (String::new(), 0i64);
    let mut errors = 0;
    loop {
        let mut packets: u32 = 0;
        loop {
            match receive_packet(pty, cfg.nak_timeout, state).await {
                Packet::SenderAbort => {
                    let _ = pty.write_all(&[ACK]).await;
                    return (0, image, name);
                }
                Packet::Eot => {
                    errors = 0;
                    let _ = pty.write_all(&[ACK]).await;
                    break;
                }
                Packet::Data(p) => {
                    errors = 0;
                    if p[0] != (packets & 0xff) as u8 {
                        let _ = pty.write_all(&[NAK]).await;
                        continue;
                    }
                    let data = &p[1..];
                    if packets == 0 {
                        if data[0] == 0 {
                            // Final empty header: validated by the caller before the ACK.
                            return (file_length, image, name);
                        }
                        let nul = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                        name = String::from_utf8_lossy(&data[..nul]).into_owned();
                        let digits: String = data[nul + 1..]
                            .iter()
                            .take(16)
                            .take_while(|b| b.is_ascii_digit())
                            .map(|&b| b as char)
                            .collect();
                        file_length = digits.parse().unwrap_or(0);
                        if file_length as usize > USER_MAX {
                            let _ = pty.write_all(&[CA, CA]).await;
                            return (-1, image, name);
                        }
                        let _ = pty.write_all(&[ACK, CRC16]).await;
                    } else {
                        if image.len() + data.len() > USER_MAX + 1024 {
                            let _ = pty.write_all(&[CA, CA]).await;
                            return (-2, image, name);
                        }
                        image.extend_from_slice(data);
                        image.truncate(file_length as usize);
                        state.lock().unwrap().blocks += 1;
                        let _ = pty.write_all(&[ACK]).await;
                    }
                    packets += 1;
                }
                Packet::UserAbort => {
                    let _ = pty.write_all(&[CA, CA]).await;
                    return (-3, image, name);
                }
                Packet::Space => {
                    let _ = pty.write_all(&[ACK]).await;
                }
                Packet::Error => {
                    errors += 1;
                    let _ = pty.write_all(&[CRC16]).await;
                    if errors > MAX_ERRORS {
                        let _ = pty.write_all(&[CA, CA]).await;
                        return (0, image, name);
                    }
                }
            }
        }
    }
}
