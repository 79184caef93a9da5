//! The transfer tail the XMODEM and MT7681 handlers share: send the image with
//! the commit point before the first data block, report percent, and on any
//! failure (or a transfer cut off by cancel or timeout) tell the receiver to give
//! up, so its next transfer starts clean.

use std::io::SeekFrom;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt, BufReader};

use super::protocol::{self, File, Options, Sender};
use crate::handler::{HandlerError, image_sent, report_sent};
use crate::progress::Progress;
use crate::serial::Link;
use crate::serial::{ModemControl, SerialLink};

/// Longest time telling the receiver to give up may take.
const CANCEL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `file`; `step_prefix` names the handler in failures (e.g. `"mt7681 "`).
/// `in_transfer` is set while the receiver expects blocks, so that
/// [`cancel_cut_off`] knows whether it has something to stop.
pub(crate) async fn send_image<L: Link>(
    link: &mut L,
    opts: Options,
    file: File<'_>,
    progress: &Progress,
    in_transfer: &AtomicBool,
    step_prefix: &str,
) -> Result<(), HandlerError> {
    let total = file.len;
    in_transfer.store(true, Ordering::SeqCst);
    let result = Sender::new(link, opts)
        .send(
            file,
            || progress.commit().is_ok(),
            |acked| report_sent(progress, acked, total),
        )
        .await;
    let outcome = match result {
        Ok(()) => {
            image_sent(progress);
            Ok(())
        }
        Err(e) => {
            if e.wants_cancel() {
                tell_receiver_to_stop(link, progress.device_id()).await;
            }
            Err(match e.kind {
                protocol::ErrorKind::Canceled => HandlerError::Canceled,
                _ => HandlerError::failed(format!("{step_prefix}{}", e.step), e.message()),
            })
        }
    };
    in_transfer.store(false, Ordering::SeqCst);
    outcome
}

/// The image at `path`, buffered for block-by-block reads, and its length.
pub(crate) async fn open_image(
    path: &Path,
) -> Result<(BufReader<tokio::fs::File>, u64), HandlerError> {
    let io = |e| HandlerError::io(format!("reading image {}", path.display()), e);
    let file = tokio::fs::File::open(path).await.map_err(io)?;
    let len = file.metadata().await.map_err(io)?.len();
    Ok((BufReader::new(file), len))
}

/// The first `n` bytes of `data` (fewer when the file is shorter), leaving
/// `data` at its start again.
pub(crate) async fn read_head(
    data: &mut BufReader<tokio::fs::File>,
    path: &Path,
    n: usize,
) -> Result<Vec<u8>, HandlerError> {
    let io = |e| HandlerError::io(format!("reading image {}", path.display()), e);
    let mut head = Vec::with_capacity(n);
    (&mut *data)
        .take(n as u64)
        .read_to_end(&mut head)
        .await
        .map_err(io)?;
    data.seek(SeekFrom::Start(0)).await.map_err(io)?;
    Ok(head)
}

/// Sends CANs, logging (not failing) when the link does not take them.
pub(crate) async fn tell_receiver_to_stop<L: Link>(link: &mut L, device_id: &str) {
    if let Err(e) = protocol::send_cancel(link, CANCEL_WRITE_TIMEOUT).await {
        tracing::warn!(device = %device_id, "cannot send CAN to the receiver: {e}");
    }
}

/// The handlers' `cancel`: when a transfer was cut off (its future dropped by
/// the engine), reopens the port and tells the receiver to give up.
pub(crate) async fn cancel_cut_off(
    in_transfer: &AtomicBool,
    open: impl FnOnce() -> Result<SerialLink, HandlerError>,
    device_id: &str,
) {
    if !in_transfer.swap(false, Ordering::SeqCst) {
        return;
    }
    match open() {
        Ok(mut link) => tell_receiver_to_stop(&mut link, device_id).await,
        Err(e) => tracing::warn!(device = %device_id, "cannot cancel the transfer: {e}"),
    }
}

/// Opens `link` and discards what the device sent before (a boot banner, noise).
pub(crate) fn clear_stale_input(link: &mut SerialLink, device_id: &str) {
    if let Err(e) = link.clear_input() {
        tracing::debug!(device = %device_id, "cannot discard stale serial input: {e}");
    }
}
