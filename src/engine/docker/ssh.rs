//! `ssh://user@host[:port]`: the Docker API over SSH, the way the docker CLI reaches a remote
//! engine, through the remote's `docker system dial-stdio`, with the system `ssh` binary (so
//! `~/.ssh/config`, `SSH_AUTH_SOCK` and known_hosts work as for the user's own `ssh`).
//!
//! One SSH connection per engine: `Master::start` runs one OpenSSH ControlMaster (`ssh -M -S`)
//! whose control socket lives in a private temp dir (mode 0700, short path: unix sockets are
//! limited to 108 bytes); every hyper connection is a new channel over it (`ssh -S <socket>`
//! running `docker system dial-stdio`), pooled with keep-alive by a hyper_util legacy `Client`
//! plugged in with `Docker::connect_with_custom_transport`. A channel never opens a connection of
//! its own: `ProxyCommand=false` makes its fallback fail when the master is gone. When the remote
//! engine listens on a unix socket, the master forwards it to a local socket instead and every
//! connection is a channel the master opens itself, with no process started (`forward`).
//!
//! Not bollard's `ssh` feature: its connector launches a new master (a new TCP connection,
//! handshake and authentication) for every hyper connection. It goes through the `openssh` crate,
//! whose `SessionBuilder` defaults are not ours either: host keys checked with `KnownHosts::Add`
//! (`StrictHostKeyChecking=accept-new`: an unknown host key is silently accepted), the master
//! forked into the background with `ControlPersist=yes`, its socket dir in the state dir or the
//! current directory.
//!
//! Safety settings, whatever the user's config says: `BatchMode=yes` (never a prompt),
//! `StrictHostKeyChecking=yes` (an unknown or changed host key is refused), `ConnectTimeout=10`,
//! `ServerAliveInterval=5` with `ServerAliveCountMax=3` (a dead link is noticed within 15 s).
//! `DEPLOYCTL_SSH_CONFIG=<file>` replaces `~/.ssh/config` (`ssh -F`).
//!
//! The master ends when the last `Docker` client holding it is dropped (SIGTERM, then reaped) and
//! also when deployctl dies without dropping it (`PR_SET_PDEATHSIG`). Failures are explained by
//! `errors::explain`: the master's stderr when it does not start, and `Master::diagnose` (the remote's
//! `docker version` over the same master) when the first API call fails.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bollard::{BollardRequest, ClientVersion, Docker};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::errors::{explain, last_lines};

mod forward;

/// How long `ssh` may take to reach the host (TCP connect and banner).
pub(super) const CONNECT_TIMEOUT_SECS: u64 = 10;
/// Bound on the whole start of the master: connect, key exchange, authentication.
const MASTER_START: Duration = Duration::from_secs(30);
/// Bound on the diagnostic `docker version` run after a failure.
const DIAGNOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// Where to connect: `ssh://[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) user: Option<String>,
    pub(super) host: String,
    pub(super) port: Option<u16>,
}

impl Target {
    /// Parses what follows `ssh://`.
    pub(super) fn parse(rest: &str) -> Result<Target, String> {
        let usage = "use ssh://USER@HOST or ssh://USER@HOST:PORT";
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(format!("an ssh:// address takes no path; {usage}"));
        }
        let (user, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
            Some(_) => return Err(format!("the user before `@` is empty; {usage}")),
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, tail) = v6
                .split_once(']')
                .ok_or_else(|| format!("`[` without `]` in the host; {usage}"))?;
            (h, tail.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("`{p}` is not a port; {usage}"))?,
            ),
        };
        let bad = |s: &str| {
            s.is_empty()
                || s.starts_with('-')
                || s.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        if bad(host) {
            return Err(format!("`{host}` is not a host name; {usage}"));
        }
        if user.as_deref().is_some_and(bad) {
            return Err(format!(
                "`{}` is not a user name; {usage}",
                user.unwrap_or_default()
            ));
        }
        Ok(Target {
            user,
            host: host.to_string(),
            port,
        })
    }

    /// `user@host` (or `host`), as ssh takes it and as messages name it.
    pub(super) fn destination(&self) -> String {
        match &self.user {
            Some(u) => format!("{u}@{}", self.host),
            None => self.host.clone(),
        }
    }

    pub(super) fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(22)
    }
}

