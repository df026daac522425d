//! Unit tests of the interpreter without Docker: a fake `DeployTarget` that records what it is
//! asked and fails where a test says, and an engine that refuses everything (the interpreter must
//! not reach it directly).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration as StdDuration, Instant};

use async_trait::async_trait;

use super::Session;
use super::execute::execute;
use super::plan::{self, AppContainer, DeployRequest, Observed, Step};
use super::target::{DeployTarget, NewRelease, VerifyRules};
use crate::config::{Config, Duration, Loaded};
use crate::engine::*;
use crate::names::Color;
use crate::proxy::protocol::{Outcome, ReleaseRecord, ReleaseSpec, Target};
use crate::redact::Redactor;
use crate::report::{FailureReport, Silent};

/// Every call fails: what the interpreter needs goes through the target.
struct NoEngine;

fn refused<T>() -> EngineResult<T> {
    Err(EngineError::Api(
        "the interpreter tests have no engine".into(),
    ))
}

#[async_trait]
impl Engine for NoEngine {
    async fn ping(&self) -> EngineResult<EngineInfo> {
        refused()
    }
    async fn image_exists(&self, _: &str) -> EngineResult<bool> {
        refused()
    }
    async fn build_image(&self, _: &BuildRequest, _: LineSink<'_>) -> EngineResult<String> {
        refused()
    }
    async fn build_image_from_tar(
        &self,
        _: Vec<u8>,
        _: &str,
        _: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        refused()
    }
    async fn push_image(
        &self,
        _: &str,
        _: &str,
        _: Option<&RegistryAuth>,
        _: LineSink<'_>,
    ) -> EngineResult<()> {
        refused()
    }
    async fn list_images(&self, _: &[(&str, &str)]) -> EngineResult<Vec<ImageInfo>> {
        refused()
    }
    async fn remove_image(&self, _: &str) -> EngineResult<()> {
        refused()
    }
    async fn ensure_network(&self, _: &str, _: &BTreeMap<String, String>) -> EngineResult<()> {
        refused()
    }
    async fn remove_network(&self, _: &str) -> EngineResult<()> {
        refused()
    }
    async fn ensure_volume(&self, _: &str, _: &BTreeMap<String, String>) -> EngineResult<()> {
        refused()
    }
    async fn remove_volume(&self, _: &str) -> EngineResult<()> {
        refused()
    }
    async fn create_container(&self, _: &ContainerSpec) -> EngineResult<String> {
        refused()
    }
    async fn start_container(&self, _: &str) -> EngineResult<()> {
        refused()
    }
    async fn stop_container(&self, _: &str, _: StdDuration) -> EngineResult<()> {
        refused()
    }
    async fn restart_container(&self, _: &str, _: StdDuration) -> EngineResult<()> {
        refused()
    }
    async fn remove_container(&self, _: &str, _: bool) -> EngineResult<()> {
        refused()
    }
    async fn inspect_container(&self, _: &str) -> EngineResult<Option<ContainerInfo>> {
        refused()
    }
    async fn list_containers(&self, _: &[(&str, &str)]) -> EngineResult<Vec<ContainerInfo>> {
        refused()
    }
    async fn exec_with_stdin(
        &self,
        _: &str,
        _: &[String],
        _: Option<Vec<u8>>,
        _: LineSink<'_>,
    ) -> EngineResult<ExecOutput> {
        refused()
    }
    async fn logs_tail(&self, _: &str, _: usize) -> EngineResult<Vec<String>> {
        refused()
    }
    async fn image_id(&self, _: &str) -> EngineResult<Option<String>> {
        refused()
    }
    async fn network_labels(&self, _: &str) -> EngineResult<Option<BTreeMap<String, String>>> {
        refused()
    }
    async fn volume_labels(&self, _: &str) -> EngineResult<Option<BTreeMap<String, String>>> {
        refused()
    }
}

/// Records each operation as `op target`, and refuses the release at `fail_at`.
#[derive(Default)]
struct FakeTarget {
    calls: Mutex<Vec<String>>,
    fail_at: Option<&'static str>,
}

