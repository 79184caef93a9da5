//! One update of one device, start to finish: the progress sequence, fetch and
//! verification, the handler's transfer and update steps, the version check
//! afterwards, the update timeout, cancellation, and the records in the store that
//! let a restart resolve an update it did not see finish.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::fetch::{self, FetchError};
use super::{Device, reflash};
use crate::download::Downloader;
use crate::handler::{HandlerError, VerifiedImage};
use crate::model::Firmware;
use crate::progress::{Outcome, Progress, ProgressError, ProgressStep};
use crate::store::{
    InFlight, OutcomeRecord, Phase, StagedPart, Store, StoreError, Transferred, now_secs,
};

/// What to do with the firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// DOWNLOADING → TRANSFERRING → UPDATING in one go.
    Immediate,
    /// DOWNLOADING → TRANSFERRING, then wait (pending) for the update to become
    /// executable.
    TransferOnly,
    /// UPDATING only, with firmware transferred earlier.
    UpdateTransferred,
    /// Like `Immediate`, for an operator's local image of unknown version: the
    /// version the device reports afterwards cannot be checked.
    Install,
    /// TRANSFERRING → UPDATING with the image a device was left half-written
    /// with (see `reflash.rs`), re-verified first.
    Reflash,
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Handler(#[from] HandlerError),
    #[error("progress: {0}")]
    Progress(#[from] ProgressError),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
    #[error("device reports version {reported} after the update, expected {expected}")]
    VersionMismatch { reported: String, expected: String },
    #[error("version check after the update: {0}")]
    VersionCheck(String),
    #[error("no firmware was transferred for version {0}")]
    NotTransferred(String),
    #[error("no re-flash is recorded for version {0}")]
    NoReflash(String),
    #[error("image of {size} bytes does not fit the device ({limit} bytes at most)")]
    TooLargeForDevice { size: u64, limit: u64 },
}

/// What every update shares: where state lives, how to download and what to
/// trust, how long it may take.
pub struct Context<'a> {
    pub store: &'a Store,
    pub downloader: &'a Downloader,
    pub trust: &'a crate::trust::TrustPolicy,
    pub timeout: Duration,
    /// How long a device that does not answer after its update is asked again.
    pub confirm_window: Duration,
    /// Firmware bytes fetched, for metrics.
    pub bytes: &'a std::sync::atomic::AtomicU64,
}

/// Runs one update under `timeout` and `cancel`, records its outcome and returns it.
/// For [`Mode::TransferOnly`] a successful transfer returns `None`: the update
/// itself is still to come.
pub async fn run(
    ctx: &Context<'_>,
    device: &Device,
    firmware: &Firmware,
    mode: Mode,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Option<Outcome> {
    let (store, timeout) = (ctx.store, ctx.timeout);
    let job = Job {
        device,
        firmware,
        mode,
        progress: &progress,
    };
    let work = steps(ctx, &job);
    let result = tokio::select! {
        r = tokio::time::timeout(timeout, work) => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Outcome::Failed(e.to_string())),
            Err(_) => {
                device.handler.cancel().await;
                Err(Outcome::Failed(format!(
                    "timed out after {} in step {}",
                    humantime::format_duration(timeout),
                    progress.current_step().map_or("-".into(), |s| s.to_string())
                )))
            }
        },
        _ = cancel.cancelled() => {
            device.handler.cancel().await;
            Err(Outcome::Canceled)
        }
    };
    let outcome = match result {
        Ok(()) if mode == Mode::TransferOnly => None,
        Ok(()) => Some(Outcome::Success),
        Err(o) => Some(o),
    };
    finish(store, &job, outcome.clone());
    outcome
}

/// One update as its steps see it: the device, the firmware, what to do with
/// it, and where its progress goes.
#[derive(Clone, Copy)]
struct Job<'a> {
    device: &'a Device,
    firmware: &'a Firmware,
    mode: Mode,
    progress: &'a Progress,
}

/// Records which phase the update of `firmware` is in, for a restart to resolve;
/// `image` is the one the update step writes. From the update phase on, a
/// version the agent installed earlier is void.
fn set_phase(
    store: &Store,
    id: &str,
    firmware: &Firmware,
    phase: Phase,
    image: Option<&VerifiedImage>,
) -> Result<(), StoreError> {
    let staged = image.map(transferred);
    store
        .update(id, |s| {
            if phase == Phase::Update {
                s.installed = None;
            }
            s.in_flight = Some(InFlight {
                version: firmware.version.clone(),
                phase,
                started_at: now_secs(),
                process: None,
                written: false,
                sha256: staged.as_ref().map(|t| t.sha256.clone()),
                parts: staged.map(|t| t.parts).unwrap_or_default(),
            })
        })
        .map(drop)
}

