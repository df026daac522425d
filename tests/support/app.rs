//! A throw-away app directory (deploy.toml, Dockerfile, the demo-app binary, a git repository)
//! deployed with the real deployctl binary onto the real Docker Engine, and everything it created
//! removed again when the `App` is dropped, also when the test fails.

use std::path::Path;
use std::process::{Command, Stdio};

use super::{Run, demo_bin, deployctl_bin, free_port, http_get, unique};

/// One app in one environment (`test`), in its own directory, with its own proxy port.
pub struct App {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

pub const BASE_CONFIG: &str = r#"
[app]
name = "{name}"
port = 8080
env = { DEMO_MODE = "${DEMO_MODE:-healthy}", DEMO_FAIL_AFTER = "${DEMO_FAIL_AFTER:-20}", DEMO_SLOW_MS = "${DEMO_SLOW_MS:-10000}" }

[build]
context = "."

[deploy]
stop_timeout = "2s"
drain_timeout = "3s"

[health]
path = "/health"
interval = "150ms"
timeout = "1s"
healthy_threshold = 2
unhealthy_threshold = 2
deadline = "4s"
expect_json = { pointer = "/status", equals = "ok" }

[verify]
window = "{verify}"
max_error_rate = 0.05
max_p95_latency = "2s"
"#;

impl App {
    pub fn new(prefix: &str) -> App {
        App::with_verify(prefix, "1s")
    }

    pub fn with_verify(prefix: &str, verify: &str) -> App {
        App::with_overlay(prefix, verify, "")
    }

    /// `overlay` is appended to environments/test.toml (merged over deploy.toml).
    pub fn with_overlay(prefix: &str, verify: &str, overlay: &str) -> App {
        let name = unique(prefix);
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let root = dir.path();
        std::fs::create_dir_all(root.join("environments")).expect("mkdir");
        std::fs::write(
            root.join("deploy.toml"),
            BASE_CONFIG
                .replace("{name}", &name)
                .replace("{verify}", verify),
        )
        .expect("write deploy.toml");
        std::fs::write(
            root.join("environments/test.toml"),
            format!("{overlay}\n[proxy]\nlisten = \"127.0.0.1:{port}\"\n"),
        )
        .expect("write overlay");
        std::fs::write(
            root.join("Dockerfile"),
            "FROM scratch\nCOPY demo-app /demo-app\nENTRYPOINT [\"/demo-app\"]\n",
        )
        .expect("write Dockerfile");
        std::fs::copy(demo_bin(), root.join("demo-app"))
            .expect("copy the demo-app binary (built by cargo test)");
        // A real repository: deploys check that the tree is clean.
        std::fs::write(root.join(".gitignore"), "*.log\npwned*\n.env\n").expect("write .gitignore");
        for args in [
            &["init", "-q", "-b", "main"][..],
            &[
                "-c",
                "user.name=deployctl tests",
                "-c",
                "user.email=tests@deployctl.invalid",
                "add",
                "-A",
            ],
            &[
                "-c",
                "user.name=deployctl tests",
                "-c",
                "user.email=tests@deployctl.invalid",
                "commit",
                "-qm",
                "app",
            ],
        ] {
            let ok = Command::new("git")
                .args(args)
                .current_dir(root)
                .status()
                .map(|s| s.success());
            assert!(
                matches!(ok, Ok(true)),
                "git {args:?} failed in {}",
                root.display()
            );
        }
        App { name, dir, port }
    }

    /// Commits every change in the app's repository (deploys require a clean tree).
    pub fn commit(&self, message: &str) {
        for args in [
            &["add", "-A"][..],
            &[
                "-c",
                "user.name=deployctl tests",
                "-c",
                "user.email=tests@deployctl.invalid",
                "commit",
                "-qm",
                message,
            ],
        ] {
            let ok = Command::new("git")
                .args(args)
                .current_dir(self.root())
                .status()
                .map(|s| s.success());
            assert!(matches!(ok, Ok(true)), "git {args:?} failed");
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(deployctl_bin());
        cmd.args(args)
            .arg("--env")
            .arg("test")
            .arg("--config")
            .arg(self.root().join("deploy.toml"))
            .env_remove("DEPLOYCTL_ENV")
            .env_remove("DEPLOYCTL_CONFIG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs deployctl to the end.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let output = self.command(args, env).output().expect("run deployctl");
        Run::from(output)
    }

    pub fn deploy(&self, version: &str, env: &[(&str, &str)]) -> Run {
        self.run(&["deploy", "--release", version], env)
    }

    pub fn status_json(&self) -> serde_json::Value {
        let run = self.run(&["status", "--output", "json"], &[]);
        run.json()
    }

    /// The version that answers GET / through the proxy, if it answers 200.
    pub fn serving(&self) -> Option<String> {
        self.get()
            .ok()
            .filter(|(s, _)| *s == 200)
            .and_then(|(_, b)| body_version(&b))
    }

    /// GET / through the proxy with a fresh connection.
    pub fn get(&self) -> Result<(u16, String), String> {
        http_get(self.port, "/")
    }

    pub fn container_id(&self, name: &str) -> Option<String> {
        docker(&["inspect", "--format", "{{.Id}}", name])
            .ok()
            .map(|s| s.trim().to_string())
    }

    pub fn container_running(&self, name: &str) -> Option<bool> {
        docker(&["inspect", "--format", "{{.State.Running}}", name])
            .ok()
            .map(|s| s.trim() == "true")
    }

    pub fn lock_exists(&self) -> bool {
        docker(&["inspect", &format!("deployctl-lock-{}", self.pair())]).is_ok()
    }

    /// `<app>.test` (the app names of these tests have no `.` to double): see src/names.rs.
    pub fn pair(&self) -> String {
        format!("{}.test", self.name)
    }

    pub fn container(&self, color: &str) -> String {
        format!("{}-{color}", self.pair())
    }

    /// Requests the proxy is forwarding right now (`deployctl proxy status` inside it).
    pub fn proxy_in_flight(&self) -> Option<u64> {
        let out = docker(&["exec", &self.proxy(), "/deployctl", "proxy", "status"]).ok()?;
        let doc: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
        doc["in_flight"].as_u64()
    }

    pub fn proxy(&self) -> String {
        format!("deployctl-proxy-{}", self.pair())
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // Everything this app created carries its label; the names are unique to this test.
        let _ = self.command(&["remove", "--yes"], &[]).output();
        if let Ok(ids) = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=deployctl.app={}", self.name),
        ]) {
            for id in ids.split_whitespace() {
                let _ = docker(&["rm", "-f", id]);
            }
        }
        if let Ok(ids) = docker(&[
            "images",
            "-q",
            "--filter",
            &format!("label=deployctl.app={}", self.name),
        ]) {
            for id in ids.split_whitespace() {
                let _ = docker(&["rmi", "-f", id]);
            }
        }
        for obj in [["network", "rm"], ["volume", "rm"]] {
            let name = if obj[0] == "network" {
                format!("deployctl-{}", self.pair())
            } else {
                format!("deployctl-{}-state", self.pair())
            };
            let _ = docker(&[obj[0], obj[1], &name]);
        }
    }
}

/// `version=…` in a demo-app answer.
pub fn body_version(body: &str) -> Option<String> {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("version="))
        .map(str::to_string)
}

/// The docker CLI against the shared daemon: stdout, or stderr as the error.
pub fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}
