//! The interpreter's failure paths against the fake target: what is touched and what is not.

use super::fake::FakeTarget;
use super::plan::Step;
use super::{planned_ops, run_deploy};
use crate::names::Color;
use crate::proxy::protocol::Outcome;

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
