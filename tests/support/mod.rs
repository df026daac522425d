//! Shared harness of the integration tests: the deployctl binary and a throw-away app deployed
//! with it onto the real Docker Engine (`app`), one finished run (`run`), a run followed by its
//! JSON events (`watch`), a tiny HTTP client (`http`), one HTTP stub server (`stub`), a load loop
//! (`load`), and polling. Everything a test creates is removed when it ends, also when it fails.
//! The lab (Docker Engines of a test's own) is apart, in `lab.rs`.

#![allow(dead_code, unused_imports)]

mod app;
mod http;
mod load;
mod run;
mod stub;
mod watch;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use app::{App, BASE_CONFIG, body_version, docker};
pub use http::{http_get, http_get_at, http_get_within};
pub use load::{Load, LoadStats};
pub use run::Run;
pub use stub::{Reply, Request, RequestLog, Stub};
pub use watch::{Ended, Trigger, Watched, phase_done, phase_started, probe_failed};

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

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `f` every 100 ms until it holds or `timeout` passes; whether it held. The bound only
/// keeps a broken test from hanging: it is never what a test asserts.
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
