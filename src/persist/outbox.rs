//! A durable FIFO of messages for a server, drained by one task.
//!
//! The queue lives inside a [`Document`]: the source's whole state file, because
//! queueing a message and the state change it reports must reach the disk in one
//! write (hawkBit's closing feedback and forgetting the action; MCS's outcome
//! report and its "reported" mark). The document is kept in memory; changes are
//! written through [`Outbox::change`] or [`Guard::save`]. Writes are sync (see
//! [`JsonFile::save_blocking`]): the engine aborts a source's tasks at shutdown,
//! and what was answered must be on disk when the abort returns.
//!
//! **Delivery guarantee: at least once, in order.** The drain task sends the
//! oldest entry and takes it off the queue (and writes that) only after the server
//! answered. A message is therefore sent twice only when the process dies between
//! the server's answer and the write of the dequeue; nothing queued and written is
//! lost. A transient failure ([`SendError::Transient`]) keeps the entry at the head
//! and retries it after a backoff — the server's `Retry-After` when it gave one,
//! else full jitter with a cap (the download engine's
//! [`backoff`](crate::download::retry::backoff)) — so later messages never
//! overtake it. A permanent one ([`SendError::Permanent`]) drops it (logged):
//! repeating a request the server refuses would block everything behind it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::JsonFile;
use super::json_file::{off_runtime, write_atomic};
use crate::download::retry::backoff;

/// Never retry sooner than this (a zero backoff base must not spin).
const MIN_WAIT: Duration = Duration::from_millis(10);

/// How a send failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth another try later (network trouble, 5xx, 408, 429); `retry_after` is
    /// the server's `Retry-After`, if it gave one.
    Transient {
        retry_after: Option<Duration>,
        message: String,
    },
    /// The server will never accept this message; it is dropped.
    Permanent(String),
}

impl SendError {
    pub fn transient(message: impl ToString) -> SendError {
        SendError::Transient {
            retry_after: None,
            message: message.to_string(),
        }
    }
}

/// A server API failure classified once, by the API client's own rule (5xx, 408,
/// 429 and network errors are transient; the server's `Retry-After` is kept).
impl From<crate::api::ApiError> for SendError {
    fn from(e: crate::api::ApiError) -> SendError {
        match e.is_transient() {
            true => SendError::Transient {
                retry_after: e.retry_after(),
                message: e.to_string(),
            },
            false => SendError::Permanent(e.to_string()),
        }
    }
}

/// The wait between failed attempts: full jitter below `base · 2^(n-1)`, capped
/// at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

/// A state file that holds an outbox queue.
pub trait Document: Serialize + DeserializeOwned + Default + Send + 'static {
    type Entry: Clone + PartialEq + Send + 'static;

    fn queue(&self) -> &VecDeque<Self::Entry>;
    fn queue_mut(&mut self) -> &mut VecDeque<Self::Entry>;

    /// Whether taking `entry` off the queue is worth a write of its own. An entry
    /// that is replaced by newer ones anyway (hawkBit's intermediate progress) may
    /// say no; it is then written when its send fails, so it is on disk while it
    /// waits.
    fn dequeue_is_written(_entry: &Self::Entry) -> bool {
        true
    }
}

/// What the drain task is doing, for [`Outbox::flush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    /// No drain task runs.
    Stopped,
    /// Working on the queue.
    Busy,
    /// The queue was empty after flush request `n`.
    Idle(u64),
    /// Waiting to retry the head of the queue.
    BackingOff,
}

pub struct Outbox<D: Document> {
    what: &'static str,
    file: JsonFile<D>,
    backoff: Backoff,
    doc: Mutex<D>,
    wake: Notify,
    flushes: AtomicU64,
    running: AtomicBool,
    drain: watch::Sender<Drain>,
}

/// The document, locked. Never hold it across an await.
pub struct Guard<'a, D: Document> {
    outbox: &'a Outbox<D>,
    inner: MutexGuard<'a, D>,
}

impl<D: Document> std::ops::Deref for Guard<'_, D> {
    type Target = D;
    fn deref(&self) -> &D {
        &self.inner
    }
}

impl<D: Document> std::ops::DerefMut for Guard<'_, D> {
    fn deref_mut(&mut self) -> &mut D {
        &mut self.inner
    }
}

impl<D: Document> Guard<'_, D> {
    /// Writes the document as it is now, still holding the lock: writes happen in
    /// the order of the changes, and nobody sees a change before it is on disk
    /// (a source checks state and then queues; see [`JsonFile::save_blocking`]
    /// for why this blocks). A failure is logged: the document in memory still
    /// drives this run and is written with the next change.
    pub fn save(self) {
        let file = &self.outbox.file;
        let result = file
            .encode(&self.inner)
            .and_then(|bytes| off_runtime(|| write_atomic(file.path(), &bytes)));
        if let Err(e) = result {
            tracing::error!("{}: not saved: {e}", self.outbox.what);
        }
    }
}

