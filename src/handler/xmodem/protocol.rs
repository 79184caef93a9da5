//! The sending side of XMODEM (checksum and CRC-16), XMODEM-1K and YMODEM (batch
//! of one file), written against [`Link`] so it runs over a UART, a pty or a pipe.
//!
//! Only the sender lives here; every byte from the receiver is matched against a
//! handful of control characters and anything else is ignored, so no input can
//! make it panic or wait longer than its deadlines.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::config::XmodemProtocol;
use crate::serial::{Link, read_byte};

/// Start of a 128-byte block.
pub const SOH: u8 = 0x01;
/// Start of a 1024-byte block.
pub const STX: u8 = 0x02;
/// End of transmission.
pub const EOT: u8 = 0x04;
pub const ACK: u8 = 0x06;
pub const NAK: u8 = 0x15;
/// Cancel; two in a row abort the transfer.
pub const CAN: u8 = 0x18;
/// The receiver's request for CRC-16 mode.
pub const CRC_REQUEST: u8 = b'C';
/// Pads the last data block (CP/M end of file).
pub const CPMEOF: u8 = 0x1A;

/// How many CANs the sender sends to abort (receivers need two in a row).
pub const CAN_COUNT: usize = 5;

/// After a possible start character, the line must stay quiet this long (at most),
/// so that text such as "Checking…" from the application is not taken for a 'C'.
const START_QUIET: Duration = Duration::from_millis(50);

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0, no reflection).
pub fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The original XMODEM checksum: the sum of the bytes modulo 256.
pub fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// How blocks are checked, as the receiver asked at the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Receiver sent 'C': two CRC-16 bytes, big-endian.
    Crc16,
    /// Receiver sent NAK: one checksum byte.
    Checksum,
}

/// One block on the wire: `SOH|STX`, number, its complement, `size` bytes of
/// `payload` padded with `pad`, then the checksum or CRC. `size` is 128 or 1024;
/// a longer payload is cut.
pub fn encode_block(number: u8, payload: &[u8], size: usize, pad: u8, check: Check) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 5);
    out.push(if size == 1024 { STX } else { SOH });
    out.push(number);
    out.push(!number);
    let data_start = out.len();
    let n = payload.len().min(size);
    out.extend_from_slice(&payload[..n]);
    out.resize(data_start + size, pad);
    let data = &out[data_start..];
    match check {
        Check::Crc16 => {
            let crc = crc16_xmodem(data);
            out.extend_from_slice(&crc.to_be_bytes());
        }
        Check::Checksum => {
            let sum = checksum(data);
            out.push(sum);
        }
    }
    out
}

/// The payload of a YMODEM header (block 0): file name, NUL, then the size in
/// decimal and, when known, the modification time in octal seconds since the
/// epoch, NUL. A payload too long for 128 bytes needs a 1024-byte block.
pub fn ymodem_header(name: &str, size: u64, mtime: Option<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(name.bytes().filter(|&b| b != 0));
    out.push(0);
    let info = match mtime {
        Some(t) => format!("{size} {t:o}"),
        None => size.to_string(),
    };
    out.extend_from_slice(info.as_bytes());
    out.push(0);
    out
}

/// A name the receiver can store: the base name, only `[A-Za-z0-9._-]` (others
/// become `_`), at most 64 bytes; `firmware.bin` when nothing usable is left.
pub fn sanitize_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        "firmware.bin".to_string()
    } else {
        clean
    }
}

/// What the sender is configured to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub protocol: XmodemProtocol,
    /// Sent before each wait for the receiver's start.
    pub enter_command: Option<Vec<u8>>,
    /// Longest wait for the start, or for the answer to EOT.
    pub response_timeout: Duration,
    /// Longest wait for a block's ACK or NAK before the block is sent again (a
    /// receiver that gives up after a few short silences, as the MT7681's does,
    /// must hear the repeat before then).
    pub block_timeout: Duration,
    /// Attempts of the start, of each block and of EOT.
    pub retries: u32,
    /// Line speed, to add a block's time on the wire to its deadline (0: none).
    pub baud: u32,
}

