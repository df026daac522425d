//! Snapshot tests of the `deployctl` binary: what a user sees (stdout, stderr, exit code) for help,
//! malformed configurations, dry runs, secrets, `init` and completions. None needs Docker: every
//! run points `DOCKER_HOST` at a socket that does not exist.
//!
//! Here: help, malformed configurations, usage errors and dry runs; `secrets` and `init` (with
//! completions) are apart. Snapshots live in tests/snapshots/; accept changes with
//! `cargo insta review` or `INSTA_UPDATE=always cargo test --test cli`, then read the .snap files.

mod init;
mod secrets;
#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::Run;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const NO_DOCKER: &str = "unix:///nonexistent/docker.sock";

/// The env file of the secrets fixture: a one-line secret and a multi-line one.
const ENV_FILE: &str = "API_TOKEN=canary-s3cr3t-VALUE-4242\nTLS_KEY=\"-----BEGIN PRIVATE KEY-----\nMIIcanaryLINEone4242\nMIIcanaryLINEtwo4242\n-----END PRIVATE KEY-----\"\n";

/// Pieces of the secrets that must never be printed: the token (and a fragment of it, so a
/// truncated leak is caught too) and each inner line of the multi-line secret.
const CANARIES: &[&str] = &[
    "canary-s3cr3t-VALUE-4242",
    "s3cr3t",
    "MIIcanaryLINEone4242",
    "MIIcanaryLINEtwo4242",
    "canaryLINE",
];

fn config_fixtures() -> PathBuf {
    Path::new(REPO).join("tests/fixtures/config")
}

fn cli_fixture(name: &str) -> PathBuf {
    Path::new(REPO).join("tests/fixtures/cli").join(name)
}

/// Runs `deployctl ARGS` in `dir` with a clean environment: no DEPLOYCTL_* or secrets inherited
/// from whoever runs the tests, no colour, and no reachable Docker Engine.
fn deployctl(dir: &Path, args: &[&str]) -> Run {
    deployctl_with(dir, args, &[])
}

fn deployctl_with(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deployctl"));
    cmd.args(args)
        .current_dir(dir)
        .env_clear()
        .env("NO_COLOR", "1")
        .env("DOCKER_HOST", NO_DOCKER);
    // PATH only so that a command a dry run wrongly ran would be found (and be noticed).
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd.envs(vars.iter().copied());
    let out = cmd.output().expect("cannot run the deployctl binary");
    let Some(code) = out.status.code() else {
        panic!("deployctl {args:?} was killed: {:?}", out.status);
    };
    Run {
        code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Snapshot settings: machine-specific paths and timings replaced by placeholders.
fn settings(tmp: Option<&Path>) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    // One directory for every snapshot, whichever file of this test asserts it.
    s.set_snapshot_path(Path::new(REPO).join("tests/snapshots"));
    if let Some(tmp) = tmp {
        // Canonical and as-given forms: /tmp may be a symlink.
        if let Ok(canonical) = tmp.canonicalize() {
            s.add_filter(&regex_escape(&canonical.display().to_string()), "[TMP]");
        }
        s.add_filter(&regex_escape(&tmp.display().to_string()), "[TMP]");
    }
    s.add_filter(&regex_escape(REPO), "[REPO]");
    // Phase timings, `(0.3s)`; not durations from the config such as `(30s)`.
    s.add_filter(r"\(\d+\.\ds\)", "([ELAPSED])");
    // The proxy image tag carries a fingerprint of the deployctl binary.
    s.add_filter(
        r"deployctl-proxy:\d+\.\d+\.\d+-[0-9a-f]{12}",
        "deployctl-proxy:[VERSION]-[BINARY]",
    );
    s
}

fn snapshot(name: &str, run: &Run, tmp: Option<&Path>) {
    settings(tmp).bind(|| insta::assert_snapshot!(name, run.transcript()));
}

// ---------------------------------------------------------------- help

#[test]
fn help() {
    let run = deployctl(Path::new(REPO), &["--help"]);
    run.assert_code(0);
    for sub in [
        "deploy",
        "rollback",
        "status",
        "config",
        "init",
        "completions",
    ] {
        assert!(
            run.stdout.contains(&format!("\n  {sub} ")),
            "{sub} missing:\n{}",
            run.stdout
        );
    }
    // The internal proxy subcommand is hidden.
    assert!(!run.stdout.contains("proxy  "), "{}", run.stdout);
    snapshot("help", &run, None);
}

#[test]
fn deploy_help() {
    let run = deployctl(Path::new(REPO), &["deploy", "--help"]);
    run.assert_code(0);
    for flag in [
        "--dry-run",
        "--release <VERSION>",
        "--image <TAG>",
        "--env <ENV>",
    ] {
        assert!(run.stdout.contains(flag), "{flag} missing:\n{}", run.stdout);
    }
    snapshot("deploy_help", &run, None);
}

// ---------------------------------------------------------------- malformed configurations

/// `deployctl config --env ENV --config CASE/deploy.toml`, run from tests/fixtures/config so
/// paths print as `CASE/...`. Asserts exit 2 and that each expected `file:line:col` starts an
/// error line, then snapshots.
fn malformed(name: &str, case: &str, env: &str, locations: &[&str]) -> Run {
    let config = format!("{case}/deploy.toml");
    let run = deployctl(
        &config_fixtures(),
        &["config", "--env", env, "--config", &config],
    );
    run.assert_code(2);
    assert!(
        run.stdout.is_empty(),
        "nothing belongs on stdout:\n{}",
        run.transcript()
    );
    assert!(run.stderr.starts_with("error: "), "{}", run.transcript());
    let lines: Vec<&str> = run.stderr.lines().collect();
    for loc in locations {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{loc}: "))),
            "no error at {loc}:\n{}",
            run.stderr
        );
    }
    if !locations.is_empty() {
        let n = locations.len();
        let header = format!(
            "the configuration has {n} error{}:",
            if n == 1 { "" } else { "s" }
        );
        assert!(lines[0].ends_with(&header), "{}", run.stderr);
    }
    snapshot(&format!("config_error_{name}"), &run, None);
    run
}

