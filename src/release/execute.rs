//! The interpreter: walks the plan's steps after the lock and, when one fails, the failure branch
//! (switch back, stop the new release, record why). Every operation on the releases goes through
//! a `DeployTarget` (`target.rs`); the interpreter itself names no host or engine.

use std::time::Instant;

use super::Session;
use super::ledger::{mark_interrupted_releases, mark_version, prune};
use super::outcome::{Failed, failed_report, finish};
use super::plan::{Observed, Plan, Step};
use super::target::{DeployTarget, NewRelease};
use super::watch::VerifyRules;
use crate::host::now_unix;
use crate::proxy::protocol::{Outcome, ReleaseRecord, RunKind};
use crate::report::{FailureReport, Phase, PhaseName, Report};

/// Runs the steps after the lock. Returns a report for release failures; errors are for
/// problems that make the run itself impossible (Docker gone, signals).
pub(crate) async fn execute(
    session: &Session<'_>,
    target: &dyn DeployTarget,
    plan: &Plan,
    observed: &Observed,
    steps: &[Step],
    started: Instant,
    proxy_image: &str,
) -> anyhow::Result<Report> {
    let names = &session.names;
    let config = &session.loaded.config;
    let reporter = session.reporter;
    let mut record = ReleaseRecord {
        id: format!("{}-{}", now_unix(), std::process::id()),
        version: plan.version.clone(),
        image: plan.image.clone(),
        color: plan.color,
        container: plan.container.clone(),
        git_sha: crate::version::git_state(&session.loaded.root)
            .ok()
            .map(|g| g.sha),
        author: Some(crate::version::author(&session.loaded.root)),
        started_at: now_unix(),
        finished_at: None,
        duration_ms: None,
        outcome: Outcome::InProgress,
        tests_skipped: plan.tests_skipped,
        spec: None,
        reason: if plan.kind == RunKind::Rollback {
            Some("rollback".into())
        } else {
            None
        },
    };
    let new_target = target.route_to(&plan.container, &plan.version, plan.color);
    let mut swap_ms = None;
    let mut switched = false;

    for step in steps {
        tracing::debug!(step = %step.describe(), "executing");
        let outcome: Result<(), Failed> = match step {
            Step::EnsureNetwork { .. } => {
                target.ensure_network().await?;
                Ok(())
            }
            Step::EnsureProxy { .. } => {
                let phase = Phase::start(reporter, PhaseName::Proxy, names.proxy());
                target.ensure_router(proxy_image).await?;
                phase.ok(config.proxy.listen.to_string());
                mark_interrupted_releases(session, observed).await;
                target.record(&record).await?;
                session.progress(|p| p.record = Some(record.clone()));
                Ok(())
            }
            Step::RemoveContainer { container, .. } => {
                target.clear_slot(container).await?;
                Ok(())
            }
            Step::StartRelease {
                container,
                image,
                color,
                version,
                network,
                reuse,
                ..
            } => {
                let phase = Phase::start(
                    reporter,
                    PhaseName::Start,
                    format!("{container} ({version})"),
                );
                if !reuse {
                    let release = NewRelease {
                        container,
                        image,
                        image_id: plan.image_id.as_deref(),
                        color: *color,
                        version,
                        network,
                        restore: plan.restore.as_ref(),
                    };
                    record.spec = Some(Box::new(target.create_release(&release).await?));
                } else {
                    record.spec = plan.restore.clone().map(Box::new);
                }
                session.progress(|p| p.started = Some((container.clone(), version.clone())));
                let r = target
                    .start_release(container)
                    .await
                    .map_err(|report| Failed { report });
                finish(phase, &r);
                r
            }
            Step::WaitHealthy { .. } => {
                let phase = Phase::start(reporter, PhaseName::Health, plan.health_url.clone());
                let r = target
                    .health_gate(&plan.container)
                    .await
                    .map_err(|report| Failed { report });
                finish(phase, &r);
                r
            }
            // Hooks after the outcome (post_deploy, on_rollback) run in the caller, once it is known.
            Step::RunHook { hook, .. } if !hook.gates() => Ok(()),
            Step::RunHook {
                hook,
                command,
                shell,
            } => {
                let env = session.hook_env(
                    &plan.version,
                    plan.previous.as_ref().map(|p| p.version.as_str()),
                    plan.color,
                    None,
                );
                let phase = Phase::start(
                    reporter,
                    PhaseName::Hook,
                    format!("{hook}: {}", crate::output::shell_join(command)),
                );
                let r = session
                    .run_command(
                        hook.as_str(),
                        (command, *shell),
                        &env,
                        config.test.timeout.get(),
                    )
                    .await;
                finish(phase, &r);
                r
            }
            Step::Switch { drain_timeout, .. } => {
                let phase = Phase::start(
                    reporter,
                    PhaseName::Switch,
                    format!("-> {}", plan.container),
                );
                session.progress(|p| {
                    p.switched_from = observed.live.clone();
                    p.switched_to = Some(new_target.clone());
                    p.switch_started = true;
                });
                match target.switch(&new_target, *drain_timeout).await {
                    Ok(ms) => {
                        swap_ms = Some(ms);
                        switched = true;
                        phase.ok(format!("swapped in {ms:.0} ms"));
                        Ok(())
                    }
                    Err(e) => {
                        phase.failed(format!("{e:#}"));
                        Err(Failed::from(e))
                    }
                }
            }
            Step::Verify {
                window,
                max_error_rate,
                max_p95_latency,
            } => {
                let phase = Phase::start(
                    reporter,
                    PhaseName::Verify,
                    format!("watching for {window}"),
                );
                let rules = VerifyRules {
                    window: *window,
                    max_error_rate: *max_error_rate,
                    max_p95_latency: *max_p95_latency,
                };
                let r = target
                    .verify(&plan.container, &rules)
                    .await
                    .map_err(|report| Failed { report });
                finish(phase, &r);
                r
            }
            Step::StopContainer { container, .. } => {
                // From here on an interrupt keeps the new release serving (see `recover`).
                session.progress(|p| p.old_stopping = true);
                let phase = Phase::start(reporter, PhaseName::Stop, container.clone());
                match target.retire(container).await {
                    Ok(()) => phase.ok("kept for rollback"),
                    // The new release already serves: a stop failure is worth a warning, not a rollback.
                    Err(e) => {
                        reporter.warn(format!("could not stop {container}: {e}"));
                        phase.failed(e.to_string());
                    }
                }
                Ok(())
            }
            Step::RecordRelease { .. } => {
                record.outcome = Outcome::Live;
                record.finished_at = Some(now_unix());
                record.duration_ms = Some(started.elapsed().as_millis() as u64);
                if plan.kind == RunKind::Rollback
                    && let Some(prev) = observed.live.as_ref()
                {
                    mark_version(
                        session,
                        observed,
                        &prev.version,
                        Outcome::RolledBack,
                        "rolled back",
                    )
                    .await;
                }
                target.record(&record).await?;
                Ok(())
            }
            Step::Prune { images } => {
                prune(session, images).await;
                Ok(())
            }
            // Taken before `execute`; released by the caller whatever happens.
            Step::AcquireLock { .. } | Step::ReleaseLock { .. } => Ok(()),
            // Post-outcome hooks and notifications are run by the caller.
            Step::RunTest { .. }
            | Step::BuildImage { .. }
            | Step::PushImage { .. }
            | Step::UseImage { .. }
            | Step::Notify { .. } => Ok(()),
        };
        if let Err(failed) = outcome {
            let failing = FailingRun {
                session,
                target,
                plan,
                observed,
                record,
                switched,
                started,
            };
            return Ok(failing.handle(failed.report).await);
        }
    }
    Ok(Report {
        ok: true,
        kind: plan.kind,
        app: names.app.clone(),
        env: names.env.clone(),
        version: plan.version.clone(),
        color: plan.color,
        container: plan.container.clone(),
        url: plan.url.clone(),
        previous: plan.previous.as_ref().map(|p| p.version.clone()),
        outcome: Outcome::Live,
        duration_ms: started.elapsed().as_millis() as u64,
        swap_ms,
        failure: None,
    })
}

