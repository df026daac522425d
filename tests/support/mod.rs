//! Shared harness of the Docker acceptance tests: a throw-away app directory deployed with the
//! real deployctl binary onto the real Docker Engine, removed again when the test ends (even when
//! it fails).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn deployctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deployctl"))
}

/// The demo app binary `cargo test` builds next to deployctl (it is a cargo example).
pub fn demo_bin() -> PathBuf {
    let dir = deployctl_bin()
        .parent()
        .expect("binary has a parent dir")
        .to_path_buf();
    dir.join("examples").join("demo-app")
}

pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{:x}{:x}{}",
        std::process::id(),
        nanos & 0xfff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

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
        serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("status JSON: {e}\n{run}"))
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

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A minimal HTTP/1.1 GET with a fresh connection (`Connection: close`).
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    http_get_within(port, path, Duration::from_secs(10))
}

/// `http_get` that waits up to `timeout` for the answer (for deliberately slow requests).
pub fn http_get_within(port: u16, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    parse_response(&buf).map(|(status, body, _)| (status, body))
}

/// (status, body, bytes consumed) of one response with Content-Length; Err when incomplete.
fn parse_response(buf: &[u8]) -> Result<(u16, String, usize), String> {
    let text = String::from_utf8_lossy(buf);
    let head_end = text
        .find("\r\n\r\n")
        .ok_or_else(|| format!("incomplete response: {text:?}"))?;
    let head = &text[..head_end];
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(buf.len() - head_end - 4);
    let body_start = head_end + 4;
    if buf.len() < body_start + len {
        return Err("truncated body".into());
    }
    Ok((
        status,
        String::from_utf8_lossy(&buf[body_start..body_start + len]).into_owned(),
        body_start + len,
    ))
}

/// Sends GET / at a fixed rate on keep-alive and on fresh connections until stopped, and keeps
/// count of every answer.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub stats: Arc<Mutex<LoadStats>>,
}

#[derive(Debug, Default, Clone)]
pub struct LoadStats {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub failures: Vec<String>,
    /// Distinct bodies seen, with counts.
    pub bodies: std::collections::BTreeMap<String, u64>,
}

impl Load {
    /// `per_second` requests on each of: one keep-alive connection, new connections.
    pub fn start(port: u16, per_second: u32) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(LoadStats::default()));
        let period = Duration::from_secs_f64(1.0 / per_second as f64);
        let mut threads = Vec::new();
        for keep_alive in [true, false] {
            let (stop, stats) = (stop.clone(), stats.clone());
            threads.push(std::thread::spawn(move || {
                let mut conn: Option<TcpStream> = None;
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let result = if keep_alive {
                        keep_alive_get(port, &mut conn)
                    } else {
                        http_get(port, "/")
                    };
                    let mut s = stats.lock().expect("stats");
                    s.sent += 1;
                    match result {
                        Ok((200, body)) => {
                            s.ok += 1;
                            *s.bodies.entry(body.trim().to_string()).or_default() += 1;
                        }
                        Ok((status, body)) => {
                            s.failed += 1;
                            s.failures.push(format!("{status}: {}", body.trim()));
                        }
                        Err(e) => {
                            s.failed += 1;
                            s.failures.push(e);
                        }
                    }
                    drop(s);
                    next += period;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            }));
        }
        Load {
            stop,
            threads,
            stats,
        }
    }

    pub fn stop(mut self) -> LoadStats {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.stats.lock().expect("stats").clone()
    }
}

/// GET / on a kept-alive connection, reconnecting when the server closed it between requests.
fn keep_alive_get(port: u16, conn: &mut Option<TcpStream>) -> Result<(u16, String), String> {
    for attempt in 0..2 {
        if conn.is_none() {
            let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            *conn = Some(s);
        }
        let s = conn.as_mut().expect("connected");
        let fresh = attempt == 1;
        let sent = write!(s, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let result = sent.map_err(|e| e.to_string()).and_then(|_| {
            loop {
                match s.read(&mut chunk) {
                    Ok(0) => break Err("connection closed".to_string()),
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        if let Ok((status, body, _)) = parse_response(&buf) {
                            break Ok((status, body));
                        }
                    }
                    Err(e) => break Err(e.to_string()),
                }
            }
        });
        match result {
            Ok(r) => return Ok(r),
            // An idle keep-alive connection closed by the server before our request reached it
            // is retried once on a new connection, as every HTTP client does; nothing was sent.
            Err(e) if buf.is_empty() && !fresh => {
                let _ = e;
                *conn = None;
            }
            Err(e) => return Err(e),
        }
    }
    Err("unreachable retry".into())
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// A deployctl run whose stderr is watched line by line, to act at an exact moment of it
/// (`-v` prints a `==> <phase>` line when each phase starts and `✓ <phase>` when it ends).
pub struct Watched {
    child: std::process::Child,
    seen: Arc<Mutex<String>>,
    triggered: std::sync::mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// How a watched run ended.
pub struct Ended {
    /// The exit code, or None when a signal ended it.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stderr: String,
}

impl App {
    /// Starts `deployctl <args> -v`; `trigger` is a substring of the stderr line to wait for.
    pub fn spawn_watched(&self, args: &[&str], env: &[(&str, &str)], trigger: &str) -> Watched {
        let mut child = self
            .command(args, env)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn deployctl");
        let stderr = child.stderr.take().expect("piped stderr");
        let seen = Arc::new(Mutex::new(String::new()));
        let (tx, triggered) = std::sync::mpsc::channel();
        let trigger = trigger.to_string();
        let reader = {
            let seen = seen.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                let mut fired = false;
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    // Reported from this thread at once: a polling loop would act up to a poll
                    // interval late, and some phases last only milliseconds.
                    if !fired && line.contains(&trigger) {
                        fired = true;
                        let _ = tx.send(line.clone());
                    }
                    if let Ok(mut s) = seen.lock() {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            })
        };
        Watched {
            child,
            seen,
            triggered,
            reader: Some(reader),
        }
    }
}

impl Watched {
    /// Waits for the trigger line and returns it; panics with the output so far when the run
    /// ends or `timeout` passes first.
    pub fn wait_trigger(&mut self, timeout: Duration) -> String {
        match self.triggered.recv_timeout(timeout) {
            Ok(line) => line,
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                panic!("trigger line never came ({e}):\n{}", self.stderr());
            }
        }
    }

    pub fn stderr(&self) -> String {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// SIGKILL (nothing runs after it: no cleanup, no lock release) and reap the process, so its
    /// pid is gone from /proc as the stale-lock check expects.
    pub fn kill9(mut self) -> Ended {
        let _ = self.child.kill();
        self.wait()
    }

    pub fn wait(&mut self) -> Ended {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().expect("wait for deployctl");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ended {
            code: status.code(),
            signal: status.signal(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        // A test that failed half-way must not leave a deploy running against the shared daemon.
        if self.reader.is_some() {
            let _ = self.child.kill();
            let _ = self.wait();
        }
    }
}
