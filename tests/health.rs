//! Health checks against real HTTP servers on 127.0.0.1, in-process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deployctl::health::{
    Client, HealthOutcome, HealthSpec, ProbeResult, probe_once, wait_healthy, watch,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the test server answers to one request.
#[derive(Clone)]
struct Reply {
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

struct Server {
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
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve_on(listener, handler)
}

fn serve_on(
    listener: TcpListener,
    handler: impl Fn(usize) -> Reply + Send + Sync + 'static,
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
    handler: &(dyn Fn(usize) -> Reply + Send + Sync),
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
    heads
        .lock()
        .expect("heads lock")
        .push(String::from_utf8_lossy(&head).into_owned());
    let reply = handler(hits.fetch_add(1, Ordering::SeqCst));
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

#[tokio::test]
async fn healthy_after_exactly_threshold_probes() {
    let server = serve(|_| reply(200, r#"{"status":"ok"}"#)).await;
    let mut s = spec(server.url("/health"));
    s.healthy_threshold = 3;
    let (outcome, seen) = wait(&s).await;
    match outcome {
        HealthOutcome::Healthy { probes, elapsed_ms } => {
            assert_eq!(probes, 3);
            // Two intervals between three probes.
            assert!(elapsed_ms >= 100, "elapsed {elapsed_ms} ms");
        }
        other => panic!("expected Healthy, got {other:?}"),
    }
    assert_eq!(seen.len(), 3);
    assert_eq!(server.hits(), 3);
    assert!(
        seen.iter()
            .all(|p| p.ok && p.status == Some(200) && p.error.is_none())
    );
    assert!(
        seen.windows(2).all(|w| w[1].at_ms >= w[0].at_ms + 45),
        "{seen:?}"
    );
}

#[tokio::test]
async fn sends_host_header_and_extra_headers() {
    let server = serve(|_| reply(200, "ok")).await;
    let mut s = spec(server.url("/health?deep=1"));
    s.host_header = Some("app.example.test".into());
    s.headers.insert("X-Check".into(), "deployctl".into());
    let p = probe_once(&s, &Client::new()).await;
    assert!(p.ok, "{p:?}");
    let heads = server.heads.lock().expect("heads lock").clone();
    let head = heads[0].to_ascii_lowercase();
    assert!(
        head.starts_with("get /health?deep=1 http/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nhost: app.example.test\r\n"), "{head}");
    assert!(head.contains("\r\nx-check: deployctl\r\n"), "{head}");

    // Without host_header the URL's authority is the Host.
    let p = probe_once(&spec(server.url("/")), &Client::new()).await;
    assert!(p.ok);
    let heads = server.heads.lock().expect("heads lock").clone();
    let expected = format!("\r\nhost: {}\r\n", server.addr);
    assert!(
        heads[1].to_ascii_lowercase().contains(&expected),
        "{}",
        heads[1]
    );
}

#[tokio::test]
async fn status_500_fails_with_status_and_body() {
    let server = serve(|_| reply(500, "database is down")).await;
    let p = probe_once(&spec(server.url("/health")), &Client::new()).await;
    assert!(!p.ok);
    assert_eq!(p.status, Some(500));
    assert_eq!(p.body_head, "database is down");
    assert_eq!(error_of(&p), "expected status 200, got 500");
}

#[tokio::test]
async fn empty_expect_status_means_any_2xx() {
    let server = serve(|i| {
        if i == 0 {
            reply(204, "")
        } else {
            reply(302, "moved")
        }
    })
    .await;
    let mut s = spec(server.url("/"));
    s.expect_status.clear();
    let p = probe_once(&s, &Client::new()).await;
    assert!(p.ok, "{p:?}");
    let p = probe_once(&s, &Client::new()).await;
    assert!(!p.ok);
    assert_eq!(error_of(&p), "expected status 2xx, got 302");

    s.expect_status = vec![200, 204];
    let p = probe_once(&s, &Client::new()).await;
    assert_eq!(error_of(&p), "expected status one of 200, 204, got 302");
}

#[tokio::test]
async fn refused_connection_is_reported() {
    let port = free_port().await;
    let p = probe_once(
        &spec(format!("http://127.0.0.1:{port}/health")),
        &Client::new(),
    )
    .await;
    assert!(!p.ok);
    assert_eq!(p.status, None);
    assert_eq!(error_of(&p), "connection refused");
}

#[tokio::test]
async fn bad_urls_fail_the_probe_without_panicking() {
    for url in ["not a url", "https://127.0.0.1/", "http:///path", ""] {
        let p = probe_once(&spec(url.into()), &Client::new()).await;
        assert!(!p.ok);
        assert!(error_of(&p).starts_with("invalid URL"), "{url}: {p:?}");
    }
    let mut s = spec("http://127.0.0.1:1/".into());
    s.headers.insert("Bad Name".into(), "x".into());
    let p = probe_once(&s, &Client::new()).await;
    assert_eq!(error_of(&p), "invalid header name \"Bad Name\"");
}

#[tokio::test]
async fn slow_response_times_out_within_the_timeout() {
    let server = serve(|_| Reply {
        status: 200,
        body: "late".into(),
        delay: Duration::from_secs(5),
    })
    .await;
    let mut s = spec(server.url("/health"));
    s.timeout_ms = 200;
    let started = Instant::now();
    let p = probe_once(&s, &Client::new()).await;
    let took = started.elapsed();
    assert!(!p.ok);
    assert_eq!(error_of(&p), "timed out after 200ms");
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_millis(400), "{took:?}");

    // In a wait, every probe is bounded and the deadline is overshot by at most one timeout.
    s.deadline_ms = 700;
    let started = Instant::now();
    let (outcome, seen) = wait(&s).await;
    let took = started.elapsed();
    assert!(
        matches!(outcome, HealthOutcome::DeadlineExceeded { .. }),
        "{outcome:?}"
    );
    assert!(seen.len() >= 3, "{seen:?}");
    for p in &seen {
        assert!(p.latency_ms < 350.0, "{p:?}");
        assert!(error_of(p).contains("timed out"), "{p:?}");
    }
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert!(took < Duration::from_millis(700 + 200 + 150), "{took:?}");
}

#[tokio::test]
async fn expect_body_passes_and_fails() {
    let server = serve(|_| reply(200, "status: ready")).await;
    let mut s = spec(server.url("/"));
    s.expect_body = Some("ready".into());
    assert!(probe_once(&s, &Client::new()).await.ok);
    s.expect_body = Some("ok".into());
    let p = probe_once(&s, &Client::new()).await;
    assert!(!p.ok);
    assert_eq!(p.status, Some(200));
    assert_eq!(error_of(&p), "body does not contain \"ok\"");
}

#[tokio::test]
async fn expect_json_compares_strings_by_value_and_others_by_json_text() {
    let server = serve(|_| {
        reply(
            200,
            r#"{"status":"down","checks":{"db":true,"workers":3},"tags":["a"]}"#,
        )
    })
    .await;
    let client = Client::new();
    let mut s = spec(server.url("/health"));
    let mut probe = |pointer: &str, equals: &str| {
        s.expect_json = Some((pointer.into(), equals.into()));
        let s = s.clone();
        let client = client.clone();
        async move { probe_once(&s, &client).await }
    };

    let p = probe("/status", "ok").await;
    assert!(!p.ok);
    assert_eq!(error_of(&p), r#"JSON at /status is "down", expected "ok""#);
    assert!(probe("/status", "down").await.ok);
    assert!(probe("/checks/db", "true").await.ok);
    assert!(probe("/checks/workers", "3").await.ok);
    assert!(probe("/tags", r#"["a"]"#).await.ok);
    // A bare key is taken as a pointer from the root.
    assert!(probe("status", "down").await.ok);

    let p = probe("/checks/db", "false").await;
    assert_eq!(
        error_of(&p),
        r#"JSON at /checks/db is true, expected "false""#
    );
    let p = probe("/missing", "x").await;
    assert_eq!(error_of(&p), r#"JSON at /missing is missing, expected "x""#);

    let text = serve(|_| reply(200, "plain text")).await;
    let mut s = spec(text.url("/"));
    s.expect_json = Some(("/status".into(), "ok".into()));
    let p = probe_once(&s, &Client::new()).await;
    assert!(!p.ok);
    assert!(error_of(&p).starts_with("body is not JSON"), "{p:?}");
}

#[tokio::test]
async fn body_is_read_only_up_to_64_kib() {
    // The needle sits after the first 64 KiB, so it is never seen.
    let big = format!("{}needle", "x".repeat(200 * 1024));
    let server = serve(move |_| reply(200, big.clone())).await;
    let mut s = spec(server.url("/"));
    s.expect_body = Some("needle".into());
    let p = probe_once(&s, &Client::new()).await;
    assert!(!p.ok);
    assert_eq!(error_of(&p), "body does not contain \"needle\"");
    assert_eq!(p.body_head.len(), 200);
}

#[tokio::test]
async fn flapping_target_never_becomes_healthy() {
    let server = serve(|i| {
        if i % 2 == 0 {
            reply(200, "ok")
        } else {
            reply(500, "flap")
        }
    })
    .await;
    let mut s = spec(server.url("/health"));
    s.healthy_threshold = 2;
    s.unhealthy_threshold = 2;
    s.deadline_ms = 600;
    let (outcome, seen) = wait(&s).await;
    match outcome {
        HealthOutcome::DeadlineExceeded { last } => {
            assert_eq!(last.len(), 5);
            assert_eq!(last[..], seen[seen.len() - 5..]);
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert!(seen.len() >= 6, "{}", seen.len());

    // With one allowed failure, the first failure after a pass ends it.
    let mut s = spec(server.url("/health"));
    s.unhealthy_threshold = 1;
    let (outcome, _) = wait(&s).await;
    match outcome {
        HealthOutcome::Unhealthy { reason, last } => {
            assert!(reason.contains("expected status 200, got 500"), "{reason}");
            assert_eq!(last.last().and_then(|p| p.status), Some(500));
        }
        other => panic!("expected Unhealthy, got {other:?}"),
    }
}

#[tokio::test]
async fn failures_after_a_pass_make_the_target_unhealthy() {
    let server = serve(|i| {
        if i == 0 {
            reply(200, "ok")
        } else {
            reply(500, "broken")
        }
    })
    .await;
    let mut s = spec(server.url("/health"));
    s.healthy_threshold = 3;
    s.unhealthy_threshold = 2;
    let (outcome, seen) = wait(&s).await;
    match outcome {
        HealthOutcome::Unhealthy { reason, last } => {
            assert_eq!(
                reason,
                "2 consecutive failed probes after the target had passed; last: expected status 200, got 500"
            );
            assert_eq!(last.len(), 3);
            assert!(last[0].ok && !last[1].ok && !last[2].ok);
        }
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    assert_eq!(seen.len(), 3);
}

#[tokio::test]
async fn never_ready_ends_at_the_deadline_with_the_last_probes() {
    let server = serve(|_| reply(503, r#"{"status":"starting"}"#)).await;
    let mut s = spec(server.url("/health"));
    s.deadline_ms = 500;
    // Inside the start period failures do not count: only the deadline ends the wait.
    s.start_period_ms = 500;
    let started = Instant::now();
    let (outcome, seen) = wait(&s).await;
    let took = started.elapsed();
    match outcome {
        HealthOutcome::DeadlineExceeded { last } => {
            assert_eq!(last.len(), 5);
            for p in &last {
                assert_eq!(p.status, Some(503));
                assert_eq!(p.body_head, r#"{"status":"starting"}"#);
                assert_eq!(error_of(p), "expected status 200, got 503");
            }
            assert!(last.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert!(seen.len() >= 8, "{}", seen.len());
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(took < Duration::from_millis(800), "{took:?}");
}

#[tokio::test]
async fn item17_errors_fail_the_wait_from_the_first_answer() {
    let server = serve(|_| reply(500, "broken")).await;
    let mut s = spec(server.url("/health"));
    s.deadline_ms = 60_000;
    s.unhealthy_threshold = 3;
    let (outcome, seen) = wait(&s).await;
    match outcome {
        HealthOutcome::Unhealthy { reason, .. } => assert_eq!(
            reason,
            "3 consecutive failed probes since its first answer; last: expected status 200, got 500"
        ),
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    assert_eq!(seen.len(), 3);

    // Failures of probes started inside the start period do not count.
    s.start_period_ms = 300;
    let (outcome, seen) = wait(&s).await;
    assert!(
        matches!(outcome, HealthOutcome::Unhealthy { .. }),
        "{outcome:?}"
    );
    let counted: Vec<&ProbeResult> = seen.iter().filter(|p| p.at_ms >= 300).collect();
    assert_eq!(counted.len(), 3, "{seen:?}");
    assert!(seen.len() > 3, "{seen:?}");
}

#[tokio::test]
async fn slow_start_is_not_a_failure() {
    let port = free_port().await;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("rebind");
        let _server = serve_on(listener, |_| reply(200, "ok"));
    });
    let mut s = spec(format!("http://127.0.0.1:{port}/health"));
    s.unhealthy_threshold = 1;
    let (outcome, seen) = wait(&s).await;
    assert!(
        matches!(outcome, HealthOutcome::Healthy { .. }),
        "{outcome:?}"
    );
    let refused = seen
        .iter()
        .filter(|p| error_of(p) == "connection refused")
        .count();
    assert!(refused >= 10, "{seen:?}");
    assert!(seen.iter().rev().take(2).all(|p| p.ok));
}

#[tokio::test]
async fn watch_reports_failure_after_the_switch() {
    let server = serve(|i| {
        if i < 4 {
            reply(200, "ok")
        } else {
            reply(500, "oops")
        }
    })
    .await;
    let mut s = spec(server.url("/health"));
    s.unhealthy_threshold = 2;
    let mut seen = 0;
    let outcome = watch(&s, Duration::from_secs(5), &mut |_: &ProbeResult| seen += 1).await;
    match outcome {
        HealthOutcome::Unhealthy { reason, last } => {
            assert!(
                reason.starts_with("2 consecutive failed probes during the verify window"),
                "{reason}"
            );
            assert_eq!(last.len(), 5);
            assert!(!last[4].ok && !last[3].ok && last[2].ok);
        }
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    assert_eq!(seen, 6);
}

#[tokio::test]
async fn watch_passes_when_the_window_ends_healthy() {
    // A single failure below the threshold does not fail the window.
    let server = serve(|i| {
        if i == 2 {
            reply(500, "blip")
        } else {
            reply(200, "ok")
        }
    })
    .await;
    let s = spec(server.url("/health"));
    let started = Instant::now();
    let outcome = watch(&s, Duration::from_millis(400), &mut |_: &ProbeResult| {}).await;
    let took = started.elapsed();
    match outcome {
        HealthOutcome::Healthy { probes, elapsed_ms } => {
            assert!((7..=9).contains(&probes), "{probes}");
            assert!(elapsed_ms >= 400);
        }
        other => panic!("expected Healthy, got {other:?}"),
    }
    assert!(took < Duration::from_millis(600), "{took:?}");
}

#[test]
fn outcome_serializes_with_a_result_tag() {
    let json = serde_json::to_value(HealthOutcome::Healthy {
        probes: 2,
        elapsed_ms: 1500,
    })
    .expect("serialize");
    assert_eq!(
        json,
        serde_json::json!({"result": "healthy", "probes": 2, "elapsed_ms": 1500})
    );
    let json =
        serde_json::to_value(HealthOutcome::DeadlineExceeded { last: vec![] }).expect("serialize");
    assert_eq!(
        json,
        serde_json::json!({"result": "deadline_exceeded", "last": []})
    );

    // Optional spec fields may be left out of the JSON the CLI receives.
    let spec: HealthSpec = serde_json::from_value(serde_json::json!({
        "url": "http://app:8080/health", "interval_ms": 1000, "timeout_ms": 2000,
        "healthy_threshold": 2, "unhealthy_threshold": 3, "deadline_ms": 60000,
        "expect_json": ["/status", "ok"]
    }))
    .expect("deserialize");
    assert_eq!(spec.expect_json, Some(("/status".into(), "ok".into())));
    assert!(spec.expect_status.is_empty() && spec.headers.is_empty());
}
