//! `proxy.metrics`: the proxy on loopback with metrics on, in front of the tests' HTTP stub.
//! Requests with known outcomes (and the load loop, with its own counts) go through it; each
//! scrape of `/metrics` is parsed and its counters must equal what the clients saw, exactly.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use deployctl::proxy;
use deployctl::proxy::protocol::{Color, Target};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Proxy, get, switch_req, until};
use crate::support::{self, App, Load, Reply, Stub, deployctl_bin, free_port, http_get};

/// One sample of a scrape: its labels (unescaped) and value.
#[derive(Debug, Clone)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed scrape: samples by metric name, and the `# TYPE` of each family.
#[derive(Debug, Default)]
struct Scrape {
    samples: BTreeMap<String, Vec<Sample>>,
    types: BTreeMap<String, String>,
    /// The `app` and `env` labels every sample must carry.
    app: String,
    env: String,
}

impl Scrape {
    /// Parses the text format strictly: every line is `# HELP`, `# TYPE` or
    /// `name{label="value",...} number`; panics on anything else.
    fn parse(text: &str, app: &str, env: &str) -> Scrape {
        let mut scrape = Scrape {
            app: app.into(),
            env: env.into(),
            ..Scrape::default()
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                scrape.types.insert(name.into(), kind.into());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (name, rest) = line.split_once('{').unwrap_or_else(|| panic!("{line}"));
            let mut labels = BTreeMap::new();
            let mut chars = rest.chars();
            loop {
                let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                assert_eq!(chars.next(), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars
                        .next()
                        .unwrap_or_else(|| panic!("unterminated: {line}"))
                    {
                        '\\' => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some(c @ ('\\' | '"')) => value.push(c),
                            other => panic!("bad escape {other:?}: {line}"),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key.trim_start_matches(',').to_string(), value);
                match chars.next() {
                    Some(',') => continue,
                    Some('}') => break,
                    other => panic!("unexpected {other:?}: {line}"),
                }
            }
            let value: String = chars.collect();
            let value = match value.trim() {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            scrape
                .samples
                .entry(name.to_string())
                .or_default()
                .push(Sample { labels, value });
        }
        scrape
    }

    /// Samples of `name` whose labels include `want`.
    fn find(&self, name: &str, want: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .get(name)
            .map(|all| {
                all.iter()
                    .filter(|s| {
                        want.iter()
                            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The one value of `name` with labels `want`, which also carries the app and env labels.
    fn value(&self, name: &str, want: &[(&str, &str)]) -> u64 {
        let found = self.find(name, want);
        assert_eq!(found.len(), 1, "one {name} {want:?}, got {found:?}");
        assert_eq!(found[0].labels["app"], self.app);
        assert_eq!(found[0].labels["env"], self.env);
        let v = found[0].value;
        assert!(v >= 0.0 && v.fract() == 0.0, "{name} {want:?} = {v}");
        v as u64
    }

    fn requests(&self, color: &str, version: &str, class: &str) -> u64 {
        self.value(
            "deployctl_proxy_requests_total",
            &[
                ("color", color),
                ("version", version),
                ("code_class", class),
            ],
        )
    }

    fn in_flight(&self, color: &str) -> u64 {
        self.value("deployctl_proxy_in_flight_requests", &[("color", color)])
    }

    /// The histogram of `color`: buckets cumulative in `le` order, `+Inf` equal to `_count`;
    /// returns `_count`.
    fn histogram_count(&self, color: &str) -> u64 {
        let name = "deployctl_proxy_request_duration_seconds";
        assert_eq!(self.types[name], "histogram");
        let mut buckets: Vec<(f64, f64)> = self
            .find(&format!("{name}_bucket"), &[("color", color)])
            .iter()
            .map(|s| {
                let le = match s.labels["le"].as_str() {
                    "+Inf" => f64::INFINITY,
                    le => le.parse().expect("le is a number"),
                };
                (le, s.value)
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.len() > 1, "{color}: {buckets:?}");
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "cumulative: {buckets:?}"
        );
        let last = buckets.last().expect("buckets");
        assert_eq!(last.0, f64::INFINITY, "an le=\"+Inf\" bucket");
        let count = self.value(&format!("{name}_count"), &[("color", color)]);
        assert_eq!(last.1 as u64, count, "{color}: +Inf bucket equals _count");
        let sum = self.find(&format!("{name}_sum"), &[("color", color)]);
        assert!(sum.len() == 1 && sum[0].value >= 0.0, "{sum:?}");
        count
    }

    fn live(&self) -> Vec<(String, String)> {
        self.find("deployctl_proxy_live_info", &[])
            .iter()
            .map(|s| {
                assert_eq!(s.value, 1.0);
                (s.labels["color"].clone(), s.labels["version"].clone())
            })
            .collect()
    }
}

/// One raw request to the metrics listener: (status, head, body).
async fn raw(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to metrics");
    let req = format!("{method} {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("read");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_ascii_lowercase(), body.to_string())
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, head, body) = raw(addr, "GET", "/metrics").await;
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        head.contains("\r\ncontent-type: text/plain; version=0.0.4"),
        "{head}"
    );
    Scrape::parse(&body, "web", "prod")
}

fn target(addr: impl ToString, version: &str, color: Color) -> Target {
    Target {
        addr: addr.to_string(),
        container: format!("app-{version}"),
        version: version.into(),
        color,
    }
}

/// Switches to `target`, its health checked at `health_url` (on the target's host).
async fn switch_to(dir: &Path, target: Target, health_url: String) -> anyhow::Result<()> {
    let mut req = switch_req(target, 5_000);
    req.health.url = health_url;
    proxy::client_switch(dir, req).await.map(|_| ())
}

async fn get_n(addr: SocketAddr, path: &str, n: u64, want: StatusCode) {
    for _ in 0..n {
        let (status, body) = get(addr, path).await.expect("request through the proxy");
        assert_eq!(status, want, "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_under_load_equal_the_clients_own_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Stub::start(|_, req| match req.path.as_str() {
        "/fail" => Reply::new(500, "failing"),
        "/missing" => Reply::new(404, "not here"),
        "/moved" => Reply::new(301, "").header("location", "/"),
        _ => Reply::new(200, "v1"),
    });
    let proxy = Proxy::start_with_metrics(dir.path()).await;
    let metrics = proxy.metrics.expect("metrics are on");

    // Nothing live yet: no series, no live release, a request answered 502 is unrouted.
    get_n(proxy.addr, "/", 1, StatusCode::BAD_GATEWAY).await;
    let m = scrape(metrics).await;
    assert!(m.find("deployctl_proxy_requests_total", &[]).is_empty());
    assert!(m.live().is_empty());
    assert_eq!(m.value("deployctl_proxy_switches_total", &[]), 0);
    assert_eq!(m.value("deployctl_proxy_unrouted_requests_total", &[]), 1);
    assert_eq!(m.in_flight("blue"), 0);
    assert_eq!(m.types["deployctl_proxy_requests_total"], "counter");
    assert_eq!(m.types["deployctl_proxy_in_flight_requests"], "gauge");

    let v1 = target(backend.addr(), "v1", Color::Blue);
    switch_to(dir.path(), v1.clone(), backend.url("/health"))
        .await
        .expect("switch to v1");

    // The load loop (keep-alive and fresh connections) plus requests of known outcomes, with
    // scrapes while it all runs.
    let load = Load::start(proxy.addr.port(), 100);
    let (fail, missing, moved) = (30, 20, 5);
    get_n(proxy.addr, "/fail", fail, StatusCode::INTERNAL_SERVER_ERROR).await;
    let mut last_ok = 0;
    for _ in 0..3 {
        let m = scrape(metrics).await;
        let ok = m.requests("blue", "v1", "2xx");
        assert!(ok >= last_ok, "monotonic: {ok} after {last_ok}");
        last_ok = ok;
        m.histogram_count("blue");
        get_n(proxy.addr, "/missing", missing / 4, StatusCode::NOT_FOUND).await;
    }
    get_n(
        proxy.addr,
        "/missing",
        missing - 3 * (missing / 4),
        StatusCode::NOT_FOUND,
    )
    .await;
    get_n(proxy.addr, "/moved", moved, StatusCode::MOVED_PERMANENTLY).await;
    let stats = load.stats.clone();
    until("the load loop got 100 answers", async || {
        stats.lock().expect("stats").sent >= 100
    })
    .await;
    let load = tokio::task::spawn_blocking(move || load.stop())
        .await
        .expect("load stops");
    assert_eq!(load.failed, 0, "{:?}", load.failures);
    assert!(load.ok >= 100);

    // Every response was read to its end: nothing stays in flight.
    until("in-flight back to 0", async || {
        scrape(metrics).await.in_flight("blue") == 0
    })
    .await;
    let m = scrape(metrics).await;
    assert_eq!(m.requests("blue", "v1", "2xx"), load.ok);
    assert_eq!(m.requests("blue", "v1", "3xx"), moved);
    assert_eq!(m.requests("blue", "v1", "4xx"), missing);
    assert_eq!(m.requests("blue", "v1", "5xx"), fail);
    assert_eq!(m.requests("blue", "v1", "error"), 0);
    let blue_total = load.ok + moved + missing + fail;
    assert_eq!(m.histogram_count("blue"), blue_total);
    assert_eq!(m.histogram_count("green"), 0);
    assert_eq!(m.live(), vec![("blue".into(), "v1".into())]);
    assert_eq!(m.value("deployctl_proxy_switches_total", &[]), 1);
    assert_eq!(
        m.value("deployctl_proxy_health_checks_total", &[("result", "pass")]),
        1
    );
    assert_eq!(m.value("deployctl_proxy_unrouted_requests_total", &[]), 1);

    // A release that refuses connections (its health endpoint is on another port, which
    // answers): each request is an `error`, on its own series.
    let refused = target(format!("127.0.0.1:{}", free_port()), "v2", Color::Green);
    switch_to(dir.path(), refused, backend.url("/health"))
        .await
        .expect("switch to v2");
    get_n(proxy.addr, "/", 7, StatusCode::BAD_GATEWAY).await;
    let m = scrape(metrics).await;
    assert_eq!(m.requests("green", "v2", "error"), 7);
    assert_eq!(m.requests("green", "v2", "2xx"), 0);
    assert_eq!(m.histogram_count("green"), 7);
    assert_eq!(m.live(), vec![("green".into(), "v2".into())]);
    assert_eq!(m.value("deployctl_proxy_switches_total", &[]), 2);
    assert_eq!(
        m.requests("blue", "v1", "2xx"),
        load.ok,
        "kept after a switch"
    );

    // A switch refused by its health check counts a failed check and no switch.
    let unhealthy = target(backend.addr(), "v3", Color::Blue);
    switch_to(dir.path(), unhealthy, backend.url("/fail"))
        .await
        .expect_err("an unhealthy target is refused");
    let m = scrape(metrics).await;
    assert_eq!(
        m.value("deployctl_proxy_health_checks_total", &[("result", "fail")]),
        1
    );
    assert_eq!(
        m.value("deployctl_proxy_health_checks_total", &[("result", "pass")]),
        2
    );
    assert_eq!(m.value("deployctl_proxy_switches_total", &[]), 2);

    // Back to v1: its series continue where they were.
    switch_to(dir.path(), v1, backend.url("/health"))
        .await
        .expect("switch back to v1");
    get_n(proxy.addr, "/", 3, StatusCode::OK).await;
    let m = scrape(metrics).await;
    assert_eq!(m.value("deployctl_proxy_switches_total", &[]), 3);
    assert_eq!(m.live(), vec![("blue".into(), "v1".into())]);
    assert_eq!(m.requests("blue", "v1", "2xx"), load.ok + 3);
    assert_eq!(m.histogram_count("blue"), blue_total + 3);
    assert_eq!(m.requests("green", "v2", "error"), 7);
    assert!(
        m.find("deployctl_proxy_requests_total", &[("version", "v3")])
            .is_empty()
    );
    proxy.stop().await;
}

#[tokio::test]
async fn the_metrics_listener_serves_only_get_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start_with_metrics(dir.path()).await;
    let metrics = proxy.metrics.expect("metrics are on");
    assert_ne!(metrics.port(), proxy.addr.port());
    assert_eq!(raw(metrics, "GET", "/").await.0, 404);
    assert_eq!(raw(metrics, "GET", "/metricsx").await.0, 404);
    let (status, head, _) = raw(metrics, "POST", "/metrics").await;
    assert_eq!(status, 405);
    assert!(head.contains("\r\nallow: get, head"), "{head}");
    // The public port knows nothing of metrics: with nothing live it answers its usual 502.
    assert_eq!(
        get(proxy.addr, "/metrics").await.expect("get").0,
        StatusCode::BAD_GATEWAY
    );
    proxy.stop().await;

    // Off: no listener at all.
    let off = Proxy::start(dir.path()).await;
    assert_eq!(off.metrics, None);
    off.stop().await;
}

/// The health gate and the verify window run as `deployctl proxy health` next to the proxy
/// (through `docker exec`); each of their checks is counted by the running proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_of_deployctl_proxy_health_are_counted_by_the_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Proxy::start_with_metrics(dir.path()).await;
    let metrics = proxy.metrics.expect("metrics are on");
    // Two passing checks, then (watching) failing ones.
    let backend = Stub::start(|n, _| Reply::new(if n < 2 { 200 } else { 503 }, ""));
    let mut spec = switch_req(target(backend.addr(), "v1", Color::Blue), 1_000).health;
    spec.url = backend.url("/health");
    spec.healthy_threshold = 2;
    spec.interval_ms = 10;
    let spec = serde_json::to_string(&spec).expect("spec");

    let state_dir = dir.path().to_path_buf();
    let run = move |args: &[&str]| {
        let mut child = Command::new(deployctl_bin())
            .args(["proxy", "health", "--state-dir"])
            .arg(&state_dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("deployctl proxy health");
        let mut stdin = child.stdin.take().expect("stdin");
        writeln!(stdin, "{spec}").expect("write spec");
        drop(stdin);
        child.wait_with_output().expect("health ends")
    };
    let gate = tokio::task::spawn_blocking(move || {
        let gate = run(&[]);
        let watch = run(&["--watch-ms", "100"]);
        (gate, watch)
    })
    .await
    .expect("health runs");
    let (gate, watch) = gate;
    assert!(gate.status.success(), "{gate:?}");
    let watched = String::from_utf8_lossy(&watch.stdout);
    let probes = |ok: bool| {
        watched
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| {
                v.get("at_ms").is_some() && v.get("ok") == Some(&serde_json::Value::Bool(ok))
            })
            .count() as u64
    };
    let failed = probes(false);
    assert!(failed >= 1, "{watch:?}");
    let m = scrape(metrics).await;
    assert_eq!(
        m.value("deployctl_proxy_health_checks_total", &[("result", "pass")]),
        2
    );
    assert_eq!(
        m.value("deployctl_proxy_health_checks_total", &[("result", "fail")]),
        failed
    );
    proxy.stop().await;
}

/// On Docker: `proxy.metrics` makes the deployed proxy publish its metrics on the host, labelled
/// with the app and environment, counting what went through its public port. A proxy created
/// before the setting keeps running without it, and the deploy says how to apply it.
#[test]
fn a_deployed_proxy_publishes_its_metrics_on_the_host() {
    let app = App::with_overlay("dctmetrics", "0s", "");
    app.deploy("v1", &[]).assert_code(0);
    let metrics_port = free_port();
    let overlay = app.root().join("environments/test.toml");
    let mut text = std::fs::read_to_string(&overlay).expect("overlay");
    // The overlay ends in the `[proxy]` table.
    text.push_str(&format!("metrics = \"127.0.0.1:{metrics_port}\"\n"));
    std::fs::write(&overlay, text).expect("write overlay");
    app.commit("metrics on");

    let run = app.deploy("v2", &[]);
    run.assert_code(0);
    let warning = format!(
        "proxy.metrics is \"127.0.0.1:{metrics_port}\" but the proxy {} was created with off",
        app.proxy()
    );
    assert!(run.stderr.contains(&warning), "{}", run.transcript());
    assert!(
        http_get(metrics_port, "/metrics").is_err(),
        "not published yet"
    );

    // Recreated, the proxy restores v2 from its state volume; v3 then goes live (blue).
    support::docker(&["rm", "-f", &app.proxy()]).expect("remove the proxy");
    let run = app.deploy("v3", &[]);
    run.assert_code(0);
    assert!(
        !run.stderr.contains("proxy.metrics is"),
        "{}",
        run.transcript()
    );
    for _ in 0..5 {
        let (status, body) = app.get().expect("through the proxy");
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = http_get(metrics_port, "/metrics").expect("metrics on the host");
    assert_eq!(status, 200, "{body}");
    let m = Scrape::parse(&body, &app.name, "test");
    assert_eq!(m.requests("blue", "v3", "2xx"), 5, "{body}");
    assert_eq!(m.histogram_count("blue"), 5);
    assert_eq!(m.live(), vec![("blue".into(), "v3".into())]);
    assert_eq!(m.value("deployctl_proxy_switches_total", &[]), 1);
    // The gate's checks (healthy_threshold = 2, run through `docker exec`) and the switch's.
    let passed = m.value("deployctl_proxy_health_checks_total", &[("result", "pass")]);
    assert!(passed >= 3, "{body}");
    // The public port forwards `/metrics` to the app like any other path.
    let (_, public) = http_get(app.port, "/metrics").expect("through the proxy");
    assert!(!public.contains("deployctl_proxy_"), "{public}");
}

/// `proxy.metrics` is a listen address like `proxy.listen`: a bad one is a located error (exit 2).
#[test]
fn proxy_metrics_is_a_located_listen_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("environments")).expect("mkdir");
    std::fs::write(dir.path().join("environments/t.toml"), "").expect("write env");
    let config = |metrics: &str| {
        std::fs::write(
            dir.path().join("deploy.toml"),
            format!("[app]\nname = \"x\"\n\n[proxy]\nmetrics = {metrics}\n"),
        )
        .expect("write deploy.toml");
        Command::new(deployctl_bin())
            .args(["config", "--env", "t", "--config"])
            .arg(dir.path().join("deploy.toml"))
            .env_remove("DEPLOYCTL_ENV")
            .env_remove("DEPLOYCTL_CONFIG")
            .env("NO_COLOR", "1")
            .output()
            .expect("deployctl config")
    };
    let bad = config("\"localhost:9464\"");
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr
            .contains("deploy.toml:5:11: `proxy.metrics`: invalid listen address `localhost:9464`"),
        "{stderr}"
    );
    let good = config("\"127.0.0.1:9464\"");
    assert!(good.status.success(), "{good:?}");
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(stdout.contains("metrics = \"127.0.0.1:9464\""), "{stdout}");
}
