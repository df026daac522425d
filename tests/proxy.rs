//! The built-in proxy, in-process: a proxy on loopback with a temp state dir in front of tiny
//! upstream servers that answer their own name.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

type TestBody = UnsyncBoxBody<Bytes, Infallible>;

// ---------------------------------------------------------------- upstreams

#[derive(Clone)]
struct UpstreamConfig {
    name: &'static str,
    health_status: StatusCode,
    delay: Duration,
}

fn healthy(name: &'static str) -> UpstreamConfig {
    UpstreamConfig {
        name,
        health_status: StatusCode::OK,
        delay: Duration::from_secs(1),
    }
}

/// An upstream app; dropping it stops the listener and every connection.
struct Upstream {
    addr: SocketAddr,
    name: &'static str,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    fn target(&self) -> Target {
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

async fn upstream(cfg: UpstreamConfig) -> Upstream {
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

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<TestBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = status;
    resp
}

async fn answer(cfg: &UpstreamConfig, mut req: Request<Incoming>) -> Response<TestBody> {
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

struct Proxy {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Proxy {
    async fn start(state_dir: &Path) -> Proxy {
        let server = Server::bind(RunOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            state_dir: state_dir.to_path_buf(),
            limits: Default::default(),
        })
        .await
        .expect("bind proxy");
        let addr = server.local_addr().expect("proxy addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Proxy {
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
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

fn switch_req(target: Target, drain_timeout_ms: u64) -> SwitchRequest {
    SwitchRequest {
        target,
        health_path: "/health".into(),
        health_host: None,
        expect_status: vec![200],
        drain_timeout_ms,
    }
}

async fn switch(dir: &Path, up: &Upstream) -> SwitchResult {
    proxy::client_switch(dir, switch_req(up.target(), 5_000))
        .await
        .expect("switch")
}

/// One request on a fresh connection.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(StatusCode, String)> {
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

fn pooled_client() -> Client<HttpConnector, http_body_util::Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn pooled_get(
    client: &Client<HttpConnector, http_body_util::Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<(StatusCode, String)> {
    let resp = client.get(format!("http://{addr}{path}").parse()?).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn record(id: &str, outcome: Outcome) -> ReleaseRecord {
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

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn no_live_target_answers_502_with_a_clear_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let (status, body) = get(proxy.addr, "/").await.expect("request");
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, proxy::NO_LIVE_BODY);
    let status = proxy::client_status(dir.path()).await.expect("status");
    assert_eq!(status.live, None);
    assert!(status.targets.is_empty());
    proxy.stop().await;
}

#[tokio::test]
async fn forwards_with_forwarded_headers_and_streams_bodies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let v1 = upstream(healthy("v1")).await;
    let result = switch(dir.path(), &v1).await;
    assert_eq!(result.previous, None);
    assert_eq!(result.live, v1.target());

    assert_eq!(
        get(proxy.addr, "/").await.expect("get"),
        (StatusCode::OK, "v1".to_string())
    );

    // Raw request so hop-by-hop headers reach the proxy exactly as written.
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(
            b"GET /headers HTTP/1.1\r\nHost: example.test\r\nConnection: close, x-drop\r\n\
              X-Drop: secret\r\nKeep-Alive: timeout=5\r\nX-Keep: yes\r\n\r\n",
        )
        .await
        .expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("x-forwarded-for: 127.0.0.1"), "{raw}");
    assert!(raw.contains("x-forwarded-proto: http"), "{raw}");
    assert!(raw.contains("x-forwarded-host: example.test"), "{raw}");
    assert!(raw.contains("host: example.test"), "{raw}");
    assert!(raw.contains("x-keep: yes"), "{raw}");
    assert!(!raw.contains("x-drop"), "{raw}");
    assert!(!raw.contains("keep-alive: timeout"), "{raw}");

    // A 2 MiB upload and download through the proxy, chunked on the way in.
    let payload: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = payload
        .chunks(64 * 1024)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let req = Request::post("/echo")
        .header("host", "example.test")
        .body(body)
        .expect("request");
    let resp = sender.send_request(req).await.expect("echo");
    assert_eq!(resp.status(), StatusCode::OK);
    let echoed = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload);
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_refused_answers_502_and_counts_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let v1 = upstream(healthy("v1")).await;
    switch(dir.path(), &v1).await;
    drop(v1);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let (status, body) = get(proxy.addr, "/").await.expect("request");
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, proxy::UPSTREAM_DOWN_BODY);
    let status = proxy::client_status(dir.path()).await.expect("status");
    assert_eq!(status.targets[0].requests, 1);
    assert_eq!(status.targets[0].errors, 1);
    assert_eq!(status.in_flight, 0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_under_load_drops_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let slowish = |name| UpstreamConfig {
        delay: Duration::from_millis(20),
        ..healthy(name)
    };
    let v1 = upstream(slowish("v1")).await;
    let v2 = upstream(slowish("v2")).await;
    switch(dir.path(), &v1).await;

    let running = Arc::new(AtomicBool::new(true));
    let mut workers = JoinSet::new();
    // Fast and slow requests (slow ones are surely in flight at each switch), over keep-alive
    // connections and over one new connection per request.
    for (pooled, path) in [
        (true, "/"),
        (true, "/"),
        (false, "/"),
        (false, "/"),
        (true, "/slow"),
        (false, "/slowbody"),
    ] {
        let running = Arc::clone(&running);
        let addr = proxy.addr;
        workers.spawn(async move {
            let client = pooled_client();
            let mut answers: Vec<Result<String, String>> = Vec::new();
            while running.load(Ordering::Relaxed) {
                let res = if pooled {
                    pooled_get(&client, addr, path).await
                } else {
                    get(addr, path).await
                };
                answers.push(match res {
                    Ok((StatusCode::OK, body)) => Ok(body),
                    Ok((status, body)) => Err(format!("{status}: {body}")),
                    Err(e) => Err(format!("{e:#}")),
                });
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            answers
        });
    }

    // A keep-alive connection opened before the switches: each request must follow the live
    // pointer, not the target its connection first went to.
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    let (mut kept, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    async fn on_kept(
        kept: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<Bytes>>,
    ) -> String {
        let req = Request::get("/")
            .header("host", "example.test")
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("request");
        let resp = kept.send_request(req).await.expect("kept request");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    }
    assert_eq!(on_kept(&mut kept).await, "v1");

    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = switch(dir.path(), &v2).await;
    assert_eq!(r.previous, Some(v1.target()));
    assert_eq!(r.abandoned, 0);
    assert_eq!(get(proxy.addr, "/").await.expect("get").1, "v2");
    assert_eq!(on_kept(&mut kept).await, "v2");

    tokio::time::sleep(Duration::from_millis(700)).await;
    let r = switch(dir.path(), &v1).await;
    assert_eq!(r.previous, Some(v2.target()));
    assert_eq!(get(proxy.addr, "/").await.expect("get").1, "v1");
    assert_eq!(on_kept(&mut kept).await, "v1");

    tokio::time::sleep(Duration::from_millis(700)).await;
    running.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = Vec::new();
    while let Some(answers) = workers.join_next().await {
        all.extend(answers.expect("worker"));
    }
    let failures: Vec<_> = all.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let bodies: Vec<&String> = all.iter().filter_map(|a| a.as_ref().ok()).collect();
    assert!(bodies.iter().all(|b| *b == "v1" || *b == "v2"));
    assert!(bodies.iter().any(|b| *b == "v1") && bodies.iter().any(|b| *b == "v2"));
    let rate = all.len() as f64 / elapsed;
    eprintln!("{} requests, {rate:.0} req/s", all.len());
    assert!(rate >= 200.0, "only {rate:.0} req/s");
    proxy.stop().await;
}

#[tokio::test]
async fn switch_waits_for_in_flight_requests_of_the_old_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let v1 = upstream(healthy("v1")).await;
    let v2 = upstream(healthy("v2")).await;
    switch(dir.path(), &v1).await;

    // Body streams for 1 s after the head: the request is in flight until its last byte.
    let slow = tokio::spawn(get(proxy.addr, "/slowbody"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        proxy::client_status(dir.path())
            .await
            .expect("status")
            .in_flight,
        1
    );
    let r = switch(dir.path(), &v2).await;
    assert_eq!(r.abandoned, 0);
    assert!(
        (600.0..2500.0).contains(&r.drain_ms),
        "drain_ms {}",
        r.drain_ms
    );
    assert!(r.swap_ms < r.drain_ms);
    // The proxy has sent the last byte already; the client only has to read it.
    let answer = tokio::time::timeout(Duration::from_millis(300), slow)
        .await
        .expect("slow request done by the time the drain ended")
        .expect("task")
        .expect("slow request");
    assert_eq!(answer, (StatusCode::OK, "v1".to_string()));
    proxy.stop().await;
}

#[tokio::test]
async fn short_drain_timeout_returns_early_and_reports_abandoned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let v1 = upstream(healthy("v1")).await;
    let v2 = upstream(healthy("v2")).await;
    switch(dir.path(), &v1).await;

    let slow = tokio::spawn(get(proxy.addr, "/slow"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = proxy::client_switch(dir.path(), switch_req(v2.target(), 200))
        .await
        .expect("switch");
    assert_eq!(r.abandoned, 1);
    assert!(
        (150.0..700.0).contains(&r.drain_ms),
        "drain_ms {}",
        r.drain_ms
    );
    assert!(!slow.is_finished());
    // Abandoned by the drain, not cut: the old target still answers it.
    let answer = slow.await.expect("task").expect("slow request");
    assert_eq!(answer, (StatusCode::OK, "v1".to_string()));
    assert_eq!(get(proxy.addr, "/").await.expect("get").1, "v2");
    proxy.stop().await;
}

#[tokio::test]
async fn unhealthy_or_unreachable_target_is_refused_and_live_stays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let v1 = upstream(healthy("v1")).await;
    switch(dir.path(), &v1).await;
    let state_before = std::fs::read(dir.path().join(proxy::STATE_FILE)).expect("state");

    let sick = upstream(UpstreamConfig {
        health_status: StatusCode::INTERNAL_SERVER_ERROR,
        ..healthy("v2")
    })
    .await;
    let err = proxy::client_switch(dir.path(), switch_req(sick.target(), 1000))
        .await
        .expect_err("unhealthy target refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("health check failed"), "{msg}");
    assert!(msg.contains("500"), "{msg}");

    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed_addr = closed.local_addr().expect("addr");
    drop(closed);
    let mut gone = v1.target();
    gone.addr = closed_addr.to_string();
    gone.container = "app-gone".into();
    let err = proxy::client_switch(dir.path(), switch_req(gone, 1000))
        .await
        .expect_err("unreachable target refused");
    assert!(format!("{err:#}").contains("cannot connect"), "{err:#}");

    let mut bad = v1.target();
    bad.addr = "no-port".into();
    assert!(
        proxy::client_switch(dir.path(), switch_req(bad, 1000))
            .await
            .is_err()
    );

    let status = proxy::client_status(dir.path()).await.expect("status");
    assert_eq!(status.live, Some(v1.target()));
    assert_eq!(get(proxy.addr, "/").await.expect("get").1, "v1");
    let state_after = std::fs::read(dir.path().join(proxy::STATE_FILE)).expect("state");
    assert_eq!(state_before, state_after);
    proxy.stop().await;
}

#[tokio::test]
async fn restarted_proxy_restores_the_live_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = upstream(healthy("v1")).await;
    let first = Proxy::start(dir.path()).await;
    switch(dir.path(), &v1).await;
    let switched_at = proxy::client_status(dir.path())
        .await
        .expect("status")
        .switched_at;
    assert!(switched_at.is_some());
    first.stop().await;
    assert!(!proxy::socket_path(dir.path()).exists());

    let second = Proxy::start(dir.path()).await;
    assert_eq!(get(second.addr, "/").await.expect("get").1, "v1");
    let status = proxy::client_status(dir.path()).await.expect("status");
    assert_eq!(status.live, Some(v1.target()));
    assert_eq!(status.switched_at, switched_at);
    second.stop().await;
}

#[tokio::test]
async fn corrupt_state_starts_without_a_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(proxy::STATE_FILE), b"{\"live\": 12").expect("write");
    let proxy = Proxy::start(dir.path()).await;
    let (status, _) = get(proxy.addr, "/").await.expect("get");
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    proxy.stop().await;
}

#[tokio::test]
async fn second_proxy_on_the_same_state_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let err = Server::bind(RunOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        state_dir: dir.path().to_path_buf(),
        limits: Default::default(),
    })
    .await
    .err()
    .expect("second bind refused");
    assert!(format!("{err:#}").contains("already running"), "{err:#}");
    proxy.stop().await;
}

#[tokio::test]
async fn ledger_upserts_demotes_and_persists() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let d = dir.path();
    assert!(
        proxy::client_releases(d)
            .await
            .expect("releases")
            .is_empty()
    );

