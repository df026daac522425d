//! The fast path over SSH: the remote engine's unix socket forwarded to a local socket by the
//! master (`ssh -O forward -L local:remote`), so a new HTTP connection is a new channel opened by
//! the master itself, with no process started on either side. `docker system dial-stdio` costs a
//! local `ssh` and a remote docker CLI per connection (hundreds of milliseconds each, and every
//! `docker exec` needs a connection of its own), which made a deploy over SSH seconds slower.
//!
//! Used when the remote docker CLI says its endpoint is a unix socket (`docker context inspect`,
//! which honours `DOCKER_HOST` and the current context) and the master accepts the forward;
//! otherwise connections go through `dial-stdio` as before.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use super::Master;

/// Bound on each of the two set-up commands.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

impl Master {
    /// Forwards the remote engine's socket to a local one in the master's private dir; the
    /// local path, or None when the remote's endpoint is not a unix socket or the forward fails.
    pub(in crate::engine::docker) async fn forward_engine_socket(&self) -> Option<PathBuf> {
        let endpoint = self
            .command(&[
                "docker",
                "context",
                "inspect",
                "--format",
                "'{{.Endpoints.docker.Host}}'",
            ])
            .stdin(Stdio::null())
            .output();
        let out = tokio::time::timeout(SETUP_TIMEOUT, endpoint)
            .await
            .ok()?
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let endpoint = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let remote = remote_socket(&endpoint)?;
        let local = self.dir.path().join("d");
        // Without `ClearAllForwardings`, which would clear this command's own `-L`.
        let mut args = Self::base_args(&self.target, self.config.as_deref());
        if let Some(at) = args.iter().position(|a| a == "ClearAllForwardings=yes") {
            args.drain(at - 1..=at);
        }
        let forward = tokio::process::Command::new("ssh")
            .args(args)
            .arg("-S")
            .arg(self.socket())
            .args(["-O", "forward", "-L"])
            .arg(format!("{}:{remote}", local.display()))
            .arg("--")
            .arg(self.target.destination())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(SETUP_TIMEOUT, forward)
            .await
            .ok()?
            .ok()?;
        if !out.status.success() || !local.exists() {
            tracing::debug!(
                "ssh {}: forwarding {remote} failed ({}); using dial-stdio",
                self.target.destination(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        tracing::debug!(
            "ssh {}: the engine's socket {remote} is forwarded by the master",
            self.target.destination()
        );
        Some(local)
    }
}

/// The path of a `unix://` endpoint, when it is an absolute path of characters ssh's `-L`
/// takes literally (no `:` separator, no spaces).
fn remote_socket(endpoint: &str) -> Option<&str> {
    let path = endpoint.strip_prefix("unix://")?;
    let plain = path.starts_with('/') && !path.contains([':', ' ', '\t', '\n']) && path.len() < 100;
    plain.then_some(path)
}

#[cfg(test)]
mod tests {
    use super::remote_socket;

    #[test]
    fn only_plain_unix_endpoints_are_forwarded() {
        assert_eq!(
            remote_socket("unix:///var/run/docker.sock"),
            Some("/var/run/docker.sock")
        );
        assert_eq!(remote_socket("tcp://127.0.0.1:2375"), None);
        assert_eq!(remote_socket("unix://relative.sock"), None);
        assert_eq!(remote_socket("unix:///a:b.sock"), None);
        assert_eq!(remote_socket("ssh://other"), None);
    }
}
