//! `docker.host = "ssh://root@<lab host>"`, for real: an sshd per lab host (tests/lab/hosts.sh
//! `--ssh`), reached with the lab's own ssh_config through DEPLOYCTL_SSH_CONFIG. A deploy, a
//! rollback and a status over one SSH connection per run, no ssh process left after a run (also
//! when deployctl is killed by SIGKILL), and every failure (wrong key, unknown or changed host
//! key, no docker on the remote, the remote daemon stopped) exits 4 naming its fix. The tests of this binary share one lab of two hosts
//! while they overlap: h1 serves the deploy test, h2 the failures (whose last one stops its
//! dockerd). Needs root; CI (`.ci/run`) runs as root and installs the lab's tools and OpenSSH.

mod support;

#[path = "support/lab.rs"]
mod lab;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use lab::{Lab, LabHost, LabOptions};
use support::{App, Run, body_version, deployctl_bin, wait_until};

/// The lab of the tests running now: started by the first, removed when the last drops it.
fn shared_lab() -> Arc<Lab> {
    static LAB: Mutex<Weak<Lab>> = Mutex::new(Weak::new());
    let mut slot = LAB.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(lab) = slot.upgrade() {
        return lab;
    }
    let lab = Arc::new(Lab::start_with(2, LabOptions { ssh: true }));
    *slot = Arc::downgrade(&lab);
    lab
}

fn ip_of(host: &LabHost) -> String {
    host.ip.clone()
}

/// `Accepted publickey` lines in the host's sshd log: one per SSH connection.
fn accepted(host: &LabHost) -> usize {
    std::fs::read_to_string(host.sshd_log())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("Accepted publickey"))
        .count()
}

