//! The configuration loader, end to end: fixtures under tests/fixtures/config/<case>/.

use std::path::Path;

use deployctl::config::{
    Duration, LoadOptions, Loaded, NotifyKind, json_schema, list_environments, load,
};
use deployctl::error::{ConfigError, Error};
use deployctl::redact::Redactor;

/// Relative to the package root, which is the working directory of `cargo test`.
const FIX: &str = "tests/fixtures/config";

/// Every value of tests/fixtures/config/valid/.env, and the lines of the multi-line one.
const CANARIES: &[&str] = &[
    "pa55-w0rd-canary",
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC",
    "c2VjcmV0LWxpbmUtdHdv",
    "npm_canaryTokenValue",
    "xoxb-slack-canary",
];

fn options(config_path: impl AsRef<Path>, env: &str, vars: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        config_path: config_path.as_ref().to_path_buf(),
        env: env.to_owned(),
        process_env: vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn load_case(case: &str, env: &str, vars: &[(&str, &str)]) -> Result<Loaded, Error> {
    load(&options(format!("{FIX}/{case}/deploy.toml"), env, vars))
}

fn ok(case: &str, env: &str, vars: &[(&str, &str)]) -> Loaded {
    match load_case(case, env, vars) {
        Ok(l) => l,
        Err(e) => panic!("{case}/{env} should load: {e}"),
    }
}

fn config_errors(case: &str, vars: &[(&str, &str)]) -> Vec<ConfigError> {
    match load_case(case, "production", vars) {
        Ok(_) => panic!("{case} should fail"),
        Err(Error::Config(errs)) => errs.0,
        Err(e) => panic!("{case}: expected located config errors, got: {e}"),
    }
}

fn at(e: &ConfigError) -> String {
    format!("{}:{}:{}", e.file, e.line, e.col)
}

/// Asserts the case fails with exactly one error, at `place` (`file:line:col` under the case
/// directory), with this key, message and hint.
fn assert_single(case: &str, place: &str, key: &str, message: &str, hint: Option<&str>) {
    let errs = config_errors(case, &[]);
    assert_eq!(errs.len(), 1, "{case}: {errs:#?}");
    let e = &errs[0];
    assert_eq!(at(e), format!("{FIX}/{case}/{place}"), "{e:#?}");
    assert_eq!(e.key, key);
    assert_eq!(e.message, message);
    assert_eq!(e.hint.as_deref(), hint);
}

// ---------------------------------------------------------------- malformed configurations

#[test]
fn unknown_key_three_levels_deep() {
    assert_single(
        "unknown_key_deep",
        "deploy.toml:7:1",
        "health.expect_json.format",
        "unknown key `format`",
        Some("valid keys here: equals, pointer"),
    );
}

#[test]
fn misspelled_key_gets_did_you_mean() {
    assert_single(
        "misspelled_key",
        "deploy.toml:6:1",
        "health.timout",
        "unknown key `timout`",
        Some("did you mean `timeout`?"),
    );
}

#[test]
fn wrong_type() {
    assert_single(
        "wrong_type",
        "deploy.toml:3:8",
        "app.port",
        "expected an integer, found a string",
        Some("remove the quotes: `8080`"),
    );
}

#[test]
fn bad_duration() {
    let errs = config_errors("bad_duration", &[]);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let e = &errs[0];
    assert_eq!(at(e), format!("{FIX}/bad_duration/deploy.toml:5:12"));
    assert_eq!(e.key, "health.interval");
    assert!(
        e.message
            .starts_with("invalid duration `5 parsecs`: unknown time unit \"parsecs\""),
        "{}",
        e.message
    );
    assert_eq!(
        e.hint.as_deref(),
        Some("write a duration like `500ms`, `2s`, `1m30s` or `1h`")
    );
}

#[test]
fn port_zero() {
    assert_single(
        "port_zero",
        "deploy.toml:3:8",
        "app.port",
        "invalid port 0",
        Some("a port is a number from 1 to 65535"),
    );
}

#[test]
fn unterminated_string_is_located() {
    // toml_edit reports where the closing quote was expected: the end of line 2.
    assert_single(
        "unterminated_string",
        "deploy.toml:2:12",
        "",
        "invalid basic string, expected `\"`",
        None,
    );
}

#[test]
fn duplicate_key_is_located() {
    assert_single(
        "duplicate_key",
        "deploy.toml:4:1",
        "",
        "duplicate key",
        None,
    );
}

#[test]
fn unset_variable_without_default() {
    // Column 28 is the `${` inside the string, not the opening quote.
    assert_single(
        "interp_unset",
        "deploy.toml:5:28",
        "app.env.DATABASE_URL",
        "variable `DB_HOST` is not set",
        Some("set `DB_HOST` in the environment, or give a default: `${DB_HOST:-default}`"),
    );
    // The same file loads once the variable is set.
    let loaded = ok("interp_unset", "production", &[("DB_HOST", "db.internal")]);
    assert_eq!(
        loaded.config.app.env["DATABASE_URL"],
        "postgres://db.internal/app"
    );
}

#[test]
fn unterminated_interpolation() {
    assert_single(
        "interp_unterminated",
        "deploy.toml:5:28",
        "app.env.DATABASE_URL",
        "unterminated `${`: missing `}`",
        Some("close it as `${NAME}`, or write `$${` for a literal `${`"),
    );
}

#[test]
fn missing_env_file_points_at_env_file_key() {
    // `${API_TOKEN}` may be defined in the missing file: only the file is reported.
    assert_single(
        "missing_env_file",
        "deploy.toml:8:12",
        "prerequisites.env_file",
        &format!("env file `{FIX}/missing_env_file/secrets/.env.production` does not exist"),
        Some("create it (with `chmod 600`), or remove `prerequisites.env_file`"),
    );
}

#[test]
fn two_errors_in_one_file_are_both_reported() {
    let errs = config_errors("two_errors", &[]);
    let got: Vec<(String, &str, &str)> = errs
        .iter()
        .map(|e| (at(e), e.key.as_str(), e.message.as_str()))
        .collect();
    let file = format!("{FIX}/two_errors/deploy.toml");
    assert_eq!(
        got,
        [
            (
                format!("{file}:2:8"),
                "app.name",
                "invalid app name `Web App`"
            ),
            (
                format!("{file}:5:17"),
                "deploy.keep_releases",
                "must be at least 1, found 0"
            ),
        ]
    );
}

#[test]
fn error_in_overlay_points_into_overlay() {
    assert_single(
        "overlay_error",
        "environments/production.toml:2:8",
        "health.path",
        "`health` does not start with `/`",
        Some("write `/health`"),
    );
    // The base alone (through a valid overlay) is fine: the error really is the overlay's.
    let staging = ok("overlay_error", "staging", &[]);
    assert_eq!(staging.config.health.path, "/ready");
}

#[test]
fn timeout_not_shorter_than_deadline() {
    assert_single(
        "timeout_deadline",
        "deploy.toml:5:11",
        "health.timeout",
        "health.timeout (30s) must be shorter than health.deadline (30s)",
        Some("one check must fit in the overall deadline: lower `timeout` or raise `deadline`"),
    );
}

#[test]
fn errors_of_both_files_at_once_sorted_by_file_then_position() {
    let errs = config_errors("errors_in_both", &[]);
    let base = format!("{FIX}/errors_in_both/deploy.toml");
    let overlay = format!("{FIX}/errors_in_both/environments/production.toml");
    let got: Vec<(String, &str, &str, Option<&str>)> = errs
        .iter()
        .map(|e| (at(e), e.key.as_str(), e.message.as_str(), e.hint.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (
                format!("{base}:3:8"),
                "app.port",
                "invalid port 70000",
                Some("a port is a number from 1 to 65535")
            ),
            (
                format!("{base}:6:8"),
                "notify[0].kind",
                "invalid value `slak`",
                Some("did you mean `slack`? valid values: slack, discord, webhook, email")
            ),
            (
                format!("{base}:7:7"),
                "notify[0].url",
                "invalid webhook URL: not a URL",
                Some("write an http:// or https:// URL")
            ),
            (
                format!("{overlay}:2:10"),
                "proxy.listen",
                "invalid listen address `0.0.0.0:0`: port 0 is not between 1 and 65535",
                Some("write `PORT` or `IP:PORT`, such as `80` or `0.0.0.0:443`")
            ),
            (
                format!("{overlay}:4:2"),
                "helth",
                "unknown key `helth`",
                Some("did you mean `health`?")
            ),
        ]
    );
    // A webhook URL is secret even when invalid.
    let text = Error::Config(deployctl::error::ConfigErrors(errs)).to_string();
    assert!(!text.contains("xoxb-secret-in-url"), "{text}");
}

#[test]
fn value_rules() {
    let errs = config_errors("bad_values", &[]);
    let file = format!("{FIX}/bad_values/deploy.toml");
    let got: Vec<(String, &str)> = errs.iter().map(|e| (at(e), e.key.as_str())).collect();
    let expected = [
        ("5:1", "app.env.1BAD"),
        ("8:13", "git.branches[0]"),
        ("12:11", "prerequisites.tools[0].version"),
        ("15:17", "prerequisites.min_free_disk"),
        ("18:23", "health.expect_status[1]"),
        ("19:27", "health.expect_json.pointer"),
        ("20:12", "health.interval"),
        ("21:21", "health.healthy_threshold"),
        ("24:18", "verify.max_error_rate"),
        ("27:15", "hooks.pre_deploy[0]"),
        ("27:32", "hooks.pre_deploy[1].shel"),
        ("27:47", "hooks.pre_deploy[2]"),
    ]
    .map(|(pos, key)| (format!("{file}:{pos}"), key));
    assert_eq!(got, expected, "{errs:#?}");
    let messages: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(messages[0], "invalid environment variable name `1BAD`");
    assert_eq!(messages[3], "invalid size `lots`");
    assert_eq!(messages[4], "99 is not an HTTP status code");
    assert_eq!(messages[5], "`status` is not a JSON pointer");
    assert_eq!(messages[6], "must be greater than zero");
    assert_eq!(messages[8], "must be between 0.0 and 1.0, found 1.5");
    assert_eq!(messages[9], "empty command");
    assert_eq!(
        messages[11],
        "expected an array of strings, a string or a table, found an integer"
    );
    assert_eq!(errs[10].hint.as_deref(), Some("did you mean `shell`?"));
}

#[test]
fn unknown_environment_lists_existing_ones() {
    match load_case("valid", "qa", &[]) {
        Err(Error::Usage(msg)) => {
            assert!(
                msg.starts_with(&format!(
                    "unknown environment `qa`: {FIX}/valid/environments/qa.toml does not exist"
                )),
                "{msg}"
            );
            assert!(
                msg.contains("existing environments: production, staging"),
                "{msg}"
            );
        }
        other => panic!("expected a usage error, got {other:?}"),
    }
    assert_eq!(
        list_environments(Path::new(&format!("{FIX}/valid"))),
        ["production", "staging"]
    );
}

#[test]
fn environment_names_cannot_escape_the_directory() {
    match load_case("valid", "../valid/deploy", &[]) {
        Err(Error::Usage(msg)) => assert!(msg.contains("invalid environment name"), "{msg}"),
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn missing_deploy_toml_suggests_init() {
    match load_case("does_not_exist", "production", &[]) {
        Err(Error::Usage(msg)) => {
            assert!(
                msg.contains(&format!("{FIX}/does_not_exist/deploy.toml does not exist")),
                "{msg}"
            );
            assert!(msg.contains("deployctl init"), "{msg}");
        }
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn errors_display_as_file_line_col() {
    let errs = config_errors("misspelled_key", &[]);
    let text = Error::Config(deployctl::error::ConfigErrors(errs)).to_string();
    assert_eq!(
        text,
        format!(
            "the configuration has 1 error:\n{FIX}/misspelled_key/deploy.toml:6:1: `health.timout`: unknown key `timout`\n  hint: did you mean `timeout`?\n"
        )
    );
}

// ---------------------------------------------------------------- valid configurations

#[test]
fn merge_tables_key_by_key_and_replace_arrays() {
    let prod = ok("valid", "production", &[]);
    let c = &prod.config;
    // Tables merged: overlay keys win, base keys stay, new keys are added.
    assert_eq!(c.app.env["NODE_ENV"], "production");
    assert_eq!(c.app.env["REGION"], "eu-west-1");
    assert_eq!(c.app.env["LOG_FORMAT"], "json");
    assert_eq!(c.app.name, "assistant");
    assert_eq!(c.health.deadline, "2m".parse::<Duration>().unwrap());
    assert_eq!(c.health.timeout, Duration::from_secs(2));
    assert_eq!(c.health.path, "/api/health");
    // Arrays and arrays of tables replaced whole.
    assert_eq!(c.git.branches, ["main"]);
    assert_eq!(c.notify.len(), 1);
    assert_eq!(c.notify[0].kind, NotifyKind::Webhook);
    assert_eq!(
        c.notify[0].url.as_deref(),
        Some("https://example.com/hooks/deploy")
    );
    // A table only the overlay has.
    assert_eq!(c.proxy.listen, "0.0.0.0:443");
    // Untouched sections keep the base (or the defaults).
    assert_eq!(c.health.expect_status, [200, 204]);
    assert_eq!(c.deploy.keep_releases, 3);
    assert_eq!(c.verify.window, Duration::from_secs(10));
    assert_eq!(
        prod.files,
        [
            Path::new(FIX).join("valid/deploy.toml"),
            Path::new(FIX).join("valid/environments/production.toml")
        ]
    );
    assert_eq!(prod.root, Path::new(FIX).join("valid"));
    // Paths stay as written.
    assert_eq!(c.build.context, Path::new("."));
    assert_eq!(c.prerequisites.env_file.as_deref(), Some(Path::new(".env")));

    let staging = ok("valid", "staging", &[]);
    assert_eq!(staging.config.app.port, 3001);
    assert_eq!(staging.config.app.env["NODE_ENV"], "staging");
    assert_eq!(staging.config.git.branches, ["main", "release/*"]);
    assert_eq!(staging.config.notify[0].kind, NotifyKind::Slack);
    assert_eq!(staging.config.health.deadline, Duration::from_secs(60));
}

#[test]
fn interpolation_defaults_env_file_and_escape() {
    let prod = ok("valid", "production", &[]);
    let env = &prod.config.app.env;
    // DB_PASSWORD from the env file; DB_HOST unset, so its default.
    assert_eq!(
        env["DATABASE_URL"],
        "postgres://app:pa55-w0rd-canary@localhost:5432/app"
    );
    assert_eq!(env["TEMPLATE"], "${NOT_EXPANDED} costs $5");
    assert!(env["SIGNING_KEY"].starts_with("-----BEGIN PRIVATE KEY-----\nMIIEvQ"));
    assert_eq!(
        prod.env_file_vars.keys().collect::<Vec<_>>(),
        ["DB_PASSWORD", "NPM_TOKEN", "SIGNING_KEY", "SLACK_TOKEN"]
    );

    // The process environment wins over the env file; a set variable beats its default.
    let over = ok(
        "valid",
        "production",
        &[("DB_PASSWORD", "from-process"), ("DB_HOST", "db.internal")],
    );
    assert_eq!(
        over.config.app.env["DATABASE_URL"],
        "postgres://app:from-process@db.internal:5432/app"
    );
}

#[test]
fn env_file_values_are_redacted() {
    let prod = ok("valid", "staging", &[]);
    let json = prod.redacted_json();
    let text = serde_json::to_string(&json).unwrap();
    for canary in CANARIES {
        assert!(!text.contains(canary), "{canary} leaked: {text}");
    }
    // Named secrets are masked whole, others only where they contain a secret.
    assert_eq!(json["app"]["env"]["DATABASE_URL"], "***");
    assert_eq!(json["app"]["env"]["SIGNING_KEY"], "***");
    assert_eq!(json["app"]["env"]["NODE_ENV"], "staging");
    assert_eq!(json["build"]["args"]["NODE_VERSION"], "20");
    assert_eq!(json["notify"][0]["url"], "***");
    assert_eq!(json["health"]["path"], "/api/health");

    // The Redactor hides each value, and each line of the multi-line one, anywhere in text.
    let r = &prod.redactor;
    let log = "connecting with pa55-w0rd-canary\nkey line c2VjcmV0LWxpbmUtdHdv seen\n";
    assert_eq!(r.redact(log), "connecting with ***\nkey line *** seen\n");
    let key = &prod.config.app.env["SIGNING_KEY"];
    assert_eq!(r.redact(&format!("<{key}>")), "<***>");
    let masks: Vec<&str> = r.secrets().collect();
    for canary in CANARIES {
        assert!(
            masks.contains(canary),
            "{canary} not registered for masking"
        );
    }
    // A secret interpolated into a larger, non-secret value is redacted as a substring.
    assert_eq!(
        r.redact("GET https://chat.example/hook/xoxb-slack-canary failed"),
        "GET https://chat.example/hook/*** failed"
    );

    // Debug output never shows a secret.
    let dbg = format!("{r:?} {prod:?}");
    for canary in CANARIES {
        assert!(!dbg.contains(canary), "{canary} leaked in Debug: {dbg}");
    }
}

#[test]
fn redactor_basics_through_public_api() {
    let mut r = Redactor::new();
    assert!(r.is_empty());
    r.add("line-one-secret\nline-two-secret");
    r.add("");
    assert!(!r.is_empty());
    assert_eq!(r.redact("a line-two-secret b"), "a *** b");
    assert_eq!(r.redact("line-one-secret\nline-two-secret"), "***");
    let dbg = format!("{r:?}");
    assert!(!dbg.contains("line-"), "{dbg}");
    let cloned = r.clone();
    assert_eq!(cloned.secrets().count(), 3);
    assert!(Redactor::default().is_empty());
}

#[test]
fn json_schema_rejects_unknown_keys() {
    let schema = json_schema();
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["required"], serde_json::json!(["app"]));
    assert!(schema["$defs"]["Health"]["properties"]["deadline"].is_object());
}

// ---------------------------------------------------------------- files made on the fly

fn write_files(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

#[cfg(unix)]
#[test]
fn env_file_readable_by_others_warns() {
    use std::os::unix::fs::PermissionsExt;
    let dir = write_files(&[
        (
            "deploy.toml",
            "[app]\nname = \"web\"\n[prerequisites]\nenv_file = \".env\"\n",
        ),
        ("environments/production.toml", ""),
        (".env", "TOKEN=abcdef\n"),
    ]);
    let env_path = dir.path().join(".env");
    let opts = options(dir.path().join("deploy.toml"), "production", &[]);

    std::fs::set_permissions(&env_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let loaded = load(&opts).unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:?}", loaded.warnings);
    assert!(
        loaded.warnings[0].contains("chmod 600"),
        "{:?}",
        loaded.warnings
    );
    assert!(
        loaded.warnings[0].contains("mode 644"),
        "{:?}",
        loaded.warnings
    );

    std::fs::set_permissions(&env_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let loaded = load(&opts).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.env_file_vars["TOKEN"], "abcdef");
}

#[test]
fn secrets_are_redacted_in_error_messages() {
    let dir = write_files(&[
        (
            "deploy.toml",
            "[app]\nname = \"web\"\n[prerequisites]\nenv_file = \".env\"\n[health]\npath = \"${TOKEN}\"\n",
        ),
        ("environments/production.toml", ""),
        (".env", "TOKEN=sekrit-canary-1\n"),
    ]);
    let err = load(&options(dir.path().join("deploy.toml"), "production", &[])).unwrap_err();
    let Error::Config(errs) = err else {
        panic!("expected config errors")
    };
    assert_eq!(errs.0.len(), 1, "{errs:#?}");
    assert_eq!(errs.0[0].message, "`***` does not start with `/`");
    assert_eq!(errs.0[0].hint.as_deref(), Some("write `/***`"));
}

#[test]
fn env_file_syntax_error_is_located_without_quoting_the_line() {
    let dir = write_files(&[
        (
            "deploy.toml",
            "[app]\nname = \"web\"\n[prerequisites]\nenv_file = \"app.env\"\n",
        ),
        ("environments/production.toml", ""),
        ("app.env", "GOOD=1\nBAD LINE=sekrit-canary-2\n"),
    ]);
    let err = load(&options(dir.path().join("deploy.toml"), "production", &[])).unwrap_err();
    let Error::Config(errs) = err else {
        panic!("expected config errors")
    };
    assert_eq!(errs.0.len(), 1, "{errs:#?}");
    let e = &errs.0[0];
    assert!(e.file.ends_with("app.env"), "{e:#?}");
    // dotenvy reports the failure after the unexpected space: `L` of `LINE`.
    assert_eq!((e.line, e.col), (2, 5), "{e:#?}");
    assert_eq!(e.message, "syntax error in env file");
    assert!(!errs.to_string().contains("sekrit"));
}

#[test]
fn process_env_interpolates_env_file_path() {
    let dir = write_files(&[
        (
            "deploy.toml",
            "[app]\nname = \"web\"\nsecret_env = [\"KEY\"]\n[app.env]\nKEY = \"${KEY}\"\n[prerequisites]\nenv_file = \"${STAGE:-dev}.env\"\n",
        ),
        ("environments/production.toml", ""),
        ("dev.env", "KEY=from-dev-file\n"),
        ("prod.env", "KEY=from-prod-file\n"),
    ]);
    let path = dir.path().join("deploy.toml");
    let dev = load(&options(&path, "production", &[])).unwrap();
    assert_eq!(dev.config.app.env["KEY"], "from-dev-file");
    let prod = load(&options(&path, "production", &[("STAGE", "prod")])).unwrap();
    assert_eq!(prod.config.app.env["KEY"], "from-prod-file");
    assert_eq!(prod.redacted_json()["app"]["env"]["KEY"], "***");
}

#[test]
fn missing_required_keys_point_at_their_table() {
    let dir = write_files(&[
        (
            "deploy.toml",
            "[health]\nport = 0\nexpect_json = { pointer = \"/ok\" }\n\n[[notify]]\nkind = \"slack\"\n",
        ),
        ("environments/production.toml", ""),
    ]);
    let err = load(&options(dir.path().join("deploy.toml"), "production", &[])).unwrap_err();
    let Error::Config(errs) = err else {
        panic!("expected config errors")
    };
    let got: Vec<(usize, usize, &str, &str)> = errs
        .0
        .iter()
        .map(|e| (e.line, e.col, e.key.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            // No `[app]` at all: a file-level error.
            (0, 0, "app", "missing required key `app`"),
            (2, 8, "health.port", "invalid port 0"),
            (
                3,
                15,
                "health.expect_json.equals",
                "missing required key `equals`"
            ),
            (5, 1, "notify[0].url", "missing required key `url`"),
        ]
    );
    assert!(errs.0.iter().all(|e| e.file.ends_with("deploy.toml")));
}

#[test]
fn unquoted_duration_is_a_type_error_with_a_hint() {
    let dir = write_files(&[
        (
            "deploy.toml",
            "[app]\nname = \"web\"\n[health]\ntimeout = 5\n",
        ),
        ("environments/production.toml", ""),
    ]);
    let err = load(&options(dir.path().join("deploy.toml"), "production", &[])).unwrap_err();
    let Error::Config(errs) = err else {
        panic!("expected config errors")
    };
    assert_eq!(errs.0.len(), 1, "{errs:#?}");
    let e = &errs.0[0];
    assert_eq!((e.line, e.col, e.key.as_str()), (4, 11, "health.timeout"));
    assert_eq!(
        e.message,
        "expected a duration string such as \"2s\", found an integer"
    );
    assert_eq!(
        e.hint.as_deref(),
        Some("write a duration like `500ms`, `2s`, `1m30s` or `1h`, in quotes")
    );
}
