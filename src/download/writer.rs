//! The disk side of a download: a blocking worker that appends chunks to the
//! partial file while every digest is computed on its own thread, and every few
//! MiB fsyncs and records how much is durable. The network task copies what it
//! receives into a few pooled buffers ([`BufferPool`]) that the writer and the
//! hashing threads share: memory stays at those buffers whatever the image size
//! or the chunk sizes the network hands over, and hashing overlaps with
//! receiving and writing.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::DownloadError;
use super::partial::{self, Partial};
use super::pool::BufferPool;
use crate::checksum::parallel::ParallelHasher;
use crate::checksum::{ChecksumAlgorithm, Digests, MultiHasher};

/// Buffers in flight between network, disk and hashing threads: one being
/// filled, one written, one hashed and one queued keep all of them busy, and
/// bound memory to 512 KiB. (The network's own chunks are dropped as soon as they
/// are copied: kept in a queue, each pinned a read buffer of up to 400 KiB.)
const BUFFERS: usize = 4;
const BUFFER_SIZE: usize = 128 << 10;
/// fsync and record progress this often.
const SYNC_EVERY: u64 = 16 << 20;
/// Start the disk's write-out this often: per 128 KiB buffer the block layer's
/// work cost a loopback fetch of 256 MiB 0.03 s, per MiB nothing measurable,
/// and at most a MiB is left for the final sync.
const WRITEBACK_EVERY: u64 = 1 << 20;
const READ_BUF: usize = 256 << 10;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct Writer {
    tx: mpsc::Sender<Bytes>,
    worker: JoinHandle<Result<Digests, DownloadError>>,
    pool: BufferPool,
    /// The buffer being filled and how much of it is.
    filling: Option<(Vec<u8>, usize)>,
}

impl Writer {
    /// Opens `<dest>.part`, cut to `start` bytes, and starts the worker; `hasher`
    /// holds the digests of those `start` bytes.
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
        let (tx, mut rx) = mpsc::channel::<Bytes>(BUFFERS);
        let syncer = Syncer::spawn(file.try_clone().map_err(io(&part))?, dest, record);
        let worker = tokio::task::spawn_blocking(move || {
            // Hashing beside the write, not after it: with SHA-256 the two take
            // about as long, and a download is then no slower than its write.
            let mut hasher = ParallelHasher::resume(hasher).map_err(io(&part))?;
            // How far the file is written, and how far the last write-out hint
            // and the last sync request reached.
            let (mut position, mut hinted, mut sync_asked) = (start, start, start);
            while let Some(chunk) = rx.blocking_recv() {
                hasher.update(&chunk);
                file.write_all(&chunk).map_err(io(&part))?;
                position += chunk.len() as u64;
                if position - hinted >= WRITEBACK_EVERY {
                    start_writeback(&file, hinted, position - hinted);
                    hinted = position;
                }
                if position - sync_asked >= SYNC_EVERY {
                    syncer.request(position);
                    sync_asked = position;
                }
            }
            syncer.finish(position).map_err(io(&part))?;
            Ok(hasher.finish())
        });
        Ok(Writer {
            tx,
            worker,
            pool: BufferPool::new(BUFFERS, BUFFER_SIZE),
            filling: None,
        })
    }

    /// Copies `data` into the pooled buffers and queues each one that is full;
    /// waits while every buffer is in flight (backpressure). An error means the
    /// worker stopped; `finish` says why.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), ()> {
        while !data.is_empty() {
            let (mut buf, mut filled) = match self.filling.take() {
                Some(filling) => filling,
                None => (self.pool.take().await, 0),
            };
            let n = data.len().min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&data[..n]);
            filled += n;
            data = &data[n..];
            if filled < buf.len() {
                self.filling = Some((buf, filled));
            } else {
                let chunk = self.pool.freeze(buf, filled);
                self.tx.send(chunk).await.map_err(|_| ())?;
            }
        }
        Ok(())
    }

    /// Queues what is left in the buffer being filled, then waits for everything
    /// to be written, synced and hashed.
    pub async fn finish(mut self) -> Result<Digests, DownloadError> {
        if let Some((buf, filled)) = self.filling.take()
            && filled > 0
        {
            // If the worker stopped, its result below says why.
            let _ = self.tx.send(self.pool.freeze(buf, filled)).await;
        }
        drop(self.tx);
        self.worker.await.map_err(|e| DownloadError::Io {
            path: PathBuf::from("download writer"),
            source: std::io::Error::other(e),
        })?
    }
}

