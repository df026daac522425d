//! HTTP health checks: one probe, and the wait for `healthy_threshold` consecutive passes.
//!
//! These run inside the proxy container (`deployctl proxy health --spec <json>`), next to the app
//! containers on their Docker network, over plain HTTP/1.1 with a fresh connection per probe, so a
//! probe says something about the app and not about a pooled connection.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// At most this much of a response body is read; checks look only at this prefix.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Bytes of the body kept in [`ProbeResult::body_head`] for reports.
pub const BODY_HEAD_BYTES: usize = 200;
/// Probes kept in `last` of an outcome.
pub const LAST_PROBES: usize = 5;

/// What to probe and when the target counts as healthy.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct HealthSpec {
    /// `http://host:port/path?query`; only plain HTTP.
    pub url: String,
    /// Host header to send instead of the URL's authority.
    #[serde(default)]
    pub host_header: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time from the start of one probe to the start of the next.
    pub interval_ms: u64,
    /// Limit on one probe: connect, request and body read.
    pub timeout_ms: u64,
    /// Consecutive passes needed (0 counts as 1).
    pub healthy_threshold: u32,
    /// Consecutive failures, counted from the target's first HTTP answer, that make it
    /// unhealthy (0 counts as 1). Failures before any answer (a refused port) do not count.
    pub unhealthy_threshold: u32,
    /// Failures of probes started within this long of the start of the wait do not count.
    #[serde(default)]
    pub start_period_ms: u64,
    /// Limit on the whole wait; overshot by at most one `timeout_ms`.
    pub deadline_ms: u64,
    /// Passing status codes; empty means any 2xx.
    #[serde(default)]
    pub expect_status: Vec<u16>,
    /// A substring the body (its first 64 KiB) must contain.
    #[serde(default)]
    pub expect_body: Option<String>,
    /// (JSON pointer, expected value): strings compare by value, other JSON values by their
    /// compact JSON text (`true`, `3`, `{"a":1}`).
    #[serde(default)]
    pub expect_json: Option<(String, String)>,
}

/// One probe's outcome.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProbeResult {
    pub ok: bool,
    /// HTTP status, when a response head arrived.
    pub status: Option<u16>,
    pub latency_ms: f64,
    /// The first 200 bytes of the body, lossy UTF-8.
    pub body_head: String,
    /// Why the probe failed; `None` when `ok`.
    pub error: Option<String>,
    /// When the probe started, in ms since the start of the wait (0 from [`probe_once`]).
    pub at_ms: u64,
}

/// How a wait or a watch ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum HealthOutcome {
    Healthy {
        probes: u32,
        elapsed_ms: u64,
    },
    Unhealthy {
        reason: String,
        last: Vec<ProbeResult>,
    },
    /// `last` holds at most the last 5 probes.
    DeadlineExceeded {
        last: Vec<ProbeResult>,
    },
}

/// Sends the probes. Holds no connections: each probe opens its own.
#[derive(Clone, Debug)]
pub struct Client {
    user_agent: HeaderValue,
}

impl Client {
    pub fn new() -> Client {
        Client {
            user_agent: HeaderValue::from_static(concat!(
                "deployctl-health/",
                env!("CARGO_PKG_VERSION")
            )),
        }
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

/// A failed probe's detail: status and body when a response arrived.
struct Failure {
    status: Option<u16>,
    body_head: String,
    error: String,
}

impl Failure {
    fn bare(error: impl Into<String>) -> Failure {
        Failure {
            status: None,
            body_head: String::new(),
            error: error.into(),
        }
    }
}

/// Probes `spec.url` once, bounded by `spec.timeout_ms`. Never panics on what the target sends.
pub async fn probe_once(spec: &HealthSpec, client: &Client) -> ProbeResult {
    let started = Instant::now();
    let timeout = Duration::from_millis(spec.timeout_ms);
    let outcome = match tokio::time::timeout(timeout, exchange(spec, client)).await {
        Ok(Ok((status, body))) => check(spec, status, &body),
        Ok(Err(failure)) => Err(failure),
        Err(_) => Err(Failure::bare(format!(
            "timed out after {}",
            humantime::format_duration(timeout)
        ))),
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match outcome {
        Ok((status, body_head)) => ProbeResult {
            ok: true,
            status: Some(status),
            latency_ms,
            body_head,
            error: None,
            at_ms: 0,
        },
        Err(f) => ProbeResult {
            ok: false,
            status: f.status,
            latency_ms,
            body_head: f.body_head,
            error: Some(f.error),
            at_ms: 0,
        },
    }
}

/// Connects, sends the GET and reads at most [`MAX_BODY_BYTES`] of the body.
async fn exchange(spec: &HealthSpec, client: &Client) -> Result<(u16, Vec<u8>), Failure> {
    let uri: Uri = spec
        .url
        .parse()
        .map_err(|e| Failure::bare(format!("invalid URL {:?}: {e}", spec.url)))?;
    if uri.scheme_str() != Some("http") {
        return Err(Failure::bare(format!(
            "invalid URL {:?}: only http:// is supported",
            spec.url
        )));
    }
    let (Some(authority), Some(host)) = (uri.authority(), uri.host()) else {
        return Err(Failure::bare(format!(
            "invalid URL {:?}: no host",
            spec.url
        )));
    };
    let port = uri.port_u16().unwrap_or(80);
    // IPv6 literals come bracketed in URLs, but not in socket addresses.
    let connect_host = host.trim_start_matches('[').trim_end_matches(']');
    let path = uri.path_and_query().map_or("/", |p| p.as_str());

    let host_value = spec.host_header.as_deref().unwrap_or(authority.as_str());
    let mut request = Request::get(path)
        .header(HOST, header_value("Host", host_value)?)
        .header(USER_AGENT, client.user_agent.clone())
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::bare(format!("cannot build the request: {e}")))?;
    for (name, value) in &spec.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| Failure::bare(format!("invalid header name {name:?}")))?;
        let value = header_value(name.as_str(), value)?;
        request.headers_mut().insert(name, value);
    }

