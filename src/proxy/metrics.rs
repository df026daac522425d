//! Prometheus metrics of the proxy (`proxy.metrics`, off by default): the counters, kept with
//! relaxed atomics on the request path, the text exposition format (0.0.4, written here: a few
//! `write!`s, no dependency), and the listener that serves `GET /metrics` on its own port.
//!
//! Series are per (colour, version) and live as long as the proxy: a switch back to a release
//! continues its counters, so every counter is monotonic. A request costs four uncontended
//! atomic additions when metrics are on, and one branch on a `None` when they are off (no
//! listener either).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::protocol::{Color, Target};
use super::route::Router;

/// Port the metrics listener uses inside the proxy container; `proxy.metrics` is published on it.
pub const CONTAINER_METRICS_PORT: u16 = 9464;
/// `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Scrapers connected at once; more are closed at once (a scraper needs one).
const MAX_SCRAPERS: usize = 16;
/// A scraper must send its request head within this long.
const SCRAPE_HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bounds of the latency histogram, in microseconds, and as the `le` label writes them.
const BUCKETS_MICROS: [u64; 11] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];
const BUCKET_LABELS: [&str; 11] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
];

/// Status classes of `requests_total`; `error` is a request that could not be proxied.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];
const ERROR_CLASS: usize = 5;

/// What became of one proxied request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The answer's status code (from the release, or the proxy's own 400 for a bad target).
    Status(u16),
    /// The release could not be reached or gave no answer (the client got a 502).
    Failed,
}

impl Answer {
    fn class(self) -> usize {
        match self {
            Answer::Status(code @ 100..=599) => usize::from(code / 100) - 1,
            Answer::Status(_) | Answer::Failed => ERROR_CLASS,
        }
    }
}

/// How the metrics listener is set up (`deployctl proxy run --metrics …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsOptions {
    pub listen: SocketAddr,
    /// Values of the `app` and `env` labels on every series.
    pub app: String,
    pub env: String,
}

