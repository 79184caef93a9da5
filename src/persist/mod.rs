//! Everything the agent keeps on disk goes through here, so a power cut, a kill or
//! a corrupt file is handled the same way everywhere:
//!
//! - [`JsonFile`]: one JSON document, loaded (a corrupt file is moved aside under a
//!   name of its own, never over an earlier one) and saved atomically (temp file,
//!   fsync, rename, folder fsync); temp files left by a killed save are removed
//!   when the file is opened.
//! - [`Outbox`]: a durable FIFO of messages for a server inside such a document,
//!   drained by one task with one backoff policy.
//!
//! Apart from the download path, this is the only place that calls fsync, so the
//! durability rules live in one file.

mod json_file;
mod outbox;

use std::path::{Path, PathBuf};

pub use json_file::{JsonFile, remove_leftovers};
pub use outbox::{Backoff, Document, Guard, Outbox, SendError};

/// Why a durable file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt state file ({source}); moved aside to {moved_to}")]
    Corrupt {
        path: PathBuf,
        moved_to: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: cannot encode: {source}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The folder `path` is in: `.` for a bare file name, whose parent is the
/// empty path (which neither opens, syncs nor reports free space).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename (or a new file) in `dir` durable: the folder entry itself is
/// only on disk after the folder is synced.
pub fn fsync_dir(dir: &Path) -> Result<(), PersistError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Flushes a file written piece by piece (a resumable download) to disk, so what
/// a later attempt resumes from really is there after a power cut.
pub async fn sync_file(file: &tokio::fs::File, path: &Path) -> Result<(), PersistError> {
    file.sync_all().await.map_err(io_err(path))
}
