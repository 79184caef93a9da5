//! A fixed set of reusable chunk buffers: what bounds the memory of a download
//! or a staging copy, whatever the image size and however far the disk or a
//! hashing thread falls behind.
//!
//! A chunk is a [`Bytes`] over a pooled buffer; the writer and every hashing
//! thread hold clones of it, and the buffer goes back to the pool when the last
//! clone is dropped. Taking a buffer waits while all of them are in flight, so
//! that wait is the backpressure of the whole pipeline. Buffers are allocated
//! on first use (a small download never allocates them all) and reused after.

use bytes::Bytes;
use tokio::sync::mpsc;

/// The buffers of one pipeline (one producer).
pub struct BufferPool {
    size: usize,
    count: usize,
    made: usize,
    home: mpsc::Sender<Vec<u8>>,
    returned: mpsc::Receiver<Vec<u8>>,
}

/// A filled buffer as a [`Bytes`] owner: back to its pool when dropped.
struct Pooled {
    buf: Vec<u8>,
    len: usize,
    home: mpsc::Sender<Vec<u8>>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // The channel holds every buffer there is, so it is never full; once the
        // pool is gone the buffer is simply freed.
        let _ = self.home.try_send(std::mem::take(&mut self.buf));
    }
}

impl BufferPool {
    /// At most `count` buffers of `size` bytes each.
    pub fn new(count: usize, size: usize) -> BufferPool {
        let count = count.max(1);
        let (home, returned) = mpsc::channel(count);
        BufferPool {
            size: size.max(1),
            count,
            made: 0,
            home,
            returned,
        }
    }

    /// A free buffer (`buffer_size` bytes long, contents unspecified); waits
    /// while every buffer is in flight.
    pub async fn take(&mut self) -> Vec<u8> {
        if let Some(buf) = self.fresh() {
            return buf;
        }
        // The pool holds a sender itself, so the channel never closes.
        let buf = self.returned.recv().await;
        buf.unwrap_or_else(|| vec![0; self.size])
    }

    /// [`Self::take`] for a blocking thread.
    pub fn blocking_take(&mut self) -> Vec<u8> {
        if let Some(buf) = self.fresh() {
            return buf;
        }
        let buf = self.returned.blocking_recv();
        buf.unwrap_or_else(|| vec![0; self.size])
    }

    /// A returned buffer, else a new one while fewer than `count` exist.
    fn fresh(&mut self) -> Option<Vec<u8>> {
        if let Ok(buf) = self.returned.try_recv() {
            return Some(buf);
        }
        (self.made < self.count).then(|| {
            self.made += 1;
            vec![0; self.size]
        })
    }

    /// The first `len` bytes of `buf` (taken from this pool) as a chunk.
    pub fn freeze(&self, buf: Vec<u8>, len: usize) -> Bytes {
        let len = len.min(buf.len());
        Bytes::from_owner(Pooled {
            buf,
            len,
            home: self.home.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_buffer_comes_back_when_its_last_clone_is_dropped() {
        let mut pool = BufferPool::new(2, 8);
        let mut a = pool.take().await;
        a[..3].copy_from_slice(b"abc");
        let a = pool.freeze(a, 3);
        let b = pool.take().await;
        let b = pool.freeze(b, 8);
        assert_eq!(&a[..], b"abc");
        let a2 = a.clone();
        drop(a);
        // Both buffers are in flight (a2 still holds the first): a take waits.
        assert!(pool.take().now_or_never().is_none());
        drop(a2);
        let again = pool.take().await;
        assert_eq!(&again[..3], b"abc", "the first buffer is reused");
        drop(b);
        assert_eq!(pool.made, 2, "no buffer beyond the count");
    }

    #[test]
    fn blocking_take_waits_for_a_buffer_dropped_on_another_thread() {
        let mut pool = BufferPool::new(1, 4);
        let buf = pool.blocking_take();
        let chunk = pool.freeze(buf, 4);
        let dropper = std::thread::spawn(move || drop(chunk));
        let buf = pool.blocking_take();
        dropper.join().unwrap();
        assert_eq!((buf.len(), pool.made), (4, 1));
    }
}