/// Asks the disk to start writing the `len` bytes just written at `offset`,
/// without waiting for it: the data then streams to the disk as it arrives,
/// so the periodic and final syncs find little left to write (at link speed the
/// final one took 10 ms without this, 0.2 ms with it) and dirty pages never
/// pile up in a small gateway's memory. A hint: an error only means the
/// syncs write more.
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range only reads its integer arguments; the descriptor
    // is open for as long as `file` is borrowed.
    unsafe {
        nix::libc::sync_file_range(
            file.as_raw_fd(),
            offset,
            len,
            nix::libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Makes written bytes durable in the background: fsyncs a clone of the file
/// descriptor on its own thread and then records how much is durable, so the
/// writer never waits for the disk in the middle of a download. The last
/// record is written by the same thread, after every earlier one: an earlier,
/// smaller one can never land after it.
struct Syncer {
    /// Bytes written so far, and whether it is the end of the download.
    tx: std::sync::mpsc::Sender<(u64, bool)>,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Syncer {
    fn spawn(file: std::fs::File, dest: PathBuf, mut record: Partial) -> Syncer {
        let (tx, rx) = std::sync::mpsc::channel::<(u64, bool)>();
        let thread = std::thread::spawn(move || {
            while let Ok(first) = rx.recv() {
                // Coalesce requests that piled up while the last sync ran; the
                // end of the download is always the last request.
                let (position, end) = rx.try_iter().fold(first, |_, later| later);
                if end {
                    file.sync_all()?;
                    record.durable = position;
                    return partial::save(&dest, &record);
                }
                // Everything up to `position` was written before the request, so
                // after fdatasync it is on stable storage.
                if file.sync_data().is_ok() {
                    record.durable = position;
                    let _ = partial::save(&dest, &record);
                }
            }
            // The writer stopped without finishing (it failed): nothing to add.
            Ok(())
        });
        Syncer { tx, thread }
    }

    fn request(&self, position: u64) {
        let _ = self.tx.send((position, false));
    }

    /// Makes all `position` bytes durable and records them, after every
    /// earlier record.
    fn finish(self, position: u64) -> std::io::Result<()> {
        let _ = self.tx.send((position, true));
        drop(self.tx);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the sync thread panicked")))
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

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256_HELLO_WORLD: &str =
        "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9";

    fn sha256() -> MultiHasher {
        MultiHasher::new([ChecksumAlgorithm::Sha256])
    }

    fn record() -> Partial {
        Partial {
            url: "http://x/fw.bin".into(),
            ..Partial::default()
        }
    }

    #[tokio::test]
    async fn writes_hashes_and_records_what_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("fw.bin");
        let mut writer = Writer::start(dest.clone(), 0, sha256(), record()).unwrap();
        writer.write(b"hello ").await.unwrap();
        writer.write(b"world").await.unwrap();
        assert_hello_world(&dest, writer.finish().await.unwrap());
        assert_eq!(partial::load(&dest).unwrap().url, "http://x/fw.bin");
    }

    /// `hello world` written, hashed and recorded as durable for `dest`.
    fn assert_hello_world(dest: &Path, digests: Digests) {
        assert_eq!(digests.length, 11);
        let sha256 = digests.get(ChecksumAlgorithm::Sha256);
        assert_eq!(sha256, Some(SHA256_HELLO_WORLD));
        let written = std::fs::read(partial::part_path(dest)).unwrap();
        assert_eq!(written, b"hello world");
        assert_eq!(partial::load(dest).unwrap().durable, 11);
    }

    /// A resumed download cuts whatever followed the trusted prefix and goes on
    /// hashing from the prefix's digests: the whole file's digest comes out.
    #[tokio::test]
    async fn resumes_after_the_prefix_cutting_what_followed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("fw.bin");
        std::fs::write(partial::part_path(&dest), b"hello garbage past the prefix").unwrap();
        let prefix = hash_prefix(&partial::part_path(&dest), 6, &[ChecksumAlgorithm::Sha256])
            .await
            .unwrap();
        assert_eq!(prefix.length(), 6);
        let mut writer = Writer::start(dest.clone(), 6, prefix, record()).unwrap();
        writer.write(b"world").await.unwrap();
        assert_hello_world(&dest, writer.finish().await.unwrap());
    }

    #[tokio::test]
    async fn hash_prefix_refuses_a_file_shorter_than_the_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fw.bin.part");
        std::fs::write(&path, b"hello world").unwrap();
        let Err(err) = hash_prefix(&path, 12, &[ChecksumAlgorithm::Sha256]).await else {
            panic!("a prefix longer than the file was hashed");
        };
        assert!(err.to_string().contains("shorter than 12 bytes"), "{err}");
        let whole = hash_file(&path, &[ChecksumAlgorithm::Sha256])
            .await
            .unwrap();
        assert_eq!(whole.length, 11);
        assert_eq!(
            whole.get(ChecksumAlgorithm::Sha256),
            Some(SHA256_HELLO_WORLD)
        );
    }

    /// Every `SYNC_EVERY` bytes the record says how much is on stable storage,
    /// while the download still runs (a power cut then keeps that much).
    #[tokio::test]
    async fn progress_is_recorded_durable_during_the_download() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("fw.bin");
        let mut writer = Writer::start(dest.clone(), 0, sha256(), record()).unwrap();
        let chunk = vec![7u8; (SYNC_EVERY / 4) as usize];
        for _ in 0..5 {
            writer.write(&chunk).await.unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while partial::load(&dest).map(|p| p.durable) != Some(SYNC_EVERY) {
            assert!(
                std::time::Instant::now() < deadline,
                "{:?}",
                partial::load(&dest)
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let digests = writer.finish().await.unwrap();
        assert_eq!(digests.length, SYNC_EVERY / 4 * 5);
        assert_eq!(partial::load(&dest).unwrap().durable, SYNC_EVERY / 4 * 5);
    }
}
