//! Acceptance tests of issue 8, items 1, 3 and 4 (identity of what deployctl creates): names of two
//! (app, env) pairs never collide and foreign objects are refused; each environment runs the image
//! it built; rollback restores a release as it ran. Real Docker, real binary.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::{App, Run, docker, http_get};

/// One app in one environment named freely (support's `App` always uses `test`).
struct Site {
    app: String,
    env: String,
    dir: tempfile::TempDir,
    port: u16,
}

impl Site {
    fn new(app: &str, env: &str) -> Site {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = support::free_port();
        let root = dir.path();
        std::fs::create_dir_all(root.join("environments")).expect("mkdir");
        let config = support::BASE_CONFIG
            .replace("{name}", app)
            .replace("{verify}", "0s");
        std::fs::write(root.join("deploy.toml"), config).expect("write deploy.toml");
        std::fs::write(
            root.join(format!("environments/{env}.toml")),
            format!("[proxy]\nlisten = \"127.0.0.1:{port}\"\n"),
        )
        .expect("write overlay");
        std::fs::write(
            root.join("Dockerfile"),
            "FROM scratch\nCOPY demo-app /demo-app\nENTRYPOINT [\"/demo-app\"]\n",
        )
        .expect("write Dockerfile");
        std::fs::copy(support::demo_bin(), root.join("demo-app")).expect("copy demo-app");
        git(root, &["init", "-q", "-b", "main"]);
        let site = Site {
            app: app.into(),
            env: env.into(),
            dir,
            port,
        };
        site.commit();
        site
    }

    fn commit(&self) {
        git(self.dir.path(), &["add", "-A"]);
        git(
            self.dir.path(),
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t.invalid",
                "commit",
                "-qm",
                "change",
            ],
        );
    }

    fn run(&self, args: &[&str]) -> Run {
        Command::new(support::deployctl_bin())
            .args(args)
            .args(["--env", &self.env, "--config"])
            .arg(self.dir.path().join("deploy.toml"))
            .env_remove("DEPLOYCTL_ENV")
            .env_remove("DEPLOYCTL_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run deployctl")
            .into()
    }

    /// Deploys the commit (its version is the git short sha).
    fn deploy(&self) -> (Run, String) {
        let run = self.run(&["deploy"]);
        let status = self.run(&["status", "--output", "json"]);
        let version = serde_json::from_str::<serde_json::Value>(&status.stdout)
            .ok()
            .and_then(|s| s["live"]["version"].as_str().map(str::to_string))
            .unwrap_or_default();
        (run, version)
    }

    fn serving(&self) -> Option<String> {
        http_get(self.port, "/")
            .ok()
            .filter(|(s, _)| *s == 200)
            .and_then(|(_, b)| support::body_version(&b))
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.run(&["remove", "--yes"]);
        let filter = format!("label=deployctl.app={}", self.app);
        for (list, rm) in [
            (["ps", "-aq", "--filter"], ["rm", "-f"]),
            (["images", "-q", "--filter"], ["rmi", "-f"]),
            (["network", "ls", "-q"], ["network", "rm"]),
            (["volume", "ls", "-q"], ["volume", "rm"]),
        ] {
            let mut args: Vec<&str> = list.to_vec();
            if list[0] == "network" || list[0] == "volume" {
                args.extend(["--filter", &filter]);
            } else {
                args.push(&filter);
            }
            if let Ok(ids) = docker(&args) {
                for id in ids.split_whitespace() {
                    let _ = docker(&[rm[0], rm[1], id]);
                }
            }
        }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .status()
        .map(|s| s.success());
    assert!(matches!(ok, Ok(true)), "git {args:?} failed");
}

/// Names of the objects that carry `deployctl.app=<app>`.
fn objects_of(app: &str) -> Vec<String> {
    let filter = format!("label=deployctl.app={app}");
    let mut out = Vec::new();
    for args in [
        vec!["ps", "-a", "--format", "{{.Names}}", "--filter", &filter],
        vec![
            "network",
            "ls",
            "--format",
            "{{.Name}}",
            "--filter",
            &filter,
        ],
        vec!["volume", "ls", "--format", "{{.Name}}", "--filter", &filter],
    ] {
        out.extend(
            docker(&args)
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string),
        );
    }
    out.sort();
    out
}

