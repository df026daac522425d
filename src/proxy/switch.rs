//! The switch: health-check the new target with the configured spec, persist, swap the live
//! pointer, drain the old one.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::Uri;
use tokio::sync::Mutex;

use super::protocol::{SwitchRequest, SwitchResult, Target};
use super::route::{Route, Router, parse_addr};
use super::state::{PersistedState, save_state};
use crate::health::{self, HealthSpec};
use crate::util::now_unix;

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
    let checked = probe(&target, &req.health).await;
    if let Some(metrics) = router.metrics() {
        metrics.health_check(checked.is_ok());
    }
    checked.with_context(|| {
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

/// The longest [`switch`] spends on its health check: one probe, bounded by the spec's timeout.
pub fn probe_limit(req: &SwitchRequest) -> Duration {
    Duration::from_millis(req.health.timeout_ms).min(crate::util::MAX_DURATION)
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
