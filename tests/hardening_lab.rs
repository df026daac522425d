//! Item 19 (documentation truths): the complete web-app example of the README, kept as files in
//! examples/webapp/, must load with the real binary and say in the README exactly what the files
//! say, so neither can drift from the schema.

use std::path::Path;
use std::process::{Command, Stdio};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/webapp");

/// The secrets of the example's env file: none may appear in any output.
const ENV_FILE: &[(&str, &str)] = &[
    (
        "DATABASE_URL",
        "postgres://shop:pa55-w0rd-canary@db:5432/shop",
    ),
    ("SESSION_SECRET", "s3ss10n-canary"),
    ("HEALTH_TOKEN", "h34lth-t0k3n-canary"),
    (
        "SLACK_WEBHOOK_URL",
        "https://hooks.slack.com/services/T0/B0/canary",
    ),
    (
        "DEPLOY_WEBHOOK_URL",
        "https://deploys.example.com/hook-canary",
    ),
];

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(EXAMPLE).join(rel))
        .unwrap_or_else(|e| panic!("examples/webapp/{rel}: {e}"))
}

/// A copy of examples/webapp with its env file (not committed, as the example says).
fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("environments")).expect("mkdir");
    for f in ["deploy.toml", "environments/production.toml"] {
        std::fs::write(dir.path().join(f), read(f)).expect("copy");
    }
    let env: String = ENV_FILE.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let env_path = dir.path().join(".env");
    std::fs::write(&env_path, env).expect("write .env");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&env_path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    dir
}

#[test]
fn item19_webapp_example_loads_and_covers_every_section() {
    // Written with tables, covering what a web app needs.
    let (base, prod) = (read("deploy.toml"), read("environments/production.toml"));
    for header in [
        "[app]",
        "[app.env]",
        "[git]",
        "[prerequisites]",
        "[test]",
        "[build]",
        "[build.args]",
        "[deploy]",
        "[proxy]",
        "[health]",
        "[health.headers]",
        "[verify]",
        "[rollback]",
        "[hooks]",
    ] {
        assert!(
            base.lines().any(|l| l == header),
            "deploy.toml lacks {header}"
        );
    }
    for header in ["[docker]", "[[notify]]", "[proxy]", "[health]", "[verify]"] {
        assert!(
            prod.lines().any(|l| l == header),
            "production.toml lacks {header}"
        );
    }

    let dir = example_copy();
    let out = Command::new(env!("CARGO_BIN_EXE_deployctl"))
        .args([
            "config",
            "--env",
            "production",
            "--output",
            "json",
            "--config",
        ])
        .arg(dir.path().join("deploy.toml"))
        .env_remove("DEPLOYCTL_ENV")
        .env_remove("DEPLOYCTL_CONFIG")
        .env_remove("PRODUCTION_DOCKER_HOST")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run deployctl config");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "the example does not load:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.trim().is_empty(),
        "loading the example warns:\n{stderr}"
    );
    for (name, value) in ENV_FILE {
        assert!(
            !stdout.contains(value) && !stderr.contains(value),
            "the secret {name} is shown"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("config JSON");
    let c = &json["config"];
    // The production overlay merged over deploy.toml: tables key by key, values replaced.
    assert_eq!(c["app"]["name"], "shop");
    assert_eq!(c["app"]["env"]["LOG_LEVEL"], "warn");
    assert_eq!(c["app"]["env"]["NODE_ENV"], "production");
    assert_eq!(c["app"]["env"]["DATABASE_URL"], "***");
    assert_eq!(c["docker"]["host"], "unix:///var/run/docker.sock");
    assert_eq!(c["proxy"]["listen"], "80");
    assert_eq!(c["health"]["path"], "/healthz");
    assert_eq!(c["health"]["healthy_threshold"], 5);
    assert_eq!(c["health"]["headers"]["X-Health-Check"], "deployctl");
    assert_eq!(c["health"]["headers"]["Authorization"], "Bearer ***");
    assert_eq!(c["verify"]["window"], "2m");
    assert_eq!(c["build"]["target"], "runtime");
    assert_eq!(
        c["prerequisites"]["tools"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(
        c["prerequisites"]["required_env"].as_array().map(Vec::len),
        Some(5)
    );
    let notify = c["notify"].as_array().expect("notify targets");
    assert_eq!(notify.len(), 2);
    assert!(notify.iter().all(|n| n["url"] == "***"), "{notify:?}");
    for hook in [
        "pre_build",
        "pre_deploy",
        "post_deploy",
        "on_failure",
        "on_rollback",
    ] {
        assert_eq!(
            c["hooks"][hook].as_array().map(Vec::len),
            Some(1),
            "hooks.{hook}"
        );
    }
}

#[test]
fn item19_readme_shows_the_webapp_example_verbatim() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let config_section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Configuration\n"))
        .expect("README has a Configuration section");
    for f in ["deploy.toml", "environments/production.toml"] {
        let fenced = format!("```toml\n{}```\n", read(f));
        assert!(
            config_section.contains(&fenced),
            "README's Configuration section does not show examples/webapp/{f} verbatim"
        );
    }
}
