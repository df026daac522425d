//! Keep-alive connections to one target, pooled per proxy worker thread.
//!
//! Replaces hyper-util's legacy `Client` on the hot path: that client shares one pool between all
//! threads and goes through a connector service, a pool checkout future and channels per request.
//! Here each worker thread (see `server.rs`) has its own slot of idle connections, so a request
//! and the task driving its upstream connection stay on one thread and a checkout is one
//! uncontended lock.

use std::cell::Cell;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::http::uri::Authority;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Body type of requests sent upstream.
pub type UpstreamBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// Idle upstream connections are closed after this. Kept under the 5 s keep-alive timeout of
/// Node's HTTP server (and most app servers) so we rarely reuse a connection the app is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per slot; more than the concurrency one worker sees in practice.
const MAX_IDLE_PER_SLOT: usize = 256;
/// Pool slots per target. Worker `i` uses slot `i % SLOTS`; threads that are not workers use
/// slot 0. Sharing a slot is correct, only slower, so this need not match the worker count.
const SLOTS: usize = 16;

thread_local! {
    /// Pool slot of the current thread, set by each proxy worker thread.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// Called once by each worker thread.
pub fn set_worker_slot(worker: usize) {
    SLOT.with(|s| s.set(worker % SLOTS));
}

struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

/// A connection checked out for one request.
pub struct Conn {
    sender: SendRequest<UpstreamBody>,
    /// It served an earlier request, so the app may be closing it right now.
    pub reused: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {addr} failed")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {}s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout { addr: String },
    #[error("HTTP handshake with {addr} failed")]
    Handshake {
        addr: String,
        #[source]
        source: hyper::Error,
    },
    #[error("request to {addr} failed")]
    Request {
        addr: String,
        #[source]
        source: hyper::Error,
    },
}

impl UpstreamError {
    /// The app closed a reused keep-alive connection before answering.
    pub fn is_stale_connection(&self) -> bool {
        match self {
            Self::Request { source, .. } => source.is_incomplete_message() || source.is_canceled(),
            _ => false,
        }
    }
}

/// Connections to one target address.
pub struct Upstream {
    pub authority: Authority,
    slots: Box<[Mutex<Vec<Idle>>]>,
}

impl Upstream {
    pub fn new(authority: Authority) -> Self {
        Self {
            authority,
            slots: (0..SLOTS).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    fn slot(&self) -> &Mutex<Vec<Idle>> {
        &self.slots[SLOT.with(Cell::get)]
    }

    /// The most recently used idle connection of this thread's slot, or a new one.
    pub async fn checkout(&self) -> Result<Conn, UpstreamError> {
        if let Some(sender) = self.take_idle() {
            return Ok(Conn {
                sender,
                reused: true,
            });
        }
        self.connect().await
    }

    fn take_idle(&self) -> Option<SendRequest<UpstreamBody>> {
        let mut idle = self.slot().lock().unwrap_or_else(|e| e.into_inner());
        evict_expired(&mut idle, Instant::now());
        // Last in, first out: the most recently used connection is the least likely to be
        // closed by the app's keep-alive timeout.
        while let Some(entry) = idle.pop() {
            // A connection whose previous exchange is still winding down (or that closed) is
            // dropped rather than waited for; hyper closes it once it is done.
            if entry.sender.is_ready() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// Opens a new connection; its driver task runs on the current (worker) runtime.
    pub async fn connect(&self) -> Result<Conn, UpstreamError> {
        let addr = self.authority.as_str();
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(UpstreamError::Connect {
                    addr: addr.to_owned(),
                    source,
                });
            }
            Err(_) => {
                return Err(UpstreamError::ConnectTimeout {
                    addr: addr.to_owned(),
                });
            }
        };
        // Request heads are small writes; Nagle would hold them back waiting for an ACK.
        let _ = stream.set_nodelay(true);
        let handshake = |source| UpstreamError::Handshake {
            addr: addr.to_owned(),
            source,
        };
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(handshake)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        sender.ready().await.map_err(handshake)?;
        Ok(Conn {
            sender,
            reused: false,
        })
    }

    /// Returns a connection whose exchange is complete to this thread's slot.
    pub fn checkin(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.slot().lock().unwrap_or_else(|e| e.into_inner());
        evict_expired(&mut idle, now);
        if idle.len() < MAX_IDLE_PER_SLOT {
            idle.push(Idle {
                sender: conn.sender,
                since: now,
            });
        }
    }

    /// Closes this thread's connections idle for longer than [`POOL_IDLE_TIMEOUT`].
    pub fn evict_idle(&self) {
        let mut idle = self.slot().lock().unwrap_or_else(|e| e.into_inner());
        evict_expired(&mut idle, Instant::now());
    }
}

/// Drops expired entries. Entries are pushed in time order, so the expired ones are a prefix.
fn evict_expired(idle: &mut Vec<Idle>, now: Instant) {
    let fresh = idle.partition_point(|e| now.duration_since(e.since) >= POOL_IDLE_TIMEOUT);
    if fresh > 0 {
        idle.drain(..fresh);
    }
}

impl Conn {
    pub async fn send(
        &mut self,
        req: Request<UpstreamBody>,
        addr: &Authority,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.sender
            .send_request(req)
            .await
            .map_err(|source| UpstreamError::Request {
                addr: addr.as_str().to_owned(),
                source,
            })
    }
}
