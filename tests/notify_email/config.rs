//! The configuration of email targets: what loads, and every rule's located error with its hint.

use deployctl::config::{LoadOptions, Loaded, NotifyKind, load};
use deployctl::error::{ConfigError, Error};

use crate::harness::PASSWORD;
use crate::support;

/// deploy.toml with `text` after `[app]`, an empty production overlay; `vars` is the process
/// environment.
fn load_with(text: &str, vars: &[(&str, &str)]) -> (tempfile::TempDir, Result<Loaded, Error>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("environments")).unwrap();
    std::fs::write(dir.path().join("environments/production.toml"), "").unwrap();
    let text = format!("[app]\nname = \"web\"\n{text}");
    std::fs::write(dir.path().join("deploy.toml"), text).unwrap();
    let opts = LoadOptions {
        config_path: dir.path().join("deploy.toml"),
        env: "production".into(),
        process_env: vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };
    let loaded = load(&opts);
    (dir, loaded)
}

fn errors_of(text: &str) -> Vec<ConfigError> {
    match load_with(text, &[]).1 {
        Err(Error::Config(errors)) => errors.0,
        other => panic!("expected located errors, got {other:?}"),
    }
}

const GOOD: &str = r#"
[[notify]]
kind = "email"
smtp_url = "smtps://smtp.example.com"
username_env = "SMTP_USER"
password_env = "SMTP_PASSWORD"
from = "Deploy Bot <deploy@example.com>"
to = ["ops@example.com", "dev@example.com"]
on = ["failure"]
"#;

#[test]
fn an_email_target_loads_and_its_password_is_redacted() {
    let (_dir, loaded) = load_with(GOOD, &[("SMTP_PASSWORD", PASSWORD)]);
    let loaded = loaded.unwrap();
    let target = &loaded.config.notify[0];
    assert_eq!(target.kind, NotifyKind::Email);
    assert_eq!(target.url, None);
    assert_eq!(target.smtp_url.as_deref(), Some("smtps://smtp.example.com"));
    assert_eq!(target.to, ["ops@example.com", "dev@example.com"]);
    assert_eq!(
        (
            target.username_env.as_deref(),
            target.password_env.as_deref()
        ),
        (Some("SMTP_USER"), Some("SMTP_PASSWORD"))
    );
    // The password (from the process environment) is a secret of the run.
    assert_eq!(
        loaded.redactor.redact(&format!("x {PASSWORD} y")),
        "x *** y"
    );
    // The effective config shows the email keys, and no `url` key for it.
    let json = loaded.redacted_json();
    let shown = &json["notify"][0];
    assert_eq!(shown["smtp_url"], "smtps://smtp.example.com");
    assert_eq!(shown["password_env"], "SMTP_PASSWORD");
    assert!(shown.get("url").is_none(), "{shown}");
}

#[test]
fn email_keys_are_checked_against_the_kind_at_their_place() {
    let text = r#"
[[notify]]
kind = "email"
to = []

[[notify]]
kind = "email"
smtp_url = "smtp://mail.example.com"
username_env = "SMTP_USER"
password_env = "SMTP_PASSWORD"
from = "not an address"
to = ["ops@example.com", "bad@"]
url = "https://hooks.example.com/x"

[[notify]]
kind = "slack"
url = "https://hooks.example.com/y"
from = "deploy@example.com"

[[notify]]
kind = "webhook"

[[notify]]
kind = "email"
smtp_url = "smtp://127.0.0.1:2525"
password_env = "SMTP_PASSWORD"
from = "deploy@example.com"
to = ["ops@example.com"]
"#;
    let got: Vec<(usize, usize, String, String)> = errors_of(text)
        .into_iter()
        .map(|e| {
            assert!(e.hint.is_some(), "no hint: {e:?}");
            (e.line, e.col, e.key, e.message)
        })
        .collect();
    let row = |line, col, key: &str, message: &str| (line, col, key.to_owned(), message.to_owned());
    assert_eq!(
        got,
        [
            row(
                4,
                1,
                "notify[0].smtp_url",
                "missing required key `smtp_url`"
            ),
            row(4, 1, "notify[0].from", "missing required key `from`"),
            row(6, 6, "notify[0].to", "no recipient"),
            row(
                10,
                12,
                "notify[1].smtp_url",
                "a plain `smtp://` connection to another host would send the password in clear"
            ),
            row(
                13,
                8,
                "notify[1].from",
                "`not an address` is not an email address"
            ),
            row(14, 26, "notify[1].to[1]", "`bad@` is not an email address"),
            row(
                15,
                7,
                "notify[1].url",
                "`url` is for webhook targets; an email target sends through `smtp_url`"
            ),
            row(20, 8, "notify[2].from", "`from` is only for email targets"),
            row(22, 1, "notify[3].url", "missing required key `url`"),
            row(
                28,
                16,
                "notify[4].password_env",
                "`password_env` is set without `username_env`"
            ),
        ]
    );
}

#[test]
fn credentials_in_the_url_or_a_value_for_a_name_are_refused_unquoted() {
    let text = format!(
        r#"
[[notify]]
kind = "email"
smtp_url = "smtps://bot:{PASSWORD}@smtp.example.com"
username_env = "SMTP_USER"
password_env = "{PASSWORD} !"
from = "deploy@example.com"
to = ["ops@example.com"]
"#
    );
    let errors = errors_of(&text);
    let got: Vec<(usize, &str, &str)> = errors
        .iter()
        .map(|e| (e.line, e.key.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                6,
                "notify[0].smtp_url",
                "invalid SMTP URL: the URL holds a user name or password"
            ),
            (
                8,
                "notify[0].password_env",
                "invalid environment variable name"
            ),
        ]
    );
    let text = Error::Config(deployctl::error::ConfigErrors(errors)).to_string();
    assert!(!text.contains(PASSWORD), "{text}");
}

#[test]
fn the_cli_exits_2_with_the_place_of_each_error() {
    let (dir, _) = load_with("", &[]);
    let text = "[app]\nname = \"web\"\n\n[[notify]]\nkind = \"email\"\nsmtp_url = \"smtps://smtp.example.com\"\nfrom = \"deploy@example.com\"\nto = [\"ops@\"]\n";
    std::fs::write(dir.path().join("deploy.toml"), text).unwrap();
    let out = std::process::Command::new(support::deployctl_bin())
        .args(["config", "--env", "production", "--config"])
        .arg(dir.path().join("deploy.toml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("has 1 error:"), "{stderr}");
    assert!(
        stderr.contains("deploy.toml:8:7: `notify[0].to[0]`: `ops@` is not an email address\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: write an address such as"),
        "{stderr}"
    );
}
