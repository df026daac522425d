//! One probe: the request it sends, its expectations, its bounds, and what it reports.

use std::time::{Duration, Instant};

use deployctl::health::{Client, HealthOutcome, HealthSpec, probe_once};

use crate::{Reply, error_of, free_port, reply, serve, spec, wait};

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
