//! Notifications against real HTTP servers on loopback (the stub of tests/support/stub.rs).

use std::sync::Mutex;
use std::time::Duration as StdDuration;

use deployctl::config::{Duration, Notify, NotifyEvent, NotifyKind};
use deployctl::notify::{Delivery, Notification, send_all};
use deployctl::proxy::protocol::Outcome;
use deployctl::report::{Event, Reporter};
use support::{Reply, Stub};

mod support;

const TOKEN: &str = "T0K3N-secret";
const TIMEOUT: StdDuration = StdDuration::from_millis(300);

#[derive(Default)]
struct Collect(Mutex<Vec<Event>>);

impl Reporter for Collect {
    fn event(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

impl Collect {
    fn warnings(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Warning { message } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }
    fn all_json(&self) -> String {
        serde_json::to_string(&*self.0.lock().unwrap()).unwrap()
    }
}

fn target(kind: NotifyKind, url: String, on: &[NotifyEvent]) -> Notify {
    Notify {
        kind,
        url: Some(url),
        smtp_url: None,
        from: None,
        to: Vec::new(),
        username_env: None,
        password_env: None,
        on: on.to_vec(),
        timeout: Duration(TIMEOUT),
    }
}

const ALL: &[NotifyEvent] = &[
    NotifyEvent::Success,
    NotifyEvent::Failure,
    NotifyEvent::Rollback,
];

fn success() -> Notification {
    Notification {
        event: NotifyEvent::Success,
        app: "demo".into(),
        env: "production".into(),
        version: "3f2a9c1".into(),
        previous: Some("1a2b3c4".into()),
        outcome: Outcome::Live,
        duration_ms: 42_000,
        url: "http://127.0.0.1:8080".into(),
        reason: None,
    }
}

/// No text a user or a log could see contains the token.
fn assert_no_token(deliveries: &[Delivery], reporter: &Collect) {
    for d in deliveries {
        let error = d.error.clone().unwrap_or_default();
        assert!(!error.contains(TOKEN), "token in delivery error: {error}");
        let json = serde_json::to_string(d).unwrap();
        assert!(!json.contains(TOKEN), "token in delivery: {json}");
    }
    let events = reporter.all_json();
    assert!(!events.contains(TOKEN), "token in events: {events}");
}

#[tokio::test]
async fn each_kind_gets_its_payload_as_json() {
    let server = Stub::start(|_, _| Reply::new(200, "ok"));
    let targets = [
        target(NotifyKind::Webhook, server.url("/webhook"), ALL),
        target(NotifyKind::Slack, server.url("/slack"), ALL),
        target(NotifyKind::Discord, server.url("/discord"), ALL),
    ];
    let reporter = Collect::default();
    let deliveries = send_all(&targets, &success(), &reporter).await;

    let kinds: Vec<_> = deliveries.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        [NotifyKind::Webhook, NotifyKind::Slack, NotifyKind::Discord]
    );
    for d in &deliveries {
        assert_eq!(
            (d.ok, d.attempts, d.error.as_deref()),
            (true, 1, None),
            "{d:?}"
        );
    }
    assert!(reporter.warnings().is_empty(), "{:?}", reporter.warnings());

    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let by_path = |p: &str| requests.iter().find(|r| r.path == p).cloned().unwrap();
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(r.header("content-type").unwrap_or(""), "application/json");
    }
    assert_eq!(
        by_path("/webhook").json(),
        serde_json::json!({
            "event": "success",
            "app": "demo",
            "env": "production",
            "version": "3f2a9c1",
            "previous": "1a2b3c4",
            "outcome": "live",
            "duration_ms": 42000,
            "url": "http://127.0.0.1:8080",
            "reason": null,
        })
    );
    let line = "deployctl: demo 3f2a9c1 is live on production (was 1a2b3c4) in 42.0s — http://127.0.0.1:8080";
    assert_eq!(
        by_path("/slack").json(),
        serde_json::json!({ "text": line })
    );
    let discord = by_path("/discord").json();
    assert_eq!(discord["content"], line);
    assert_eq!(
        discord["allowed_mentions"],
        serde_json::json!({ "parse": [] })
    );
}

#[tokio::test]
async fn failure_payload_carries_the_reason() {
    let server = Stub::start(|_, _| Reply::new(204, ""));
    let n = Notification {
        event: NotifyEvent::Failure,
        outcome: Outcome::RolledBack,
        reason: Some("verify: error rate 0.25 > 0.01; rolled back to 1a2b3c4".into()),
        ..success()
    };
    let targets = [
        target(
            NotifyKind::Webhook,
            server.url("/webhook"),
            &[NotifyEvent::Failure],
        ),
        target(
            NotifyKind::Slack,
            server.url("/slack"),
            &[NotifyEvent::Failure],
        ),
    ];
    let deliveries = send_all(&targets, &n, &Collect::default()).await;
    assert!(deliveries.iter().all(|d| d.ok), "{deliveries:?}");
    let requests = server.requests();
    let webhook = &requests
        .iter()
        .find(|r| r.path == "/webhook")
        .unwrap()
        .json();
    assert_eq!(webhook["event"], "failure");
    assert_eq!(webhook["outcome"], "rolled_back");
    // The webhook gets the reason as is; Slack gets it escaped.
    assert_eq!(
        webhook["reason"],
        "verify: error rate 0.25 > 0.01; rolled back to 1a2b3c4"
    );
    let slack = requests.iter().find(|r| r.path == "/slack").unwrap().json()["text"].clone();
    assert_eq!(
        slack,
        "deployctl: demo 3f2a9c1 failed on production after 42.0s, traffic is back on 1a2b3c4: \
         verify: error rate 0.25 &gt; 0.01; rolled back to 1a2b3c4"
    );
}