impl FakeTarget {
    fn failing_at(op: &'static str) -> Self {
        FakeTarget {
            fail_at: Some(op),
            ..Default::default()
        }
    }
    /// Records the call; the reason of the scripted failure when `op` is the one to fail.
    fn call(&self, op: &str, what: &str) -> Result<(), String> {
        self.calls
            .lock()
            .expect("calls lock")
            .push(format!("{op} {what}").trim_end().to_string());
        match self.fail_at {
            Some(f) if f == op => Err(format!("{op} failed (scripted)")),
            _ => Ok(()),
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("calls lock").clone()
    }
}

#[async_trait]
impl DeployTarget for FakeTarget {
    async fn observe(&self) -> anyhow::Result<Observed> {
        Ok(Observed::default())
    }
    async fn ensure_network(&self) -> anyhow::Result<()> {
        self.call("ensure_network", "")
            .map_err(|reason| anyhow::anyhow!(reason))
    }
    async fn ensure_router(&self, _: &str) -> anyhow::Result<()> {
        self.call("ensure_router", "")
            .map_err(|reason| anyhow::anyhow!(reason))
    }
    async fn record(&self, record: &ReleaseRecord) -> anyhow::Result<()> {
        let what = format!("{} {}", record.version, record.outcome);
        self.call("record", &what)
            .map_err(|reason| anyhow::anyhow!(reason))
    }
    async fn clear_slot(&self, container: &str) -> anyhow::Result<()> {
        self.call("clear_slot", container)
            .map_err(|reason| anyhow::anyhow!(reason))
    }
    async fn create_release(&self, release: &NewRelease<'_>) -> anyhow::Result<ReleaseSpec> {
        self.call("create_release", release.container)
            .map_err(|reason| anyhow::anyhow!(reason))?;
        Ok(ReleaseSpec {
            image_id: release.image.to_string(),
            env: vec![],
            cmd: None,
            ports: vec![],
            labels: BTreeMap::new(),
            container_id: Some("fake".into()),
        })
    }
    async fn start_release(&self, container: &str) -> Result<(), FailureReport> {
        self.call("start_release", container).map_err(refusal)
    }
    async fn health_gate(&self, container: &str) -> Result<(), FailureReport> {
        self.call("health_gate", container).map_err(refusal)
    }
    fn route_to(&self, container: &str, version: &str, color: Color) -> Target {
        Target {
            addr: format!("{container}:8080"),
            container: container.into(),
            version: version.into(),
            color,
        }
    }
    async fn switch(&self, to: &Target, _: Duration) -> anyhow::Result<f64> {
        self.call("switch", &to.container)
            .map_err(|reason| anyhow::anyhow!(reason))?;
        Ok(1.0)
    }
    async fn verify(&self, container: &str, _: &VerifyRules) -> Result<(), FailureReport> {
        self.call("verify", container).map_err(refusal)
    }
    async fn retire(&self, container: &str) -> anyhow::Result<()> {
        self.call("retire", container)
            .map_err(|reason| anyhow::anyhow!(reason))
    }
    async fn inspect(&self, _: &str) -> (Option<ContainerState>, Vec<String>) {
        (None, vec!["last log line".into()])
    }
    async fn release_lock(&self) -> anyhow::Result<()> {
        self.call("release_lock", "")
            .map_err(|reason| anyhow::anyhow!(reason))
    }
}

fn refusal(reason: String) -> FailureReport {
    FailureReport {
        reason,
        ..Default::default()
    }
}

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
    let loaded = loaded(config);
    let engine = NoEngine;
    let session = Session::new(&loaded, &engine, &Silent);
    let observed = observed(live);
    let req = DeployRequest {
        version: "v2".into(),
        image: None,
        image_id: None,
        skip_tests: true,
        proxy_image: "deployctl-proxy:test".into(),
    };
    let plan = plan::plan_deploy(&loaded, &req, &observed);
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

#[test]
fn a_deploy_does_what_its_plan_says() {
    let target = FakeTarget::default();
    let (report, plan, _) = run_deploy("", true, &target);
    assert!(report.ok, "{report:?}");
    assert_eq!(report.outcome, Outcome::Live);
    let lock_at = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::AcquireLock { .. }))
        .expect("lock step");
    assert_eq!(target.calls(), planned_ops(&plan.steps[lock_at + 1..]));
    assert!(target.calls().contains(&"retire web.prod-blue".to_string()));
}