#[test]
fn item01_names_cannot_collide_across_app_env_pairs() {
    let base = support::unique("idn");
    let first = Site::new(&base, "x-y");
    let second = Site::new(&format!("{base}-x"), "y");

    let (run, v1) = first.deploy();
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(first.serving(), Some(v1.clone()));
    let first_objects = objects_of(&first.app);

    let (run, w1) = second.deploy();
    assert_eq!(run.code, 0, "{run}");
    assert_ne!(v1, w1, "two repositories, two commits");
    assert!(
        !run.stderr.contains(&v1) && !run.stdout.contains(&v1),
        "the second pair saw the first's release:\n{run}"
    );
    assert_eq!(second.serving(), Some(w1), "{run}");
    assert_eq!(first.serving(), Some(v1.clone()), "first still serves");
    assert_eq!(
        objects_of(&first.app),
        first_objects,
        "first's objects as they were"
    );
    for name in objects_of(&second.app) {
        assert!(!first_objects.contains(&name), "{name} shared");
    }

    let run = second.run(&["remove", "--yes"]);
    assert_eq!(run.code, 0, "{run}");
    assert!(objects_of(&second.app).is_empty(), "second removed");
    assert_eq!(objects_of(&first.app), first_objects, "first untouched");
    assert_eq!(first.serving(), Some(v1), "first still serves");
    let status = first.run(&["status", "--output", "json"]);
    assert_eq!(status.code, 0, "{status}");
}

#[test]
fn item01_objects_with_foreign_labels_are_refused() {
    let owner = App::with_verify("idnown", "0s");
    let run = owner.deploy("v1", &[]);
    assert_eq!(run.code, 0, "{run}");
    let victim = App::with_verify("idnvic", "0s");
    let foreign = [
        "--label",
        &format!("deployctl.app={}", owner.name),
        "--label",
        "deployctl.env=test",
    ];

    // A network under the victim's name, owned by another app: deploy and remove leave it alone.
    let network = format!("deployctl-{}", victim.pair());
    let mut args = vec!["network", "create"];
    args.extend(foreign);
    args.push(&network);
    docker(&args).expect("create the foreign network");
    let run = victim.deploy("v1", &[]);
    assert!(matches!(run.code, 1 | 2), "{run}");
    assert!(
        run.stderr
            .contains(&format!("refusing to touch network {network}")),
        "{run}"
    );
    let run = victim.run(&["remove", "--yes"], &[]);
    assert!(matches!(run.code, 1 | 2), "{run}");
    assert!(run.stderr.contains("refusing to touch network"), "{run}");
    assert!(docker(&["network", "inspect", &network]).is_ok(), "kept");
    docker(&["network", "rm", &network]).expect("remove the foreign network");

    // A container under the victim's proxy name, made from the owner's image with its labels.
    let image = format!("{}:v1", owner.name);
    let proxy = victim.proxy();
    let mut args = vec!["create", "--name", proxy.as_str()];
    args.extend(foreign);
    args.push(&image);
    docker(&args).expect("create the foreign container");
    let run = victim.deploy("v1", &[]);
    assert!(matches!(run.code, 1 | 2), "{run}");
    assert!(
        run.stderr
            .contains(&format!("refusing to touch container {}", victim.proxy())),
        "{run}"
    );
    assert_eq!(victim.container_running(&victim.proxy()), Some(false));
    docker(&["rm", "-f", &victim.proxy()]).expect("remove the foreign container");
    assert_eq!(owner.serving().as_deref(), Some("v1"));
}

/// `deployctl <args> --env stg` in `app`'s directory.
fn in_stg(app: &App, args: &[&str]) -> Run {
    Command::new(support::deployctl_bin())
        .args(args)
        .args(["--env", "stg", "--config"])
        .arg(app.root().join("deploy.toml"))
        .env_remove("DEPLOYCTL_ENV")
        .env_remove("DEPLOYCTL_CONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run deployctl")
        .into()
}

/// (image id, `flavor` label of that image) of a container.
fn image_of(container: &str) -> (String, String) {
    let id = docker(&["inspect", "--format", "{{.Image}}", container])
        .unwrap_or_else(|e| panic!("inspect {container}: {e}"))
        .trim()
        .to_string();
    let flavor = docker(&[
        "image",
        "inspect",
        "--format",
        "{{index .Config.Labels \"flavor\"}}",
        &id,
    ])
    .unwrap_or_else(|e| panic!("inspect image {id}: {e}"))
    .trim()
    .to_string();
    (id, flavor)
}

