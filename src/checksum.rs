//! Streaming digests over firmware bytes: every algorithm a source names is updated
//! in the same single pass over the data, so an image is read once and never held
//! in memory.

use std::fmt;
use std::str::FromStr;

use sha2::Digest;

pub mod murmur3;
pub mod parallel;

/// A digest algorithm a firmware source may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChecksumAlgorithm {
    Md5,
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    Crc32,
    /// MurmurHash3 x86_32, seed 0, hex of the little-endian bytes (as ThingsBoard
    /// computes it with Guava: `hello world` → `0f8f925e`).
    Murmur3_32,
    /// MurmurHash3 x64_128, seed 0, hex of h1 then h2, each little-endian (Guava).
    Murmur3_128,
}

impl ChecksumAlgorithm {
    /// Length of the hex form of this digest.
    pub fn hex_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Md5 => 32,
            ChecksumAlgorithm::Sha1 => 40,
            ChecksumAlgorithm::Sha256 => 64,
            ChecksumAlgorithm::Sha384 => 96,
            ChecksumAlgorithm::Sha512 => 128,
            ChecksumAlgorithm::Crc32 => 8,
            ChecksumAlgorithm::Murmur3_32 => 8,
            ChecksumAlgorithm::Murmur3_128 => 32,
        }
    }
}

impl fmt::Display for ChecksumAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChecksumAlgorithm::Md5 => "MD5",
            ChecksumAlgorithm::Sha1 => "SHA-1",
            ChecksumAlgorithm::Sha256 => "SHA-256",
            ChecksumAlgorithm::Sha384 => "SHA-384",
            ChecksumAlgorithm::Sha512 => "SHA-512",
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Murmur3_32 => "MURMUR3_32",
            ChecksumAlgorithm::Murmur3_128 => "MURMUR3_128",
        })
    }
}

impl FromStr for ChecksumAlgorithm {
    type Err = ChecksumError;

    /// Accepts the spellings servers use: `MD5`, `md5`, `SHA256`, `sha-256`, `CRC32`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        Ok(match norm.as_str() {
            "md5" => ChecksumAlgorithm::Md5,
            "sha1" => ChecksumAlgorithm::Sha1,
            "sha256" => ChecksumAlgorithm::Sha256,
            "sha384" => ChecksumAlgorithm::Sha384,
            "sha512" => ChecksumAlgorithm::Sha512,
            "crc32" => ChecksumAlgorithm::Crc32,
            "murmur332" => ChecksumAlgorithm::Murmur3_32,
            "murmur3128" => ChecksumAlgorithm::Murmur3_128,
            _ => return Err(ChecksumError::UnknownAlgorithm(s.to_string())),
        })
    }
}

/// An expected digest: algorithm and lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    hex: String,
}

impl Checksum {
    /// Validates that `hex` has the algorithm's length and only hex digits.
    pub fn new(algorithm: ChecksumAlgorithm, hex: &str) -> Result<Self, ChecksumError> {
        let hex = hex.trim().to_ascii_lowercase();
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ChecksumError::Malformed {
                algorithm,
                value: hex,
            });
        }
        Ok(Checksum { algorithm, hex })
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChecksumError {
    #[error("unknown checksum algorithm {0:?}")]
    UnknownAlgorithm(String),
    #[error("malformed {algorithm} checksum {value:?}: expected {} hex digits", algorithm.hex_len())]
    Malformed {
        algorithm: ChecksumAlgorithm,
        value: String,
    },
    #[error("{algorithm} mismatch: expected {expected}, got {actual}")]
    Mismatch {
        algorithm: ChecksumAlgorithm,
        expected: String,
        actual: String,
    },
}

enum State {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
    Crc32(crc32fast::Hasher),
    Murmur3_32(murmur3::Murmur3_32),
    Murmur3_128(murmur3::Murmur3_128),
}

