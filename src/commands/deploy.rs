//! `deployctl deploy` and `deployctl rollback`: options in, the release core run under signal
//! handling, then the dry-run plan or the report printed.

use std::time::Duration;

use serde_json::json;

use crate::cli::{DeployArgs, Global, RollbackArgs};
use crate::engine::Engine;
use crate::error::{Error, ExitCode};
use crate::output::Output;
use crate::release::plan::{LiveState, Plan};
use crate::release::{self, DeployOptions, Report, Session};

/// How long cleanup after a signal may take before we exit anyway.
const RECOVER_LIMIT: Duration = Duration::from_secs(4);

pub async fn deploy(g: &Global, out: &Output, args: DeployArgs) -> anyhow::Result<ExitCode> {
    let loaded = super::load(g, out)?;
    let opts = DeployOptions {
        version: args.version,
        image: args.image,
        skip_tests: args.skip_tests,
        lock_wait: args.lock_wait.unwrap_or_default(),
    };
    if args.dry_run {
        let engine = super::connect(&loaded).await.ok();
        let plan =
            release::preview_deploy(&loaded, engine.as_ref().map(|e| e as &dyn Engine), &opts)
                .await?;
        print_plan(out, &plan);
        return Ok(ExitCode::Ok);
    }
    let engines = super::connect_all(&loaded).await?;
    let builder = super::connect_builder(&loaded).await?;
    let session = super::session(&loaded, &engines, builder.as_ref(), out);
    let report = interruptible(&session, release::deploy(&session, &opts)).await?;
    Ok(print_report(out, &report))
}

pub async fn rollback(g: &Global, out: &Output, args: RollbackArgs) -> anyhow::Result<ExitCode> {
    let loaded = super::load(g, out)?;
    let engines = super::connect_all(&loaded).await?;
    let builder = super::connect_builder(&loaded).await?;
    let session = super::session(&loaded, &engines, builder.as_ref(), out);
    if args.dry_run {
        let plan =
            release::preview_rollback(&session, args.to.as_deref(), args.with_current_config)
                .await?;
        print_plan(out, &plan);
        return Ok(ExitCode::Ok);
    }
    let wait = args.lock_wait.unwrap_or_default();
    let report = interruptible(
        &session,
        release::rollback(&session, args.to.as_deref(), wait, args.with_current_config),
    )
    .await?;
    Ok(print_report(out, &report))
}

/// Runs `work` until it ends or a signal arrives; after a signal, puts things back and exits 130/143.
async fn interruptible(
    session: &Session<'_>,
    work: impl std::future::Future<Output = anyhow::Result<Report>>,
) -> anyhow::Result<Report> {
    tokio::select! {
        result = work => result,
        signal = super::signal() => {
            session.reporter.warn(format!("{signal}: stopping"));
            let _ = tokio::time::timeout(RECOVER_LIMIT, release::recover(session)).await;
            Err(Error::Interrupted { signal }.into())
        }
    }
}

fn print_plan(out: &Output, plan: &Plan) {
    let mut text = format!(
        "Plan: {} {} {} to {} ({} as {})\n",
        plan.kind, plan.app, plan.version, plan.env, plan.container, plan.color
    );
    text.push_str(&format!("  image:     {}\n", plan.image));
    text.push_str(&format!("  url:       {}\n", plan.url));
    text.push_str(&format!("  health:    {}\n", plan.health_url));
    if !plan.hosts.is_empty() {
        text.push_str(&format!("  hosts:     {}\n", plan.hosts.join(", ")));
    }
    match &plan.previous {
        _ if plan.live_state != LiveState::Known => text.push_str("  live now:  unknown\n"),
        Some(p) => text.push_str(&format!(
            "  live now:  {} ({}, {})\n",
            p.version, p.color, p.container
        )),
        None => text.push_str("  live now:  nothing\n"),
    }
    text.push_str(&format!("  state:     {}\n\nSteps:\n", plan.live_state));
    for (i, step) in plan.steps.iter().enumerate() {
        text.push_str(&format!("  {:>2}. {}\n", i + 1, step.describe()));
    }
    if !plan.on_failure.is_empty() {
        text.push_str("\nOn failure:\n");
        for step in &plan.on_failure {
            text.push_str(&format!("   - {}\n", step.describe()));
        }
    }
    text.push_str("\nDry run: nothing was changed.");
    out.result(&text, json!({ "dry_run": true, "plan": plan }));
}

fn print_report(out: &Output, report: &Report) -> ExitCode {
    let text = if report.ok {
        format!(
            "{} {} is live on {} ({}, {}){}\n{}",
            report.app,
            report.version,
            report.env,
            report.color,
            report.container,
            report
                .previous
                .as_ref()
                .map(|p| format!(", replacing {p}"))
                .unwrap_or_default(),
            report.url
        )
    } else {
        let failure = report
            .failure
            .as_ref()
            .map(crate::output::render_failure)
            .unwrap_or_default();
        format!(
            "{} {} of {} to {} failed\n{failure}",
            report.kind, report.version, report.app, report.env
        )
    };
    let mut text = text;
    for h in &report.hosts {
        text.push_str(&format!(
            "\n  {}  {}{}",
            h.host,
            h.url,
            h.failure
                .as_ref()
                .map(|f| format!("  failed: {f}"))
                .unwrap_or_default()
        ));
    }
    if let Some(ms) = report.switch_spread_ms {
        text.push_str(&format!("\n  switch spread across hosts: {ms:.1} ms"));
    }
    out.publish_report(report);
    out.result(&text, serde_json::to_value(report).unwrap_or_default());
    if report.ok {
        ExitCode::Ok
    } else {
        ExitCode::DeployFailed
    }
}
