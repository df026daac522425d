//! Issue 8, secrets and untrusted text (items 5, 6, 7, 8, 10): each test runs the real deployctl
//! binary against the shared Docker daemon and looks where a leak or an injection would show.

mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{App, Run, docker, wait_until};

/// Writes `.env` (mode 0600, git-ignored by the support app) with the given `NAME=value` lines.
fn write_env_file(app: &App, lines: &str) {
    let path = app.root().join(".env");
    std::fs::write(&path, lines).expect("write .env");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod .env");
}

/// The id of this app's proxy container, found by its labels (not by its name).
fn proxy_id(app: &App) -> String {
    let ids = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=deployctl.app={}", app.name),
        "--filter",
        "label=deployctl.role=proxy",
    ])
    .expect("docker ps");
    let id = ids
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(!id.is_empty(), "no running proxy for {}", app.name);
    id
}

/// The ledger as the proxy stores it, read with `docker exec` and no redaction by deployctl.
fn raw_ledger(app: &App) -> String {
    docker(&["exec", &proxy_id(app), "/deployctl", "proxy", "releases"]).expect("proxy releases")
}

/// The ledger as `deployctl releases --output json` shows it.
fn releases_json(app: &App) -> (Run, serde_json::Value) {
    let run = app.run(&["releases", "--output", "json"], &[]);
    assert_eq!(run.code, 0, "{run}");
    let value = run.json();
    (run, value)
}

/// Lines as the Actions runner splits them: at `\n`, `\r\n` and a lone `\r`.
fn runner_lines(text: &str) -> Vec<&str> {
    text.split(['\r', '\n']).collect()
}

/// Lines of one stream that the runner would read as workflow commands: outside every
/// `::stop-commands::TOKEN` … `::TOKEN::` fence, starting with `::` once leading whitespace is
/// trimmed (the runner trims before matching).
fn live_commands(text: &str) -> Vec<String> {
    let mut stopped: Option<String> = None;
    let mut out = Vec::new();
    for line in runner_lines(text) {
        let t = line.trim_start();
        match &stopped {
            Some(token) => {
                if t.trim_end() == format!("::{token}::") {
                    stopped = None;
                }
            }
            None => {
                if let Some(token) = t.strip_prefix("::stop-commands::") {
                    stopped = Some(token.trim_end().to_string());
                } else if t.starts_with("::") {
                    out.push(t.to_string());
                }
            }
        }
    }
    out
}

/// Asserts that no untrusted line can act as a workflow command: stdout carries none at all, and
/// stderr only deployctl's own (groups, masks of the run's secrets, error annotations), none of
/// which masks the `hello` of the injected `::add-mask::hello`. Our own commands may quote the
/// untrusted text in their (escaped, single-line) data, e.g. a group titled after a command.
fn assert_no_injected_commands(run: &Run) {
    let on_stdout = live_commands(&run.stdout);
    assert!(
        on_stdout.is_empty(),
        "workflow commands on stdout: {on_stdout:?}\n{run}"
    );
    for cmd in live_commands(&run.stderr) {
        let ours = cmd.starts_with("::group::")
            || cmd == "::endgroup::"
            || cmd.starts_with("::error")
            || cmd.starts_with("::add-mask::");
        assert!(ours, "foreign workflow command on stderr: {cmd:?}\n{run}");
        assert!(
            !(cmd.starts_with("::add-mask::") && cmd.contains("hello")),
            "injected mask obeyed: {cmd:?}\n{run}"
        );
    }
}

const GHA: [(&str, &str); 1] = [("GITHUB_ACTIONS", "true")];

#[test]
fn item05_untrusted_test_output_cannot_issue_workflow_commands_from_the_failure_report() {
    let overlay = r#"
[test]
commands = [{ run = "echo '::warning::INJECTED'; echo '   ::add-mask::hello'; printf 'x\r::warning::CRINJECT\n'; exit 3", shell = true }]
"#;
    let app = App::with_overlay("dcts5t", "0s", overlay);
    let run = app.run(&["deploy"], &GHA);
    assert_eq!(run.code, 1, "the test command fails the deploy: {run}");
    // The report does replay the output (it is useful), just not as commands.
    assert!(run.stdout.contains("INJECTED"), "{run}");
    assert_no_injected_commands(&run);
}