    let stream = TcpStream::connect((connect_host, port))
        .await
        .map_err(|e| Failure::bare(connect_error(&e, host, port)))?;
    // Health responses are small: don't let Nagle hold the request back.
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Failure::bare(format!("HTTP handshake failed: {e}")))?;
    // The connection task is aborted when this probe ends, however it ends (a timeout drops
    // this future), so no socket outlives its probe.
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| Failure::bare(request_error(&e)))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while bytes.len() < MAX_BODY_BYTES {
            match body.frame().await {
                None => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        let room = MAX_BODY_BYTES - bytes.len();
                        bytes.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                Some(Err(e)) => {
                    return Err(Failure {
                        status: Some(status),
                        body_head: body_head(&bytes),
                        error: format!("reading the body failed: {}", request_error(&e)),
                    });
                }
            }
        }
        Ok((status, bytes))
    }
    .await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue, Failure> {
    HeaderValue::from_str(value)
        .map_err(|_| Failure::bare(format!("invalid value for header {name}")))
}

fn connect_error(e: &std::io::Error, host: &str, port: u16) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::ConnectionReset => "connection reset".into(),
        ErrorKind::HostUnreachable => format!("host {host} unreachable"),
        ErrorKind::NetworkUnreachable => format!("network unreachable for {host}"),
        _ => format!("cannot connect to {host}:{port}: {e}"),
    }
}

/// hyper's errors name the HTTP failure; the io error underneath says why.
fn request_error(e: &hyper::Error) -> String {
    if e.is_incomplete_message() {
        return "connection closed before a complete response".into();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

fn body_head(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(BODY_HEAD_BYTES)];
    String::from_utf8_lossy(head).into_owned()
}

/// Applies the status, body and JSON expectations; Ok carries (status, body_head).
fn check(spec: &HealthSpec, status: u16, body: &[u8]) -> Result<(u16, String), Failure> {
    let head = body_head(body);
    let fail = |error: String| Failure {
        status: Some(status),
        body_head: head.clone(),
        error,
    };
    let status_ok = if spec.expect_status.is_empty() {
        (200..300).contains(&status)
    } else {
        spec.expect_status.contains(&status)
    };
    if !status_ok {
        return Err(fail(format!(
            "expected status {}, got {status}",
            expected_statuses(&spec.expect_status)
        )));
    }
    if let Some(needle) = &spec.expect_body
        && !String::from_utf8_lossy(body).contains(needle.as_str())
    {
        return Err(fail(format!("body does not contain {needle:?}")));
    }
    if let Some((pointer, expected)) = &spec.expect_json {
        // Accept `status` as shorthand for the RFC 6901 pointer `/status`.
        let pointer = if pointer.is_empty() || pointer.starts_with('/') {
            pointer.clone()
        } else {
            format!("/{pointer}")
        };
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
            fail(format!(
                "body is not JSON ({e}), expected {expected:?} at {pointer}"
            ))
        })?;
        match value.pointer(&pointer) {
            None => {
                return Err(fail(format!(
                    "JSON at {pointer} is missing, expected {expected:?}"
                )));
            }
            Some(found) => {
                let matches = match found {
                    serde_json::Value::String(s) => s == expected,
                    other => serde_json::to_string(other).is_ok_and(|text| text == *expected),
                };
                if !matches {
                    return Err(fail(format!(
                        "JSON at {pointer} is {found}, expected {expected:?}"
                    )));
                }
            }
        }
    }
    Ok((status, head))
}

fn expected_statuses(list: &[u16]) -> String {
    match list {
        [] => "2xx".into(),
        [one] => one.to_string(),
        many => {
            let texts: Vec<String> = many.iter().map(u16::to_string).collect();
            format!("one of {}", texts.join(", "))
        }
    }
}

/// The last few probes, oldest first.
struct Recent(VecDeque<ProbeResult>);

