//! One health probe: a GET with the spec's Host, headers and timeout, then the status, body
//! and JSON expectations. Never panics on what the target sends.

use std::fmt::Write as _;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{BODY_HEAD_BYTES, Client, HealthSpec, MAX_BODY_BYTES, ProbeResult};

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
