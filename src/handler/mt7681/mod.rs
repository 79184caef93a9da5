//! The MediaTek MT7681 (LinkIt Connect 7681) handler: upgrades the module's
//! firmware over its UART the way MediaTek's `mt7681_uploader.py` does.
//!
//! # Introduction
//!
//! The MT7681 is a Wi-Fi SoC driven over its UART by `AT#` commands. Its SDK
//! (iot_at_cmd.c, iot_xmodem.c, flash_map.h) has a UART firmware upgrade: the
//! command `AT#UpdateFW` turns the module into an XMODEM *receiver* that writes
//! what it receives into one flash region. MediaTek's uploader first sends
//! `AT#Reboot` and waits for the text "Recovery Mode" (the loader starts the
//! recovery firmware for a few seconds after every boot), then sends
//! `AT#UpdateFW` there and the image by XMODEM. `handler = "mt7681"` does the same.
//! docs/handler-mt7681.md lists the sources and which facts are
//! inferred rather than confirmed.
//!
//! # Firmware Format
//!
//! The image is an SDK `*_header.bin` (e.g. `MT7681_sta_header.bin`): a 128-byte
//! upgrade header followed by the region's contents. The header is
//! `76 81 AA`, the length of the contents (4 bytes, little-endian), the region's
//! type byte (1 loader, 2 recovery, 3 EEPROM, 4 STA, 5 STA XIP, 6 AP, 7 AP XIP),
//! then 120 bytes the module ignores. The module takes the region and length from
//! this header (the first XMODEM block) and writes the following blocks at
//! `(block - 2) × 128` within the region, at most `length` bytes in all, so the
//! XMODEM padding of the last block is never written.
//!
//! Before anything is sent the handler checks the header: the magic, a type
//! equal to the configured `region` (default `sta`), a length that is not zero,
//! not more than the bytes after the header and not more than the region's size.
//! Type 8 (the cloud FOTA region of SDK builds with `UIP_CLOUD_SERVER_SUPPORT`) is
//! not supported.
//!
//! # Update Behavior
//!
//! The device has no background transfer: the engine enters the update at
//! TRANSFERRING, and the handler
//! 1. refuses (before opening the port) an image whose version is not strictly
//!    higher than the module's current one under the device's `version_scheme`,
//!    whatever `only_newer` says — an MT7681 only upgrades to a higher version
//!    (MediaTek Cloud Sandbox rule; config validation also rejects
//!    `only_newer = false` and requires `version_command`). An image installed
//!    without a version (`install` without `--version`) is refused as well;
//! 2. checks the image header (above);
//! 3. opens `port` at `baud` (default 115200, raw 8N1) and discards stale input;
//! 4. **recovery mode**: sends `AT#Reboot\r` (or runs `reset_command`, which
//!    reaches the recovery firmware of a module whose application is gone) and
//!    waits up to `response_timeout` for "Recovery Mode"; repeated up to
//!    `retries` times;
//! 5. **start**: sends `AT#UpdateFW\r` and waits up to `response_timeout` for the
//!    receiver's `C` (CRC-16; a NAK starts checksum mode, as the module falls back
//!    to it), again up to `retries` times with the command each time;
//! 6. sends the image in 128-byte XMODEM blocks (the module's receiver treats
//!    every block as 128 bytes, so XMODEM-1K must not be used), header first.
//!    Each block is repeated on NAK, or after [`BLOCK_ANSWER_WAIT`] (at most
//!    `response_timeout`) of silence, up to `retries` times; percent of
//!    TRANSFERRING is reported after every acknowledged block;
//! 7. sends EOT until acknowledged, moves to UPDATING and returns. The module
//!    leaves recovery mode on its own and reboots into the new firmware; the
//!    engine then confirms the update by `version_command`.
//!
//! Failures name the step: `mt7681 version check`, `mt7681 image`,
//! `mt7681 recovery mode (AT#Reboot)`, `mt7681 xmodem start`,
//! `mt7681 xmodem block 12/80`, `mt7681 xmodem end of transmission`. A module that
//! stops answering fails the update within about `response_timeout × retries` of
//! the step it stopped in. On failure, cancel and timeout the handler sends CANs,
//! so the module abandons the transfer; a second attempt starts from scratch.
//!
//! # Vendor ID Security
//!
//! The header has no signature and no checksum of the contents: only the engine's
//! checks (size, digests, device type, version rules) and the header checks above
//! stand between a wrong file and the module's flash. `region` keeps an image for
//! another region (say, a loader) from being written by mistake.
//!
//! # External Interface Access
//!
//! The agent needs read/write access to `port` and opens it exclusively for the
//! update; `version_command` must not hold the port while the update runs.