#[test]
fn item05_health_body_with_carriage_return_cannot_issue_workflow_commands() {
    let overlay = r#"
[app.env]
DEMO_HEALTH_BODY = "oops\r::warning::BODYINJECT\r\n  ::add-mask::hello"
"#;
    let app = App::with_overlay("dcts5h", "0s", overlay);
    let run = app.run(&["deploy"], &GHA);
    assert_eq!(run.code, 1, "an unhealthy release fails the deploy: {run}");
    assert!(run.stdout.contains("BODYINJECT"), "{run}");
    assert_no_injected_commands(&run);
    // -vv logs replay the proxy's answers too.
    let run = app.run(&["-vv", "deploy"], &GHA);
    assert_eq!(run.code, 1, "{run}");
    assert_no_injected_commands(&run);
}

/// `docker events` for exec creations in this app's containers, from now until stopped.
struct ExecEvents {
    child: Child,
    app: String,
}

impl ExecEvents {
    fn start(app: &App) -> ExecEvents {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().saturating_sub(1))
            .unwrap_or(0);
        let child = Command::new("docker")
            .args([
                "events",
                "--since",
                &since.to_string(),
                "--filter",
                "type=container",
                "--filter",
                "event=exec_create",
                "--filter",
                &format!("label=deployctl.app={}", app.name),
                "--format",
                "{{json .}}",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker events");
        ExecEvents {
            child,
            app: app.name.clone(),
        }
    }

    /// Every event up to a marker exec run now: events arrive in order, so once the marker's
    /// event is read, every earlier exec's event has been too.
    fn finish(mut self, proxy: &str) -> String {
        let marker = format!("marker-{}", self.app);
        // `proxy status` ignores nothing: the marker goes in as the state dir, harmless here.
        let _ = docker(&[
            "exec",
            proxy,
            "/deployctl",
            "proxy",
            "status",
            "--state-dir",
            &format!("/{marker}"),
        ]);
        let mut stdout = self.child.stdout.take().expect("events stdout");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx
                            .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        let mut text = String::new();
        let seen = wait_until(Duration::from_secs(20), || {
            while let Ok(chunk) = rx.try_recv() {
                text.push_str(&chunk);
            }
            text.contains(&marker)
        });
        let _ = self.child.kill();
        let _ = self.child.wait();
        assert!(
            seen,
            "the marker exec never showed in docker events:\n{text}"
        );
        text
    }
}

#[test]
fn item06_health_header_secret_is_not_in_the_argv_of_docker_exec() {
    const CANARY: &str = "hdr-canary-7Qx9-s3cret";
    let overlay = r#"
[prerequisites]
env_file = ".env"

[health.headers]
Authorization = "Bearer ${HEALTH_TOKEN}"
"#;
    let app = App::with_overlay("dcts6a", "0s", overlay);
    write_env_file(&app, &format!("HEALTH_TOKEN={CANARY}\n"));
    let events = ExecEvents::start(&app);
    let run = app.run(&["deploy"], &[]);
    assert_eq!(run.code, 0, "{run}");
    let proxy = proxy_id(&app);
    let seen = events.finish(&proxy);
    assert!(
        seen.contains("proxy health"),
        "the health check runs through docker exec: {seen}"
    );
    assert!(
        !seen.contains(CANARY),
        "the secret is in the argv of an exec:\n{seen}"
    );
    assert!(!run.stdout.contains(CANARY) && !run.stderr.contains(CANARY));
}

#[test]
fn item06_failing_hook_output_with_a_secret_is_redacted_in_the_ledger() {
    const CANARY: &str = "hook-canary-4Rt2-s3cret";
    let overlay = r#"
[prerequisites]
env_file = ".env"

[hooks]
pre_deploy = [["sh", "-c", "echo \"the token is $0\"; exit 4", "${HOOK_TOKEN}"]]
"#;
    let app = App::with_overlay("dcts6b", "0s", overlay);
    write_env_file(&app, &format!("HOOK_TOKEN={CANARY}\n"));
    let run = app.run(&["deploy"], &[]);
    assert_eq!(run.code, 1, "the hook fails the deploy: {run}");
    let raw = raw_ledger(&app);
    assert!(raw.contains("the token is"), "hook output recorded: {raw}");
    assert!(!raw.contains(CANARY), "secret in the stored ledger: {raw}");
    let (listed, _) = releases_json(&app);
    assert!(!listed.stdout.contains(CANARY), "{listed}");
}

#[test]
fn item07_secret_build_args_are_refused_with_location_and_reason() {
    let overlay =
        "[build.args]\nNPM_TOKEN = \"abcd-efgh\"\n\n[build]\nsecret_args = [\"NPM_TOKEN\"]\n";
    let app = App::with_overlay("dcts7", "0s", overlay);
    let run = app.run(&["deploy"], &[]);
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr.contains("test.toml:5:"),
        "file:line:col of build.secret_args: {run}"
    );
    assert!(run.stderr.contains("docker history"), "says why: {run}");
    assert!(
        run.stderr.contains("app.secret_env"),
        "says what instead: {run}"
    );
    assert!(!run.stderr.contains("abcd-efgh"), "{run}");
    // Nothing was built: no image carries the value.
    let images = docker(&[
        "images",
        "-q",
        "--filter",
        &format!("label=deployctl.app={}", app.name),
    ])
    .expect("docker images");
    assert!(images.trim().is_empty(), "an image was built: {images}");
}