/// The file to send, read block by block (an image is never held whole in
/// memory).
pub struct File<'a> {
    /// YMODEM's file name (already sanitized).
    pub name: &'a str,
    /// Bytes to send: exactly `len` are read from `data`.
    pub len: u64,
    pub data: &'a mut (dyn AsyncRead + Unpin + Send),
    /// Modification time, seconds since the epoch (YMODEM header only).
    pub mtime: Option<u64>,
}

/// Why a transfer failed: the protocol step and what went wrong there.
#[derive(Debug)]
pub struct XmodemError {
    /// E.g. `xmodem block 12/80`.
    pub step: String,
    pub kind: ErrorKind,
}

#[derive(Debug)]
pub enum ErrorKind {
    /// The receiver sent CAN CAN.
    ReceiverCanceled,
    /// No (usable) answer after every attempt.
    NoAnswer(String),
    /// The link failed.
    Io(std::io::Error),
    /// The update was canceled before the first data block (the commit point).
    Canceled,
}

impl XmodemError {
    /// Whether the sender should tell the receiver to give up (CAN CAN): not when
    /// the receiver gave up itself.
    pub fn wants_cancel(&self) -> bool {
        !matches!(self.kind, ErrorKind::ReceiverCanceled)
    }

    pub fn message(&self) -> String {
        match &self.kind {
            ErrorKind::ReceiverCanceled => "receiver canceled".to_string(),
            ErrorKind::NoAnswer(m) => m.clone(),
            ErrorKind::Io(e) => format!("serial link: {e}"),
            ErrorKind::Canceled => "canceled before the first data block".to_string(),
        }
    }
}

impl fmt::Display for XmodemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.message())
    }
}

impl std::error::Error for XmodemError {}

/// What the receiver answered to a block or EOT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Ack,
    Nak,
    Canceled,
    Timeout,
}

/// Sends CANs so the receiver abandons the transfer and is ready for a new one.
pub async fn send_cancel<L: Link>(link: &mut L, timeout: Duration) -> std::io::Result<()> {
    let buf = [CAN; CAN_COUNT];
    match tokio::time::timeout(timeout, async {
        link.write_all(&buf).await?;
        link.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "writing CAN timed out",
        )),
    }
}

/// The size of the data block that starts with `left` bytes to go. XMODEM: 128
/// bytes. XMODEM-1K and YMODEM: 1024 bytes, except that a remainder of at most
/// 384 bytes goes in 128-byte blocks (less padding and fewer bytes on the wire, as
/// `sz` does).
fn block_size(protocol: XmodemProtocol, left: u64) -> usize {
    if protocol != XmodemProtocol::Xmodem && left > 3 * 128 {
        1024
    } else {
        128
    }
}

/// How many data blocks a `len`-byte file takes (see [`block_size`]).
fn block_count(protocol: XmodemProtocol, len: u64) -> u64 {
    if protocol == XmodemProtocol::Xmodem || len <= 3 * 128 {
        return len.div_ceil(128);
    }
    let big = (len - 3 * 128).div_ceil(1024);
    big + len.saturating_sub(big * 1024).div_ceil(128)
}

/// One transfer over one link.
pub struct Sender<'l, L: Link> {
    link: &'l mut L,
    opts: Options,
    label: &'static str,
}

impl<'l, L: Link> Sender<'l, L> {
    pub fn new(link: &'l mut L, opts: Options) -> Self {
        let label = match opts.protocol {
            XmodemProtocol::Xmodem => "xmodem",
            XmodemProtocol::Xmodem1k => "xmodem-1k",
            XmodemProtocol::Ymodem => "ymodem",
        };
        Sender { link, opts, label }
    }

