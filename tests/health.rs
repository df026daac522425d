//! Health checks against real HTTP servers on 127.0.0.1, in-process: the probe, the loop's two
//! ending rules, and the proxy's pre-switch check; and, on the real Docker Engine, that a deploy's
//! switch enforces the configured spec.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deployctl::health::{
    Client, Ending, HealthOutcome, HealthSpec, ProbeResult, probe_once, run, wait_healthy, watch,
};
use deployctl::proxy::protocol::{SwitchRequest, Target};
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
        // Every probe ended by its timeout (the server answers after 5 s), and none started
        // after the deadline: the wait overshoots it by at most one timeout.
        assert_eq!(error_of(p), "timed out after 200ms", "{p:?}");
        assert!(p.at_ms < 700, "{p:?}");
    }
    assert!(took >= Duration::from_millis(700), "{took:?}");
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
    assert!(seen.len() >= 6, "{}", seen.len());
    assert!(seen.iter().all(|p| p.at_ms < 500), "{seen:?}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
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
    // The app starts listening only after its port has refused ten probes.
    let (start_app, app_started) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if app_started.await.is_ok() {
            let listener = TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("rebind");
            let _server = serve_on(listener, |_, _| reply(200, "ok"));
        }
    });
    let mut s = spec(format!("http://127.0.0.1:{port}/health"));
    s.unhealthy_threshold = 1;
    s.deadline_ms = 30_000;
    let mut seen = Vec::new();
    let mut start_app = Some(start_app);
    let outcome = wait_healthy(&s, &mut |p: &ProbeResult| {
        seen.push(p.clone());
        if seen.len() == 10
            && let Some(start) = start_app.take()
        {
            let _ = start.send(());
        }
    })
    .await;
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
    let mut seen = Vec::new();
    let outcome = watch(&s, Duration::from_millis(400), &mut |p: &ProbeResult| {
        seen.push(p.clone())
    })
    .await;
    match outcome {
        HealthOutcome::Healthy { probes, elapsed_ms } => {
            assert_eq!(probes as usize, seen.len());
            // One probe per 50 ms interval at most, none after the window.
            assert!((3..=9).contains(&probes), "{probes}");
            assert!(seen.iter().all(|p| p.at_ms < 400), "{seen:?}");
            assert!(!seen[2].ok, "{seen:?}");
            assert!(elapsed_ms >= 400);
        }
        other => panic!("expected Healthy, got {other:?}"),
    }
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

// ------------------------------------------------------------ the loop's ending rules

/// Runs the loop with `ending`, returning the outcome and every probe seen.
async fn run_with(spec: &HealthSpec, ending: Ending) -> (HealthOutcome, Vec<ProbeResult>) {
    let mut seen = Vec::new();
    let outcome = run(spec, &ending, &mut |p: &ProbeResult| seen.push(p.clone())).await;
    (outcome, seen)
}

#[test]
fn endings_take_their_rules_from_the_spec() {
    let mut s = spec("http://app:8080/health".into());
    s.start_period_ms = 250;
    assert_eq!(
        Ending::until(&s),
        Ending::Until {
            passes: 2,
            unhealthy_threshold: 3,
            start_period: Duration::from_millis(250),
            deadline: Duration::from_millis(3000),
        }
    );
    assert_eq!(
        Ending::watch(&s, Duration::from_secs(9)),
        Ending::Watch {
            window: Duration::from_secs(9),
            unhealthy_threshold: 3,
        }
    );
}

