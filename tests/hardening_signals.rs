//! Issue 8, items 2, 15 and 17: an interrupt while the old colour stops, health values that make
//! no sense, and a release that answers errors failing fast (with a start period for slow
//! starters). The Docker tests run on the real engine, like tests/deploy.rs.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use deployctl::config::{LoadOptions, load};
use deployctl::error::{ConfigError, Error};
use support::{App, Run, wait_until};

// ---------------------------------------------------------------- item 2

/// Runs `deploy <version>`, sends SIGINT as soon as it emits the event `trigger` picks, and
/// returns how it ended (its events, with every message it printed).
fn deploy_interrupted_at(
    app: &App,
    version: &str,
    env: &[(&str, &str)],
    trigger: support::Trigger,
) -> support::Ended {
    let mut run = app.spawn_watched(&["deploy", "--release", version], env, trigger);
    run.wait_trigger(Duration::from_secs(120));
    run.signal("INT");
    run.wait_within(Duration::from_secs(180))
}

#[test]
fn item02_sigint_while_the_old_colour_stops_keeps_the_new_release_serving() {
    // The old release keeps answering for 20 s after SIGTERM (well inside stop_timeout), so the
    // interrupt surely lands while it is stopping, and it has surely exited when we look again.
    let overlay = "[deploy]\nstop_timeout = \"60s\"\n[app.env]\nDEMO_STOP_DELAY_MS = \"20000\"\n";
    let app = App::with_overlay("dctsst", "0s", overlay);
    let run = app.deploy("v1", &[]);
    assert_eq!(run.code, 0, "{run}");
    let (blue, green) = (app.container("blue"), app.container("green"));

    let stopping_blue: support::Trigger = {
        let blue = blue.clone();
        Box::new(move |e| {
            e["event"] == "phase_started" && e["phase"] == "stop" && e["detail"] == blue.as_str()
        })
    };
    let ended = deploy_interrupted_at(&app, "v2", &[], stopping_blue);
    let stderr = format!("{}{}", ended.messages(), ended.stderr);
    assert_eq!(ended.code, Some(130), "{ended}");
    assert!(
        !stderr.contains("traffic is back on v1"),
        "no switch back to the stopping v1:\n{stderr}"
    );
    assert_eq!(app.serving().as_deref(), Some("v2"), "{stderr}");
    assert_eq!(app.container_running(&green), Some(true), "{stderr}");
    assert!(
        stderr.contains("traffic stays on v2: v1 was already being stopped"),
        "says truthfully where traffic is:\n{stderr}"
    );

    // Once v1 has finished stopping, v2 still serves and `status` is healthy.
    assert!(
        wait_until(Duration::from_secs(90), || app.container_running(&blue)
            == Some(false)),
        "v1 finished stopping"
    );
    assert_eq!(app.get().map(|(s, _)| s), Ok(200));
    assert_eq!(app.serving().as_deref(), Some("v2"));
    assert_eq!(app.container_running(&green), Some(true));
    let status = app.run(&["status"], &[]);
    assert_eq!(status.code, 0, "{status}");
    assert_eq!(app.status_json()["live"]["version"], "v2");
    assert!(!app.lock_exists(), "lock released");
    // The ledger agrees with the proxy: v2 serves.
    let releases = app.run(&["releases", "--output", "json"], &[]);
    let doc: serde_json::Value = releases.json();
    let v2 = doc["releases"]
        .as_array()
        .and_then(|a| a.iter().rev().find(|r| r["version"] == "v2"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(v2["outcome"], "live", "{doc:#}");
}

// ---------------------------------------------------------------- item 15

fn write_config(health: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("environments")).expect("mkdir");
    std::fs::write(
        dir.path().join("deploy.toml"),
        format!("[app]\nname = \"web\"\n\n[health]\n{health}"),
    )
    .expect("write deploy.toml");
    std::fs::write(dir.path().join("environments/production.toml"), "").expect("write env");
    dir
}

fn config_errors(dir: &Path) -> Vec<ConfigError> {
    let opts = LoadOptions {
        config_path: dir.join("deploy.toml"),
        env: "production".into(),
        process_env: Default::default(),
    };
    match load(&opts) {
        Ok(_) => panic!("the configuration should be refused"),
        Err(Error::Config(errs)) => errs.0,
        Err(e) => panic!("expected located config errors, got: {e}"),
    }
}

/// (line:col, key, message) of each error.
fn located(dir: &Path) -> Vec<(String, String, String)> {
    let file = dir.join("deploy.toml").display().to_string();
    config_errors(dir)
        .into_iter()
        .map(|e| {
            assert_eq!(e.file, file, "{e:#?}");
            (format!("{}:{}", e.line, e.col), e.key, e.message)
        })
        .collect()
}

fn cli_check(dir: &Path) -> Run {
    let out = std::process::Command::new(support::deployctl_bin())
        .args(["config", "--env", "production", "--config"])
        .arg(dir.join("deploy.toml"))
        .env_remove("DEPLOYCTL_ENV")
        .env_remove("DEPLOYCTL_CONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run deployctl");
    Run::from(out)
}

#[test]
fn item15_zero_health_durations_are_refused_with_their_location() {
    let dir = write_config("timeout = \"0s\"\n");
    assert_eq!(
        located(dir.path()),
        [(
            "5:11".to_string(),
            "health.timeout".to_string(),
            "must be greater than zero".to_string()
        )]
    );
    let run = cli_check(dir.path());
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr.contains("deploy.toml:5:11: `health.timeout`"),
        "{run}"
    );

    // All three at once, each at its own place, and no second error about their order.
    let dir = write_config("interval = \"0s\"\ntimeout = \"0ms\"\ndeadline = \"0\"\n");
    let keys: Vec<(String, String)> = located(dir.path())
        .into_iter()
        .map(|(at, key, message)| {
            assert_eq!(message, "must be greater than zero", "{key}");
            (at, key)
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("5:12".to_string(), "health.interval".to_string()),
            ("6:11".to_string(), "health.timeout".to_string()),
            ("7:12".to_string(), "health.deadline".to_string()),
        ]
    );
}

