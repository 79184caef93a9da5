//! Images the engine stages itself rather than downloads over HTTP: a file given
//! by path (directory source, `fota-agent install`) is copied into the same
//! `<dest>.part` a download uses, hashed in the same pass and fsynced, so the
//! engine never writes or syncs a file on its own. [`super::commit_staged`] is
//! the last step, after the engine verified the digests.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::DownloadError;
use super::partial::part_path;
use crate::checksum::{Digests, MultiHasher};

const CHUNK: usize = 64 * 1024;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies `source` to `<dest>.part` through `hasher`, then fsyncs the copy.
/// `copied(n, done, total)` is called after every chunk of `n` bytes, with the
/// bytes copied so far and the total (`size`, else the source file's length).
pub async fn copy_to_part(
    source: &Path,
    dest: &Path,
    size: Option<u64>,
    mut hasher: MultiHasher,
    mut copied: impl FnMut(u64, u64, u64),
) -> Result<Digests, DownloadError> {
    let part = part_path(dest);
    let mut input = tokio::fs::File::open(source).await.map_err(io(source))?;
    let total = match size {
        Some(s) => s,
        None => input.metadata().await.map_err(io(source))?.len(),
    };
    let mut output = tokio::fs::File::create(&part).await.map_err(io(&part))?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = input.read(&mut buf).await.map_err(io(source))?;
        if n == 0 {
            break;
        }
        output.write_all(&buf[..n]).await.map_err(io(&part))?;
        hasher.update(&buf[..n]);
        copied(n as u64, hasher.length(), total);
    }
    output.sync_all().await.map_err(io(&part))?;
    Ok(hasher.finish())
}
