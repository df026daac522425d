//! The `disk` check: free space where Docker keeps images and containers, against
//! `prerequisites.min_free_disk` (measured only for a local engine).

use std::path::{Path, PathBuf};

use super::CheckResult;
use crate::config::ByteSize;

/// Where Docker keeps images and containers on a standard Linux install.
const DOCKER_DATA_ROOT: &str = "/var/lib/docker";

pub(super) fn disk_check(min: ByteSize, docker_host: &str) -> CheckResult {
    const NAME: &str = "disk";
    let local = docker_host.starts_with("unix://") || docker_host.starts_with('/');
    if !local {
        return CheckResult::warning(
            NAME,
            format!("the engine at {docker_host} is remote: its free disk space is not measured"),
            format!("make sure its host has {min} free"),
        );
    }
    let path = if Path::new(DOCKER_DATA_ROOT).is_dir() {
        PathBuf::from(DOCKER_DATA_ROOT)
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
    };
    match rustix::fs::statvfs(&path) {
        Err(e) => CheckResult::error(
            NAME,
            format!("free space on {} cannot be measured: {e}", path.display()),
            "check the path, or remove prerequisites.min_free_disk",
        ),
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let detail = format!(
                "{} free on {} (needs {min})",
                human_bytes(free),
                path.display()
            );
            if free >= min.0 {
                CheckResult::pass(NAME, detail)
            } else {
                CheckResult::error(
                    NAME,
                    detail,
                    "free space or lower prerequisites.min_free_disk",
                )
            }
        }
    }
}

/// `12.3 GiB`, `512 B`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
