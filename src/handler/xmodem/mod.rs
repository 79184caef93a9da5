//! The XMODEM / XMODEM-1K / YMODEM handler: sends the image over a serial port to
//! an MCU bootloader that receives it by one of these protocols.
//!
//! # Introduction
//!
//! Many microcontroller bootloaders (STM32 IAP examples, Nordic/TI/Microchip
//! serial loaders, U-Boot's `loadx`/`loady`, vendor "UART update" modes) take a
//! new application image by XMODEM or YMODEM: the device is the *receiver*, the
//! agent the *sender*. `handler = "xmodem"` implements the sender for the three
//! common variants:
//!
//! | `protocol`  | blocks                         | check                 |
//! |-------------|--------------------------------|-----------------------|
//! | `xmodem`    | 128-byte `SOH` blocks          | CRC-16 or 8-bit sum   |
//! | `xmodem-1k` | 1024-byte `STX` blocks         | CRC-16                |
//! | `ymodem`    | header block 0, then as 1K     | CRC-16                |
//!
//! # Firmware Format
//!
//! The image is sent as it is, byte for byte: a raw application binary in
//! whatever layout the bootloader writes to flash (typically a `.bin` linked for
//! the application's flash offset, not an ELF or Intel HEX file). XMODEM has no
//! length field, so the last block is padded with `0x1A` (CP/M EOF) and the
//! bootloader receives up to 127 (1K: up to 1023) padding bytes after the image;
//! bootloaders that need the exact size should use YMODEM, whose header block
//! carries the file name (the firmware file's base name, restricted to
//! `[A-Za-z0-9._-]`, or `firmware.bin`) and the size in decimal. In the 1K
//! variants a remainder of at most 384 bytes is sent in 128-byte blocks.
//!
//! # Update Behavior
//!
//! The device has no background transfer: the engine enters the update at
//! TRANSFERRING and the handler
//! 1. opens `port` at `baud` (raw 8N1, no flow control) and discards stale input;
//! 2. sends `enter_command` (if set; e.g. `"update\r"` makes the application jump
//!    to its bootloader), then waits up to `response_timeout` for the receiver's
//!    start: `C` (CRC-16) or, for plain XMODEM only, NAK (checksum). A `C`
//!    followed at once by more text (say, "Checking…" printed by the
//!    application) is not a start. Repeated up to `retries` times, each time with
//!    the enter command;
//! 3. YMODEM: sends the header block and waits for ACK and a new `C`;
//! 4. sends the data blocks (numbers wrap at 256); each block is repeated on NAK or
//!    when no answer comes within `response_timeout`, up to `retries` times.
//!    Bytes other than ACK/NAK/CAN are ignored. Percent of TRANSFERRING is
//!    reported after every acknowledged block;
//! 5. sends EOT until it is acknowledged (a NAK asks for it again, as YMODEM
//!    receivers do); YMODEM then waits for `C` and ends the batch with an empty
//!    block 0;
//! 6. moves to UPDATING and returns: the bootloader now writes and boots the
//!    image. The engine then confirms the update by the device's version.
//!
//! Failures name the protocol step, e.g. `xmodem block 12/80: no ACK after 10
//! attempts (0 NAK, 10 timeouts of 10s)`; a receiver that stops answering makes
//! the update fail within about `response_timeout × retries`. Two CANs from the
//! receiver fail the update with `receiver canceled`. On any other failure, and
//! when the engine cancels the update or it times out, the handler sends CANs so
//! the bootloader abandons the transfer and waits for a new one: the next attempt
//! starts from scratch (XMODEM cannot resume).
//!
//! The current version comes from `version_command`, run exactly like the command
//! handler's (argv, stdout's first line, bounded by `command_timeout`); XMODEM
//! itself cannot ask the device. Without `version_command` the version is
//! unknown: firmware status stays UNKNOWN, version rules cannot refuse an image,
//! and an update is not confirmed by version. The version command runs right
//! after the transfer, while the bootloader may still be writing flash or
//! booting, so it should wait for the application (retry until it answers,
//! within `command_timeout`).
//!
//! # Vendor ID Security
//!
//! XMODEM carries no identity, signature or checksum of the whole image: the
//! bootloader accepts any bytes. Only the engine's checks (size, MD5/SHA-256 from
//! the source, device type, version rules) stand between a wrong file and the
//! device's flash; the handler only ever gets a verified image. Bootloaders that
//! check a signature or CRC of the image after receiving it are recommended.
//!
//! # External Interface Access
//!
//! The agent needs read/write access to `port` (root, or the `dialout` group for
//! `/dev/ttyUSB*` / `/dev/ttyACM*`) and opens it exclusively for the length of the
//! update. Nothing else (e.g. a console on the same UART, or `version_command`
//! talking to the port) may use it meanwhile.

