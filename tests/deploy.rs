//! Acceptance tests of blue-green deploys on the real Docker Engine, through the real binary.

mod support;

use std::time::Duration;

use support::{App, Load, wait_until};

#[test]
fn deploy_v1_then_v2_then_rollbacks() {
    let app = App::new("dctdep");
    let run = app.deploy("v1", &[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(app.serving().as_deref(), Some("v1"));
    let status = app.status_json();
    assert_eq!(status["live"]["version"], "v1", "{status}");
    assert_eq!(status["live"]["color"], "blue");
    assert_eq!(status["live"]["container"], app.container("blue"));
    assert_eq!(status["url"], format!("http://127.0.0.1:{}", app.port));
    assert!(status["previous"].is_null(), "{status}");

    let run = app.deploy("v2", &[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(app.serving().as_deref(), Some("v2"));
    assert_eq!(
        app.container_running(&app.container("blue")),
        Some(false),
        "v1 is stopped but kept"
    );
    assert_eq!(app.container_running(&app.container("green")), Some(true));
    let status = app.status_json();
    assert_eq!(status["live"]["version"], "v2");
    assert_eq!(status["live"]["color"], "green");
    assert_eq!(status["previous"]["version"], "v1");

    let run = app.run(&["rollback"], &[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(app.serving().as_deref(), Some("v1"));
    let status = app.status_json();
    assert_eq!(status["live"]["version"], "v1");
    assert_eq!(status["live"]["color"], "blue");

    let run = app.run(&["rollback", "--to", "v2"], &[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(app.serving().as_deref(), Some("v2"));
    assert_eq!(app.status_json()["live"]["version"], "v2");

    let releases = app.run(&["releases", "--output", "json"], &[]);
    let doc: serde_json::Value = releases.json();
    let versions: Vec<&str> = doc["releases"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["version"].as_str())
        .collect();
    assert_eq!(versions, ["v1", "v2", "v1", "v2"], "{doc}");
    assert!(!app.lock_exists());
}

/// Each broken release is refused before the switch: the live v1 keeps serving from the same container.
#[test]
fn health_failures_leave_the_old_release_serving() {
    let app = App::new("dcthlt");
    let run = app.deploy("v1", &[]);
    assert_eq!(run.code, 0, "{run}");
    let live_id = app
        .container_id(&app.container("blue"))
        .expect("live container");

    // (version, environment of the broken release, evidence the report must show)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 6] = [
        ("fail500", &[("DEMO_MODE", "fail500")], "500"),
        (
            "slow",
            &[("DEMO_MODE", "slow"), ("DEMO_SLOW_MS", "3000")],
            "timed out",
        ),
        ("refuse", &[("DEMO_MODE", "refuse")], "refused"),
        ("flap", &[("DEMO_MODE", "flap")], "status"),
        ("crash", &[("DEMO_MODE", "crash")], "exit"),
        ("never", &[("DEMO_MODE", "never_ready")], "503"),
    ];
    for (version, env, evidence) in cases {
        let run = app.deploy(version, env);
        assert_eq!(run.code, 1, "{version}: {run}");
        assert!(
            run.stdout.contains(evidence) || run.stderr.contains(evidence),
            "{version}: no `{evidence}` in the report\n{run}"
        );
        assert!(
            run.stdout.contains("log lines"),
            "{version}: the report has the container's logs\n{run}"
        );
        assert_eq!(
            app.serving().as_deref(),
            Some("v1"),
            "{version}: v1 still serves"
        );
        assert_eq!(
            app.container_id(&app.container("blue")).as_deref(),
            Some(live_id.as_str()),
            "{version}: same container"
        );
        assert_eq!(app.status_json()["live"]["version"], "v1");
        assert!(!app.lock_exists(), "{version}: lock released");
        assert_eq!(
            app.container_running(&app.container("green")),
            Some(false),
            "{version}: failed container stopped, kept"
        );
    }
}

#[test]
fn verify_failure_after_the_switch_rolls_back() {
    let app = App::with_verify("dctver", "3s");
    let run = app.deploy("v1", &[]);
    assert_eq!(run.code, 0, "{run}");
    let load = Load::start(app.port, 100);
    // Healthy for its first requests (health gate and switch), then 500 for everything.
    let run = app.deploy(
        "v2",
        &[("DEMO_MODE", "fail_after"), ("DEMO_FAIL_AFTER", "4")],
    );
    let stats = load.stop();
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stdout.contains("rolled back to v1"), "{run}");
    assert_eq!(app.serving().as_deref(), Some("v1"));
    let status = app.status_json();
    assert_eq!(status["live"]["version"], "v1", "{status}");
    assert!(stats.sent > 0);
    let doc: serde_json::Value = app.run(&["releases", "--output", "json"], &[]).json();
    let last = doc["releases"]
        .as_array()
        .and_then(|r| r.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["version"], "v2");
    assert_eq!(last["outcome"], "rolled_back", "{doc}");
}

#[test]
fn zero_downtime_through_deploy_and_rollbacks() {
    let app = App::with_verify("dctzdt", "2s");
    let run = app.deploy("v1", &[]);
    assert_eq!(run.code, 0, "{run}");
    let load = Load::start(app.port, 120);
    let sent = || load.stats.lock().expect("stats").sent;
    assert!(
        wait_until(Duration::from_secs(30), || sent() >= 50),
        "the load loop runs"
    );
    let deploy = app.deploy("v2", &[]);
    // Passes the gate, then its health checks fail during the verify window: rolled back
    // automatically while `/` keeps answering, so every failed request would be the tool's fault.
    let auto = app.deploy(
        "v3",
        &[("DEMO_MODE", "unhealthy_after"), ("DEMO_FAIL_AFTER", "4")],
    );
    let manual = app.run(&["rollback"], &[]);
    // Some more requests after the rollback, to the release it restored.
    let after = sent();
    assert!(
        wait_until(Duration::from_secs(30), || sent() >= after + 50),
        "the load loop runs after the rollback"
    );
    let stats = load.stop();
    assert_eq!(deploy.code, 0, "{deploy}");
    assert_eq!(auto.code, 1, "{auto}");
    assert_eq!(manual.code, 0, "{manual}");
    assert!(
        stats.sent >= 1000,
        "at least 200 req/s for the whole run: {stats:?}"
    );
    assert_eq!(
        stats.failed,
        0,
        "failed requests: {:?}",
        &stats.failures[..stats.failures.len().min(10)]
    );
    // Everything served came from one of the releases; v3 may answer while it is briefly live.
    for body in stats.bodies.keys() {
        let v = support::body_version(body).unwrap_or_default();
        assert!(
            ["v1", "v2", "v3"].contains(&v.as_str()),
            "unexpected body {body}"
        );
    }
    assert_eq!(app.serving().as_deref(), Some("v1"));
}

#[test]
fn two_deploys_at_once_one_is_locked_out() {
    let app = App::new("dctlck");
    let run = app.deploy("v1", &[]);
    assert_eq!(run.code, 0, "{run}");
    // A slow start keeps the first deploy inside the lock long enough.
    let first = app
        .command(
            &["deploy", "--release", "v2"],
            &[("DEMO_MODE", "slow"), ("DEMO_SLOW_MS", "800")],
        )
        .spawn()
        .expect("spawn");
    assert!(
        wait_until(Duration::from_secs(30), || app.lock_exists()),
        "first deploy took the lock"
    );
    let second = app.deploy("v3", &[]);
    assert_eq!(second.code, 3, "{second}");
    assert!(second.stderr.contains("locked"), "{second}");
    assert!(
        second.stderr.contains("deploy v2"),
        "names the holder's reason: {second}"
    );
    let first = first.wait_with_output().expect("first deploy");
    assert!(first.status.code().is_some());
    assert!(wait_until(Duration::from_secs(5), || !app.lock_exists()));

    let status = app.run(&["lock", "status"], &[]);
    assert_eq!(status.code, 0, "{status}");
    assert!(status.stdout.contains("is free"), "{status}");
}

/// `deploy <version>` interrupted with SIGINT once it emits the event `at` picks: it exits 130.
fn interrupt_during(app: &App, version: &str, env: &[(&str, &str)], at: support::Trigger) {
    let mut run = app.spawn_watched(&["deploy", "--release", version], env, at);
    run.wait_trigger(Duration::from_secs(60));
    run.signal("INT");
    let ended = run.wait_within(Duration::from_secs(60));
    assert_eq!(ended.code, Some(130), "{ended}");
}

#[test]
fn sigint_during_health_wait_and_drain_keeps_the_old_release() {
    let app = App::new("dctsig");
    let run = app.deploy("v1", &[]);
    assert_eq!(run.code, 0, "{run}");

    // During the health wait: v2 never answers (an app answering errors would fail fast).
    interrupt_during(
        &app,
        "v2",
        &[("DEMO_MODE", "refuse")],
        support::probe_failed(),
    );
    assert_eq!(app.serving().as_deref(), Some("v1"));
    assert!(!app.lock_exists(), "lock released");
    assert_eq!(app.status_json()["live"]["version"], "v1");

    // During the drain: a slow request to v1 keeps the drain open while we interrupt.
    let port = app.port;
    let slow = std::thread::spawn(move || support::http_get(port, "/slow?ms=2500"));
    assert!(
        wait_until(Duration::from_secs(10), || app.proxy_in_flight() >= Some(1)),
        "the slow request is in flight"
    );
    interrupt_during(&app, "v3", &[], support::phase_started("switch"));
    let _ = slow.join();
    assert_eq!(app.serving().as_deref(), Some("v1"), "traffic back on v1");
    assert!(!app.lock_exists(), "lock released");
}

#[test]
fn proxy_restart_restores_the_route() {
    let app = App::new("dctprx");
    let run = app.deploy("v1", &[]);
    assert_eq!(run.code, 0, "{run}");
    support::docker(&["restart", &app.proxy()]).expect("restart proxy");
    assert!(
        wait_until(Duration::from_secs(15), || app.serving().as_deref()
            == Some("v1")),
        "route restored"
    );

    // A stopped proxy is started first, so the next deploy still knows v1 is live in blue.
    support::docker(&["stop", &app.proxy()]).expect("stop proxy");
    let run = app.deploy("v2", &[]);
    assert_eq!(run.code, 0, "{run}");
    let status = app.status_json();
    assert_eq!(status["live"]["version"], "v2");
    assert_eq!(status["live"]["color"], "green");
    assert_eq!(status["previous"]["version"], "v1");
}

#[test]
fn dry_run_changes_nothing() {
    let app = App::new("dctdry");
    let run = app.run(
        &["deploy", "--dry-run", "--release", "v9", "--output", "json"],
        &[],
    );
    assert_eq!(run.code, 0, "{run}");
    let plan: serde_json::Value = run.json();
    assert_eq!(plan["plan"]["version"], "v9");
    assert_eq!(plan["plan"]["container"], app.container("blue"));
    let created = support::docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=deployctl.app={}", app.name),
    ])
    .expect("docker ps");
    assert!(
        created.trim().is_empty(),
        "dry-run created containers: {created}"
    );
    let images = support::docker(&[
        "images",
        "-q",
        "--filter",
        &format!("label=deployctl.app={}", app.name),
    ])
    .expect("docker images");
    assert!(images.trim().is_empty(), "dry-run built images: {images}");
    assert!(!app.lock_exists());
}

/// The steps a human dry-run prints: (the numbered steps, the failure branch).
fn dry_run_steps(app: &App, args: &[&str], env: &[(&str, &str)]) -> (Vec<String>, Vec<String>) {
    let mut argv = args.to_vec();
    argv.push("--dry-run");
    let run = app.run(&argv, env);
    assert_eq!(run.code, 0, "{run}");
    let (mut steps, mut on_failure) = (Vec::new(), Vec::new());
    let mut in_failure = false;
    for line in run.stdout.lines() {
        let line = line.trim_start();
        if line.starts_with("On failure:") {
            in_failure = true;
        } else if let Some(step) = line.strip_prefix("- ").filter(|_| in_failure) {
            on_failure.push(step.to_string());
        } else if let Some((n, step)) = line.split_once(". ")
            && !in_failure
            && n.chars().all(|c| c.is_ascii_digit())
            && !n.is_empty()
        {
            steps.push(step.to_string());
        }
    }
    assert!(!steps.is_empty(), "no steps in the dry-run:\n{run}");
    (steps, on_failure)
}

/// The steps a run walked, from its `--output json` result document.
fn executed_steps(app: &App, args: &[&str], env: &[(&str, &str)], code: i32) -> Vec<String> {
    let mut argv = args.to_vec();
    argv.extend(["--output", "json"]);
    let run = app.run(&argv, env);
    assert_eq!(run.code, code, "{run}");
    let doc = run.json();
    doc["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in the result:\n{run}"))
        .iter()
        .map(|s| s.as_str().expect("a step is a string").to_string())
        .collect()
}

#[test]
fn executed_steps_equal_the_dry_run() {
    let app = App::new("dctsteps");
    fn deploy(v: &str) -> Vec<&str> {
        vec!["deploy", "--release", v]
    }
    let v1 = deploy("v1");
    let (planned, _) = dry_run_steps(&app, &v1, &[]);
    assert_eq!(executed_steps(&app, &v1, &[], 0), planned);

    // Health fails: the steps up to the health check, then the whole failure branch.
    let broken = [("DEMO_MODE", "fail500")];
    let bad = deploy("bad");
    let (planned, on_failure) = dry_run_steps(&app, &bad, &broken);
    let health = planned
        .iter()
        .position(|s| s.starts_with("wait for "))
        .expect("a health step");
    let mut expected = planned[..=health].to_vec();
    expected.extend(on_failure);
    assert_eq!(executed_steps(&app, &bad, &broken, 1), expected);
    assert_eq!(app.serving().as_deref(), Some("v1"));

    let v2 = deploy("v2");
    let (planned, _) = dry_run_steps(&app, &v2, &[]);
    assert_eq!(executed_steps(&app, &v2, &[], 0), planned);

    let rollback = ["rollback"];
    let (planned, _) = dry_run_steps(&app, &rollback, &[]);
    assert_eq!(executed_steps(&app, &rollback, &[], 0), planned);
    assert_eq!(app.serving().as_deref(), Some("v1"));
}
