//! The ESP8266 handler (`handler = "esp8266"`): flashes an application image
//! through the chip's ROM serial bootloader, the protocol esptool speaks with
//! `--no-stub`.
//!
//! # Introduction
//!
//! An ESP8266 (ESP-01, ESP-12, NodeMCU, ...) wired to one of the gateway's UARTs.
//! The agent resets it into the mask-ROM bootloader, writes the image block by
//! block, and restarts it into the new application. No stub loader is uploaded:
//! only ROM commands are used (SYNC, READ_REG, FLASH_BEGIN, FLASH_DATA,
//! FLASH_END), so nothing but this crate's code runs on either side.
//!
//! Files: [`slip`] (framing), [`protocol`] (commands, checksums, status bytes,
//! the ROM's erase-size quirk), [`image`] (image check), [`flasher`] (the
//! conversation over any [`crate::serial::Link`]). The simulator the tests use
//! lives in `tests/esp8266_sim/`.
//!
//! # Firmware Format
//!
//! A single ESP8266 "version 1" image as `esptool elf2image` writes it and the
//! ROM boots it: magic `0xE9`, segment count (1..=16), flash mode, flash
//! size/frequency, entry point, the segments, and a checksum byte (`0xEF` XOR all
//! segment data) at the end of the 16-byte aligned header part; anything after
//! it (e.g. irom0 text placed further into the file) is written as it is. It is
//! written at `flash_offset` (default 0, a multiple of 4 KiB). The header and
//! checksum are checked before the port is even opened: a bad magic, an
//! impossible segment count, a segment running past the end of the file or a
//! checksum mismatch refuse the update with the reason, and the device is not
//! touched. (`0xEA` "version 2" OTA images are refused: they need a second-stage
//! bootloader at offset 0 that this handler does not manage.)
//!
//! Versions: the ROM cannot report the application's version. With
//! `version_command` set, that command (run exactly as the command handler runs
//! its `version_command`, e.g. a script asking the application over the network
//! or another UART) reports it, and the engine confirms the update by it.
//! Without it the version is unknown: the firmware status stays UNKNOWN and an
//! update cannot be confirmed beyond "every block was acknowledged". With
//! `version_scheme = "espressif"` the engine applies Espressif's rules (same
//! ptype, no `(n)` image) before the handler is called; the handler adds none.
//!
//! # Update Behavior
//!
//! The update starts in TRANSFERRING:
//! 1. `reset = "classic"`: esptool's classic DTR/RTS sequence (GPIO0 low while
//!    EN is released) puts the chip into its ROM bootloader. `reset = "none"`:
//!    no modem line is touched; the device must already wait in its bootloader
//!    (ptys, boards without the auto-reset circuit).
//! 2. SYNC (`07 07 12 20` + 32 × `0x55`), resent every 100 ms until answered
//!    (up to 10 times per reset, 3 resets with `classic`); the ROM's extra SYNC
//!    answers are drained.
//! 3. READ_REG `0x40001000` must read `0xFFF0C101` (ESP8266); any other chip is
//!    refused.
//! 4. FLASH_BEGIN erases the region (with the erase size corrected for the
//!    ESP8266 ROM's erase bug, as esptool's `get_erase_size`), then FLASH_DATA
//!    sends 1 KiB blocks with sequence numbers and the `0xEF` XOR checksum, the
//!    last block padded with `0xFF`. Percent is reported per block.
//! 5. UPDATING: FLASH_END (reboot) and, with `classic`, an RTS pulse on EN to
//!    restart into the new application.
//!
//! Each command has its own deadline (100 ms per SYNC, 1 s for READ_REG,
//! 30 s/MiB for the erase, 1.5 s plus wire time per block) and is sent up to 3
//! times when its answer is lost, malformed or carries an error status (a block
//! is resent with the same sequence number). When the attempts are used up the
//! update fails naming the step, e.g. `esp8266 FLASH_DATA block 17/256 (seq 16):
//! no response after 3 attempts` or `... device answered status 0x01 reason
//! 0x07 (checksum error)`. A device that goes silent therefore fails the update
//! within seconds, not at the engine's overall timeout. The port is closed at
//! the end of every attempt, so the next attempt starts afresh. The ROM has no
//! read-back or MD5 (esptool's stub adds those): integrity rests on the image
//! check, the per-block checksum and status, and the version reported after the
//! reboot.
//!
//! # Vendor ID Security
//!
//! None: the ESP8266 ROM bootloader accepts any image from anyone who can reach
//! its UART and has no secure boot. The agent only sends images the engine
//! verified (checksums, device type, version rules) and that pass the image
//! check above.
//!
//! # External Interface Access
//!
//! The serial port named by `port` (e.g. `/dev/ttyUSB0`), read-write; the agent's
//! user needs to be in `dialout`. With `reset = "classic"` the port must support
//! the DTR/RTS ioctls (USB-serial adapters do; ptys do not, use `none`).

