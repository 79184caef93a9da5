//! The disk side of a download: a blocking worker that appends chunks to the
//! partial file, updates every digest, and every few MiB fsyncs and records how
//! much is durable. The network task feeds it through a small bounded queue, so
//! memory stays constant and hashing overlaps with receiving.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::DownloadError;
use super::partial::{self, Partial};
use crate::checksum::{ChecksumAlgorithm, Digests, MultiHasher};

/// Chunks in flight between network and disk (reqwest chunks are ≤ 16 KiB–64 KiB).
const QUEUE: usize = 32;
/// fsync and record progress this often.
const SYNC_EVERY: u64 = 16 << 20;
const READ_BUF: usize = 256 << 10;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct Writer {
    tx: mpsc::Sender<Bytes>,
    worker: JoinHandle<Result<MultiHasher, DownloadError>>,
}

impl Writer {
    /// Opens `<dest>.part`, cut to `start` bytes, and starts the worker.
    pub fn start(
        dest: PathBuf,
        start: u64,
        hasher: MultiHasher,
        record: Partial,
    ) -> Result<Writer, DownloadError> {
        let part = partial::part_path(&dest);
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&part)
            .map_err(io(&part))?;
        file.set_len(start).map_err(io(&part))?;
        file.seek(SeekFrom::Start(start)).map_err(io(&part))?;
        let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
        let worker = tokio::task::spawn_blocking(move || {
            let mut hasher = hasher;
            let mut record = record;
            let mut position = start;
            let mut unsynced = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                file.write_all(&chunk).map_err(io(&part))?;
                hasher.update(&chunk);
                position += chunk.len() as u64;
                unsynced += chunk.len() as u64;
                if unsynced >= SYNC_EVERY {
                    file.sync_data().map_err(io(&part))?;
                    record.durable = position;
                    partial::save(&dest, &record).map_err(io(&part))?;
                    unsynced = 0;
                }
            }
            file.sync_all().map_err(io(&part))?;
            record.durable = position;
            partial::save(&dest, &record).map_err(io(&part))?;
            Ok(hasher)
        });
        Ok(Writer { tx, worker })
    }

    /// Queues a chunk; waits while the queue is full (backpressure). An error means
    /// the worker stopped; `finish` says why.
    pub async fn send(&self, chunk: Bytes) -> Result<(), ()> {
        self.tx.send(chunk).await.map_err(|_| ())
    }

    /// Waits for everything queued to be written and synced.
    pub async fn finish(self) -> Result<MultiHasher, DownloadError> {
        drop(self.tx);
        self.worker.await.map_err(|e| DownloadError::Io {
            path: PathBuf::from("download writer"),
            source: std::io::Error::other(e),
        })?
    }
}

/// Digests of the first `len` bytes of `path` (a partial file being resumed).
pub async fn hash_prefix(
    path: &Path,
    len: u64,
    algorithms: &[ChecksumAlgorithm],
) -> Result<MultiHasher, DownloadError> {
    let path = path.to_path_buf();
    let algorithms = algorithms.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut hasher = MultiHasher::new(algorithms);
        let file = std::fs::File::open(&path).map_err(io(&path))?;
        let mut reader = file.take(len);
        let mut buf = vec![0u8; READ_BUF];
        loop {
            let n = reader.read(&mut buf).map_err(io(&path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        if hasher.length() != len {
            return Err(DownloadError::Io {
                path: path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("partial file shorter than {len} bytes"),
                ),
            });
        }
        Ok(hasher)
    })
    .await
    .map_err(|e| DownloadError::Io {
        path: PathBuf::from("hash"),
        source: std::io::Error::other(e),
    })?
}

/// Digests of a whole file.
pub async fn hash_file(
    path: &Path,
    algorithms: &[ChecksumAlgorithm],
) -> Result<Digests, DownloadError> {
    let len = std::fs::metadata(path).map_err(io(path))?.len();
    Ok(hash_prefix(path, len, algorithms).await?.finish())
}
