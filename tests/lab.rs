//! Tests on Docker Engines of their own (the lab, tests/lab/hosts.sh): what must not run against
//! the machine's shared daemon, such as restarting it, and the lab itself. Needs root; CI
//! (`.ci/run`) runs as root and installs the lab's tools.

#[path = "support/lab.rs"]
mod lab;

use std::path::Path;
use std::process::{Command, Stdio};

use lab::Lab;

fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pid of the machine's own dockerd, when it has the usual pid file.
fn shared_dockerd_pid() -> Option<String> {
    std::fs::read_to_string("/var/run/docker.pid")
        .ok()
        .map(|s| s.trim().to_string())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains("zombie"))
        })
        .unwrap_or(false)
}

/// tests/daemon_restart.sh for real: the lab engine's dockerd is stopped (SIGTERM, which stops
/// every container on it) and started again while a deployed app serves; the proxy and the live
/// release must come back with the same route and deployctl must work on. deployctl reaches the
/// engine through `docker.host`; the images (app and FROM scratch proxy) are built on it.
#[test]
fn item19_daemon_restart_on_a_lab_engine() {
    let shared_before = shared_dockerd_pid();
    let lab = Lab::start(1);
    let host = &lab.hosts[0];
    let pid_before = host
        .dockerd_pid()
        .expect("the lab's dockerd wrote its pid file");
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/daemon_restart.sh"))
        .env("DEPLOYCTL_ALLOW_DAEMON_RESTART", "1")
        .env("DOCKER_HOST", host.docker_host())
        .env("DOCKERD_PIDFILE", host.pidfile())
        .env("DRT_LISTEN_IP", &host.ip)
        .env("DEPLOYCTL_BIN", env!("CARGO_BIN_EXE_deployctl"))
        .stdin(Stdio::null())
        .output()
        .expect("run tests/daemon_restart.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("PASSED"),
        "tests/daemon_restart.sh failed on lab host {} (exit {:?}):\n{stderr}\n--- dockerd log: {}",
        host.unix_host,
        out.status.code(),
        host.dir.join("dockerd.log").display()
    );
    // It restarted the lab's daemon, for real, and not the machine's.
    let pid_after = host.dockerd_pid();
    assert!(
        pid_after.is_some_and(|p| p != pid_before && alive(p)) && !alive(pid_before),
        "the lab's dockerd was not restarted: pid {pid_before} before, {pid_after:?} after\n{stderr}"
    );
    assert_eq!(
        shared_dockerd_pid(),
        shared_before,
        "the machine's dockerd changed"
    );
    assert!(
        Command::new("docker")
            .args(["info", "--format", "{{.ID}}"])
            .env_remove("DOCKER_HOST")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "the machine's daemon does not answer"
    );
}

/// The lab itself: two hosts answer on their sockets and TCP addresses and reach each other over
/// the bridge; a lab whose owner died is collected by the next start; dropping a lab leaves no
/// process, namespace, interface, iptables rule, cgroup or file behind.
#[test]
fn lab_hosts_reach_each_other_and_leave_nothing_behind() {
    // A lab whose owner has exited, as after a test binary killed by SIGKILL.
    let mut dead = Command::new("true").spawn().expect("spawn true");
    let dead_pid = dead.id();
    dead.wait().expect("reap true");
    let orphan_id = format!("o{:05x}", std::process::id() & 0xf_ffff);
    let orphan = Command::new("bash")
        .arg(lab::script())
        .args(["up", "1"])
        .env("LAB_ID", &orphan_id)
        .env("LAB_OWNER", dead_pid.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("hosts.sh up");
    let orphan_dir = format!("/tmp/deployctl-lab-{orphan_id}");
    assert!(
        orphan.status.success(),
        "orphan lab: {}",
        String::from_utf8_lossy(&orphan.stderr)
    );

    let lab = Lab::start(2);
    assert!(
        !Path::new(&orphan_dir).exists() && !sh("ip", &["netns", "list"]).contains(&orphan_id),
        "the lab of a dead owner was not collected by the next start"
    );

    let (h1, h2) = (&lab.hosts[0], &lab.hosts[1]);
    assert_ne!(h1.ip, h2.ip);
    for h in [h1, h2] {
        let via_unix = h.docker(&["info", "--format", "{{.ID}} {{.Driver}}"]);
        let via_tcp = Command::new("docker")
            .args(["-H", &h.tcp_host, "info", "--format", "{{.ID}} {{.Driver}}"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        let via_unix = via_unix.unwrap_or_else(|e| panic!("{}: {e}", h.unix_host));
        assert!(via_unix.trim().ends_with(" vfs"), "{via_unix}");
        assert_eq!(
            via_tcp.ok().as_deref(),
            Some(via_unix.as_str()),
            "{}",
            h.tcp_host
        );
    }
    // Two engines, not two doors to one: what h1 holds, h2 does not.
    h1.docker(&["volume", "create", "lab-only-on-h1"])
        .expect("volume create on h1");
    assert!(h1.docker(&["volume", "inspect", "lab-only-on-h1"]).is_ok());
    assert!(h2.docker(&["volume", "inspect", "lab-only-on-h1"]).is_err());
    // Host to host over the bridge (the FORWARD rule), as fleets and Swarm will need.
    let ping = sh(
        "nsenter",
        &[
            &format!("--net=/var/run/netns/{}-h1", lab.prefix()),
            "curl",
            "-s",
            "-m",
            "5",
            &format!("http://{}:2375/_ping", h2.ip),
        ],
    );
    assert_eq!(ping, "OK", "h1 cannot reach h2's engine");

    let pids: Vec<u32> = lab.hosts.iter().filter_map(|h| h.dockerd_pid()).collect();
    assert_eq!(pids.len(), 2);
    let (prefix, dir) = (lab.prefix(), lab.dir());
    let cgroup = format!("deployctl-lab-{}", lab.id);
    drop(lab);

    for pid in pids {
        assert!(!alive(pid), "dockerd {pid} still runs");
    }
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(!sh("ip", &["netns", "list"]).contains(&prefix));
    assert!(!sh("ip", &["-o", "link"]).contains(&prefix));
    assert!(!sh("iptables", &["-S", "FORWARD"]).contains(&prefix));
    assert!(!sh("cat", &["/proc/mounts"]).contains(&dir.display().to_string()));
    assert!(
        sh(
            "find",
            &["/sys/fs/cgroup", "-maxdepth", "2", "-name", &cgroup]
        )
        .is_empty(),
        "cgroup {cgroup} is left"
    );
}
