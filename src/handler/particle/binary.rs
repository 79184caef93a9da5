//! A Particle user binary, read and checked the way the device will check it,
//! so that a wrong file is refused before one byte goes to the device.
//!
//! Layout (device-os `dynalib/inc/module_info.h`, `module_info.inc`,
//! `build/arm/linker/linker_module_end.ld`): a 24-byte module prefix at the
//! start (start and end address u32, reserved, flags, module version u16,
//! platform id u16, function, index, two dependencies), the code, a 40-byte
//! suffix (product id u16, PRODUCT_VERSION u16, reserved u16, SHA-256 u8[32],
//! suffix size u16 = 40), then a CRC-32 (zlib) of everything before it, stored
//! big-endian. The SHA-256 covers the file minus its last 38 bytes (itself, the
//! size and the CRC). All integers but the CRC are little-endian.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

/// The module prefix (`module_info_t`).
pub const PREFIX_LEN: u64 = 24;
/// The suffix with product data (`module_info_suffix_t` plus product id and version).
pub const SUFFIX_LEN: u64 = 40;
/// The CRC-32 after the suffix.
pub const CRC_LEN: u64 = 4;
/// `MOD_FUNC_USER_PART`.
pub const USER_PART: u8 = 5;

/// What a user binary says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserBinary {
    pub platform_id: u16,
    pub module_function: u8,
    pub product_id: u16,
    pub product_version: u16,
    /// The suffix's SHA-256, uppercase hex as the device's `s` prints it (`u`).
    pub sha256: String,
    pub len: u64,
}

/// Why a file is not a user binary the configured device can take.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{len} bytes is too short for a Particle module (prefix, suffix and CRC)")]
    TooShort { len: u64 },
    #[error("module end address 0x{end:08X} - start 0x{start:08X} + 4 is not the file size {len}")]
    EndAddress { start: u32, end: u32, len: u64 },
    #[error("suffix size is {found}, expected {SUFFIX_LEN}")]
    SuffixSize { found: u16 },
    #[error("CRC-32 mismatch: stored {stored:08X}, computed {computed:08X}")]
    Crc { stored: u32, computed: u32 },
    #[error("SHA-256 in the suffix does not match the file")]
    Sha,
    #[error("not a user part (module function {0}, expected {USER_PART})")]
    NotUserPart(u8),
    #[error("built for platform {found}, the device is platform {expected}")]
    Platform { found: u16, expected: u16 },
    #[error("product id {found} ≠ configured {expected}: quarantined")]
    Product { found: u16, expected: u16 },
    #[error("its PRODUCT_VERSION is {found}, but version {offered} was offered")]
    Version { found: u16, offered: String },
}

/// What the device and the offer require of a binary.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    pub platform_id: u16,
    pub product_id: u16,
    /// The offered version; `None` skips the check (a test sending anyway).
    pub version: Option<&'a str>,
}

/// Reads what `path` says about itself from its prefix and suffix alone (88
/// bytes, whatever the file's size): enough to vet an offer before it is
/// downloaded or sent. The SHA-256 is the suffix's, not yet checked.
pub fn peek(path: &Path) -> Result<UserBinary, BinaryError> {
    let mut f = std::fs::File::open(path).map_err(io_error(path))?;
    peek_file(&mut f, path)
}

/// Reads and verifies `path` in one pass (CRC and SHA-256 streamed, never the
/// whole file in memory).
pub fn read(path: &Path) -> Result<UserBinary, BinaryError> {
    let io = io_error(path);
    let mut f = std::fs::File::open(path).map_err(&io)?;
    let bin = peek_file(&mut f, path)?;
    let mut crc = [0u8; CRC_LEN as usize];
    f.seek(SeekFrom::Start(bin.len - CRC_LEN)).map_err(&io)?;
    f.read_exact(&mut crc).map_err(&io)?;
    let stored = u32::from_be_bytes(crc);
    let (computed, sha) = digests(&mut f, bin.len).map_err(&io)?;
    if computed != stored {
        return Err(BinaryError::Crc { stored, computed });
    }
    if hex::encode_upper(sha) != bin.sha256 {
        return Err(BinaryError::Sha);
    }
    Ok(bin)
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> BinaryError + '_ {
    move |source| BinaryError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The prefix and suffix fields of the open file `f`, with the size checks.
fn peek_file(f: &mut std::fs::File, path: &Path) -> Result<UserBinary, BinaryError> {
    let io = io_error(path);
    let len = f.metadata().map_err(&io)?.len();
    if len < PREFIX_LEN + SUFFIX_LEN + CRC_LEN {
        return Err(BinaryError::TooShort { len });
    }
    let mut prefix = [0u8; PREFIX_LEN as usize];
    f.read_exact(&mut prefix).map_err(&io)?;
    let mut suffix = [0u8; SUFFIX_LEN as usize];
    f.seek(SeekFrom::Start(len - SUFFIX_LEN - CRC_LEN))
        .map_err(&io)?;
    f.read_exact(&mut suffix).map_err(&io)?;

    let le16 = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let (start, end) = (le32(&prefix, 0), le32(&prefix, 4));
    if u64::from(end.wrapping_sub(start)) + CRC_LEN != len || end < start {
        return Err(BinaryError::EndAddress { start, end, len });
    }
    let found = le16(&suffix, 38);
    if u64::from(found) != SUFFIX_LEN {
        return Err(BinaryError::SuffixSize { found });
    }
    Ok(UserBinary {
        platform_id: le16(&prefix, 12),
        module_function: prefix[14],
        product_id: le16(&suffix, 0),
        product_version: le16(&suffix, 2),
        sha256: hex::encode_upper(&suffix[6..38]),
        len,
    })
}

/// CRC-32 of all but the last 4 bytes and SHA-256 of all but the last 38.
fn digests(f: &mut std::fs::File, len: u64) -> std::io::Result<(u32, [u8; 32])> {
    f.seek(SeekFrom::Start(0))?;
    let (crc_end, sha_end) = (len - CRC_LEN, len - 38);
    let mut crc = crc32fast::Hasher::new();
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0u64;
    while pos < crc_end {
        let want = buf.len().min((crc_end - pos) as usize);
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let chunk = &buf[..n];
        crc.update(chunk);
        let to_sha = sha_end.saturating_sub(pos).min(n as u64) as usize;
        sha.update(&chunk[..to_sha]);
        pos += n as u64;
    }
    Ok((crc.finalize(), sha.finalize().into()))
}

impl UserBinary {
    /// The agent's own checks before sending: a user part for this platform and
    /// product whose PRODUCT_VERSION is the offered version.
    pub fn check(&self, expect: &Expect<'_>) -> Result<(), BinaryError> {
        if self.module_function != USER_PART {
            return Err(BinaryError::NotUserPart(self.module_function));
        }
        if self.platform_id != expect.platform_id {
            return Err(BinaryError::Platform {
                found: self.platform_id,
                expected: expect.platform_id,
            });
        }
        if self.product_id != expect.product_id {
            return Err(BinaryError::Product {
                found: self.product_id,
                expected: expect.product_id,
            });
        }
        if let Some(offered) = expect.version
            && offered.trim().parse::<u64>().ok() != Some(u64::from(self.product_version))
        {
            return Err(BinaryError::Version {
                found: self.product_version,
                offered: offered.to_string(),
            });
        }
        Ok(())
    }
}
