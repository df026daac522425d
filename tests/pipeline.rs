//! The pipeline around the swap on the real Docker Engine: hooks, the release ledger, pruning.

mod support;

use support::{App, Reply, Stub};

fn releases(app: &App) -> Vec<serde_json::Value> {
    let run = app.run(&["releases", "--output", "json"], &[]);
    assert_eq!(run.code, 0, "{run}");
    let doc: serde_json::Value = run.json();
    doc["releases"].as_array().cloned().unwrap_or_default()
}

fn app_images(app: &App) -> Vec<String> {
    let out = support::docker(&[
        "images",
        "--format",
        "{{.Tag}}",
        "--filter",
        &format!("label=deployctl.app={}", app.name),
    ])
    .expect("docker images");
    let mut tags: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    tags.sort();
    tags
}

#[test]
fn hooks_get_their_environment_and_no_shell_splicing() {
    let overlay = r#"
[hooks]
pre_deploy = [["sh", "-c", "echo \"pre $DEPLOYCTL_APP $DEPLOYCTL_ENV $DEPLOYCTL_VERSION $DEPLOYCTL_COLOR prev=$DEPLOYCTL_PREVIOUS_VERSION\" >> hooks.log"]]
post_deploy = [["sh", "-c", "echo \"post $DEPLOYCTL_VERSION $DEPLOYCTL_OUTCOME\" >> hooks.log"], ["echo", "$(touch pwned-argv)"], "echo $(touch pwned-line)"]
on_failure = [["sh", "-c", "echo \"failure $DEPLOYCTL_VERSION $DEPLOYCTL_OUTCOME\" >> hooks.log"]]
"#;
    let app = App::with_overlay("dcthook", "0s", overlay);
    let run = app.deploy("v1", &[]);
    assert_eq!(run.code, 0, "{run}");
    let run = app.deploy("v2", &[]);
    assert_eq!(run.code, 0, "{run}");
    let run = app.deploy("v3", &[("DEMO_MODE", "fail500")]);
    assert_eq!(run.code, 1, "{run}");
    let log = std::fs::read_to_string(app.root().join("hooks.log")).expect("hooks ran");
    let name = &app.name;
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        [
            format!("pre {name} test v1 blue prev="),
            "post v1 live".to_string(),
            format!("pre {name} test v2 green prev=v1"),
            "post v2 live".to_string(),
            "failure v3 failed".to_string(),
        ]
    );
    assert!(
        !app.root().join("pwned-argv").exists(),
        "argv hook ran a shell"
    );
    assert!(
        !app.root().join("pwned-line").exists(),
        "string hook ran a shell"
    );
}

