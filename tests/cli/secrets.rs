//! Canary secrets from an env file never reach `config`, dry runs (human and JSON) or errors.

use super::*;

/// The secrets fixture in a temp dir, with its env file (mode 0600) written here.
fn secrets_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().expect("temp dir");
    copy_dir(&cli_fixture("secrets"), tmp.path());
    let env_file = tmp.path().join(".env");
    std::fs::write(&env_file, ENV_FILE).expect("write .env");
    std::fs::set_permissions(&env_file, std::fs::Permissions::from_mode(0o600))
        .expect("chmod .env");
    tmp
}

fn assert_no_secret(what: &str, run: &Run) {
    let text = run.transcript();
    for canary in CANARIES {
        assert!(!text.contains(canary), "`{what}` leaked {canary}:\n{text}");
    }
    assert!(
        text.contains("***"),
        "`{what}` shows no *** at all:\n{text}"
    );
    // Mode 0600: no warning about the env file either.
    assert!(
        !run.stderr.contains("readable by group"),
        "`{what}`:\n{text}"
    );
}

#[test]
fn secrets_never_printed_by_config() {
    let tmp = secrets_dir();
    let run = deployctl(tmp.path(), &["config", "--env", "staging"]);
    run.assert_code(0);
    assert_no_secret("config", &run);
    // The secret did reach the config: masked whole, or inside a larger value.
    assert!(run.stdout.contains("API_TOKEN = \"***\""), "{}", run.stdout);
    assert!(
        run.stdout.contains("AUTH_HEADER = \"Bearer ***\""),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("TLS_KEY = \"***\""), "{}", run.stdout);
    assert!(run.stdout.contains("MODE = \"plain\""), "{}", run.stdout);
    // The human form is TOML: it parses back.
    let body: String = run
        .stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    if let Err(e) = body.parse::<toml_edit::DocumentMut>() {
        panic!("`config` output is not TOML ({e}):\n{}", run.stdout);
    }
    snapshot("config_secrets_human", &run, Some(tmp.path()));

    let run = deployctl(
        tmp.path(),
        &["config", "--env", "staging", "--output", "json"],
    );
    run.assert_code(0);
    assert_no_secret("config --output json", &run);
    let doc = run.json();
    let env = &doc["config"]["app"]["env"];
    assert_eq!(env["API_TOKEN"], "***", "{doc:#}");
    assert_eq!(env["AUTH_HEADER"], "Bearer ***", "{doc:#}");
    assert_eq!(env["TLS_KEY"], "***", "{doc:#}");
    assert_eq!(doc["config"]["notify"][0]["url"], "***", "{doc:#}");
    assert_eq!(
        doc["files"],
        serde_json::json!(["deploy.toml", "environments/staging.toml"])
    );
}

#[test]
fn secrets_never_printed_by_dry_runs() {
    let tmp = secrets_dir();
    let base = ["deploy", "--env", "staging", "--dry-run", "--release", "v1"];
    let human = deployctl(tmp.path(), &base);
    human.assert_code(0);
    assert_no_secret("deploy --dry-run", &human);
    // The hook's argv, the multi-line secret inside a shell command, and the notify URL.
    assert!(
        human.stdout.contains("-H 'Authorization: Bearer ***'"),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("\"***\" > key.pem"),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("notify webhook (***) on success"),
        "{}",
        human.stdout
    );
    snapshot("dry_run_secrets", &human, Some(tmp.path()));

    let json = deployctl(tmp.path(), &[&base[..], &["--output", "json"][..]].concat());
    json.assert_code(0);
    assert_no_secret("deploy --dry-run --output json", &json);
    let doc = json.json();
    let steps = doc["plan"]["steps"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let notify: Vec<&Value> = steps.iter().filter(|s| s["step"] == "notify").collect();
    assert_eq!(notify.len(), 1, "{doc:#}");
    // The targets' URLs (tokens) are not part of the plan at all: only their kinds.
    assert_eq!(
        notify[0]["kinds"],
        serde_json::json!(["webhook"]),
        "{doc:#}"
    );
    assert!(notify[0].get("url").is_none(), "{doc:#}");

    let verbose = deployctl(tmp.path(), &[&["-vvv"][..], &base].concat());
    verbose.assert_code(0);
    assert_no_secret("-vvv deploy --dry-run", &verbose);
}

#[test]
fn secrets_never_printed_in_errors() {
    let tmp = secrets_dir();
    for args in [
        &["config", "--env", "broken"][..],
        &["deploy", "--env", "broken", "--dry-run", "--release", "v1"][..],
    ] {
        let run = deployctl(tmp.path(), args);
        run.assert_code(2);
        assert_no_secret(&args.join(" "), &run);
        assert!(
            run.stderr.contains(
                "environments/broken.toml:3:8: `health.path`: `***` does not start with `/`\n  hint: write `/***`"
            ),
            "{}",
            run.stderr
        );
    }
    let run = deployctl(tmp.path(), &["config", "--env", "broken"]);
    snapshot("config_error_secret", &run, Some(tmp.path()));

    let run = deployctl(
        tmp.path(),
        &["config", "--env", "broken", "--output", "json"],
    );
    run.assert_code(2);
    assert_no_secret("config --output json (error)", &run);
    let doc = run.json();
    assert_eq!(
        doc["errors"][0]["message"], "`***` does not start with `/`",
        "{doc:#}"
    );
}
