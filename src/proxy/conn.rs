//! Limits on client connections: the idle keep-alive timeout, the header read timeout, and the
//! bound on open connections (a connection over it is answered `503` and closed).
//!
//! hyper's own `header_read_timeout` starts as soon as a connection waits for a request, so it
//! cannot tell an idle keep-alive connection from a client that stalls half-way through a head.
//! Each connection therefore carries an [`Activity`]: the IO wrapper notes the first byte of a
//! request, a guard notes when a request starts and when its response is done, and a watchdog in
//! the connection's task closes it once it has been idle for `idle_timeout`, or has spent
//! `header_read_timeout` on an incomplete head. The hot path costs a few uncontended atomics.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Defaults of `proxy.idle_timeout`, `proxy.header_read_timeout` and `proxy.max_connections`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The answer to a connection over `max_connections`, sent before closing it.
pub const SHED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 67\r\n\r\n\
deployctl proxy: too many open connections (proxy.max_connections)\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A keep-alive connection with no request in progress is closed after this long.
    pub idle_timeout: Duration,
    /// A request head must be complete this long after its first byte arrived.
    pub header_read_timeout: Duration,
    /// Client connections open at once; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The number of open client connections, shared by the acceptor and every worker.
#[derive(Clone, Default)]
pub struct OpenConnections(Arc<AtomicUsize>);

impl OpenConnections {
    /// A slot for one more connection, or `None` when `max` are open.
    pub fn try_open(&self, max: usize) -> Option<Slot> {
        let before = self.0.fetch_add(1, Relaxed);
        if before >= max {
            self.0.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Slot(Arc::clone(&self.0)))
    }

    pub fn count(&self) -> usize {
        self.0.load(Relaxed)
    }
}

/// One open connection; freed when dropped (with the connection's socket).
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Answers a connection over the limit with [`SHED_RESPONSE`], then closes it. The client's
/// request is read (and dropped) after the answer so that closing does not reset the connection
/// before the client has read the 503.
pub async fn shed(mut stream: tokio::net::TcpStream) {
    let answered = tokio::time::timeout(Duration::from_secs(2), async {
        stream.write_all(SHED_RESPONSE).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut read = 0;
        // Until the client closes, or enough was read that it is not a plain request.
        while read < 64 * 1024 {
            match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        io::Result::Ok(())
    })
    .await;
    if let Ok(Err(e)) = answered {
        tracing::debug!(error = %e, "answering a shed connection failed");
    }
}

/// What one connection has been doing, in milliseconds since it was accepted.
pub struct Activity {
    accepted: Instant,
    /// Requests whose response is not finished yet.
    open: AtomicU32,
    /// When the last response finished (or the connection was accepted).
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived, plus one; 0 when none did.
    head_started: AtomicU64,
}

/// Why the watchdog closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Idle,
    HeaderRead,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            accepted: Instant::now(),
            open: AtomicU32::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.accepted.elapsed().as_millis() as u64
    }

    /// A request head was parsed: the request is in progress until the guard is dropped.
    pub fn request(self: &Arc<Self>) -> RequestGuard {
        self.open.fetch_add(1, Relaxed);
        self.head_started.store(0, Relaxed);
        RequestGuard(Arc::clone(self))
    }

    /// Bytes arrived from the client.
    fn bytes_read(&self) {
        if self.open.load(Relaxed) == 0 && self.head_started.load(Relaxed) == 0 {
            self.head_started.store(self.now_ms() + 1, Relaxed);
        }
    }

    /// The next limit this connection runs into, in milliseconds since it was accepted; `None`
    /// while a request is in progress (requests are not timed here).
    pub fn deadline_ms(&self, limits: &Limits) -> Option<(u64, Expired)> {
        if self.open.load(Relaxed) > 0 {
            return None;
        }
        Some(match self.head_started.load(Relaxed) {
            0 => (
                self.idle_since
                    .load(Relaxed)
                    .saturating_add(millis(limits.idle_timeout)),
                Expired::Idle,
            ),
            started => (
                (started - 1).saturating_add(millis(limits.header_read_timeout)),
                Expired::HeaderRead,
            ),
        })
    }

    /// The instant `ms` milliseconds after the connection was accepted.
    pub fn instant(&self, ms: u64) -> Instant {
        self.accepted + Duration::from_millis(ms)
    }

    /// Whether the connection is over a limit now; else when to look again (milliseconds since
    /// accepted).
    pub fn check(&self, limits: &Limits) -> Result<u64, Expired> {
        self.check_at(limits, self.now_ms())
    }

    fn check_at(&self, limits: &Limits, now: u64) -> Result<u64, Expired> {
        match self.deadline_ms(limits) {
            Some((deadline, why)) if now >= deadline => Err(why),
            Some((deadline, _)) => Ok(deadline),
            // Busy: look again an idle timeout from now.
            None => Ok(now.saturating_add(millis(limits.idle_timeout))),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One request in progress on a connection; dropped when its response is done (or abandoned).
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.idle_since.store(activity.now_ms(), Relaxed);
        activity.open.fetch_sub(1, Relaxed);
    }
}

/// A response body that ends its request's [`RequestGuard`] when hyper drops it, which it does
/// once the last byte is written (or the connection is gone).
pub struct Finishing<B> {
    inner: B,
    _guard: RequestGuard,
}

impl<B> Finishing<B> {
    pub fn new(inner: B, guard: RequestGuard) -> Self {
        Finishing {
            inner,
            _guard: guard,
        }
    }
}

impl<B: Body + Unpin> Body for Finishing<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client socket that notes incoming bytes in its [`Activity`] and holds its connection
/// [`Slot`], so an upgraded connection (a tunnel) keeps counting until it is closed.
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>, slot: Slot) -> Self {
        Watched {
            inner,
            activity,
            _slot: slot,
        }
    }

    pub fn activity(&self) -> &Arc<Activity> {
        &self.activity
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_freed_on_drop() {
        let open = OpenConnections::default();
        let a = open.try_open(2).expect("first");
        let _b = open.try_open(2).expect("second");
        assert!(open.try_open(2).is_none(), "over the bound");
        assert_eq!(open.count(), 2);
        drop(a);
        assert_eq!(open.count(), 1);
        assert!(open.try_open(2).is_some());
    }

    #[test]
    fn shed_response_is_a_complete_503_with_connection_close() {
        let text = std::str::from_utf8(SHED_RESPONSE).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains("\r\nconnection: close"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }

    #[test]
    fn idle_and_header_deadlines() {
        let limits = Limits {
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(5),
            max_connections: 1,
        };
        let a = Activity::new();
        assert_eq!(a.check_at(&limits, 1_000), Ok(60_000), "idle from accept");
        assert_eq!(a.check_at(&limits, 60_000), Err(Expired::Idle));
        // The first byte of a head starts the header clock.
        a.head_started.store(2_001, Relaxed);
        assert_eq!(a.deadline_ms(&limits), Some((7_000, Expired::HeaderRead)));
        assert_eq!(a.check_at(&limits, 3_000), Ok(7_000));
        assert_eq!(a.check_at(&limits, 7_000), Err(Expired::HeaderRead));
        // A request in progress is never cut here; once done, idle counts from its end.
        let guard = a.request();
        assert_eq!(a.deadline_ms(&limits), None);
        assert_eq!(a.check_at(&limits, 500_000), Ok(560_000), "busy");
        drop(guard);
        let ended = a.idle_since.load(Relaxed);
        assert_eq!(a.check_at(&limits, ended), Ok(ended + 60_000));
        assert_eq!(a.open.load(Relaxed), 0);
    }
}
