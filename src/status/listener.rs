//! The endpoint's accept loop, bounded so that clients can never starve the
//! agent: a plain accept loop keeps every connection as long as the client
//! likes, and 1,100 idle half-sent requests once used up all 1,024 file
//! descriptors.
//!
//! - At most `max_connections` connections per listener. At the cap, a new
//!   connection closes the oldest one that has not yet sent a request (an idle
//!   or half-sent one); when every connection is busy (requests, event streams)
//!   the new one is closed instead.
//! - A connection must send a request's complete headers within
//!   `header_timeout` of connecting, and again of its previous answer
//!   (keep-alive idle), or it is closed (hyper's header read timeout).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::respond::Response;

/// A listening socket the endpoint serves: TCP or unix.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Accept for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;
    async fn accept(&mut self) -> std::io::Result<Self::Io> {
        tokio::net::TcpListener::accept(self)
            .await
            .map(|(io, _)| io)
    }
}

impl Accept for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;
    async fn accept(&mut self) -> std::io::Result<Self::Io> {
        tokio::net::UnixListener::accept(self)
            .await
            .map(|(io, _)| io)
    }
}

/// What answers each request of a connection.
pub trait App:
    Fn(hyper::Request<Incoming>) -> Self::Answer + Clone + Send + Sync + 'static
{
    type Answer: Future<Output = Response> + Send + 'static;
}

impl<F, A> App for F
where
    F: Fn(hyper::Request<Incoming>) -> A + Clone + Send + Sync + 'static,
    A: Future<Output = Response> + Send + 'static,
{
    type Answer = A;
}

/// After a failed accept that is not the client's doing (out of file
/// descriptors): wait this long before the next, rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How many connections, and how long a request's headers may take.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
}

/// One open connection, as the accept loop sees it.
struct Open {
    /// It has sent a request (it is not an idle or half-sent one).
    requested: AtomicBool,
    /// Closes it (evicted at the cap).
    close: CancellationToken,
    /// Cancelled when its task ended (its socket is closed).
    done: CancellationToken,
}

/// Marks the connection done however its task ends (aborted too).
struct DoneGuard(Arc<Open>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.done.cancel();
    }
}

/// Serves `app` on `listener` within `limits` until `stop`; then lets open
/// connections finish their answers.
pub async fn serve<L: Accept>(
    mut listener: L,
    app: impl App,
    limits: Limits,
    stop: CancellationToken,
) {
    let mut open: VecDeque<Arc<Open>> = VecDeque::new();
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
            Some(_) = tasks.join_next() => continue,
        };
        let io = match accepted {
            Ok(io) => io,
            Err(e) if client_gone(&e) => continue,
            Err(e) => {
                tracing::warn!("status endpoint: cannot accept a connection: {e}");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        open.retain(|c| !c.done.is_cancelled());
        if open.len() >= limits.max_connections.max(1) {
            match open
                .iter()
                .position(|c| !c.requested.load(Ordering::Relaxed))
            {
                Some(i) => {
                    // Its socket is closed before another is accepted: at most
                    // the cap plus the one just accepted are ever open.
                    if let Some(oldest) = open.remove(i) {
                        oldest.close.cancel();
                        tokio::select! {
                            _ = oldest.done.cancelled() => {}
                            _ = stop.cancelled() => break,
                        }
                    }
                }
                None => {
                    tracing::warn!(
                        "status endpoint: {} connections busy; closing a new one",
                        open.len()
                    );
                    drop(io);
                    continue;
                }
            }
        }
        let conn = Arc::new(Open {
            requested: AtomicBool::new(false),
            close: CancellationToken::new(),
            done: CancellationToken::new(),
        });
        open.push_back(conn.clone());
        tasks.spawn(connection(io, app.clone(), limits, conn, stop.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

/// An accept error that only concerns the connection being accepted.
fn client_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// Serves one connection until it ends, is evicted, or (gracefully) `stop`.
async fn connection<I>(
    io: I,
    app: impl App,
    limits: Limits,
    conn: Arc<Open>,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _done = DoneGuard(conn.clone());
    let marker = conn.clone();
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        marker.requested.store(true, Ordering::Relaxed);
        let answer = app(request);
        async move { Ok::<_, std::convert::Infallible>(answer.await) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    let ended = tokio::select! {
        ended = served.as_mut() => Some(ended),
        _ = conn.close.cancelled() => None,
        _ = stop.cancelled() => {
            served.as_mut().graceful_shutdown();
            Some(served.await)
        }
    };
    if let Some(Err(e)) = ended {
        tracing::debug!("status endpoint connection: {e}");
    }
}
