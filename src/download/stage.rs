//! Images the engine stages itself rather than downloads over HTTP: a file given
//! by path (directory source, `fota-agent install`) is copied into the same
//! `<dest>.part` a download uses and fsynced, so the engine never writes or syncs
//! a file on its own. [`super::commit_staged`] is the last step, after the engine
//! verified the digests.
//!
//! The copy is the only read of the data: one thread reads, one writes and each
//! digest has its own thread ([`ParallelHasher`]), all fed the same chunks, so a
//! large image costs about one read plus one write, not a copy then a hash. The
//! chunks are a few pooled buffers ([`BufferPool`]): memory stays at those.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::DownloadError;
use super::partial::part_path;
use super::pool::BufferPool;
use crate::checksum::parallel::ParallelHasher;
use crate::checksum::{ChecksumAlgorithm, Digests};

const CHUNK: usize = 256 * 1024;
/// Chunks in flight (read, queued, written, hashed): with [`CHUNK`], 1 MiB.
const BUFFERS: usize = 4;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies `source` to `<dest>.part` while computing `algorithms`, then fsyncs the
/// copy. `copied(n, done, total)` is called after every chunk of `n` bytes, with
/// the bytes copied so far and the total (`size`, else the source file's length).
/// Dropping the future stops the copy at the next chunk.
pub async fn copy_to_part(
    source: &Path,
    dest: &Path,
    size: Option<u64>,
    algorithms: impl IntoIterator<Item = ChecksumAlgorithm>,
    mut copied: impl FnMut(u64, u64, u64),
) -> Result<Digests, DownloadError> {
    let part = part_path(dest);
    let input = File::open(source).map_err(io(source))?;
    let total = match size {
        Some(s) => s,
        None => input.metadata().map_err(io(source))?.len(),
    };
    let output = File::create(&part).map_err(io(&part))?;
    let hasher = ParallelHasher::new(algorithms).map_err(io(source))?;
    let (progress, mut chunks) = mpsc::unbounded_channel::<u64>();
    let paths = (source.to_path_buf(), part);
    let worker = tokio::task::spawn_blocking(move || copy(input, output, hasher, paths, progress));
    let mut done = 0u64;
    while let Some(n) = chunks.recv().await {
        done += n;
        copied(n, done, total);
    }
    worker.await.map_err(|e| {
        DownloadError::Config(format!("staging {}: worker failed: {e}", source.display()))
    })?
}

/// The blocking side: reads here, writes on a second thread, hashes on the
/// hasher's threads; reports each chunk's size to `progress`.
fn copy(
    mut input: File,
    output: File,
    mut hasher: ParallelHasher,
    (source, part): (PathBuf, PathBuf),
    progress: mpsc::UnboundedSender<u64>,
) -> Result<Digests, DownloadError> {
    let (tx, rx) = sync_channel::<Bytes>(BUFFERS);
    let mut pool = BufferPool::new(BUFFERS, CHUNK);
    let writer = std::thread::Builder::new()
        .name("fota-stage".into())
        .spawn(move || write_all(output, rx))
        .map_err(io(&part))?;
    let read = loop {
        let mut buf = pool.blocking_take();
        let n = loop {
            match input.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = match n {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(e),
        };
        let chunk = pool.freeze(buf, n);
        hasher.update(&chunk);
        // The writer stops early only on an error, reported below; the caller
        // stops listening only when it no longer wants the copy.
        if tx.send(chunk).is_err() || progress.send(n as u64).is_err() {
            break Ok(());
        }
    };
    drop(tx);
    let written = writer
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the writing thread panicked")));
    let digests = hasher.finish();
    read.map_err(io(&source))?;
    written.map_err(io(&part))?;
    Ok(digests)
}

fn write_all(mut output: File, chunks: std::sync::mpsc::Receiver<Bytes>) -> std::io::Result<()> {
    for chunk in chunks {
        output.write_all(&chunk)?;
    }
    output.sync_all()
}
