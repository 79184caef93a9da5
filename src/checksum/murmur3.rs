//! Streaming MurmurHash3 (x86_32 and x64_128, seed 0), the non-cryptographic
//! digests ThingsBoard offers as `MURMUR3_32` and `MURMUR3_128`. ThingsBoard
//! computes them with Guava, whose hex form is the hash's bytes in little-endian
//! order (`hello world` → `0f8f925e`, the 32-bit value 0x5e928f0f); `hex()` returns
//! exactly that form. Streaming: blocks are mixed as they complete, a partial block
//! is kept until more data arrives or `finish` mixes it as the tail.

const C1_32: u32 = 0xcc9e_2d51;
const C2_32: u32 = 0x1b87_3593;

/// MurmurHash3_x86_32.
#[derive(Debug, Clone, Default)]
pub struct Murmur3_32 {
    h: u32,
    buf: [u8; 4],
    buffered: usize,
    len: u64,
}

impl Murmur3_32 {
    pub fn new() -> Self {
        Self::default()
    }

    fn block(&mut self, b: [u8; 4]) {
        let mut k = u32::from_le_bytes(b);
        k = k.wrapping_mul(C1_32).rotate_left(15).wrapping_mul(C2_32);
        self.h ^= k;
        self.h = self
            .h
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.buffered > 0 {
            let take = (4 - self.buffered).min(data.len());
            self.buf[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered < 4 {
                return;
            }
            self.block(self.buf);
            self.buffered = 0;
        }
        let mut blocks = data.chunks_exact(4);
        for b in &mut blocks {
            self.block([b[0], b[1], b[2], b[3]]);
        }
        let rest = blocks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    pub fn finish(mut self) -> u32 {
        if self.buffered > 0 {
            let mut k = 0u32;
            for i in (0..self.buffered).rev() {
                k = (k << 8) | u32::from(self.buf[i]);
            }
            k = k.wrapping_mul(C1_32).rotate_left(15).wrapping_mul(C2_32);
            self.h ^= k;
        }
        // The length is mixed in as a 32-bit value (reference implementation).
        self.h ^= self.len as u32;
        fmix32(self.h)
    }

    /// Guava's hex form: the little-endian bytes.
    pub fn hex(self) -> String {
        hex::encode(self.finish().to_le_bytes())
    }
}

fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

const C1_128: u64 = 0x87c3_7b91_1142_53d5;
const C2_128: u64 = 0x4cf5_ad43_2745_937f;

/// MurmurHash3_x64_128.
#[derive(Debug, Clone, Default)]
pub struct Murmur3_128 {
    h1: u64,
    h2: u64,
    buf: [u8; 16],
    buffered: usize,
    len: u64,
}

impl Murmur3_128 {
    pub fn new() -> Self {
        Self::default()
    }

    fn block(&mut self, b: &[u8; 16]) {
        let mut k1 = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
        let mut k2 = u64::from_le_bytes(b[8..].try_into().unwrap_or_default());
        k1 = k1.wrapping_mul(C1_128).rotate_left(31).wrapping_mul(C2_128);
        self.h1 ^= k1;
        self.h1 = self
            .h1
            .rotate_left(27)
            .wrapping_add(self.h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        k2 = k2.wrapping_mul(C2_128).rotate_left(33).wrapping_mul(C1_128);
        self.h2 ^= k2;
        self.h2 = self
            .h2
            .rotate_left(31)
            .wrapping_add(self.h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.buffered > 0 {
            let take = (16 - self.buffered).min(data.len());
            self.buf[self.buffered..self.buffered + take].copy_from_slice(&data[..take]);
            self.buffered += take;
            data = &data[take..];
            if self.buffered < 16 {
                return;
            }
            let b = self.buf;
            self.block(&b);
            self.buffered = 0;
        }
        let mut blocks = data.chunks_exact(16);
        for b in &mut blocks {
            let mut block = [0u8; 16];
            block.copy_from_slice(b);
            self.block(&block);
        }
        let rest = blocks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buffered = rest.len();
    }

    pub fn finish(mut self) -> (u64, u64) {
        let tail = &self.buf[..self.buffered];
        let (mut k1, mut k2) = (0u64, 0u64);
        for i in (8..tail.len()).rev() {
            k2 = (k2 << 8) | u64::from(tail[i]);
        }
        for i in (0..tail.len().min(8)).rev() {
            k1 = (k1 << 8) | u64::from(tail[i]);
        }
        if tail.len() > 8 {
            k2 = k2.wrapping_mul(C2_128).rotate_left(33).wrapping_mul(C1_128);
            self.h2 ^= k2;
        }
        if !tail.is_empty() {
            k1 = k1.wrapping_mul(C1_128).rotate_left(31).wrapping_mul(C2_128);
            self.h1 ^= k1;
        }
        self.h1 ^= self.len;
        self.h2 ^= self.len;
        self.h1 = self.h1.wrapping_add(self.h2);
        self.h2 = self.h2.wrapping_add(self.h1);
        self.h1 = fmix64(self.h1);
        self.h2 = fmix64(self.h2);
        self.h1 = self.h1.wrapping_add(self.h2);
        self.h2 = self.h2.wrapping_add(self.h1);
        (self.h1, self.h2)
    }

    /// Guava's hex form: h1 then h2, each little-endian.
    pub fn hex(self) -> String {
        let (h1, h2) = self.finish();
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&h1.to_le_bytes());
        bytes[8..].copy_from_slice(&h2.to_le_bytes());
        hex::encode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Guava 31.1 (`Hashing.murmur3_32()` / `murmur3_128()`
    /// `.hashBytes(b).toString()`), the library ThingsBoard computes them with.
    const VECTORS: &[(&str, &str, &str)] = &[
        ("", "00000000", "00000000000000000000000000000000"),
        (
            "hello world",
            "0f8f925e",
            "0e617feb46603f53b163eb607d4697ab",
        ),
        (
            "The quick brown fox jumps over the lazy dog",
            "23f74f2e",
            "6c1b07bc7bbc4be347939ac4a93c437a",
        ),
        (
            "0123456789abcdef0",
            "6d0efa8e",
            "75c0a58587ae24ebca283131b368fb73",
        ),
    ];

    fn big() -> Vec<u8> {
        (0..100_003u32).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn matches_guava() {
        for (input, m32, m128) in VECTORS {
            let mut h = Murmur3_32::new();
            h.update(input.as_bytes());
            assert_eq!(h.hex(), *m32, "{input:?}");
            let mut h = Murmur3_128::new();
            h.update(input.as_bytes());
            assert_eq!(h.hex(), *m128, "{input:?}");
        }
    }

    #[test]
    fn streaming_in_odd_pieces_matches_one_pass() {
        let data = big();
        for piece in [1usize, 3, 5, 15, 17, 4096] {
            let mut a = Murmur3_32::new();
            let mut b = Murmur3_128::new();
            for c in data.chunks(piece) {
                a.update(c);
                b.update(c);
            }
            assert_eq!(a.hex(), "cb4d302c", "piece {piece}");
            assert_eq!(b.hex(), "b64626ce941aca5765c5333f49349162", "piece {piece}");
        }
    }
}