/// One OpenSSH ControlMaster: the run's only connection to the host.
pub(super) struct Master {
    target: Target,
    config: Option<PathBuf>,
    /// Private dir holding the control socket and the master's stderr; removed on drop.
    dir: tempfile::TempDir,
    pid: u32,
    exited: Arc<AtomicBool>,
    reaper: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Master {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Master")
            .field("target", &self.target.destination())
            .field("pid", &self.pid)
            .finish()
    }
}

/// A temp dir whose socket path fits: `$TMPDIR` when short enough, else `/tmp`.
fn private_dir() -> io::Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    // `<tmp>/deployctl-ssh-XXXXXX/s` plus ssh's temporary `.XXXXXXXXXXXXXXXX` suffix.
    let base = if tmp.as_os_str().len() <= 60 {
        tmp
    } else {
        PathBuf::from("/tmp")
    };
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix("deployctl-ssh-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(base)
}

impl Master {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("master.log")
    }

    /// The options every ssh of ours gets, before the destination.
    fn base_args(target: &Target, config: Option<&Path>) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(c) = config {
            args.extend(["-F".to_string(), c.display().to_string()]);
        }
        for opt in [
            "BatchMode=yes".to_string(),
            "StrictHostKeyChecking=yes".to_string(),
            format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
            "ServerAliveInterval=5".to_string(),
            "ServerAliveCountMax=3".to_string(),
            // A RemoteCommand or port forwardings of the user's config would break -N and the
            // channels' command, or make the master fail on a port in use.
            "RemoteCommand=none".to_string(),
            "ClearAllForwardings=yes".to_string(),
        ] {
            args.extend(["-o".to_string(), opt]);
        }
        if let Some(p) = target.port {
            args.extend(["-p".to_string(), p.to_string()]);
        }
        args
    }

    /// Connects and authenticates; `Err` is the reason, with the fix.
    pub(super) async fn start(target: Target, config: Option<PathBuf>) -> Result<Master, String> {
        let dir = private_dir().map_err(|e| format!("cannot create a temp dir for ssh: {e}"))?;
        let socket = dir.path().join("s");
        let log = std::fs::File::create(dir.path().join("master.log"))
            .map_err(|e| format!("cannot create the ssh log file: {e}"))?;
        let mut cmd = std::process::Command::new("ssh");
        cmd.args(Self::base_args(&target, config.as_deref()))
            .args(["-M", "-S"])
            .arg(&socket)
            .args(["-o", "ControlPersist=no", "-N", "-T", "--"])
            .arg(target.destination())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::TERM,
                ))
                .map_err(io::Error::from)
            });
        }
        // The thread that spawns the master waits for it: PR_SET_PDEATHSIG fires when the
        // spawning thread ends, and this one lives exactly as long as the master.
        let exited = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = exited.clone();
        let reaper = std::thread::Builder::new()
            .name("ssh-master".into())
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = tx.send(Ok(child.id()));
                    let _ = child.wait();
                    flag.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    flag.store(true, Ordering::SeqCst);
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| format!("cannot start a thread for ssh: {e}"))?;
        let pid = match rx.recv() {
            Ok(Ok(pid)) => pid,
            Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => {
                return Err(
                    "the `ssh` command is not installed: install the OpenSSH client \
                     (Debian/Ubuntu: openssh-client)"
                        .to_string(),
                );
            }
            Ok(Err(e)) => return Err(format!("cannot run ssh: {e}")),
            Err(_) => return Err("cannot run ssh".to_string()),
        };
        let master = Master {
            target,
            config,
            dir,
            pid,
            exited,
            reaper: Some(reaper),
        };
        // The control socket appears once the session is authenticated.
        let started = Instant::now();
        loop {
            if master.exited.load(Ordering::SeqCst) {
                let stderr = std::fs::read_to_string(master.log()).unwrap_or_default();
                return Err(explain(&master.target, None, &stderr));
            }
            if socket.exists() {
                return Ok(master);
            }
            if started.elapsed() > MASTER_START {
                return Err(format!(
                    "no SSH session with {} within {} s (port {}): check the address and that \
                     sshd answers there",
                    master.target.destination(),
                    MASTER_START.as_secs(),
                    master.target.port_or_default()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn alive(&self) -> bool {
        !self.exited.load(Ordering::SeqCst)
    }

    /// `ssh` running `command` over the master; never a connection of its own.
    fn command(&self, remote: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(Self::base_args(&self.target, self.config.as_deref()))
            .arg("-S")
            .arg(self.socket())
            .args([
                "-o",
                "ControlMaster=no",
                "-o",
                "ProxyCommand=false",
                "-T",
                "--",
            ])
            .arg(self.target.destination())
            .args(remote)
            .kill_on_drop(true);
        cmd
    }

    /// A new channel running `docker system dial-stdio`: one HTTP connection to the daemon.
    async fn channel(self: Arc<Self>) -> io::Result<Channel> {
        if !self.alive() {
            let stderr = std::fs::read_to_string(self.log()).unwrap_or_default();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                format!(
                    "the SSH connection to {} has closed: {}",
                    self.target.destination(),
                    last_lines(&stderr)
                ),
            ));
        }
        let mut child = self
            .command(&["docker", "system", "dial-stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(io::Error::other("ssh channel without pipes"));
        };
        if let Some(stderr) = child.stderr.take() {
            let who = self.target.destination();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!("ssh {who} dial-stdio: {line}");
                }
            });
        }
        Ok(Channel {
            _child: child,
            _master: self,
            stdin: Some(TokioIo::new(stdin)),
            stdout: TokioIo::new(stdout),
        })
    }

    /// Why the remote's Docker cannot be used, when it can be told: runs `docker version` over
    /// the master and explains its failure. `None` when it works (or says nothing useful).
    pub(super) async fn diagnose(&self) -> Option<String> {
        if !self.alive() {
            let stderr = std::fs::read_to_string(self.log()).unwrap_or_default();
            return Some(explain(&self.target, None, &stderr));
        }
        let out = self
            .command(&["docker", "version", "--format", "'{{.Server.APIVersion}}'"])
            .stdin(Stdio::null())
            .output();
        let out = tokio::time::timeout(DIAGNOSE_TIMEOUT, out)
            .await
            .ok()?
            .ok()?;
        if out.status.success() {
            return None;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Some(explain(&self.target, out.status.code(), &stderr))
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if self.alive()
            && let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if self.alive() {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.join();
        }
    }
}

