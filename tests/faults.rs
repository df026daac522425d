//! Fault injection on the real Docker Engine: deployctl killed with SIGKILL at each phase of a
//! deploy (nothing of it runs afterwards: no cleanup, no lock release), and the live app container
//! killed under a deployed release. Throughout, a load loop hits the public endpoint and no
//! request may fail; afterwards the next runs must reconcile what was left behind.
//! The runs to kill are followed through their `--output json` events (see tests/support/watch.rs).
//! The apps run without a verify window: it would only add its length to each of the many deploys.

mod support;

use std::time::Duration;

use support::{App, Ended, Load, LoadStats, Trigger, phase_done, phase_started, wait_until};

/// Longest any single phase may take to show up on a loaded 2-core machine.
const PHASE_WAIT: Duration = Duration::from_secs(90);

fn deploy_ok(app: &App, version: &str) {
    let run = app.deploy(version, &[]);
    assert_eq!(run.code, 0, "deploy {version}: {run}");
    assert_eq!(app.serving().as_deref(), Some(version));
}

fn assert_no_failed_requests(stats: &LoadStats, versions: &[&str]) {
    assert!(stats.sent >= 50, "the load loop ran: {stats:?}");
    assert_eq!(
        stats.failed,
        0,
        "failed requests while deployctl was killed and after: {:?}",
        &stats.failures[..stats.failures.len().min(10)]
    );
    for body in stats.bodies.keys() {
        let v = support::body_version(body).unwrap_or_default();
        assert!(versions.contains(&v.as_str()), "unexpected body {body}");
    }
}

/// `deploy <version>`, killed with SIGKILL as soon as it emits the event `trigger` picks;
/// returns that event and how the run ended.
fn deploy_killed_at(
    app: &App,
    version: &str,
    env: &[(&str, &str)],
    trigger: Trigger,
) -> (serde_json::Value, Ended) {
    let mut run = app.spawn_watched(&["deploy", "--release", version], env, trigger);
    let event = run.wait_trigger(PHASE_WAIT);
    let ended = run.kill9();
    assert_eq!(ended.signal, Some(9), "killed by SIGKILL:\n{ended}");
    (event, ended)
}