#[test]
fn item07_build_arg_holding_an_env_file_secret_is_refused() {
    let overlay =
        "[prerequisites]\nenv_file = \".env\"\n\n[build.args]\nNPM_TOKEN = \"${NPM_TOKEN}\"\n";
    let app = App::with_overlay("dcts7e", "0s", overlay);
    write_env_file(&app, "NPM_TOKEN=npm-s3cret-canary\n");
    let run = app.run(&["deploy"], &[]);
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("test.toml:5:"), "located: {run}");
    assert!(run.stderr.contains("docker history"), "says why: {run}");
    assert!(!run.stderr.contains("npm-s3cret-canary"), "{run}");
    let images = docker(&[
        "images",
        "-q",
        "--filter",
        &format!("label=deployctl.app={}", app.name),
    ])
    .expect("docker images");
    assert!(images.trim().is_empty(), "an image was built: {images}");
}

#[test]
fn item08_secret_with_quotes_and_spaces_is_masked_once_shell_quoted() {
    const SECRET: &str = r#"it's "qu0ted" s3cr3t v4lue"#;
    let overlay = r#"
[app]
secret_env = ["QSECRET"]

[app.env]
QSECRET = "${QSECRET}"

[test]
commands = [["sh", "-c", "exit 5", "sh", "--token=${QSECRET}"]]
"#;
    let app = App::with_overlay("dcts8", "0s", overlay);
    let env = [("QSECRET", SECRET)];
    let leaks = |run: &Run| {
        for part in ["qu0ted", "s3cr3t", "v4lue"] {
            for (i, line) in run.stdout.lines().chain(run.stderr.lines()).enumerate() {
                if line.starts_with("::add-mask::") {
                    continue;
                }
                assert!(
                    !line.contains(part),
                    "`{part}` leaked on line {i}: {line}\n{run}"
                );
            }
        }
    };
    let dry = app.run(&["deploy", "--dry-run"], &env);
    assert_eq!(dry.code, 0, "{dry}");
    assert!(dry.stdout.contains("--token=***"), "{dry}");
    leaks(&dry);
    let dry_json = app.run(&["deploy", "--dry-run", "--output", "json"], &env);
    assert_eq!(dry_json.code, 0, "{dry_json}");
    leaks(&dry_json);
    let mut env_gha = env.to_vec();
    env_gha.extend(GHA);
    let human = app.run(&["-vv", "deploy"], &env_gha);
    assert_eq!(human.code, 1, "the test command fails: {human}");
    assert!(
        human.stderr.lines().any(|l| l.starts_with("::group::test")),
        "{human}"
    );
    leaks(&human);
    let json = app.run(&["deploy", "--output", "json"], &env);
    assert_eq!(json.code, 1, "{json}");
    leaks(&json);
}

#[test]
fn item10_huge_failure_reason_is_recorded_as_failed_with_a_capped_reason() {
    let overlay = r#"
[hooks]
pre_deploy = [{ run = "i=0; while [ $i -lt 2000 ]; do printf '%0100d' 0; i=$((i+1)); done; echo TAIL-MARK; exit 6", shell = true }]
"#;
    let app = App::with_overlay("dcts10", "0s", overlay);
    let run = app.run(&["deploy"], &[]);
    assert_eq!(run.code, 1, "the hook fails the deploy: {run}");
    assert!(
        !run.stderr.contains("could not record"),
        "recording failed: {run}"
    );
    let (listed, value) = releases_json(&app);
    let releases = value["releases"].as_array().expect("releases array");
    assert_eq!(releases.len(), 1, "{listed}");
    let r = &releases[0];
    assert_eq!(r["outcome"], "failed", "{listed}");
    let reason = r["reason"].as_str().expect("a reason");
    assert!(
        reason.len() <= 8 * 1024 + 256,
        "reason not capped: {} bytes",
        reason.len()
    );
    assert!(reason.contains("TAIL-MARK"), "the tail is kept: {reason}");
}
