//! What unsigned firmware from a server must carry: a SHA-2 digest sent with
//! it. MD5, SHA-1, CRC32 and MurmurHash3 catch transfer errors but are easy to
//! forge, and no checksum proves nothing; both need the operator's opt-in.

use super::{TrustError, TrustPolicy};
use crate::checksum::ChecksumAlgorithm;
use crate::model::{Firmware, FirmwareLocation};

/// Checks the checksums of `firmware`, which is not signed.
pub fn check(policy: &TrustPolicy, firmware: &Firmware) -> Result<(), TrustError> {
    // A local file (directory source, `install`) is read where it lies: there is
    // no transfer for a checksum to protect.
    if policy.allow_weak_checksums || matches!(firmware.location, FirmwareLocation::File(_)) {
        return Ok(());
    }
    let strong = |a: ChecksumAlgorithm| {
        matches!(
            a,
            ChecksumAlgorithm::Sha256 | ChecksumAlgorithm::Sha384 | ChecksumAlgorithm::Sha512
        )
    };
    if firmware.checksums.iter().any(|c| strong(c.algorithm)) {
        return Ok(());
    }
    let given = if firmware.checksums.is_empty() {
        "none".to_string()
    } else {
        firmware
            .checksums
            .iter()
            .map(|c| c.algorithm.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(TrustError::WeakChecksum(given))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::Checksum;

    fn fw(algorithms: &[ChecksumAlgorithm]) -> Firmware {
        let mut f = Firmware::new("t", "1", FirmwareLocation::Url("https://h/x".into()));
        f.checksums = algorithms
            .iter()
            .map(|a| Checksum::new(*a, &"0".repeat(a.hex_len())).unwrap())
            .collect();
        f
    }

    #[test]
    fn only_a_sha2_digest_passes_by_default() {
        let p = TrustPolicy::default();
        use ChecksumAlgorithm::*;
        for ok in [Sha256, Sha384, Sha512] {
            assert_eq!(check(&p, &fw(&[Md5, ok])), Ok(()));
        }
        assert_eq!(
            check(&p, &fw(&[Md5, Crc32])),
            Err(TrustError::WeakChecksum("MD5, CRC32".into()))
        );
        assert_eq!(
            check(&p, &fw(&[])),
            Err(TrustError::WeakChecksum("none".into()))
        );
        let weak = TrustPolicy {
            allow_weak_checksums: true,
            ..TrustPolicy::default()
        };
        assert_eq!(check(&weak, &fw(&[])), Ok(()));
    }

    #[test]
    fn a_local_file_needs_no_checksum() {
        let f = Firmware::new("t", "1", FirmwareLocation::File("/x".into()));
        assert_eq!(check(&TrustPolicy::default(), &f), Ok(()));
    }
}