pub mod config;
pub mod flasher;
pub mod image;
pub mod protocol;
pub mod slip;

use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::command::CommandHandler;
use super::{HandlerError, UpdateHandler, VerifiedImage};
use crate::config::{Esp8266Config, EspReset};
use crate::progress::{Progress, ProgressStep};
use crate::serial::SerialLink;
pub use flasher::Timeouts;

/// Largest flash an ESP8266 addresses (16 MiB).
pub const MAX_FLASH: u64 = 16 * 1024 * 1024;

/// Flashes one ESP8266 through its ROM bootloader.
pub struct Esp8266Handler {
    device_id: String,
    port: PathBuf,
    baud: u32,
    flash_offset: u32,
    reset: EspReset,
    timeouts: Timeouts,
    version: Option<CommandHandler>,
}

impl Esp8266Handler {
    pub fn new(device_id: &str, device_type: &str, config: &Esp8266Config) -> Self {
        let version = CommandHandler::serial_version(device_id, device_type, config);
        Esp8266Handler {
            device_id: device_id.to_string(),
            port: config.serial.port.clone(),
            baud: config.serial.baud,
            flash_offset: config.flash_offset,
            reset: config.reset,
            timeouts: Timeouts::default(),
            version,
        }
    }

    /// Replaces the protocol deadlines (tests, unusually slow devices).
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Checks `image` for this device: the image format and that it fits at
    /// `flash_offset`.
    pub fn check_image(&self, image: &[u8]) -> Result<image::ImageInfo, HandlerError> {
        self.check_fit(image.len() as u64)?;
        image::validate(image)
            .map_err(|e| HandlerError::failed("esp8266 image check", e.to_string()))
    }

    /// [`Self::check_image`] for the image file at `path`, read as a stream;
    /// returns what its header says and its length.
    async fn check_image_file(&self, path: &Path) -> Result<(image::ImageInfo, u32), HandlerError> {
        let io = |e| HandlerError::io(format!("reading {}", path.display()), e);
        let len = tokio::fs::metadata(path).await.map_err(io)?.len();
        self.check_fit(len)?;
        let file = std::fs::File::open(path).map_err(io)?;
        let info = tokio::task::spawn_blocking(move || {
            image::validate_from(std::io::BufReader::new(file), len)
        })
        .await
        .map_err(|e| HandlerError::failed("esp8266 image check", e.to_string()))?
        .map_err(|e| HandlerError::failed("esp8266 image check", e.to_string()))?;
        // check_fit bounds `len` by the 16 MiB an ESP8266 addresses.
        Ok((info, len as u32))
    }

    /// The offset is sector-aligned and `len` bytes there end within the flash.
    fn check_fit(&self, len: u64) -> Result<(), HandlerError> {
        if !self
            .flash_offset
            .is_multiple_of(protocol::FLASH_SECTOR_SIZE)
        {
            return Err(HandlerError::failed(
                "esp8266 image check",
                format!(
                    "flash_offset {:#x} is not a multiple of 4 KiB",
                    self.flash_offset
                ),
            ));
        }
        let end = u64::from(self.flash_offset) + len;
        if end > MAX_FLASH {
            return Err(HandlerError::failed(
                "esp8266 image check",
                format!(
                    "{len} bytes at {:#x} end past the 16 MiB an ESP8266 addresses",
                    self.flash_offset
                ),
            ));
        }
        Ok(())
    }
}

