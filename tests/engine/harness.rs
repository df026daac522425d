//! The harness of the engine tests: a small test app compiled once, unique names, the `Cleanup`
//! guard that removes what a test created (also when it fails), build contexts, container specs
//! and polling.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use deployctl::engine::{BuildRequest, ContainerSpec, DockerEngine, Engine, RestartPolicy};

pub(crate) const TEST_LABEL: &str = "deployctl.test";

/// A std-only program that becomes the test image's `/app`:
/// - `serve` (default): prints a line on stdout and stderr, answers TCP on :8080 with
///   `hello <HOSTNAME>`, exits 143 on SIGTERM;
/// - `print OUT ERR CODE`: OUT lines on stdout, ERR on stderr, exits CODE;
/// - `ls DIR`: every path below DIR, relative, sorted;
/// - `write PATH TEXT`, `exit CODE`, `env NAME`.
pub(crate) const TEST_APP: &str = r#"
use std::io::Write;

extern "C" {
    fn signal(sig: i32, handler: usize) -> usize;
    fn _exit(code: i32) -> !;
}

extern "C" fn on_term(_: i32) {
    unsafe { _exit(143) }
}

fn list(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                list(root, &p, out);
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "" | "serve" => {
            unsafe { signal(15, on_term as extern "C" fn(i32) as usize) };
            println!("serving");
            eprintln!("serving-err");
            let host = std::env::var("HOSTNAME").unwrap_or_default();
            let listener = std::net::TcpListener::bind("0.0.0.0:8080").expect("bind");
            for conn in listener.incoming() {
                if let Ok(mut c) = conn {
                    let _ = writeln!(c, "hello {host}");
                }
            }
        }
        "print" => {
            let n: u32 = arg(1).parse().unwrap_or(0);
            let m: u32 = arg(2).parse().unwrap_or(0);
            for i in 1..=n {
                println!("out {i}");
            }
            for i in 1..=m {
                eprintln!("err {i}");
            }
            std::process::exit(arg(3).parse().unwrap_or(0));
        }
        "ls" => {
            let root = std::path::PathBuf::from(arg(1));
            let mut out = Vec::new();
            list(&root, &root, &mut out);
            out.sort();
            for p in out {
                println!("{p}");
            }
        }
        "write" => std::fs::write(arg(1), arg(2)).expect("write"),
        "exit" => std::process::exit(arg(1).parse().unwrap_or(0)),
        "env" => println!("{}", std::env::var(arg(1)).unwrap_or_default()),
        other => {
            eprintln!("unknown command {other}");
            std::process::exit(64);
        }
    }
}
"#;

/// The compiled test app, built once per test process.
pub(crate) fn test_app() -> &'static Path {
    static APP: OnceLock<PathBuf> = OnceLock::new();
    APP.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-test-app");
        std::fs::create_dir_all(&dir).expect("create app dir");
        let src = dir.join(format!("app-{}.rs", std::process::id()));
        std::fs::write(&src, TEST_APP).expect("write app source");
        let tmp_out = dir.join(format!("app-{}", std::process::id()));
        let status = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .args([
                "--edition",
                "2021",
                "-O",
                "-C",
                "target-feature=+crt-static",
            ])
            .args([
                "-C",
                "strip=symbols",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .arg(&src)
            .arg("-o")
            .arg(&tmp_out)
            .status()
            .expect("run rustc");
        assert!(status.success(), "compiling the test app failed");
        // Rename: another test process may be reading the previous binary.
        let out = dir.join("app");
        std::fs::rename(&tmp_out, &out).expect("install app");
        out
    })
}

pub(crate) fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// Names and removes what one test creates.
pub(crate) struct Cleanup {
    pub(crate) prefix: String,
    pub(crate) containers: Mutex<Vec<String>>,
    pub(crate) images: Mutex<Vec<String>>,
    pub(crate) networks: Mutex<Vec<String>>,
    pub(crate) volumes: Mutex<Vec<String>>,
}

impl Cleanup {
    pub(crate) fn new() -> Cleanup {
        Cleanup {
            prefix: format!("dctest-engine-{}", unique()),
            containers: Mutex::default(),
            images: Mutex::default(),
            networks: Mutex::default(),
            volumes: Mutex::default(),
        }
    }

    pub(crate) fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    pub(crate) fn container(&self, what: &str) -> String {
        let n = self.name(what);
        self.containers.lock().unwrap().push(n.clone());
        n
    }

    pub(crate) fn image(&self, what: &str) -> String {
        let n = format!("{}:{what}", self.prefix);
        self.images.lock().unwrap().push(n.clone());
        n
    }

    pub(crate) fn network(&self, what: &str) -> String {
        let n = self.name(what);
        self.networks.lock().unwrap().push(n.clone());
        n
    }

    pub(crate) fn volume(&self, what: &str) -> String {
        let n = self.name(what);
        self.volumes.lock().unwrap().push(n.clone());
        n
    }

    pub(crate) fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (TEST_LABEL.to_string(), "1".to_string()),
            ("dctest.run".to_string(), self.prefix.clone()),
        ])
    }
}

pub(crate) fn docker_quiet(args: &[&str]) {
    let _ = Command::new("docker")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let take = |m: &Mutex<Vec<String>>| {
            std::mem::take(&mut *m.lock().unwrap_or_else(|p| p.into_inner()))
        };
        for c in take(&self.containers) {
            docker_quiet(&["rm", "-f", "-v", &c]);
        }
        // Networks may exist more than once under one name (see ensure_network): remove by id.
        for n in take(&self.networks) {
            let out = Command::new("docker")
                .args(["network", "ls", "-q", "--filter", &format!("name={n}")])
                .args(["--filter", &format!("label={TEST_LABEL}=1")])
                .output();
            if let Ok(out) = out {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    docker_quiet(&["network", "rm", id]);
                }
            }
        }
        for v in take(&self.volumes) {
            docker_quiet(&["volume", "rm", "-f", &v]);
        }
        for i in take(&self.images) {
            docker_quiet(&["rmi", &i]);
        }
    }
}

pub(crate) async fn engine() -> DockerEngine {
    DockerEngine::connect(None)
        .await
        .expect("the Docker daemon must be reachable for these tests")
}

/// A build context with the test app and the given Dockerfile.
pub(crate) fn context(dockerfile: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(test_app(), dir.path().join("app")).expect("copy app");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    dir
}

pub(crate) const APP_DOCKERFILE: &str =
    "FROM scratch\nCOPY app /app\nENTRYPOINT [\"/app\"]\nCMD [\"serve\"]\n";

pub(crate) async fn build_app_image(e: &DockerEngine, c: &Cleanup) -> String {
    let ctx = context(APP_DOCKERFILE);
    let tag = c.image("app");
    e.build_image(
        &BuildRequest {
            context_dir: ctx.path().to_path_buf(),
            dockerfile: "Dockerfile".into(),
            tag: tag.clone(),
            args: BTreeMap::new(),
            target: None,
            labels: c.labels(),
        },
        &|_| {},
    )
    .await
    .expect("build the app image");
    tag
}

pub(crate) fn spec(c: &Cleanup, name: &str, image: &str) -> ContainerSpec {
    ContainerSpec {
        name: name.to_string(),
        image: image.to_string(),
        labels: c.labels(),
        env: Vec::new(),
        cmd: None,
        network: None,
        network_aliases: Vec::new(),
        ports: Vec::new(),
        restart_policy: RestartPolicy::No,
        healthcheck: None,
        mounts: Vec::new(),
        stop_timeout: None,
    }
}

pub(crate) async fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