#[test]
fn config_error_unknown_key_three_levels_deep() {
    let run = malformed(
        "unknown_key_deep",
        "unknown_key_deep",
        "production",
        &["unknown_key_deep/deploy.toml:7:1"],
    );
    assert!(
        run.stderr.contains("`health.expect_json.format`"),
        "{}",
        run.stderr
    );
}

#[test]
fn config_error_misspelled_key_did_you_mean() {
    let run = malformed(
        "misspelled_key",
        "misspelled_key",
        "production",
        &["misspelled_key/deploy.toml:6:1"],
    );
    assert!(
        run.stderr.contains("did you mean `timeout`?"),
        "{}",
        run.stderr
    );
}

#[test]
fn config_error_wrong_type() {
    let run = malformed(
        "wrong_type",
        "wrong_type",
        "production",
        &["wrong_type/deploy.toml:3:8"],
    );
    assert!(
        run.stderr.contains("expected an integer, found a string"),
        "{}",
        run.stderr
    );
}

#[test]
fn config_error_bad_duration() {
    let run = malformed(
        "bad_duration",
        "bad_duration",
        "production",
        &["bad_duration/deploy.toml:5:12"],
    );
    assert!(
        run.stderr.contains("invalid duration `5 parsecs`"),
        "{}",
        run.stderr
    );
}

#[test]
fn config_error_port_zero() {
    let run = malformed(
        "port_zero",
        "port_zero",
        "production",
        &["port_zero/deploy.toml:3:8"],
    );
    assert!(run.stderr.contains("invalid port 0"), "{}", run.stderr);
}