/// A run whose step failed: everything the failure branch needs.
pub(crate) struct FailingRun<'s, 'a> {
    pub session: &'s Session<'a>,
    pub target: &'s dyn DeployTarget,
    pub plan: &'s Plan,
    /// The host as planned from: what served before this run.
    pub observed: &'s Observed,
    /// This run's ledger record, as far as it got.
    pub record: ReleaseRecord,
    /// Traffic was switched to the new release.
    pub switched: bool,
    pub started: Instant,
}

impl FailingRun<'_, '_> {
    /// Puts traffic back where it was (if the switch happened), keeps the failed container stopped
    /// for inspection, and records why.
    pub(crate) async fn handle(self, mut failure: FailureReport) -> Report {
        let FailingRun {
            session,
            target,
            plan,
            observed,
            mut record,
            switched,
            started,
        } = self;
        let config = &session.loaded.config;
        let mut outcome = Outcome::Failed;
        if failure.container_state.is_none() || failure.logs.is_empty() {
            let (state, logs) = target.inspect(&plan.container).await;
            if failure.container_state.is_none()
                && let Some(state) = state
            {
                failure.container = Some(plan.container.clone());
                failure.container_state = Some(state);
            }
            if failure.logs.is_empty() {
                failure.logs = logs;
            }
        }
        if switched {
            match (&observed.live, config.rollback.automatic) {
                (Some(previous), true) => {
                    let phase = Phase::start(
                        session.reporter,
                        PhaseName::Rollback,
                        format!("-> {}", previous.container),
                    );
                    match target.switch(previous, config.deploy.drain_timeout).await {
                        Ok(_) => {
                            phase.ok(format!("rolled back to {}", previous.version));
                            outcome = Outcome::RolledBack;
                            failure.reason =
                                format!("{}; rolled back to {}", failure.reason, previous.version);
                            mark_version(session, observed, &previous.version, Outcome::Live, "")
                                .await;
                        }
                        Err(e) => {
                            phase.failed(format!("{e:#}"));
                            failure.reason = format!(
                                "{}; switching back to {} FAILED: {e:#}",
                                failure.reason, previous.version
                            );
                        }
                    }
                }
                (Some(previous), false) => {
                    failure.reason = format!(
                        "{}; {} still serves (rollback.automatic is off)\n  hint: `deployctl rollback` goes back to {}",
                        failure.reason, plan.version, previous.version
                    );
                }
                (None, _) => {
                    failure.reason = format!(
                        "{}; there is no earlier release to go back to, {} still serves",
                        failure.reason, plan.version
                    );
                }
            }
        }
        let new_still_live = switched && outcome != Outcome::RolledBack;
        if !new_still_live && !is_reused_live(observed, &plan.container) {
            let _ = target.retire(&plan.container).await;
        }
        record.outcome = outcome;
        record.finished_at = Some(now_unix());
        record.duration_ms = Some(started.elapsed().as_millis() as u64);
        record.reason = Some(failure.reason.clone());
        if let Err(e) = target.record(&record).await {
            session
                .reporter
                .warn(format!("could not record the failed release: {e:#}"));
        }
        failed_report(session, plan, started, failure, outcome)
    }
}

pub(crate) fn is_reused_live(observed: &Observed, container: &str) -> bool {
    observed
        .live
        .as_ref()
        .is_some_and(|l| l.container == container)
}
