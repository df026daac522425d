//! Notifications against real HTTP servers on loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant};

use deployctl::config::{Duration, Notify, NotifyEvent, NotifyKind};
use deployctl::notify::{Delivery, Notification, send_all};
use deployctl::proxy::protocol::Outcome;
use deployctl::report::{Event, Reporter};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

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

#[derive(Debug, Clone)]
struct Captured {
    method: String,
    path: String,
    content_type: String,
    body: serde_json::Value,
}

/// An HTTP server recording every request; `respond(n, path)` gives the status and body of the
/// n-th request (0-based).
struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Captured>>>,
}

impl Server {
    async fn start(
        respond: impl Fn(usize, &str) -> (u16, String) + Send + Sync + 'static,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Captured>>> = Arc::default();
        let respond = Arc::new(respond);
        let reqs = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (reqs, respond) = (reqs.clone(), respond.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (reqs, respond) = (reqs.clone(), respond.clone());
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let content_type = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let bytes = req.into_body().collect().await.unwrap().to_bytes();
                            let body =
                                serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
                            let n = {
                                let mut all = reqs.lock().unwrap();
                                all.push(Captured {
                                    method,
                                    path: path.clone(),
                                    content_type,
                                    body,
                                });
                                all.len() - 1
                            };
                            let (status, text) = respond(n, &path);
                            let response = Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::from(text)))
                                .unwrap();
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server { addr, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Captured> {
        self.requests.lock().unwrap().clone()
    }
}

/// Accepts connections and never answers; counts them.
async fn hanging_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                // Read whatever comes, answer nothing, keep the socket open until the client goes.
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, count)
}

fn target(kind: NotifyKind, url: String, on: &[NotifyEvent]) -> Notify {
    Notify {
        kind,
        url,
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
    let server = Server::start(|_, _| (200, "ok".into())).await;
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
        assert_eq!(r.content_type, "application/json");
    }
    assert_eq!(
        by_path("/webhook").body,
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
    assert_eq!(by_path("/slack").body, serde_json::json!({ "text": line }));
    let discord = by_path("/discord").body;
    assert_eq!(discord["content"], line);
    assert_eq!(
        discord["allowed_mentions"],
        serde_json::json!({ "parse": [] })
    );
}

#[tokio::test]
async fn failure_payload_carries_the_reason() {
    let server = Server::start(|_, _| (204, String::new())).await;
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
    let webhook = &requests.iter().find(|r| r.path == "/webhook").unwrap().body;
    assert_eq!(webhook["event"], "failure");
    assert_eq!(webhook["outcome"], "rolled_back");
    // The webhook gets the reason as is; Slack gets it escaped.
    assert_eq!(
        webhook["reason"],
        "verify: error rate 0.25 > 0.01; rolled back to 1a2b3c4"
    );
    let slack = requests.iter().find(|r| r.path == "/slack").unwrap().body["text"].clone();
    assert_eq!(
        slack,
        "deployctl: demo 3f2a9c1 failed on production after 42.0s, traffic is back on 1a2b3c4: \
         verify: error rate 0.25 &gt; 0.01; rolled back to 1a2b3c4"
    );
}

#[tokio::test]
async fn only_targets_subscribed_to_the_event_are_notified() {
    let server = Server::start(|_, _| (200, String::new())).await;
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
    let server = Server::start(|n, _| match n {
        0 | 1 => (500, "boom".into()),
        _ => (200, "ok".into()),
    })
    .await;
    let reporter = Collect::default();
    let started = Instant::now();
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
    // Backoff of 200 ms, then 400 ms.
    assert!(
        started.elapsed() >= StdDuration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert!(reporter.warnings().is_empty(), "{:?}", reporter.warnings());

    let server = Server::start(|n, _| {
        if n == 0 {
            (429, String::new())
        } else {
            (200, String::new())
        }
    })
    .await;
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
    let server = Server::start(|_, path| (500, format!("internal error handling {path}"))).await;
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
    let server = Server::start(|_, _| (404, "no_service".into())).await;
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
    let server = Server::start(|_, _| (302, String::new())).await;
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
    let (addr, connections) = hanging_server().await;
    let reporter = Collect::default();
    let url = format!("http://{addr}/hooks/{TOKEN}");
    let started = Instant::now();
    let deliveries = send_all(
        &[target(NotifyKind::Discord, url, ALL)],
        &success(),
        &reporter,
    )
    .await;
    let elapsed = started.elapsed();

    let d = &deliveries[0];
    assert!(!d.ok);
    assert_eq!(d.attempts, 3);
    assert_eq!(d.error.as_deref(), Some("timed out after 300ms"));
    assert_eq!(connections.load(Ordering::SeqCst), 3);
    // 3 attempts of 300 ms plus 600 ms of backoff, and a little slack.
    assert!(elapsed >= StdDuration::from_millis(1500), "{elapsed:?}");
    assert!(elapsed < StdDuration::from_millis(2300), "{elapsed:?}");
    assert_eq!(
        reporter.warnings(),
        ["discord notification failed after 3 attempts: timed out after 300ms"]
    );
    assert_no_token(&deliveries, &reporter);
}

#[tokio::test]
async fn targets_are_notified_concurrently() {
    let (a, _) = hanging_server().await;
    let (b, _) = hanging_server().await;
    let server = Server::start(|_, _| (200, String::new())).await;
    let targets = [
        target(NotifyKind::Webhook, format!("http://{a}/x"), ALL),
        target(NotifyKind::Slack, format!("http://{b}/y"), ALL),
        target(NotifyKind::Discord, server.url("/z"), ALL),
    ];
    let started = Instant::now();
    let deliveries = send_all(&targets, &success(), &Collect::default()).await;
    let elapsed = started.elapsed();
    let summary: Vec<_> = deliveries.iter().map(|d| (d.kind, d.ok)).collect();
    assert_eq!(
        summary,
        [
            (NotifyKind::Webhook, false),
            (NotifyKind::Slack, false),
            (NotifyKind::Discord, true)
        ]
    );
    // One hanging target takes 1.5 s; two in sequence would take 3 s.
    assert!(elapsed < StdDuration::from_millis(2300), "{elapsed:?}");
}

#[tokio::test]
async fn connection_refused_fails_quickly() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let reporter = Collect::default();
    let url = format!("http://127.0.0.1:{port}/hooks/{TOKEN}");
    let started = Instant::now();
    let deliveries = send_all(
        &[target(NotifyKind::Webhook, url, ALL)],
        &success(),
        &reporter,
    )
    .await;
    let d = &deliveries[0];
    assert!(!d.ok);
    assert_eq!(d.error.as_deref(), Some("connection refused"));
    assert_eq!(d.attempts, 3);
    // Only the backoff: no attempt waits for its timeout.
    assert!(
        started.elapsed() < StdDuration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
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
    let server = Server::start(|_, _| (200, String::new())).await;
    let reporter = Collect::default();
    let url = format!("https://{}/hooks/{TOKEN}", server.addr);
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
