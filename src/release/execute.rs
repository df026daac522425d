//! The interpreter: walks the plan's steps after the lock and, when one fails, the failure branch
//! (switch back, stop the new release, record why).

use std::time::Instant;

use super::Session;
use super::ledger::{mark_interrupted_releases, mark_version, prune};
use super::outcome::{Failed, failed_report, finish};
use super::plan::{Observed, Plan, Step};
use super::watch::{VerifyRules, drain_leftover, switch_to, verify, watch_health};
use crate::engine::EngineError;
use crate::error::Error;
use crate::host::container::{release_spec, restored_spec, spec_record};
use crate::host::{self, engine_err, now_unix};
use crate::proxy::protocol::{Outcome, ReleaseRecord, RunKind};
use crate::report::{FailureReport, Phase, PhaseName, Report};

/// Runs the steps after the lock. Returns a report for release failures; errors are for
/// problems that make the run itself impossible (Docker gone, signals).
pub(crate) async fn execute(
    session: &Session<'_>,
    plan: &Plan,
    observed: &Observed,
    steps: &[Step],
    started: Instant,
    proxy_image: &str,
) -> anyhow::Result<Report> {
    let engine = session.engine;
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
    let new_target = host::target_for(config, &plan.container, &plan.version, plan.color);
    let mut swap_ms = None;
    let mut switched = false;

    for step in steps {
        tracing::debug!(step = %step.describe(), "executing");
        let outcome: Result<(), Failed> = match step {
            Step::EnsureNetwork { .. } => {
                host::ensure_network(engine, names).await?;
                Ok(())
            }
            Step::EnsureProxy { .. } => {
                let phase = Phase::start(reporter, PhaseName::Proxy, names.proxy());
                host::ensure_proxy(engine, session.loaded, names, proxy_image).await?;
                phase.ok(config.proxy.listen.clone());
                mark_interrupted_releases(session, observed).await;
                host::proxy_record(engine, names, &record).await?;
                session.progress(|p| p.record = Some(record.clone()));
                Ok(())
            }
            Step::RemoveContainer { container, .. } => {
                drain_leftover(session, container).await;
                match engine.remove_container(container, true).await {
                    Ok(()) | Err(EngineError::NotFound(_)) => {}
                    Err(e) => return Err(engine_err(e)),
                }
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
                    // A container of that name not listed as ours (by labels) is someone else's.
                    host::owned_container(engine, names, container).await?;
                    let image = plan.image_id.as_deref().unwrap_or(image);
                    let spec = match &plan.restore {
                        Some(restore) => restored_spec(
                            session.loaded,
                            &session.names,
                            restore,
                            container,
                            *color,
                            version,
                        )
                        .map_err(Error::DeployFailed)?,
                        None => release_spec(
                            session.loaded,
                            &session.names,
                            container,
                            image,
                            *color,
                            version,
                            network,
                        ),
                    };
                    let id = engine.create_container(&spec).await.map_err(engine_err)?;
                    record.spec = Some(Box::new(spec_record(session.loaded, &spec, image, id)));
                } else {
                    record.spec = plan.restore.clone().map(Box::new);
                }
                session.progress(|p| p.started = Some((container.clone(), version.clone())));
                let r = engine
                    .start_container(container)
                    .await
                    .map_err(|e| Failed::from(engine_err(e)));
                finish(phase, &r);
                r
            }
            Step::WaitHealthy { .. } => {
                let phase = Phase::start(reporter, PhaseName::Health, plan.health_url.clone());
                let r = watch_health(session, &plan.container, None).await;
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
                match switch_to(session, &new_target, *drain_timeout).await {
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
                let r = verify(session, &plan.container, &rules).await;
                finish(phase, &r);
                r
            }
            Step::StopContainer { container, .. } => {
                // From here on an interrupt keeps the new release serving (see `recover`).
                session.progress(|p| p.old_stopping = true);
                let phase = Phase::start(reporter, PhaseName::Stop, container.clone());
                match engine
                    .stop_container(container, config.deploy.stop_timeout.get())
                    .await
                {
                    Ok(()) | Err(EngineError::NotFound(_)) => phase.ok("kept for rollback"),
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
                host::proxy_record(engine, names, &record).await?;
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
            plan,
            observed,
            mut record,
            switched,
            started,
        } = self;
        let engine = session.engine;
        let config = &session.loaded.config;
        let mut outcome = Outcome::Failed;
        if failure.container_state.is_none()
            && let Ok(Some(info)) = engine.inspect_container(&plan.container).await
        {
            failure.container = Some(plan.container.clone());
            failure.container_state = Some(info.state);
        }
        if failure.logs.is_empty() {
            failure.logs = engine
                .logs_tail(&plan.container, 50)
                .await
                .unwrap_or_default();
        }
        if switched {
            match (&observed.live, config.rollback.automatic) {
                (Some(previous), true) => {
                    let phase = Phase::start(
                        session.reporter,
                        PhaseName::Rollback,
                        format!("-> {}", previous.container),
                    );
                    match switch_to(session, previous, config.deploy.drain_timeout).await {
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
            let _ = engine
                .stop_container(&plan.container, config.deploy.stop_timeout.get())
                .await;
        }
        record.outcome = outcome;
        record.finished_at = Some(now_unix());
        record.duration_ms = Some(started.elapsed().as_millis() as u64);
        record.reason = Some(failure.reason.clone());
        if let Err(e) = host::proxy_record(engine, &session.names, &record).await {
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
