//! Step 4, after a successful attempt: the file counts only when its size and
//! every checksum match; then it is renamed into place and the rename made
//! durable. Also the same last step for images the engine stages itself
//! ([`commit_staged`]).

use std::path::Path;

use super::partial::{self, meta_path, part_path};
use super::{DownloadError, DownloadRequest};
use crate::checksum::Digests;
use crate::persist::fsync_dir;

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
    if let Some(dir) = req.dest.parent() {
        // The file is complete and verified either way; a folder that cannot be
        // synced only risks downloading it again after a power cut.
        let _ = fsync_dir(dir);
    }
    let _ = std::fs::remove_file(meta_path(req.dest));
    Ok(digests)
}

/// Renames a verified, already fsynced `<dest>.part` that the engine staged
/// itself (see [`super::stage`]) to `dest`, and syncs the folder so the rename
/// survives a power cut.
pub fn commit_staged(dest: &Path) -> Result<(), DownloadError> {
    rename_into_place(dest)?;
    let dir = dest.parent().unwrap_or(Path::new("."));
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
    fsync_dir(to.parent().unwrap_or(Path::new("."))).map_err(std::io::Error::other)
}

fn rename_into_place(dest: &Path) -> Result<(), DownloadError> {
    std::fs::rename(part_path(dest), dest).map_err(|source| DownloadError::Io {
        path: dest.to_path_buf(),
        source,
    })
}