#[test]
fn a_failed_start_stops_before_any_switch() {
    let target = FakeTarget::failing_at("start_release");
    let (report, _, _) = run_deploy("", true, &target);
    assert_eq!(report.outcome, Outcome::Failed);
    let calls = target.calls();
    assert!(!calls.iter().any(|c| c.starts_with("switch")), "{calls:?}");
    assert!(
        !calls.iter().any(|c| c.starts_with("health_gate")),
        "{calls:?}"
    );
    assert_eq!(
        &calls[calls.len() - 3..],
        ["retire web.prod-green", "record v2 failed", "release_lock"]
    );
}

#[test]
fn failing_health_leaves_the_live_release_alone() {
    let target = FakeTarget::failing_at("health_gate");
    let (report, _, _) = run_deploy("", true, &target);
    assert!(!report.ok);
    assert_eq!(report.outcome, Outcome::Failed);
    let calls = target.calls();
    assert!(!calls.iter().any(|c| c.starts_with("switch")), "{calls:?}");
    assert!(
        !calls.contains(&"retire web.prod-blue".to_string()),
        "{calls:?}"
    );
    assert_eq!(
        &calls[calls.len() - 3..],
        ["retire web.prod-green", "record v2 failed", "release_lock"]
    );
    let failure = report.failure.expect("a failure report");
    assert_eq!(failure.reason, "health_gate failed (scripted)");
    assert_eq!(failure.logs, ["last log line"]);
}

#[test]
fn failing_verify_switches_back_and_stops_the_new_release() {
    let target = FakeTarget::failing_at("verify");
    let (report, _, _) = run_deploy("", true, &target);
    assert_eq!(report.outcome, Outcome::RolledBack);
    let calls = target.calls();
    let switches: Vec<&String> = calls.iter().filter(|c| c.starts_with("switch")).collect();
    assert_eq!(switches, ["switch web.prod-green", "switch web.prod-blue"]);
    assert!(
        !calls.contains(&"retire web.prod-blue".to_string()),
        "{calls:?}"
    );
    assert_eq!(
        &calls[calls.len() - 3..],
        [
            "retire web.prod-green",
            "record v2 rolled_back",
            "release_lock"
        ]
    );
    let reason = report.failure.expect("a failure report").reason;
    assert!(reason.ends_with("; rolled back to v1"), "{reason}");
}

#[test]
fn without_automatic_rollback_a_failing_verify_keeps_the_new_release_serving() {
    let target = FakeTarget::failing_at("verify");
    let (report, _, _) = run_deploy("[rollback]\nautomatic = false\n", true, &target);
    assert_eq!(report.outcome, Outcome::Failed);
    let calls = target.calls();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("switch")).count(),
        1,
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.starts_with("retire")), "{calls:?}");
    assert_eq!(
        &calls[calls.len() - 2..],
        ["record v2 failed", "release_lock"]
    );
}

#[test]
fn a_first_deploy_that_fails_health_has_nothing_to_switch_back_to() {
    let target = FakeTarget::failing_at("health_gate");
    let (report, plan, _) = run_deploy("", false, &target);
    assert_eq!(plan.color, Color::Blue);
    assert_eq!(report.outcome, Outcome::Failed);
    assert_eq!(
        target.calls(),
        [
            "ensure_network",
            "ensure_router",
            "record v2 in_progress",
            "create_release web.prod-blue",
            "start_release web.prod-blue",
            "health_gate web.prod-blue",
            "retire web.prod-blue",
            "record v2 failed",
            "release_lock",
        ]
    );
}