fn report(progress: &Progress, result: Result<(), crate::progress::ProgressError>) {
    if let Err(e) = result {
        tracing::warn!(device = progress.device_id(), "esp8266: progress: {e}");
    }
}

#[async_trait]
impl UpdateHandler for Esp8266Handler {
    async fn current_version(&self) -> Result<Option<String>, HandlerError> {
        super::command::version_from(self.version.as_ref()).await
    }

    /// What the 16 MiB an ESP8266 addresses leave above `flash_offset`.
    fn image_limit(&self) -> Option<u64> {
        Some(MAX_FLASH.saturating_sub(u64::from(self.flash_offset)))
    }

    async fn update(&self, image: &VerifiedImage, progress: &Progress) -> Result<(), HandlerError> {
        let path = image.path();
        let (info, len) = self.check_image_file(path).await?;
        let mut data = tokio::io::BufReader::new(
            tokio::fs::File::open(path)
                .await
                .map_err(|e| HandlerError::io(format!("reading {}", path.display()), e))?,
        );
        tracing::info!(
            device = %self.device_id,
            port = %self.port.display(),
            "esp8266: flashing {len} bytes at {:#x} ({info})",
            self.flash_offset
        );
        let mut link = SerialLink::open(&self.port, self.baud)
            .map_err(|e| HandlerError::failed("esp8266 open", e.to_string()))?;
        let in_transfer = progress.current_step() == Some(ProgressStep::Transferring);
        let mut flasher = flasher::Flasher::new(
            &mut link,
            self.port.display().to_string(),
            self.baud,
            self.reset,
            self.timeouts.clone(),
        );
        let job = flasher::Job {
            image: &mut data,
            len,
            offset: self.flash_offset,
        };
        flasher
            .run(
                job,
                || progress.commit().map_err(|_| HandlerError::Canceled),
                |done, total| {
                    if in_transfer {
                        let pct = (u64::from(done) * 100 / u64::from(total.max(1))) as u8;
                        report(progress, progress.update(pct.min(100)));
                    }
                },
                || report(progress, progress.advance_to(ProgressStep::Updating)),
            )
            .await?;
        tracing::info!(device = %self.device_id, "esp8266: image written, device restarted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SerialConfig;
    use std::time::Duration;

    fn handler(flash_offset: u32) -> Esp8266Handler {
        Esp8266Handler::new(
            "esp",
            "esp",
            &Esp8266Config {
                serial: SerialConfig {
                    port: "/dev/null".into(),
                    baud: 115_200,
                },
                flash_offset,
                reset: EspReset::None,
                version_command: None,
                command_timeout: Duration::from_secs(1),
            },
        )
    }

    #[test]
    fn check_image_refuses_bad_images_and_offsets() {
        let img = image::build(0x4010_0004, &[(0x4010_0000, &[1, 2, 3][..])]);
        assert!(handler(0).check_image(&img).is_ok());
        assert!(handler(0xFF_F000).check_image(&img).is_ok());
        let err = handler(0xFF_FFF0 & !0xFFF)
            .check_image(&[0u8; 4])
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("esp8266 image check: image is 4 bytes"),
            "{err}"
        );
        let mut big = img.clone();
        big.resize(0x2000, 0xFF);
        let err = handler(0xFF_F000)
            .check_image(&big)
            .unwrap_err()
            .to_string();
        assert!(err.contains("past the 16 MiB"), "{err}");
        let err = handler(0x800).check_image(&img).unwrap_err().to_string();
        assert!(err.contains("not a multiple of 4 KiB"), "{err}");
    }

    #[tokio::test]
    async fn without_version_command_the_version_is_unknown() {
        assert_eq!(handler(0).current_version().await.unwrap(), None);
    }
}