#[tokio::test]
async fn only_targets_subscribed_to_the_event_are_notified() {
    let server = Stub::start(|_, _| Reply::new(200, ""));
    let targets = [
        target(
            NotifyKind::Slack,
            server.url("/failures-only"),
            &[NotifyEvent::Failure],
        ),
        target(
            NotifyKind::Webhook,
            server.url("/rollbacks"),
            &[NotifyEvent::Success, NotifyEvent::Rollback],
        ),
        target(NotifyKind::Discord, server.url("/nothing"), &[]),
    ];
    let n = Notification {
        event: NotifyEvent::Rollback,
        ..success()
    };
    let deliveries = send_all(&targets, &n, &Collect::default()).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].kind, NotifyKind::Webhook);
    assert!(deliveries[0].ok);
    let paths: Vec<_> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/rollbacks"]);

    let none = send_all(&targets[..1], &success(), &Collect::default()).await;
    assert!(none.is_empty());
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn retries_5xx_and_429_until_success() {
    let server = Stub::start(|n, _| match n {
        0 | 1 => Reply::new(500, "boom"),
        _ => Reply::new(200, "ok"),
    });
    let reporter = Collect::default();
    let deliveries = send_all(
        &[target(NotifyKind::Slack, server.url("/s"), ALL)],
        &success(),
        &reporter,
    )
    .await;
    assert_eq!(
        deliveries,
        [Delivery {
            kind: NotifyKind::Slack,
            ok: true,
            attempts: 3,
            error: None
        }]
    );
    assert_eq!(server.requests().len(), 3);
    assert!(reporter.warnings().is_empty(), "{:?}", reporter.warnings());

    let server = Stub::start(|n, _| Reply::new(if n == 0 { 429 } else { 200 }, ""));
    let deliveries = send_all(
        &[target(NotifyKind::Discord, server.url("/d"), ALL)],
        &success(),
        &reporter,
    )
    .await;
    assert_eq!(
        (deliveries[0].ok, deliveries[0].attempts),
        (true, 2),
        "{deliveries:?}"
    );
}

#[tokio::test]
async fn persistent_5xx_fails_after_3_attempts_without_leaking_the_url() {
    // The server even echoes the path back, as some do in error pages.
    let server = Stub::start(|_, r| Reply::new(500, format!("internal error handling {}", r.path)));
    let url = server.url(&format!("/hooks/{TOKEN}"));
    let reporter = Collect::default();
    let deliveries = send_all(
        &[target(NotifyKind::Slack, url, ALL)],
        &success(),
        &reporter,
    )
    .await;

    assert_eq!(deliveries.len(), 1);
    let d = &deliveries[0];
    assert!(!d.ok);
    assert_eq!(d.attempts, 3);
    assert_eq!(
        d.error.as_deref(),
        Some("HTTP 500: internal error handling ***")
    );
    assert_eq!(server.requests().len(), 3);
    assert_eq!(
        reporter.warnings(),
        ["slack notification failed after 3 attempts: HTTP 500: internal error handling ***"]
    );
    assert_no_token(&deliveries, &reporter);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let server = Stub::start(|_, _| Reply::new(404, "no_service"));
    let reporter = Collect::default();
    let url = server.url(&format!("/hooks/{TOKEN}"));
    let deliveries = send_all(
        &[target(NotifyKind::Webhook, url, ALL)],
        &success(),
        &reporter,
    )
    .await;
    assert_eq!(
        deliveries,
        [Delivery {
            kind: NotifyKind::Webhook,
            ok: false,
            attempts: 1,
            error: Some("HTTP 404: no_service".into())
        }]
    );
    assert_eq!(server.requests().len(), 1);
    assert_eq!(
        reporter.warnings(),
        ["webhook notification failed after 1 attempt: HTTP 404: no_service"]
    );
    assert_no_token(&deliveries, &reporter);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = Stub::start(|_, _| Reply::new(302, ""));
    let deliveries = send_all(
        &[target(NotifyKind::Webhook, server.url("/r"), ALL)],
        &success(),
        &Collect::default(),
    )
    .await;
    assert_eq!(deliveries[0].attempts, 1);
    assert_eq!(
        deliveries[0].error.as_deref(),
        Some("HTTP 302 (redirects are not followed)")
    );
}