#[tokio::test]
async fn until_ends_at_its_own_number_of_passes() {
    let server = serve(|_| reply(200, "ok")).await;
    // The spec's threshold is not the rule: the ending is.
    let mut s = spec(server.url("/health"));
    s.healthy_threshold = 9;
    let until = |passes| Ending::Until {
        passes,
        unhealthy_threshold: 1,
        start_period: Duration::ZERO,
        deadline: Duration::from_secs(30),
    };
    let (outcome, seen) = run_with(&s, until(4)).await;
    assert!(
        matches!(outcome, HealthOutcome::Healthy { probes: 4, .. }),
        "{outcome:?}"
    );
    assert_eq!(seen.len(), 4);
    // Zero passes counts as one.
    let (outcome, _) = run_with(&s, until(0)).await;
    assert!(
        matches!(outcome, HealthOutcome::Healthy { probes: 1, .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn until_does_not_count_refusals_but_watch_does() {
    let port = free_port().await;
    let s = spec(format!("http://127.0.0.1:{port}/health"));

    // The gate: a port that refuses has not answered yet, so only the deadline ends the wait.
    let (outcome, seen) = run_with(
        &s,
        Ending::Until {
            passes: 1,
            unhealthy_threshold: 1,
            start_period: Duration::ZERO,
            deadline: Duration::from_millis(300),
        },
    )
    .await;
    match outcome {
        HealthOutcome::DeadlineExceeded { last } => {
            assert!(last.iter().all(|p| error_of(p) == "connection refused"));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert!(seen.len() >= 2, "{seen:?}");

    // The verify window: the target was serving, so a refusal is a failure from the start.
    let (outcome, seen) = run_with(
        &s,
        Ending::Watch {
            window: Duration::from_secs(30),
            unhealthy_threshold: 2,
        },
    )
    .await;
    match outcome {
        HealthOutcome::Unhealthy { reason, last } => {
            assert_eq!(
                reason,
                "2 consecutive failed probes during the verify window; last: connection refused"
            );
            assert_eq!(last, seen);
        }
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn watch_ignores_the_start_period_and_the_passes() {
    // Three passes, three failures, then passes again.
    let server = serve(|i| {
        if (3..6).contains(&i) {
            reply(503, "down")
        } else {
            reply(200, "ok")
        }
    })
    .await;
    let mut s = spec(server.url("/health"));
    // Both would end or excuse an `Until`; neither applies to a watch.
    s.healthy_threshold = 1;
    s.start_period_ms = 60_000;
    let (outcome, seen) = run_with(&s, Ending::watch(&s, Duration::from_secs(30))).await;
    match outcome {
        HealthOutcome::Unhealthy { reason, .. } => assert_eq!(
            reason,
            "3 consecutive failed probes during the verify window; last: expected status 200, got 503"
        ),
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    assert_eq!(seen.len(), 6);

    // The same target, passing again, is healthy at its first pass under the gate's rule.
    let (outcome, seen) = run_with(&s, Ending::until(&s)).await;
    assert!(
        matches!(outcome, HealthOutcome::Healthy { probes: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn until_counts_failures_from_the_start_period_of_the_ending() {
    let server = serve(|_| reply(500, "broken")).await;
    let mut s = spec(server.url("/health"));
    s.start_period_ms = 0;
    let (outcome, seen) = run_with(
        &s,
        Ending::Until {
            passes: 1,
            unhealthy_threshold: 2,
            start_period: Duration::from_millis(200),
            deadline: Duration::from_secs(30),
        },
    )
    .await;
    assert!(
        matches!(outcome, HealthOutcome::Unhealthy { .. }),
        "{outcome:?}"
    );
    let counted = seen.iter().filter(|p| p.at_ms >= 200).count();
    assert_eq!(counted, 2, "{seen:?}");
    assert!(seen.len() > 2, "{seen:?}");
}

// ------------------------------------------------------------ the proxy's pre-switch check

fn target(addr: SocketAddr, version: &str) -> Target {
    Target {
        addr: addr.to_string(),
        container: format!("app-{version}"),
        version: version.into(),
        color: "green".into(),
    }
}

/// A proxy on loopback, serving until the returned sender is dropped.
async fn start_proxy(state_dir: &std::path::Path) -> tokio::sync::oneshot::Sender<()> {
    let server = deployctl::proxy::Server::bind(deployctl::proxy::RunOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        state_dir: state_dir.to_path_buf(),
        limits: Default::default(),
    })
    .await
    .expect("bind proxy");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    stop
}

#[tokio::test]
async fn the_proxy_switches_only_when_the_full_spec_holds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _proxy = start_proxy(dir.path()).await;
    let v1 = serve(|_| reply(200, r#"{"status":"ok"}"#)).await;
    let req = |target: Target, health: HealthSpec| SwitchRequest {
        target,
        health,
        drain_timeout_ms: 1_000,
    };
    deployctl::proxy::client_switch(
        dir.path(),
        req(target(v1.addr, "v1"), spec(v1.url("/health"))),
    )
    .await
    .expect("switch to v1");

    // v2 takes traffic on one port and answers health checks on another, where `/ready` says
    // ok only to a request with its token; without it the status is still 200.
    let traffic = serve(|_| reply(200, "v2")).await;
    let health = serve_heads(|_, head| {
        if !head.starts_with("get /ready ") {
            reply(404, "not here")
        } else if head.contains("\r\nx-health-token: s3cret\r\n") {
            reply(200, r#"{"status":"ok"}"#)
        } else {
            reply(200, r#"{"status":"locked"}"#)
        }
    })
    .await;
    let mut gate = spec(health.url("/ready"));
    gate.expect_json = Some(("/status".into(), "ok".into()));

    // Without the header the JSON rule fails: the switch is refused, v1 stays live.
    let err =
        deployctl::proxy::client_switch(dir.path(), req(target(traffic.addr, "v2"), gate.clone()))
            .await
            .expect_err("refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("refusing to switch to app-v2"), "{msg}");
    assert!(
        msg.contains(r#"JSON at /status is "locked", expected "ok""#),
        "{msg}"
    );
    let status = deployctl::proxy::client_status(dir.path())
        .await
        .expect("status");
    assert_eq!(status.live, Some(target(v1.addr, "v1")));

    // With the configured header the same check passes; the health port is the one probed
    // (the traffic port was never asked for /ready).
    gate.headers
        .insert("X-Health-Token".into(), "s3cret".into());
    deployctl::proxy::client_switch(dir.path(), req(target(traffic.addr, "v2"), gate))
        .await
        .expect("switch to v2");
    let status = deployctl::proxy::client_status(dir.path())
        .await
        .expect("status");
    assert_eq!(status.live, Some(target(traffic.addr, "v2")));
    assert_eq!(traffic.hits(), 0);
    assert_eq!(health.hits(), 2);
}

// ------------------------------------------------------------ real Docker

/// The gate passes (two `{"status":"ok"}` answers), then the app's `/health` turns to
/// 500 `{"status":"error"}`. 500 is an accepted status here, so only the JSON rule can tell: the
/// proxy's check right before the switch applies it and refuses, and v1 keeps serving.
#[test]
fn a_deploy_switch_is_refused_when_the_configured_json_rule_fails() {
    let app = support::App::with_overlay("dcthsw", "1s", "[health]\nexpect_status = [200, 500]\n");
    let run = app.deploy("v1", &[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(app.serving().as_deref(), Some("v1"));

    let run = app.deploy(
        "v2",
        &[("DEMO_MODE", "unhealthy_after"), ("DEMO_FAIL_AFTER", "2")],
    );
    assert_ne!(run.code, 0, "{run}");
    let text = format!("{}{}", run.stdout, run.stderr);
    assert!(text.contains("refusing to switch to"), "{run}");
    assert!(
        text.contains(r#"JSON at /status is "error", expected "ok""#),
        "{run}"
    );
    assert_eq!(app.serving().as_deref(), Some("v1"));
}
