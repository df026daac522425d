//! After the outcome is known: the report of a run, the hooks and notifications that follow it.

use std::time::Instant;

use super::Session;
use super::plan::{Hook, Plan, command_argv};
use crate::config::CommandSpec;
use crate::proxy::protocol::{Outcome, RunKind};
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

/// Hooks and notifications once the outcome is known. Their failures are reported as warnings,
/// never turned into another outcome.
pub(crate) async fn after_outcome(session: &Session<'_>, report: &Report) {
    let config = &session.loaded.config;
    let env = session.hook_env(
        &report.version,
        report.previous.as_deref(),
        report.color,
        Some(report.outcome),
    );
    let (hook, specs) = match (report.kind, report.ok) {
        (RunKind::Deploy, true) => (Hook::PostDeploy, &config.hooks.post_deploy),
        (RunKind::Rollback, true) => (Hook::OnRollback, &config.hooks.on_rollback),
        _ => (Hook::OnFailure, &config.hooks.on_failure),
    };
    run_hooks(session, hook, specs, &env).await;
    if report.outcome == Outcome::RolledBack {
        run_hooks(session, Hook::OnRollback, &config.hooks.on_rollback, &env).await;
    }
    if !config.notify.is_empty() {
        let mut notification = crate::notify::Notification::from_report(report);
        // Failure reasons can quote logs: secrets never leave for a chat channel.
        notification.reason = notification
            .reason
            .map(|r| session.loaded.redactor.redact(&r).into_owned());
        let phase = Phase::start(
            session.reporter,
            PhaseName::Notify,
            format!("{} target(s)", config.notify.len()),
        );
        let deliveries =
            crate::notify::send_all(&config.notify, &notification, session.reporter).await;
        let failed = deliveries.iter().filter(|d| !d.ok).count();
        if failed == 0 {
            phase.ok(format!("{} sent", deliveries.len()));
        } else {
            phase.failed(format!("{failed} of {} failed", deliveries.len()));
        }
    }
}

pub(crate) async fn run_hooks(
    session: &Session<'_>,
    hook: Hook,
    hooks: &[CommandSpec],
    env: &[(String, String)],
) {
    let name = hook.as_str();
    for spec in hooks {
        let (argv, shell) = command_argv(spec);
        let phase = Phase::start(
            session.reporter,
            PhaseName::Hook,
            format!("{name}: {}", crate::output::shell_join(&argv)),
        );
        let r = session
            .run_command(
                name,
                (&argv, shell),
                env,
                session.loaded.config.test.timeout.get(),
            )
            .await;
        if let Err(f) = &r {
            session
                .reporter
                .warn(format!("{name} hook failed: {}", f.report.reason));
        }
        finish(phase, &r);
    }
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
    }
}

/// Ends a phase as a step's result says.
pub(crate) fn finish(phase: Phase<'_>, r: &Result<(), Failed>) {
    match r {
        Ok(()) => phase.ok(""),
        Err(f) => phase.failed(f.report.reason.lines().next().unwrap_or("").to_string()),
    }
}
