//! The same digests as [`super::MultiHasher`], each on its own thread: hashing a
//! large local image with MD5 and SHA-256 then takes as long as the slower one,
//! not their sum, and overlaps with reading and writing the copy.

use std::sync::mpsc::{SyncSender, sync_channel};
use std::thread::JoinHandle;

use bytes::Bytes;

use super::{ChecksumAlgorithm, Digests, MultiHasher};

/// Chunks queued per algorithm. A [`Bytes`] clone is a reference: the callers'
/// buffer pools (4 buffers of 128 or 256 KiB), not this queue, bound the memory.
const QUEUE: usize = 4;

type Worker = (SyncSender<Bytes>, JoinHandle<(ChecksumAlgorithm, String)>);

/// One hashing thread per distinct algorithm, fed the same chunks in order.
pub struct ParallelHasher {
    workers: Vec<Worker>,
    length: u64,
}

impl ParallelHasher {
    /// Starts a thread for each distinct algorithm in `algorithms`; fails only if
    /// the system refuses a thread.
    pub fn new(algorithms: impl IntoIterator<Item = ChecksumAlgorithm>) -> std::io::Result<Self> {
        Self::resume(MultiHasher::new(algorithms))
    }

    /// Continues `hasher`'s digests (a resumed download's prefix), each on its
    /// own thread; fails only if the system refuses a thread.
    pub fn resume(hasher: MultiHasher) -> std::io::Result<Self> {
        let (states, length) = hasher.into_parts();
        let mut workers = Vec::with_capacity(states.len());
        for (algorithm, mut state) in states {
            let (tx, rx) = sync_channel::<Bytes>(QUEUE);
            let handle = std::thread::Builder::new()
                .name(format!("fota-{algorithm}"))
                .spawn(move || {
                    for chunk in rx {
                        state.update(&chunk);
                    }
                    (algorithm, state.finish())
                })?;
            workers.push((tx, handle));
        }
        Ok(ParallelHasher { workers, length })
    }

    /// Queues `chunk` for every algorithm; waits only while a thread is behind.
    pub fn update(&mut self, chunk: &Bytes) {
        self.length += chunk.len() as u64;
        for (tx, _) in &self.workers {
            // A worker only stops when its sender is dropped, in `finish`.
            let _ = tx.send(chunk.clone());
        }
    }

    /// Waits for every thread and collects the hex digests.
    pub fn finish(self) -> Digests {
        let mut values = Vec::with_capacity(self.workers.len());
        for (tx, handle) in self.workers {
            drop(tx);
            // A hashing thread only runs digest code over bytes; if it panicked
            // anyway, that digest is missing and verification reports it.
            if let Ok(value) = handle.join() {
                values.push(value);
            }
        }
        Digests {
            length: self.length,
            values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_digests_as_one_pass() {
        let algs = [
            ChecksumAlgorithm::Md5,
            ChecksumAlgorithm::Sha256,
            ChecksumAlgorithm::Crc32,
            ChecksumAlgorithm::Md5,
        ];
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut serial = MultiHasher::new(algs);
        let mut parallel = ParallelHasher::new(algs).unwrap();
        for chunk in data.chunks(100_000) {
            serial.update(chunk);
            parallel.update(&Bytes::copy_from_slice(chunk));
        }
        assert_eq!(parallel.finish(), serial.finish());
    }

    #[test]
    fn resumed_from_a_prefix_gives_the_whole_stream_digests() {
        let algs = [ChecksumAlgorithm::Sha256, ChecksumAlgorithm::Md5];
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut prefix = MultiHasher::new(algs);
        prefix.update(&data[..333_333]);
        let mut parallel = ParallelHasher::resume(prefix).unwrap();
        parallel.update(&Bytes::copy_from_slice(&data[333_333..]));
        let mut whole = MultiHasher::new(algs);
        whole.update(&data);
        assert_eq!(parallel.finish(), whole.finish());
    }
}