use std::cmp::Ordering as CmpOrdering;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

pub mod config;

use super::command::CommandHandler;
use super::xmodem::{protocol, transfer};
use super::{HandlerError, UpdateHandler, VerifiedImage};
use crate::config::{Mt7681Config, Mt7681Region, XmodemProtocol};
use crate::progress::Progress;
use crate::serial::{Link, SerialLink, read_byte};
use crate::version::VersionScheme;

/// Length of the upgrade header, which is also the first XMODEM block.
pub const HEADER_LEN: usize = 128;
/// First bytes of the upgrade header (`UART_FW_HEADER` in flash_map.h).
pub const HEADER_MAGIC: [u8; 3] = [0x76, 0x81, 0xAA];
/// Reboots the module; its loader then runs the recovery firmware. The session
/// stays at `baud` throughout: no source shows a baud switch for the upgrade.
pub const REBOOT_COMMAND: &[u8] = b"AT#Reboot\r";
/// What the module prints when it is in recovery mode (what the uploader waits for).
/// The recovery library prints `==> Recovery Mode`; the uploader, and the agent,
/// look for this substring of it.
pub const RECOVERY_BANNER: &[u8] = b"Recovery Mode";
/// Starts the module's XMODEM receiver.
pub const UPDATE_COMMAND: &[u8] = b"AT#UpdateFW\r";
/// The version the engine gives an image installed without `--version`.
const UNKNOWN_VERSION: &str = "unknown";
/// Longest wait for a block's ACK or NAK before sending it again: after an ACK
/// the module's receiver (`IoT_Xmodem_Update_FW`) waits silently three times
/// about 2 s for the next block and then cancels, so a block whose answer was
/// lost must be repeated well within 2 s.
pub const BLOCK_ANSWER_WAIT: Duration = Duration::from_millis(1500);

/// Where a region lives in the MT7681's flash (the default, non-`XIP_164`
/// layout of flash_map.h).
///
/// Uncertain: the type → offset mapping is done by `spi_flash_update_fw` in a
/// binary library; these are read off flash_map.h's names and order. The handler
/// only uses `type_id` and `size` (the module picks the offset); builds with
/// `FLASH_XIP_164` have larger STA/AP regions, which this size check refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionLayout {
    /// The header's type byte.
    pub type_id: u8,
    /// Flash offset of the region.
    pub offset: u32,
    /// Bytes the region holds.
    pub size: u32,
}

/// The flash layout of `region`.
pub fn layout(region: Mt7681Region) -> RegionLayout {
    let (type_id, offset, size) = match region {
        Mt7681Region::Loader => (1, 0x0000, 0x5000),
        Mt7681Region::Recovery => (2, 0x6000, 0x1_0000),
        Mt7681Region::Eeprom => (3, 0x1_7000, 0x1000),
        Mt7681Region::Sta => (4, 0x1_F000, 0x2_F000),
        Mt7681Region::StaXip => (5, 0x3_0000, 0x1_E000),
        Mt7681Region::Ap => (6, 0x4_F000, 0x2_F000),
        Mt7681Region::ApXip => (7, 0x6_0000, 0x1_E000),
    };
    RegionLayout {
        type_id,
        offset,
        size,
    }
}

/// The config name of a region.
fn region_name(region: Mt7681Region) -> &'static str {
    match region {
        Mt7681Region::Loader => "loader",
        Mt7681Region::Recovery => "recovery",
        Mt7681Region::Eeprom => "eeprom",
        Mt7681Region::Sta => "sta",
        Mt7681Region::StaXip => "sta-xip",
        Mt7681Region::Ap => "ap",
        Mt7681Region::ApXip => "ap-xip",
    }
}

/// The upgrade header of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Region type byte.
    pub type_id: u8,
    /// Bytes of contents the module writes.
    pub length: u32,
}

