//! Health checks against real HTTP servers on 127.0.0.1, in-process: one probe (`probe`), the
//! loop's two ending rules (`ending`), and the proxy's pre-switch check, in-process and through
//! a deploy on the real Docker Engine (`switch`). This file holds the test HTTP server.

#[path = "../support/mod.rs"]
mod support;

mod ending;
mod probe;
mod switch;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deployctl::health::{HealthOutcome, HealthSpec, ProbeResult, wait_healthy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the test server answers to one request.
#[derive(Clone)]
pub struct Reply {
    status: u16,
    body: String,
    delay: Duration,
}

fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        body: body.into(),
        delay: Duration::ZERO,
    }
}

pub struct Server {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Serves `handler(request_index)` on a fresh port, one request per connection.
async fn serve(handler: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Server {
    serve_heads(move |i, _| handler(i)).await
}

/// Serves `handler(request_index, lowercased request head)` on a fresh port.
async fn serve_heads(handler: impl Fn(usize, &str) -> Reply + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve_on(listener, handler)
}

fn serve_on(
    listener: TcpListener,
    handler: impl Fn(usize, &str) -> Reply + Send + Sync + 'static,
) -> Server {
    let addr = listener.local_addr().expect("local addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(handler);
    let (h, r) = (Arc::clone(&hits), Arc::clone(&heads));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (handler, hits, heads) = (Arc::clone(&handler), Arc::clone(&h), Arc::clone(&r));
            tokio::spawn(async move {
                answer(stream, &*handler, &hits, &heads).await;
            });
        }
    });
    Server { addr, hits, heads }
}

async fn answer(
    mut stream: TcpStream,
    handler: &(dyn Fn(usize, &str) -> Reply + Send + Sync),
    hits: &AtomicUsize,
    heads: &Mutex<Vec<String>>,
) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let reply = handler(
        hits.fetch_add(1, Ordering::SeqCst),
        &head.to_ascii_lowercase(),
    );
    heads.lock().expect("heads lock").push(head);
    tokio::time::sleep(reply.delay).await;
    let msg = format!(
        "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        reply.status,
        reply.body.len(),
        reply.body
    );
    let _ = stream.write_all(msg.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A port nothing listens on (bound, then released).
async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("local addr").port()
}

fn spec(url: String) -> HealthSpec {
    HealthSpec {
        url,
        host_header: None,
        headers: Default::default(),
        interval_ms: 50,
        timeout_ms: 500,
        healthy_threshold: 2,
        unhealthy_threshold: 3,
        start_period_ms: 0,
        deadline_ms: 3000,
        expect_status: vec![200],
        expect_body: None,
        expect_json: None,
    }
}

/// Runs `wait_healthy`, returning the outcome and every probe seen.
async fn wait(spec: &HealthSpec) -> (HealthOutcome, Vec<ProbeResult>) {
    let mut seen = Vec::new();
    let outcome = wait_healthy(spec, &mut |p: &ProbeResult| seen.push(p.clone())).await;
    (outcome, seen)
}

fn error_of(p: &ProbeResult) -> &str {
    p.error.as_deref().unwrap_or("")
}
