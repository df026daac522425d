//! The interpreter: walks the plan's steps (tests, build, push and the lock; then, planned again
//! under the lock, everything after it) and, when one fails, the plan's failure branch
//! (`Plan::on_failure`: switch back, stop the new release, record why, release the lock, hooks,
//! notifications; before the lock only what follows its release). Every step it walks is logged in the session, so a run's executed steps
//! can be compared with its dry-run. Every operation on the releases goes through a
//! `DeployTarget` (`target.rs`); the interpreter itself names no host or engine.

use std::time::Instant;

use super::Session;
use super::ledger::{mark_interrupted_releases, mark_version};
use super::outcome::{Failed, finish, outcome_step};
use super::pipeline::{build, push};
use super::plan::{Observed, Plan, Step};
use super::target::{DeployTarget, LockRequest, NewRelease};
use super::watch::VerifyRules;
use crate::host::now_unix;
use crate::proxy::protocol::{Outcome, ReleaseRecord, RunKind, Target};
use crate::report::{FailureReport, Phase, PhaseName, Report};

/// Runs `steps` (the plan's steps after the lock) and, if one fails, the plan's failure branch.
/// Returns a report for release failures; errors are for problems that make the run itself
/// impossible (Docker gone, signals).
pub(crate) async fn execute(
    session: &Session<'_>,
    target: &dyn DeployTarget,
    plan: &Plan,
    observed: &Observed,
    steps: &[Step],
    started: Instant,
    proxy_image: &str,
) -> anyhow::Result<Report> {
    let mut run = Run {
        record: ReleaseRecord {
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
        },
        new_target: target.route_to(&plan.container, &plan.version, plan.color),
        session,
        target,
        plan,
        observed,
        started,
        proxy_image,
        swap_ms: None,
        locked: session.lock_held(),
        switched: false,
        switch_back_tried: false,
        outcome: Outcome::Live,
        failure: None,
    };
    for step in steps {
        session.walked(step);
        if let Err(failed) = run.step(step).await? {
            run.fail(failed.report).await?;
            break;
        }
    }
    Ok(run.report())
}

/// One run of the interpreter: the plan, the target, and how far it got.
struct Run<'s, 'a> {
    session: &'s Session<'a>,
    target: &'s dyn DeployTarget,
    plan: &'s Plan,
    /// The host as planned from: what served before this run.
    observed: &'s Observed,
    started: Instant,
    proxy_image: &'s str,
    /// This run's ledger record, as far as it got.
    record: ReleaseRecord,
    new_target: Target,
    swap_ms: Option<f64>,
    /// The lock is held: until then nothing on the host changed, and a failure only runs the
    /// failure branch's steps after its lock release (hooks, notifications).
    locked: bool,
    /// Traffic was switched to the new release.
    switched: bool,
    /// The failure branch tried to put traffic back.
    switch_back_tried: bool,
    /// `Live` until a step fails; then `Failed` or `RolledBack`.
    outcome: Outcome,
    failure: Option<FailureReport>,
}

impl Run<'_, '_> {
    /// The report as far as the run got.
    fn report(&self) -> Report {
        let ok = self.failure.is_none();
        let hosts = self.target.hosts();
        Report {
            ok,
            kind: self.plan.kind,
            app: self.session.names.app.clone(),
            env: self.session.names.env.clone(),
            version: self.plan.version.clone(),
            color: self.plan.color,
            container: self.plan.container.clone(),
            url: self.plan.url.clone(),
            previous: self.plan.previous.as_ref().map(|p| p.version.clone()),
            outcome: self.outcome,
            duration_ms: self.started.elapsed().as_millis() as u64,
            swap_ms: if ok { self.swap_ms } else { None },
            failure: self.failure.clone(),
            steps: Vec::new(),
            switch_spread_ms: crate::report::HostReport::spread_ms(&hosts),
            hosts,
        }
    }