/// Builds the 128-byte upgrade header for `length` bytes of `region`.
pub fn encode_header(region: Mt7681Region, length: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..3].copy_from_slice(&HEADER_MAGIC);
    h[3..7].copy_from_slice(&length.to_le_bytes());
    h[7] = layout(region).type_id;
    h
}

/// Checks that an image of `len` bytes starting with `data` (at least its
/// header) is an upgrade image for `region`.
pub fn check_image(data: &[u8], len: u64, region: Mt7681Region) -> Result<ImageHeader, String> {
    if len <= HEADER_LEN as u64 || data.len() < 8 {
        return Err(format!(
            "{len} bytes is too short for an MT7681 upgrade image (a {HEADER_LEN}-byte header \
             and contents)"
        ));
    }
    if data[..3] != HEADER_MAGIC {
        return Err(format!(
            "no MT7681 upgrade header: the image starts with {:02x} {:02x} {:02x}, not \
             76 81 aa (use the SDK's *_header.bin)",
            data[0], data[1], data[2]
        ));
    }
    let length = u32::from_le_bytes([data[3], data[4], data[5], data[6]]);
    let type_id = data[7];
    let want = layout(region);
    if type_id != want.type_id {
        return Err(format!(
            "the header's region type is {type_id}, but this device's region is {} \
             (type {})",
            region_name(region),
            want.type_id
        ));
    }
    // `header.sh` writes the input's size, so its images have exactly `length`
    // bytes after the header; the receiver only bounds what it writes by it, so a
    // shorter length (trailing bytes never written) is accepted too.
    let contents = len - HEADER_LEN as u64;
    if length == 0 || u64::from(length) > contents {
        return Err(format!(
            "the header's length {length} does not fit the {contents} bytes after the header"
        ));
    }
    if length > want.size {
        return Err(format!(
            "the header's length {length} is larger than the {} region ({} bytes)",
            region_name(region),
            want.size
        ));
    }
    Ok(ImageHeader { type_id, length })
}

/// Upgrades one MT7681 module over its UART.
pub struct Mt7681Handler {
    device_id: String,
    config: Mt7681Config,
    scheme: VersionScheme,
    version: Option<CommandHandler>,
    /// Runs `reset_command`, when there is one.
    reset: Option<CommandHandler>,
    /// A transfer began and did not end with an acknowledged EOT or sent CANs.
    in_transfer: AtomicBool,
}

impl Mt7681Handler {
    pub fn new(
        device_id: &str,
        device_type: &str,
        scheme: VersionScheme,
        config: &Mt7681Config,
    ) -> Self {
        let version = CommandHandler::serial_version(device_id, device_type, config);
        let reset = config.reset_command.as_ref().map(|argv| {
            CommandHandler::version_only(device_id, device_type, argv.clone(), config.command_timeout)
        });
        Mt7681Handler {
            device_id: device_id.to_string(),
            config: config.clone(),
            scheme,
            version,
            reset,
            in_transfer: AtomicBool::new(false),
        }
    }

    fn open(&self) -> Result<SerialLink, HandlerError> {
        SerialLink::open(&self.config.serial.port, self.config.serial.baud)
            .map_err(|e| HandlerError::failed("mt7681 open", e.to_string()))
    }

    /// Refuses `target` unless it is strictly higher than what the module runs.
    async fn check_version(&self, target: &str) -> Result<(), HandlerError> {
        const STEP: &str = "mt7681 version check";
        if target == UNKNOWN_VERSION {
            return Err(HandlerError::failed(
                STEP,
                "the image's version is unknown (give it with --version): an MT7681 only \
                 upgrades to a higher version",
            ));
        }
        let current = match super::command::version_from(self.version.as_ref()).await {
            Ok(Some(v)) => v,
            Ok(None) => {
                return Err(HandlerError::failed(
                    STEP,
                    "version_command reported no version: an MT7681 only upgrades to a \
                     higher version, so the current one must be known",
                ));
            }
            Err(e) => {
                return Err(HandlerError::failed(
                    STEP,
                    format!("cannot read the current version: {e}"),
                ));
            }
        };
        match self.scheme.compare(target, &current) {
            Ok(CmpOrdering::Greater) => Ok(()),
            Ok(_) => Err(HandlerError::failed(
                STEP,
                format!(
                    "refusing version {target}: the module runs {current} and an MT7681 only \
                     upgrades to a higher version"
                ),
            )),
            Err(e) => Err(HandlerError::failed(STEP, e.to_string())),
        }
    }

