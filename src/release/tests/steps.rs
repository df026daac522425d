//! The plan is the program: a run's executed steps are its dry-run plan (the steps up to a
//! failure, then the failure branch), and the executor uses the values the steps carry.

use std::time::Instant;

use super::fake::{FakeTarget, NoEngine};
use super::plan::{self, DeployRequest, Step};
use super::{Session, after_lock, execute, loaded, observed, run_deploy, run_edited_deploy};
use crate::names::Color;
use crate::proxy::protocol::{Outcome, ReleaseRecord, Target};
use crate::release::plan::Hidden;
use crate::report::Silent;

fn described(steps: &[Step]) -> Vec<String> {
    steps.iter().map(Step::describe).collect()
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
    // These runs start after the lock, as the pipeline's second part does.
    session.progress(|p| p.lock_held = true);
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

/// The executor probes and switches with what the steps carry, not with the configuration: a plan
/// edited after planning is what reaches the target.
#[test]
fn the_health_rules_come_from_the_steps() {
    let target = FakeTarget::failing_at("verify");
    let (report, _, _) = run_edited_deploy("", true, &target, |plan| {
        let steps = plan.steps.iter_mut().chain(plan.on_failure.iter_mut());
        for step in steps {
            match step {
                Step::WaitHealthy {
                    spec: Hidden(s), ..
                }
                | Step::Switch {
                    health: Hidden(s), ..
                }
                | Step::Verify {
                    health: Hidden(s), ..
                }
                | Step::SwitchBack {
                    health: Hidden(s), ..
                } => {
                    s.url = s.url.replace("/health", "/edited");
                    s.healthy_threshold = 9;
                }
                _ => {}
            }
        }
    });
    assert_eq!(report.outcome, Outcome::RolledBack);
    assert_eq!(
        target.specs(),
        [
            "health_gate http://web.prod-green:8080/edited 9",
            "switch http://web.prod-green:8080/edited 9",
            "verify http://web.prod-green:8080/edited 9",
            "switch http://web.prod-blue:8080/edited 9",
        ]
    );
}

#[test]
fn a_failure_before_the_lock_touches_nothing_and_runs_only_what_follows_the_lock_release() {
    let loaded = loaded(&format!("[test]\ncommands = [[\"false\"]]\n{HOOKS}"));
    let engine = NoEngine;
    let session = Session::new(&loaded, &engine, &Silent);
    let observed = observed(true);
    let req = DeployRequest {
        version: "v2".into(),
        image: None,
        image_id: None,
        skip_tests: false,
        proxy_image: "deployctl-proxy:test".into(),
    };
    let plan = plan::plan_deploy(&loaded, &req, &observed);
    let lock_at = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::AcquireLock { .. }))
        .expect("a lock step");
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
            &plan.steps[..=lock_at],
            Instant::now(),
            "deployctl-proxy:test",
        ))
        .expect("the run itself is possible");
    assert!(!report.ok);
    assert!(
        report
            .failure
            .as_ref()
            .is_some_and(|f| f.reason.starts_with("test failed")),
        "{report:?}"
    );
    // Nothing on the host: no lock, no container, no ledger record.
    assert_eq!(target.calls(), Vec::<String>::new());
    let test_at = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::RunTest { .. }))
        .expect("a test step");
    let after_release = plan
        .on_failure
        .iter()
        .position(|s| matches!(s, Step::ReleaseLock { .. }))
        .expect("the failure branch releases the lock")
        + 1;
    let mut expected = described(&plan.steps[..=test_at]);
    expected.extend(described(&plan.on_failure[after_release..]));
    assert_eq!(session.executed(), expected);
}
