//! Issue 8, bad input and CLI truths (items 13, 14, 16, 18, 19): durations that would overflow,
//! config files that are not regular files or are too large, integer ports, the public URL of a
//! remote engine, and what the CLI says about itself.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{App, Run, deployctl_bin};

/// Runs deployctl in `dir` and waits at most `limit`; a run that takes longer is killed and the
/// test fails (a hang must not hang the test suite). The address space is capped at 2 GiB so a
/// run that reads without bound fails instead of eating the machine.
fn run_bounded(dir: &Path, args: &[&str], limit: Duration) -> Run {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -v 2097152; exec \"$0\" \"$@\"")
        .arg(deployctl_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("DEPLOYCTL_ENV")
        .env_remove("DEPLOYCTL_CONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn deployctl");
    let started = Instant::now();
    loop {
        match child.try_wait().expect("wait") {
            Some(_) => return Run::from(child.wait_with_output().expect("output")),
            None if started.elapsed() > limit => {
                let _ = child.kill();
                let out = child.wait_with_output().expect("output");
                panic!(
                    "deployctl {args:?} did not finish within {limit:?}; killed\n{}",
                    Run::from(out)
                );
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A directory with `deploy.toml` (`base` after a minimal app table) and environments/test.toml.
fn config_dir(base: &str, overlay: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("environments")).expect("mkdir");
    std::fs::write(
        dir.path().join("deploy.toml"),
        format!("[app]\nname = \"inp\"\nport = 8080\n\n{base}"),
    )
    .expect("write deploy.toml");
    std::fs::write(dir.path().join("environments/test.toml"), overlay).expect("write overlay");
    dir
}

const LIMIT: Duration = Duration::from_secs(30);

fn app_images(app: &App) -> String {
    support::docker(&[
        "images",
        "-q",
        "--filter",
        &format!("label=deployctl.app={}", app.name),
    ])
    .expect("docker images")
}

// ---- item 13 -------------------------------------------------------------------------------

#[test]
fn item13_huge_lock_wait_exits_2_before_building() {
    let app = App::new("inp13");
    let run = app.run(&["deploy", "--lock-wait", "18446744073709551615s"], &[]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("--lock-wait"), "{run}");
    assert!(run.stderr.contains("at most 24h"), "{run}");
    assert!(!run.stderr.contains("panicked"), "{run}");
    assert!(
        app_images(&app).trim().is_empty(),
        "nothing may be built before the arguments are checked"
    );
    // A sane value is still accepted (dry-run: nothing happens).
    let run = app.run(
        &["deploy", "--dry-run", "--lock-wait", "2m", "--skip-tests"],
        &[],
    );
    assert_eq!(run.code, 0, "{run}");
}

#[test]
fn item13_huge_config_durations_are_located_errors() {
    let dir = config_dir(
        "[deploy]\nstop_timeout = \"100000000h\"\n\n[health]\npath = \"/\"\ndeadline = \"5845420460y\"\n",
        "[test]\ntimeout = \"18446744073709551615s\"\n",
    );
    let run = run_bounded(dir.path(), &["config", "--env", "test"], LIMIT);
    assert_eq!(run.code, 2, "{run}");
    for (place, key) in [
        ("deploy.toml:6:16", "deploy.stop_timeout"),
        ("deploy.toml:10:12", "health.deadline"),
        ("test.toml:2:11", "test.timeout"),
    ] {
        assert!(
            run.stderr.contains(place) && run.stderr.contains(key),
            "{key} at {place}: {run}"
        );
    }
    assert!(run.stderr.contains("at most"), "{run}");
}

// ---- item 14 -------------------------------------------------------------------------------

#[test]
fn item14_deploy_toml_linked_to_dev_zero_is_refused() {
    let dir = config_dir("", "");
    let path = dir.path().join("deploy.toml");
    std::fs::remove_file(&path).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", &path).expect("symlink");
    let run = run_bounded(dir.path(), &["config", "--env", "test"], LIMIT);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("deploy.toml"), "{run}");
    assert!(run.stderr.contains("not a regular file"), "{run}");
}

#[test]
fn item14_env_file_and_overlay_fifos_do_not_hang() {
    for target in [".env", "environments/test.toml"] {
        let dir = config_dir("[prerequisites]\nenv_file = \".env\"\n", "");
        let path = dir.path().join(target);
        let _ = std::fs::remove_file(&path);
        let made = Command::new("mkfifo").arg(&path).status().expect("mkfifo");
        assert!(made.success());
        let run = run_bounded(dir.path(), &["config", "--env", "test"], LIMIT);
        assert_eq!(run.code, 2, "{target}: {run}");
        let name = Path::new(target).file_name().unwrap().to_str().unwrap();
        assert!(run.stderr.contains(name), "{target}: {run}");
        assert!(run.stderr.contains("not a regular file"), "{target}: {run}");
    }
}

#[test]
fn item14_deploy_toml_over_1_mib_is_refused() {
    let padding = "# padding padding padding padding padding padding padding padding\n";
    let big = padding.repeat(2 * 1024 * 1024 / padding.len() + 1);
    let dir = config_dir(&big, "");
    let run = run_bounded(dir.path(), &["config", "--env", "test"], LIMIT);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("deploy.toml"), "{run}");
    assert!(run.stderr.contains("1 MiB"), "{run}");
}

// ---- item 16 -------------------------------------------------------------------------------

#[test]
fn item16_integer_proxy_listen_is_a_port() {
    let dir = config_dir("[proxy]\nlisten = 18090\n", "");
    let run = run_bounded(dir.path(), &["config", "--env", "test"], LIMIT);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.contains("listen = \"18090\""), "{run}");

    // Other wrong types keep a located error.
    let dir = config_dir("[proxy]\nlisten = true\n", "");
    let run = run_bounded(dir.path(), &["config", "--env", "test"], LIMIT);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("deploy.toml:6:10"), "{run}");
    assert!(run.stderr.contains("proxy.listen"), "{run}");
    // An integer that is no port is located too.
    let dir = config_dir("[proxy]\nlisten = 70000\n", "");
    let run = run_bounded(dir.path(), &["config", "--env", "test"], LIMIT);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("deploy.toml:6:10"), "{run}");
}