    /// `AT#Reboot` (or `reset_command`) until the module says it is in recovery
    /// mode.
    async fn enter_recovery<L: Link>(&self, link: &mut L) -> Result<(), HandlerError> {
        let step = match self.config.reset_command {
            Some(_) => "mt7681 recovery mode (reset_command)",
            None => "mt7681 recovery mode (AT#Reboot)",
        };
        let timeout = self.config.response_timeout;
        let retries = self.config.retries.max(1);
        for attempt in 1..=retries {
            match (&self.reset, &self.config.reset_command) {
                (Some(runner), Some(argv)) => {
                    tracing::debug!(device = %self.device_id, attempt, "reset_command");
                    runner.run_reset(argv).await?;
                }
                _ => {
                    tracing::debug!(device = %self.device_id, attempt, "AT#Reboot");
                    write_with_timeout(link, REBOOT_COMMAND, timeout)
                        .await
                        .map_err(|e| HandlerError::failed(step, format!("serial link: {e}")))?;
                }
            }
            if wait_for_text(link, RECOVERY_BANNER, timeout)
                .await
                .map_err(|e| HandlerError::failed(step, format!("serial link: {e}")))?
            {
                tracing::debug!(device = %self.device_id, "module in recovery mode");
                return Ok(());
            }
        }
        Err(HandlerError::failed(
            step,
            format!(
                "no \"Recovery Mode\" from the module after {retries} attempts of {}",
                humantime::format_duration(timeout)
            ),
        ))
    }

    fn options(&self) -> protocol::Options {
        protocol::Options {
            protocol: XmodemProtocol::Xmodem,
            enter_command: Some(UPDATE_COMMAND.to_vec()),
            response_timeout: self.config.response_timeout,
            block_timeout: self.config.response_timeout.min(BLOCK_ANSWER_WAIT),
            retries: self.config.retries.max(1),
            baud: self.config.serial.baud,
        }
    }
}

/// Writes `bytes`, failing when the port does not take them within `timeout`.
async fn write_with_timeout<L: Link>(
    link: &mut L,
    bytes: &[u8],
    timeout: Duration,
) -> std::io::Result<()> {
    match tokio::time::timeout(timeout, async {
        link.write_all(bytes).await?;
        link.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write blocked",
        )),
    }
}

/// Reads until `needle` has arrived (true) or `timeout` passed (false).
async fn wait_for_text<L: Link>(
    link: &mut L,
    needle: &[u8],
    timeout: Duration,
) -> std::io::Result<bool> {
    let deadline = Instant::now() + timeout;
    let mut window: Vec<u8> = Vec::with_capacity(needle.len());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let Some(b) = read_byte(link, left).await? else {
            return Ok(false);
        };
        if window.len() == needle.len() {
            window.remove(0);
        }
        window.push(b);
        if window == needle {
            return Ok(true);
        }
    }
}

#[async_trait]
impl UpdateHandler for Mt7681Handler {
    async fn current_version(&self) -> Result<Option<String>, HandlerError> {
        super::command::version_from(self.version.as_ref()).await
    }

    /// The upgrade header and what the configured region holds.
    fn image_limit(&self) -> Option<u64> {
        Some(HEADER_LEN as u64 + u64::from(layout(self.config.region).size))
    }