    proxy::client_record(d, record("a", Outcome::InProgress))
        .await
        .expect("record");
    let mut a_live = record("a", Outcome::Live);
    a_live.finished_at = Some(1_700_000_090);
    a_live.duration_ms = Some(90_000);
    proxy::client_record(d, a_live.clone())
        .await
        .expect("record");
    proxy::client_record(d, record("b", Outcome::InProgress))
        .await
        .expect("record");
    proxy::client_record(d, record("b", Outcome::Live))
        .await
        .expect("record");
    let mut c_failed = record("c", Outcome::Failed);
    c_failed.reason = Some("health check failed".into());
    proxy::client_record(d, c_failed).await.expect("record");

    let releases = proxy::client_releases(d).await.expect("releases");
    let summary: Vec<_> = releases
        .iter()
        .map(|r| (r.id.as_str(), r.outcome))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("a", Outcome::Good),
            ("b", Outcome::Live),
            ("c", Outcome::Failed)
        ]
    );
    assert_eq!(releases[0].duration_ms, Some(90_000));

    let err = proxy::client_record(d, record(" ", Outcome::Good))
        .await
        .expect_err("empty id refused");
    assert!(format!("{err:#}").contains("non-empty id"));

    proxy.stop().await;
    let on_disk: Vec<ReleaseRecord> =
        serde_json::from_slice(&std::fs::read(d.join(proxy::LEDGER_FILE)).expect("ledger file"))
            .expect("ledger json");
    assert_eq!(on_disk, releases);
    let text = String::from_utf8(std::fs::read(d.join(proxy::LEDGER_FILE)).expect("ledger"))
        .expect("utf8");
    assert!(text.contains("\"in_progress\"") || text.contains("\"good\""));

    let restarted = Proxy::start(d).await;
    assert_eq!(proxy::client_releases(d).await.expect("releases"), releases);
    restarted.stop().await;
}