/// The handler passed its commit point: the in-flight record says so, for
/// start-up recovery to know the device may be half-written.
pub(super) fn mark_written(store: &Store, id: &str) {
    let saved = store.update(id, |s| {
        if let Some(f) = &mut s.in_flight {
            f.written = true;
        }
    });
    if let Err(e) = saved {
        tracing::error!(device = %id, "cannot record that the device is being written: {e}");
    }
}

/// [`Mode::Immediate`], [`Mode::Install`] and [`Mode::TransferOnly`]: fetch and
/// verify, transfer in the background if the handler can, then (not for
/// `TransferOnly`) update. [`Mode::UpdateTransferred`] and [`Mode::Reflash`]: see
/// [`update_staged`].
async fn steps(ctx: &Context<'_>, job: &Job<'_>) -> Result<(), UpdateError> {
    let Job {
        device,
        firmware,
        mode,
        progress,
    } = *job;
    if matches!(mode, Mode::UpdateTransferred | Mode::Reflash) {
        return update_staged(ctx, job).await;
    }
    use ProgressStep::*;
    let store = ctx.store;
    let id = &device.config.id;
    let background = device.handler.background_transfer();
    // A handler without background transfer can still have its image
    // downloaded and staged ahead (a closed maintenance window).
    let sequence: &[ProgressStep] = match (mode, background.is_some()) {
        (Mode::TransferOnly, true) => &[Downloading, Transferring],
        (Mode::TransferOnly, false) => &[Downloading],
        _ => &[Downloading, Transferring, Updating],
    };
    progress.define_sequence(&with_reboot(device, sequence))?;
    fits(device, firmware.size)?;
    set_phase(store, id, firmware, Phase::Transfer, None)?;
    progress.next()?;
    let fetch_ctx = fetch::FetchContext {
        downloads: &store.downloads_dir(),
        downloader: ctx.downloader,
        trust: ctx.trust,
        bytes: ctx.bytes,
    };
    let image = fetch::fetch_and_verify(
        &fetch_ctx,
        firmware,
        id,
        &device.config.device_type,
        progress,
    )
    .await?;
    fits(device, Some(image.digests().length))?;
    if let Some(bg) = background {
        progress.next()?;
        bg.transfer(&image, progress).await?;
    }
    if mode == Mode::TransferOnly {
        store.update(id, |s| {
            s.in_flight = None;
            s.transferred = Some(transferred(&image));
        })?;
        progress.pending()?;
        return Ok(());
    }
    // A handler without background transfer is entered at TRANSFERRING and
    // moves to UPDATING itself.
    write_image(store, job, &image).await?;
    if mode == Mode::Install {
        return Ok(());
    }
    confirm_version(device, store, &firmware.version, ctx.confirm_window).await
}

/// `steps`, and REBOOTING after UPDATING when the device's update step reboots
/// the gateway.
fn with_reboot(device: &Device, steps: &[ProgressStep]) -> Vec<ProgressStep> {
    let mut steps = steps.to_vec();
    if device.handler.reboots() && steps.last() == Some(&ProgressStep::Updating) {
        steps.push(ProgressStep::Rebooting);
    }
    steps
}

/// Refuses an image larger than the device can take (see
/// [`crate::handler::UpdateHandler::image_limit`]).
fn fits(device: &Device, size: Option<u64>) -> Result<(), UpdateError> {
    match (size, device.handler.image_limit()) {
        (Some(size), Some(limit)) if size > limit => {
            Err(UpdateError::TooLargeForDevice { size, limit })
        }
        _ => Ok(()),
    }
}

