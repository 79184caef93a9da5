//! Handlers install verified firmware on one kind of device (ESH
//! `FirmwareUpdateHandler` / `FirmwareUpdateBackgroundTransferHandler`).
//!
//! Invariant: a handler only ever receives a [`VerifiedImage`], which only the
//! engine's verification can make — handlers never see an unverified byte.

pub mod config;

config::handlers! {
    /// `handler = "command"`: see [`command::config::CommandConfig`].
    command => Command(command::config::CommandConfig),
    /// `handler = "esp8266"`: the Espressif ROM serial bootloader.
    esp8266 => Esp8266(esp8266::config::Esp8266Config),
    /// `handler = "esp8266-wifi"`: the gateway as the FOTA server of ESP8266s
    /// running Espressif's IoT_Demo firmware (user1.bin / user2.bin over Wi-Fi).
    esp8266_wifi => Esp8266Wifi(esp8266_wifi::config::Esp8266WifiConfig),
    /// `handler = "xmodem"`: XMODEM / XMODEM-1K / YMODEM to an MCU bootloader.
    xmodem => Xmodem(xmodem::config::XmodemConfig),
    /// `handler = "mt7681"`: MediaTek MT7681 (LinkIt Connect 7681) UART upgrade
    /// (`AT#Reboot`, recovery mode, `AT#UpdateFW`, XMODEM).
    mt7681 => Mt7681(mt7681::config::Mt7681Config),
    /// `handler = "rauc"`: the gateway's own OS, A/B through RAUC over D-Bus.
    rauc => Rauc(rauc::config::RaucConfig),
    /// `handler = "particle"`: a Particle device's user firmware over USB serial
    /// (listening mode, YMODEM).
    particle => Particle(particle::config::ParticleConfig),
}

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use crate::checksum::Digests;
use crate::model::Firmware;
use crate::progress::{Progress, ProgressStep};

/// A firmware image on local disk whose size, checksums, device type and version
/// rules have been checked, with the firmware's further named files checked the
/// same way. Only `engine::fetch` constructs it.
#[derive(Debug, Clone)]
pub struct VerifiedImage {
    path: PathBuf,
    firmware: Firmware,
    digests: Digests,
    reflash: bool,
    parts: Vec<VerifiedPart>,
}

/// One further file of a [`VerifiedImage`] (see [`crate::model::FirmwarePart`]).
#[derive(Debug, Clone)]
pub struct VerifiedPart {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) digests: Digests,
}

impl VerifiedPart {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn digests(&self) -> &Digests {
        &self.digests
    }
}

impl VerifiedImage {
    pub(crate) fn new(path: PathBuf, firmware: Firmware, digests: Digests) -> Self {
        VerifiedImage {
            path,
            firmware,
            digests,
            reflash: false,
            parts: Vec::new(),
        }
    }

    /// The same image, to be written again over a device left half-written.
    pub(crate) fn for_reflash(self) -> Self {
        VerifiedImage {
            reflash: true,
            ..self
        }
    }

    /// Whether this write repeats one that left the device half-written: the
    /// version the device reports then says nothing (it may run only its
    /// recovery firmware), so a handler must not refuse by it.
    pub fn is_reflash(&self) -> bool {
        self.reflash
    }

    /// The same image with its verified further files.
    pub(crate) fn with_parts(mut self, parts: Vec<VerifiedPart>) -> Self {
        self.parts = parts;
        self
    }

    /// The verified further file named `name`, if the firmware has one.
    pub fn part(&self, name: &str) -> Option<&VerifiedPart> {
        self.parts.iter().find(|p| p.name == name)
    }

