//! The fleet's batches (`deploy.parallel`) without Docker: how many hosts run a step at once, and
//! that a failure stops the hosts that have not started it yet.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::fake::NoEngine;
use super::{Session, loaded};
use crate::release::fleet::Fleet;
use crate::report::{FailureReport, Silent};

fn run_batches(
    parallel: u32,
    hosts: usize,
    fail_on: Option<usize>,
) -> (usize, Vec<usize>, Result<(), FailureReport>) {
    let loaded = loaded(&format!("[deploy]\nparallel = {parallel}\n"));
    let engine = NoEngine;
    let sessions: Vec<Session> = (0..hosts)
        .map(|i| Session::new(&loaded, &engine, &Silent).on_host(format!("ssh://h{}", i + 1)))
        .collect();
    let fleet = Fleet::new(sessions.iter().collect());
    let (now, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let ran = Mutex::new(Vec::new());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let result = runtime.block_on(fleet.in_batches(|i, _| {
        let (now, most, ran) = (&now, &most, &ran);
        async move {
            let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(at_once, Ordering::SeqCst);
            ran.lock().expect("ran").push(i);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            match fail_on {
                Some(f) if f == i => Err(FailureReport {
                    reason: "crashed".into(),
                    ..Default::default()
                }),
                _ => Ok(()),
            }
        }
    }));
    let ran = ran.into_inner().expect("ran");
    (most.into_inner(), ran, result)
}

#[test]
fn parallel_bounds_how_many_hosts_run_a_step_at_once() {
    let (most, ran, result) = run_batches(2, 5, None);
    assert!(result.is_ok());
    assert_eq!(most, 2);
    assert_eq!(ran, [0, 1, 2, 3, 4]);
    let (most, _, _) = run_batches(5, 5, None);
    assert_eq!(most, 5, "every host at once");
}

#[test]
fn a_failure_stops_the_batches_that_have_not_started_and_names_its_host() {
    let (_, ran, result) = run_batches(2, 5, Some(1));
    assert_eq!(ran, [0, 1], "the hosts after the failing batch never start");
    let report = result.expect_err("the failure");
    assert_eq!(report.host.as_deref(), Some("ssh://h2"));
    assert_eq!(report.reason, "on ssh://h2: crashed");
}
