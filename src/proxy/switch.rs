//! The switch: health-check the new target with the configured spec, persist, swap the live
//! pointer, drain the old one.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::Uri;
use tokio::sync::Mutex;

use super::protocol::{SwitchRequest, SwitchResult, Target};
use super::route::{Route, Router, parse_addr};
use super::state::{PersistedState, save_state, unix_now};
use crate::health::{self, HealthSpec};

/// Runs one switch. `serial` is held from the probe to the swap, so each switch sees the live
/// pointer the previous one left; it is released before the drain so a switch back (rollback)
/// never waits for an earlier switch's drain.
pub async fn switch(
    router: &Router,
    state_dir: &Path,
    serial: &Mutex<()>,
    req: SwitchRequest,
) -> anyhow::Result<SwitchResult> {
    let started = Instant::now();
    let one_at_a_time = serial.lock().await;
    let target = req.target;
    parse_addr(&target.addr)?;
    probe(&target, &req.health)
        .await
    .with_context(|| {
        format!(
            "refusing to switch to {} ({} at {}): the health check failed; traffic stays where it was",
            target.container, target.version, target.addr
        )
    })?;

    let previous = router.live_target();
    if previous.as_ref() == Some(&target) {
        tracing::info!(container = %target.container, "switch: target already live");
        return Ok(SwitchResult {
            previous,
            live: target,
            swap_ms: ms(started.elapsed()),
            drain_ms: 0.0,
            abandoned: 0,
        });
    }

    // Persist first: if the state cannot be written nothing has changed, and a crash right
    // after the write restores a target that just passed its health check.
    let switched_at = unix_now();
    let route = Route::new(target.clone())?;
    let state = PersistedState {
        live: Some(target.clone()),
        switched_at: Some(switched_at),
    };
    let dir = state_dir.to_path_buf();
    tokio::task::spawn_blocking(move || save_state(&dir, &state))
        .await
        .context("state writer task failed")?
        .context("cannot persist the proxy state; traffic stays where it was")?;

    let old = router.swap(route, switched_at);
    let swap_ms = ms(started.elapsed());
    drop(one_at_a_time);
    tracing::info!(
        from = old.as_ref().map(|o| o.target.container.as_str()).unwrap_or("-"),
        to = %target.container,
        version = %target.version,
        swap_ms,
        "switched live target"
    );

    let drain_started = Instant::now();
    let mut abandoned = 0;
    if let Some(old) = old {
        let timeout = Duration::from_millis(req.drain_timeout_ms);
        if tokio::time::timeout(timeout, old.stats.wait_idle())
            .await
            .is_err()
        {
            abandoned = old.stats.in_flight();
            tracing::warn!(
                container = %old.target.container,
                abandoned,
                "drain timeout: requests to the previous target still open"
            );
        }
    }
    Ok(SwitchResult {
        previous,
        live: target,
        swap_ms,
        drain_ms: ms(drain_started.elapsed()),
        abandoned,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The longest [`switch`] spends on its health check: one probe, bounded by the spec's timeout.
pub fn probe_limit(req: &SwitchRequest) -> Duration {
    Duration::from_millis(req.health.timeout_ms).min(crate::config::Duration::MAX)
}

/// One probe of `target` with the full `spec` (port, path, Host, headers, timeout, status, body
/// and JSON expectations): the same check as the deploy gate's, once. The spec's URL must name
/// the target's host, so the check is always of the target that traffic moves to.
pub async fn probe(target: &Target, spec: &HealthSpec) -> anyhow::Result<()> {
    let addr = parse_addr(&target.addr)?;
    let url: Uri = spec
        .url
        .parse()
        .with_context(|| format!("invalid health check URL {:?}", spec.url))?;
    if !url
        .host()
        .is_some_and(|h| h.eq_ignore_ascii_case(addr.host()))
    {
        bail!(
            "the health check URL {:?} is not on the target {}",
            spec.url,
            target.addr
        );
    }
    let p = health::probe_once(spec, &health::Client::new()).await;
    if p.ok {
        return Ok(());
    }
    bail!(
        "GET {}: {}",
        spec.url,
        p.error.as_deref().unwrap_or("unknown error")
    )
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Answers each request with `reply(request head)`; a `None` reply never answers.
    async fn serve(reply: fn(&str) -> Option<(u16, &'static str)>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    let Some((status, body)) = reply(&head) else {
                        // Hold the connection open without answering until the client leaves.
                        let _ = stream.read(&mut buf).await;
                        return;
                    };
                    let msg = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(msg.as_bytes()).await;
                });
            }
        });
        addr
    }

    /// `/ready` answers `{"status":"ok"}` only with the token header and the configured Host.
    fn guarded(head: &str) -> Option<(u16, &'static str)> {
        if !head.starts_with("get /ready ") {
            return Some((404, "no"));
        }
        if !head.contains("\r\nx-health-token: s3cret\r\n") {
            return Some((401, "token required"));
        }
        if !head.contains("\r\nhost: app.example.test\r\n") {
            return Some((421, "wrong host"));
        }
        Some((200, r#"{"status":"ok","db":"up"}"#))
    }

    fn target(addr: &str) -> Target {
        Target {
            addr: addr.into(),
            container: "app-green".into(),
            version: "v2".into(),
            color: "green".into(),
        }
    }

    /// The gate's spec for `/ready` on `health`, with every rule set.
    fn spec(health: SocketAddr) -> HealthSpec {
        HealthSpec {
            url: format!("http://{health}/ready"),
            host_header: Some("app.example.test".into()),
            headers: [("X-Health-Token".to_string(), "s3cret".to_string())].into(),
            interval_ms: 100,
            timeout_ms: 300,
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            start_period_ms: 0,
            deadline_ms: 1_000,
            expect_status: vec![200],
            expect_body: Some(r#""db":"up""#.into()),
            expect_json: Some(("/status".into(), "ok".into())),
        }
    }

    async fn refused_port() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    }

    #[tokio::test]
    async fn probes_the_health_port_with_the_host_and_headers_of_the_spec() {
        let health = serve(guarded).await;
        // Traffic goes to a port nothing listens on: only the spec's health port answers.
        let traffic = format!("127.0.0.1:{}", refused_port().await);
        let s = spec(health);
        probe(&target(&traffic), &s).await.expect("passes");

        let mut no_token = s.clone();
        no_token.headers.clear();
        let err = probe(&target(&traffic), &no_token).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("GET {}: expected status 200, got 401", s.url)
        );

        let mut no_host = s.clone();
        no_host.host_header = None;
        let err = probe(&target(&traffic), &no_host).await.unwrap_err();
        assert!(err.to_string().ends_with("got 421"), "{err}");

        let mut wrong_path = s;
        wrong_path.url = format!("http://{health}/health");
        let err = probe(&target(&traffic), &wrong_path).await.unwrap_err();
        assert!(err.to_string().ends_with("got 404"), "{err}");
    }

    #[tokio::test]
    async fn enforces_the_status_body_and_json_expectations() {
        let health = serve(|_| Some((503, r#"{"status":"starting","db":"down"}"#))).await;
        let t = target(&health.to_string());
        let mut s = spec(health);
        s.headers.clear();
        s.host_header = None;
        let err = probe(&t, &s).await.unwrap_err();
        assert!(
            err.to_string().ends_with("expected status 200, got 503"),
            "{err}"
        );

        s.expect_status = vec![200, 503];
        let err = probe(&t, &s).await.unwrap_err();
        assert!(
            err.to_string()
                .ends_with(r#"body does not contain "\"db\":\"up\"""#),
            "{err}"
        );

        s.expect_body = Some(r#""db""#.into());
        let err = probe(&t, &s).await.unwrap_err();
        assert!(
            err.to_string()
                .ends_with(r#"JSON at /status is "starting", expected "ok""#),
            "{err}"
        );

        s.expect_json = Some(("/status".into(), "starting".into()));
        probe(&t, &s).await.expect("every rule holds");
    }

    #[tokio::test]
    async fn the_spec_timeout_bounds_the_check() {
        let health = serve(|_| None).await;
        let mut s = spec(health);
        s.timeout_ms = 150;
        let err = probe(&target(&health.to_string()), &s).await.unwrap_err();
        assert!(err.to_string().ends_with("timed out after 150ms"), "{err}");
        let req = SwitchRequest {
            target: target(&health.to_string()),
            health: s,
            drain_timeout_ms: 1_000,
        };
        assert_eq!(probe_limit(&req), Duration::from_millis(150));
    }

    #[tokio::test]
    async fn a_url_on_another_host_is_refused() {
        let health = serve(guarded).await;
        let s = spec(health);
        let err = probe(&target("app-green:8080"), &s).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the health check URL {:?} is not on the target app-green:8080",
                s.url
            )
        );
        // Hosts compare without regard to case, as DNS names do.
        let mut upper = s;
        upper.url = upper.url.replace("127.0.0.1", "LOCALHOST");
        let local = format!("localhost:{}", health.port());
        assert!(probe(&target(&local), &upper).await.is_ok());
    }
}
