//! `Engine` over bollard: the `DockerEngine` handle and its shared helpers. The trait methods are
//! in `api`, connecting (host, TLS, API version) in `connect`, error mapping in `errors`, the
//! conversions between our types and the API's in `convert`, the build context in `context`,
//! the SSH transport (`ssh://`, one connection per engine) in `ssh`.

mod api;
mod connect;
mod context;
mod convert;
mod errors;
mod ssh;
#[cfg(test)]
mod tests;
mod transfer;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::ListNetworksOptionsBuilder;
use futures_util::StreamExt;

use crate::engine::{EngineError, EngineResult, LineSink};

use connect::*;
use convert::*;
use errors::*;

/// `LABEL "k"="v" ...` with JSON-quoted keys and values (Dockerfile strings take the same escapes).
fn label_instruction(labels: &BTreeMap<String, String>) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""));
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
        .collect();
    format!("LABEL {}", pairs.join(" "))
}

/// Where the daemon listens when neither the config nor `DOCKER_HOST` says.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// How long reaching the daemon may take before it counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-request limit for ordinary calls (time to the response headers).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Builds upload the whole context before the daemon answers; a large context on a slow link
/// must not be cut off.
const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);

/// Connection to a Docker Engine.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    host: String,
    /// The SSH connection of an `ssh://` engine: held here (and by every client cloned from
    /// `docker`) so it lasts as long as the engine, and ends with it.
    _ssh: Option<std::sync::Arc<ssh::Master>>,
}

impl DockerEngine {
    /// Connects to `host` (config's `docker.host`), else `DOCKER_HOST`, else the local socket,
    /// and negotiates the API version. `unix://`, `tcp://`, `http://`, `https://` and
    /// `ssh://[user@]host[:port]` (one OpenSSH connection for the engine's life, see `ssh`) are
    /// understood; `DOCKER_TLS_VERIFY` + `DOCKER_CERT_PATH` (ca.pem, cert.pem, key.pem) turn a
    /// `tcp://` address into TLS. Fails with `Unreachable` within a few seconds when the daemon
    /// does not answer.
    pub async fn connect(host: Option<&str>) -> Result<DockerEngine, EngineError> {
        connect_with(host, &|name| std::env::var_os(name)).await
    }

    /// The daemon address, for messages.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Networks whose name is exactly `name` (the daemon's filter matches substrings).
    async fn networks_named(&self, name: &str) -> EngineResult<Vec<bollard::models::Network>> {
        let options = ListNetworksOptionsBuilder::new()
            .filters(&HashMap::from([("name", vec![name])]))
            .build();
        Ok(self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| self.err(e))?
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .collect())
    }

    fn err(&self, e: BollardError) -> EngineError {
        map_error(e, &self.host)
    }

    /// A client whose request limit covers an operation the daemon itself takes `extra` for.
    fn with_timeout(&self, extra: Duration) -> Docker {
        self.docker
            .clone()
            .with_timeout(REQUEST_TIMEOUT.saturating_add(extra))
    }

    async fn run_build(
        &self,
        tar: Vec<u8>,
        options: bollard::query_parameters::BuildImageOptions,
        log: LineSink<'_>,
    ) -> EngineResult<Option<String>> {
        let docker = self.docker.clone().with_timeout(BUILD_TIMEOUT);
        let mut stream = docker.build_image(options, None, Some(bollard::body_full(tar.into())));
        let mut lines = LineSplitter::default();
        let mut built = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    // The daemon names the image it built in an `aux` message at the end.
                    if let Some(id) = info.aux.as_ref().and_then(|a| a.id.clone()) {
                        built = Some(id);
                    }
                    if let Some(text) = info.stream.as_deref() {
                        lines.push(text.as_bytes(), |l| emit_nonblank(log, l));
                    }
                    if let Some(status) = info.status.as_deref() {
                        emit_nonblank(log, status);
                    }
                }
                Err(e) => {
                    lines.finish(|l| emit_nonblank(log, l));
                    return Err(build_error(e, &self.host));
                }
            }
        }
        lines.finish(|l| emit_nonblank(log, l));
        Ok(built)
    }
}

fn emit_nonblank(log: LineSink<'_>, line: &str) {
    let line = line.trim_end();
    if !line.trim().is_empty() {
        log(line);
    }
}