/// Builds the bollard client whose every connection is a channel over `master`.
pub(super) fn docker(
    master: Arc<Master>,
    forwarded: Option<&Path>,
    timeout: u64,
    version: &ClientVersion,
) -> Result<Docker, bollard::errors::Error> {
    if let Some(socket) = forwarded {
        // The master carries each connection to the remote socket (see `forward`).
        return Docker::connect_with_unix(&socket.display().to_string(), timeout, version);
    }
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(Connector { master });
    Docker::connect_with_custom_transport(
        move |req: BollardRequest| {
            let client = client.clone();
            async move {
                client
                    .request(req)
                    .await
                    .map_err(bollard::errors::Error::from)
            }
        },
        // Only the scheme matters: the connector ignores the address.
        Some("http://docker.ssh"),
        timeout,
        version,
    )
}

/// hyper's connector: each new connection is a new channel over the master.
#[derive(Clone)]
struct Connector {
    master: Arc<Master>,
}

impl tower_service::Service<hyper::Uri> for Connector {
    type Response = Channel;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Channel>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        Box::pin(self.master.clone().channel())
    }
}

/// One `docker system dial-stdio` over the master: its stdout and stdin are the connection.
/// Dropping it kills the channel's `ssh`; it keeps the master alive meanwhile.
struct Channel {
    _child: Child,
    _master: Arc<Master>,
    stdin: Option<TokioIo<ChildStdin>>,
    stdout: TokioIo<ChildStdout>,
}

