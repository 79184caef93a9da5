//! Checks an ESP8266 application image (esptool's "version 1" layout, what the
//! ROM boots from flash offset 0) before a single byte goes to the device:
//!
//! ```text
//! u8 0xE9 magic | u8 segment count | u8 flash mode | u8 flash size/freq | u32 entry
//! segment × count: u32 load address | u32 length | data
//! 0x00 padding so that the next byte sits at offset 15 mod 16 | u8 checksum
//! [anything after: e.g. the irom0 text a v1 image carries at a later offset]
//! ```
//!
//! The checksum byte is `0xEF` XOR every byte of segment data (headers excluded),
//! as the ROM computes it when it boots the image (and `esptool image-info`
//! verifies it).

use std::fmt;
use std::io::Read;

/// First byte of an ESP8266 v1 image.
pub const IMAGE_MAGIC: u8 = 0xE9;
/// Most segments an image may have (esptool refuses more too).
pub const MAX_SEGMENTS: u8 = 16;
const HEADER_LEN: usize = 8;
const SEGMENT_HEADER_LEN: usize = 8;

/// What a valid image header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub segments: u8,
    pub flash_mode: u8,
    pub flash_size_freq: u8,
    pub entry: u32,
    /// Offset of the checksum byte.
    pub checksum_offset: usize,
}

impl fmt::Display for ImageInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} segment(s), entry {:#010x}, flash mode {}, size/freq {:#04x}",
            self.segments, self.entry, self.flash_mode, self.flash_size_freq
        )
    }
}

/// Why an image is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("image is {0} bytes, shorter than the 8-byte header")]
    TooShort(usize),
    #[error("bad magic byte {0:#04x} (an ESP8266 image starts with 0xe9)")]
    BadMagic(u8),
    #[error("segment count {0} is not in 1..=16")]
    BadSegmentCount(u8),
    #[error(
        "segment {index} header at offset {offset:#x} runs past the end of the {len}-byte image"
    )]
    TruncatedHeader {
        index: u8,
        offset: usize,
        len: usize,
    },
    #[error(
        "segment {index} at offset {offset:#x} declares {declared} bytes but only {available} remain"
    )]
    TruncatedSegment {
        index: u8,
        offset: usize,
        declared: u32,
        available: usize,
    },
    #[error("checksum byte at offset {offset:#x} is past the end of the {len}-byte image")]
    MissingChecksum { offset: usize, len: usize },
    #[error("checksum mismatch: image has {stored:#04x}, segments give {computed:#04x}")]
    BadChecksum { stored: u8, computed: u8 },
    #[error("reading the image: {0}")]
    Read(String),
}

/// Validates `image`; see the module documentation for what is checked.
pub fn validate(image: &[u8]) -> Result<ImageInfo, ImageError> {
    validate_from(image, image.len() as u64)
}

/// [`validate`] for an image of `len` bytes read from `image` as a stream (an
/// image is never held whole in memory).
pub fn validate_from(mut image: impl Read, len: u64) -> Result<ImageInfo, ImageError> {
    let size = usize::try_from(len).unwrap_or(usize::MAX);
    let read_err = |e: std::io::Error| ImageError::Read(e.to_string());
    let mut header = [0u8; HEADER_LEN];
    if size < HEADER_LEN {
        return Err(ImageError::TooShort(size));
    }
    image.read_exact(&mut header).map_err(read_err)?;
    if header[0] != IMAGE_MAGIC {
        return Err(ImageError::BadMagic(header[0]));
    }
    let segments = header[1];
    if segments == 0 || segments > MAX_SEGMENTS {
        return Err(ImageError::BadSegmentCount(segments));
    }
    let mut pos = HEADER_LEN;
    let mut computed = crate::handler::esp8266::protocol::CHECKSUM_SEED;
    let mut buf = vec![0u8; 64 * 1024];
    for index in 0..segments {
        if size - pos < SEGMENT_HEADER_LEN {
            return Err(ImageError::TruncatedHeader {
                index,
                offset: pos,
                len: size,
            });
        }
        let mut seg = [0u8; SEGMENT_HEADER_LEN];
        image.read_exact(&mut seg).map_err(read_err)?;
        let declared = u32::from_le_bytes([seg[4], seg[5], seg[6], seg[7]]);
        let start = pos + SEGMENT_HEADER_LEN;
        let available = size - start;
        let Some(end) = usize::try_from(declared)
            .ok()
            .and_then(|n| start.checked_add(n))
            .filter(|&end| end <= size)
        else {
            return Err(ImageError::TruncatedSegment {
                index,
                offset: pos,
                declared,
                available,
            });
        };
        let mut left = end - start;
        while left > 0 {
            let n = left.min(buf.len());
            image.read_exact(&mut buf[..n]).map_err(read_err)?;
            computed = buf[..n].iter().fold(computed, |acc, b| acc ^ b);
            left -= n;
        }
        pos = end;
    }
    let checksum_offset = pos | 15;
    if checksum_offset >= size {
        return Err(ImageError::MissingChecksum {
            offset: checksum_offset,
            len: size,
        });
    }
    let mut padding_and_checksum = [0u8; 16];
    let tail = &mut padding_and_checksum[..checksum_offset - pos + 1];
    image.read_exact(tail).map_err(read_err)?;
    let stored = tail[tail.len() - 1];
    if stored != computed {
        return Err(ImageError::BadChecksum { stored, computed });
    }
    Ok(ImageInfo {
        segments,
        flash_mode: header[2],
        flash_size_freq: header[3],
        entry: u32::from_le_bytes([header[4], header[5], header[6], header[7]]),
        checksum_offset,
    })
}

