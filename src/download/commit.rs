//! Step 4, after a successful attempt: the file counts only when its size and
//! every checksum match; then it is renamed into place and the rename made
//! durable. Also the same last step for images the engine stages itself
//! ([`commit_staged`]).

use std::path::Path;

use super::partial::{self, meta_path, part_path};
use super::{DownloadError, DownloadRequest};
use crate::checksum::Digests;
use crate::persist::{fsync_dir, parent_dir};

/// Checks size and checksums of the downloaded file; renames it into place, or
/// discards it.
pub(super) fn commit(
    req: &DownloadRequest<'_>,
    digests: Digests,
) -> Result<Digests, DownloadError> {
    let checked = match req.size {
        Some(expected) if expected != digests.length => Err(DownloadError::Size {
            expected,
            actual: digests.length,
        }),
        _ => digests.verify(req.checksums).map_err(DownloadError::from),
    };
    if let Err(e) = checked {
        partial::discard(req.dest);
        return Err(e);
    }
    rename_into_place(req.dest)?;
    // The file is complete and verified either way; a folder that cannot be
    // synced only risks downloading it again after a power cut.
    let _ = fsync_dir(parent_dir(req.dest));
    let _ = std::fs::remove_file(meta_path(req.dest));
    Ok(digests)
}

/// Renames a verified, already fsynced `<dest>.part` that the engine staged
/// itself (see [`super::stage`]) to `dest`, and syncs the folder so the rename
/// survives a power cut.
pub fn commit_staged(dest: &Path) -> Result<(), DownloadError> {
    rename_into_place(dest)?;
    let dir = parent_dir(dest);
    fsync_dir(dir).map_err(|e| DownloadError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e),
    })
}

/// Makes `from` durable and renames it over `to`, folder synced: for a file the
/// engine derives from a staged image (the image inside a signed bundle), so it
/// survives a power cut like a download does. Blocking.
pub fn replace_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::File::open(from)?.sync_all()?;
    std::fs::rename(from, to)?;
    fsync_dir(parent_dir(to)).map_err(std::io::Error::other)
}

fn rename_into_place(dest: &Path) -> Result<(), DownloadError> {
    std::fs::rename(part_path(dest), dest).map_err(|source| DownloadError::Io {
        path: dest.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{Checksum, ChecksumAlgorithm, MultiHasher};
    use crate::download::partial::Partial;

    const MD5_HELLO: &str = "5d41402abc4b2a76b9719d911017c592";

    /// `hello` finished as `<dest>.part` (with its record) in `dir`, committed
    /// against `size` and an MD5.
    fn finish_hello(dir: &Path, size: Option<u64>, md5: &str) -> Result<Digests, DownloadError> {
        let dest = dir.join("fw.bin");
        std::fs::write(part_path(&dest), b"hello").unwrap();
        partial::save(&dest, &Partial::default()).unwrap();
        let mut hasher = MultiHasher::new([ChecksumAlgorithm::Md5]);
        hasher.update(b"hello");
        let checksums = [Checksum::new(ChecksumAlgorithm::Md5, md5).unwrap()];
        let req = DownloadRequest {
            url: "http://x/fw.bin",
            dest: &dest,
            size,
            checksums: &checksums,
            also_hash: &[],
            headers: &[],
        };
        commit(&req, hasher.finish())
    }

    /// A derived file (the image unpacked from a bundle) replaces the original.
    #[test]
    fn replace_durably_moves_the_file_over_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("fw.unpacked"), dir.path().join("fw.img"));
        std::fs::write(&from, b"image").unwrap();
        std::fs::write(&to, b"bundle").unwrap();
        replace_durably(&from, &to).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"image");
        assert!(!from.exists());
        assert!(replace_durably(&from, &to).is_err(), "nothing left to move");
    }

    #[test]
    fn a_verified_file_is_renamed_into_place_and_its_record_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("fw.bin");
        let digests = finish_hello(dir.path(), Some(5), MD5_HELLO).unwrap();
        assert_eq!(digests.length, 5);
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert!(!part_path(&dest).exists() && !meta_path(&dest).exists());
    }

    /// The last line of defence (the stream already stops at the size and
    /// resumes a short body): a finished file of another size than the source's
    /// is refused even with a matching checksum, and forgotten.
    #[test]
    fn another_size_or_checksum_is_refused_and_nothing_kept() {
        for (size, md5) in [
            (Some(4), MD5_HELLO),
            (Some(6), MD5_HELLO),
            (None, "0".repeat(32).as_str()),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let dest = dir.path().join("fw.bin");
            let err = finish_hello(dir.path(), size, md5).unwrap_err();
            match size {
                Some(s) => assert!(
                    matches!(err, DownloadError::Size { expected, actual: 5 } if expected == s),
                    "{err}"
                ),
                None => assert!(err.to_string().contains("MD5 mismatch"), "{err}"),
            }
            assert!(!dest.exists() && !part_path(&dest).exists() && !meta_path(&dest).exists());
        }
    }
}