#[test]
fn item03_each_environment_runs_the_image_it_built() {
    let app = App::with_overlay(
        "idnimg",
        "0s",
        "[build]\nargs = { FLAVOR = \"test-flavor\" }\n",
    );
    let _stg = RemoveStg(&app);
    let stg_port = support::free_port();
    std::fs::write(
        app.root().join("environments/stg.toml"),
        format!(
            "[build]\nargs = {{ FLAVOR = \"stg-flavor\" }}\n[deploy]\nkeep_releases = 1\n[proxy]\nlisten = \"127.0.0.1:{stg_port}\"\n"
        ),
    )
    .expect("write stg.toml");
    let dockerfile = app.root().join("Dockerfile");
    let mut text = std::fs::read_to_string(&dockerfile).expect("Dockerfile");
    text.push_str("ARG FLAVOR=none\nLABEL flavor=$FLAVOR\n");
    std::fs::write(&dockerfile, text).expect("write Dockerfile");
    app.commit("two environments, one build arg each");

    // `test` builds the commit, then waits for its lock while `stg` rebuilds the same commit
    // (same version, same tag) with its own build args and deploys it.
    let run = app.run(&["lock", "acquire", "--reason", "item03"], &[]);
    assert_eq!(run.code, 0, "{run}");
    let mut waiting = app.spawn_watched(
        &["deploy", "--lock-wait", "120s"],
        &[],
        support::phase_started("lock"),
    );
    waiting.wait_trigger(std::time::Duration::from_secs(120));
    let run = in_stg(&app, &["deploy"]);
    assert_eq!(run.code, 0, "{run}");
    let run = app.run(&["lock", "release", "--force"], &[]);
    assert_eq!(run.code, 0, "{run}");
    let ended = waiting.wait();
    assert_eq!(ended.code, Some(0), "{ended}");

    let (test_image, test_flavor) = image_of(&app.container("blue"));
    let (_, stg_flavor) = image_of(&format!("{}.stg-blue", app.name));
    assert_eq!(test_flavor, "test-flavor", "test runs stg's build");
    assert_eq!(stg_flavor, "stg-flavor");
    assert!(app.serving().is_some());
    assert!(support::http_get(stg_port, "/").is_ok_and(|(s, _)| s == 200));

    // stg moves on twice with keep_releases = 1: its pruning never reaches test's image.
    for n in 0..2 {
        std::fs::write(app.root().join("change.txt"), n.to_string()).expect("write");
        app.commit("next");
        let run = in_stg(&app, &["deploy"]);
        assert_eq!(run.code, 0, "{run}");
    }
    assert!(
        docker(&["image", "inspect", &test_image]).is_ok(),
        "stg pruned test's image"
    );
    assert_eq!(image_of(&app.container("blue")).1, "test-flavor");
    assert!(app.serving().is_some());
}

/// Removes the `stg` environment of an app when dropped (before the app itself), even on failure.
struct RemoveStg<'a>(&'a App);

impl Drop for RemoveStg<'_> {
    fn drop(&mut self) {
        let _ = in_stg(self.0, &["remove", "--yes"]);
    }
}

/// `DEMO_MODE` in a container's environment.
fn demo_mode(container: &str) -> String {
    docker(&["inspect", "--format", "{{json .Config.Env}}", container])
        .unwrap_or_default()
        .split('"')
        .find_map(|v| v.strip_prefix("DEMO_MODE="))
        .unwrap_or("")
        .to_string()
}

#[test]
fn item04_rollback_restores_the_release_as_it_ran() {
    // DEMO_FAIL_AFTER's value is secret: the ledger keeps its name only, rollback reads it again.
    let app = App::with_overlay(
        "idnrbk",
        "0s",
        "[app]\nsecret_env = [\"DEMO_FAIL_AFTER\"]\n",
    );
    for v in ["r1", "r2"] {
        let run = app.deploy(v, &[]);
        assert_eq!(run.code, 0, "{run}");
    }
    // A configuration change that breaks the app, committed: r3 fails its health checks.
    let config = app.root().join("deploy.toml");
    let text = std::fs::read_to_string(&config).expect("deploy.toml");
    std::fs::write(&config, text.replace("${DEMO_MODE:-healthy}", "fail500")).expect("write");
    app.commit("MODE = fail500");
    let run = app.deploy("r3", &[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(app.serving().as_deref(), Some("r2"));

    // `rollback` restores r1 as it ran (healthy), not with today's app.env.
    let run = app.run(&["rollback", "--to", "r1"], &[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(app.serving().as_deref(), Some("r1"));
    let live = app.status_json()["live"]["container"]
        .as_str()
        .expect("live container")
        .to_string();
    assert_eq!(demo_mode(&live), "healthy");
    let env = docker(&["inspect", "--format", "{{json .Config.Env}}", &live]).unwrap_or_default();
    assert!(env.contains("\"DEMO_FAIL_AFTER=20\""), "{env}");
    // The ledger as the proxy stores it (deployctl's own output would redact the value anyway).
    let ledger = docker(&["exec", &app.proxy(), "/deployctl", "proxy", "releases"])
        .expect("read the ledger");
    assert!(ledger.contains("\"DEMO_MODE\""), "specs recorded: {ledger}");
    assert!(ledger.contains("\"DEMO_FAIL_AFTER\""), "{ledger}");
    assert!(
        !ledger.contains("\"20\""),
        "a secret value in the ledger: {ledger}"
    );

    // An attempt with the current (broken) config fails and leaves its container behind; the
    // next plain `rollback` does not reuse that leftover, re-creates r2 as it ran, and serves.
    let run = app.run(&["rollback", "--to", "r2", "--with-current-config"], &[]);
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(app.serving().as_deref(), Some("r1"));
    let idle = if live == app.container("blue") {
        app.container("green")
    } else {
        app.container("blue")
    };
    assert_eq!(
        demo_mode(&idle),
        "fail500",
        "the failed attempt's leftover\n{run}"
    );
    let run = app.run(&["rollback", "--to", "r2"], &[]);
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(app.serving().as_deref(), Some("r2"));
    assert_eq!(demo_mode(&idle), "healthy");
}
