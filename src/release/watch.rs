//! Watching a release: the health gate before the switch, the verify window after it, crash
//! detection, the switch itself and the drain of a previous run's leftover requests.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Session;
use super::outcome::Failed;
use crate::engine::Engine;
use crate::health::{HealthOutcome, HealthSpec, ProbeResult};
use crate::host;
use crate::proxy::protocol::{SwitchRequest, Target};
use crate::report::{FailureReport, Phase, PhaseName};

/// Health checks from inside the proxy, raced against the container crashing.
/// `docker_health`: after the checks pass, Docker's own HEALTHCHECK must pass too (gate only).
pub(crate) async fn watch_health(
    session: &Session<'_>,
    container: &str,
    spec: &HealthSpec,
    window: Option<Duration>,
    docker_health: bool,
) -> Result<(), Failed> {
    let last: Arc<Mutex<VecDeque<ProbeResult>>> = Arc::default();
    let reporter = session.reporter;
    let keep = last.clone();
    let on_probe = move |p: &ProbeResult| {
        reporter.event(crate::report::Event::Probe { probe: p.clone() });
        if let Ok(mut l) = keep.lock() {
            if l.len() == 5 {
                l.pop_front();
            }
            l.push_back(p.clone());
        }
    };
    let started = Instant::now();
    let health = host::proxy_health(session.engine, &session.names, spec, window, &on_probe);
    let deadline = crate::config::Duration::from_millis(spec.deadline_ms);
    let reason = tokio::select! {
        outcome = health => match outcome {
            Ok(HealthOutcome::Healthy { .. }) if window.is_some() || !docker_health => return Ok(()),
            Ok(HealthOutcome::Healthy { .. }) => {
                let left = deadline.get().saturating_sub(started.elapsed());
                match docker_healthy(session.engine, container, left).await {
                    Ok(()) => return Ok(()),
                    Err(reason) => reason,
                }
            }
            Ok(HealthOutcome::Unhealthy { reason, .. }) => format!("health check failed: {reason}"),
            Ok(HealthOutcome::DeadlineExceeded { last }) => format!(
                "not healthy within {} ({} consecutive passing checks needed){}",
                deadline,
                spec.healthy_threshold,
                last.iter()
                    .rev()
                    .find_map(|p| p.error.as_deref())
                    .map(|e| format!("; last failure: {e}"))
                    .unwrap_or_default()
            ),
            Err(e) => format!("health checks could not run: {e:#}"),
        },
        crash = crashed(session.engine, container) => crash,
    };
    let probes = last
        .lock()
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default();
    let mut report = FailureReport {
        reason,
        probes,
        container: Some(container.to_string()),
        ..Default::default()
    };
    if let Ok(Some(info)) = session.engine.inspect_container(container).await {
        report.container_state = Some(info.state);
    }
    report.logs = session
        .engine
        .logs_tail(container, 50)
        .await
        .unwrap_or_default();
    Err(Failed { report })
}