impl State {
    fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm {
            ChecksumAlgorithm::Md5 => State::Md5(md5::Md5::new()),
            ChecksumAlgorithm::Sha1 => State::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => State::Sha256(sha2::Sha256::new()),
            ChecksumAlgorithm::Sha384 => State::Sha384(sha2::Sha384::new()),
            ChecksumAlgorithm::Sha512 => State::Sha512(sha2::Sha512::new()),
            ChecksumAlgorithm::Crc32 => State::Crc32(crc32fast::Hasher::new()),
            ChecksumAlgorithm::Murmur3_32 => State::Murmur3_32(murmur3::Murmur3_32::new()),
            ChecksumAlgorithm::Murmur3_128 => State::Murmur3_128(murmur3::Murmur3_128::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            State::Md5(h) => h.update(data),
            State::Sha1(h) => h.update(data),
            State::Sha256(h) => h.update(data),
            State::Sha384(h) => h.update(data),
            State::Sha512(h) => h.update(data),
            State::Crc32(h) => h.update(data),
            State::Murmur3_32(h) => h.update(data),
            State::Murmur3_128(h) => h.update(data),
        }
    }

    fn finish(self) -> String {
        match self {
            State::Md5(h) => hex::encode(h.finalize()),
            State::Sha1(h) => hex::encode(h.finalize()),
            State::Sha256(h) => hex::encode(h.finalize()),
            State::Sha384(h) => hex::encode(h.finalize()),
            State::Sha512(h) => hex::encode(h.finalize()),
            State::Crc32(h) => format!("{:08x}", h.finalize()),
            State::Murmur3_32(h) => h.hex(),
            State::Murmur3_128(h) => h.hex(),
        }
    }
}

/// Updates several digests in one pass over a byte stream.
pub struct MultiHasher {
    states: Vec<(ChecksumAlgorithm, State)>,
    length: u64,
}

impl MultiHasher {
    /// A hasher for each distinct algorithm in `algorithms`.
    pub fn new(algorithms: impl IntoIterator<Item = ChecksumAlgorithm>) -> Self {
        let mut algs: Vec<ChecksumAlgorithm> = algorithms.into_iter().collect();
        algs.sort();
        algs.dedup();
        MultiHasher {
            states: algs.into_iter().map(|a| (a, State::new(a))).collect(),
            length: 0,
        }
    }

    /// A hasher for the algorithms of the expected checksums.
    pub fn for_checksums(expected: &[Checksum]) -> Self {
        Self::new(expected.iter().map(|c| c.algorithm))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.length += data.len() as u64;
        for (_, s) in &mut self.states {
            s.update(data);
        }
    }

    /// Bytes seen so far.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The per-algorithm states and the bytes seen, for [`parallel::ParallelHasher`]
    /// to continue on its threads.
    fn into_parts(self) -> (Vec<(ChecksumAlgorithm, State)>, u64) {
        (self.states, self.length)
    }

    /// The hex digests, one per algorithm.
    pub fn finish(self) -> Digests {
        Digests {
            length: self.length,
            values: self
                .states
                .into_iter()
                .map(|(a, s)| (a, s.finish()))
                .collect(),
        }
    }
}

/// The result of a [`MultiHasher`] pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub length: u64,
    values: Vec<(ChecksumAlgorithm, String)>,
}

impl Digests {
    pub fn get(&self, algorithm: ChecksumAlgorithm) -> Option<&str> {
        self.values
            .iter()
            .find(|(a, _)| *a == algorithm)
            .map(|(_, v)| v.as_str())
    }