    pub fn parts(&self) -> &[VerifiedPart] {
        &self.parts
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn firmware(&self) -> &Firmware {
        &self.firmware
    }

    /// Size and the digests computed while verifying (MD5 and SHA-256 at least).
    pub fn digests(&self) -> &Digests {
        &self.digests
    }
}

/// Reports `sent` of `total` bytes as the current step's percent (100 for an
/// empty image); a progress that does not take it is only logged (serial
/// handlers).
pub(crate) fn report_sent(progress: &Progress, sent: u64, total: u64) {
    let pct = (sent.min(total) * 100).checked_div(total).unwrap_or(100) as u8;
    if let Err(e) = progress.update(pct) {
        tracing::debug!("progress: {e}");
    }
}

/// The image is on the device, which installs it now: the UPDATING step
/// (serial handlers).
pub(crate) fn image_sent(progress: &Progress) {
    if let Err(e) = progress.advance_to(ProgressStep::Updating) {
        tracing::debug!("progress: {e}");
    }
}

/// Why a handler could not do what it was asked; becomes the update's failure
/// reason, so it says what failed in words an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error("{step}: {message}")]
    Failed { step: String, message: String },
    #[error("{step}: timed out after {after:?}")]
    Timeout {
        step: String,
        after: std::time::Duration,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("canceled")]
    Canceled,
}

impl HandlerError {
    pub fn failed(step: impl Into<String>, message: impl Into<String>) -> Self {
        HandlerError::Failed {
            step: step.into(),
            message: message.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        HandlerError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Installs firmware on one device.
#[async_trait]
pub trait UpdateHandler: Send + Sync {
    /// The version the device runs now; `None` when the device cannot tell (its
    /// firmware status is then UNKNOWN).
    async fn current_version(&self) -> Result<Option<String>, HandlerError>;

    /// Whether the update can run now (device online, not busy, firmware already
    /// transferred for background devices).
    async fn is_update_executable(&self) -> Result<bool, HandlerError> {
        Ok(true)
    }

    /// Installs `image`. The engine enters this at TRANSFERRING for an immediate
    /// update of a handler without background transfer (the handler calls
    /// `progress.advance_to(Updating)` when its update step starts), or at UPDATING
    /// otherwise. Returning `Ok` means the device took the image; the engine then
    /// confirms by the version the device reports.
    async fn update(&self, image: &VerifiedImage, progress: &Progress) -> Result<(), HandlerError>;

    /// Why the handler refuses `offer` before a byte of it is downloaded, when
    /// the offer itself tells (a local file whose header the handler can read);
    /// `Err` holds the reason in words, shown by `check` and logged by `run`.
    /// Admitting is no promise: [`Self::update`] checks the image again.
    async fn vet(&self, _offer: &Firmware) -> Result<(), String> {
        Ok(())
    }

    /// The largest image the device can take (its flash, the configured
    /// region), when known: the engine refuses a larger offer before it
    /// downloads a byte (and a larger download before the device is touched).
    fn image_limit(&self) -> Option<u64> {
        None
    }

    /// Stops a running `transfer` or `update` as soon as possible. Called by the
    /// engine on cancel and on timeout, after it dropped the running future.
    async fn cancel(&self) {}

    /// For a handler whose update step takes the agent down with it (the
    /// gateway's reboot): judges, in start-up recovery, the update to `version`
    /// left in flight. `None`: the engine judges by the version the device reports.
    async fn resolve_after_restart(&self, _version: &str) -> Option<Result<(), HandlerError>> {
        None
    }

    /// Called once the outcome [`Self::resolve_after_restart`] gave is recorded
    /// (e.g. to reboot back into the old system only then).
    async fn after_resolved(&self) {}

    /// The background-transfer capability, when the device has one.
    fn background_transfer(&self) -> Option<&dyn BackgroundTransfer> {
        None
    }

    /// Whether the update step ends in the gateway's reboot: the sequence then
    /// ends UPDATING → REBOOTING, and the handler enters REBOOTING before it
    /// asks for the reboot.
    fn reboots(&self) -> bool {
        false
    }
}

/// Moves firmware to the device ahead of the update step, so the later update is
/// quick (e.g. into a spare flash slot).
#[async_trait]
pub trait BackgroundTransfer: Send + Sync {
    /// Transfers `image`, reporting percent within the TRANSFERRING step.
    async fn transfer(
        &self,
        image: &VerifiedImage,
        progress: &Progress,
    ) -> Result<(), HandlerError>;
}

/// The handler a device's config names (see the registry in [`config`]).
pub fn build(
    device: &crate::config::DeviceConfig,
) -> Result<std::sync::Arc<dyn UpdateHandler>, HandlerError> {
    Ok(device.handler.handler(device))
}
