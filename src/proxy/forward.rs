//! Forwarding one request to the live target: headers, streaming bodies, upgrades, errors.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use super::metrics::Answer;
use super::route::{Route, Router};
use super::stats::InFlight;
use super::upstream::Conn;

/// Body type of answers sent to clients.
pub type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

pub const NO_LIVE_BODY: &str = "deployctl proxy: no live release for this app\n";
pub const UPSTREAM_DOWN_BODY: &str =
    "deployctl proxy: the live release could not be reached (upstream connection failed)\n";

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What the proxy knows about the client connection a request came on.
pub struct Client {
    /// The peer's IP as a header value, formatted once per connection for `X-Forwarded-For`.
    peer_ip: HeaderValue,
}

impl Client {
    pub fn new(peer: SocketAddr) -> Self {
        // An IP address is always a valid header value.
        let peer_ip = HeaderValue::try_from(peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { peer_ip }
    }
}

/// Serves one client request.
pub async fn handle(
    router: Arc<Router>,
    req: Request<Incoming>,
    client: Arc<Client>,
) -> Result<Response<ProxyBody>, Infallible> {
    let Some((route, guard)) = router.acquire() else {
        tracing::debug!(uri = %req.uri(), "no live target");
        if let Some(metrics) = router.metrics() {
            metrics.unrouted();
        }
        return Ok(text(StatusCode::BAD_GATEWAY, NO_LIVE_BODY));
    };
    Ok(forward(route, guard, req, &client).await)
}

async fn forward(
    route: Arc<Route>,
    guard: InFlight,
    mut req: Request<Incoming>,
    client: &Client,
) -> Response<ProxyBody> {
    let started = Instant::now();
    let upgrade = upgrade_protocol(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    let uri = match upstream_uri(&parts.uri) {
        Ok(uri) => uri,
        Err(e) => {
            tracing::warn!(uri = %parts.uri, error = %e, "cannot build upstream URI");
            // The client's fault, not the target's: counted, but not as an error.
            guard.record(started.elapsed(), Answer::Status(400));
            return text(
                StatusCode::BAD_REQUEST,
                "deployctl proxy: bad request target\n",
            );
        }
    };
    prepare_request_headers(&mut parts, client, upgrade.as_ref());
    if !parts.headers.contains_key(header::HOST) {
        // An HTTP/1.0 client may send no Host; the app still gets one.
        if let Ok(host) = HeaderValue::from_str(route.upstream.authority.as_str()) {
            parts.headers.insert(header::HOST, host);
        }
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;

    let result = match route.upstream.checkout().await {
        Ok(mut conn) => {
            // A bodiless idempotent request can be sent again if a reused connection turns out
            // to have been closed by the app just as we reused it.
            let replay = (conn.reused && is_replayable(&parts, &body)).then(|| clone_head(&parts));
            let first = Request::from_parts(parts, body.boxed_unsync());
            match conn.send(first, &route.upstream.authority).await {
                Err(e) if replay.is_some() && e.is_stale_connection() => {
                    tracing::debug!(target = %route.target.addr, "retrying on a fresh connection");
                    match (route.upstream.connect().await, replay) {
                        (Ok(mut fresh), Some(head)) => {
                            let empty = Empty::<Bytes>::new().map_err(|never| match never {});
                            let retried = fresh
                                .send(
                                    Request::from_parts(head, empty.boxed_unsync()),
                                    &route.upstream.authority,
                                )
                                .await;
                            retried.map(|resp| (resp, fresh))
                        }
                        (Err(e), _) => Err(e),
                        (Ok(_), None) => Err(e),
                    }
                }
                other => other.map(|resp| (resp, conn)),
            }
        }
        Err(e) => Err(e),
    };

    let (mut resp, conn) = match result {
        Ok(answer) => answer,
        Err(e) => {
            guard.record(started.elapsed(), Answer::Failed);
            tracing::warn!(
                target = %route.target.addr,
                container = %route.target.container,
                error = %error_chain(&e),
                "upstream request failed"
            );
            return text(StatusCode::BAD_GATEWAY, UPSTREAM_DOWN_BODY);
        }
    };
    let status = resp.status();
    guard.record(started.elapsed(), Answer::Status(status.as_u16()));

    if status == StatusCode::SWITCHING_PROTOCOLS {
        // The upstream connection now belongs to the tunnel: `conn` is not returned to the pool.
        drop(conn);
        let Some(client_upgrade) = client_upgrade else {
            tracing::warn!(target = %route.target.addr, "upstream switched protocols without being asked");
            guard.stats().record_late_error();
            return text(StatusCode::BAD_GATEWAY, UPSTREAM_DOWN_BODY);
        };
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let (mut parts, _) = resp.into_parts();
        let protocol = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(protocol) = protocol {
            parts.headers.insert(header::UPGRADE, protocol);
        }
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        tokio::spawn(tunnel(client_upgrade, upstream_upgrade, guard));
        let empty = Empty::<Bytes>::new().map_err(|never| match never {});
        return Response::from_parts(parts, empty.boxed_unsync());
    }

    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = Tracked {
        inner: body,
        guard: Some(guard),
        done: false,
        conn: Some(conn),
        route,
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// Copies bytes both ways between an upgraded client and upstream connection. The request stays
/// in flight (the drain waits for it) until either side closes.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    guard: InFlight,
) {
    match tokio::try_join!(client, upstream) {
        Ok((client, upstream)) => {
            let mut client = TokioIo::new(client);
            let mut upstream = TokioIo::new(upstream);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        Err(e) => {
            guard.stats().record_late_error();
            tracing::warn!(error = %e, "protocol upgrade failed");
        }
    }
    drop(guard);
}

/// Response body that keeps the request in flight until the last byte is sent (or the client
/// goes away), so draining never cuts a streaming answer. Once the upstream body is complete,
/// its connection goes back to the pool.
struct Tracked {
    inner: Incoming,
    guard: Option<InFlight>,
    done: bool,
    conn: Option<Conn>,
    route: Arc<Route>,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                this.done = true;
                this.guard = None;
            }
            Poll::Ready(Some(Err(_))) => {
                // The connection is broken: never pool it.
                this.conn = None;
                if let Some(guard) = this.guard.take() {
                    guard.stats().record_late_error();
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // A body the client did not read to the end leaves unread bytes on the connection;
        // dropping it lets hyper close that connection instead.
        if let Some(conn) = self.conn.take()
            && (self.done || self.inner.is_end_stream())
        {
            self.route.upstream.checkin(conn);
        }
    }
}

/// The request target in origin form (`/path?query`), as HTTP/1.1 sends it to a server.
fn upstream_uri(original: &Uri) -> Result<Uri, hyper::http::Error> {
    match original.path_and_query() {
        // Reuses the parsed bytes: no copy, no re-validation.
        Some(pq) if pq.as_str().starts_with('/') => Ok(Uri::from(pq.clone())),
        Some(pq) => Uri::builder().path_and_query(pq.as_str()).build(),
        None => Ok(Uri::from_static("/")),
    }
}

/// The protocol named in `Upgrade` when the request asks for one (`Connection: upgrade`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

fn prepare_request_headers(parts: &mut Parts, client: &Client, upgrade: Option<&HeaderValue>) {
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(header::UPGRADE, protocol.clone());
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if !headers.contains_key(header::HOST)
        && let Some(host) = &original_host
    {
        headers.insert(header::HOST, host.clone());
    }

    // Append the client to any chain a proxy in front of us started. Without one (the common
    // case) the per-connection value is reused as is.
    let forwarded_for = match headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Vacant(slot) => {
            slot.insert(client.peer_ip.clone());
            None
        }
        header::Entry::Occupied(entry) => {
            let mut chain = Vec::new();
            for value in entry.iter() {
                if let Ok(value) = value.to_str() {
                    chain.extend_from_slice(value.as_bytes());
                    chain.extend_from_slice(b", ");
                }
            }
            chain.extend_from_slice(client.peer_ip.as_bytes());
            HeaderValue::from_bytes(&chain).ok()
        }
    };
    if let Some(value) = forwarded_for {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
    // A TLS terminator in front of us knows the real scheme and host; keep what it said.
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    }
    if !headers.contains_key(&X_FORWARDED_HOST)
        && let Some(host) = original_host
    {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| *name != header::HOST)
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

fn is_replayable(parts: &Parts, body: &Incoming) -> bool {
    matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) && body.is_end_stream()
        && !parts.headers.contains_key(header::UPGRADE)
}

fn clone_head(parts: &Parts) -> Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        out.push_str(": ");
        out.push_str(&err.to_string());
        source = err.source();
    }
    out
}

pub fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from_static(body.as_bytes())).map_err(|never| match never {});
    let mut resp = Response::new(body.boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::get("/x?y=1");
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut p = parts(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("host", "example.com"),
            ("accept", "*/*"),
        ]);
        let peer: SocketAddr = "192.0.2.7:5555".parse().expect("addr");
        prepare_request_headers(&mut p, &Client::new(peer), None);
        let names: Vec<_> = p.headers.keys().map(|k| k.as_str().to_owned()).collect();
        assert!(
            !names
                .iter()
                .any(|n| n == "connection" || n == "keep-alive" || n == "x-secret" || n == "te")
        );
        assert_eq!(p.headers["host"], "example.com");
        assert_eq!(p.headers["accept"], "*/*");
        assert_eq!(p.headers["x-forwarded-for"], "192.0.2.7");
        assert_eq!(p.headers["x-forwarded-proto"], "http");
        assert_eq!(p.headers["x-forwarded-host"], "example.com");
    }

    #[test]
    fn forwarded_chain_is_extended_and_upstream_proto_kept() {
        let mut p = parts(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("x-forwarded-proto", "https"),
            ("host", "example.com"),
        ]);
        let peer: SocketAddr = "[2001:db8::1]:443".parse().expect("addr");
        prepare_request_headers(&mut p, &Client::new(peer), None);
        assert_eq!(p.headers["x-forwarded-for"], "203.0.113.1, 2001:db8::1");
        assert_eq!(p.headers["x-forwarded-proto"], "https");
    }

    #[test]
    fn upgrade_headers_survive_for_upgrade_requests() {
        let mut p = parts(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let protocol = upgrade_protocol(&p.headers);
        assert_eq!(
            protocol.as_ref().map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        prepare_request_headers(&mut p, &Client::new(peer), protocol.as_ref());
        assert_eq!(p.headers["upgrade"], "websocket");
        assert_eq!(p.headers["connection"], "upgrade");
        // Without `Connection: upgrade` an Upgrade header is just dropped.
        assert!(upgrade_protocol(&parts(&[("upgrade", "websocket")]).headers).is_none());
    }
}
