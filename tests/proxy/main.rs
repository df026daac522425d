//! The built-in proxy, in-process: a proxy on loopback with a temp state dir in front of tiny
//! upstream servers that answer their own name.

mod harness;
mod metrics;
#[path = "../support/mod.rs"]
mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use deployctl::proxy::protocol::{Outcome, ReleaseRecord};
use deployctl::proxy::{self, RunOptions, Server};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use harness::*;

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
    let gone = v1.addr;
    drop(v1);
    until("the upstream refuses connections", async || {
        TcpStream::connect(gone).await.is_err()
    })
    .await;

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
    let answered = Arc::new(AtomicUsize::new(0));
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
        let answered = Arc::clone(&answered);
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
                answered.fetch_add(1, Ordering::SeqCst);
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

    // Traffic flows between the switches: a number of answers, not a span of time.
    let more_answers = async |n: usize| {
        let from = answered.load(Ordering::SeqCst);
        until(&format!("{n} more answers"), async || {
            answered.load(Ordering::SeqCst) >= from + n
        })
        .await;
    };
    more_answers(100).await;
    let r = switch(dir.path(), &v2).await;
    assert_eq!(r.previous, Some(v1.target()));
    assert_eq!(r.abandoned, 0);
    assert_eq!(get(proxy.addr, "/").await.expect("get").1, "v2");
    assert_eq!(on_kept(&mut kept).await, "v2");

    more_answers(100).await;
    let r = switch(dir.path(), &v1).await;
    assert_eq!(r.previous, Some(v2.target()));
    assert_eq!(get(proxy.addr, "/").await.expect("get").1, "v1");
    assert_eq!(on_kept(&mut kept).await, "v1");

    more_answers(100).await;
    running.store(false, Ordering::Relaxed);
    let mut all = Vec::new();
    while let Some(answers) = workers.join_next().await {
        all.extend(answers.expect("worker"));
    }
    let failures: Vec<_> = all.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let bodies: Vec<&String> = all.iter().filter_map(|a| a.as_ref().ok()).collect();
    assert!(bodies.iter().all(|b| *b == "v1" || *b == "v2"));
    assert!(bodies.iter().any(|b| *b == "v1") && bodies.iter().any(|b| *b == "v2"));
    // Throughput is measured in bench/run.sh, not asserted here.
    assert!(all.len() >= 300, "{} requests", all.len());
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
    until_in_flight(dir.path(), 1).await;
    let r = switch(dir.path(), &v2).await;
    assert_eq!(r.abandoned, 0);
    // The switch returned once the drain ended: nothing is in flight any more; the proxy has
    // sent the last byte already, the client only has to read it.
    assert_eq!(
        proxy::client_status(dir.path())
            .await
            .expect("status")
            .in_flight,
        0
    );
    let answer = slow.await.expect("task").expect("slow request");
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
    until_in_flight(dir.path(), 1).await;
    let r = proxy::client_switch(dir.path(), switch_req(v2.target(), 200))
        .await
        .expect("switch");
    // Returned at its drain timeout, before the request (1 s of upstream delay) ended.
    assert_eq!(r.abandoned, 1);
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

    let mut gone = v1.target();
    gone.addr = format!("127.0.0.1:{}", support::free_port());
    gone.container = "app-gone".into();
    let err = proxy::client_switch(dir.path(), switch_req(gone, 1000))
        .await
        .expect_err("unreachable target refused");
    assert!(format!("{err:#}").contains("connection refused"), "{err:#}");

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
        metrics: None,
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
    until_in_flight(dir.path(), 0).await;
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
    until_in_flight(dir.path(), 1).await;
    proxy.stop().await;
    // The request in flight when the stop began is answered in full, not cut.
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
    until_in_flight(dir.path(), 1).await;
    let state_dir = dir.path().to_path_buf();
    let forward = tokio::spawn({
        let target = v2.target();
        async move { proxy::client_switch(&state_dir, switch_req(target, 5_000)).await }
    });
    until("the first switch swapped to v2", async || {
        get(proxy.addr, "/")
            .await
            .is_ok_and(|(_, body)| body == "v2")
    })
    .await;

    // Roll back while the first switch still drains the slow v1 request: the switch back
    // returns while the first is still waiting (checked below), not after it.
    let back = switch(dir.path(), &v1).await;
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
