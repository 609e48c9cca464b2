//! The edge's HTTP server: accepts TCP connections and serves each with hyper's HTTP/1.1
//! connection builder, because `axum::serve` offers no header-read timeout, no idle timeout and
//! no cap on connections. Here every connection
//!
//! - takes a permit of `limits.max_http_connections` while it is plain HTTP (the permit is
//!   returned when it upgrades to a WebSocket, which `limits.max_connections` counts instead);
//!   past the cap a connection is answered `503` and closed at once, without a task;
//! - must send each request's headers within `limits.header_read_timeout_ms` (hyper's timer,
//!   which also bounds a kept-alive connection waiting for its next request);
//! - is dropped when no byte moves either way for `limits.http_idle_timeout_ms` (a stalled
//!   body or a client that does not read its response);
//! - has `TCP_NODELAY` set (chat frames are small: no Nagle delay);
//! - with `[tls]`, completes its TLS handshake within `limits.header_read_timeout_ms` too
//!   (`tls.rs`), and is then served the same way, decrypted.
//!
//! Only HTTP/1.1 is served, also over TLS (ALPN offers `http/1.1` only): a WebSocket over
//! HTTP/2 needs extended CONNECT, and cleartext HTTP/2 would bring a connection preface no
//! header timeout covers.
//! On shutdown the accept loop stops, kept-alive connections are closed gracefully (requests in
//! flight finish) and the server waits at most `grace` for them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a connection past the cap is told before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
retry-after: 1\r\ncontent-length: 0\r\n\r\n";
/// hyper's read buffer per connection: the most a request's headers may take (hyper's minimum
/// is 8 KiB; its default, about 400 KiB, is more than any client of the edge needs).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The bounds of one listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Serves `router` on `listener` (over TLS with `tls`) until `stop` is cancelled, then closes
/// its connections gracefully and waits at most `grace` for them. `open` counts the
/// connections being served.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: HttpLimits,
    open: Arc<AtomicUsize>,
    stop: CancellationToken,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let service = TowerToHyperService::new(router);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _peer)) => tcp,
            Err(err) => {
                accept_failed(err).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(&tcp);
            continue;
        };
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let slot = Slot::new(permit, open.clone());
        let (service, stop) = (service.clone(), stop.clone());
        match tls.clone() {
            None => connections.spawn(serve_one(tcp, service, limits, stop, slot)),
            Some(tls) => connections.spawn(async move {
                // The handshake has the header deadline: a client that opens a socket and says
                // nothing holds its slot no longer than one that sends no headers.
                let handshake = tokio::time::timeout(limits.header_read_timeout, tls.accept(tcp));
                match handshake.await {
                    Ok(Ok(stream)) => serve_one(stream, service, limits, stop, slot).await,
                    Ok(Err(err)) => {
                        metrics::counter!("chat_edge_tls_handshake_failures_total").increment(1);
                        tracing::debug!(error = %err, "TLS handshake failed");
                    }
                    Err(_) => {
                        metrics::counter!("chat_edge_tls_handshake_failures_total").increment(1);
                        tracing::debug!("TLS handshake timed out");
                    }
                }
            }),
        };
    }
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::debug!("HTTP connections still open after the shutdown grace");
    }
}

/// One connection's HTTP slot: its permit, and its place in the count.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: Arc<AtomicUsize>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self {
            _permit: permit,
            open,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn serve_one<S>(
    tcp: S,
    service: TowerToHyperService<Router>,
    limits: HttpLimits,
    stop: CancellationToken,
    slot: Slot,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: activity.clone(),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let idle_at = activity.last() + limits.idle_timeout;
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(err) = served {
                    tracing::debug!(error = %err, "HTTP connection ended with an error");
                }
                break;
            }
            () = tokio::time::sleep_until(idle_at) => {
                if activity.last() + limits.idle_timeout <= Instant::now() {
                    tracing::debug!("closing an idle HTTP connection");
                    break;
                }
            }
            () = stop.cancelled(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
    // Upgraded, finished or dropped: the slot is free again (a WebSocket lives on in its own
    // task and counts against `limits.max_connections`).
    drop(slot);
}

/// Past the cap: one non-blocking write of a 503 into the fresh socket's send buffer (which
/// always has room for it), then the socket is dropped.
fn refuse(tcp: &TcpStream) {
    metrics::counter!("chat_edge_http_refused_total").increment(1);
    let _ = tcp.try_write(REFUSAL);
}

/// Connection-level errors (the peer reset before `accept`) are the peer's; others, such as
/// running out of file descriptors, pause accepting briefly instead of spinning.
async fn accept_failed(err: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %err, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// When a byte last moved on a connection, in milliseconds since it was accepted.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A socket (or TLS stream) that notes every byte moved through it in its [`Activity`].
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
