//! The probe loop and its two ending rules: `Until` N consecutive passes (the deploy gate) and
//! `Watch` for a window (the verify window), through `run` and its shorthands.

use std::time::{Duration, Instant};

use deployctl::health::{Ending, HealthOutcome, HealthSpec, ProbeResult, run, wait_healthy, watch};
use tokio::net::TcpListener;

use crate::{error_of, free_port, reply, serve, serve_on, spec, wait};

#[tokio::test]
async fn healthy_after_exactly_threshold_probes() {
    let server = serve(|_| reply(200, r#"{"status":"ok"}"#)).await;
    let mut s = spec(server.url("/health"));
    s.healthy_threshold = 3;
    let (outcome, seen) = wait(&s).await;
    match outcome {
        HealthOutcome::Healthy { probes, elapsed_ms } => {
            assert_eq!(probes, 3);
            // Two intervals between three probes.
            assert!(elapsed_ms >= 100, "elapsed {elapsed_ms} ms");
        }
        other => panic!("expected Healthy, got {other:?}"),
    }
    assert_eq!(seen.len(), 3);
    assert_eq!(server.hits(), 3);
    assert!(
        seen.iter()
            .all(|p| p.ok && p.status == Some(200) && p.error.is_none())
    );
    assert!(
        seen.windows(2).all(|w| w[1].at_ms >= w[0].at_ms + 45),
        "{seen:?}"
    );
}

#[tokio::test]
async fn flapping_target_never_becomes_healthy() {
    let server = serve(|i| {
        if i % 2 == 0 {
            reply(200, "ok")
        } else {
            reply(500, "flap")
        }
    })
    .await;
    let mut s = spec(server.url("/health"));
    s.healthy_threshold = 2;
    s.unhealthy_threshold = 2;
    s.deadline_ms = 600;
    let (outcome, seen) = wait(&s).await;
    match outcome {
        HealthOutcome::DeadlineExceeded { last } => {
            assert_eq!(last.len(), 5);
            assert_eq!(last[..], seen[seen.len() - 5..]);
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert!(seen.len() >= 6, "{}", seen.len());

    // With one allowed failure, the first failure after a pass ends it.
    let mut s = spec(server.url("/health"));
    s.unhealthy_threshold = 1;
    let (outcome, _) = wait(&s).await;
    match outcome {
        HealthOutcome::Unhealthy { reason, last } => {
            assert!(reason.contains("expected status 200, got 500"), "{reason}");
            assert_eq!(last.last().and_then(|p| p.status), Some(500));
        }
        other => panic!("expected Unhealthy, got {other:?}"),
    }
}

#[tokio::test]
async fn failures_after_a_pass_make_the_target_unhealthy() {
    let server = serve(|i| {
        if i == 0 {
            reply(200, "ok")
        } else {
            reply(500, "broken")
        }
    })
    .await;
    let mut s = spec(server.url("/health"));
    s.healthy_threshold = 3;
    s.unhealthy_threshold = 2;
    let (outcome, seen) = wait(&s).await;
    match outcome {
        HealthOutcome::Unhealthy { reason, last } => {
            assert_eq!(
                reason,
                "2 consecutive failed probes after the target had passed; last: expected status 200, got 500"
            );
            assert_eq!(last.len(), 3);
            assert!(last[0].ok && !last[1].ok && !last[2].ok);
        }
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    assert_eq!(seen.len(), 3);
}

#[tokio::test]
async fn never_ready_ends_at_the_deadline_with_the_last_probes() {
    let server = serve(|_| reply(503, r#"{"status":"starting"}"#)).await;
    let mut s = spec(server.url("/health"));
    s.deadline_ms = 500;
    // Inside the start period failures do not count: only the deadline ends the wait.
    s.start_period_ms = 500;
    let started = Instant::now();
    let (outcome, seen) = wait(&s).await;
    let took = started.elapsed();
    match outcome {
        HealthOutcome::DeadlineExceeded { last } => {
            assert_eq!(last.len(), 5);
            for p in &last {
                assert_eq!(p.status, Some(503));
                assert_eq!(p.body_head, r#"{"status":"starting"}"#);
                assert_eq!(error_of(p), "expected status 200, got 503");
            }
            assert!(last.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert!(seen.len() >= 6, "{}", seen.len());
    assert!(seen.iter().all(|p| p.at_ms < 500), "{seen:?}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
}

#[tokio::test]
async fn item17_errors_fail_the_wait_from_the_first_answer() {
    let server = serve(|_| reply(500, "broken")).await;
    let mut s = spec(server.url("/health"));
    s.deadline_ms = 60_000;
    s.unhealthy_threshold = 3;
    let (outcome, seen) = wait(&s).await;
    match outcome {
        HealthOutcome::Unhealthy { reason, .. } => assert_eq!(
            reason,
            "3 consecutive failed probes since its first answer; last: expected status 200, got 500"
        ),
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    assert_eq!(seen.len(), 3);

    // Failures of probes started inside the start period do not count.
    s.start_period_ms = 300;
    let (outcome, seen) = wait(&s).await;
    assert!(
        matches!(outcome, HealthOutcome::Unhealthy { .. }),
        "{outcome:?}"
    );
    let counted: Vec<&ProbeResult> = seen.iter().filter(|p| p.at_ms >= 300).collect();
    assert_eq!(counted.len(), 3, "{seen:?}");
    assert!(seen.len() > 3, "{seen:?}");
}

#[tokio::test]
async fn slow_start_is_not_a_failure() {
    let port = free_port().await;
    // The app starts listening only after its port has refused ten probes.
    let (start_app, app_started) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if app_started.await.is_ok() {
            let listener = TcpListener::bind(("127.0.0.1", port))
                .await
                .expect("rebind");
            let _server = serve_on(listener, |_, _| reply(200, "ok"));
        }
    });
    let mut s = spec(format!("http://127.0.0.1:{port}/health"));
    s.unhealthy_threshold = 1;
    s.deadline_ms = 30_000;
    let mut seen = Vec::new();
    let mut start_app = Some(start_app);
    let outcome = wait_healthy(&s, &mut |p: &ProbeResult| {
        seen.push(p.clone());
        if seen.len() == 10
            && let Some(start) = start_app.take()
        {
            let _ = start.send(());
        }
    })
    .await;
    assert!(
        matches!(outcome, HealthOutcome::Healthy { .. }),
        "{outcome:?}"
    );
    let refused = seen
        .iter()
        .filter(|p| error_of(p) == "connection refused")
        .count();
    assert!(refused >= 10, "{seen:?}");
    assert!(seen.iter().rev().take(2).all(|p| p.ok));
}

#[tokio::test]
async fn watch_reports_failure_after_the_switch() {
    let server = serve(|i| {
        if i < 4 {
            reply(200, "ok")
        } else {
            reply(500, "oops")
        }
    })
    .await;
    let mut s = spec(server.url("/health"));
    s.unhealthy_threshold = 2;
    let mut seen = 0;
    let outcome = watch(&s, Duration::from_secs(5), &mut |_: &ProbeResult| seen += 1).await;
    match outcome {
        HealthOutcome::Unhealthy { reason, last } => {
            assert!(
                reason.starts_with("2 consecutive failed probes during the verify window"),
                "{reason}"
            );
            assert_eq!(last.len(), 5);
            assert!(!last[4].ok && !last[3].ok && last[2].ok);
        }
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    assert_eq!(seen, 6);
}

#[tokio::test]
async fn watch_passes_when_the_window_ends_healthy() {
    // A single failure below the threshold does not fail the window.
    let server = serve(|i| {
        if i == 2 {
            reply(500, "blip")
        } else {
            reply(200, "ok")
        }
    })
    .await;
    let s = spec(server.url("/health"));
    let mut seen = Vec::new();
    let outcome = watch(&s, Duration::from_millis(400), &mut |p: &ProbeResult| {
        seen.push(p.clone())
    })
    .await;
    match outcome {
        HealthOutcome::Healthy { probes, elapsed_ms } => {
            assert_eq!(probes as usize, seen.len());
            // One probe per 50 ms interval at most, none after the window.
            assert!((3..=9).contains(&probes), "{probes}");
            assert!(seen.iter().all(|p| p.at_ms < 400), "{seen:?}");
            assert!(!seen[2].ok, "{seen:?}");
            assert!(elapsed_ms >= 400);
        }
        other => panic!("expected Healthy, got {other:?}"),
    }
}

/// Runs the loop with `ending`, returning the outcome and every probe seen.
async fn run_with(spec: &HealthSpec, ending: Ending) -> (HealthOutcome, Vec<ProbeResult>) {
    let mut seen = Vec::new();
    let outcome = run(spec, &ending, &mut |p: &ProbeResult| seen.push(p.clone())).await;
    (outcome, seen)
}

#[test]
fn endings_take_their_rules_from_the_spec() {
    let mut s = spec("http://app:8080/health".into());
    s.start_period_ms = 250;
    assert_eq!(
        Ending::until(&s),
        Ending::Until {
            passes: 2,
            unhealthy_threshold: 3,
            start_period: Duration::from_millis(250),
            deadline: Duration::from_millis(3000),
        }
    );
    assert_eq!(
        Ending::watch(&s, Duration::from_secs(9)),
        Ending::Watch {
            window: Duration::from_secs(9),
            unhealthy_threshold: 3,
        }
    );
}

#[tokio::test]
async fn until_ends_at_its_own_number_of_passes() {
    let server = serve(|_| reply(200, "ok")).await;
    // The spec's threshold is not the rule: the ending is.
    let mut s = spec(server.url("/health"));
    s.healthy_threshold = 9;
    let until = |passes| Ending::Until {
        passes,
        unhealthy_threshold: 1,
        start_period: Duration::ZERO,
        deadline: Duration::from_secs(30),
    };
    let (outcome, seen) = run_with(&s, until(4)).await;
    assert!(
        matches!(outcome, HealthOutcome::Healthy { probes: 4, .. }),
        "{outcome:?}"
    );
    assert_eq!(seen.len(), 4);
    // Zero passes counts as one.
    let (outcome, _) = run_with(&s, until(0)).await;
    assert!(
        matches!(outcome, HealthOutcome::Healthy { probes: 1, .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn until_does_not_count_refusals_but_watch_does() {
    let port = free_port().await;
    let s = spec(format!("http://127.0.0.1:{port}/health"));

    // The gate: a port that refuses has not answered yet, so only the deadline ends the wait.
    let (outcome, seen) = run_with(
        &s,
        Ending::Until {
            passes: 1,
            unhealthy_threshold: 1,
            start_period: Duration::ZERO,
            deadline: Duration::from_millis(300),
        },
    )
    .await;
    match outcome {
        HealthOutcome::DeadlineExceeded { last } => {
            assert!(last.iter().all(|p| error_of(p) == "connection refused"));
        }
        other => panic!("expected DeadlineExceeded, got {other:?}"),
    }
    assert!(seen.len() >= 2, "{seen:?}");

    // The verify window: the target was serving, so a refusal is a failure from the start.
    let (outcome, seen) = run_with(
        &s,
        Ending::Watch {
            window: Duration::from_secs(30),
            unhealthy_threshold: 2,
        },
    )
    .await;
    match outcome {
        HealthOutcome::Unhealthy { reason, last } => {
            assert_eq!(
                reason,
                "2 consecutive failed probes during the verify window; last: connection refused"
            );
            assert_eq!(last, seen);
        }
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    assert_eq!(seen.len(), 2);
}

#[tokio::test]
async fn watch_ignores_the_start_period_and_the_passes() {
    // Three passes, three failures, then passes again.
    let server = serve(|i| {
        if (3..6).contains(&i) {
            reply(503, "down")
        } else {
            reply(200, "ok")
        }
    })
    .await;
    let mut s = spec(server.url("/health"));
    // Both would end or excuse an `Until`; neither applies to a watch.
    s.healthy_threshold = 1;
    s.start_period_ms = 60_000;
    let (outcome, seen) = run_with(&s, Ending::watch(&s, Duration::from_secs(30))).await;
    match outcome {
        HealthOutcome::Unhealthy { reason, .. } => assert_eq!(
            reason,
            "3 consecutive failed probes during the verify window; last: expected status 200, got 503"
        ),
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    assert_eq!(seen.len(), 6);

    // The same target, passing again, is healthy at its first pass under the gate's rule.
    let (outcome, seen) = run_with(&s, Ending::until(&s)).await;
    assert!(
        matches!(outcome, HealthOutcome::Healthy { probes: 1, .. }),
        "{outcome:?}"
    );
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn until_counts_failures_from_the_start_period_of_the_ending() {
    let server = serve(|_| reply(500, "broken")).await;
    let mut s = spec(server.url("/health"));
    s.start_period_ms = 0;
    let (outcome, seen) = run_with(
        &s,
        Ending::Until {
            passes: 1,
            unhealthy_threshold: 2,
            start_period: Duration::from_millis(200),
            deadline: Duration::from_secs(30),
        },
    )
    .await;
    assert!(
        matches!(outcome, HealthOutcome::Unhealthy { .. }),
        "{outcome:?}"
    );
    let counted = seen.iter().filter(|p| p.at_ms >= 200).count();
    assert_eq!(counted, 2, "{seen:?}");
    assert!(seen.len() > 2, "{seen:?}");
}
