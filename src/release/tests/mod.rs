//! Unit tests of the interpreter without Docker (`fake`: the fake target and engine): its failure
//! paths (`failures`), interrupts at each step (`interrupt`), that a run's executed steps are its dry-run plan (`steps`), and the fleet's batching (`fleet`).

mod failures;
mod fake;
mod fleet;
mod interrupt;
mod steps;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use super::Session;
use super::execute::execute;
use super::plan::{self, AppContainer, DeployRequest, Observed, Step};
use crate::config::{Config, Loaded};
use crate::names::Color;
use crate::proxy::protocol::{Outcome, ReleaseRecord, Target};
use crate::redact::Redactor;
use crate::report::Silent;
use fake::{FakeTarget, NoEngine};

fn loaded(extra: &str) -> Loaded {
    let text = format!("[app]\nname = \"web\"\n{extra}");
    let config: Config = toml::from_str(&text).expect("test config parses");
    Loaded {
        config,
        env: "prod".into(),
        root: PathBuf::from("/nonexistent-deployctl-test-root"),
        files: vec![],
        redactor: Redactor::new(),
        env_file_vars: BTreeMap::new(),
        warnings: vec![],
    }
}

/// v1 serves from blue (or nothing serves).
fn observed(live: bool) -> Observed {
    if !live {
        return Observed::default();
    }
    let mut record = ReleaseRecord {
        id: "1".into(),
        version: "v1".into(),
        image: "web:v1".into(),
        color: Color::Blue,
        container: "web.prod-blue".into(),
        git_sha: None,
        author: None,
        started_at: 0,
        finished_at: None,
        duration_ms: None,
        outcome: Outcome::Live,
        reason: None,
        tests_skipped: false,
        spec: None,
    };
    record.finished_at = Some(1);
    Observed {
        live: Some(Target {
            addr: "web.prod-blue:8080".into(),
            container: "web.prod-blue".into(),
            version: "v1".into(),
            color: Color::Blue,
        }),
        containers: vec![AppContainer {
            id: "id-v1".into(),
            name: "web.prod-blue".into(),
            color: Some(Color::Blue),
            version: "v1".into(),
            running: true,
        }],
        releases: vec![record],
        ..Default::default()
    }
}

/// Runs the locked part of a deploy of v2 against `target`.
fn run_deploy(
    config: &str,
    live: bool,
    target: &FakeTarget,
) -> (crate::report::Report, plan::Plan, Vec<String>) {
    run_edited_deploy(config, live, target, |_| {})
}

/// `run_deploy` of the plan as `edit` leaves it.
fn run_edited_deploy(
    config: &str,
    live: bool,
    target: &FakeTarget,
    edit: impl FnOnce(&mut plan::Plan),
) -> (crate::report::Report, plan::Plan, Vec<String>) {
    let loaded = loaded(config);
    let engine = NoEngine;
    let session = Session::new(&loaded, &engine, &Silent);
    // These runs start after the lock, as the pipeline's second part does.
    session.progress(|p| p.lock_held = true);
    let observed = observed(live);
    let req = DeployRequest {
        version: "v2".into(),
        image: None,
        image_id: None,
        skip_tests: true,
        proxy_image: "deployctl-proxy:test".into(),
    };
    let mut plan = plan::plan_deploy(&loaded, &req, &observed);
    edit(&mut plan);
    let lock_at = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::AcquireLock { .. }))
        .expect("the plan takes the lock");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime
        .block_on(execute(
            &session,
            target,
            &plan,
            &observed,
            &plan.steps[lock_at + 1..],
            Instant::now(),
            "deployctl-proxy:test",
        ))
        .expect("the run itself is possible");
    (report, plan, session.executed())
}

/// The target operations a plan's steps after the lock stand for, in order.
fn planned_ops(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .flat_map(|s| match s {
            Step::EnsureNetwork { .. } => vec!["ensure_network".to_string()],
            Step::EnsureProxy { .. } => {
                vec!["ensure_router".to_string(), "record v2 in_progress".into()]
            }
            Step::RemoveContainer { container, .. } => vec![format!("clear_slot {container}")],
            Step::StartRelease { container, .. } => vec![
                format!("create_release {container}"),
                format!("start_release {container}"),
            ],
            Step::WaitHealthy { url, .. } => {
                let container = url
                    .trim_start_matches("http://")
                    .split(':')
                    .next()
                    .unwrap_or_default();
                vec![format!("health_gate {container}")]
            }
            Step::Switch { to, .. } => vec![format!("switch {to}")],
            Step::Verify { .. } => vec!["verify web.prod-green".to_string()],
            Step::StopContainer { container, .. } => vec![format!("retire {container}")],
            Step::RecordRelease { version, outcome } => vec![format!("record {version} {outcome}")],
            Step::ReleaseLock { .. } => vec!["release_lock".to_string()],
            _ => vec![],
        })
        .collect()
}

/// The plan's steps after the lock (what the interpreter is given).
fn after_lock(plan: &plan::Plan) -> &[Step] {
    let lock_at = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::AcquireLock { .. }))
        .expect("the plan takes the lock");
    &plan.steps[lock_at + 1..]
}