    async fn update(&self, image: &VerifiedImage, progress: &Progress) -> Result<(), HandlerError> {
        if !image.is_reflash() {
            self.check_version(&image.firmware().version).await?;
        }
        let (mut data, len) = transfer::open_image(image.path()).await?;
        let head = transfer::read_head(&mut data, image.path(), HEADER_LEN).await?;
        let header = check_image(&head, len, self.config.region)
            .map_err(|m| HandlerError::failed("mt7681 image", m))?;
        let mut link = self.open()?;
        transfer::clear_stale_input(&mut link, &self.device_id);
        let region = layout(self.config.region);
        tracing::info!(
            device = %self.device_id,
            port = %self.config.serial.port.display(),
            region = region_name(self.config.region),
            flash_offset = format_args!("{:#x}", region.offset),
            bytes = header.length,
            "upgrading MT7681"
        );
        self.in_transfer.store(true, Ordering::SeqCst);
        if let Err(e) = self.enter_recovery(&mut link).await {
            transfer::tell_receiver_to_stop(&mut link, &self.device_id).await;
            self.in_transfer.store(false, Ordering::SeqCst);
            return Err(e);
        }
        let file = protocol::File {
            name: "",
            len,
            data: &mut data,
            mtime: None,
        };
        let opts = self.options();
        transfer::send_image(
            &mut link,
            opts,
            file,
            progress,
            &self.in_transfer,
            "mt7681 ",
        )
        .await?;
        tracing::info!(device = %self.device_id, "firmware sent; the module writes it and reboots");
        Ok(())
    }

    /// Tells the module to give up (CANs) when a transfer was cut off.
    async fn cancel(&self) {
        transfer::cancel_cut_off(&self.in_transfer, || self.open(), &self.device_id).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(region: Mt7681Region, contents: &[u8]) -> Vec<u8> {
        let mut v = encode_header(region, contents.len() as u32).to_vec();
        v.extend_from_slice(contents);
        v
    }

    #[test]
    fn header_layout() {
        let h = encode_header(Mt7681Region::Sta, 0x0102_0304);
        assert_eq!(&h[..8], &[0x76, 0x81, 0xAA, 4, 3, 2, 1, 4]);
        assert!(h[8..].iter().all(|&b| b == 0));
    }

    #[test]
    fn accepts_a_matching_image() {
        let data = img(Mt7681Region::Ap, &[9; 300]);
        assert_eq!(
            check_image(&data, data.len() as u64, Mt7681Region::Ap),
            Ok(ImageHeader {
                type_id: 6,
                length: 300
            })
        );
    }

    #[test]
    fn rejects_bad_images() {
        let ok = img(Mt7681Region::Sta, &[1; 200]);
        let cases: Vec<(Vec<u8>, Mt7681Region, &str)> = vec![
            (ok[..100].to_vec(), Mt7681Region::Sta, "too short"),
            (
                {
                    let mut d = ok.clone();
                    d[0] = 0x7f;
                    d
                },
                Mt7681Region::Sta,
                "no MT7681 upgrade header",
            ),
            (ok.clone(), Mt7681Region::Loader, "region type is 4"),
            (
                {
                    let mut d = ok.clone();
                    d[3..7].copy_from_slice(&201u32.to_le_bytes());
                    d
                },
                Mt7681Region::Sta,
                "does not fit",
            ),
            (
                {
                    let mut d = ok.clone();
                    d[3..7].copy_from_slice(&0u32.to_le_bytes());
                    d
                },
                Mt7681Region::Sta,
                "does not fit",
            ),
            (
                img(Mt7681Region::Eeprom, &[0; 0x1001]),
                Mt7681Region::Eeprom,
                "larger than the eeprom region",
            ),
        ];
        for (data, region, want) in cases {
            let err = check_image(&data, data.len() as u64, region).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn regions_do_not_overlap_and_fit_the_flash() {
        let all = [
            Mt7681Region::Loader,
            Mt7681Region::Recovery,
            Mt7681Region::Eeprom,
            Mt7681Region::Sta,
            Mt7681Region::Ap,
        ];
        for w in all.windows(2) {
            let (a, b) = (layout(w[0]), layout(w[1]));
            assert!(a.offset + a.size <= b.offset, "{w:?}");
            assert_eq!(b.type_id, a.type_id + if b.type_id == 6 { 2 } else { 1 });
        }
        // The XIP parts lie inside their firmware's region.
        for (fw, xip) in [
            (Mt7681Region::Sta, Mt7681Region::StaXip),
            (Mt7681Region::Ap, Mt7681Region::ApXip),
        ] {
            let (f, x) = (layout(fw), layout(xip));
            assert!(f.offset < x.offset && x.offset + x.size <= f.offset + f.size);
        }
        assert!(layout(Mt7681Region::Ap).offset + layout(Mt7681Region::Ap).size <= 0x7F000);
    }
}