#[test]
fn config_error_unknown_environment_lists_existing_ones() {
    let run = malformed("unknown_environment", "valid", "qa", &[]);
    assert!(
        run.stderr.starts_with(
            "error: unknown environment `qa`: valid/environments/qa.toml does not exist\n"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("existing environments: production, staging"),
        "{}",
        run.stderr
    );
}

#[test]
fn config_error_unterminated_string() {
    malformed(
        "unterminated_string",
        "unterminated_string",
        "production",
        &["unterminated_string/deploy.toml:2:12"],
    );
}

#[test]
fn config_error_duplicate_key() {
    let run = malformed(
        "duplicate_key",
        "duplicate_key",
        "production",
        &["duplicate_key/deploy.toml:4:1"],
    );
    assert!(run.stderr.contains("duplicate key"), "{}", run.stderr);
}

#[test]
fn config_error_unset_variable() {
    let run = malformed(
        "interp_unset",
        "interp_unset",
        "production",
        &["interp_unset/deploy.toml:5:28"],
    );
    assert!(
        run.stderr.contains("variable `DB_HOST` is not set"),
        "{}",
        run.stderr
    );
}

#[test]
fn config_error_unterminated_interpolation() {
    let run = malformed(
        "interp_unterminated",
        "interp_unterminated",
        "production",
        &["interp_unterminated/deploy.toml:5:28"],
    );
    assert!(run.stderr.contains("unterminated `${`"), "{}", run.stderr);
}

#[test]
fn config_error_missing_env_file() {
    let run = malformed(
        "missing_env_file",
        "missing_env_file",
        "production",
        &["missing_env_file/deploy.toml:8:12"],
    );
    assert!(
        run.stderr
            .contains("env file `missing_env_file/secrets/.env.production` does not exist"),
        "{}",
        run.stderr
    );
}

#[test]
fn config_error_two_errors_in_one_file() {
    malformed(
        "two_errors",
        "two_errors",
        "production",
        &["two_errors/deploy.toml:2:8", "two_errors/deploy.toml:5:17"],
    );
}

#[test]
fn config_error_in_the_overlay_not_the_base() {
    let run = malformed(
        "overlay_error",
        "overlay_error",
        "production",
        &["overlay_error/environments/production.toml:2:8"],
    );
    assert!(
        !run.stderr.contains("overlay_error/deploy.toml"),
        "{}",
        run.stderr
    );
    // The base itself is fine: through another overlay it loads.
    deployctl(
        &config_fixtures(),
        &[
            "config",
            "--env",
            "staging",
            "--config",
            "overlay_error/deploy.toml",
        ],
    )
    .assert_code(0);
}

#[test]
fn config_error_in_both_files_sorted() {
    malformed(
        "errors_in_both",
        "errors_in_both",
        "production",
        &[
            "errors_in_both/deploy.toml:3:8",
            "errors_in_both/deploy.toml:6:8",
            "errors_in_both/deploy.toml:7:7",
            "errors_in_both/environments/production.toml:2:10",
            "errors_in_both/environments/production.toml:4:2",
        ],
    );
}

#[test]
fn config_error_timeout_not_shorter_than_deadline() {
    malformed(
        "timeout_deadline",
        "timeout_deadline",
        "production",
        &["timeout_deadline/deploy.toml:5:11"],
    );
}

#[test]
fn config_errors_as_json() {
    let run = deployctl(
        &config_fixtures(),
        &[
            "config",
            "--env",
            "production",
            "--config",
            "two_errors/deploy.toml",
            "--output",
            "json",
        ],
    );
    run.assert_code(2);
    // Machines read stdout only: the whole answer is there.
    assert!(run.stderr.is_empty(), "{}", run.transcript());
    let doc = run.json();
    assert_eq!(doc["ok"], false, "{doc:#}");
    assert_eq!(doc["exit_code"], 2, "{doc:#}");
    let Some(errors) = doc["errors"].as_array() else {
        panic!("no `errors` array: {doc:#}");
    };
    let got: Vec<(&str, u64, u64, &str)> = errors
        .iter()
        .map(|e| {
            (
                e["file"].as_str().unwrap_or("<not a string>"),
                e["line"].as_u64().unwrap_or(0),
                e["col"].as_u64().unwrap_or(0),
                e["key"].as_str().unwrap_or("<not a string>"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("two_errors/deploy.toml", 2, 8, "app.name"),
            ("two_errors/deploy.toml", 5, 17, "deploy.keep_releases"),
        ]
    );
    snapshot("config_errors_json", &run, None);
}

// ---------------------------------------------------------------- usage errors

#[test]
fn missing_env_lists_environments() {
    let dir = config_fixtures().join("valid");
    for args in [&["config"][..], &["deploy", "--dry-run"][..]] {
        let run = deployctl(&dir, args);
        run.assert_code(2);
        assert!(run.stdout.is_empty(), "{}", run.transcript());
        assert!(run.stderr.contains("pass --env NAME"), "{}", run.stderr);
        assert!(
            run.stderr.contains("environments: production, staging"),
            "{}",
            run.stderr
        );
        snapshot(&format!("missing_env_{}", args[0]), &run, None);
    }
    // DEPLOYCTL_ENV stands in for --env.
    deployctl_with(&dir, &["config"], &[("DEPLOYCTL_ENV", "staging")]).assert_code(0);
}

// ---------------------------------------------------------------- dry run of the repository's example

fn dry_run_args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut args = vec![
        "deploy",
        "--env",
        "staging",
        "--dry-run",
        "--release",
        "v-test",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn dry_run_of_the_example_human() {
    let run = deployctl(Path::new(REPO), &dry_run_args(&[]));
    run.assert_code(0);
    assert!(
        run.stdout
            .starts_with("Plan: deploy demo v-test to staging (demo.staging-blue as blue)\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("state:     unknown (the Docker Engine cannot be reached)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("run pre_build hook: sh examples/demo-app/build.sh"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .trim_end()
            .ends_with("Dry run: nothing was changed."),
        "{}",
        run.stdout
    );
    snapshot("dry_run_example", &run, None);
}

#[test]
fn dry_run_of_the_example_json() {
    let run = deployctl(Path::new(REPO), &dry_run_args(&["--output", "json"]));
    run.assert_code(0);
    let doc = run.json();
    assert_eq!(doc["dry_run"], true, "{doc:#}");
    let plan = &doc["plan"];
    assert_eq!(plan["version"], "v-test", "{doc:#}");
    assert_eq!(plan["env"], "staging", "{doc:#}");
    assert_eq!(plan["url"], "http://127.0.0.1:8081", "{doc:#}");
    assert!(
        plan["live_state"]
            .as_str()
            .is_some_and(|s| s.starts_with("unknown")),
        "{doc:#}"
    );
    let steps = plan["steps"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    assert!(!steps.is_empty(), "plan.steps is empty: {doc:#}");
    let kinds: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(
        kinds.len(),
        steps.len(),
        "every step names its kind: {doc:#}"
    );
    for kind in [
        "run_hook",
        "build_image",
        "acquire_lock",
        "wait_healthy",
        "switch",
        "release_lock",
    ] {
        assert!(kinds.contains(&kind), "no {kind} step: {kinds:?}");
    }
    settings(None).bind(|| insta::assert_json_snapshot!("dry_run_example_json", doc));
}

/// Every path under `dir` (files and directories), relative, and each file's content.
fn tree(dir: &Path) -> BTreeSet<(PathBuf, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<(PathBuf, Vec<u8>)>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            if path.is_dir() {
                out.insert((rel, Vec::new()));
                walk(root, &path, out);
            } else {
                let bytes =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                out.insert((rel, bytes));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read fixture directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy fixture file");
        }
    }
}

#[test]
fn dry_run_runs_no_command_and_writes_nothing() {
    // Every test command and hook of this fixture would `touch` a file.
    let tmp = tempfile::tempdir().expect("temp dir");
    copy_dir(&cli_fixture("hooks"), tmp.path());
    let before = tree(tmp.path());
    assert!(before.len() >= 4, "fixture not copied: {before:?}");
    for extra in [
        &[][..],
        &["--output", "json"][..],
        &["-vvv"][..],
        &["--skip-tests"][..],
    ] {
        let mut args = vec!["deploy", "--env", "staging", "--dry-run", "--release", "v1"];
        args.extend_from_slice(extra);
        let run = deployctl(tmp.path(), &args);
        run.assert_code(0);
        // The plan does list the commands it would run.
        assert!(run.stdout.contains("ran-pre_build"), "{}", run.transcript());
        assert_eq!(
            tree(tmp.path()),
            before,
            "`deployctl {}` changed the directory",
            args.join(" ")
        );
    }
}

#[test]
fn dry_run_of_the_example_adds_no_file_to_the_repository() {
    // Ignored files count too: the example's pre_build hook writes examples/demo-app/dist/.
    // Snapshots are left out: other tests of this binary may be writing them right now.
    let status = || {
        let out = Command::new("git")
            .args([
                "status",
                "--porcelain",
                "--ignored",
                "--untracked-files=all",
                "--",
                ".",
                ":(exclude)tests/snapshots",
                ":(exclude)target",
            ])
            .current_dir(REPO)
            .output()
            .expect("git must be installed to run this test");
        assert!(
            out.status.success(),
            "git status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let before = status();
    for extra in [&[][..], &["--output", "json"][..], &["-vvv"][..]] {
        deployctl(Path::new(REPO), &dry_run_args(extra)).assert_code(0);
    }
    assert_eq!(status(), before, "a dry run changed the repository");
}