fn release_outcomes(app: &App) -> Vec<(String, String, String)> {
    let run = app.run(&["releases", "--output", "json"], &[]);
    assert_eq!(run.code, 0, "{run}");
    let doc: serde_json::Value = run.json();
    doc["releases"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["version"].as_str().unwrap_or("").to_string(),
                        r["outcome"].as_str().unwrap_or("").to_string(),
                        r["reason"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What the runs after a kill -9 must do: `status` shows the serving release as healthy; a lock
/// left behind is reported as stale, blocks a deploy (exit 3, with the hint to break it) and is
/// broken with `lock release --force`; the next deploy succeeds, replaces whatever the killed run
/// left in the idle colour, and no release stays `in_progress` in the ledger.
/// Returns whether a lock had been left behind.
fn reconcile(app: &App, expect_live: &str, next: &str) -> bool {
    let (lock_left, live_color) = reconcile_lock(app, expect_live, next);
    reconcile_deploy(app, next, &live_color);
    lock_left
}

/// `status` and the lock, after the kill; returns whether a lock was left and the live colour.
fn reconcile_lock(app: &App, expect_live: &str, next: &str) -> (bool, String) {
    let status = app.run(&["status", "--output", "json"], &[]);
    assert_eq!(status.code, 0, "status after the kill: {status}");
    let doc: serde_json::Value = status.json();
    assert_eq!(doc["live"]["version"], expect_live, "{doc}");
    assert_eq!(doc["healthy"], true, "{doc}");
    let live_color = doc["live"]["color"].as_str().unwrap_or("").to_string();

    let lock_left = app.lock_exists();
    if lock_left {
        let lock = app.run(&["lock", "status"], &[]);
        assert_eq!(lock.code, 0, "{lock}");
        assert!(
            lock.stdout.contains("stale") && lock.stdout.contains("no longer runs on this host"),
            "the dead holder is recognised: {lock}"
        );
        assert!(lock.stdout.contains("lock release --force"), "{lock}");
        // An existing image: no build before the lock is tried.
        let live_image = format!("{}:{expect_live}", app.name);
        let blocked = app.run(&["deploy", "--release", next, "--image", &live_image], &[]);
        assert_eq!(blocked.code, 3, "a stale lock still blocks: {blocked}");
        assert!(
            blocked.stderr.contains("lock release --force"),
            "the hint names the way out: {blocked}"
        );
        // Without --force the lock of another process is never broken.
        let refused = app.run(&["lock", "release"], &[]);
        assert_eq!(refused.code, 3, "{refused}");
        assert!(app.lock_exists());
        let broken = app.run(&["lock", "release", "--force"], &[]);
        assert_eq!(broken.code, 0, "{broken}");
        assert!(!app.lock_exists(), "lock release --force removed it");
    }
    (lock_left, live_color)
}

/// The first deploy after the kill (and after breaking the lock).
fn reconcile_deploy(app: &App, next: &str, live_color: &str) -> support::Run {
    let idle = app.container(if live_color == "blue" {
        "green"
    } else {
        "blue"
    });
    let leftover = app.container_id(&idle);
    let run = app.run(&["deploy", "--release", next, "--output", "json"], &[]);
    assert_eq!(run.code, 0, "the deploy after the kill: {run}");
    assert_eq!(app.serving().as_deref(), Some(next));
    if let Some(old_id) = leftover {
        let new_id = app.container_id(&idle);
        assert!(
            new_id.is_some() && new_id.as_deref() != Some(old_id.as_str()),
            "{idle}: the leftover container was replaced"
        );
        let label = support::docker(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"deployctl.version\"}}",
            &idle,
        ])
        .unwrap_or_default();
        assert_eq!(label.trim(), next, "{idle} now runs {next}");
    }
    assert!(
        !app.lock_exists(),
        "the reconciling deploy released its lock"
    );
    let ledger = release_outcomes(app);
    assert!(
        !ledger.iter().any(|(_, o, _)| o == "in_progress"),
        "interrupted releases are closed in the ledger: {ledger:?}"
    );
    run
}

#[test]
fn kill9_after_the_build() {
    let app = App::with_verify("dctk9b", "0s");
    deploy_ok(&app, "v1");
    let load = Load::start(app.port, 40);
    let (_, ended) = deploy_killed_at(&app, "v2", &[], phase_done("build"));
    assert!(
        app.container_id(&app.container("green")).is_none(),
        "{ended}"
    );
    assert!(
        support::docker(&["image", "inspect", &format!("{}:v2", app.name)]).is_ok(),
        "the image was built"
    );
    // The lock is taken a few milliseconds after the build: the kill may land on either side.
    let lock_left = reconcile(&app, "v1", "v3");
    eprintln!("after the build: lock left behind: {lock_left}");

    // A moment later: built and locked, nothing else changed yet.
    let (_, ended) = deploy_killed_at(&app, "v4", &[], phase_done("lock"));
    assert!(app.lock_exists(), "{ended}");
    assert!(reconcile(&app, "v3", "v5"));
    let stats = load.stop();
    assert_no_failed_requests(&stats, &["v1", "v3", "v5"]);
}

#[test]
fn kill9_after_the_new_container_starts() {
    let app = App::with_verify("dctk9s", "0s");
    deploy_ok(&app, "v1");
    let load = Load::start(app.port, 40);
    let (_, ended) = deploy_killed_at(&app, "v2", &[], phase_done("start"));
    assert_eq!(
        app.container_running(&app.container("green")),
        Some(true),
        "v2 was left running, not live:\n{ended}"
    );
    assert_eq!(app.serving().as_deref(), Some("v1"));
    let ledger = release_outcomes(&app);
    assert_eq!(
        ledger.last().map(|(v, o, _)| (v.as_str(), o.as_str())),
        Some(("v2", "in_progress")),
        "{ledger:?}"
    );
    assert!(reconcile(&app, "v1", "v3"), "the lock was left behind");
    let stats = load.stop();
    assert_no_failed_requests(&stats, &["v1", "v3"]);
    let ledger = release_outcomes(&app);
    assert!(
        ledger
            .iter()
            .any(|(v, o, r)| v == "v2" && o == "failed" && r == "interrupted"),
        "{ledger:?}"
    );
}

#[test]
fn kill9_during_the_health_wait() {
    let app = App::with_verify("dctk9h", "0s");
    deploy_ok(&app, "v1");
    let load = Load::start(app.port, 40);
    // v2 never answers (errors would fail it fast), so the kill lands inside the health wait
    // whatever the timing.
    let (_, ended) = deploy_killed_at(
        &app,
        "v2",
        &[("DEMO_MODE", "refuse")],
        support::probe_failed(),
    );
    assert!(
        ended.started("health") && !ended.finished("health"),
        "{ended}"
    );
    assert_eq!(app.serving().as_deref(), Some("v1"));
    assert!(reconcile(&app, "v1", "v3"), "the lock was left behind");
    let stats = load.stop();
    assert_no_failed_requests(&stats, &["v1", "v3"]);
    let ledger = release_outcomes(&app);
    assert!(
        ledger
            .iter()
            .any(|(v, o, r)| v == "v2" && o == "failed" && r == "interrupted"),
        "{ledger:?}"
    );
}

/// Killed once its switch is done, while it watches the new release: the old colour is only
/// stopped after the verify window, so it must still run. The killed run gets a verify window
/// far longer than any delay of the kill (its events arrive in order: `switch` done, then
/// `verify` started, and the kill lands at the latter); the other runs have none.
#[test]
fn kill9_right_after_the_switch() {
    let app = App::with_verify("dctk9w", "${DCTK_VERIFY:-0s}");
    deploy_ok(&app, "v1");
    let load = Load::start(app.port, 40);
    let (_, ended) = deploy_killed_at(
        &app,
        "v2",
        &[("DCTK_VERIFY", "10m")],
        phase_started("verify"),
    );
    assert!(ended.finished("switch"), "{ended}");
    assert!(
        !ended.started("stop"),
        "killed before the old colour's stop: {ended}"
    );
    // The switch completed before the kill: v2 serves, v1 was never stopped.
    assert_eq!(app.serving().as_deref(), Some("v2"), "{ended}");
    assert_eq!(app.container_running(&app.container("blue")), Some(true));
    assert!(reconcile(&app, "v2", "v3"), "the lock was left behind");
    let stats = load.stop();
    assert_no_failed_requests(&stats, &["v1", "v2", "v3"]);
    assert_eq!(app.status_json()["live"]["color"], "blue");
    assert_served_then_replaced(&app);
}

/// After a run killed once its switch was done: v2 served, so the ledger calls it good (served,
/// then replaced by v3), not failed.
fn assert_served_then_replaced(app: &App) {
    let ledger = release_outcomes(app);
    let outcomes: Vec<(&str, &str)> = ledger
        .iter()
        .map(|(v, o, _)| (v.as_str(), o.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [("v1", "good"), ("v2", "good"), ("v3", "live")],
        "{ledger:?}"
    );
    assert_eq!(ledger[1].2, "interrupted after its switch", "{ledger:?}");
    assert_eq!(app.status_json()["previous"]["version"], "v2");
}

#[test]
fn kill9_during_the_drain() {
    // A drain long enough to outlast the kill and the reconciling runs (each builds an image).
    let app = App::with_overlay("dctk9d", "0s", "[deploy]\ndrain_timeout = \"40s\"\n");
    deploy_ok(&app, "v1");
    let load = Load::start(app.port, 40);
    let mut run = app.spawn_watched(&["deploy", "--release", "v2"], &[], phase_done("start"));
    run.wait_trigger(PHASE_WAIT);
    // In flight to v1 when the switch happens, and still for most of drain_timeout after it: it
    // must finish on v1 although deployctl dies and the next deploy comes.
    let port = app.port;
    let slow = std::thread::spawn(move || {
        support::http_get_within(port, "/slow?ms=20000", Duration::from_secs(60))
    });
    // The swap is done once v2 answers; the drain then waits for the slow request.
    assert!(
        wait_until(Duration::from_secs(10), || app.serving().as_deref()
            == Some("v2")),
        "the switch happened:\n{:?}",
        run.events()
    );
    let ended = run.kill9();
    assert_eq!(ended.signal, Some(9));
    assert!(
        ended.started("switch") && !ended.finished("switch"),
        "killed during the drain, not after it:\n{ended}"
    );
    let (lock_left, live_color) = reconcile_lock(&app, "v2", "v3");
    assert!(lock_left, "the lock was left behind");
    let still_open = !slow.is_finished();
    let next = reconcile_deploy(&app, "v3", &live_color);
    if still_open {
        // Its container is the idle colour's leftover: removing it would cut the request.
        assert!(
            next.events()
                .iter()
                .any(|e| e["event"] == "phase_started" && e["phase"] == "drain"),
            "the next deploy waited for the request in flight before removing v1: {next}"
        );
    } else {
        eprintln!("the slow request ended before the next deploy: its drain was not exercised");
    }
    let slow = slow.join().expect("slow request thread");
    let stats = load.stop();
    match slow {
        Ok((200, body)) => assert_eq!(
            support::body_version(&body).as_deref(),
            Some("v1"),
            "{body}"
        ),
        other => panic!("the request in flight to v1 during the drain failed: {other:?}"),
    }
    assert_no_failed_requests(&stats, &["v1", "v2", "v3"]);
    assert_served_then_replaced(&app);
}

#[test]
fn kill9_during_pruning() {
    let app = App::with_overlay("dctk9p", "0s", "[deploy]\nkeep_releases = 1\n");
    deploy_ok(&app, "v1");
    deploy_ok(&app, "v2");
    let image = |v: &str| format!("{}:{v}", app.name);
    let exists = |v: &str| support::docker(&["image", "inspect", &image(v)]).is_ok();
    assert!(exists("v1"), "v1 is kept while it is the last good release");
    let load = Load::start(app.port, 40);
    // v3 replaces v2; with keep_releases = 1 the image of v1 goes.
    let (event, ended) = deploy_killed_at(&app, "v3", &[], phase_started("prune"));
    let detail = event["detail"].as_str().unwrap_or("");
    assert!(detail.contains(&image("v1")), "{event}\n{ended}");
    assert_eq!(app.serving().as_deref(), Some("v3"));
    eprintln!(
        "during pruning: the image of v1 was {} when the kill landed",
        if exists("v1") {
            "still there"
        } else {
            "already removed"
        }
    );
    // v3 was recorded live before the prune began.
    assert!(reconcile(&app, "v3", "v4"), "the lock was left behind");
    let stats = load.stop();
    assert_no_failed_requests(&stats, &["v2", "v3", "v4"]);
    assert!(!exists("v1") && !exists("v2"), "the next deploy pruned");
    assert!(exists("v3") && exists("v4"), "live and last good are kept");
}

#[test]
fn live_container_killed_or_crashed() {
    let app = App::new("dctk9c");
    deploy_ok(&app, "v1");
    let blue = app.container("blue");

    // A crash (the app's process dies): the restart policy brings it back.
    let pid = support::docker(&["inspect", "--format", "{{.State.Pid}}", &blue]).expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert!(
        wait_until(Duration::from_secs(20), || app.serving().as_deref()
            == Some("v1")),
        "Docker restarted the crashed app"
    );
    let restarts = support::docker(&["inspect", "--format", "{{.RestartCount}}", &blue])
        .expect("restart count");
    assert_eq!(restarts.trim(), "1");
    let status = app.run(&["status"], &[]);
    assert_eq!(status.code, 0, "{status}");

    // `docker kill` counts as a manual stop: unless-stopped does not restart it (it is still down
    // after the `status` runs below, and its restart count stays at 1).
    support::docker(&["kill", &blue]).expect("docker kill");
    assert_eq!(app.container_running(&blue), Some(false));
    let status = app.run(&["status"], &[]);
    assert_eq!(status.code, 1, "{status}");
    assert!(
        status.stdout.contains(&blue) || status.stderr.contains(&blue),
        "{status}"
    );
    let doc = app.status_json();
    assert_eq!(doc["healthy"], false, "{doc}");
    assert_eq!(doc["live"]["running"], false, "{doc}");
    let problems = doc["problems"].to_string();
    assert!(
        problems.contains("exited") && problems.contains("docker start"),
        "{problems}"
    );
    assert_eq!(app.container_running(&blue), Some(false), "stays down");
    let restarts = support::docker(&["inspect", "--format", "{{.RestartCount}}", &blue])
        .expect("restart count");
    assert_eq!(restarts.trim(), "1", "not restarted after the manual stop");

    // The next deploy puts a healthy release back.
    deploy_ok(&app, "v2");
    let status = app.run(&["status"], &[]);
    assert_eq!(status.code, 0, "{status}");
}
