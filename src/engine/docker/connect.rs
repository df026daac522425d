//! Reaching the daemon: which host, TLS from the Docker CLI variables, SSH (`ssh`), API version
//! negotiation, deadlines on calls.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bollard::errors::Error as BollardError;
use bollard::{API_DEFAULT_VERSION, ClientVersion, Docker};

use crate::engine::{EngineError, EngineResult};

use super::*;

/// Explicit argument, then `DOCKER_HOST`, then the local socket; empty values count as unset.
pub(super) fn resolve_host(arg: Option<&str>, env: Option<&str>) -> String {
    arg.map(str::trim)
        .filter(|h| !h.is_empty())
        .or(env.map(str::trim).filter(|h| !h.is_empty()))
        .unwrap_or(DEFAULT_HOST)
        .to_string()
}

/// `connect` with the environment passed in, so tests need not change the process's.
pub(super) async fn connect_with(
    host: Option<&str>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<DockerEngine, EngineError> {
    let env_host = env("DOCKER_HOST").map(|h| h.to_string_lossy().into_owned());
    let host = resolve_host(host, env_host.as_deref());
    let link = match ssh_target(&host) {
        Some(rest) => {
            let master = start_ssh(&host, rest, env).await?;
            let forwarded = master.forward_engine_socket().await;
            Link::Ssh(master, forwarded)
        }
        None => Link::Direct(tls_settings(env)),
    };
    let docker = open_link(&host, &link, API_DEFAULT_VERSION)?;
    // Whatever goes wrong before the first answer means the engine cannot be used: one error
    // kind (and exit code) for all of it.
    let negotiated = match negotiate(docker, &host, &link).await {
        Ok(docker) => Ok(docker),
        // Over SSH the HTTP error says little ("connection closed"): ask the remote why.
        Err(e) => match &link {
            Link::Ssh(master, _) => match master.diagnose().await {
                Some(reason) => Err(EngineError::Unreachable {
                    host: host.clone(),
                    reason,
                }),
                None => Err(e),
            },
            Link::Direct(_) => Err(e),
        },
    };
    let docker = negotiated.map_err(|e| match e {
        EngineError::Unreachable { .. } => e,
        other => EngineError::Unreachable {
            host: host.clone(),
            reason: other.to_string(),
        },
    })?;
    let ssh = match link {
        Link::Ssh(master, _) => Some(master),
        Link::Direct(_) => None,
    };
    Ok(DockerEngine {
        docker,
        host,
        _ssh: ssh,
    })
}

/// How requests reach the daemon: directly (socket, TCP, TLS) or over one SSH connection.
pub(super) enum Link {
    Direct(Option<TlsFiles>),
    /// The master, and the remote engine's socket forwarded by it when that could be done.
    Ssh(Arc<ssh::Master>, Option<PathBuf>),
}

/// What follows `ssh://`, for an SSH address.
fn ssh_target(host: &str) -> Option<&str> {
    let (scheme, rest) = host.split_once("://")?;
    scheme.eq_ignore_ascii_case("ssh").then_some(rest)
}

/// Opens the run's one SSH connection (`DEPLOYCTL_SSH_CONFIG` replaces ~/.ssh/config).
async fn start_ssh(
    host: &str,
    rest: &str,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Arc<ssh::Master>, EngineError> {
    let unreachable = |reason: String| EngineError::Unreachable {
        host: host.to_string(),
        reason,
    };
    let target = ssh::Target::parse(rest).map_err(unreachable)?;
    let config = env("DEPLOYCTL_SSH_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    if let Some(file) = &config
        && !file.is_file()
    {
        return Err(unreachable(format!(
            "DEPLOYCTL_SSH_CONFIG names {}, which is not a file: point it at an ssh_config file \
             or unset it to use ~/.ssh/config",
            file.display()
        )));
    }
    ssh::Master::start(target, config)
        .await
        .map(Arc::new)
        .map_err(unreachable)
}

/// `open`, over the link's SSH connection when there is one.
pub(super) fn open_link(
    host: &str,
    link: &Link,
    version: &ClientVersion,
) -> Result<Docker, EngineError> {
    match link {
        Link::Direct(tls) => open(host, tls.as_ref(), version),
        Link::Ssh(master, forwarded) => ssh::docker(
            master.clone(),
            forwarded.as_deref(),
            REQUEST_TIMEOUT.as_secs(),
            version,
        )
        .map_err(|e| EngineError::Unreachable {
            host: host.to_string(),
            reason: error_chain(&e),
        }),
    }
}

/// Client certificates for TLS, when the environment asks for verification.
#[derive(Debug, Clone)]
pub(super) struct TlsFiles {
    pub(super) ca: PathBuf,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

pub(super) fn tls_settings(env: &dyn Fn(&str) -> Option<OsString>) -> Option<TlsFiles> {
    // The docker CLI treats any non-empty DOCKER_TLS_VERIFY as on.
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    set("DOCKER_TLS_VERIFY")?;
    let dir = match set("DOCKER_CERT_PATH") {
        Some(p) => PathBuf::from(p),
        None => match set("HOME") {
            Some(home) => Path::new(&home).join(".docker"),
            None => PathBuf::from(".docker"),
        },
    };
    Some(TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    })
}

/// Builds the client for `host` at `version`, without contacting the daemon. `ssh://` addresses
/// need their connection first: `open_link`.
pub(super) fn open(
    host: &str,
    tls: Option<&TlsFiles>,
    version: &ClientVersion,
) -> Result<Docker, EngineError> {
    let unreachable = |reason: String| EngineError::Unreachable {
        host: host.to_string(),
        reason,
    };
    let timeout = REQUEST_TIMEOUT.as_secs();
    let (scheme, rest) = match host.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        // A bare path is a socket, as the docker CLI reads it.
        None if host.starts_with('/') => ("unix".to_string(), host),
        None => {
            return Err(unreachable(format!(
                "`{host}` is not a Docker address; use unix:///path/to/docker.sock, tcp://HOST:PORT or https://HOST:PORT"
            )));
        }
    };
    let result = match (scheme.as_str(), tls) {
        ("unix", _) => Docker::connect_with_unix(rest, timeout, version),
        ("https", None) => {
            return Err(unreachable(
                "https:// needs client certificates: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH"
                    .to_string(),
            ));
        }
        ("tcp" | "https", Some(files)) => {
            for f in [&files.ca, &files.cert, &files.key] {
                if !f.is_file() {
                    return Err(unreachable(format!(
                        "TLS is on (DOCKER_TLS_VERIFY) but {} is missing; set DOCKER_CERT_PATH to the directory holding ca.pem, cert.pem and key.pem",
                        f.display()
                    )));
                }
            }
            // bollard builds its rustls config from the process-wide crypto provider; pin ring
            // so a second provider elsewhere in the dependency tree cannot make that ambiguous
            // (rustls panics then). An already installed provider is fine too.
            let _ = rustls::crypto::ring::default_provider().install_default();
            Docker::connect_with_ssl(
                &format!("tcp://{rest}"),
                &files.key,
                &files.cert,
                &files.ca,
                timeout,
                version,
            )
        }
        ("tcp" | "http", _) => {
            Docker::connect_with_http(&format!("tcp://{rest}"), timeout, version)
        }
        ("ssh", _) => {
            return Err(unreachable(
                "an ssh:// address is reached through its SSH connection (DockerEngine::connect)"
                    .to_string(),
            ));
        }
        (other, _) => {
            return Err(unreachable(format!(
                "the `{other}://` scheme is not supported; use unix://, tcp://, http://, https:// or ssh://"
            )));
        }
    };
    result.map_err(|e| match map_error(e, host) {
        EngineError::Unreachable { host, reason } => EngineError::Unreachable { host, reason },
        other => unreachable(other.to_string()),
    })
}

/// Finds the newest API version both sides speak. bollard's own `negotiate_version` asks at its
/// newest version, which an older daemon refuses outright ("client version X is too new.
/// Maximum supported API version is Y"); that answer names the version to use instead.
pub(super) async fn negotiate(docker: Docker, host: &str, link: &Link) -> EngineResult<Docker> {
    match with_deadline(host, docker.version()).await? {
        Ok(v) => {
            let server = v.api_version.as_deref().and_then(parse_version);
            match server {
                Some(server) if server < docker.client_version() => open_link(host, link, &server),
                _ => Ok(docker),
            }
        }
        Err(BollardError::DockerResponseServerError {
            status_code: 400,
            message,
        }) => {
            let Some(max) = max_supported_version(&message) else {
                return Err(EngineError::Api(message));
            };
            let docker = open_link(host, link, &max)?;
            // Confirm the daemon takes requests at that version.
            with_deadline(host, docker.version())
                .await?
                .map_err(|e| map_error(e, host))?;
            Ok(docker)
        }
        Err(e) => Err(map_error(e, host)),
    }
}

pub(super) async fn with_deadline<T>(
    host: &str,
    fut: impl std::future::Future<Output = T>,
) -> EngineResult<T> {
    tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| EngineError::Unreachable {
            host: host.to_string(),
            reason: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
        })
}

pub(super) fn parse_version(s: &str) -> Option<ClientVersion> {
    let (major, minor) = s.trim().split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

pub(super) fn max_supported_version(message: &str) -> Option<ClientVersion> {
    let (_, tail) = message.split_once("Maximum supported API version is")?;
    let word = tail.split_whitespace().next()?;
    parse_version(word.trim_end_matches(['.', ',', ')']))
}
