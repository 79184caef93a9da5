//! The ESP8266 ROM bootloader's serial commands, as esptool's loader speaks them
//! (checked against esptool 5.6): the request and response layout, the opcodes
//! this handler uses, the data checksum, the status bytes and the ROM's
//! erase-size quirk.
//!
//! Request (before SLIP): `u8 0x00, u8 opcode, u16 LE data length, u32 LE
//! checksum, data`. Response: `u8 0x01, u8 opcode, u16 LE data length, u32 LE
//! value, data`; on the ESP8266 ROM the data ends with two status bytes
//! (status, reason), status non-zero meaning failure.

use std::fmt;

/// Request direction byte.
pub const DIR_REQUEST: u8 = 0x00;
/// Response direction byte.
pub const DIR_RESPONSE: u8 = 0x01;

/// The ROM loader's block size for FLASH_DATA.
pub const FLASH_WRITE_SIZE: u32 = 0x400;
/// The flash erase unit.
pub const FLASH_SECTOR_SIZE: u32 = 0x1000;
/// Seed of the FLASH_DATA checksum.
pub const CHECKSUM_SEED: u8 = 0xEF;

/// Register whose value tells the chip family.
pub const CHIP_DETECT_MAGIC_REG: u32 = 0x4000_1000;
/// What [`CHIP_DETECT_MAGIC_REG`] reads on an ESP8266.
pub const ESP8266_MAGIC: u32 = 0xFFF0_C101;

/// Payload of SYNC: `07 07 12 20` and 32 × `0x55` (lets the ROM measure the baud).
pub fn sync_payload() -> Vec<u8> {
    let mut d = vec![0x07, 0x07, 0x12, 0x20];
    d.extend_from_slice(&[0x55; 32]);
    d
}

/// A command opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Op(pub u8);

impl Op {
    pub const FLASH_BEGIN: Op = Op(0x02);
    pub const FLASH_DATA: Op = Op(0x03);
    pub const FLASH_END: Op = Op(0x04);
    pub const MEM_BEGIN: Op = Op(0x05);
    pub const MEM_END: Op = Op(0x06);
    pub const MEM_DATA: Op = Op(0x07);
    pub const SYNC: Op = Op(0x08);
    pub const WRITE_REG: Op = Op(0x09);
    pub const READ_REG: Op = Op(0x0A);

    pub fn name(self) -> &'static str {
        match self {
            Op::FLASH_BEGIN => "FLASH_BEGIN",
            Op::FLASH_DATA => "FLASH_DATA",
            Op::FLASH_END => "FLASH_END",
            Op::MEM_BEGIN => "MEM_BEGIN",
            Op::MEM_END => "MEM_END",
            Op::MEM_DATA => "MEM_DATA",
            Op::SYNC => "SYNC",
            Op::WRITE_REG => "WRITE_REG",
            Op::READ_REG => "READ_REG",
            _ => "unknown command",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The ROM's data checksum: `0xEF` XOR every byte (sent in the checksum field of
/// FLASH_DATA and MEM_DATA; zero for other commands).
pub fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(CHECKSUM_SEED, |acc, b| acc ^ b)
}

/// A request, unframed.
pub fn request(op: Op, data: &[u8], checksum: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.push(DIR_REQUEST);
    out.push(op.0);
    // Callers never build requests longer than a flash block plus header.
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum.to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// FLASH_BEGIN data: erase size, block count, block size, offset.
pub fn flash_begin(erase_size: u32, blocks: u32, block_size: u32, offset: u32) -> Vec<u8> {
    [erase_size, blocks, block_size, offset]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// FLASH_DATA data: length, sequence number, two zero words, the block.
pub fn flash_data(seq: u32, block: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + block.len());
    let len = u32::try_from(block.len()).unwrap_or(u32::MAX);
    for v in [len, seq, 0, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(block);
    out
}

/// The ROM's two status bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub status: u8,
    pub reason: u8,
}

impl Status {
    pub fn is_ok(self) -> bool {
        self.status == 0
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "status {:#04x} reason {:#04x} ({})",
            self.status,
            self.reason,
            reason_text(self.reason)
        )
    }
}

/// The ROM's reason codes (esptool lists them as 0x1xx results).
pub fn reason_text(reason: u8) -> &'static str {
    match reason {
        0x00 => "undefined error",
        0x01 => "input parameter invalid",
        0x02 => "out of memory",
        0x03 => "failed to send message",
        0x04 => "failed to receive message",
        0x05 => "invalid message (unknown command or bad format)",
        0x06 => "message ok but the command failed",
        0x07 => "checksum error",
        0x08 => "flash write error",
        0x09 => "flash read error",
        0x0A => "flash read length error",
        _ => "unknown reason",
    }
}

/// A parsed response frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub op: Op,
    pub value: u32,
    /// The data before the status bytes.
    pub data: Vec<u8>,
    pub status: Status,
}

/// Why a frame is not a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("frame of {0} bytes is shorter than a response header")]
    Short(usize),
    #[error("direction byte {0:#04x} is not a response")]
    Direction(u8),
    #[error("length field {field} does not match {actual} data bytes")]
    Length { field: u16, actual: usize },
    #[error("response carries no status bytes")]
    NoStatus,
}

impl Response {
    /// Parses one (un-SLIPped) frame; any bytes give a value or an error.
    pub fn parse(frame: &[u8]) -> Result<Response, ResponseError> {
        let Some((head, data)) = frame.split_first_chunk::<8>() else {
            return Err(ResponseError::Short(frame.len()));
        };
        if head[0] != DIR_RESPONSE {
            return Err(ResponseError::Direction(head[0]));
        }
        let len = u16::from_le_bytes([head[2], head[3]]);
        if usize::from(len) != data.len() {
            return Err(ResponseError::Length {
                field: len,
                actual: data.len(),
            });
        }
        let Some((body, [status, reason])) = data.split_last_chunk::<2>() else {
            return Err(ResponseError::NoStatus);
        };
        Ok(Response {
            op: Op(head[1]),
            value: u32::from_le_bytes([head[4], head[5], head[6], head[7]]),
            data: body.to_vec(),
            status: Status {
                status: *status,
                reason: *reason,
            },
        })
    }
}