#[tokio::test]
async fn status_counts_requests_errors_and_percentiles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let v1 = upstream(UpstreamConfig {
        delay: Duration::from_millis(30),
        ..healthy("v1")
    })
    .await;
    let v2 = upstream(healthy("v2")).await;
    switch(dir.path(), &v1).await;

    for _ in 0..10 {
        assert_eq!(get(proxy.addr, "/").await.expect("get").0, StatusCode::OK);
    }
    for _ in 0..3 {
        let (status, _) = get(proxy.addr, "/fail").await.expect("get");
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    for _ in 0..2 {
        assert_eq!(
            get(proxy.addr, "/slow").await.expect("get").0,
            StatusCode::OK
        );
    }
    let status = proxy::client_status(dir.path()).await.expect("status");
    assert_eq!(status.live, Some(v1.target()));
    assert_eq!(status.in_flight, 0);
    let s = &status.targets[0];
    assert_eq!((s.container.as_str(), s.version.as_str()), ("app-v1", "v1"));
    assert_eq!(s.requests, 15);
    assert_eq!(s.errors, 3);
    assert_eq!(s.in_flight, 0);
    assert!(s.p50_ms > 0.0 && s.p50_ms < 30.0, "p50 {}", s.p50_ms);
    assert!(s.p50_ms <= s.p95_ms && s.p95_ms <= s.p99_ms);
    // The two slow requests sit in the top 2 of 15 samples: p95 and p99 see them.
    assert!(s.p99_ms >= 30.0, "p99 {}", s.p99_ms);

    // The new live target starts from zero; the old one's numbers stay visible.
    switch(dir.path(), &v2).await;
    get(proxy.addr, "/").await.expect("get");
    let status = proxy::client_status(dir.path()).await.expect("status");
    assert_eq!(status.targets.len(), 2);
    assert_eq!(status.targets[0].container, "app-v2");
    assert_eq!(status.targets[0].requests, 1);
    assert_eq!(status.targets[1].container, "app-v1");
    assert_eq!(status.targets[1].requests, 15);
    proxy.stop().await;
}

