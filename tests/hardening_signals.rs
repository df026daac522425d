//! Issue 8, item 15: health values that make no sense are refused with their location.

mod support;

use std::path::Path;
use std::process::Stdio;

use deployctl::config::{LoadOptions, load};
use deployctl::error::{ConfigError, Error};
use support::Run;

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