/// ssh processes of this machine that talk to `host` (ours run `ssh … -- root@<ip> …`).
fn ssh_processes(host: &LabHost) -> String {
    let pattern = format!("root@{}( |$)", host.ip.replace('.', "\\."));
    let out = Command::new("pgrep")
        .args(["-af", &pattern])
        .stdin(Stdio::null())
        .output()
        .expect("run pgrep");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn assert_no_ssh_left(host: &LabHost, after: &str) {
    // A leftover stays for good; the bound only lets processes that were told to end do so.
    let gone = wait_until(Duration::from_secs(5), || ssh_processes(host).is_empty());
    assert!(
        gone,
        "ssh processes left after {after}:\n{}",
        ssh_processes(host)
    );
}

/// GET / on the lab host's address (the proxy publishes there).
fn get(ip: &str, port: u16) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().map_err(|e| format!("{e}"))?,
        Duration::from_secs(5),
    )
    .map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("incomplete answer {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

fn serving(ip: &str, port: u16) -> Option<String> {
    get(ip, port)
        .ok()
        .filter(|(s, _)| *s == 200)
        .and_then(|(_, b)| body_version(&b))
}

#[test]
fn deploy_rollback_status_over_one_ssh_connection_each() {
    let lab = shared_lab();
    let host = &lab.hosts[0];
    let ip = ip_of(host);
    let app = App::new("sshdep");
    // The environment: the engine over SSH, the proxy on the lab host's address.
    std::fs::write(
        app.root().join("environments/test.toml"),
        format!(
            "[docker]\nhost = \"{}\"\n\n[proxy]\nlisten = \"{ip}:{}\"\n",
            host.ssh_host(),
            app.port
        ),
    )
    .expect("write the environment");
    app.commit("deploy over ssh");
    let config = lab.ssh_config();
    let config = config.to_str().expect("utf-8 path");
    let env = [("DEPLOYCTL_SSH_CONFIG", config), ("DOCKER_HOST", "")];

    for (i, version) in ["v1", "v2"].into_iter().enumerate() {
        let before = accepted(host);
        let run = app.deploy(version, &env);
        run.assert_code(0);
        assert_eq!(
            accepted(host),
            before + 1,
            "deploy {version} did not use exactly one SSH connection:\n{run}"
        );
        assert_eq!(
            serving(&ip, app.port).as_deref(),
            Some(version),
            "deploy {} ({version}) does not answer on {ip}:{}",
            i + 1,
            app.port
        );
        assert_no_ssh_left(host, &format!("deploy {version}"));
    }
    // The app really runs on the lab host, not on the machine's daemon.
    let names = host
        .docker(&["ps", "--format", "{{.Names}}"])
        .expect("docker ps on the lab host");
    assert!(names.contains(&app.container("green")), "{names}");

    let before = accepted(host);
    app.run(&["rollback"], &env).assert_code(0);
    assert_eq!(
        accepted(host),
        before + 1,
        "rollback: not one SSH connection"
    );
    assert_eq!(serving(&ip, app.port).as_deref(), Some("v1"));
    assert_no_ssh_left(host, "rollback");

    let status = app.run(&["status", "-vv"], &env);
    status.assert_code(0);
    assert!(
        status.stdout.contains("live:") && status.stdout.contains("v1"),
        "status does not show v1 live:\n{status}"
    );
    // The fast path: the master forwards the engine's socket (no dial-stdio per connection).
    assert!(
        status.stderr.contains("is forwarded by the master"),
        "the engine's socket was not forwarded:\n{status}"
    );
    assert_no_ssh_left(host, "status");

    app.run(&["remove", "--yes"], &env).assert_code(0);
    assert_no_ssh_left(host, "remove");

    // deployctl killed by SIGKILL (no destructor runs): its master goes with it.
    let mut deploy = app
        .command(&["deploy", "--release", "v3"], &env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start deployctl deploy");
    let mut socket = None;
    wait_until(Duration::from_secs(60), || {
        let procs = ssh_processes(host);
        socket = procs
            .lines()
            .find(|l| l.contains(" -M "))
            .and_then(|l| l.split(" -S ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(PathBuf::from);
        socket.is_some()
    });
    deploy.kill().expect("kill -9 deployctl");
    deploy.wait().expect("reap deployctl");
    let socket = socket.expect("no ssh master seen during the deploy");
    assert_no_ssh_left(host, "kill -9 of deployctl");
    // The master removed its socket; the private dir itself is left to the killed run's owner.
    assert!(!socket.exists(), "{} is left", socket.display());
    let dir = socket.parent().expect("socket dir");
    assert!(dir.starts_with(std::env::temp_dir()) || dir.starts_with("/tmp"));
    let _ = std::fs::remove_dir_all(dir);
}

/// A minimal project whose engine is `docker_host` (status needs no build and no git).
fn project(docker_host: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("environments")).expect("mkdir");
    std::fs::write(
        dir.path().join("deploy.toml"),
        "[app]\nname = \"sshfail\"\nport = 8080\n",
    )
    .expect("write deploy.toml");
    std::fs::write(
        dir.path().join("environments/test.toml"),
        format!("[docker]\nhost = \"{docker_host}\"\n"),
    )
    .expect("write test.toml");
    dir
}

fn status(project: &Path, ssh_config: &Path) -> Run {
    let out = Command::new(deployctl_bin())
        .args(["status", "--env", "test", "--config"])
        .arg(project.join("deploy.toml"))
        .env("DEPLOYCTL_SSH_CONFIG", ssh_config)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DOCKER_HOST")
        .env_remove("DEPLOYCTL_ENV")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run deployctl status");
    Run::from(out)
}

/// The lab's ssh_config with one setting replaced (`IdentityFile`, `UserKnownHostsFile`).
fn config_with(lab: &Lab, dir: &Path, key: &str, value: &Path) -> PathBuf {
    let text = std::fs::read_to_string(lab.ssh_config()).expect("read the lab's ssh_config");
    let changed: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with(key) {
                format!("  {key} {}\n", value.display())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(changed, text, "{key} is not in the lab's ssh_config");
    let path = dir.join(format!("ssh_config.{key}"));
    std::fs::write(&path, changed).expect("write ssh_config");
    path
}

fn new_key(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ssh-keygen failed");
    path
}

fn assert_unreachable_with(run: &Run, case: &str, who: &str, wanted: &[&str]) {
    assert_eq!(run.code, 4, "{case}: not exit 4:\n{run}");
    assert!(
        run.stderr.contains(who),
        "{case}: does not name {who}:\n{run}"
    );
    for w in wanted {
        assert!(run.stderr.contains(w), "{case}: lacks {w:?}:\n{run}");
    }
}

#[test]
fn ssh_failures_exit_4_and_name_the_fix() {
    let lab = shared_lab();
    let host = &lab.hosts[1];
    let ip = ip_of(host);
    let who = format!("root@{ip}");
    let tmp = tempfile::tempdir().expect("temp dir");
    let good = project(&host.ssh_host());

    // The lab's own settings work: the failures below are each the one thing changed.
    let run = status(good.path(), &lab.ssh_config());
    assert_ne!(
        run.code, 4,
        "status over ssh fails with the lab's settings:\n{run}"
    );
    assert_no_ssh_left(host, "status");

    let key = new_key(tmp.path(), "stranger");
    let wrong_key = config_with(&lab, tmp.path(), "IdentityFile", &key);
    let run = status(good.path(), &wrong_key);
    assert_unreachable_with(
        &run,
        "wrong key",
        &who,
        &["refused", "ssh-agent", "IdentityFile"],
    );
    assert_no_ssh_left(host, "a refused key");

    let empty = tmp.path().join("known_hosts.empty");
    std::fs::write(&empty, "").expect("write known_hosts");
    let unknown = config_with(&lab, tmp.path(), "UserKnownHostsFile", &empty);
    let run = status(good.path(), &unknown);
    assert_unreachable_with(
        &run,
        "unknown host key",
        &ip,
        &["not in known_hosts", "ssh-keyscan"],
    );
    assert_no_ssh_left(host, "an unknown host key");

    let other = new_key(tmp.path(), "impostor");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).expect("read key");
    let key_only: Vec<&str> = other_pub.split_whitespace().take(2).collect();
    let changed_file = tmp.path().join("known_hosts.changed");
    std::fs::write(&changed_file, format!("{ip} {}\n", key_only.join(" "))).expect("write");
    let changed = config_with(&lab, tmp.path(), "UserKnownHostsFile", &changed_file);
    let run = status(good.path(), &changed);
    assert_unreachable_with(&run, "changed host key", &ip, &["CHANGED", "ssh-keygen -R"]);
    assert_no_ssh_left(host, "a changed host key");

    // Port 2222 of a lab host: the same sshd, a session PATH without docker.
    let no_docker = project(&format!("{}:2222", host.ssh_host()));
    let run = status(no_docker.path(), &lab.ssh_config());
    assert_unreachable_with(
        &run,
        "no docker on the remote",
        &who,
        &[
            "no `docker` command",
            "install the docker CLI",
            "dial-stdio",
        ],
    );
    assert_no_ssh_left(host, "a remote without docker");

    // The remote daemon stopped (this lab host's own dockerd).
    let pid = host.dockerd_pid().expect("the lab's dockerd pid");
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(killed, "kill dockerd {pid}");
    let stopped = wait_until(Duration::from_secs(60), || {
        host.docker(&["version"]).is_err() && !Path::new(&format!("/proc/{pid}/exe")).exists()
    });
    assert!(stopped, "the lab's dockerd {pid} did not stop");
    let run = status(good.path(), &lab.ssh_config());
    assert_unreachable_with(&run, "daemon stopped", &ip, &["not running", "start it"]);
    assert_no_ssh_left(host, "a stopped daemon");
}
