//! The harness of the proxy tests: tiny upstream apps that answer their own name (slow, streaming,
//! echoing, upgrading, counting connections), a proxy on loopback with a temp state dir, switch
//! requests, HTTP clients (fresh and pooled connections), and polling.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deployctl::proxy::protocol::{
    Color, Outcome, ReleaseRecord, SwitchRequest, SwitchResult, Target,
};
use deployctl::proxy::{self, RunOptions, Server};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

pub(crate) type TestBody = UnsyncBoxBody<Bytes, Infallible>;

// ---------------------------------------------------------------- upstreams

#[derive(Clone)]
pub(crate) struct UpstreamConfig {
    pub(crate) name: &'static str,
    pub(crate) health_status: StatusCode,
    pub(crate) delay: Duration,
}

pub(crate) fn healthy(name: &'static str) -> UpstreamConfig {
    UpstreamConfig {
        name,
        health_status: StatusCode::OK,
        delay: Duration::from_secs(1),
    }
}

/// An upstream app; dropping it stops the listener and every connection.
pub(crate) struct Upstream {
    pub(crate) addr: SocketAddr,
    pub(crate) name: &'static str,
    pub(crate) task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub(crate) fn target(&self) -> Target {
        Target {
            addr: self.addr.to_string(),
            container: format!("app-{}", self.name),
            version: self.name.to_string(),
            color: if self.name == "v1" {
                Color::Blue
            } else {
                Color::Green
            },
        }
    }
}

pub(crate) async fn upstream(cfg: UpstreamConfig) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let name = cfg.name;
    let cfg = Arc::new(cfg);
    let task = tokio::spawn(async move {
        // Owned by this task: aborting it closes every upstream connection too.
        let mut conns = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let cfg = Arc::clone(&cfg);
            conns.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let cfg = Arc::clone(&cfg);
                    async move { Ok::<_, Infallible>(answer(&cfg, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
            while conns.try_join_next().is_some() {}
        }
    });
    Upstream { addr, name, task }
}

pub(crate) fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = status;
    resp
}

pub(crate) async fn answer(cfg: &UpstreamConfig, mut req: Request<Incoming>) -> Response<TestBody> {
    match req.uri().path() {
        "/health" => full(cfg.health_status, "health"),
        "/fail" => full(StatusCode::INTERNAL_SERVER_ERROR, cfg.name),
        // Delay before the answer head.
        "/slow" => {
            tokio::time::sleep(cfg.delay).await;
            full(StatusCode::OK, cfg.name)
        }
        // Head at once, body after the delay: the request is in flight while the body streams.
        "/slowbody" => {
            let delay = cfg.delay;
            let name = cfg.name;
            let stream = futures_util::stream::once(async move {
                tokio::time::sleep(delay).await;
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(name.as_bytes())))
            });
            Response::new(StreamBody::new(stream).boxed_unsync())
        }
        "/headers" => {
            let mut lines: Vec<String> = req
                .headers()
                .iter()
                .map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap_or("?")))
                .collect();
            lines.sort();
            full(StatusCode::OK, lines.join("\n"))
        }
        "/echo" => {
            let body = match req.into_body().collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => return full(StatusCode::BAD_REQUEST, "body"),
            };
            full(StatusCode::OK, body)
        }
        "/ws" if req.headers().get("upgrade").is_some_and(|v| v == "echo") => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            let mut resp = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
            resp.headers_mut()
                .insert("upgrade", hyper::header::HeaderValue::from_static("echo"));
            resp.headers_mut().insert(
                "connection",
                hyper::header::HeaderValue::from_static("upgrade"),
            );
            resp
        }
        _ => full(StatusCode::OK, cfg.name),
    }
}

// ---------------------------------------------------------------- proxy

pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    /// Where metrics are served, when they are on.
    pub(crate) metrics: Option<SocketAddr>,
    pub(crate) stop: Option<oneshot::Sender<()>>,
    pub(crate) task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Proxy {
    pub(crate) async fn start(state_dir: &Path) -> Proxy {
        Proxy::start_with(state_dir, None).await
    }

    /// A proxy that serves metrics on a loopback port of its own, labelled app `web`, env `prod`.
    pub(crate) async fn start_with_metrics(state_dir: &Path) -> Proxy {
        let metrics = proxy::MetricsOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            app: "web".into(),
            env: "prod".into(),
        };
        Proxy::start_with(state_dir, Some(metrics)).await
    }

    async fn start_with(state_dir: &Path, metrics: Option<proxy::MetricsOptions>) -> Proxy {
        let server = Server::bind(RunOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            state_dir: state_dir.to_path_buf(),
            limits: Default::default(),
            metrics,
        })
        .await
        .expect("bind proxy");
        let addr = server.local_addr().expect("proxy addr");
        let metrics = server.metrics_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Proxy {
            addr,
            metrics,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("proxy stops in time")
                .expect("proxy task")
                .expect("proxy serve ok");
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

pub(crate) fn switch_req(target: Target, drain_timeout_ms: u64) -> SwitchRequest {
    SwitchRequest {
        health: deployctl::health::HealthSpec {
            url: format!("http://{}/health", target.addr),
            host_header: None,
            headers: Default::default(),
            interval_ms: 100,
            timeout_ms: 5_000,
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            start_period_ms: 0,
            deadline_ms: 5_000,
            expect_status: vec![200],
            expect_body: None,
            expect_json: None,
        },
        target,
        drain_timeout_ms,
    }
}

pub(crate) async fn switch(dir: &Path, up: &Upstream) -> SwitchResult {
    proxy::client_switch(dir, switch_req(up.target(), 5_000))
        .await
        .expect("switch")
}

/// One request on a fresh connection.
/// Polls `probe` every 10 ms until it holds; the bound only stops a hang, it asserts no timing.
pub(crate) async fn until(what: &str, mut probe: impl AsyncFnMut() -> bool) {
    for _ in 0..1000 {
        if probe().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// Waits until the proxy forwards exactly `n` requests.
pub(crate) async fn until_in_flight(dir: &Path, n: u64) {
    until(&format!("{n} requests in flight"), async || {
        proxy::client_status(dir).await.expect("status").in_flight == n
    })
    .await;
}

pub(crate) async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(StatusCode, String)> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "example.test")
        .body(http_body_util::Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

pub(crate) fn pooled_client() -> Client<HttpConnector, http_body_util::Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub(crate) async fn pooled_get(
    client: &Client<HttpConnector, http_body_util::Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<(StatusCode, String)> {
    let resp = client.get(format!("http://{addr}{path}").parse()?).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

pub(crate) fn record(id: &str, outcome: Outcome) -> ReleaseRecord {
    ReleaseRecord {
        id: id.into(),
        version: format!("ver-{id}"),
        image: format!("app:{id}"),
        color: Color::Blue,
        container: format!("app-blue-{id}"),
        git_sha: Some("3f2a9c1".into()),
        author: Some("ci".into()),
        started_at: 1_700_000_000,
        finished_at: None,
        duration_ms: None,
        outcome,
        reason: None,
        tests_skipped: false,
        spec: None,
    }
}

/// A raw HTTP/1.1 upstream that counts its connections. With `drop_second`, a connection that
/// gets a second request is closed without an answer: the app closing a kept-alive connection
/// just as the proxy reuses it.
pub(crate) async fn counting_upstream(
    drop_second: bool,
) -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let conns = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&conns);
    let task = tokio::spawn(async move {
        let mut tasks = JoinSet::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            tasks.spawn(async move {
                let mut buf = Vec::new();
                let mut served = 0;
                loop {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => buf.extend_from_slice(&chunk[..read]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if drop_second && served == 1 {
                            return;
                        }
                        served += 1;
                        let body = format!("conn-{n}");
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if stream.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, conns, task)
}

pub(crate) fn raw_target(addr: SocketAddr) -> Target {
    Target {
        addr: addr.to_string(),
        container: "app-raw".into(),
        version: "raw".into(),
        color: Color::Blue,
    }
}
