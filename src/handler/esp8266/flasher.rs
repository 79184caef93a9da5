//! The ROM bootloader conversation, over any [`Link`]: reset into the loader,
//! SYNC, chip check, FLASH_BEGIN / FLASH_DATA × n / FLASH_END, reset into the
//! application. Every command has its own deadline and a bounded number of
//! attempts, and every failure names the protocol step it happened in.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::protocol::{self, Op, Response, Status};
use super::slip::{self, Decoded, Decoder};
use crate::config::EspReset;
use crate::handler::HandlerError;
use crate::serial::Link;

/// Deadlines and retry bounds of the conversation.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// Wait for the first answer to one SYNC (esptool: 100 ms).
    pub sync_reply: Duration,
    /// SYNCs sent per reset before giving up on that reset.
    pub syncs_per_round: u32,
    /// Reset + sync rounds with `reset = "classic"` (one round without a reset).
    pub sync_rounds: u32,
    /// Silence that ends the extra SYNC replies.
    pub sync_drain: Duration,
    /// READ_REG and other small commands.
    pub command: Duration,
    /// FLASH_BEGIN: the ROM erases before it answers; this much per MiB, at
    /// least `command`.
    pub erase_per_mib: Duration,
    /// One FLASH_DATA block (plus the time the block takes on the wire).
    pub block: Duration,
    /// Attempts per command (a lost reply or an error status is retried).
    pub attempts: u32,
    /// FLASH_END: the ROM may reboot before it answers, so a missing answer
    /// after this long is accepted.
    pub end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            sync_reply: Duration::from_millis(100),
            syncs_per_round: 10,
            sync_rounds: 3,
            sync_drain: Duration::from_millis(100),
            command: Duration::from_secs(1),
            // A real 4 MiB erase on an ESP8266 takes ~10-20 s; esptool allows 40 s/MB.
            erase_per_mib: Duration::from_secs(30),
            block: Duration::from_millis(1500),
            attempts: 3,
            end: Duration::from_millis(500),
        }
    }
}

/// What one update writes: `len` bytes read from `image` block by block (an
/// image is never held whole in memory), at flash `offset`.
pub struct Job<'a> {
    pub image: &'a mut (dyn AsyncRead + Unpin + Send),
    pub len: u32,
    pub offset: u32,
}

/// Talks to one ESP8266 ROM loader over `link`.
pub struct Flasher<'a, L: Link> {
    link: &'a mut L,
    port: String,
    baud: u32,
    reset: EspReset,
    timeouts: Timeouts,
    decoder: Decoder,
    frames: VecDeque<Vec<u8>>,
}

/// Outcome of one request/response exchange.
enum Reply {
    Error(Status),
    Silent,
}

impl<'a, L: Link> Flasher<'a, L> {
    pub fn new(
        link: &'a mut L,
        port: impl Into<String>,
        baud: u32,
        reset: EspReset,
        timeouts: Timeouts,
    ) -> Self {
        Flasher {
            link,
            port: port.into(),
            baud: baud.max(300),
            reset,
            timeouts,
            decoder: Decoder::new(),
            frames: VecDeque::new(),
        }
    }

    /// The whole update: `commit()` right before FLASH_BEGIN erases (the commit
    /// point: an error stops the update before the device is touched),
    /// `on_block(done, total)` after each acknowledged block, `on_written()` once
    /// all blocks are in flash (before FLASH_END and reset).
    pub async fn run(
        &mut self,
        job: Job<'_>,
        commit: impl FnOnce() -> Result<(), HandlerError>,
        mut on_block: impl FnMut(u32, u32),
        on_written: impl FnOnce(),
    ) -> Result<(), HandlerError> {
        self.connect().await?;
        self.detect_chip().await?;
        commit()?;
        self.write_flash(job, &mut on_block).await?;
        on_written();
        self.finish().await
    }