    /// Checks every expected checksum; the first mismatch names expected and actual.
    pub fn verify(&self, expected: &[Checksum]) -> Result<(), ChecksumError> {
        for c in expected {
            let actual = self.get(c.algorithm).unwrap_or("");
            if actual != c.hex() {
                return Err(ChecksumError::Mismatch {
                    algorithm: c.algorithm,
                    expected: c.hex().to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let mut h = MultiHasher::new([
            ChecksumAlgorithm::Md5,
            ChecksumAlgorithm::Sha1,
            ChecksumAlgorithm::Sha256,
            ChecksumAlgorithm::Crc32,
        ]);
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.length(), 11);
        let d = h.finish();
        assert_eq!(d.length, 11);
        assert_eq!(
            d.get(ChecksumAlgorithm::Md5),
            Some("5eb63bbbe01eeed093cb22bb8f5acdc3")
        );
        assert_eq!(
            d.get(ChecksumAlgorithm::Sha1),
            Some("2aae6c35c94fcfb415dbe95f408b9ce91ee846ed")
        );
        assert_eq!(
            d.get(ChecksumAlgorithm::Sha256),
            Some("b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
        );
        assert_eq!(d.get(ChecksumAlgorithm::Crc32), Some("0d4a1185"));
    }

    #[test]
    fn mismatch_names_both_values() {
        let mut h = MultiHasher::new([ChecksumAlgorithm::Md5]);
        h.update(b"x");
        let expected = Checksum::new(ChecksumAlgorithm::Md5, &"0".repeat(32)).unwrap();
        let err = h.finish().verify(&[expected]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&"0".repeat(32)), "{msg}");
        assert!(msg.contains("9dd4e461268c8034f5c8564e155c67a6"), "{msg}");
    }

    /// Each digest is named as servers and logs spell it, takes exactly its hex
    /// length, and round-trips through its name.
    #[test]
    fn every_algorithm_has_its_name_and_hex_length() {
        use ChecksumAlgorithm::*;
        let table = [
            (Md5, "MD5", 32),
            (Sha1, "SHA-1", 40),
            (Sha256, "SHA-256", 64),
            (Sha384, "SHA-384", 96),
            (Sha512, "SHA-512", 128),
            (Crc32, "CRC32", 8),
            (Murmur3_32, "MURMUR3_32", 8),
            (Murmur3_128, "MURMUR3_128", 32),
        ];
        for (alg, name, len) in table {
            assert_eq!(alg.to_string(), name);
            assert_eq!(name.parse(), Ok(alg), "{name}");
            assert_eq!(name.to_ascii_lowercase().replace('-', "").parse(), Ok(alg));
            let hex = "aB".repeat(len / 2);
            let c = Checksum::new(alg, &hex).unwrap();
            assert_eq!(c.to_string(), format!("{name}:{}", "ab".repeat(len / 2)));
            assert!(Checksum::new(alg, &hex[1..]).is_err(), "{name}");
            assert!(Checksum::new(alg, &format!("{hex}0")).is_err(), "{name}");
        }
    }

    /// Every expected checksum counts, not only the first: a right MD5 does not
    /// excuse a wrong SHA-256.
    #[test]
    fn verify_checks_every_expected_checksum() {
        let mut h = MultiHasher::new([ChecksumAlgorithm::Md5, ChecksumAlgorithm::Sha256]);
        h.update(b"x");
        let d = h.finish();
        let md5 = Checksum::new(ChecksumAlgorithm::Md5, "9dd4e461268c8034f5c8564e155c67a6");
        let wrong = Checksum::new(ChecksumAlgorithm::Sha256, &"0".repeat(64));
        let (md5, wrong) = (md5.unwrap(), wrong.unwrap());
        assert_eq!(d.verify(std::slice::from_ref(&md5)), Ok(()));
        let err = d.verify(&[md5, wrong]).unwrap_err();
        assert!(
            matches!(
                err,
                ChecksumError::Mismatch {
                    algorithm: ChecksumAlgorithm::Sha256,
                    ..
                }
            ),
            "{err}"
        );
        // An algorithm nobody hashed is a mismatch, not a pass.
        let crc = Checksum::new(ChecksumAlgorithm::Crc32, "8cdc1683").unwrap();
        assert!(d.verify(&[crc]).is_err());
    }

    #[test]
    fn parses_algorithm_spellings_and_rejects_bad_hex() {
        assert_eq!("SHA-256".parse(), Ok(ChecksumAlgorithm::Sha256));
        assert_eq!("md5".parse(), Ok(ChecksumAlgorithm::Md5));
        assert_eq!("MURMUR3_32".parse(), Ok(ChecksumAlgorithm::Murmur3_32));
        assert_eq!("MURMUR3_128".parse(), Ok(ChecksumAlgorithm::Murmur3_128));
        assert!("whirlpool".parse::<ChecksumAlgorithm>().is_err());
        assert!(Checksum::new(ChecksumAlgorithm::Md5, "abc").is_err());
        assert!(Checksum::new(ChecksumAlgorithm::Md5, &"g".repeat(32)).is_err());
    }
}