/// Waits for Docker's own HEALTHCHECK (`health.docker_cmd`) to report healthy.
pub(crate) async fn docker_healthy(
    engine: &dyn Engine,
    container: &str,
    within: Duration,
) -> Result<(), String> {
    let give_up = crate::config::Duration::deadline(Instant::now(), within);
    loop {
        let state = engine
            .inspect_container(container)
            .await
            .ok()
            .flatten()
            .map(|i| i.state);
        match state.as_ref().and_then(|s| s.health.as_deref()) {
            Some("healthy") => return Ok(()),
            Some("unhealthy") => {
                return Err(format!(
                    "Docker reports {container} unhealthy (health.docker_cmd)"
                ));
            }
            _ if Instant::now() >= give_up => {
                return Err(
                    "Docker's health check (health.docker_cmd) did not pass within the deadline"
                        .to_string(),
                );
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Resolves when the container stops running or restarts (a crash loop); never otherwise.
pub(crate) async fn crashed(engine: &dyn Engine, container: &str) -> String {
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        match engine.inspect_container(container).await {
            Ok(None) => return format!("container {container} disappeared"),
            Ok(Some(info)) => {
                let s = &info.state;
                if s.oom_killed {
                    return format!("container {container} was killed for lack of memory (OOM)");
                }
                if s.restart_count > 0 {
                    return format!(
                        "container {container} is crash-looping: restarted {} time(s), last exit code {}",
                        s.restart_count, s.exit_code
                    );
                }
                if !s.running && s.status != "created" {
                    return format!("container {container} exited with code {}", s.exit_code);
                }
            }
            // A passing engine hiccup is not a crash.
            Err(_) => {}
        }
    }
}

/// The rules of the verify window, as the plan's `Verify` step carries them.
#[derive(Clone)]
pub struct VerifyRules {
    pub window: crate::config::Duration,
    pub max_error_rate: f64,
    pub max_p95_latency: crate::config::Duration,
    /// The health checks that keep running during the window.
    pub health: HealthSpec,
}

/// Switches the proxy to `target`; requests to the previous release get up to `drain` to finish.
/// The proxy checks `target` against `health` before it switches.
pub(crate) async fn switch_to(
    session: &Session<'_>,
    target: &Target,
    health: &HealthSpec,
    drain: crate::config::Duration,
) -> anyhow::Result<f64> {
    let req = SwitchRequest {
        target: target.clone(),
        health: health.clone(),
        drain_timeout_ms: drain.get().as_millis() as u64,
    };
    let result = host::proxy_switch(session.engine, &session.names, &req).await?;
    if result.abandoned > 0 {
        session.reporter.warn(format!(
            "{} request(s) to the previous release were still open after drain_timeout",
            result.abandoned
        ));
    }
    Ok(result.swap_ms)
}

/// A run killed during its drain leaves the previous release with requests in flight and nobody
/// waiting for them; before its container is removed they get the same `deploy.drain_timeout`.
pub(crate) async fn drain_leftover(session: &Session<'_>, container: &str) {
    let in_flight = || async {
        host::proxy_status(session.engine, &session.names)
            .await
            .map(|s| {
                s.targets
                    .iter()
                    .filter(|t| t.container == container)
                    .map(|t| t.in_flight)
                    .sum::<u64>()
            })
            .unwrap_or(0)
    };
    let open = in_flight().await;
    if open == 0 {
        return;
    }
    let phase = Phase::start(
        session.reporter,
        PhaseName::Drain,
        format!("{open} request(s) still in flight to {container}"),
    );
    let give_up = crate::config::Duration::deadline(
        Instant::now(),
        session.loaded.config.deploy.drain_timeout.get(),
    );
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let open = in_flight().await;
        if open == 0 {
            phase.ok("");
            return;
        }
        if Instant::now() >= give_up {
            session.reporter.warn(format!(
                "{open} request(s) to {container} were still open after drain_timeout"
            ));
            phase.failed(format!("{open} abandoned"));
            return;
        }
    }
}

/// The watch window after the switch: health keeps passing, and the proxy's figures for the new
/// release stay under the limits.
pub(crate) async fn verify(
    session: &Session<'_>,
    container: &str,
    v: &VerifyRules,
) -> Result<(), Failed> {
    if v.window.get().is_zero() {
        return Ok(());
    }
    watch_health(session, container, &v.health, Some(v.window.get()), false).await?;
    let status = host::proxy_status(session.engine, &session.names).await?;
    let Some(stats) = status.targets.iter().find(|t| t.container == container) else {
        return Ok(());
    };
    if stats.requests > 0 {
        let rate = stats.errors as f64 / stats.requests as f64;
        if rate > v.max_error_rate {
            return Err(Failed::from(anyhow::anyhow!(
                "error rate {:.1}% ({} of {} requests) is above verify.max_error_rate {:.1}%",
                rate * 100.0,
                stats.errors,
                stats.requests,
                v.max_error_rate * 100.0
            )));
        }
        let max_ms = v.max_p95_latency.get().as_secs_f64() * 1000.0;
        if stats.p95_ms > max_ms {
            return Err(Failed::from(anyhow::anyhow!(
                "p95 latency {:.0} ms is above verify.max_p95_latency {}",
                stats.p95_ms,
                v.max_p95_latency
            )));
        }
    }
    Ok(())
}