    /// Resets into the loader (classic) and SYNCs.
    pub async fn connect(&mut self) -> Result<(), HandlerError> {
        let rounds = match self.reset {
            EspReset::Classic => self.timeouts.sync_rounds.max(1),
            EspReset::None => 1,
        };
        let mut sent = 0;
        for _ in 0..rounds {
            if self.reset == EspReset::Classic {
                self.classic_reset().await?;
            }
            for _ in 0..self.timeouts.syncs_per_round.max(1) {
                self.discard_input();
                self.send(Op::SYNC, &protocol::sync_payload(), 0, "esp8266 SYNC")
                    .await?;
                sent += 1;
                let deadline = Instant::now() + self.timeouts.sync_reply + self.wire_time(46);
                if let Some(r) = self.recv(Op::SYNC, deadline, "esp8266 SYNC").await?
                    && r.status.is_ok()
                {
                    self.drain_sync_replies().await?;
                    tracing::debug!(port = %self.port, attempts = sent, "esp8266: in sync");
                    return Ok(());
                }
            }
        }
        let hint = match self.reset {
            EspReset::Classic => "check the wiring of DTR/RTS to GPIO0/EN and the baud rate",
            EspReset::None => {
                "with reset = \"none\" the device must already be in its ROM bootloader"
            }
        };
        Err(HandlerError::failed(
            "esp8266 SYNC",
            format!(
                "no response from the ROM bootloader on {} after {sent} attempts ({hint})",
                self.port
            ),
        ))
    }

    /// The ROM answers SYNC several times; swallow the extra answers.
    async fn drain_sync_replies(&mut self) -> Result<(), HandlerError> {
        let hard_stop = Instant::now() + self.timeouts.sync_drain * 10;
        loop {
            let deadline = (Instant::now() + self.timeouts.sync_drain).min(hard_stop);
            if self.next_frame(deadline, "esp8266 SYNC").await?.is_none() {
                return Ok(());
            }
        }
    }

    /// Reads the chip-detect register; refuses anything but an ESP8266.
    pub async fn detect_chip(&mut self) -> Result<(), HandlerError> {
        let step = format!("esp8266 READ_REG {:#010x}", protocol::CHIP_DETECT_MAGIC_REG);
        let data = protocol::CHIP_DETECT_MAGIC_REG.to_le_bytes();
        let r = self
            .transact(Op::READ_REG, &data, 0, self.timeouts.command, &step)
            .await?;
        if r.value != protocol::ESP8266_MAGIC {
            return Err(HandlerError::failed(
                step,
                format!(
                    "chip magic {:#010x} is not an ESP8266 ({:#010x}); refusing to flash",
                    r.value,
                    protocol::ESP8266_MAGIC
                ),
            ));
        }
        Ok(())
    }

    /// FLASH_BEGIN, then every block with FLASH_DATA.
    pub async fn write_flash(
        &mut self,
        job: Job<'_>,
        on_block: &mut impl FnMut(u32, u32),
    ) -> Result<(), HandlerError> {
        let block_size = protocol::FLASH_WRITE_SIZE as usize;
        let size = job.len;
        let blocks = size.div_ceil(protocol::FLASH_WRITE_SIZE);
        let erase = protocol::erase_size(job.offset, size);
        let erase_timeout = self.timeouts.command.max(
            self.timeouts
                .erase_per_mib
                .mul_f64(f64::from(size) / 1_048_576.0),
        );
        let begin = protocol::flash_begin(erase, blocks, protocol::FLASH_WRITE_SIZE, job.offset);
        self.transact(
            Op::FLASH_BEGIN,
            &begin,
            0,
            erase_timeout,
            &format!(
                "esp8266 FLASH_BEGIN ({size} bytes at {:#x}, {blocks} blocks)",
                job.offset
            ),
        )
        .await?;
        let mut block = vec![0u8; block_size];
        for seq in 0..blocks {
            let step = format!("esp8266 FLASH_DATA block {}/{blocks} (seq {seq})", seq + 1);
            let take = (size - seq * protocol::FLASH_WRITE_SIZE).min(protocol::FLASH_WRITE_SIZE);
            block.fill(0xFF);
            job.image
                .read_exact(&mut block[..take as usize])
                .await
                .map_err(|e| HandlerError::io(format!("{step}: reading the image"), e))?;
            let data = protocol::flash_data(seq, &block);
            let timeout = self.timeouts.block + self.wire_time(data.len() + 10) * 2;
            self.transact(
                Op::FLASH_DATA,
                &data,
                u32::from(protocol::checksum(&block)),
                timeout,
                &step,
            )
            .await?;
            on_block(seq + 1, blocks);
        }
        Ok(())
    }