/// The erase size to put in FLASH_BEGIN for writing `size` bytes at `offset`.
///
/// The ESP8266 ROM erases more than asked when the region does not start on a
/// 64 KiB block (it counts the head sectors up to the next block twice), so
/// the size sent is corrected the way esptool's `get_erase_size` does; the ROM
/// then erases exactly the sectors the image covers.
pub fn erase_size(offset: u32, size: u32) -> u32 {
    const SECTORS_PER_BLOCK: u64 = 16;
    let sector = u64::from(FLASH_SECTOR_SIZE);
    let num_sectors = u64::from(size).div_ceil(sector);
    let start_sector = u64::from(offset) / sector;
    let head_sectors = (SECTORS_PER_BLOCK - start_sector % SECTORS_PER_BLOCK).min(num_sectors);
    let bytes = if num_sectors < 2 * head_sectors {
        num_sectors.div_ceil(2) * sector
    } else {
        (num_sectors - head_sectors) * sector
    };
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// What the ROM actually erases for FLASH_BEGIN(`erase_size`, `offset`): its
/// arithmetic counts the sectors up to the next 64 KiB block twice. The
/// simulator erases this much, and the tests check [`erase_size`] against it.
/// Returns the number of bytes erased from `offset` (rounded down to a sector).
pub fn rom_erased_len(offset: u32, erase_size: u32) -> u64 {
    const SECTORS_PER_BLOCK: u64 = 16;
    let sector = u64::from(FLASH_SECTOR_SIZE);
    let num_sectors = u64::from(erase_size).div_ceil(sector);
    let start_sector = u64::from(offset) / sector;
    let head_sectors = (SECTORS_PER_BLOCK - start_sector % SECTORS_PER_BLOCK).min(num_sectors);
    (num_sectors + head_sectors) * sector
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_ef_xor_data() {
        assert_eq!(checksum(&[]), 0xEF);
        assert_eq!(checksum(&[0xEF]), 0);
        assert_eq!(checksum(&[0xFF; 0x400]), 0xEF);
        assert_eq!(checksum(&[1, 2, 4]), 0xEF ^ 7);
    }

    #[test]
    fn request_layout() {
        let r = request(Op::READ_REG, &0x4000_1000u32.to_le_bytes(), 0);
        assert_eq!(r, [0, 0x0A, 4, 0, 0, 0, 0, 0, 0x00, 0x10, 0x00, 0x40]);
        let d = flash_data(17, &[0xAA; 4]);
        assert_eq!(&d[..16], &[4, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn parses_rom_responses() {
        // A READ_REG reply as captured from a real ESP8266 (esptool issue #397).
        let frame = [0x01, 0x0a, 0x02, 0x00, 0xc4, 0x01, 0x00, 0x00, 0x00, 0x00];
        let r = Response::parse(&frame).unwrap();
        assert_eq!(r.op, Op::READ_REG);
        assert_eq!(r.value, 0x1c4);
        assert!(r.status.is_ok());
        let err = [0x01, 0x14, 0x02, 0x00, 0, 0, 0, 0, 0x01, 0x05];
        let r = Response::parse(&err).unwrap();
        assert!(!r.status.is_ok());
        assert!(r.status.to_string().contains("invalid message"));
    }

    #[test]
    fn rejects_malformed_responses() {
        assert_eq!(Response::parse(&[1, 2, 3]), Err(ResponseError::Short(3)));
        assert_eq!(
            Response::parse(&[0, 8, 2, 0, 0, 0, 0, 0, 0, 0]),
            Err(ResponseError::Direction(0))
        );
        assert!(matches!(
            Response::parse(&[1, 8, 9, 0, 0, 0, 0, 0, 0, 0]),
            Err(ResponseError::Length { .. })
        ));
        assert_eq!(
            Response::parse(&[1, 8, 0, 0, 0, 0, 0, 0]),
            Err(ResponseError::NoStatus)
        );
    }

    #[test]
    fn erase_size_matches_esptool() {
        // Values computed with esptool 5.6's ESP8266ROM.get_erase_size.
        let cases = [
            (0x0, 0x1, 0x1000),
            (0x0, 0x1000, 0x1000),
            (0x0, 0x1001, 0x1000),
            (0x0, 0x10000, 0x8000),
            (0x0, 0x100000, 0xF0000),
            (0x1000, 0x3000, 0x2000),
            (0x3000, 0x20000, 0x13000),
            (0xF000, 0x2000, 0x1000),
            (0x0, 0, 0),
        ];
        for (offset, size, want) in cases {
            assert_eq!(erase_size(offset, size), want, "{offset:#x} {size:#x}");
        }
    }

    #[test]
    fn the_rom_then_erases_at_least_the_image() {
        for offset in (0..0x40000).step_by(0x1000) {
            for size in [1u32, 0x1000, 0x1800, 0x7000, 0x10000, 0x23456, 0x100000] {
                let erased = rom_erased_len(offset, erase_size(offset, size));
                let needed = u64::from(size).div_ceil(0x1000) * 0x1000;
                assert!(erased >= needed, "{offset:#x} {size:#x}: {erased:#x}");
                assert!(
                    erased <= needed + 0x1000,
                    "{offset:#x} {size:#x}: {erased:#x}"
                );
            }
        }
    }
}
