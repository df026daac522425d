//! bollard's errors mapped to `EngineError` (unreachable, not found, conflict, API, build), and
//! the failures of `ssh` (auth, host keys, network, the remote's docker) explained with the fix.

use bollard::errors::Error as BollardError;

use crate::engine::EngineError;

use super::ssh::{CONNECT_TIMEOUT_SECS, Target};

/// `error: source: source...`, since bollard's own messages hide the cause
/// ("client error (Connect)").
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

pub(super) fn is_connect_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | NotFound | PermissionDenied | ConnectionReset | TimedOut
            ) {
                return true;
            }
        }
        if let Some(h) = err.downcast_ref::<hyper_util::client::legacy::Error>()
            && h.is_connect()
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The one translation of bollard errors.
pub(super) fn map_error(e: BollardError, host: &str) -> EngineError {
    let unreachable = |reason: String| EngineError::Unreachable {
        host: host.to_string(),
        reason,
    };
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => EngineError::NotFound(message),
            409 => EngineError::Conflict(message),
            _ if message.is_empty() => EngineError::Api(format!("HTTP {status_code}")),
            _ => EngineError::Api(message),
        },
        BollardError::SocketNotFoundError(path) => {
            unreachable(format!("socket {path} does not exist"))
        }
        BollardError::RequestTimeoutError => unreachable("the request timed out".to_string()),
        other => {
            let text = error_chain(&other);
            if is_connect_failure(&other) {
                unreachable(text)
            } else {
                EngineError::Api(text)
            }
        }
    }
}

/// During a build every daemon-side failure is a build failure, with the daemon's words.
pub(super) fn build_error(e: BollardError, host: &str) -> EngineError {
    match e {
        BollardError::DockerStreamError { error } => {
            EngineError::Build(error.trim_end().to_string())
        }
        BollardError::DockerResponseServerError { message, .. } => EngineError::Build(message),
        other => match map_error(other, host) {
            EngineError::Api(m) => EngineError::Build(m),
            mapped => mapped,
        },
    }
}

/// The last few non-empty lines of ssh's stderr, for messages.
pub(super) fn last_lines(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.chars().all(|c| c == '@'))
        .collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    if tail.is_empty() {
        "ssh said nothing".to_string()
    } else {
        tail.join(" / ")
    }
}

/// What went wrong, and the fix, from the exit code and stderr of an `ssh` (the master's or the
/// diagnostic `docker version`'s).
pub(super) fn explain(target: &Target, code: Option<i32>, stderr: &str) -> String {
    let who = target.destination();
    let host = &target.host;
    let port = target.port_or_default();
    let has = |s: &str| stderr.contains(s);
    let lower = stderr.to_ascii_lowercase();
    if has("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || lower.contains("host key for") && lower.contains("has changed")
    {
        format!(
            "the host key of {host} has CHANGED since it was recorded in known_hosts (a \
             reinstalled server, or someone in the middle): confirm the new fingerprint with the \
             server's administrator, then `ssh-keygen -R {host}` and add the new key"
        )
    } else if has("Host key verification failed")
        || has("No ED25519 host key is known")
        || lower.contains("host key is known")
    {
        format!(
            "the host key of {host} is not in known_hosts, and deployctl never accepts unknown \
             keys: check its fingerprint, then add it (`ssh-keyscan -p {port} {host} >> \
             ~/.ssh/known_hosts`; in GitHub Actions, a known_hosts line from a secret or input)"
        )
    } else if has("Permission denied (") || has("Too many authentication failures") {
        format!(
            "SSH authentication as {who} was refused: load the key into ssh-agent (`ssh-add`, \
             SSH_AUTH_SOCK) or name it with IdentityFile in ~/.ssh/config (or \
             DEPLOYCTL_SSH_CONFIG), and check that its public key is in the remote's \
             authorized_keys"
        )
    } else if lower.contains("connection refused") {
        format!(
            "{host} refused the connection on port {port}: check that sshd runs there and the \
             port is right (ssh://{who}:PORT)"
        )
    } else if lower.contains("timed out") {
        format!(
            "no answer from {host} port {port} within {CONNECT_TIMEOUT_SECS} s (connection timed \
             out): check the address, the port and firewalls"
        )
    } else if has("Could not resolve hostname") {
        format!("cannot resolve the host name {host}: check the spelling or your DNS")
    } else if lower.contains("no route to host") || lower.contains("network is unreachable") {
        format!("no route to {host}: check the address and the network")
    } else if lower.contains("permission denied while trying to connect to the docker daemon") {
        format!(
            "{who} may not use the Docker daemon on {host}: add the user to the docker group \
             (`sudo usermod -aG docker USER`, then log in again)"
        )
    } else if has("Cannot connect to the Docker daemon")
        || lower.contains("is the docker daemon running")
    {
        format!(
            "the Docker daemon on {host} is not running (the remote docker CLI cannot reach it): \
             start it there (`sudo systemctl start docker`)"
        )
    } else if code == Some(127)
        || lower.contains("command not found")
        || lower.contains("docker: not found")
    {
        format!(
            "there is no `docker` command on {host} for {who}: install the docker CLI there \
             (deployctl runs `docker system dial-stdio` on the remote)"
        )
    } else if has("is not a docker command") {
        format!(
            "the docker CLI on {host} is too old for `docker system dial-stdio` (needs 18.09 or \
             newer): upgrade it"
        )
    } else {
        let code = code.map(|c| format!("exit {c}: ")).unwrap_or_default();
        format!("ssh to {who} failed ({code}{})", last_lines(stderr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(s: &str) -> Target {
        Target::parse(s).expect("parses")
    }

    #[test]
    fn failures_are_explained_with_the_fix() {
        let t = target("deploy@web1:2222");
        let cases: &[(Option<i32>, &str, &[&str])] = &[
            (
                Some(255),
                "deploy@web1: Permission denied (publickey).",
                &["refused", "deploy@web1", "ssh-agent", "IdentityFile"],
            ),
            (
                Some(255),
                "Host key verification failed.",
                &["not in known_hosts", "ssh-keyscan -p 2222 web1"],
            ),
            (
                Some(255),
                "@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\nHost key verification failed.",
                &["CHANGED", "ssh-keygen -R web1"],
            ),
            (
                Some(255),
                "ssh: connect to host web1 port 2222: Connection refused",
                &["refused the connection", "port 2222"],
            ),
            (
                Some(255),
                "ssh: connect to host web1 port 2222: Connection timed out",
                &["timed out", "10 s"],
            ),
            (
                Some(255),
                "ssh: Could not resolve hostname web1: Name or service not known",
                &["resolve", "web1"],
            ),
            (
                Some(127),
                "bash: line 1: docker: command not found",
                &[
                    "no `docker` command",
                    "install the docker CLI",
                    "dial-stdio",
                ],
            ),
            (
                Some(127),
                "sh: 1: docker: not found",
                &["no `docker` command"],
            ),
            (
                Some(1),
                "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
                &["not running", "start it"],
            ),
            (
                Some(1),
                "permission denied while trying to connect to the Docker daemon socket at unix:///var/run/docker.sock",
                &["docker group"],
            ),
            (
                Some(3),
                "something odd\nand then this",
                &["deploy@web1", "exit 3", "and then this"],
            ),
        ];
        for (code, stderr, wanted) in cases {
            let msg = explain(&t, *code, stderr);
            for w in *wanted {
                assert!(msg.contains(w), "{stderr:?} -> {msg:?} lacks {w:?}");
            }
        }
    }
}