    /// FLASH_END (reboot), then the hard reset into the application (classic).
    pub async fn finish(&mut self) -> Result<(), HandlerError> {
        let step = "esp8266 FLASH_END";
        self.send(Op::FLASH_END, &0u32.to_le_bytes(), 0, step)
            .await?;
        let deadline = Instant::now() + self.timeouts.end;
        match self.recv(Op::FLASH_END, deadline, step).await? {
            Some(r) if !r.status.is_ok() => {
                return Err(HandlerError::failed(
                    step,
                    format!("device answered {}", r.status),
                ));
            }
            Some(_) => {}
            None => tracing::debug!(
                port = %self.port,
                "esp8266: no answer to FLASH_END (the ROM may reboot before answering)"
            ),
        }
        if self.reset == EspReset::Classic {
            self.hard_reset().await?;
        }
        Ok(())
    }

    /// esptool's classic sequence: EN low with GPIO0 high, then GPIO0 low while
    /// EN is released, then GPIO0 high (DTR drives GPIO0, RTS drives EN, both
    /// inverted by the usual two-transistor circuit).
    async fn classic_reset(&mut self) -> Result<(), HandlerError> {
        self.modem(false, true)?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.modem(true, false)?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.set_dtr(false)?;
        Ok(())
    }

    /// Pulses EN (RTS) to restart into the application.
    async fn hard_reset(&mut self) -> Result<(), HandlerError> {
        self.set_rts(true)?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.set_rts(false)
    }

    fn modem(&mut self, dtr: bool, rts: bool) -> Result<(), HandlerError> {
        self.set_dtr(dtr)?;
        self.set_rts(rts)
    }

    fn set_dtr(&mut self, on: bool) -> Result<(), HandlerError> {
        self.link
            .set_dtr(on)
            .map_err(|e| self.modem_error("DTR", e))
    }

    fn set_rts(&mut self, on: bool) -> Result<(), HandlerError> {
        self.link
            .set_rts(on)
            .map_err(|e| self.modem_error("RTS", e))
    }

    fn modem_error(&self, line: &str, e: std::io::Error) -> HandlerError {
        HandlerError::failed(
            "esp8266 reset",
            format!(
                "cannot set {line} on {}: {e} (use reset = \"none\" for a port without modem lines)",
                self.port
            ),
        )
    }

    /// Sends `op` up to `attempts` times until it is answered with status 0.
    async fn transact(
        &mut self,
        op: Op,
        data: &[u8],
        checksum: u32,
        timeout: Duration,
        step: &str,
    ) -> Result<Response, HandlerError> {
        let attempts = self.timeouts.attempts.max(1);
        let mut last = Reply::Silent;
        for attempt in 1..=attempts {
            if attempt > 1 {
                tracing::warn!(port = %self.port, step, attempt, "esp8266: retrying");
                self.discard_input();
            }
            self.send(op, data, checksum, step).await?;
            let deadline = Instant::now() + timeout;
            last = match self.recv(op, deadline, step).await? {
                Some(r) if r.status.is_ok() => return Ok(r),
                Some(r) => Reply::Error(r.status),
                None => Reply::Silent,
            };
        }
        Err(HandlerError::failed(
            step,
            match last {
                Reply::Error(status) => {
                    format!("device answered {status} (after {attempts} attempts)")
                }
                Reply::Silent => {
                    format!("no response after {attempts} attempts")
                }
            },
        ))
    }