// ---- item 18 -------------------------------------------------------------------------------

/// The plan's URL names the engine's host. 127.0.0.2 is a loopback address that refuses the
/// connection at once: dry-run then plans without the engine, and no packet leaves the machine.
#[test]
fn item18_remote_engine_url_in_dry_run() {
    let app = App::new("inp18");
    let toml = app.root().join("deploy.toml");
    let mut text = std::fs::read_to_string(&toml).expect("read");
    text.push_str("\n[docker]\nhost = \"tcp://127.0.0.2:1\"\n");
    std::fs::write(&toml, &text).expect("write");
    app.commit("remote engine");
    // The proxy listens on 127.0.0.1 in the support app: all interfaces instead.
    let overlay = app.root().join("environments/test.toml");
    let port = app.port;
    std::fs::write(&overlay, format!("[proxy]\nlisten = \"{port}\"\n")).expect("write");
    app.commit("all interfaces");
    let args = ["deploy", "--dry-run", "--output", "json", "--skip-tests"];
    let run = app.run(&args, &[("DOCKER_HOST", "")]);
    assert_eq!(run.code, 0, "{run}");
    let plan: serde_json::Value = run.json();
    assert_eq!(plan["plan"]["url"], format!("http://127.0.0.2:{port}"));

    std::fs::write(
        &overlay,
        format!("[proxy]\nlisten = \"{port}\"\npublic_url = \"https://shop.example.test\"\n"),
    )
    .expect("write");
    app.commit("public url");
    let run = app.run(&args, &[]);
    assert_eq!(run.code, 0, "{run}");
    let plan: serde_json::Value = run.json();
    assert_eq!(plan["plan"]["url"], "https://shop.example.test");
}

// ---- item 19 -------------------------------------------------------------------------------

#[test]
fn item19_deploy_takes_release_not_version() {
    let app = App::new("inp19r");
    let help = app.run(&["deploy", "--help"], &[]);
    assert_eq!(help.code, 0, "{help}");
    assert!(help.stdout.contains("--release <VERSION>"), "{help}");
    assert!(!help.stdout.contains("--version <VERSION>"), "{help}");
    let run = app.run(
        &["deploy", "--dry-run", "--release", "v7", "--output", "json"],
        &[],
    );
    assert_eq!(run.code, 0, "{run}");
    let plan: serde_json::Value = run.json();
    assert_eq!(plan["plan"]["version"], "v7");
    // -V/--version stays the program's version.
    let run = app.run(&["--version"], &[]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stdout.starts_with("deployctl "), "{run}");
}

#[test]
fn item19_verbose_help_says_what_each_level_does() {
    let app = App::new("inp19v");
    let help = app.run(&["--help"], &[]);
    assert_eq!(help.code, 0, "{help}");
    let flat = help.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for part in ["-vv debug logs", "-vvv trace logs", "DEPLOYCTL_LOG"] {
        assert!(flat.contains(part), "{part}: {flat}");
    }
    assert!(flat.contains("info logs"), "{flat}");
}

