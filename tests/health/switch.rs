//! The proxy's check right before a switch enforces the full health spec of the deploy gate:
//! port, path, Host, headers, timeout, status, body and JSON.

use std::net::SocketAddr;
use std::time::Duration;

use deployctl::health::HealthSpec;
use deployctl::proxy::protocol::{SwitchRequest, Target};

use crate::{Reply, reply, serve, serve_heads, spec, support};

fn target(addr: SocketAddr, version: &str) -> Target {
    Target {
        addr: addr.to_string(),
        container: format!("app-{version}"),
        version: version.into(),
        color: deployctl::names::Color::Green,
    }
}

/// A proxy on loopback, serving until the returned sender is dropped.
async fn start_proxy(state_dir: &std::path::Path) -> tokio::sync::oneshot::Sender<()> {
    let server = deployctl::proxy::Server::bind(deployctl::proxy::RunOptions {
        listen: "127.0.0.1:0".parse().expect("addr"),
        state_dir: state_dir.to_path_buf(),
        limits: Default::default(),
        metrics: None,
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

/// Each rule of the spec on its own refuses the switch: the path, Host and headers the check
/// sends (without them the health server answers another 2xx, which `expect_status = [200]`
/// refuses), the body rule, the spec's timeout (not a fixed 5 s), and a URL not on the target.
#[tokio::test]
async fn every_rule_of_the_spec_can_refuse_the_switch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _proxy = start_proxy(dir.path()).await;
    let traffic = serve(|_| reply(200, "v2")).await;
    let health = serve_heads(|_, head| {
        if !head.starts_with("get /ready ") {
            reply(204, "")
        } else if !head.contains("\r\nx-health-token: s3cret\r\n") {
            reply(202, "token required")
        } else if !head.contains("\r\nhost: app.example.test\r\n") {
            reply(203, "wrong host")
        } else {
            reply(200, r#"{"status":"ok","db":"up"}"#)
        }
    })
    .await;
    let slow = serve(|_| Reply {
        status: 200,
        body: "late".into(),
        delay: Duration::from_secs(30),
    })
    .await;
    let mut full = spec(health.url("/ready"));
    full.host_header = Some("app.example.test".into());
    full.headers
        .insert("X-Health-Token".into(), "s3cret".into());
    full.expect_body = Some(r#""db":"up""#.into());

    let mut no_path = full.clone();
    no_path.url = health.url("/health");
    let mut no_token = full.clone();
    no_token.headers.clear();
    let mut no_host = full.clone();
    no_host.host_header = None;
    let mut body = full.clone();
    body.expect_body = Some(r#""db":"down""#.into());
    let mut timeout = full.clone();
    timeout.url = slow.url("/ready");
    timeout.timeout_ms = 150;
    let mut elsewhere = full.clone();
    elsewhere.url = full.url.replace("127.0.0.1", "app-other");
    let cases = [
        (no_path, "expected status 200, got 204".to_string()),
        (no_token, "expected status 200, got 202".into()),
        (no_host, "expected status 200, got 203".into()),
        (body, r#"body does not contain "\"db\":\"down\"""#.into()),
        (timeout, "timed out after 150ms".into()),
        (
            elsewhere.clone(),
            format!(
                "the health check URL {:?} is not on the target",
                elsewhere.url
            ),
        ),
    ];
    for (health, expected) in cases {
        let url = health.url.clone();
        let req = SwitchRequest {
            target: target(traffic.addr, "v2"),
            health,
            drain_timeout_ms: 1_000,
        };
        let err = deployctl::proxy::client_switch(dir.path(), req)
            .await
            .expect_err("refused");
        let msg = format!("{err:#}");
        assert!(msg.contains("refusing to switch to app-v2"), "{url}: {msg}");
        assert!(msg.contains(&expected), "{url}: {msg}");
        let status = deployctl::proxy::client_status(dir.path())
            .await
            .expect("status");
        assert_eq!(status.live, None, "{url}");
    }
    assert_eq!(slow.hits(), 1);

    let req = SwitchRequest {
        target: target(traffic.addr, "v2"),
        health: full,
        drain_timeout_ms: 1_000,
    };
    deployctl::proxy::client_switch(dir.path(), req)
        .await
        .expect("every rule holds");
    assert_eq!(
        traffic.hits(),
        0,
        "the health port is probed, not the traffic port"
    );
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