impl Recent {
    fn new() -> Recent {
        Recent(VecDeque::with_capacity(LAST_PROBES))
    }
    fn push(&mut self, p: ProbeResult) {
        if self.0.len() == LAST_PROBES {
            self.0.pop_front();
        }
        self.0.push_back(p);
    }
    fn take(self) -> Vec<ProbeResult> {
        self.0.into()
    }
}

/// `from + d`, with `d` bounded so no spec (it is JSON from outside) can overflow the instant.
fn after(from: Instant, d: Duration) -> Instant {
    from.checked_add(d.min(crate::config::Duration::MAX))
        .unwrap_or(from)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unhealthy_reason(failures: u32, after: &str, last: Option<&ProbeResult>) -> String {
    let plural = if failures == 1 { "" } else { "s" };
    let detail = last
        .and_then(|p| p.error.as_deref())
        .unwrap_or("unknown error");
    format!("{failures} consecutive failed probe{plural} {after}; last: {detail}")
}

/// Probes every `interval_ms` until `healthy_threshold` consecutive passes (Healthy), until
/// `unhealthy_threshold` consecutive counted failures (Unhealthy), or until `deadline_ms`
/// (DeadlineExceeded). A failure counts once the target has answered HTTP at all (a refused port
/// while the app starts only uses up the deadline) and when its probe started after
/// `start_period_ms`. At least one probe is always made.
pub async fn wait_healthy(
    spec: &HealthSpec,
    on_probe: &mut (dyn FnMut(&ProbeResult) + Send),
) -> HealthOutcome {
    let client = Client::new();
    let start = Instant::now();
    let deadline = after(start, Duration::from_millis(spec.deadline_ms));
    let interval = Duration::from_millis(spec.interval_ms);
    let healthy_threshold = spec.healthy_threshold.max(1);
    let unhealthy_threshold = spec.unhealthy_threshold.max(1);

    let mut recent = Recent::new();
    let mut probes: u32 = 0;
    let mut passes: u32 = 0;
    let mut failures: u32 = 0;
    let mut ever_passed = false;
    let mut answered = false;
    loop {
        let probe_start = Instant::now();
        let mut result = probe_once(spec, &client).await;
        result.at_ms = millis(probe_start - start);
        probes = probes.saturating_add(1);
        on_probe(&result);
        answered |= result.status.is_some();
        if result.ok {
            passes += 1;
            failures = 0;
            ever_passed = true;
        } else {
            passes = 0;
            if answered && result.at_ms >= spec.start_period_ms {
                failures += 1;
            }
        }
        recent.push(result);
        if passes >= healthy_threshold {
            return HealthOutcome::Healthy {
                probes,
                elapsed_ms: millis(start.elapsed()),
            };
        }
        if failures >= unhealthy_threshold {
            let after = if ever_passed {
                "after the target had passed"
            } else {
                "since its first answer"
            };
            let reason = unhealthy_reason(failures, after, recent.0.back());
            return HealthOutcome::Unhealthy {
                reason,
                last: recent.take(),
            };
        }
        // A probe slower than the interval delays the next one; it never overlaps.
        let next = after(probe_start, interval).max(Instant::now());
        if next >= deadline {
            // No probe can start before the deadline: the outcome is known, but report it when
            // the deadline has really passed, as the configuration promised the target.
            tokio::time::sleep_until(deadline).await;
            return HealthOutcome::DeadlineExceeded {
                last: recent.take(),
            };
        }
        tokio::time::sleep_until(next).await;
    }
}

/// Post-switch verification: probes every `interval_ms` for `window`. Unhealthy at
/// `unhealthy_threshold` consecutive failures; Healthy once the window has passed.
pub async fn watch(
    spec: &HealthSpec,
    window: Duration,
    on_probe: &mut (dyn FnMut(&ProbeResult) + Send),
) -> HealthOutcome {
    let client = Client::new();
    let start = Instant::now();
    let end = after(start, window);
    let interval = Duration::from_millis(spec.interval_ms);
    let unhealthy_threshold = spec.unhealthy_threshold.max(1);

    let mut recent = Recent::new();
    let mut probes: u32 = 0;
    let mut failures: u32 = 0;
    loop {
        let probe_start = Instant::now();
        let mut result = probe_once(spec, &client).await;
        result.at_ms = millis(probe_start - start);
        probes = probes.saturating_add(1);
        on_probe(&result);
        if result.ok {
            failures = 0;
        } else {
            failures += 1;
        }
        recent.push(result);
        if failures >= unhealthy_threshold {
            let reason = unhealthy_reason(failures, "during the verify window", recent.0.back());
            return HealthOutcome::Unhealthy {
                reason,
                last: recent.take(),
            };
        }
        // A probe slower than the interval delays the next one; it never overlaps.
        let next = after(probe_start, interval).max(Instant::now());
        if next >= end {
            tokio::time::sleep_until(end).await;
            return HealthOutcome::Healthy {
                probes,
                elapsed_ms: millis(start.elapsed()),
            };
        }
        tokio::time::sleep_until(next).await;
    }
}