    /// Walks the plan's failure branch after a step failed. Its steps never fail the run again:
    /// what goes wrong there is a warning.
    async fn fail(&mut self, mut failure: FailureReport) -> anyhow::Result<()> {
        let (session, target, plan) = (self.session, self.target, self.plan);
        // Before the lock the container of that name (if any) is an earlier release's.
        if self.locked && (failure.container_state.is_none() || failure.logs.is_empty()) {
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
        self.outcome = Outcome::Failed;
        self.failure = Some(failure);
        // Before the lock nothing changed: only what follows the lock's release runs.
        let from = if self.locked {
            0
        } else {
            plan.on_failure
                .iter()
                .position(|s| matches!(s, Step::ReleaseLock { .. }))
                .map_or(0, |i| i + 1)
        };
        for step in &plan.on_failure[from..] {
            session.walked(step);
            // A step of the failure branch that cannot be done (a host gone) is a warning: the
            // branch goes on, so every reachable host is put back and the lock released.
            match self.step(step).await {
                Ok(Ok(())) => {}
                Ok(Err(failed)) => session.reporter.warn(failed.report.reason),
                Err(e) => session.reporter.warn(format!("{e:#}")),
            }
        }
        Ok(())
    }

    fn reason(&mut self) -> &mut String {
        &mut self.failure.get_or_insert_with(Default::default).reason
    }

    /// Performs one step of the plan or of its failure branch.
    async fn step(&mut self, step: &Step) -> anyhow::Result<Result<(), Failed>> {
        let (session, target, plan, observed) =
            (self.session, self.target, self.plan, self.observed);
        let reporter = session.reporter;
        let names = &session.names;
        let r: Result<(), Failed> = match step {
            Step::EnsureNetwork { .. } => {
                target.ensure_network().await?;
                Ok(())
            }
            Step::EnsureProxy { listen, .. } => {
                let phase = Phase::start(reporter, PhaseName::Proxy, names.proxy());
                target.ensure_router(self.proxy_image).await?;
                phase.ok(listen.clone());
                mark_interrupted_releases(session, observed).await;
                // Known to the cleanup before it is written: an interrupt during the write
                // still settles it.
                let record = self.record.clone();
                session.progress(|p| p.record = Some(record));
                target.record(&self.record).await?;
                Ok(())
            }
            Step::ShipImage { image, to, .. } => {
                let phase = Phase::start(reporter, PhaseName::Ship, to.join(", "));
                match target.ship_image(image, plan.image_id.as_deref()).await {
                    Ok(()) => {
                        phase.ok("");
                        Ok(())
                    }
                    Err(e) => {
                        phase.failed(format!("{e:#}"));
                        Err(Failed::from(e))
                    }
                }
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
                    self.record.spec = Some(Box::new(target.create_release(&release).await?));
                } else {
                    self.record.spec = plan.restore.clone().map(Box::new);
                }
                session.progress(|p| p.started = Some((container.clone(), version.clone())));
                let r = target
                    .start_release(container)
                    .await
                    .map_err(|report| Failed { report });
                finish(phase, &r);
                r
            }
            Step::WaitHealthy {
                url,
                spec,
                docker_cmd,
                ..
            } => {
                let phase = Phase::start(reporter, PhaseName::Health, url.clone());
                let r = target
                    .health_gate(&plan.container, &spec.0, docker_cmd.is_some())
                    .await
                    .map_err(|report| Failed { report });
                finish(phase, &r);
                r
            }
            // After the outcome: hooks and notifications, whose failures are warnings.
            Step::Notify { .. } => {
                let report = self.report();
                outcome_step(session, step, &report).await;
                Ok(())
            }
            Step::RunHook { .. } if !hook_gates(step) => {
                let report = self.report();
                outcome_step(session, step, &report).await;
                Ok(())
            }
            Step::RunHook {
                hook,
                command,
                shell,
                timeout,
                ..
            } => {
                let detail = format!("{hook}: {}", crate::output::shell_join(command));
                self.run_gating(
                    PhaseName::Hook,
                    detail,
                    hook.as_str(),
                    (command, *shell),
                    *timeout,
                )
                .await
            }
            Step::Switch {
                drain_timeout,
                health,
                ..
            } => {
                let phase = Phase::start(
                    reporter,
                    PhaseName::Switch,
                    format!("-> {}", plan.container),
                );
                let new_target = self.new_target.clone();
                session.progress(|p| {
                    p.switched_from = observed.live.clone();
                    p.switched_to = Some(new_target.clone());
                    p.switch_started = true;
                    p.switch_health = Some(health.0.clone());
                    p.switch_drain = Some(*drain_timeout);
                    p.back_health = plan.on_failure.iter().find_map(|s| match s {
                        Step::SwitchBack { health, .. } => Some(health.0.clone()),
                        _ => None,
                    });
                });
                match target.switch(&new_target, &health.0, *drain_timeout).await {
                    Ok(ms) => {
                        self.swap_ms = Some(ms);
                        self.switched = true;
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
                health,
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
                    health: health.0.clone(),
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
            Step::RecordRelease { outcome, .. } => {
                self.record.outcome = *outcome;
                self.record.finished_at = Some(now_unix());
                self.record.duration_ms = Some(self.started.elapsed().as_millis() as u64);
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
                target.record(&self.record).await?;
                Ok(())
            }
            Step::Prune { images } => {
                target.prune(images).await;
                Ok(())
            }
            Step::SwitchBack {
                to,
                drain_timeout,
                health,
                ..
            } => {
                if self.switched {
                    self.switch_back_tried = true;
                    self.switch_back(to, &health.0, *drain_timeout).await;
                }
                Ok(())
            }
            Step::StopFailed { container, .. } => {
                let new_still_live = self.switched && self.outcome != Outcome::RolledBack;
                if !new_still_live && !is_reused_live(observed, container) {
                    let _ = target.retire(container).await;
                }
                Ok(())
            }
            Step::RecordFailure { .. } => {
                self.record_failure().await;
                Ok(())
            }
            Step::PruneFailed { keep_releases } => {
                // The failed release itself is kept for inspection.
                let now = target.observe().await?;
                let images = super::plan::prune_images(names, *keep_releases, &now, &plan.version);
                if !images.is_empty() {
                    target.prune(&images).await;
                }
                Ok(())
            }
            Step::ReleaseLock { .. } => {
                match target.release_lock().await {
                    Ok(()) => session.progress(|p| p.lock_held = false),
                    Err(e) => reporter.warn(format!("could not release the lock: {e:#}")),
                }
                Ok(())
            }
            Step::AcquireLock {
                lock,
                wait,
                stale_after,
            } => {
                let phase = Phase::start(reporter, PhaseName::Lock, lock.clone());
                let reason = match plan.kind {
                    RunKind::Deploy => format!("deploy {}", plan.version),
                    RunKind::Rollback => format!("rollback to {}", plan.version),
                };
                target
                    .acquire_lock(&LockRequest {
                        image: self.proxy_image,
                        reason: &reason,
                        wait: wait.get(),
                        stale_after: stale_after.get(),
                    })
                    .await?;
                session.progress(|p| p.lock_held = true);
                self.locked = true;
                phase.ok("");
                Ok(())
            }
            // Before the lock: tests and the build change nothing on the host that serves.
            Step::RunTest {
                command,
                shell,
                timeout,
            } => {
                let detail = crate::output::shell_join(command);
                self.run_gating(PhaseName::Test, detail, "test", (command, *shell), *timeout)
                    .await
            }
            // The id, not the tag, is what the container is made from: another environment's
            // build of the same version may move the tag while this deploy waits for its lock.
            Step::BuildImage { image, .. } => build(session, image, &plan.version)
                .await
                .map(|id| session.progress(|p| p.image_id = Some(id))),
            Step::PushImage { image, target } => push(session, image, target).await,
            Step::UseImage { image } => {
                match session
                    .build_engine()
                    .image_id(image)
                    .await
                    .map_err(crate::host::engine_err)?
                {
                    Some(id) => {
                        session.progress(|p| p.image_id = Some(id));
                        Ok(())
                    }
                    None => Err(Failed::from(anyhow::anyhow!(
                        "image {image} does not exist on the Docker host"
                    ))),
                }
            }
        };
        Ok(r)
    }

    /// A test or a hook that gates the run: its failure fails the release.
    async fn run_gating(
        &self,
        phase: PhaseName,
        detail: String,
        source: &str,
        command: (&[String], bool),
        timeout: crate::config::Duration,
    ) -> Result<(), Failed> {
        let plan = self.plan;
        let env = self.session.hook_env(
            &plan.version,
            plan.previous.as_ref().map(|p| p.version.as_str()),
            plan.color,
            None,
        );
        let phase = Phase::start(self.session.reporter, phase, detail);
        let r = self
            .session
            .run_command(source, command, &env, timeout.get())
            .await;
        finish(phase, &r);
        r
    }

    /// Puts traffic back on `previous`; how that went goes into the failure's reason.
    async fn switch_back(
        &mut self,
        previous: &Target,
        health: &crate::health::HealthSpec,
        drain: crate::config::Duration,
    ) {
        let session = self.session;
        let phase = Phase::start(
            session.reporter,
            PhaseName::Rollback,
            format!("-> {}", previous.container),
        );
        match self.target.switch(previous, health, drain).await {
            Ok(_) => {
                phase.ok(format!("rolled back to {}", previous.version));
                self.outcome = Outcome::RolledBack;
                let reason = self.reason();
                *reason = format!("{reason}; rolled back to {}", previous.version);
                mark_version(session, self.observed, &previous.version, Outcome::Live, "").await;
            }
            Err(e) => {
                phase.failed(format!("{e:#}"));
                let reason = self.reason();
                *reason = format!(
                    "{reason}; switching back to {} FAILED: {e:#}",
                    previous.version
                );
            }
        }
    }

    /// Records the failed release: `rolled_back` when traffic is back, else `failed`, with why.
    async fn record_failure(&mut self) {
        if self.switched && !self.switch_back_tried {
            let version = self.plan.version.clone();
            let hint = match &self.observed.live {
                Some(previous) => format!(
                    "{version} still serves (rollback.automatic is off)\n  hint: `deployctl rollback` goes back to {}",
                    previous.version
                ),
                None => {
                    format!("there is no earlier release to go back to, {version} still serves")
                }
            };
            let reason = self.reason();
            *reason = format!("{reason}; {hint}");
        }
        self.record.outcome = self.outcome;
        self.record.finished_at = Some(now_unix());
        self.record.duration_ms = Some(self.started.elapsed().as_millis() as u64);
        self.record.reason = Some(self.reason().clone());
        if let Err(e) = self.target.record(&self.record).await {
            self.session
                .reporter
                .warn(format!("could not record the failed release: {e:#}"));
        }
    }
}

/// A hook that runs before the outcome is known (and stops the run when it fails).
fn hook_gates(step: &Step) -> bool {
    matches!(step, Step::RunHook { hook, .. } if hook.gates())
}

pub(crate) fn is_reused_live(observed: &Observed, container: &str) -> bool {
    observed
        .live
        .as_ref()
        .is_some_and(|l| l.container == container)
}