impl<D: Document> Outbox<D> {
    /// The outbox in `file` (loaded; a corrupt file is moved aside and the queue
    /// starts empty). `what` names it in logs.
    pub fn open(what: &'static str, file: JsonFile<D>, backoff: Backoff) -> Outbox<D> {
        let doc = file.load_or_default();
        Outbox {
            what,
            file,
            backoff,
            doc: Mutex::new(doc),
            wake: Notify::new(),
            flushes: AtomicU64::new(0),
            running: AtomicBool::new(false),
            drain: watch::Sender::new(Drain::Stopped),
        }
    }

    /// The document, to read or change in memory only.
    pub fn lock(&self) -> Guard<'_, D> {
        Guard {
            outbox: self,
            inner: self.doc.lock().unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Changes the document and writes it before returning (blocking).
    pub fn change<R>(&self, f: impl FnOnce(&mut D) -> R) -> R {
        let mut doc = self.lock();
        let r = f(&mut doc);
        doc.save();
        r
    }

    /// Tells the drain task that something was queued.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Wakes the drain task and waits until it has sent everything it can: the
    /// queue is empty, or its head waits for a retry. Returns at once when no
    /// drain task runs.
    pub async fn flush(&self) {
        let mut state = self.drain.subscribe();
        if *state.borrow() == Drain::Stopped {
            return;
        }
        let request = self.flushes.fetch_add(1, Ordering::SeqCst) + 1;
        self.wake();
        let _ = state
            .wait_for(|s| match s {
                Drain::Stopped | Drain::BackingOff => true,
                Drain::Idle(seen) => *seen >= request,
                Drain::Busy => false,
            })
            .await;
    }

    /// The drain task: sends the queue, oldest first, through `send` until
    /// `shutdown`. One per outbox; a second call returns at once.
    pub async fn run<F, Fut>(&self, mut send: F, shutdown: &CancellationToken)
    where
        F: FnMut(D::Entry) -> Fut,
        Fut: Future<Output = Result<(), SendError>>,
    {
        if self.running.swap(true, Ordering::SeqCst) {
            tracing::error!("{}: a second drain task was started", self.what);
            return;
        }
        let _stopped = OnDrop(|| {
            self.drain.send_replace(Drain::Stopped);
            self.running.store(false, Ordering::SeqCst);
        });
        let mut failures = 0u32;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let seen = self.flushes.load(Ordering::SeqCst);
            let head = self.lock().queue().front().cloned();
            let Some(entry) = head else {
                self.drain.send_replace(Drain::Idle(seen));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.wake.notified() => continue,
                }
            };
            self.drain.send_replace(Drain::Busy);
            // Not cut short by `shutdown`: an answered send is dequeued before the
            // task stops (an abort of the task still can, see the guarantee).
            let result = send(entry.clone()).await;
            let (wait, message) = match result {
                Ok(()) => {
                    failures = 0;
                    self.dequeue(&entry);
                    continue;
                }
                Err(SendError::Permanent(message)) => {
                    tracing::warn!("{}: refused, dropped: {message}", self.what);
                    self.dequeue(&entry);
                    continue;
                }
                Err(SendError::Transient {
                    retry_after,
                    message,
                }) => {
                    failures += 1;
                    let wait = retry_after
                        .unwrap_or_else(|| backoff(failures, self.backoff.base, self.backoff.max));
                    (wait.max(MIN_WAIT), message)
                }
            };
            tracing::warn!(
                "{}: not delivered, kept; retrying in {wait:?}: {message}",
                self.what
            );
            if !D::dequeue_is_written(&entry) {
                self.lock().save();
            }
            self.drain.send_replace(Drain::BackingOff);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Takes `sent` off the head of the queue, unless the head changed meanwhile
    /// (replaced by a newer version of it, which is then sent too).
    fn dequeue(&self, sent: &D::Entry) {
        let mut doc = self.lock();
        if doc.queue().front() != Some(sent) {
            return;
        }
        doc.queue_mut().pop_front();
        if D::dequeue_is_written(sent) {
            doc.save();
        }
    }
}

struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::sync::Arc;
    use tokio::time::Instant;

    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Doc {
        queue: VecDeque<u32>,
    }

    impl Document for Doc {
        type Entry = u32;
        fn queue(&self) -> &VecDeque<u32> {
            &self.queue
        }
        fn queue_mut(&mut self) -> &mut VecDeque<u32> {
            &mut self.queue
        }
        /// Entries from 100 on stand for intermediate progress: queued in
        /// memory only, their dequeue not written.
        fn dequeue_is_written(entry: &u32) -> bool {
            *entry < 100
        }
    }

