//! The checks the device's upgrade library makes on a downloaded user bin, made
//! before it is offered: the header names the slot the bin was linked for, and
//! the last four bytes are its CRC. An image the device would refuse is refused
//! here with the reason, not discovered after a two-minute download.

use std::io::Read;

/// `BIN_MAGIC_IROM` of gen_appbin.py (boot 1.2 and later): `EA 04 00 <app>`.
const MAGIC_IROM: u8 = 0xEA;
/// `BIN_MAGIC_FLASH` (the old boot): `E9 03 00 <app>`.
const MAGIC_FLASH: u8 = 0xE9;
/// The largest user partition (1024+1024 map): 250 sectors of 4 KiB.
const MAX_LEN: usize = 250 * 4096;

/// Which user partition a bin is linked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    User1,
    User2,
}

impl Slot {
    /// The file name the device asks for (`filename=` of its download).
    pub fn file_name(self) -> &'static str {
        match self {
            Slot::User1 => "user1.bin",
            Slot::User2 => "user2.bin",
        }
    }

    /// The `app` byte gen_appbin.py writes into the header.
    fn app(self) -> u8 {
        match self {
            Slot::User1 => 1,
            Slot::User2 => 2,
        }
    }

    pub fn from_file_name(name: &str) -> Option<Slot> {
        [Slot::User1, Slot::User2]
            .into_iter()
            .find(|s| s.file_name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserBinError {
    #[error("{0} bytes is too short for a user bin")]
    TooShort(usize),
    #[error("{0} bytes is larger than the largest user partition ({MAX_LEN} bytes)")]
    TooLong(usize),
    #[error("header {0:02X?} is not a FOTA user bin (EA 04 00 <1|2> or E9 03 00 <1|2>)")]
    Header([u8; 4]),
    #[error("linked for {found}, but offered as {expected} (wrong slot)")]
    WrongSlot {
        expected: &'static str,
        found: String,
    },
    #[error(
        "stored CRC {stored:#010x} is the crc+1 of gen_appbin.py's known bug \
         (the device expects {expected:#010x}); rebuild with a fixed gen_appbin.py"
    )]
    GenAppbinBug { stored: u32, expected: u32 },
    #[error("stored CRC {stored:#010x} does not match the image (expected {expected:#010x})")]
    Crc { stored: u32, expected: u32 },
    #[error("reading the bin: {0}")]
    Read(String),
}

/// The CRC the device checks: CRC-32 over everything but the last four bytes,
/// with initial value 0xFFFFFFFF and no final XOR (the standard CRC-32
/// complemented, which gen_appbin.py stores for a negative Python 2 crc32).
pub fn device_crc(body: &[u8]) -> u32 {
    crc32fast::hash(body) ^ 0xFFFF_FFFF
}

/// Checks `data` as the user bin for `slot`.
pub fn check(data: &[u8], slot: Slot) -> Result<(), UserBinError> {
    check_from(data, data.len() as u64, slot)
}

/// [`check`] for a bin of `len` bytes read from `data` as a stream.
pub fn check_from(mut data: impl Read, len: u64, slot: Slot) -> Result<(), UserBinError> {
    let size = usize::try_from(len).unwrap_or(usize::MAX);
    if size < 12 {
        return Err(UserBinError::TooShort(size));
    }
    if size > MAX_LEN {
        return Err(UserBinError::TooLong(size));
    }
    let read_err = |e: std::io::Error| UserBinError::Read(e.to_string());
    let mut header = [0u8; 4];
    data.read_exact(&mut header).map_err(read_err)?;
    let app = match header {
        [MAGIC_IROM, 4, 0, app] | [MAGIC_FLASH, 3, 0, app] if app == 1 || app == 2 => app,
        _ => return Err(UserBinError::Header(header)),
    };
    if app != slot.app() {
        return Err(UserBinError::WrongSlot {
            expected: slot.file_name(),
            found: format!("user{app}.bin"),
        });
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    let mut left = size - 4 - header.len();
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = left.min(buf.len());
        data.read_exact(&mut buf[..n]).map_err(read_err)?;
        hasher.update(&buf[..n]);
        left -= n;
    }
    let mut tail = [0u8; 4];
    data.read_exact(&mut tail).map_err(read_err)?;
    let stored = u32::from_le_bytes(tail);
    let standard = hasher.finalize();
    let expected = standard ^ 0xFFFF_FFFF;
    if stored == expected {
        Ok(())
    } else if stored == standard.wrapping_add(1) {
        Err(UserBinError::GenAppbinBug { stored, expected })
    } else {
        Err(UserBinError::Crc { stored, expected })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bin(app: u8, len: usize) -> Vec<u8> {
        let mut v = vec![MAGIC_IROM, 4, 0, app];
        v.extend((0..len).map(|i| (i * 7 % 251) as u8));
        let crc = device_crc(&v);
        v.extend(crc.to_le_bytes());
        v
    }

    #[test]
    fn a_correct_bin_passes_for_its_slot_only() {
        assert_eq!(check(&bin(1, 100), Slot::User1), Ok(()));
        assert_eq!(check(&bin(2, 100), Slot::User2), Ok(()));
        let e = check(&bin(2, 100), Slot::User1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "linked for user2.bin, but offered as user1.bin (wrong slot)"
        );
    }

    #[test]
    fn the_gen_appbin_crc_plus_one_is_named() {
        let mut v = bin(1, 100);
        let n = v.len() - 4;
        let buggy = crc32fast::hash(&v[..n]).wrapping_add(1);
        v[n..].copy_from_slice(&buggy.to_le_bytes());
        assert!(matches!(
            check(&v, Slot::User1),
            Err(UserBinError::GenAppbinBug { .. })
        ));
        v[n] ^= 0x55;
        assert!(matches!(
            check(&v, Slot::User1),
            Err(UserBinError::Crc { .. })
        ));
    }

    #[test]
    fn bad_headers_and_lengths() {
        assert_eq!(
            check(&[0xEA; 5], Slot::User1),
            Err(UserBinError::TooShort(5))
        );
        let mut v = bin(1, 100);
        v[0] = 0x7F;
        assert!(matches!(
            check(&v, Slot::User1),
            Err(UserBinError::Header(_))
        ));
        assert!(matches!(
            check(&vec![0xEA; MAX_LEN + 1], Slot::User1),
            Err(UserBinError::TooLong(_))
        ));
        assert_eq!(Slot::from_file_name("user2.bin"), Some(Slot::User2));
        assert_eq!(Slot::from_file_name("user3.bin"), None);
    }
}
