//! Interrupts at every call the interpreter makes to its target, then the cleanup after a signal
//! (`recover`) against the same fake: traffic ends on a running release that was not told to stop,
//! the new release is stopped unless it serves, the ledger agrees with the route, the lock goes.

use std::time::Instant;

use super::fake::{FakeTarget, NoEngine};
use super::plan::{self, DeployRequest};
use super::{Session, after_lock, execute, loaded, observed};
use crate::release::recover::recover_on;
use crate::report::Silent;

const OLD: &str = "web.prod-blue";
const NEW: &str = "web.prod-green";

/// A deploy of v2 over v1 whose call `hang_at` never returns, then the cleanup; the target's calls.
/// None when the deploy ended before that call.
fn interrupted_deploy(hang_at: usize) -> Option<FakeTarget> {
    let loaded = loaded("");
    let engine = NoEngine;
    let session = Session::new(&loaded, &engine, &Silent);
    // These runs start after the lock, as the pipeline's second part does.
    session.progress(|p| p.lock_held = true);
    session.progress(|p| p.lock_held = true);
    let observed = observed(true);
    let req = DeployRequest {
        version: "v2".into(),
        image: None,
        image_id: None,
        skip_tests: true,
        proxy_image: "deployctl-proxy:test".into(),
    };
    let plan = plan::plan_deploy(&loaded, &req, &observed);
    let target = FakeTarget::hanging_at(hang_at);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let interrupted = runtime.block_on(async {
        let run = execute(
            &session,
            &target,
            &plan,
            &observed,
            after_lock(&plan),
            Instant::now(),
            "deployctl-proxy:test",
        );
        tokio::select! {
            _ = run => false,
            _ = target.hung.notified() => true,
        }
    });
    if !interrupted {
        return None;
    }
    runtime.block_on(recover_on(&session, &target));
    Some(target)
}

#[test]
fn an_interrupt_at_any_step_leaves_traffic_on_a_running_release_that_was_not_told_to_stop() {
    let mut cases = 0;
    for hang_at in 0.. {
        let Some(target) = interrupted_deploy(hang_at) else {
            break;
        };
        cases += 1;
        let calls = target.calls();
        let (before, after) = calls.split_at(hang_at + 1);
        let context = format!("interrupted at {:?}; calls {calls:?}", before.last());
        // Where traffic ends: the last switch asked for, else where it was.
        let serving = calls
            .iter()
            .rev()
            .find_map(|c| c.strip_prefix("switch "))
            .unwrap_or(OLD);
        assert!(
            !target.is_stopped(serving),
            "{serving} serves stopped; {context}"
        );
        if serving == OLD {
            // Never back to a release whose stop was asked for.
            assert!(!before.contains(&format!("retire {OLD}")), "{context}");
            if calls.iter().any(|c| c.starts_with("start_release")) {
                assert!(
                    target.is_stopped(NEW),
                    "the new release still runs; {context}"
                );
            }
        } else {
            assert_eq!(serving, NEW, "{context}");
        }
        // The ledger says what serves, once the run had recorded itself.
        if before.iter().any(|c| c == "record v2 in_progress") {
            let last_record = calls.iter().rev().find(|c| c.starts_with("record v2"));
            let expected = if serving == NEW {
                "record v2 live"
            } else {
                "record v2 failed"
            };
            assert_eq!(last_record.map(String::as_str), Some(expected), "{context}");
        }
        assert!(
            after.iter().any(|c| c == "release_lock")
                || before.last().is_some_and(|c| c == "release_lock"),
            "the lock stays; {context}"
        );
    }
    // Every call of a whole deploy was interrupted once.
    let full = FakeTarget::default();
    let (report, _, _) = super::run_deploy("", true, &full);
    assert!(report.ok);
    assert_eq!(cases, full.calls().len(), "one case per call");
}
