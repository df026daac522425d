//! After the outcome is known: the report of a run, and the steps that follow it (hooks that do not
//! gate, notifications), run by the interpreter as steps of the plan.

use std::time::Instant;

use super::Session;
use super::plan::{Plan, Step};
use crate::proxy::protocol::Outcome;
use crate::report::{FailureReport, Phase, PhaseName, Report};

/// A failure while executing, with how far it got.
pub(crate) struct Failed {
    pub(crate) report: FailureReport,
}

impl From<anyhow::Error> for Failed {
    fn from(e: anyhow::Error) -> Self {
        Failed {
            report: FailureReport {
                reason: format!("{e:#}"),
                ..Default::default()
            },
        }
    }
}

/// A step after the outcome is known (a hook that does not gate, a notification), run against
/// the report so far. Its failure is a warning, never another outcome.
pub(crate) async fn outcome_step(session: &Session<'_>, step: &Step, report: &Report) {
    match step {
        Step::RunHook {
            hook,
            command,
            shell,
            timeout,
            if_rolled_back,
        } => {
            if *if_rolled_back && report.outcome != Outcome::RolledBack {
                return;
            }
            let env = session.hook_env(
                &report.version,
                report.previous.as_deref(),
                report.color,
                Some(report.outcome),
            );
            let name = hook.as_str();
            let phase = Phase::start(
                session.reporter,
                PhaseName::Hook,
                format!("{name}: {}", crate::output::shell_join(command)),
            );
            let r = session
                .run_command(name, (command, *shell), &env, timeout.get())
                .await;
            if let Err(f) = &r {
                session
                    .reporter
                    .warn(format!("{name} hook failed: {}", f.report.reason));
            }
            finish(phase, &r);
        }
        Step::Notify { kinds, targets, .. } => {
            let mut notification = crate::notify::Notification::from_report(report);
            // Failure reasons can quote logs: secrets never leave for a chat channel.
            notification.reason = notification
                .reason
                .map(|r| session.loaded.redactor.redact(&r).into_owned());
            let names: Vec<&str> = kinds.iter().map(|k| crate::notify::kind_name(*k)).collect();
            let phase = Phase::start(session.reporter, PhaseName::Notify, names.join(", "));
            // Sent to every target at once; one slow or failing target delays or fails no other.
            let deliveries =
                crate::notify::send_all(&targets.0, &notification, session.reporter).await;
            let failed: Vec<String> = deliveries
                .iter()
                .filter(|d| !d.ok)
                .map(|d| d.error.clone().unwrap_or_else(|| "failed".into()))
                .collect();
            if failed.is_empty() {
                phase.ok(format!("{} sent", deliveries.len()));
            } else {
                phase.failed(failed.join("; "));
            }
        }
        _ => {}
    }
}

/// A deploy that failed before the lock: nothing on the host changed, so of the plan's failure
/// branch only what follows the lock's release runs (hooks, notifications).
pub(crate) async fn failed_before_lock(
    session: &Session<'_>,
    plan: &Plan,
    started: Instant,
    failure: FailureReport,
) -> Report {
    let report = failed_report(session, plan, started, failure, Outcome::Failed);
    let after_lock = plan
        .on_failure
        .iter()
        .position(|s| matches!(s, Step::ReleaseLock { .. }))
        .map_or(0, |i| i + 1);
    for step in &plan.on_failure[after_lock..] {
        session.walked(step);
        outcome_step(session, step, &report).await;
    }
    report
}

pub(crate) fn failed_report(
    session: &Session<'_>,
    plan: &Plan,
    started: Instant,
    failure: FailureReport,
    outcome: Outcome,
) -> Report {
    Report {
        ok: false,
        kind: plan.kind,
        app: session.names.app.clone(),
        env: session.names.env.clone(),
        version: plan.version.clone(),
        color: plan.color,
        container: plan.container.clone(),
        url: plan.url.clone(),
        previous: plan.previous.as_ref().map(|p| p.version.clone()),
        outcome,
        duration_ms: started.elapsed().as_millis() as u64,
        swap_ms: None,
        failure: Some(failure),
        steps: Vec::new(),
        hosts: Vec::new(),
        switch_spread_ms: None,
    }
}

/// Ends a phase as a step's result says.
pub(crate) fn finish(phase: Phase<'_>, r: &Result<(), Failed>) {
    match r {
        Ok(()) => phase.ok(""),
        Err(f) => phase.failed(f.report.reason.lines().next().unwrap_or("").to_string()),
    }
}
