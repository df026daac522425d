//! Cleanup after SIGINT/SIGTERM (issue 8 item 2): traffic back only to a running release that was
//! not told to stop, the new container stopped unless it serves, the ledger and the lock settled.

use std::time::Duration;

use super::Session;
use super::target::DeployTarget;
use crate::host::{self, now_unix};
use crate::proxy::protocol::Outcome;

/// After SIGINT/SIGTERM: traffic on a running release, the new container stopped unless it is
/// the one that serves, the lock released. Bounded in time by the caller.
///
/// Before the switch nothing live was touched. After it, traffic goes back to the previous
/// release only while that one still runs and was not told to stop; once its stop has begun
/// (or it is gone), the new release, which passed its health checks, keeps serving.
pub async fn recover(session: &Session<'_>) {
    recover_on(session, session.target().as_ref()).await
}

/// `recover` against any target (the interrupt tests use a fake one).
pub(crate) async fn recover_on(session: &Session<'_>, target: &dyn DeployTarget) {
    let progress = session
        .progress
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    if progress.finished {
        return;
    }
    // The plan's drain (its switch step's); the configured one if the run never got that far.
    let drain = progress
        .switch_drain
        .unwrap_or(session.loaded.config.deploy.drain_timeout);
    // The plan's checks of each side; the configured ones only for a side the plan has none
    // for (no `SwitchBack` step when `rollback.automatic` is off).
    let spec = |t: &crate::proxy::protocol::Target| {
        let planned = if progress.switched_to.as_ref() == Some(t) {
            progress.switch_health.clone()
        } else {
            progress.back_health.clone()
        };
        planned.unwrap_or_else(|| host::health_spec(&session.loaded.config, &t.container))
    };
    let mut new_is_live = false;
    if progress.switch_started {
        let previous = progress.switched_from.as_ref();
        let previous_runs = match previous {
            Some(p) if !progress.old_stopping => target.running(&p.container).await,
            _ => false,
        };
        match (previous, &progress.switched_to) {
            (Some(previous), _) if previous_runs => {
                match target.switch(previous, &spec(previous), drain).await {
                    Ok(_) => session
                        .reporter
                        .info(format!("traffic is back on {}", previous.version)),
                    Err(e) => {
                        // The proxy refuses a target that fails its check: traffic stayed on the new one.
                        new_is_live = true;
                        session.reporter.warn(format!(
                            "could not switch back to {}: {e:#}",
                            previous.version
                        ));
                    }
                }
            }
            (previous, Some(new)) => {
                new_is_live = true;
                let why = match previous {
                    Some(p) if progress.old_stopping => {
                        format!(": {} was already being stopped", p.version)
                    }
                    Some(p) => format!(": {} is not running", p.version),
                    None => String::new(),
                };
                // A no-op when the switch completed; finishes it (after a check) when it did not.
                match target.switch(new, &spec(new), drain).await {
                    Ok(_) => session
                        .reporter
                        .info(format!("traffic stays on {}{why}", new.version)),
                    Err(e) => session.reporter.warn(format!(
                        "could not keep traffic on {}{why}: {e:#}",
                        new.version
                    )),
                }
            }
            (_, None) => {}
        }
    } else {
        session
            .reporter
            .info("traffic was not switched: the live release was not touched");
    }
    if let Some((container, _)) = &progress.started
        && !new_is_live
    {
        let _ = target.stop(container, Duration::from_secs(2)).await;
    }
    if let Some(mut record) = progress.record.clone() {
        if new_is_live {
            // It serves: the ledger says so rather than contradict the proxy.
            record.outcome = Outcome::Live;
            record.reason = Some("interrupted after its switch".into());
        } else {
            record.outcome = Outcome::Failed;
            record.reason = Some("interrupted".into());
        }
        record.finished_at = Some(now_unix());
        let _ = target.record(&record).await;
    }
    if progress.lock_held {
        let _ = target.release_lock().await;
    }
    // The interrupt may have come before the stop request reached Docker: ask again, so the old
    // colour ends stopped as the run meant (the daemon carries out a stop it has received).
    if new_is_live
        && progress.old_stopping
        && let Some(previous) = &progress.switched_from
    {
        // As the plan's stop step does it (the target's retire).
        let stop = target.retire(&previous.container);
        let _ = tokio::time::timeout(Duration::from_secs(1), stop).await;
    }
}