pub mod config;
pub mod protocol;
pub(crate) mod transfer;

use std::sync::atomic::AtomicBool;

use async_trait::async_trait;

use super::command::CommandHandler;
use super::{HandlerError, UpdateHandler, VerifiedImage};
use crate::config::XmodemConfig;
use crate::model::FirmwareLocation;
use crate::progress::Progress;
use crate::serial::SerialLink;

/// Sends images to one device's XMODEM / YMODEM bootloader.
pub struct XmodemHandler {
    device_id: String,
    config: XmodemConfig,
    /// Runs `version_command`, when configured.
    version: Option<CommandHandler>,
    /// A transfer began and did not end with a clean EOT or a sent cancel: if its
    /// future is dropped (engine cancel or timeout) `cancel` tells the receiver.
    in_transfer: AtomicBool,
}

impl XmodemHandler {
    pub fn new(device_id: &str, device_type: &str, config: &XmodemConfig) -> Self {
        let version = CommandHandler::serial_version(device_id, device_type, config);
        XmodemHandler {
            device_id: device_id.to_string(),
            config: config.clone(),
            version,
            in_transfer: AtomicBool::new(false),
        }
    }

    fn options(&self) -> protocol::Options {
        protocol::Options {
            protocol: self.config.protocol,
            enter_command: self
                .config
                .enter_command
                .as_ref()
                .map(|c| c.as_bytes().to_vec()),
            response_timeout: self.config.response_timeout,
            block_timeout: self.config.response_timeout,
            retries: self.config.retries.max(1),
            baud: self.config.serial.baud,
        }
    }

    fn open(&self) -> Result<SerialLink, HandlerError> {
        SerialLink::open(&self.config.serial.port, self.config.serial.baud)
            .map_err(|e| HandlerError::failed("xmodem open", e.to_string()))
    }
}

/// The name the YMODEM header gives: the firmware file's base name.
fn file_name(image: &VerifiedImage) -> String {
    let name = match &image.firmware().location {
        FirmwareLocation::File(p) => p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        FirmwareLocation::Remote(r) => r.name.rsplit('/').next().unwrap_or("").to_string(),
        FirmwareLocation::Url(u) => u
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string(),
    };
    protocol::sanitize_file_name(&name)
}

#[async_trait]
impl UpdateHandler for XmodemHandler {
    async fn current_version(&self) -> Result<Option<String>, HandlerError> {
        super::command::version_from(self.version.as_ref()).await
    }

    async fn update(&self, image: &VerifiedImage, progress: &Progress) -> Result<(), HandlerError> {
        let (mut data, len) = transfer::open_image(image.path()).await?;
        let name = file_name(image);
        let mut link = self.open()?;
        transfer::clear_stale_input(&mut link, &self.device_id);
        tracing::info!(
            device = %self.device_id,
            port = %self.config.serial.port.display(),
            protocol = ?self.config.protocol,
            bytes = len,
            "sending firmware"
        );
        let file = protocol::File {
            name: &name,
            len,
            data: &mut data,
            mtime: None,
        };
        let opts = self.options();
        transfer::send_image(&mut link, opts, file, progress, &self.in_transfer, "").await?;
        tracing::info!(device = %self.device_id, "firmware sent; the bootloader installs it");
        Ok(())
    }

    /// Tells the receiver to give up (CANs) when a transfer was cut off.
    async fn cancel(&self) {
        transfer::cancel_cut_off(&self.in_transfer, || self.open(), &self.device_id).await;
    }
}