impl Channel {
    fn stdin(&mut self) -> io::Result<Pin<&mut TokioIo<ChildStdin>>> {
        self.stdin
            .as_mut()
            .map(Pin::new)
            .ok_or_else(|| io::ErrorKind::BrokenPipe.into())
    }
}

impl hyper::rt::Read for Channel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stdout).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Channel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().stdin()?.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stdin()?.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.stdin()?.poll_shutdown(cx))?;
        // Closing stdin is what tells the remote end that we are done writing.
        this.stdin = None;
        Poll::Ready(Ok(()))
    }
}

impl Connection for Channel {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> Target {
        Target::parse(s).expect("parses")
    }

    #[test]
    fn addresses_parse_with_user_host_and_port() {
        assert_eq!(
            target("deploy@web1:2222"),
            Target {
                user: Some("deploy".into()),
                host: "web1".into(),
                port: Some(2222)
            }
        );
        assert_eq!(target("root@10.0.0.1").destination(), "root@10.0.0.1");
        assert_eq!(target("web1/").port, None);
        assert_eq!(target("me@[::1]:22").host, "::1");
        for bad in [
            "",
            "@h",
            "me@",
            "me@h:0",
            "me@h:x",
            "me@h/path",
            "-oProxyCommand=x",
            "a b@h",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_socket_dir_is_private_and_short() {
        let dir = private_dir().expect("temp dir");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        // ssh binds `<socket>.<16 random chars>` first: well under the 108-byte limit.
        assert!(dir.path().join("s").as_os_str().len() + 17 < 100);
        assert!(
            !dir.path()
                .starts_with(std::env::current_dir().expect("cwd"))
        );
    }

    /// `connect_with` on an `ssh://` address, with only `vars` in its environment.
    async fn connect_ssh(host: &str, vars: &[(&str, &str)]) -> crate::engine::EngineError {
        let vars: Vec<(String, std::ffi::OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        match super::super::connect::connect_with(Some(host), &env).await {
            Ok(_) => panic!("{host}: connected"),
            Err(e) => e,
        }
    }

    fn reason(e: crate::engine::EngineError) -> String {
        match e {
            crate::engine::EngineError::Unreachable { reason, .. } => reason,
            other => panic!("not Unreachable: {other:?}"),
        }
    }

    #[tokio::test]
    async fn bad_addresses_and_config_files_are_unreachable_with_the_fix() {
        let r = reason(connect_ssh("ssh://me@h/var/run/docker.sock", &[]).await);
        assert!(
            r.contains("no path") && r.contains("ssh://USER@HOST"),
            "{r}"
        );
        let r = reason(
            connect_ssh(
                "ssh://me@127.0.0.1",
                &[("DEPLOYCTL_SSH_CONFIG", "/nonexistent/ssh_config")],
            )
            .await,
        );
        assert!(
            r.contains("DEPLOYCTL_SSH_CONFIG") && r.contains("not a file"),
            "{r}"
        );
    }

    /// Real ssh to a loopback port where nothing listens (needs the OpenSSH client).
    #[tokio::test]
    async fn a_refused_connection_names_host_and_port() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("ssh_config");
        std::fs::write(&config, "Host *\n  UserKnownHostsFile /dev/null\n").expect("write");
        let host = format!("ssh://me@127.0.0.1:{port}");
        let config = config.to_string_lossy().into_owned();
        let r = reason(connect_ssh(&host, &[("DEPLOYCTL_SSH_CONFIG", &config)]).await);
        assert!(
            r.contains("refused the connection") && r.contains(&format!("port {port}")),
            "{r}"
        );
    }
}