#[tokio::test]
async fn a_hanging_server_times_out_per_attempt() {
    let hanging = Stub::start(|_, _| Reply::hang());
    let reporter = Collect::default();
    let url = hanging.url(&format!("/hooks/{TOKEN}"));
    let deliveries = send_all(
        &[target(NotifyKind::Discord, url, ALL)],
        &success(),
        &reporter,
    )
    .await;

    // Each attempt ended at its own timeout (the server never answers nor closes: without the
    // timeout the first attempt would still be waiting), and each was a new request.
    let d = &deliveries[0];
    assert!(!d.ok);
    assert_eq!(d.attempts, 3);
    assert_eq!(d.error.as_deref(), Some("timed out after 300ms"));
    assert_eq!(hanging.hits(), 3);
    assert_eq!(
        reporter.warnings(),
        ["discord notification failed after 3 attempts: timed out after 300ms"]
    );
    assert_no_token(&deliveries, &reporter);
}

#[tokio::test]
async fn targets_are_notified_concurrently() {
    let (a, b) = (
        Stub::start(|_, _| Reply::hang()),
        Stub::start(|_, _| Reply::hang()),
    );
    // What the hanging targets had received when the third target's request arrived: in
    // sequence, each would have had all 3 of its attempts by then.
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let server = {
        let (a, b, seen) = (a.log(), b.log(), seen.clone());
        Stub::start(move |_, _| {
            seen.lock().unwrap().push((a.hits(), b.hits()));
            Reply::new(200, "")
        })
    };
    let targets = [
        target(NotifyKind::Webhook, a.url("/x"), ALL),
        target(NotifyKind::Slack, b.url("/y"), ALL),
        target(NotifyKind::Discord, server.url("/z"), ALL),
    ];
    let deliveries = send_all(&targets, &success(), &Collect::default()).await;
    let summary: Vec<_> = deliveries.iter().map(|d| (d.kind, d.ok)).collect();
    assert_eq!(
        summary,
        [
            (NotifyKind::Webhook, false),
            (NotifyKind::Slack, false),
            (NotifyKind::Discord, true)
        ]
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (a_hits, b_hits) = seen[0];
    assert!(
        a_hits < 3 && b_hits < 3,
        "the third target waited for the others: {seen:?}"
    );
    assert_eq!((a.hits(), b.hits()), (3, 3));
}

#[tokio::test]
async fn connection_refused_fails_quickly() {
    let port = support::free_port();
    let reporter = Collect::default();
    let url = format!("http://127.0.0.1:{port}/hooks/{TOKEN}");
    let deliveries = send_all(
        &[target(NotifyKind::Webhook, url, ALL)],
        &success(),
        &reporter,
    )
    .await;
    // Refused, not timed out: no attempt waited for its timeout.
    let d = &deliveries[0];
    assert!(!d.ok);
    assert_eq!(d.error.as_deref(), Some("connection refused"));
    assert_eq!(d.attempts, 3);
    assert_eq!(
        reporter.warnings(),
        ["webhook notification failed after 3 attempts: connection refused"]
    );
    assert_no_token(&deliveries, &reporter);
}

#[tokio::test]
async fn invalid_urls_fail_without_being_quoted() {
    let reporter = Collect::default();
    let targets = [
        target(
            NotifyKind::Slack,
            format!("http://exa mple.com/{TOKEN}"),
            ALL,
        ),
        target(
            NotifyKind::Webhook,
            format!("ftp://example.com/{TOKEN}"),
            ALL,
        ),
        target(NotifyKind::Discord, TOKEN.to_string(), ALL),
    ];
    let deliveries = send_all(&targets, &success(), &reporter).await;
    assert!(
        deliveries.iter().all(|d| !d.ok && d.attempts == 0),
        "{deliveries:?}"
    );
    assert_eq!(
        deliveries[1].error.as_deref(),
        Some("the URL must start with http:// or https://")
    );
    assert!(
        deliveries[0]
            .error
            .as_deref()
            .unwrap_or("")
            .starts_with("the URL is not valid: ")
    );
    assert_eq!(reporter.warnings().len(), 3);
    assert_no_token(&deliveries, &reporter);
}

#[tokio::test]
async fn tls_failures_are_reported_without_the_url() {
    // An https URL to a plain HTTP server: the TLS handshake fails (through rustls with ring).
    let server = Stub::start(|_, _| Reply::new(200, ""));
    let reporter = Collect::default();
    let url = format!("https://{}/hooks/{TOKEN}", server.addr());
    let deliveries = send_all(
        &[target(NotifyKind::Slack, url, ALL)],
        &success(),
        &reporter,
    )
    .await;
    let d = &deliveries[0];
    assert!(!d.ok);
    assert!(
        d.error
            .as_deref()
            .unwrap_or("")
            .starts_with("could not connect: "),
        "{d:?}"
    );
    assert!(server.requests().is_empty());
    assert_no_token(&deliveries, &reporter);
}