#[test]
fn item19_dry_run_shows_every_health_rule_with_header_values_redacted() {
    let app = App::new("inp19h");
    let toml = app.root().join("deploy.toml");
    let text = std::fs::read_to_string(&toml).expect("read").replace(
        "expect_json = { pointer = \"/status\", equals = \"ok\" }",
        "expect_json = { pointer = \"/status\", equals = \"ok\" }\nexpect_body = \"version=\"\nheaders = { Authorization = \"Bearer ${INP_TOKEN}\", X-Probe = \"plain-value\" }\ndocker_cmd = [\"/demo-app\", \"--probe\"]",
    );
    std::fs::write(&toml, text).expect("write");
    app.commit("health rules");
    let secret = "s3cr3t-token-9f";
    let env = [("INP_TOKEN", secret)];
    let human = app.run(&["deploy", "--dry-run"], &env);
    assert_eq!(human.code, 0, "{human}");
    for part in [
        "/status",
        "\"ok\"",
        "version=",
        "Authorization: ***",
        "X-Probe: ***",
        "Docker HEALTHCHECK /demo-app --probe",
    ] {
        assert!(human.stdout.contains(part), "{part}: {human}");
    }
    assert!(!human.stdout.contains(secret), "{human}");
    assert!(!human.stdout.contains("plain-value"), "{human}");

    let json = app.run(&["deploy", "--dry-run", "--output", "json"], &env);
    assert_eq!(json.code, 0, "{json}");
    assert!(!json.stdout.contains(secret), "{json}");
    let plan: serde_json::Value = json.json();
    let wait = plan["plan"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step"] == "wait_healthy")
        .unwrap_or_else(|| panic!("no wait_healthy step: {plan}"))
        .clone();
    assert_eq!(wait["expect_body"], "version=", "{wait}");
    assert_eq!(wait["expect_json"]["pointer"], "/status", "{wait}");
    assert_eq!(wait["expect_json"]["equals"], "ok", "{wait}");
    assert_eq!(wait["headers"]["Authorization"], "***", "{wait}");
    assert_eq!(wait["headers"]["X-Probe"], "***", "{wait}");
    assert_eq!(wait["docker_cmd"][1], "--probe", "{wait}");
}

#[test]
fn item19_ledger_author_is_git_author_or_github_actor_before_user() {
    let app = App::new("inp19a");
    let plain = [
        ("USER", "not-the-author"),
        ("GITHUB_ACTIONS", ""),
        ("GITHUB_ACTOR", "not-in-actions"),
    ];
    let run = app.deploy("v1", &plain);
    assert_eq!(run.code, 0, "{run}");
    let actions = [
        ("USER", "not-the-author"),
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_ACTOR", "octo-actor"),
    ];
    let run = app.deploy("v2", &actions);
    assert_eq!(run.code, 0, "{run}");
    let releases = app.run(&["releases", "--output", "json"], &[]);
    let doc: serde_json::Value = releases.json();
    let authors: Vec<(&str, &str)> = doc["releases"]
        .as_array()
        .expect("array")
        .iter()
        .map(|r| {
            (
                r["version"].as_str().unwrap_or(""),
                r["author"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        authors,
        [("v1", "deployctl tests"), ("v2", "octo-actor")],
        "{doc}"
    );
}

#[test]
fn item19_phase_events_say_their_unit() {
    let app = App::new("inp19e");
    let run = app.run(&["deploy", "--output", "json"], &[]);
    assert_eq!(run.code, 0, "{run}");
    let doc: serde_json::Value = run.json();
    let finished: Vec<&serde_json::Value> = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["event"] == "phase_finished")
        .collect();
    assert!(!finished.is_empty(), "{doc}");
    for e in finished {
        assert!(e["elapsed_ms"].is_u64(), "{e}");
        assert!(e.get("elapsed").is_none(), "{e}");
    }
    // Streamed as JSON lines while the deploy ran, one per event, in the order of `events`;
    // the result document comes last.
    let streamed = run.events();
    assert_eq!(Some(&streamed), doc["events"].as_array(), "{run}");
    assert!(
        doc.get("event").is_none(),
        "the last line is the result: {doc}"
    );
    assert!(streamed.iter().all(|e| e["event"].is_string()), "{run}");
    let phases = |kind: &str| -> Vec<String> {
        streamed
            .iter()
            .filter(|e| e["event"] == kind)
            .map(|e| e["phase"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let (started, ended) = (phases("phase_started"), phases("phase_finished"));
    assert_eq!(
        started.len(),
        ended.len(),
        "every start has its finish: {run}"
    );
    for phase in ["build", "health", "switch"] {
        let s = started.iter().position(|p| p == phase);
        let f = ended.iter().position(|p| p == phase);
        assert!(s.is_some() && f.is_some(), "{phase}: {started:?} {ended:?}");
    }
}

/// The tests table of README.md is valid Markdown: every row has the header's two cells and ends
/// with `|`, and a blank line ends the table (text glued to the last row became a third cell).
#[test]
fn item19_readme_tests_table_is_well_formed() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let lines: Vec<&str> = readme.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "| file | what |")
        .expect("the tests table");
    let mut end = start;
    while end < lines.len() && lines[end].starts_with('|') {
        let row = lines[end].trim_end();
        assert!(row.ends_with('|'), "row does not end with `|`: {row}");
        let cells = row.trim_matches('|').split('|').count();
        assert_eq!(cells, 2, "row with {cells} cells: {row}");
        end += 1;
    }
    assert!(end - start > 3, "the table has rows");
    assert_eq!(
        lines.get(end).map(|l| l.trim()),
        Some(""),
        "a blank line after the table"
    );
}