    async fn send(
        &mut self,
        op: Op,
        data: &[u8],
        checksum: u32,
        step: &str,
    ) -> Result<(), HandlerError> {
        let frame = slip::encode(&protocol::request(op, data, checksum));
        // A port that cannot even take the bytes (flow control stuck) must not
        // hang the update either.
        let limit = self.timeouts.command + self.wire_time(frame.len()) * 2;
        let link = &mut *self.link;
        let write = async {
            link.write_all(&frame).await?;
            link.flush().await
        };
        match tokio::time::timeout(limit, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(HandlerError::io(
                format!("{step}: writing to {}", self.port),
                e,
            )),
            Err(_) => Err(HandlerError::failed(
                step,
                format!("writing to {} did not finish within {limit:?}", self.port),
            )),
        }
    }

    /// The first well-formed response to `op` before `deadline`; anything else
    /// (noise, malformed frames, answers to other commands) is skipped.
    async fn recv(
        &mut self,
        op: Op,
        deadline: Instant,
        step: &str,
    ) -> Result<Option<Response>, HandlerError> {
        while let Some(frame) = self.next_frame(deadline, step).await? {
            match Response::parse(&frame) {
                Ok(r) if r.op == op => return Ok(Some(r)),
                Ok(r) => {
                    tracing::debug!(step, got = %r.op, "esp8266: skipping answer to another command")
                }
                Err(e) => tracing::debug!(step, error = %e, "esp8266: skipping malformed frame"),
            }
        }
        Ok(None)
    }

    async fn next_frame(
        &mut self,
        deadline: Instant,
        step: &str,
    ) -> Result<Option<Vec<u8>>, HandlerError> {
        let mut buf = [0u8; 512];
        loop {
            if let Some(f) = self.frames.pop_front() {
                return Ok(Some(f));
            }
            let n = match tokio::time::timeout_at(deadline, self.link.read(&mut buf)).await {
                Err(_) => return Ok(None),
                Ok(Ok(0)) => {
                    return Err(HandlerError::io(
                        format!("{step}: reading from {}", self.port),
                        std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "serial link closed",
                        ),
                    ));
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => {
                    return Err(HandlerError::io(
                        format!("{step}: reading from {}", self.port),
                        e,
                    ));
                }
            };
            for &b in buf.get(..n).unwrap_or(&[]) {
                match self.decoder.push(b) {
                    Decoded::Frame(f) => self.frames.push_back(f),
                    Decoded::Dropped => {
                        tracing::debug!(step, "esp8266: dropped a malformed SLIP frame")
                    }
                    Decoded::Pending => {}
                }
            }
        }
    }

    /// Forgets everything received so far (stale answers before a retry).
    fn discard_input(&mut self) {
        self.frames.clear();
        self.decoder.reset();
        // A pty or a port without the ioctl: nothing to discard then.
        let _ = self.link.clear_input();
    }

    /// How long `bytes` take on the wire at the port's baud (8N1: 10 bits a byte).
    fn wire_time(&self, bytes: usize) -> Duration {
        Duration::from_secs_f64(bytes as f64 * 10.0 / f64::from(self.baud))
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

    use super::*;
    use crate::serial::ModemControl;

    /// One end of an in-memory pipe that records modem-line calls.
    struct MockLink {
        io: DuplexStream,
        calls: Arc<Mutex<Vec<&'static str>>>,
        modem_lines: bool,
    }

    impl MockLink {
        fn record(&self, call: &'static str) -> std::io::Result<()> {
            if !self.modem_lines {
                return Err(std::io::Error::from_raw_os_error(25)); // ENOTTY, as a pty
            }
            self.calls.lock().unwrap().push(call);
            Ok(())
        }
    }

    impl ModemControl for MockLink {
        fn set_dtr(&mut self, on: bool) -> std::io::Result<()> {
            self.record(if on { "DTR on" } else { "DTR off" })
        }
        fn set_rts(&mut self, on: bool) -> std::io::Result<()> {
            self.record(if on { "RTS on" } else { "RTS off" })
        }
        fn clear_input(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl AsyncRead for MockLink {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for MockLink {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.io).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.io).poll_shutdown(cx)
        }
    }

    fn link(modem_lines: bool) -> (MockLink, DuplexStream, Arc<Mutex<Vec<&'static str>>>) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let calls = Arc::new(Mutex::new(vec![]));
        let link = MockLink {
            io: a,
            calls: Arc::clone(&calls),
            modem_lines,
        };
        (link, b, calls)
    }

    /// Answers every request with status 0 (SYNC twice), like a minimal ROM.
    fn answer_everything(mut device: DuplexStream) {
        tokio::spawn(async move {
            let mut dec = Decoder::new();
            let mut buf = [0u8; 2048];
            while let Ok(n) = device.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                for &b in &buf[..n] {
                    if let Decoded::Frame(f) = dec.push(b) {
                        let reply = slip::encode(&[1, f[1], 2, 0, 0, 0, 0, 0, 0, 0]);
                        let times = if f[1] == Op::SYNC.0 { 2 } else { 1 };
                        for _ in 0..times {
                            let _ = device.write_all(&reply).await;
                        }
                    }
                }
            }
        });
    }

