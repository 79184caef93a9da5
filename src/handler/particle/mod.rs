//! The Particle handler: a user binary to a Particle device (Argon, Boron,
//! Photon 2 …) on the gateway's USB serial port, by listening mode and YMODEM,
//! as `particle flash --serial` did up to Device OS 5.
//!
//! 1. The binary is read and checked first, without touching the device
//!    ([`binary`]): module prefix, suffix, SHA-256, CRC-32, user part, the
//!    configured platform and product (another product is refused: the cloud
//!    would quarantine the device), PRODUCT_VERSION equal to the offered version.
//! 2. The port is opened at `baud` (28800 puts the device in listening
//!    mode), `s` confirms the device's platform ([`console`]).
//! 3. `f` and YMODEM ([`flash`]); the device validates, restarts and its port
//!    is away for a moment.
//!
//! Over serial the device never reports its PRODUCT_VERSION, only its user
//! module's SHA-256: the handler remembers the SHA-256 and version of every
//! binary it checked ([`known`], `<state_dir>/<device>.particle.json`) and so
//! turns `s` into a version.

pub mod binary;
pub mod config;
pub mod console;
pub mod flash;
pub mod known;

use std::sync::atomic::AtomicBool;

use async_trait::async_trait;

use self::binary::{Expect, UserBinary};
use self::config::ParticleConfig;
use self::console::{enter_listening, send};
use self::flash::FlashOptions;
use self::known::KnownFirmware;
use super::xmodem::transfer::cancel_cut_off;
use super::{HandlerError, UpdateHandler, VerifiedImage};
use crate::model::{Firmware, FirmwareLocation};
use crate::progress::Progress;

/// Updates one Particle device over USB serial.
pub struct ParticleHandler {
    device_id: String,
    config: ParticleConfig,
    known: KnownFirmware,
    /// A transfer began and did not end: if its future is dropped (engine
    /// cancel or timeout) `cancel` tells the device to stop receiving.
    in_transfer: AtomicBool,
}

impl ParticleHandler {
    pub fn new(device_id: &str, config: &ParticleConfig) -> Self {
        let map = config.state_dir.join(format!("{device_id}.particle.json"));
        ParticleHandler {
            device_id: device_id.to_string(),
            config: config.clone(),
            known: KnownFirmware::open(&map),
            in_transfer: AtomicBool::new(false),
        }
    }

    /// Reads and checks `image` against this device and `version`.
    async fn checked(
        &self,
        image: &VerifiedImage,
        version: &str,
    ) -> Result<UserBinary, HandlerError> {
        let path = image.path().to_path_buf();
        let bin = tokio::task::spawn_blocking(move || binary::read(&path))
            .await
            .map_err(|e| HandlerError::failed("particle binary", e.to_string()))?
            .map_err(|e| HandlerError::failed("particle binary", e.to_string()))?;
        bin.check(&self.expect(version))
            .map_err(|e| HandlerError::failed("particle binary", format!("refused: {e}")))?;
        Ok(bin)
    }

    /// What this device requires of a binary offered as `version`.
    fn expect<'a>(&self, version: &'a str) -> Expect<'a> {
        Expect {
            platform_id: self.config.platform_id,
            product_id: self.config.product_id,
            version: Some(version),
        }
    }

    /// The device's platform as `s` reports it must be the configured one.
    fn same_platform(&self, found: u16) -> Result<(), HandlerError> {
        if found == self.config.platform_id {
            return Ok(());
        }
        Err(HandlerError::failed(
            "particle module info (s)",
            format!(
                "the device is platform {found}, configured platform_id is {}",
                self.config.platform_id
            ),
        ))
    }
}

#[async_trait]
impl UpdateHandler for ParticleHandler {
    /// Opens listening mode, reads `s`, leaves with `x`, and maps the user
    /// module's SHA-256 to the version of the binary the agent gave it.
    async fn current_version(&self) -> Result<Option<String>, HandlerError> {
        let c = &self.config;
        let (mut link, info) =
            enter_listening(&c.port, c.baud, c.reset_timeout, c.response_timeout).await?;
        if let Err(e) = send(&mut link, b'x').await {
            tracing::debug!(device = %self.device_id, "cannot leave listening mode: {e}");
        }
        self.same_platform(info.platform_id)?;
        let Some(sha) = info.user_sha else {
            tracing::info!(device = %self.device_id, "the device has no user firmware");
            return Ok(None);
        };
        let version = self.known.version_of(&sha).await;
        if version.is_none() {
            tracing::info!(
                device = %self.device_id,
                sha256 = %sha,
                "user firmware unknown to the agent: version unknown"
            );
        }
        Ok(version)
    }

    /// An offer on local disk (the directory source) is checked by its prefix
    /// and suffix before it is downloaded: another product's binary (the cloud
    /// would quarantine the device), another platform's, or a PRODUCT_VERSION
    /// other than the offered version never starts an update.
    async fn vet(&self, offer: &Firmware) -> Result<(), String> {
        let FirmwareLocation::File(path) = &offer.location else {
            return Ok(());
        };
        let path = path.clone();
        let bin = tokio::task::spawn_blocking(move || binary::peek(&path))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        bin.check(&self.expect(&offer.version))
            .map_err(|e| e.to_string())
    }

    async fn update(&self, image: &VerifiedImage, progress: &Progress) -> Result<(), HandlerError> {
        let bin = self.checked(image, &image.firmware().version).await?;
        let version = bin.product_version.to_string();
        if let Err(e) = self.known.record(&bin.sha256, &version).await {
            tracing::warn!(device = %self.device_id, "cannot remember the binary: {e}");
        }
        let mut data = tokio::fs::File::open(image.path()).await.map_err(|e| {
            HandlerError::io(format!("opening image {}", image.path().display()), e)
        })?;
        let c = &self.config;
        let (mut link, info) =
            enter_listening(&c.port, c.baud, c.reset_timeout, c.response_timeout).await?;
        self.same_platform(info.platform_id)?;
        tracing::info!(
            device = %self.device_id,
            port = %c.port.display(),
            bytes = bin.len,
            product_version = bin.product_version,
            "sending the user binary"
        );
        let opts = FlashOptions {
            response_timeout: c.response_timeout,
            retries: c.retries,
            baud: c.baud,
            reset_timeout: c.reset_timeout,
        };
        flash::flash(&mut link, &mut data, bin.len, &opts, progress, &self.in_transfer).await?;
        tracing::info!(device = %self.device_id, "binary accepted; the device restarts");
        Ok(())
    }

    /// Tells the device to stop receiving (CANs) when a transfer was cut off;
    /// otherwise it would wait for blocks until its own timeouts (about 30 s).
    async fn cancel(&self) {
        let c = &self.config;
        let open = || {
            crate::serial::SerialLink::open(&c.port, c.baud)
                .map_err(|e| HandlerError::failed("particle open", e.to_string()))
        };
        cancel_cut_off(&self.in_transfer, open, &self.device_id).await;
    }

    /// The user part's largest size on any current platform (P2: 1.5 MiB).
    fn image_limit(&self) -> Option<u64> {
        Some(USER_PART_LIMIT)
    }
}

/// 1.5 MiB: the P2 / Photon 2 user part, the largest of current platforms.
const USER_PART_LIMIT: u64 = 1536 * 1024;