fn described(steps: &[Step]) -> Vec<String> {
    steps.iter().map(Step::describe).collect()
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

const HOOKS: &str =
    "[hooks]\npost_deploy = [\"true\"]\non_failure = [\"true\"]\non_rollback = [\"true\"]\n";

#[test]
fn the_executed_steps_of_a_deploy_are_its_plan() {
    let target = FakeTarget::default();
    let (report, plan, executed) = run_deploy(HOOKS, true, &target);
    assert!(report.ok, "{report:?}");
    assert!(
        plan.steps.iter().any(|s| matches!(
            s,
            Step::RunHook {
                hook: plan::Hook::PostDeploy,
                ..
            }
        )),
        "{:?}",
        plan.steps
    );
    assert_eq!(executed, described(after_lock(&plan)));
}

#[test]
fn the_executed_steps_of_a_failed_deploy_are_its_plan_up_to_the_failure_then_its_failure_branch() {
    let target = FakeTarget::failing_at("health_gate");
    let (report, plan, executed) = run_deploy(HOOKS, true, &target);
    assert_eq!(report.outcome, Outcome::Failed);
    let steps = after_lock(&plan);
    let health = steps
        .iter()
        .position(|s| matches!(s, Step::WaitHealthy { .. }))
        .expect("a health step");
    let mut expected = described(&steps[..=health]);
    expected.extend(described(&plan.on_failure));
    assert_eq!(executed, expected);
    // The failure branch did what it says: no switch happened, so none back; the new release stopped.
    assert!(!target.calls().iter().any(|c| c.starts_with("switch")));
    assert!(
        target
            .calls()
            .contains(&"retire web.prod-green".to_string())
    );
}

#[test]
fn a_verify_failure_walks_the_whole_failure_branch_including_the_switch_back() {
    let target = FakeTarget::failing_at("verify");
    let (report, plan, executed) = run_deploy(HOOKS, true, &target);
    assert_eq!(report.outcome, Outcome::RolledBack);
    assert!(matches!(plan.on_failure[0], Step::SwitchBack { .. }));
    let steps = after_lock(&plan);
    let verify = steps
        .iter()
        .position(|s| matches!(s, Step::Verify { .. }))
        .expect("a verify step");
    let mut expected = described(&steps[..=verify]);
    expected.extend(described(&plan.on_failure));
    assert_eq!(executed, expected);
}

#[test]
fn the_executed_steps_of_a_rollback_are_its_plan() {
    let loaded = loaded(HOOKS);
    let engine = NoEngine;
    let session = Session::new(&loaded, &engine, &Silent);
    // v1 served before; v2 is live on green.
    let mut observed = observed(true);
    observed.releases[0].outcome = Outcome::Good;
    observed.releases.push(ReleaseRecord {
        id: "2".into(),
        version: "v2".into(),
        color: Color::Green,
        container: "web.prod-green".into(),
        outcome: Outcome::Live,
        ..observed.releases[0].clone()
    });
    observed.live = Some(Target {
        addr: "web.prod-green:8080".into(),
        container: "web.prod-green".into(),
        version: "v2".into(),
        color: Color::Green,
    });
    observed.images.insert("v1".into());
    let plan = plan::plan_rollback(&loaded, None, &observed, "deployctl-proxy:test", false)
        .expect("a rollback plan");
    assert_eq!(plan.version, "v1");
    let target = FakeTarget::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let report = runtime
        .block_on(execute(
            &session,
            &target,
            &plan,
            &observed,
            &plan.steps[1..],
            Instant::now(),
            "deployctl-proxy:test",
        ))
        .expect("the run itself is possible");
    assert!(report.ok, "{report:?}");
    assert_eq!(session.executed(), described(&plan.steps[1..]));
    assert!(target.calls().contains(&"switch web.prod-blue".to_string()));
    assert!(
        target
            .calls()
            .contains(&"retire web.prod-green".to_string())
    );
}