    /// Connects and finishes with `reset` against a device that answers
    /// everything; returns the modem-line calls made.
    async fn connect_and_finish(reset: EspReset) -> Arc<Mutex<Vec<&'static str>>> {
        let (mut link, device, calls) = link(true);
        answer_everything(device);
        let mut f = Flasher::new(&mut link, "mock", 115_200, reset, Timeouts::default());
        f.connect().await.unwrap();
        f.finish().await.unwrap();
        calls
    }

    #[tokio::test]
    async fn classic_reset_drives_dtr_and_rts_like_esptool() {
        let calls = connect_and_finish(EspReset::Classic).await;
        assert_eq!(
            *calls.lock().unwrap(),
            [
                // into the bootloader: EN low, GPIO0 low, EN high, GPIO0 high
                "DTR off", "RTS on", "DTR on", "RTS off", "DTR off",
                // hard reset into the application
                "RTS on", "RTS off",
            ]
        );
    }

    #[tokio::test]
    async fn reset_none_touches_no_modem_line() {
        let calls = connect_and_finish(EspReset::None).await;
        assert!(calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn classic_reset_without_modem_lines_says_what_to_do() {
        let (mut link, _device, _) = link(false);
        let mut f = Flasher::new(
            &mut link,
            "/dev/pts/9",
            115_200,
            EspReset::Classic,
            Timeouts::default(),
        );
        let err = f.connect().await.unwrap_err().to_string();
        assert!(
            err.starts_with("esp8266 reset: cannot set DTR on /dev/pts/9"),
            "{err}"
        );
        assert!(err.contains("reset = \"none\""), "{err}");
    }

    #[tokio::test]
    async fn garbage_from_the_device_never_panics() {
        let (mut link, mut device, _) = link(true);
        tokio::spawn(async move {
            let mut x: u32 = 0xDEAD_BEEF;
            let mut chunk = [0u8; 256];
            loop {
                for b in chunk.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    // Plenty of frame delimiters and escapes.
                    *b = match x % 7 {
                        0 => slip::END,
                        1 => slip::ESC,
                        2 => 0x01,
                        _ => x as u8,
                    };
                }
                if device.write_all(&chunk).await.is_err() {
                    return;
                }
                // Swallow what the flasher sends so it never blocks.
                let mut sink = [0u8; 4096];
                let _ =
                    tokio::time::timeout(Duration::from_millis(1), device.read(&mut sink)).await;
            }
        });
        let timeouts = Timeouts {
            syncs_per_round: 5,
            ..Timeouts::default()
        };
        let mut f = Flasher::new(&mut link, "mock", 115_200, EspReset::None, timeouts);
        let err = f.connect().await.unwrap_err().to_string();
        assert!(err.starts_with("esp8266 SYNC: no response"), "{err}");
    }

    #[tokio::test]
    async fn a_closed_link_fails_with_the_step() {
        let (mut link, device, _) = link(true);
        drop(device);
        let mut f = Flasher::new(
            &mut link,
            "mock",
            115_200,
            EspReset::None,
            Timeouts::default(),
        );
        let err = f.connect().await.unwrap_err().to_string();
        assert!(err.starts_with("esp8266 SYNC"), "{err}");
    }
}
