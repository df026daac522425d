//! The lab in tests: Docker Engines of a test's own (tests/lab/hosts.sh), started for a test and
//! removed when the `Lab` is dropped, also when the test fails. Each host has its own network
//! namespace and address, so a test may restart, break or fill it without touching the machine's
//! shared daemon. Use it with `#[path = "support/lab.rs"] mod lab;`. With `LabOptions { ssh: true }`
//! each host also runs an sshd (`LabHost::ssh_host`, client settings in `Lab::ssh_config`).
//!
//! Needs root (network namespaces, a bridge, iptables) and the tools `.ci/run` installs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// One Docker Engine of the lab.
#[derive(Debug, Clone)]
pub struct LabHost {
    /// `h1`, `h2`, …
    pub name: String,
    /// Its address on the lab's bridge; its published ports answer there.
    pub ip: String,
    /// `unix:///tmp/deployctl-lab-<id>/hN/docker.sock`
    pub unix_host: String,
    /// `tcp://<ip>:2375` (plain TCP on the lab's private bridge)
    pub tcp_host: String,
    /// Its files: data root, exec root, daemon.json, dockerd.log, docker.pid.
    pub dir: PathBuf,
}

impl LabHost {
    /// The DOCKER_HOST (or `docker.host`) that reaches this engine: its unix socket.
    pub fn docker_host(&self) -> &str {
        &self.unix_host
    }

    /// The pid file of its dockerd (rewritten when the daemon restarts).
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join("docker.pid")
    }

    /// `ssh://root@<ip>`: the engine over SSH (a lab started with `ssh: true`; the client needs
    /// `Lab::ssh_config`, for example through DEPLOYCTL_SSH_CONFIG).
    pub fn ssh_host(&self) -> String {
        format!("ssh://root@{}", self.ip)
    }

    /// Its sshd's log (`-E`): one `Accepted publickey` line per SSH connection.
    pub fn sshd_log(&self) -> PathBuf {
        self.dir.join("sshd.log")
    }

    /// The pid of its dockerd, if the pid file names one.
    pub fn dockerd_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pidfile())
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// The docker CLI against this engine.
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.unix_host)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

/// What a lab runs besides the engines.
#[derive(Debug, Clone, Copy, Default)]
pub struct LabOptions {
    /// An sshd on each host (`hosts.sh up N --ssh`).
    pub ssh: bool,
}

/// A running lab; dropping it runs `hosts.sh down`.
pub struct Lab {
    pub id: String,
    pub hosts: Vec<LabHost>,
}

pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lab/hosts.sh")
}

fn hosts_sh(id: &str, args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .env("LAB_ID", id)
        .env("LAB_OWNER", std::process::id().to_string())
        .env_remove("LAB_NET")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script().display()))
}

/// A lab id no other lab of this machine uses (`hosts.sh up` refuses an id that exists).
fn new_id() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mix = std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(nanos)
        .wrapping_add(N.fetch_add(1, Ordering::Relaxed).wrapping_mul(7919));
    format!("{:06x}", mix & 0xff_ffff)
}

impl Lab {
    /// Starts `n` hosts (1 to 8). First removes labs whose test binary was killed before it could
    /// clean up. Panics with the script's output when the lab cannot start (it has cleaned up).
    pub fn start(n: usize) -> Lab {
        Lab::start_with(n, LabOptions::default())
    }

    /// `start`, with the options' extras (an sshd per host).
    pub fn start_with(n: usize, opts: LabOptions) -> Lab {
        let gc = hosts_sh("gc", &["gc"]);
        assert!(
            gc.status.success(),
            "hosts.sh gc failed:\n{}",
            String::from_utf8_lossy(&gc.stderr)
        );
        for _ in 0..5 {
            let id = new_id();
            let count = n.to_string();
            let mut args = vec!["up", count.as_str()];
            if opts.ssh {
                args.push("--ssh");
            }
            let out = hosts_sh(&id, &args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            match out.status.code() {
                Some(0) => {}
                // The id is taken by another lab: try another.
                Some(3) => continue,
                _ => panic!(
                    "the lab did not start (hosts.sh {args:?}, exit {:?}); it needs root, \
                     iproute2, iptables, util-linux, docker.io and for ssh openssh-server and \
                     openssh-client (.ci/run installs them):\n{stderr}",
                    out.status.code()
                ),
            }
            // From here on, dropping the Lab removes it, also when parsing fails.
            let mut lab = Lab {
                id,
                hosts: Vec::new(),
            };
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                let [name, ip, unix_host, tcp_host] = f[..] else {
                    panic!("unexpected line from hosts.sh up: {line:?}");
                };
                let socket = unix_host.strip_prefix("unix://").expect("a unix:// host");
                lab.hosts.push(LabHost {
                    name: name.into(),
                    ip: ip.into(),
                    unix_host: unix_host.into(),
                    tcp_host: tcp_host.into(),
                    dir: Path::new(socket).parent().expect("socket dir").into(),
                });
            }
            assert_eq!(lab.hosts.len(), n, "hosts.sh up {n} printed:\n{stderr}");
            return lab;
        }
        panic!("no free lab id after 5 tries");
    }

    /// The lab's directory (`/tmp/deployctl-lab-<id>`).
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/deployctl-lab-{}", self.id))
    }

    /// The lab's ssh_config (`ssh -F`, DEPLOYCTL_SSH_CONFIG): user root, the lab's key and its
    /// known_hosts for the lab's addresses. Only in a lab started with `ssh: true`.
    pub fn ssh_config(&self) -> PathBuf {
        self.dir().join("ssh_config")
    }

    /// The name prefix of its network namespaces (`dl<id>-hN`) and interfaces (`dl<id>…`).
    pub fn prefix(&self) -> String {
        format!("dl{}", self.id)
    }

    /// Stops everything the lab started; what `drop` does, with its result.
    pub fn down(&self) -> Result<(), String> {
        let out = hosts_sh(&self.id, &["down"]);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.down() {
            eprintln!("hosts.sh down of lab {} failed: {e}", self.id);
        }
    }
}