    /// `f`, which must finish within an hour of the paused clock: a hang fails
    /// the test (the clock jumps ahead when every task waits) instead of
    /// stalling it.
    async fn within<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(3600), f)
            .await
            .expect("still waiting after an hour")
    }

    const BACKOFF: Backoff = Backoff {
        base: Duration::from_secs(1),
        max: Duration::from_secs(4),
    };

    fn open(dir: &std::path::Path) -> Arc<Outbox<Doc>> {
        let file = JsonFile::open(dir.join("outbox.json"));
        Arc::new(Outbox::open("test outbox", file, BACKOFF))
    }

    fn on_disk(dir: &std::path::Path) -> Vec<u32> {
        let file = JsonFile::<Doc>::open(dir.join("outbox.json"));
        file.load().unwrap().unwrap_or_default().queue.into()
    }

    type Attempts = Arc<Mutex<Vec<(u32, Instant)>>>;

    /// Starts the drain task with a server that answers attempt `n` (counted
    /// over all entries, from 0) with `answer(n, entry)`.
    async fn drain(
        outbox: &Arc<Outbox<Doc>>,
        answer: impl Fn(usize, u32) -> Result<(), SendError> + Send + Sync + 'static,
    ) -> (Attempts, CancellationToken) {
        let attempts: Attempts = Arc::default();
        let shutdown = CancellationToken::new();
        let (o, a, s) = (outbox.clone(), attempts.clone(), shutdown.clone());
        tokio::spawn(async move {
            let send = |entry: u32| {
                let mut seen = a.lock().unwrap();
                seen.push((entry, Instant::now()));
                let r = answer(seen.len() - 1, entry);
                async move { r }
            };
            o.run(send, &s).await;
        });
        tokio::task::yield_now().await;
        (attempts, shutdown)
    }

    async fn until(attempts: &Attempts, n: usize) {
        within(async {
            while attempts.lock().unwrap().len() < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }

    fn entries(attempts: &Attempts) -> Vec<u32> {
        attempts.lock().unwrap().iter().map(|(e, _)| *e).collect()
    }

    /// When each attempt was made, in order.
    fn times(attempts: &Attempts) -> Vec<Instant> {
        attempts.lock().unwrap().iter().map(|(_, t)| *t).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn order_is_kept_and_the_queue_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path());
        for i in 1..=3 {
            outbox.change(|d| d.queue.push_back(i));
        }
        drop(outbox);
        let outbox = open(dir.path());
        assert_eq!(outbox.lock().queue, [1, 2, 3]);
        let (attempts, shutdown) = drain(&outbox, |_, _| Ok(())).await;
        within(outbox.flush()).await;
        assert_eq!(entries(&attempts), vec![1, 2, 3]);
        assert_eq!(on_disk(dir.path()), Vec::<u32>::new());
        // Queued later: woken, sent, gone from disk.
        outbox.change(|d| d.queue.push_back(4));
        within(outbox.flush()).await;
        assert_eq!(entries(&attempts), vec![1, 2, 3, 4]);
        assert_eq!(on_disk(dir.path()), Vec::<u32>::new());
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_transient_failure_is_retried_with_capped_jittered_backoff_before_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path());
        outbox.change(|d| d.queue.extend([1, 2]));
        let (attempts, shutdown) = drain(&outbox, |n, _| {
            if n < 5 {
                Err(SendError::transient("503"))
            } else {
                Ok(())
            }
        })
        .await;
        until(&attempts, 7).await;
        assert_eq!(entries(&attempts), vec![1, 1, 1, 1, 1, 1, 2]);
        let times = times(&attempts);
        for (i, pair) in times.windows(2).take(5).enumerate() {
            let gap = pair[1] - pair[0];
            let cap = (BACKOFF.base * 2u32.pow(i as u32)).min(BACKOFF.max);
            assert!(
                gap >= MIN_WAIT && gap <= cap,
                "retry {i}: {gap:?} not in 10ms..{cap:?}"
            );
        }
        // Still queued on disk while it failed; gone once delivered.
        within(outbox.flush()).await;
        assert_eq!(on_disk(dir.path()), Vec::<u32>::new());
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path());
        outbox.change(|d| d.queue.push_back(1));
        let (attempts, shutdown) = drain(&outbox, |n, _| match n {
            0 => Err(SendError::Transient {
                retry_after: Some(Duration::from_secs(30)),
                message: "429".into(),
            }),
            _ => Ok(()),
        })
        .await;
        until(&attempts, 2).await;
        let times = times(&attempts);
        let gap = times[1] - times[0];
        assert!(
            gap >= Duration::from_secs(30) && gap < Duration::from_secs(31),
            "{gap:?}"
        );
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_failure_drops_the_entry_and_the_queue_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path());
        outbox.change(|d| d.queue.extend([1, 2]));
        let (attempts, shutdown) = drain(&outbox, |_, entry| match entry {
            1 => Err(SendError::Permanent("400".into())),
            _ => Ok(()),
        })
        .await;
        within(outbox.flush()).await;
        assert_eq!(entries(&attempts), vec![1, 2]);
        assert_eq!(on_disk(dir.path()), Vec::<u32>::new());
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_is_sent_again_only_if_the_process_dies_before_the_dequeue() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path());
        outbox.change(|d| d.queue.extend([1, 2]));
        // The server accepts 1; the process dies (the task is aborted) before
        // the dequeue is written.
        let attempts: Attempts = Arc::default();
        let (o, a) = (outbox.clone(), attempts.clone());
        let task = tokio::spawn(async move {
            let send = move |entry: u32| {
                a.lock().unwrap().push((entry, Instant::now()));
                std::future::pending::<Result<(), SendError>>()
            };
            o.run(send, &CancellationToken::new()).await;
        });
        until(&attempts, 1).await;
        task.abort();
        let _ = task.await;
        assert_eq!(entries(&attempts), vec![1]);
        drop(outbox);
        assert_eq!(on_disk(dir.path()), vec![1, 2]);
        // After the restart 1 goes out again (the one duplicate), then 2, once.
        let outbox = open(dir.path());
        let (attempts, shutdown) = drain(&outbox, |_, _| Ok(())).await;
        within(outbox.flush()).await;
        assert_eq!(entries(&attempts), vec![1, 2]);
        shutdown.cancel();
        drop(outbox);
        let outbox = open(dir.path());
        let (attempts, shutdown) = drain(&outbox, |_, _| Ok(())).await;
        within(outbox.flush()).await;
        assert!(entries(&attempts).is_empty());
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_flush_sends_what_was_queued_while_the_drain_task_was_idle() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path());
        let (attempts, shutdown) = drain(&outbox, |_, _| Ok(())).await;
        for i in 1..=3 {
            outbox.change(|d| d.queue.push_back(i));
            within(outbox.flush()).await;
            assert_eq!(entries(&attempts), (1..=i).collect::<Vec<_>>());
            tokio::task::yield_now().await;
        }
        shutdown.cancel();
    }

    /// The wait grows with the failures in a row: after the third, each is
    /// drawn below the 4 s cap, so 37 of them all under the 1 s base would
    /// mean the count never grew (odds of 4^-37 otherwise).
    #[tokio::test(start_paused = true)]
    async fn the_backoff_grows_with_the_failures_in_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path());
        outbox.change(|d| d.queue.push_back(1));
        let (attempts, shutdown) = drain(&outbox, |n, _| match n {
            0..40 => Err(SendError::transient("503")),
            _ => Ok(()),
        })
        .await;
        until(&attempts, 41).await;
        let times = times(&attempts);
        let longest = times[3..].windows(2).map(|p| p[1] - p[0]).max().unwrap();
        assert!(longest > BACKOFF.base, "longest wait {longest:?}");
        assert!(longest <= BACKOFF.max, "longest wait {longest:?}");
        shutdown.cancel();
    }

    /// An entry whose dequeue is not written (queued in memory only) is
    /// written when its send fails, so it survives a restart while it waits.
    #[tokio::test(start_paused = true)]
    async fn an_unwritten_entry_is_written_once_its_send_fails() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path());
        let (attempts, shutdown) = drain(&outbox, |n, _| match n {
            0 => Err(SendError::transient("503")),
            _ => Ok(()),
        })
        .await;
        outbox.lock().queue.push_back(100);
        assert_eq!(on_disk(dir.path()), Vec::<u32>::new());
        outbox.wake();
        until(&attempts, 1).await;
        within(outbox.flush()).await;
        assert_eq!(on_disk(dir.path()), vec![100]);
        shutdown.cancel();
    }

    /// A drain task that stopped says so (a flush returns at once) and lets a
    /// new one start.
    #[tokio::test(start_paused = true)]
    async fn a_stopped_drain_task_can_be_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path());
        let shutdown = CancellationToken::new();
        let (o, s) = (outbox.clone(), shutdown.clone());
        let task = tokio::spawn(async move {
            let send = |_: u32| async { Ok(()) };
            o.run(send, &s).await;
        });
        tokio::task::yield_now().await;
        shutdown.cancel();
        within(task).await.unwrap();
        outbox.change(|d| d.queue.push_back(1));
        within(outbox.flush()).await;
        assert_eq!(outbox.lock().queue, [1], "nothing drains it now");

        let (attempts, shutdown) = drain(&outbox, |_, _| Ok(())).await;
        within(outbox.flush()).await;
        assert_eq!(entries(&attempts), vec![1]);
        shutdown.cancel();
    }
}