    fn err(&self, step: impl fmt::Display, kind: ErrorKind) -> XmodemError {
        XmodemError {
            step: format!("{} {step}", self.label),
            kind,
        }
    }

    fn io(&self, step: impl fmt::Display, e: std::io::Error) -> XmodemError {
        self.err(step, ErrorKind::Io(e))
    }

    /// Time a block of `len` bytes takes on the wire at the configured baud rate
    /// (10 bits per byte).
    fn wire_time(&self, len: usize) -> Duration {
        if self.opts.baud == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(len as u64 * 10 * 1_000_000 / u64::from(self.opts.baud))
    }

    async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let limit = self.opts.response_timeout + self.wire_time(bytes.len());
        match tokio::time::timeout(limit, async {
            self.link.write_all(bytes).await?;
            self.link.flush().await
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("write blocked for {}", humantime::format_duration(limit)),
            )),
        }
    }

    /// Sends `file`; `commit()` is asked right before the first data block (the
    /// receiver writes flash from it on; `false`: stop, canceled), and
    /// `on_ack(bytes_acknowledged)` is called after every acknowledged data block.
    pub async fn send(
        &mut self,
        file: File<'_>,
        commit: impl FnOnce() -> bool,
        mut on_ack: impl FnMut(u64),
    ) -> Result<(), XmodemError> {
        let check = self.wait_start().await?;
        let ymodem = self.opts.protocol == XmodemProtocol::Ymodem;
        if ymodem {
            let header = ymodem_header(file.name, file.len, file.mtime);
            let size = if header.len() > 128 { 1024 } else { 128 };
            let block = encode_block(0, &header, size, 0, check);
            self.send_block(&block, "header").await?;
            self.wait_crc_request("header", "no 'C' after the header's ACK")
                .await?;
        }

        let total = block_count(self.opts.protocol, file.len);
        if !commit() {
            return Err(self.err(format!("block 1/{total}"), ErrorKind::Canceled));
        }
        let mut chunk = vec![0u8; 1024];
        let mut sent = 0u64;
        let mut i = 0u64;
        while sent < file.len {
            let size = block_size(self.opts.protocol, file.len - sent);
            i += 1;
            let step = format!("block {i}/{total}");
            let take = (file.len - sent).min(size as u64) as usize;
            file.data
                .read_exact(&mut chunk[..take])
                .await
                .map_err(|e| self.io(format!("{step} (reading the image)"), e))?;
            let number = (i % 256) as u8;
            let block = encode_block(number, &chunk[..take], size, CPMEOF, check);
            self.send_block(&block, &step).await?;
            sent += take as u64;
            on_ack(sent);
        }

        self.send_eot().await?;
        if ymodem {
            self.wait_crc_request("end of batch", "no 'C' after EOT")
                .await?;
            let block = encode_block(0, &[], 128, 0, check);
            self.send_block(&block, "end of batch").await?;
        }
        Ok(())
    }

    /// Waits for the receiver's 'C' (or NAK, plain XMODEM only), sending the enter
    /// command before each attempt.
    async fn wait_start(&mut self) -> Result<Check, XmodemError> {
        let mut saw_nak = false;
        let quiet = START_QUIET.min(self.opts.response_timeout / 4);
        for _attempt in 0..self.opts.retries {
            if let Some(cmd) = self.opts.enter_command.clone() {
                self.write(&cmd).await.map_err(|e| self.io("start", e))?;
            }
            let deadline = Instant::now() + self.opts.response_timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let Some(b) = read_byte(self.link, left)
                    .await
                    .map_err(|e| self.io("start", e))?
                else {
                    break;
                };
                let check = match b {
                    CRC_REQUEST => Check::Crc16,
                    NAK if self.opts.protocol == XmodemProtocol::Xmodem => Check::Checksum,
                    NAK => {
                        saw_nak = true;
                        continue;
                    }
                    _ => continue,
                };
                // A start character stands alone: the receiver then waits. Text
                // that merely contains a 'C' goes on.
                if self.quiet_after_start(quiet).await? {
                    tracing::debug!(?check, "receiver started");
                    return Ok(check);
                }
            }
        }
        let mut msg = format!(
            "no 'C'{} from the receiver after {} attempts of {}",
            if self.opts.protocol == XmodemProtocol::Xmodem {
                " or NAK"
            } else {
                ""
            },
            self.opts.retries,
            humantime::format_duration(self.opts.response_timeout)
        );
        if saw_nak {
            msg.push_str(&format!(
                " (it sent NAK, asking for checksum mode, which {} does not support)",
                self.label
            ));
        }
        if self.opts.enter_command.is_some() {
            msg.push_str("; the enter command was sent each time");
        }
        Err(self.err("start", ErrorKind::NoAnswer(msg)))
    }

    /// After a possible start character: true when nothing but more start
    /// characters arrives within `quiet`.
    async fn quiet_after_start(&mut self, quiet: Duration) -> Result<bool, XmodemError> {
        let deadline = Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(true);
            }
            match read_byte(self.link, left)
                .await
                .map_err(|e| self.io("start", e))?
            {
                None => return Ok(true),
                Some(CRC_REQUEST | NAK) => {}
                Some(_) => return Ok(false),
            }
        }
    }

    /// Waits for the receiver's 'C' that asks for the next YMODEM block 0.
    async fn wait_crc_request(&mut self, step: &str, what: &str) -> Result<(), XmodemError> {
        let mut last_can = false;
        for _ in 0..self.opts.retries {
            let deadline = Instant::now() + self.opts.response_timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match read_byte(self.link, left)
                    .await
                    .map_err(|e| self.io(step, e))?
                {
                    None => break,
                    Some(CRC_REQUEST) => return Ok(()),
                    Some(CAN) if last_can => {
                        return Err(self.err(step, ErrorKind::ReceiverCanceled));
                    }
                    Some(b) => last_can = b == CAN,
                }
            }
        }
        Err(self.err(
            step,
            ErrorKind::NoAnswer(format!(
                "{what} within {} attempts of {}",
                self.opts.retries,
                humantime::format_duration(self.opts.response_timeout)
            )),
        ))
    }

    /// Sends `block` until it is acknowledged. Answers already waiting before a
    /// (re)send are stale (e.g. a late ACK of the previous attempt) and dropped,
    /// so that one answer is never taken for the next block's.
    async fn send_block(&mut self, block: &[u8], step: &str) -> Result<(), XmodemError> {
        let mut naks = 0u32;
        for _ in 0..self.opts.retries {
            self.purge(step).await?;
            self.write(block).await.map_err(|e| self.io(step, e))?;
            let wait = self.opts.block_timeout + self.wire_time(block.len());
            match self.reply(wait, step).await? {
                Reply::Ack => {
                    tracing::trace!("{} {step}: ACK", self.label);
                    return Ok(());
                }
                Reply::Nak => {
                    tracing::debug!("{} {step}: NAK, sending it again", self.label);
                    naks += 1;
                }
                Reply::Timeout => {
                    tracing::debug!("{} {step}: no answer, sending it again", self.label);
                }
                Reply::Canceled => return Err(self.err(step, ErrorKind::ReceiverCanceled)),
            }
        }
        Err(self.err(
            step,
            ErrorKind::NoAnswer(format!(
                "no ACK after {} attempts ({naks} NAK, {} timeouts of {})",
                self.opts.retries,
                self.opts.retries - naks,
                humantime::format_duration(self.opts.block_timeout)
            )),
        ))
    }

    /// EOT until acknowledged (a NAK, as YMODEM receivers answer the first EOT,
    /// means: send it again).
    async fn send_eot(&mut self) -> Result<(), XmodemError> {
        let step = "end of transmission";
        for _ in 0..self.opts.retries {
            self.purge(step).await?;
            self.write(&[EOT]).await.map_err(|e| self.io(step, e))?;
            match self.reply(self.opts.response_timeout, step).await? {
                Reply::Ack => return Ok(()),
                Reply::Nak | Reply::Timeout => {
                    tracing::debug!("{} {step}: EOT not acknowledged yet", self.label);
                }
                Reply::Canceled => return Err(self.err(step, ErrorKind::ReceiverCanceled)),
            }
        }
        Err(self.err(
            step,
            ErrorKind::NoAnswer(format!(
                "EOT not acknowledged after {} attempts",
                self.opts.retries
            )),
        ))
    }

    /// Drops bytes that already arrived (at most a few KiB, so that a line that
    /// never stops talking cannot hold the sender here).
    async fn purge(&mut self, step: &str) -> Result<(), XmodemError> {
        for _ in 0..4096 {
            if read_byte(self.link, Duration::ZERO)
                .await
                .map_err(|e| self.io(step, e))?
                .is_none()
            {
                break;
            }
        }
        Ok(())
    }

    /// The receiver's answer within `wait`; other bytes are ignored.
    async fn reply(&mut self, wait: Duration, step: &str) -> Result<Reply, XmodemError> {
        let deadline = Instant::now() + wait;
        let mut last_can = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Reply::Timeout);
            }
            let Some(b) = read_byte(self.link, left)
                .await
                .map_err(|e| self.io(step, e))?
            else {
                return Ok(Reply::Timeout);
            };
            match b {
                ACK => return Ok(Reply::Ack),
                NAK => return Ok(Reply::Nak),
                CAN if last_can => return Ok(Reply::Canceled),
                _ => {}
            }
            last_can = b == CAN;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_xmodem_check_value() {
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(crc16_xmodem(b""), 0);
    }

    #[test]
    fn checksum_wraps() {
        assert_eq!(checksum(&[0xFF, 0x02]), 0x01);
    }

    #[test]
    fn block_layout() {
        let b = encode_block(255, b"hi", 128, CPMEOF, Check::Crc16);
        assert_eq!(b.len(), 133);
        assert_eq!(&b[..5], &[SOH, 255, 0, b'h', b'i']);
        assert!(b[5..131].iter().all(|&x| x == CPMEOF));
        let crc = crc16_xmodem(&b[3..131]);
        assert_eq!(&b[131..], &crc.to_be_bytes());

        let b = encode_block(1, &[7; 2000], 1024, CPMEOF, Check::Checksum);
        assert_eq!(b.len(), 1028);
        assert_eq!(&b[..3], &[STX, 1, 0xFE]);
        assert_eq!(b[1027], checksum(&[7; 1024]));
    }

    /// The block count agrees with the sizes the sender takes, at every length
    /// around the 1K / 128 boundaries.
    #[test]
    fn block_count_matches_block_sizes() {
        for protocol in [
            XmodemProtocol::Xmodem,
            XmodemProtocol::Xmodem1k,
            XmodemProtocol::Ymodem,
        ] {
            for len in (0u64..4000).chain([1 << 20, (1 << 20) + 385]) {
                let (mut left, mut n) = (len, 0);
                while left > 0 {
                    left = left.saturating_sub(block_size(protocol, left) as u64);
                    n += 1;
                }
                assert_eq!(block_count(protocol, len), n, "{protocol:?} {len}");
            }
        }
    }

    #[test]
    fn header_and_names() {
        assert_eq!(ymodem_header("a.bin", 1234, None), b"a.bin\x001234\x00");
        assert_eq!(
            ymodem_header("a.bin", 10, Some(8)),
            b"a.bin\x0010 10\x00".to_vec()
        );
        assert_eq!(sanitize_file_name("/x/y/fw 2.0.bin"), "fw_2.0.bin");
        assert_eq!(sanitize_file_name(""), "firmware.bin");
        assert_eq!(sanitize_file_name("dir/"), "firmware.bin");
        assert_eq!(sanitize_file_name(".."), "firmware.bin");
    }
}