#[test]
fn item15_health_path_with_a_space_or_a_newline_is_refused_with_its_location() {
    for (toml_value, shown) in [
        ("\"/he alth\"", "/he alth"),
        ("\"/health\\n\"", "/health\\n"),
        ("\"/health\\tx\"", "/health\\tx"),
    ] {
        let dir = write_config(&format!("path = {toml_value}\n"));
        let errs = located(dir.path());
        assert_eq!(errs.len(), 1, "{toml_value}: {errs:?}");
        let (at, key, message) = &errs[0];
        assert_eq!((at.as_str(), key.as_str()), ("5:8", "health.path"));
        assert!(
            message.contains("is not a valid URL path") && message.contains(shown),
            "{toml_value}: {message}"
        );
        let run = cli_check(dir.path());
        assert_eq!(run.code, 2, "{run}");
        assert!(
            run.stderr.contains("deploy.toml:5:8: `health.path`"),
            "{run}"
        );
        assert!(!run.stderr.contains("panicked"), "{run}");
    }
    // A query string and percent-encoding stay allowed.
    let dir = write_config("path = \"/he%20alth?full=1\"\n");
    let opts = LoadOptions {
        config_path: dir.path().join("deploy.toml"),
        env: "production".into(),
        process_env: Default::default(),
    };
    assert!(load(&opts).is_ok());
}

// ---------------------------------------------------------------- item 17

/// The probe events of a `--output json` deploy document.
fn probes(doc: &serde_json::Value) -> Vec<serde_json::Value> {
    doc["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e.get("probe").cloned())
                .collect()
        })
        .unwrap_or_default()
}

fn deploy_json(app: &App, version: &str, env: &[(&str, &str)]) -> (Run, serde_json::Value) {
    let run = app.run(&["deploy", "--release", version, "--output", "json"], env);
    let doc = run.json();
    (run, doc)
}

#[test]
fn item17_a_release_answering_errors_fails_after_unhealthy_threshold_answers() {
    // A deadline this long would time the test out if the failure waited for it.
    let overlay = "[health]\ndeadline = \"300s\"\nunhealthy_threshold = 3\n";
    let app = App::with_overlay("dctfst", "0s", overlay);
    let run = app.deploy("v1", &[]);
    assert_eq!(run.code, 0, "{run}");

    let (run, doc) = deploy_json(&app, "v2", &[("DEMO_MODE", "fail500")]);
    assert_eq!(run.code, 1, "{run}");
    let reason = doc["failure"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("health check failed: 3 consecutive failed probes"),
        "{reason}"
    );
    assert!(reason.contains("expected status 200, got 500"), "{reason}");
    // Refused connections while it started did not count; it failed at the 3rd answer.
    let probes = probes(&doc);
    let answered: Vec<&serde_json::Value> =
        probes.iter().filter(|p| !p["status"].is_null()).collect();
    assert_eq!(answered.len(), 3, "{probes:#?}");
    assert!(answered.iter().all(|p| p["status"] == 500), "{probes:#?}");
    assert_eq!(probes.last(), answered.last().copied(), "{probes:#?}");

    // The live release was never touched.
    assert_eq!(app.serving().as_deref(), Some("v1"));
    assert_eq!(app.container_running(&app.container("blue")), Some(true));
    assert_eq!(app.status_json()["live"]["version"], "v1");
}

#[test]
fn item17_start_period_lets_a_slow_starter_answer_errors_first() {
    let overlay = "[health]\ndeadline = \"300s\"\nunhealthy_threshold = 2\n";
    let app = App::with_overlay("dctstp", "0s", overlay);
    let run = app.deploy("v1", &[]);
    assert_eq!(run.code, 0, "{run}");
    // Its first 6 checks answer 500, then it passes.
    let slow_starter = [("DEMO_MODE", "fail_first"), ("DEMO_FAIL_AFTER", "6")];

    // Without a start period, those errors fail it at the 2nd answer.
    let (run, doc) = deploy_json(&app, "v2", &slow_starter);
    assert_eq!(run.code, 1, "{run}");
    let answered = probes(&doc)
        .into_iter()
        .filter(|p| !p["status"].is_null())
        .count();
    assert_eq!(answered, 2, "{doc:#}");
    assert_eq!(app.serving().as_deref(), Some("v1"));

    // With one, failures inside it do not count: the release deploys.
    let overlay = app.root().join("environments/test.toml");
    let text = std::fs::read_to_string(&overlay).expect("read overlay");
    std::fs::write(
        &overlay,
        text.replace("[health]\n", "[health]\nstart_period = \"60s\"\n"),
    )
    .expect("write overlay");
    app.commit("start period");
    let (run, doc) = deploy_json(&app, "v3", &slow_starter);
    assert_eq!(run.code, 0, "{run}");
    let statuses: Vec<serde_json::Value> =
        probes(&doc).iter().map(|p| p["status"].clone()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 500).count(),
        6,
        "{statuses:?}"
    );
    assert_eq!(app.serving().as_deref(), Some("v3"));

    // The rule is shown by dry-run.
    let plan = app.run(&["deploy", "--dry-run", "--release", "v4"], &[]);
    assert_eq!(plan.code, 0, "{plan}");
    assert!(
        plan.stdout
            .contains("fail after 2 consecutive failing answers (none counted in the first 1m)"),
        "{plan}"
    );
}
