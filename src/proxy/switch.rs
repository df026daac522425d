//! The switch: health-check the new target, persist, swap the live pointer, drain the old one.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{HOST, HeaderValue, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::protocol::{SwitchRequest, SwitchResult, Target};
use super::route::{Route, Router, parse_addr};
use super::state::{PersistedState, save_state};
use crate::util::now_unix;

/// The one pre-switch probe must answer within this.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);

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
    probe(
        &target,
        &req.health_path,
        req.health_host.as_deref(),
        &req.expect_status,
    )
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
    let switched_at = now_unix();
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

/// One HTTP GET of `path` on the target; Ok when the status is expected.
pub async fn probe(
    target: &Target,
    path: &str,
    host: Option<&str>,
    expect: &[u16],
) -> anyhow::Result<()> {
    if !path.starts_with('/') {
        bail!("health path {path:?} must start with '/'");
    }
    let host = HeaderValue::from_str(host.unwrap_or(&target.addr))
        .with_context(|| format!("invalid health check host {host:?}"))?;
    let request = Request::get(path)
        .header(HOST, host)
        .header(USER_AGENT, "deployctl-proxy")
        .body(Empty::<Bytes>::new())
        .with_context(|| format!("invalid health path {path:?}"))?;

    let exchange = async {
        let stream = TcpStream::connect(&target.addr)
            .await
            .with_context(|| format!("cannot connect to {}", target.addr))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake failed")?;
        let conn = tokio::spawn(conn);
        let answer = sender.send_request(request).await;
        conn.abort();
        let resp = answer.with_context(|| format!("GET {path} got no answer"))?;
        anyhow::Ok(resp.status())
    };
    let status = tokio::time::timeout(HEALTH_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "GET {path} did not answer within {}s",
                HEALTH_TIMEOUT.as_secs()
            )
        })??;
    if status_expected(status, expect) {
        Ok(())
    } else {
        let wanted = if expect.is_empty() {
            "2xx".to_string()
        } else {
            format!("{expect:?}")
        };
        bail!("GET {path} answered {status}, expected {wanted}")
    }
}

fn status_expected(status: StatusCode, expect: &[u16]) -> bool {
    if expect.is_empty() {
        status.is_success()
    } else {
        expect.contains(&status.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_expectation_means_2xx() {
        assert!(status_expected(StatusCode::OK, &[]));
        assert!(status_expected(StatusCode::NO_CONTENT, &[]));
        assert!(!status_expected(StatusCode::FOUND, &[]));
        assert!(status_expected(StatusCode::FOUND, &[200, 302]));
        assert!(!status_expected(StatusCode::OK, &[204]));
    }
}