/// Builds a valid image from `(load address, data)` segments (tests, simulator).
pub fn build(entry: u32, segments: &[(u32, &[u8])]) -> Vec<u8> {
    let mut out = vec![IMAGE_MAGIC, segments.len() as u8, 0x00, 0x20];
    out.extend_from_slice(&entry.to_le_bytes());
    let mut checksum = crate::handler::esp8266::protocol::CHECKSUM_SEED;
    for (addr, data) in segments {
        out.extend_from_slice(&addr.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        checksum = data.iter().fold(checksum, |acc, b| acc ^ b);
    }
    out.resize(out.len() | 15, 0);
    out.push(checksum);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        build(
            0x4010_0004,
            &[
                (0x4010_0000, &[1, 2, 3, 4, 5][..]),
                (0x3FFE_8000, &[9; 20][..]),
            ],
        )
    }

    #[test]
    fn accepts_a_built_image_and_trailing_data() {
        let img = sample();
        assert_eq!(img.len() % 16, 0);
        let info = validate(&img).unwrap();
        assert_eq!(info.segments, 2);
        assert_eq!(info.entry, 0x4010_0004);
        assert_eq!(info.checksum_offset, img.len() - 1);
        let mut longer = img.clone();
        longer.extend_from_slice(&[0xFF; 100]);
        assert!(validate(&longer).is_ok());
    }

    #[test]
    fn refuses_bad_images_with_reasons() {
        let img = sample();
        assert_eq!(validate(&img[..5]), Err(ImageError::TooShort(5)));
        let mut bad = img.clone();
        bad[0] = 0xEA;
        assert_eq!(validate(&bad), Err(ImageError::BadMagic(0xEA)));
        let mut bad = img.clone();
        bad[1] = 0;
        assert_eq!(validate(&bad), Err(ImageError::BadSegmentCount(0)));
        bad[1] = 17;
        assert_eq!(validate(&bad), Err(ImageError::BadSegmentCount(17)));
        let mut bad = img.clone();
        bad[1] = 6;
        assert!(matches!(
            validate(&bad),
            Err(ImageError::TruncatedHeader { index: 3, .. })
        ));
        let mut bad = img.clone();
        bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            validate(&bad),
            Err(ImageError::TruncatedSegment { index: 0, .. })
        ));
        let mut bad = img.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(
            validate(&bad),
            Err(ImageError::BadChecksum { .. })
        ));
        let mut bad = img.clone();
        bad[20] ^= 0x40; // segment data
        assert!(matches!(
            validate(&bad),
            Err(ImageError::BadChecksum { .. })
        ));
        assert!(matches!(
            validate(&img[..img.len() - 1]),
            Err(ImageError::MissingChecksum { .. })
        ));
    }

    #[test]
    fn any_bytes_never_panic() {
        let mut x: u32 = 0x9E37_79B9;
        for len in 0..400 {
            let mut buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            if let Some(b) = buf.first_mut() {
                *b = IMAGE_MAGIC;
            }
            let _ = validate(&buf);
        }
    }
}