#[tokio::test]
async fn upgrade_is_passed_through_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let v1 = upstream(healthy("v1")).await;
    switch(dir.path(), &v1).await;

    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("head in time")
            .expect("read");
        assert_eq!(n, 1, "connection closed during head: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");

    for msg in [&b"hello"[..], b"through the proxy"] {
        stream.write_all(msg).await.expect("write");
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf))
            .await
            .expect("echo in time")
            .expect("read");
        assert_eq!(buf, msg);
    }
    // The tunnel counts as in flight until it closes.
    assert_eq!(
        proxy::client_status(dir.path())
            .await
            .expect("status")
            .in_flight,
        1
    );
    drop(stream);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        proxy::client_status(dir.path())
            .await
            .expect("status")
            .in_flight,
        0
    );
    proxy.stop().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let v1 = upstream(UpstreamConfig {
        delay: Duration::from_millis(500),
        ..healthy("v1")
    })
    .await;
    switch(dir.path(), &v1).await;
    let addr = proxy.addr;
    let slow = tokio::spawn(get(addr, "/slow"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopped = Instant::now();
    proxy.stop().await;
    assert!(stopped.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        slow.await.expect("task").expect("slow request"),
        (StatusCode::OK, "v1".to_string())
    );
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn switch_back_does_not_wait_for_an_earlier_drain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let v1 = upstream(healthy("v1")).await;
    let v2 = upstream(healthy("v2")).await;
    switch(dir.path(), &v1).await;

    let slow = tokio::spawn(get(proxy.addr, "/slow"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let state_dir = dir.path().to_path_buf();
    let forward = tokio::spawn({
        let target = v2.target();
        async move { proxy::client_switch(&state_dir, switch_req(target, 5_000)).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(get(proxy.addr, "/").await.expect("get").1, "v2");

    // Roll back while the first switch still drains the slow v1 request.
    let started = Instant::now();
    let back = switch(dir.path(), &v1).await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(back.previous, Some(v2.target()));
    assert_eq!(get(proxy.addr, "/").await.expect("get").1, "v1");
    assert!(!forward.is_finished());

    let first = forward.await.expect("task").expect("first switch");
    assert_eq!(first.abandoned, 0);
    assert_eq!(
        slow.await.expect("task").expect("slow request"),
        (StatusCode::OK, "v1".to_string())
    );
    proxy.stop().await;
}

/// A raw HTTP/1.1 upstream that counts its connections. With `drop_second`, a connection that
/// gets a second request is closed without an answer: the app closing a kept-alive connection
/// just as the proxy reuses it.
async fn counting_upstream(drop_second: bool) -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
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

fn raw_target(addr: SocketAddr) -> Target {
    Target {
        addr: addr.to_string(),
        container: "app-raw".into(),
        version: "raw".into(),
        color: Color::Blue,
    }
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let (addr, conns, task) = counting_upstream(false).await;
    proxy::client_switch(dir.path(), switch_req(raw_target(addr), 1_000))
        .await
        .expect("switch");
    let probe_conns = conns.load(Ordering::SeqCst);

    let client = pooled_client();
    for _ in 0..5 {
        let (status, _) = pooled_get(&client, proxy.addr, "/").await.expect("request");
        assert_eq!(status, StatusCode::OK);
    }
    // Five requests on one client connection: one upstream connection besides the probe's.
    assert_eq!(conns.load(Ordering::SeqCst), probe_conns + 1);
    task.abort();
    proxy.stop().await;
}

#[tokio::test]
async fn idempotent_request_on_a_connection_the_app_closed_is_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start(dir.path()).await;
    let (addr, conns, task) = counting_upstream(true).await;
    proxy::client_switch(dir.path(), switch_req(raw_target(addr), 1_000))
        .await
        .expect("switch");
    let probe_conns = conns.load(Ordering::SeqCst);

    let client = pooled_client();
    let (status, first) = pooled_get(&client, proxy.addr, "/").await.expect("first");
    assert_eq!(status, StatusCode::OK);
    // The pooled connection is reused, the app closes it, the proxy retries on a new one.
    let (status, second) = pooled_get(&client, proxy.addr, "/").await.expect("second");
    assert_eq!(status, StatusCode::OK);
    assert_ne!(first, second);
    assert_eq!(conns.load(Ordering::SeqCst), probe_conns + 2);
    let status = proxy::client_status(dir.path()).await.expect("status");
    assert_eq!(status.targets[0].requests, 2);
    assert_eq!(status.targets[0].errors, 0);
    task.abort();
    proxy.stop().await;
}
