//! One update of one device, start to finish: the progress sequence, fetch and
//! verification, the handler's transfer and update steps, the version check
//! afterwards, the update timeout, cancellation, and the records in the store that
//! let a restart resolve an update it did not see finish.

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Device;
use super::fetch::{self, FetchError};
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
}

/// What every update shares: where state lives, how to download and what to
/// trust, how long it may take.
pub struct Context<'a> {
    pub store: &'a Store,
    pub downloader: &'a Downloader,
    pub trust: &'a crate::trust::TrustPolicy,
    pub timeout: Duration,
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
    let work = steps(ctx, device, firmware, mode, &progress);
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
    finish(device, store, firmware, mode, &progress, outcome.clone());
    outcome
}

/// Records which phase the update of `firmware` is in, for a restart to resolve.
/// From the update phase on, a version the agent installed earlier is void.
fn set_phase(store: &Store, id: &str, firmware: &Firmware, phase: Phase) -> Result<(), StoreError> {
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
            })
        })
        .map(drop)
}

/// [`Mode::Immediate`], [`Mode::Install`] and [`Mode::TransferOnly`]: fetch and
/// verify, transfer in the background if the handler can, then (not for
/// `TransferOnly`) update. [`Mode::UpdateTransferred`]: see [`update_transferred`].
async fn steps(
    ctx: &Context<'_>,
    device: &Device,
    firmware: &Firmware,
    mode: Mode,
    progress: &Progress,
) -> Result<(), UpdateError> {
    if mode == Mode::UpdateTransferred {
        return update_transferred(ctx, device, firmware, progress).await;
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
    progress.define_sequence(sequence)?;
    set_phase(store, id, firmware, Phase::Transfer)?;
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
    set_phase(store, id, firmware, Phase::Update)?;
    // A handler without background transfer is entered at TRANSFERRING and
    // moves to UPDATING itself.
    progress.next()?;
    device.handler.update(&image, progress).await?;
    if mode == Mode::Install {
        return Ok(());
    }
    confirm_version(device, store, &firmware.version).await
}

/// [`Mode::UpdateTransferred`]: re-verify the staged image, then update.
async fn update_transferred(
    ctx: &Context<'_>,
    device: &Device,
    firmware: &Firmware,
    progress: &Progress,
) -> Result<(), UpdateError> {
    let store = ctx.store;
    let id = &device.config.id;
    progress.define_sequence(if device.handler.background_transfer().is_some() {
        &[ProgressStep::Updating]
    } else {
        &[ProgressStep::Transferring, ProgressStep::Updating]
    })?;
    let state = store.load(id)?;
    let staged = state
        .transferred
        .filter(|t| t.version == firmware.version)
        .ok_or_else(|| UpdateError::NotTransferred(firmware.version.clone()))?;
    let image = fetch::reverify(&store.downloads_dir(), id, firmware, &staged).await?;
    set_phase(store, id, firmware, Phase::Update)?;
    progress.next()?;
    device.handler.update(&image, progress).await?;
    confirm_version(device, store, &firmware.version).await
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

/// After the handler reports success, the device must report the target version;
/// a device that reports none is recorded as running it (see `installed`).
pub async fn confirm_version(
    device: &Device,
    store: &Store,
    expected: &str,
) -> Result<(), UpdateError> {
    let reported = device
        .handler
        .current_version()
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
fn finish(
    device: &Device,
    store: &Store,
    firmware: &Firmware,
    mode: Mode,
    progress: &Progress,
    outcome: Option<Outcome>,
) {
    let id = &device.config.id;
    let Some(outcome) = outcome else {
        return;
    };
    let emitted = match &outcome {
        Outcome::Success => progress.success(),
        Outcome::Failed(r) => progress.failed(r.clone()),
        Outcome::Canceled => progress.canceled(),
    };
    if let Err(e) = emitted {
        tracing::error!(device = %id, "progress already finished: {e}");
    }
    let record = OutcomeRecord {
        version: firmware.version.clone(),
        outcome: outcome.clone(),
        finished_at: now_secs(),
    };
    let keep_staged = mode == Mode::TransferOnly;
    let saved = store.update(id, |s| {
        s.in_flight = None;
        if !keep_staged {
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