#[test]
fn failing_pre_deploy_hook_aborts_before_the_switch() {
    let overlay = r#"
[hooks]
pre_deploy = [["sh", "-c", "test \"$DEPLOYCTL_VERSION\" != v2"]]
"#;
    let app = App::with_overlay("dctpre", "0s", overlay);
    assert_eq!(app.deploy("v1", &[]).code, 0);
    let run = app.deploy("v2", &[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stdout.contains("pre_deploy failed"), "{run}");
    assert_eq!(app.status_json()["live"]["version"], "v1");
}

#[test]
fn ledger_and_pruning_over_seven_deploys_keep_the_last_good_release() {
    let overlay = "[deploy]\nkeep_releases = 2\n";
    let app = App::with_overlay("dctled", "0s", overlay);
    let plan: [(&str, Option<&str>); 7] = [
        ("r1", None),
        ("r2", None),
        ("r3", None),
        ("r4", Some("fail500")),
        ("r5", None),
        ("r6", Some("refuse")),
        ("r7", None),
    ];
    for (version, mode) in plan {
        let env: Vec<(&str, &str)> = mode.map(|m| vec![("DEMO_MODE", m)]).unwrap_or_default();
        let run = app.deploy(version, &env);
        assert_eq!(
            run.code,
            if mode.is_some() { 1 } else { 0 },
            "{version}: {run}"
        );
    }
    let ledger = releases(&app);
    let outcomes: Vec<(String, String)> = ledger
        .iter()
        .map(|r| {
            (
                r["version"].as_str().unwrap_or("").to_string(),
                r["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expect = [
        ("r1", "good"),
        ("r2", "good"),
        ("r3", "good"),
        ("r4", "failed"),
        ("r5", "good"),
        ("r6", "failed"),
        ("r7", "live"),
    ];
    assert_eq!(
        outcomes,
        expect.map(|(v, o)| (v.to_string(), o.to_string())),
        "{ledger:?}"
    );
    assert!(
        ledger[3]["reason"].as_str().unwrap_or("").contains("500"),
        "{:?}",
        ledger[3]
    );

    // keep_releases = 2: the live r7 and the last good r5 stay; r6's image stays with its failed
    // container for inspection; older ones are gone.
    let images = app_images(&app);
    assert!(
        images.contains(&"r7".to_string()) && images.contains(&"r5".to_string()),
        "{images:?}"
    );
    for gone in ["r1", "r2", "r3", "r4"] {
        assert!(
            !images.contains(&gone.to_string()),
            "{gone} should be pruned: {images:?}"
        );
    }

    // No argument: back to the last good release, r5.
    let run = app.run(&["rollback"], &[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(app.status_json()["live"]["version"], "r5");
    let ledger = releases(&app);
    let last = ledger.last().expect("a record");
    assert_eq!(
        (last["version"].as_str(), last["outcome"].as_str()),
        (Some("r5"), Some("live"))
    );
    let r7 = ledger
        .iter()
        .rev()
        .find(|r| r["version"] == "r7")
        .expect("r7");
    assert_eq!(r7["outcome"], "rolled_back");
}

#[test]
fn webhooks_are_sent_and_a_failing_webhook_does_not_fail_the_deploy() {
    let ok = Stub::status(200);
    let bad = Stub::status(500);
    let hang = Stub::start(|_, _| Reply::hang());
    let (ok_port, bad_port, hang_port) = (ok.port(), bad.port(), hang.port());
    let overlay = format!(
        r#"
[[notify]]
kind = "webhook"
url = "http://127.0.0.1:{ok_port}/hook/T0KEN-in-url-123"

[[notify]]
kind = "webhook"
url = "http://127.0.0.1:{bad_port}/hook"
on = ["success"]
timeout = "300ms"

[[notify]]
kind = "slack"
url = "http://127.0.0.1:{hang_port}/slack"
on = ["success"]
timeout = "300ms"
"#
    );
    let app = App::with_overlay("dctntf", "0s", &overlay);
    let run = app.deploy("v1", &[]);
    assert_eq!(
        run.code, 0,
        "a failing webhook never fails the deploy: {run}"
    );
    assert!(
        run.stderr.contains("notification failed"),
        "the failure is reported: {run}"
    );
    assert!(
        !run.stderr.contains("T0KEN") && !run.stdout.contains("T0KEN"),
        "URLs are secret: {run}"
    );
    let run = app.deploy("v2", &[("DEMO_MODE", "fail500")]);
    assert_eq!(run.code, 1, "{run}");

    let bodies: Vec<String> = ok
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    let first: serde_json::Value = serde_json::from_str(&bodies[0]).expect("JSON payload");
    assert_eq!(first["event"], "success");
    assert_eq!(first["app"], app.name.as_str());
    assert_eq!(first["env"], "test");
    assert_eq!(first["version"], "v1");
    assert_eq!(first["outcome"], "live");
    assert_eq!(first["url"], format!("http://127.0.0.1:{}", app.port));
    let second: serde_json::Value = serde_json::from_str(&bodies[1]).expect("JSON payload");
    assert_eq!(second["event"], "failure");
    assert_eq!(second["version"], "v2");
    assert_eq!(second["previous"], "v1");
    assert_eq!(second["outcome"], "failed");
    // The 500 webhook only wants successes: 3 attempts for v1, none for v2.
    assert_eq!(bad.hits(), 3);
}

#[test]
fn github_actions_mode_masks_groups_and_writes_summary_and_outputs() {
    const CANARY: &str = "canary-T0KEN-5ecret-9876";
    let overlay =
        "[prerequisites]\nenv_file = \".env\"\n\n[app.env]\nAPI_TOKEN = \"${API_TOKEN}\"\n";
    let app = App::with_overlay("dctgha", "0s", overlay);
    let env_file = app.root().join(".env");
    std::fs::write(&env_file, format!("API_TOKEN={CANARY}\n")).expect("write .env");
    std::fs::set_permissions(
        &env_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    let summary = app.root().join("summary.log");
    let outputs = app.root().join("outputs.log");
    let gha_env = [
        ("GITHUB_ACTIONS", "true"),
        ("GITHUB_STEP_SUMMARY", summary.to_str().expect("utf-8 path")),
        ("GITHUB_OUTPUT", outputs.to_str().expect("utf-8 path")),
    ];
    let run = app.deploy("v1", &gha_env);
    assert_eq!(run.code, 0, "{run}");

    // Masks first, before anything else is printed; the secret appears nowhere else.
    let first = run.stderr.lines().next().unwrap_or("");
    assert_eq!(first, format!("::add-mask::{CANARY}"), "{run}");
    for (i, line) in run.stderr.lines().enumerate() {
        assert!(
            i == 0 || !line.contains(CANARY),
            "secret on stderr line {i}: {line}"
        );
    }
    assert!(!run.stdout.contains(CANARY));
    assert!(
        run.stderr.lines().any(|l| l.starts_with("::group::build")),
        "{run}"
    );
    let groups = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("::group::"))
        .count();
    let ends = run.stderr.lines().filter(|l| *l == "::endgroup::").count();
    assert_eq!(groups, ends, "balanced groups: {run}");
    // Build output is fenced off so it cannot issue workflow commands.
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("::stop-commands::")),
        "{run}"
    );

    let out = std::fs::read_to_string(&outputs).expect("outputs written");
    let mut values = std::collections::BTreeMap::new();
    let mut lines = out.lines();
    while let Some(line) = lines.next() {
        let (name, delim) = line.split_once("<<").expect("heredoc form");
        let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delim).collect();
        values.insert(name.to_string(), value.join("\n"));
    }
    assert_eq!(values["version"], "v1");
    assert_eq!(values["color"], "blue");
    assert_eq!(values["url"], format!("http://127.0.0.1:{}", app.port));
    assert_eq!(values["previous"], "");
    let md = std::fs::read_to_string(&summary).expect("summary written");
    assert!(md.contains("v1") && md.contains(&app.name), "{md}");
    for file in [&md, &out] {
        assert!(!file.contains(CANARY));
    }
}

fn docker_ids(args: &[&str]) -> String {
    support::docker(args)
        .expect("docker")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn failing_tests_and_failing_builds_change_nothing() {
    let overlay = r#"
[test]
commands = [["sh", "-c", "echo running the suite; test \"$RUN_TESTS_FAIL\" != 1 || { echo 'assertion failed: 1 == 2' >&2; exit 7; }"]]
timeout = "20s"
"#;
    let app = App::with_overlay("dctbld", "0s", overlay);
    assert_eq!(app.deploy("v1", &[]).code, 0);
    let filter = format!("label=deployctl.app={}", app.name);
    let before = (
        docker_ids(&["ps", "-aq", "--no-trunc", "--filter", &filter]),
        docker_ids(&["images", "-q", "--no-trunc", "--filter", &filter]),
    );

    // A failing test command stops before the build: exit 1, its exit code and last lines shown.
    let run = app.deploy("v2", &[("RUN_TESTS_FAIL", "1")]);
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stdout.contains("exited with code 7"), "{run}");
    assert!(run.stdout.contains("assertion failed: 1 == 2"), "{run}");
    assert!(
        !run.stderr.contains("==> build"),
        "no build after a failed test: {run}"
    );

    // A build failure: nothing changes, no lock held.
    std::fs::write(
        app.root().join("Dockerfile"),
        "FROM scratch\nCOPY missing-file /x\n",
    )
    .expect("break the Dockerfile");
    app.commit("break the build");
    let run = app.run(&["deploy", "--release", "v3", "--skip-tests"], &[]);
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout.to_lowercase().contains("missing-file"),
        "the daemon's message: {run}"
    );
    let after = (
        docker_ids(&["ps", "-aq", "--no-trunc", "--filter", &filter]),
        docker_ids(&["images", "-q", "--no-trunc", "--filter", &filter]),
    );
    assert_eq!(before, after, "containers and images as they were");
    assert!(!app.lock_exists());
    assert_eq!(app.status_json()["live"]["version"], "v1");

    // --skip-tests is recorded in the ledger.
    std::fs::write(
        app.root().join("Dockerfile"),
        "FROM scratch\nCOPY demo-app /demo-app\nENTRYPOINT [\"/demo-app\"]\n",
    )
    .expect("restore");
    app.commit("fix the build");
    let run = app.run(&["deploy", "--release", "v4", "--skip-tests"], &[]);
    assert_eq!(run.code, 0, "{run}");
    let last = releases(&app).last().cloned().expect("a record");
    assert_eq!(
        (last["version"].as_str(), last["tests_skipped"].as_bool()),
        (Some("v4"), Some(true))
    );
}

/// Debian's docker-registry on a free loopback port, stopped when dropped.
struct LocalRegistry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    fn start() -> LocalRegistry {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = support::free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("write registry config");
        let child = std::process::Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry (Debian package docker-registry; .ci/run installs it)");
        let up = support::wait_until(std::time::Duration::from_secs(15), || {
            support::http_get(port, "/v2/").is_ok_and(|(status, _)| status == 200)
        });
        assert!(up, "the local registry answers on 127.0.0.1:{port}");
        LocalRegistry {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn built_images_are_pushed_to_the_configured_registry() {
    let registry = LocalRegistry::start();
    let overlay = format!(
        "[registry]\nserver = \"127.0.0.1:{}\"\nrepository = \"team/web\"\n",
        registry.port
    );
    let app = App::with_overlay("dctreg", "0s", &overlay);
    let run = app.deploy("v1", &[]);
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("==> push"), "{run}");
    let (status, body) =
        support::http_get(registry.port, "/v2/team/web/tags/list").expect("registry answers");
    assert_eq!(status, 200, "{body}");
    let tags: serde_json::Value = serde_json::from_str(&body).expect("tags JSON");
    assert_eq!(tags["tags"], serde_json::json!(["v1"]));
    // The registry tag is not kept locally, so pruning and `remove` still own the image.
    let local = support::docker(&[
        "images",
        "-q",
        &format!("127.0.0.1:{}/team/web", registry.port),
    ])
    .expect("docker images");
    assert!(local.trim().is_empty(), "local registry tag left: {local}");
}