/// Latency and in-flight requests of one colour.
#[derive(Debug, Default)]
struct ColorMetrics {
    in_flight: AtomicU64,
    /// Per bucket (not cumulative), the last one past every bound (`+Inf` only).
    buckets: [AtomicU64; BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

/// The counters of one (colour, version): what a route records into.
#[derive(Debug)]
pub struct Series {
    color: Color,
    version: String,
    codes: [AtomicU64; CLASSES.len()],
    latency: Arc<ColorMetrics>,
}

impl Series {
    pub fn begin(&self) {
        self.latency.in_flight.fetch_add(1, Relaxed);
    }

    pub fn end(&self) {
        self.latency.in_flight.fetch_sub(1, Relaxed);
    }

    pub fn record(&self, latency: Duration, answer: Answer) {
        self.codes[answer.class()].fetch_add(1, Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_MICROS
            .iter()
            .position(|bound| micros <= *bound)
            .unwrap_or(BUCKETS_MICROS.len());
        self.latency.buckets[bucket].fetch_add(1, Relaxed);
        self.latency.sum_micros.fetch_add(micros, Relaxed);
    }
}

/// Every metric of one proxy.
#[derive(Debug)]
pub struct Metrics {
    app: String,
    env: String,
    colors: [Arc<ColorMetrics>; 2],
    /// Touched when a route is made (a switch) and by a scrape, never per request.
    series: Mutex<Vec<Arc<Series>>>,
    switches: AtomicU64,
    checks_passed: AtomicU64,
    checks_failed: AtomicU64,
    unrouted: AtomicU64,
}

fn color_index(color: Color) -> usize {
    match color {
        Color::Blue => 0,
        Color::Green => 1,
    }
}

impl Metrics {
    pub fn new(app: &str, env: &str) -> Self {
        Self {
            app: app.to_owned(),
            env: env.to_owned(),
            colors: Default::default(),
            series: Mutex::new(Vec::new()),
            switches: AtomicU64::new(0),
            checks_passed: AtomicU64::new(0),
            checks_failed: AtomicU64::new(0),
            unrouted: AtomicU64::new(0),
        }
    }

    /// The series of `target`'s colour and version, made on first use.
    pub fn series(&self, target: &Target) -> Arc<Series> {
        let mut all = self.series.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = all
            .iter()
            .find(|s| s.color == target.color && s.version == target.version)
        {
            return Arc::clone(found);
        }
        let made = Arc::new(Series {
            color: target.color,
            version: target.version.clone(),
            codes: Default::default(),
            latency: Arc::clone(&self.colors[color_index(target.color)]),
        });
        all.push(Arc::clone(&made));
        made
    }

    pub fn switched(&self) {
        self.switches.fetch_add(1, Relaxed);
    }

    /// One health check run by the proxy (a switch's, or one of `deployctl proxy health`).
    pub fn health_check(&self, passed: bool) {
        if passed {
            self.checks_passed.fetch_add(1, Relaxed);
        } else {
            self.checks_failed.fetch_add(1, Relaxed);
        }
    }

    /// A request answered 502 because no release was live.
    pub fn unrouted(&self) {
        self.unrouted.fetch_add(1, Relaxed);
    }

    /// The text exposition format of every metric; `live` is the live target.
    pub fn render(&self, live: Option<&Target>) -> String {
        let base = format!(
            "app=\"{}\",env=\"{}\"",
            escape(&self.app),
            escape(&self.env)
        );
        let mut out = String::with_capacity(4096);
        let series: Vec<Arc<Series>> = self
            .series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();

        head(
            &mut out,
            "requests_total",
            "counter",
            "Requests answered through the proxy, by the release's colour and version and the status class (error: the release could not be reached).",
        );
        for s in &series {
            let (color, version) = (s.color.as_str(), escape(&s.version));
            for (class, count) in CLASSES.iter().zip(&s.codes) {
                let _ = writeln!(
                    out,
                    "deployctl_proxy_requests_total{{{base},color=\"{color}\",version=\"{version}\",code_class=\"{class}\"}} {}",
                    count.load(Relaxed)
                );
            }
        }

        head(
            &mut out,
            "request_duration_seconds",
            "histogram",
            "Time from a request's arrival to its answer's head, by colour.",
        );
        for color in Color::ALL {
            let m = &self.colors[color_index(color)];
            let color = color.as_str();
            // Read each bucket once, so `+Inf` and `_count` agree even while requests arrive.
            let mut cumulative = 0u64;
            for (i, bucket) in m.buckets.iter().enumerate() {
                cumulative += bucket.load(Relaxed);
                let le = BUCKET_LABELS.get(i).copied().unwrap_or("+Inf");
                let _ = writeln!(
                    out,
                    "deployctl_proxy_request_duration_seconds_bucket{{{base},color=\"{color}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = m.sum_micros.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "deployctl_proxy_request_duration_seconds_sum{{{base},color=\"{color}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "deployctl_proxy_request_duration_seconds_count{{{base},color=\"{color}\"}} {cumulative}"
            );
        }

        head(
            &mut out,
            "in_flight_requests",
            "gauge",
            "Requests being proxied now (until their answer's last byte), by colour.",
        );
        for color in Color::ALL {
            let n = self.colors[color_index(color)].in_flight.load(Relaxed);
            let _ = writeln!(
                out,
                "deployctl_proxy_in_flight_requests{{{base},color=\"{}\"}} {n}",
                color.as_str()
            );
        }

        head(
            &mut out,
            "unrouted_requests_total",
            "counter",
            "Requests answered 502 because no release was live.",
        );
        let _ = writeln!(
            out,
            "deployctl_proxy_unrouted_requests_total{{{base}}} {}",
            self.unrouted.load(Relaxed)
        );

        head(
            &mut out,
            "switches_total",
            "counter",
            "Switches of the live release made by this proxy process.",
        );
        let _ = writeln!(
            out,
            "deployctl_proxy_switches_total{{{base}}} {}",
            self.switches.load(Relaxed)
        );

        head(
            &mut out,
            "live_info",
            "gauge",
            "1 for the release traffic goes to; absent while none is live.",
        );
        if let Some(live) = live {
            let _ = writeln!(
                out,
                "deployctl_proxy_live_info{{{base},color=\"{}\",version=\"{}\"}} 1",
                live.color.as_str(),
                escape(&live.version)
            );
        }

        head(
            &mut out,
            "health_checks_total",
            "counter",
            "Health checks run from the proxy (the deploy gate, the verify window, each switch's check), by result.",
        );
        for (result, n) in [("pass", &self.checks_passed), ("fail", &self.checks_failed)] {
            let _ = writeln!(
                out,
                "deployctl_proxy_health_checks_total{{{base},result=\"{result}\"}} {}",
                n.load(Relaxed)
            );
        }
        out
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP deployctl_proxy_{name} {help}");
    let _ = writeln!(out, "# TYPE deployctl_proxy_{name} {kind}");
}

/// A label value as the text format writes it between quotes: `\`, `"` and newlines escaped.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Serves `GET /metrics` on `listener` until `stop` turns true. Anything else is answered 404
/// (another path) or 405 (another method on `/metrics`).
pub async fn serve(listener: TcpListener, router: Arc<Router>, mut stop: watch::Receiver<bool>) {
    let stopped = async move {
        let _ = stop.wait_for(|stopping| *stopping).await;
    };
    tokio::pin!(stopped);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(SCRAPE_HEAD_TIMEOUT)
        .keep_alive(true);
    let mut scrapers = JoinSet::new();
    loop {
        tokio::select! {
            () = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if scrapers.len() >= MAX_SCRAPERS {
                        tracing::debug!(%peer, "too many metrics scrapers; connection closed");
                        continue;
                    }
                    let router = Arc::clone(&router);
                    let service = service_fn(move |req| {
                        let answer = answer(&router, &req);
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    scrapers.spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = scrapers.join_next(), if !scrapers.is_empty() => {}
        }
    }
    // Dropping the set closes the scrapers' connections.
}

fn answer(router: &Router, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp
    };
    let Some(metrics) = router.metrics() else {
        return reply(StatusCode::NOT_FOUND, "metrics are off\n".into());
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "deployctl proxy metrics: only /metrics is served here\n".into(),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "deployctl proxy metrics: use GET\n".into(),
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    let live = router.live_target();
    let mut resp = reply(StatusCode::OK, metrics.render(live.as_ref()));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(color: Color, version: &str) -> Target {
        Target {
            addr: "a:1".into(),
            container: "c".into(),
            version: version.into(),
            color,
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape("line\nnext"), "line\\nnext");
        assert_eq!(escape("plain-1.2_x"), "plain-1.2_x");
        let m = Metrics::new("we\"b", "pro\\d");
        let s = m.series(&target(Color::Green, "v\n\"2\""));
        s.record(Duration::from_millis(1), Answer::Status(200));
        let text = m.render(Some(&target(Color::Green, "v\n\"2\"")));
        let line = r#"deployctl_proxy_requests_total{app="we\"b",env="pro\\d",color="green",version="v\n\"2\"",code_class="2xx"} 1"#;
        assert!(text.lines().any(|l| l == line), "{text}");
        assert!(
            text.lines().any(|l| l
                == r#"deployctl_proxy_live_info{app="we\"b",env="pro\\d",color="green",version="v\n\"2\""} 1"#),
            "{text}"
        );
        // Every line is a comment or `name{labels} value`: no raw newline inside a value.
        for l in text.lines() {
            assert!(
                l.starts_with("# ") || l.starts_with("deployctl_proxy_"),
                "{l}"
            );
        }
    }

    #[test]
    fn histogram_is_cumulative_and_classes_are_counted() {
        let m = Metrics::new("web", "prod");
        let blue = m.series(&target(Color::Blue, "1"));
        blue.begin();
        blue.record(Duration::from_millis(5), Answer::Status(204)); // le 0.005 (inclusive)
        blue.record(Duration::from_millis(30), Answer::Status(503));
        blue.record(Duration::from_secs(11), Answer::Failed); // only +Inf
        blue.record(Duration::from_millis(1), Answer::Status(404));
        blue.record(Duration::from_millis(1), Answer::Status(101));
        let text = m.render(None);
        let value = |prefix: &str| -> String {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .to_string()
        };
        let b = r#"deployctl_proxy_request_duration_seconds_bucket{app="web",env="prod",color="blue",le="#;
        assert_eq!(value(&format!("{b}\"0.005\"}}")), "3");
        assert_eq!(value(&format!("{b}\"0.025\"}}")), "3");
        assert_eq!(value(&format!("{b}\"0.05\"}}")), "4");
        assert_eq!(value(&format!("{b}\"10\"}}")), "4");
        assert_eq!(value(&format!("{b}\"+Inf\"}}")), "5");
        assert_eq!(
            value(
                r#"deployctl_proxy_request_duration_seconds_count{app="web",env="prod",color="blue"}"#
            ),
            "5"
        );
        assert_eq!(
            value(
                r#"deployctl_proxy_request_duration_seconds_sum{app="web",env="prod",color="blue"}"#
            ),
            "11.037"
        );
        for (class, n) in [
            ("1xx", 1),
            ("2xx", 1),
            ("3xx", 0),
            ("4xx", 1),
            ("5xx", 1),
            ("error", 1),
        ] {
            let line = format!(
                r#"deployctl_proxy_requests_total{{app="web",env="prod",color="blue",version="1",code_class="{class}"}}"#
            );
            assert_eq!(value(&line), n.to_string(), "{class}");
        }
        assert_eq!(
            value(r#"deployctl_proxy_in_flight_requests{app="web",env="prod",color="blue"}"#),
            "1"
        );
        blue.end();
        assert!(!text.contains("deployctl_proxy_live_info{"), "nothing live");
        // The same colour and version is the same series: counters continue.
        assert!(Arc::ptr_eq(&blue, &m.series(&target(Color::Blue, "1"))));
        assert!(!Arc::ptr_eq(&blue, &m.series(&target(Color::Blue, "2"))));
    }
}