/// [`Mode::UpdateTransferred`] and [`Mode::Reflash`]: re-verify the staged image
/// (by the SHA-256 its record holds), then update.
async fn update_staged(ctx: &Context<'_>, job: &Job<'_>) -> Result<(), UpdateError> {
    let (device, firmware, progress) = (job.device, job.firmware, job.progress);
    let store = ctx.store;
    let id = &device.config.id;
    let reflash = job.mode == Mode::Reflash;
    progress.define_sequence(&with_reboot(
        device,
        if device.handler.background_transfer().is_some() && !reflash {
            &[ProgressStep::Updating]
        } else {
            &[ProgressStep::Transferring, ProgressStep::Updating]
        },
    ))?;
    let state = store.load(id)?;
    let version = &firmware.version;
    let (sha256, parts) = if reflash {
        let r = state.reflash.filter(|r| &r.version == version);
        r.map(|r| (r.sha256, r.parts))
            .ok_or_else(|| UpdateError::NoReflash(version.clone()))?
    } else {
        let t = state.transferred.filter(|t| &t.version == version);
        t.map(|t| (t.sha256, t.parts))
            .ok_or_else(|| UpdateError::NotTransferred(version.clone()))?
    };
    let mut image = fetch::reverify(&store.downloads_dir(), id, firmware, &sha256, &parts).await?;
    if reflash {
        image = image.for_reflash();
    }
    write_image(store, job, &image).await?;
    confirm_version(device, store, &firmware.version, ctx.confirm_window).await
}

/// The update step: recorded first (a restart then knows the device may be
/// half-written), then the handler writes the verified `image`.
async fn write_image(
    store: &Store,
    job: &Job<'_>,
    image: &VerifiedImage,
) -> Result<(), UpdateError> {
    let id = &job.device.config.id;
    set_phase(store, id, job.firmware, Phase::Update, Some(image))?;
    job.progress.next()?;
    job.device.handler.update(image, job.progress).await?;
    Ok(())
}

fn transferred(image: &VerifiedImage) -> Transferred {
    let sha256 = |d: &crate::checksum::Digests| {
        d.get(crate::checksum::ChecksumAlgorithm::Sha256)
            .unwrap_or_default()
            .to_string()
    };
    Transferred {
        version: image.firmware().version.clone(),
        sha256: sha256(image.digests()),
        parts: image
            .parts()
            .iter()
            .map(|p| StagedPart {
                name: p.name().to_string(),
                sha256: sha256(p.digests()),
            })
            .collect(),
    }
}

/// After the handler reports success, the device must report the target version
/// within the confirm window; a device that reports none is recorded as running
/// it (see `installed`).
pub async fn confirm_version(
    device: &Device,
    store: &Store,
    expected: &str,
    window: Duration,
) -> Result<(), UpdateError> {
    let reported = super::confirm::read_version(device, window)
        .await
        .map_err(|e| UpdateError::VersionCheck(e.to_string()))?;
    let Some(reported) = reported else {
        tracing::warn!(device = %device.config.id, "device reports no version; update not confirmed by version, recorded as installed by fota-agent");
        super::installed::record(store, &device.config.id, Some(expected))?;
        return Ok(());
    };
    match device.config.version_scheme.compare(&reported, expected) {
        Ok(Ordering::Equal) => Ok(()),
        _ => Err(UpdateError::VersionMismatch {
            reported,
            expected: expected.to_string(),
        }),
    }
}

/// Emits the terminal outcome once and writes it to the store; removes the staged
/// image unless it waits for its update step.
fn finish(store: &Store, job: &Job<'_>, outcome: Option<Outcome>) {
    let (firmware, mode) = (job.firmware, job.mode);
    let id = &job.device.config.id;
    let Some(outcome) = outcome else {
        return;
    };
    let emitted = match &outcome {
        Outcome::Success => job.progress.success(),
        Outcome::Failed(r) => job.progress.failed(r.clone()),
        Outcome::Canceled => job.progress.canceled(),
    };
    if let Err(e) = emitted {
        tracing::error!(device = %id, "progress already finished: {e}");
    }
    let record = OutcomeRecord {
        version: firmware.version.clone(),
        outcome: outcome.clone(),
        finished_at: now_secs(),
    };
    let mut keep_staged = mode == Mode::TransferOnly;
    let saved = store.update(id, |s| {
        let in_flight = s.in_flight.take();
        let was_reflash = mode == Mode::Reflash;
        s.reflash =
            reflash::next_record(s.reflash.take(), in_flight.as_ref(), &outcome, was_reflash);
        if let Some(r) = &s.reflash {
            tracing::warn!(device = %id, firmware_version = %r.version,
                "the device was left half-written: it needs a re-flash");
        }
        keep_staged |= s.reflash.is_some();
        if mode != Mode::TransferOnly {
            s.transferred = None;
        }
        s.last_outcome = Some(record);
    });
    if let Err(e) = saved {
        tracing::error!(device = %id, "cannot record outcome: {e}");
    }
    if !keep_staged {
        fetch::remove_images(&store.downloads_dir(), id, firmware);
    }
}

#[cfg(test)]
mod tests;
