//! `f` and the YMODEM transfer of a user binary to a device in listening mode
//! (device-os `system_setup.cpp`, `system_ymodem.cpp`; particle-cli
//! `src/lib/ymodem.js`).
//!
//! The device answers `f` with `Waiting for the binary file to be sent ...
//! (press 'a' to abort)` and receives by YMODEM (it sends its first 'C' only
//! after a 5 s timeout). After the final empty header it validates the image
//! and then answers ACK and `Restarting system to apply firmware update...`,
//! or CA CA and `Validation failed: <code>`; it resets after both, and its
//! port disappears for a moment. Device OS 6 answers `f` with CAs and
//! `Serial/YModem flashing is no longer supported`.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::io::AsyncRead;

use super::console::{preview, read_until, said, send};
use crate::config::XmodemProtocol;
use crate::handler::xmodem::protocol::{File, Options};
use crate::handler::xmodem::transfer::send_image;
use crate::handler::HandlerError;
use crate::progress::Progress;
use crate::serial::{Link, read_byte};

const READY: &str = "Waiting for the binary file to be sent";
const REMOVED: &str = "Serial/YModem flashing is no longer supported";
const APPLIED: &str = "Restarting system to apply firmware update...";
const FAILED: &str = "Validation failed: ";

/// How a flash is run.
#[derive(Debug, Clone)]
pub struct FlashOptions {
    pub response_timeout: Duration,
    pub retries: u32,
    pub baud: u32,
    /// Longest wait for the port to go away once the device restarts.
    pub reset_timeout: Duration,
}

/// What a device's validation code means (device-os `system_error.h`).
pub fn validation_meaning(code: i32) -> &'static str {
    match code {
        -1300 => "module not found (bad end address or size)",
        -1310 => "unsupported module",
        -1320 => "module validation failed",
        -1330 => "integrity check failed (CRC)",
        -1340 => "dependency check failed",
        -1350 => "invalid module address",
        -1351 => "invalid module size",
        -1360 => "invalid platform",
        -1370 => "invalid module format",
        -1380 => "firmware updates are disabled",
        _ => "firmware update error",
    }
}

/// Sends `len` bytes of `data` (a checked user binary, read block by block)
/// to the device on `link`, which must be in listening mode. `Ok` when the
/// device validated it and restarts to apply it. `in_transfer` is set while
/// the device expects blocks (see [`crate::handler::UpdateHandler::cancel`]).
pub async fn flash<L: Link>(
    link: &mut L,
    data: &mut (dyn AsyncRead + Unpin + Send),
    len: u64,
    opts: &FlashOptions,
    progress: &Progress,
    in_transfer: &AtomicBool,
) -> Result<(), HandlerError> {
    start(link, opts.response_timeout).await?;
    let file = File {
        name: "firmware.bin",
        len,
        data,
        mtime: None,
    };
    let ymodem = Options {
        protocol: XmodemProtocol::Ymodem,
        enter_command: None,
        response_timeout: opts.response_timeout,
        block_timeout: opts.response_timeout,
        retries: opts.retries.max(1),
        baud: opts.baud,
    };
    let sent = send_image(link, ymodem, file, progress, in_transfer, "particle ").await;
    if let Err(HandlerError::Canceled) = sent {
        return sent;
    }
    let io = |e| HandlerError::io("particle after the transfer", e);
    let (_, text) = read_until(link, opts.response_timeout, |t| {
        t.contains(APPLIED) || validation_code(t).is_some()
    })
    .await
    .map_err(io)?;
    let code = validation_code(&text);
    if code.is_some() || sent.is_ok() {
        // It resets after both: let the port go first, so that nothing opens
        // the old one again.
        wait_gone(link, opts.reset_timeout, progress.device_id()).await;
    }
    if let Some(code) = code {
        return Err(HandlerError::failed(
            "particle validation",
            format!(
                "the device refused the binary: Validation failed: {code} ({})",
                validation_meaning(code)
            ),
        ));
    }
    if let Err(e) = sent {
        // The device says why it canceled (e.g. a file larger than its user part).
        return Err(HandlerError::failed(
            "particle transfer",
            format!("{e}{}", said(&text)),
        ));
    }
    if !text.contains(APPLIED) {
        tracing::warn!(
            device = %progress.device_id(),
            "the device acknowledged the binary but did not say it restarts: {:?}",
            preview(&text)
        );
    }
    Ok(())
}

/// Reads until the link fails (the USB device went away), within `within`.
async fn wait_gone<L: Link>(link: &mut L, within: Duration, device: &str) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            tracing::warn!(device, "the port stayed after the device said it restarts");
            return;
        }
        if read_byte(link, left).await.is_err() {
            return;
        }
    }
}

/// `f`, and the device's answer: ready, or no YMODEM (Device OS 6).
async fn start<L: Link>(link: &mut L, timeout: Duration) -> Result<(), HandlerError> {
    let step = "particle flash (f)";
    let io = |e| HandlerError::io(step, e);
    send(link, b'f').await.map_err(io)?;
    let (ready, text) = read_until(link, timeout, |t| {
        t.contains(REMOVED) || t.contains(READY) && t.contains('\n')
    })
    .await
    .map_err(io)?;
    // Device OS 6 prints the ready line first, then CAs and the removal notice.
    let (_, more) = if ready && !text.contains(REMOVED) {
        read_until(link, Duration::from_millis(300), |t| t.contains(REMOVED))
            .await
            .map_err(io)?
    } else {
        (false, String::new())
    };
    if text.contains(REMOVED) || more.contains(REMOVED) {
        return Err(HandlerError::failed(
            step,
            format!(
                "the device answered \"{REMOVED}\": Device OS 6 and later take firmware only \
                 over USB DFU (e.g. dfu-util through the command handler)"
            ),
        ));
    }
    if !ready {
        return Err(HandlerError::failed(
            step,
            format!(
                "no \"{READY}\" within {} (is the device in listening mode?){}",
                humantime::format_duration(timeout),
                said(&text)
            ),
        ));
    }
    Ok(())
}

/// The code of a `Validation failed: <code>` line in `text`.
fn validation_code(text: &str) -> Option<i32> {
    let at = text.find(FAILED)? + FAILED.len();
    let rest = &text[at..];
    let end = rest.find(['\r', '\n'])?;
    rest[..end].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_codes() {
        assert_eq!(validation_code("x\x18\x18Validation failed: -1360\r\n"), Some(-1360));
        assert_eq!(validation_code("Validation failed: -13"), None);
        assert_eq!(validation_code("Validation failed: x\r\n"), None);
        assert!(validation_meaning(-1330).contains("CRC"));
    }
}
