//! `Engine` over bollard.

mod context;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, HealthConfig, HostConfig,
    Mount, MountType, NetworkCreateRequest, NetworkingConfig, PortBinding,
    RestartPolicy as BollardRestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder,
    PushImageOptionsBuilder, RemoveContainerOptionsBuilder, RemoveImageOptionsBuilder,
    RemoveVolumeOptions, RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
    TagImageOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, ClientVersion, Docker};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{
    BuildRequest, ContainerInfo, ContainerSpec, ContainerState, Engine, EngineError, EngineInfo,
    EngineResult, ExecOutput, ImageInfo, LineSink, RegistryAuth, RestartPolicy,
};

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
}

impl DockerEngine {
    /// Connects to `host` (config's `docker.host`), else `DOCKER_HOST`, else the local socket,
    /// and negotiates the API version. `unix://`, `tcp://`, `http://` and `https://` are
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

/// Explicit argument, then `DOCKER_HOST`, then the local socket; empty values count as unset.
fn resolve_host(arg: Option<&str>, env: Option<&str>) -> String {
    arg.map(str::trim)
        .filter(|h| !h.is_empty())
        .or(env.map(str::trim).filter(|h| !h.is_empty()))
        .unwrap_or(DEFAULT_HOST)
        .to_string()
}

/// `connect` with the environment passed in, so tests need not change the process's.
async fn connect_with(
    host: Option<&str>,
    env: &dyn Fn(&str) -> Option<OsString>,
) -> Result<DockerEngine, EngineError> {
    let env_host = env("DOCKER_HOST").map(|h| h.to_string_lossy().into_owned());
    let host = resolve_host(host, env_host.as_deref());
    let tls = tls_settings(env);
    let docker = open(&host, tls.as_ref(), API_DEFAULT_VERSION)?;
    // Whatever goes wrong before the first answer means the engine cannot be used: one error
    // kind (and exit code) for all of it.
    let docker = negotiate(docker, &host, tls.as_ref())
        .await
        .map_err(|e| match e {
            EngineError::Unreachable { .. } => e,
            other => EngineError::Unreachable {
                host: host.clone(),
                reason: other.to_string(),
            },
        })?;
    Ok(DockerEngine { docker, host })
}

/// Client certificates for TLS, when the environment asks for verification.
#[derive(Debug, Clone)]
struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn tls_settings(env: &dyn Fn(&str) -> Option<OsString>) -> Option<TlsFiles> {
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

/// Builds the client for `host` at `version`, without contacting the daemon.
fn open(
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
        (other, _) => {
            return Err(unreachable(format!(
                "the `{other}://` scheme is not supported; use unix://, tcp://, http:// or https://"
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
async fn negotiate(docker: Docker, host: &str, tls: Option<&TlsFiles>) -> EngineResult<Docker> {
    match with_deadline(host, docker.version()).await? {
        Ok(v) => {
            let server = v.api_version.as_deref().and_then(parse_version);
            match server {
                Some(server) if server < docker.client_version() => open(host, tls, &server),
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
            let docker = open(host, tls, &max)?;
            // Confirm the daemon takes requests at that version.
            with_deadline(host, docker.version())
                .await?
                .map_err(|e| map_error(e, host))?;
            Ok(docker)
        }
        Err(e) => Err(map_error(e, host)),
    }
}

async fn with_deadline<T>(
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

fn parse_version(s: &str) -> Option<ClientVersion> {
    let (major, minor) = s.trim().split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

fn max_supported_version(message: &str) -> Option<ClientVersion> {
    let (_, tail) = message.split_once("Maximum supported API version is")?;
    let word = tail.split_whitespace().next()?;
    parse_version(word.trim_end_matches(['.', ',', ')']))
}

/// `error: source: source...`, since bollard's own messages hide the cause
/// ("client error (Connect)").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
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

fn is_connect_failure(e: &(dyn std::error::Error + 'static)) -> bool {
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
fn map_error(e: BollardError, host: &str) -> EngineError {
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
fn build_error(e: BollardError, host: &str) -> EngineError {
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

/// Splits a byte stream into lines; a line may arrive across several chunks.
#[derive(Default)]
struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, chunk: &[u8], mut emit: impl FnMut(&str)) {
        self.pending.extend_from_slice(chunk);
        while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=pos).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]);
            emit(text.strip_suffix('\r').unwrap_or(&text));
        }
    }

    fn finish(&mut self, mut emit: impl FnMut(&str)) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            let text = String::from_utf8_lossy(&line);
            emit(text.strip_suffix('\r').unwrap_or(&text));
        }
    }
}

fn label_filters(labels: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let mut filters = HashMap::new();
    if !labels.is_empty() {
        filters.insert(
            "label".to_string(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        );
    }
    filters
}

fn to_hash(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Whole seconds, rounded up so a sub-second grace period is not turned into none.
fn secs_ceil(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(s).unwrap_or(i32::MAX)
}

fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    for p in &spec.ports {
        let key = format!("{}/tcp", p.container_port);
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.clone()),
                host_port: Some(p.host_port.to_string()),
            });
    }

    let restart = match spec.restart_policy {
        RestartPolicy::No => RestartPolicyNameEnum::NO,
        RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
    };

    let mounts: Vec<Mount> = spec
        .mounts
        .iter()
        .map(|m| Mount {
            typ: Some(MountType::VOLUME),
            source: Some(m.volume.clone()),
            target: Some(m.target.clone()),
            ..Default::default()
        })
        .collect();

    let healthcheck = spec.healthcheck.as_ref().map(|h| {
        // Accept the argv with or without Docker's leading form word.
        let test = match h.test.first().map(String::as_str) {
            Some("CMD" | "CMD-SHELL" | "NONE") => h.test.clone(),
            _ => std::iter::once("CMD".to_string())
                .chain(h.test.iter().cloned())
                .collect(),
        };
        HealthConfig {
            test: Some(test),
            interval: Some(nanos(h.interval)),
            timeout: Some(nanos(h.timeout)),
            retries: Some(i64::from(h.retries)),
            ..Default::default()
        }
    });

    let networking_config = spec.network.as_ref().map(|net| NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            net.clone(),
            EndpointSettings {
                aliases: (!spec.network_aliases.is_empty()).then(|| spec.network_aliases.clone()),
                ..Default::default()
            },
        )])),
    });

    ContainerCreateBody {
        image: Some(spec.image.clone()),
        labels: Some(to_hash(&spec.labels)),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        cmd: spec.cmd.clone(),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        healthcheck,
        stop_timeout: spec.stop_timeout.map(|d| i64::from(secs_ceil(d))),
        host_config: Some(HostConfig {
            // Attach to the named network only, not also to the default bridge.
            network_mode: spec.network.clone(),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            restart_policy: Some(BollardRestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            mounts: (!mounts.is_empty()).then_some(mounts),
            ..Default::default()
        }),
        networking_config,
        ..Default::default()
    }
}

fn container_info(r: ContainerInspectResponse) -> ContainerInfo {
    let config = r.config.unwrap_or_default();
    let state = r.state.unwrap_or_default();
    let started_at = state
        .started_at
        .filter(|s| !s.is_empty() && !s.starts_with("0001-01-01"));
    let networks = r
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| (name, ep.ip_address.unwrap_or_default()))
        .collect();
    ContainerInfo {
        id: r.id.unwrap_or_default(),
        name: r
            .name
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default(),
        image: config.image.or(r.image).unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        state: ContainerState {
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code.unwrap_or(0),
            oom_killed: state.oom_killed.unwrap_or(false),
            restart_count: r.restart_count.unwrap_or(0),
            started_at,
            health: state
                .health
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|s| !s.is_empty() && s != "none"),
        },
        networks,
        created: r.created.unwrap_or_default(),
    }
}

/// RFC 3339 timestamps with a fraction of any length, made comparable as strings.
fn created_key(created: &str) -> String {
    match created.split_once('.') {
        Some((secs, rest)) => {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            format!("{secs}.{digits:0<9}")
        }
        None => created.trim_end_matches('Z').to_string(),
    }
}

#[async_trait]
impl Engine for DockerEngine {
    async fn ping(&self) -> EngineResult<EngineInfo> {
        let v = with_deadline(&self.host, self.docker.version())
            .await?
            .map_err(|e| self.err(e))?;
        Ok(EngineInfo {
            host: self.host.clone(),
            server_version: v.version.unwrap_or_default(),
            api_version: self.docker.client_version().to_string(),
        })
    }

    async fn image_exists(&self, reference: &str) -> EngineResult<bool> {
        match self.docker.inspect_image(reference).await {
            Ok(_) => Ok(true),
            Err(e) => match self.err(e) {
                EngineError::NotFound(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn build_image(&self, req: &BuildRequest, log: LineSink<'_>) -> EngineResult<String> {
        let (dir, dockerfile) = (req.context_dir.clone(), req.dockerfile.clone());
        // The classic builder runs one step per API label; appended to the final stage as one
        // LABEL line they cost one step. A `target` stage may not be the last one: API labels then.
        let label_line = (req.target.is_none() && !req.labels.is_empty())
            .then(|| label_instruction(&req.labels));
        let api_labels = if label_line.is_some() {
            BTreeMap::new()
        } else {
            req.labels.clone()
        };
        let ctx = tokio::task::spawn_blocking(move || {
            context::build_context(&dir, &dockerfile, label_line.as_deref())
        })
        .await
        .map_err(|e| EngineError::Build(format!("preparing the build context: {e}")))?
        .map_err(EngineError::Build)?;
        let mut options = BuildImageOptionsBuilder::new()
            .dockerfile(&ctx.dockerfile)
            .t(&req.tag)
            .rm(true)
            .forcerm(true)
            .buildargs(&to_hash(&req.args))
            .labels(&to_hash(&api_labels));
        if let Some(target) = &req.target {
            options = options.target(target);
        }
        match self.run_build(ctx.tar, options.build(), log).await? {
            Some(id) => Ok(id),
            // A daemon that does not say: the tag, read right away, is the best left.
            None => self
                .image_id(&req.tag)
                .await?
                .ok_or_else(|| EngineError::Build(format!("{} was not built", req.tag))),
        }
    }

    async fn build_image_from_tar(
        &self,
        context_tar: Vec<u8>,
        tag: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        let options = BuildImageOptionsBuilder::new()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .labels(&to_hash(labels))
            .build();
        self.run_build(context_tar, options, &|_| {})
            .await
            .map(|_| ())
    }

    async fn push_image(
        &self,
        source: &str,
        target: &str,
        auth: Option<&RegistryAuth>,
        log: LineSink<'_>,
    ) -> EngineResult<()> {
        // `registry:5000/team/web:tag`: the tag is after the last `:` that follows the last `/`.
        let (repo, tag) = match target.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, tag),
            _ => (target, "latest"),
        };
        let options = TagImageOptionsBuilder::new().repo(repo).tag(tag).build();
        self.docker
            .tag_image(source, Some(options))
            .await
            .map_err(|e| self.err(e))?;
        let credentials = auth.map(|a| bollard::auth::DockerCredentials {
            username: Some(a.username.clone()),
            password: Some(a.password.clone()),
            ..Default::default()
        });
        let docker = self.docker.clone().with_timeout(BUILD_TIMEOUT);
        let options = PushImageOptionsBuilder::new().tag(tag).build();
        let mut stream = docker.push_image(repo, Some(options), credentials);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| match self.err(e) {
                EngineError::Api(m) => EngineError::Push(m),
                other => other,
            })?;
            if let Some(detail) = info.error_detail {
                return Err(EngineError::Push(detail.message.unwrap_or_default()));
            }
            if let Some(status) = info.status.as_deref() {
                emit_nonblank(log, status);
            }
        }
        Ok(())
    }

    async fn list_images(&self, labels: &[(&str, &str)]) -> EngineResult<Vec<ImageInfo>> {
        let options = ListImagesOptionsBuilder::new()
            .all(false)
            .filters(&label_filters(labels))
            .build();
        let images = self
            .docker
            .list_images(Some(options))
            .await
            .map_err(|e| self.err(e))?;
        Ok(images
            .into_iter()
            .map(|i| ImageInfo {
                id: i.id,
                tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                labels: i.labels.into_iter().collect(),
                created: i.created,
            })
            .collect())
    }

    async fn remove_image(&self, reference: &str) -> EngineResult<()> {
        let options = RemoveImageOptionsBuilder::new()
            .force(false)
            .noprune(false)
            .build();
        self.docker
            .remove_image(reference, Some(options), None)
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        // Looked up by exact name in the list: inspecting by name would also match an id prefix,
        // and fails when a name is ambiguous.
        if !self.networks_named(name).await?.is_empty() {
            return Ok(());
        }
        let created = match self
            .docker
            .create_network(NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".to_string()),
                labels: Some(to_hash(labels)),
                ..Default::default()
            })
            .await
        {
            Ok(r) => r,
            // Someone else created it between our look and our create.
            Err(e) => {
                return match self.err(e) {
                    EngineError::Conflict(_) => Ok(()),
                    other => Err(other),
                };
            }
        };
        // Daemons before API 1.44 create a second network of the same name when asked (the
        // CheckDuplicate flag is gone from current clients). Two racing creators keep the oldest
        // network and drop their own duplicate, so a name keeps meaning one network.
        let same_name = self.networks_named(name).await?;
        let oldest = same_name
            .iter()
            .filter_map(|n| Some((created_key(n.created.as_deref()?), n.id.clone()?)))
            .min();
        let ours_is_duplicate =
            !created.warning.is_empty() || oldest.is_some_and(|(_, id)| id != created.id);
        if same_name.len() > 1 && ours_is_duplicate {
            match self.docker.remove_network(&created.id).await {
                Ok(()) => {}
                Err(e) => match self.err(e) {
                    EngineError::NotFound(_) => {}
                    other => return Err(other),
                },
            }
        }
        Ok(())
    }

    async fn remove_network(&self, name: &str) -> EngineResult<()> {
        self.docker
            .remove_network(name)
            .await
            .map_err(|e| self.err(e))
    }

    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        // Creating a volume that exists returns the existing one: idempotent by design.
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_string()),
                driver: Some("local".to_string()),
                labels: Some(to_hash(labels)),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    async fn remove_volume(&self, name: &str) -> EngineResult<()> {
        self.docker
            .remove_volume(name, None::<RemoveVolumeOptions>)
            .await
            .map_err(|e| self.err(e))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> EngineResult<String> {
        let options = CreateContainerOptionsBuilder::new()
            .name(&spec.name)
            .build();
        self.docker
            .create_container(Some(options), create_body(spec))
            .await
            .map(|r| r.id)
            .map_err(|e| self.err(e))
    }

    async fn start_container(&self, name_or_id: &str) -> EngineResult<()> {
        // 304 (already running) is a success in bollard.
        self.docker
            .start_container(name_or_id, None)
            .await
            .map_err(|e| self.err(e))
    }

    async fn stop_container(&self, name_or_id: &str, timeout: Duration) -> EngineResult<()> {
        let options = StopContainerOptionsBuilder::new()
            .t(secs_ceil(timeout))
            .build();
        // 304 (already stopped) is a success in bollard.
        self.with_timeout(timeout)
            .stop_container(name_or_id, Some(options))
            .await
            .map_err(|e| self.err(e))
    }

    async fn restart_container(&self, name_or_id: &str, timeout: Duration) -> EngineResult<()> {
        let options = RestartContainerOptionsBuilder::new()
            .t(secs_ceil(timeout))
            .build();
        self.with_timeout(timeout)
            .restart_container(name_or_id, Some(options))
            .await
            .map_err(|e| self.err(e))
    }

    async fn remove_container(&self, name_or_id: &str, force: bool) -> EngineResult<()> {
        // `v`: anonymous volumes of the image's VOLUME lines would otherwise pile up with every
        // release; named volumes are never removed by it.
        let options = RemoveContainerOptionsBuilder::new()
            .force(force)
            .v(true)
            .build();
        self.docker
            .remove_container(name_or_id, Some(options))
            .await
            .map_err(|e| self.err(e))
    }

    async fn inspect_container(&self, name_or_id: &str) -> EngineResult<Option<ContainerInfo>> {
        match self.docker.inspect_container(name_or_id, None).await {
            Ok(r) => Ok(Some(container_info(r))),
            Err(e) => match self.err(e) {
                EngineError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn list_containers(&self, labels: &[(&str, &str)]) -> EngineResult<Vec<ContainerInfo>> {
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&label_filters(labels))
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.err(e))?;
        // The list lacks restart counts, exit codes and start times: inspect each one. A
        // container removed in between is simply no longer listed.
        let mut out = Vec::with_capacity(summaries.len());
        for s in summaries {
            let Some(id) = s.id else { continue };
            if let Some(info) = self.inspect_container(&id).await? {
                out.push(info);
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    async fn exec_with_stdin(
        &self,
        container: &str,
        cmd: &[String],
        stdin: Option<Vec<u8>>,
        on_stdout: LineSink<'_>,
    ) -> EngineResult<ExecOutput> {
        let created = self
            .docker
            .create_exec(
                container,
                CreateExecOptions {
                    attach_stdin: Some(stdin.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    cmd: Some(cmd.to_vec()),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.err(e))?;
        let started = self
            .docker
            .start_exec(&created.id, None)
            .await
            .map_err(|e| self.err(e))?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let StartExecResults::Attached {
            mut output,
            mut input,
        } = started
        {
            if let Some(bytes) = stdin {
                // The commands that take input read it before they print anything, so writing it
                // all first cannot block on their output. Closing our side ends their stdin.
                input
                    .write_all(&bytes)
                    .await
                    .map_err(|e| EngineError::Api(format!("exec stdin in {container}: {e}")))?;
                let _ = input.flush().await;
                let _ = input.shutdown().await;
            }
            let mut lines = LineSplitter::default();
            while let Some(chunk) = output.next().await {
                match chunk.map_err(|e| self.err(e))? {
                    bollard::container::LogOutput::StdOut { message }
                    | bollard::container::LogOutput::Console { message } => {
                        stdout.extend_from_slice(&message);
                        lines.push(&message, |l| on_stdout(l));
                    }
                    bollard::container::LogOutput::StdErr { message } => {
                        stderr.extend_from_slice(&message);
                    }
                    bollard::container::LogOutput::StdIn { .. } => {}
                }
            }
            lines.finish(|l| on_stdout(l));
        }
        // The stream can end a moment before the daemon records the exit code.
        let mut exit_code = None;
        for _ in 0..100 {
            let inspect = self
                .docker
                .inspect_exec(&created.id)
                .await
                .map_err(|e| self.err(e))?;
            if inspect.running != Some(true) {
                exit_code = inspect.exit_code;
                if exit_code.is_some() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let exit_code = exit_code.ok_or_else(|| {
            EngineError::Api(format!(
                "exec in {container} finished but the daemon reported no exit code"
            ))
        })?;
        Ok(ExecOutput {
            exit_code,
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        })
    }

    async fn logs_tail(&self, container: &str, lines: usize) -> EngineResult<Vec<String>> {
        if lines == 0 {
            return Ok(Vec::new());
        }
        let options = LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .timestamps(false)
            .follow(false)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.docker.logs(container, Some(options));
        // stdout and stderr frames interleave; each keeps its own partial line.
        let mut out = Vec::new();
        let mut out_split = LineSplitter::default();
        let mut err_split = LineSplitter::default();
        while let Some(chunk) = stream.next().await {
            match chunk.map_err(|e| self.err(e))? {
                bollard::container::LogOutput::StdErr { message } => {
                    err_split.push(&message, |l| out.push(l.to_string()));
                }
                bollard::container::LogOutput::StdOut { message }
                | bollard::container::LogOutput::Console { message } => {
                    out_split.push(&message, |l| out.push(l.to_string()));
                }
                bollard::container::LogOutput::StdIn { .. } => {}
            }
        }
        out_split.finish(|l| out.push(l.to_string()));
        err_split.finish(|l| out.push(l.to_string()));
        // The daemon already cut at `lines`, but a tail through partial frames may add one.
        let skip = out.len().saturating_sub(lines);
        Ok(out.split_off(skip))
    }

    async fn image_id(&self, reference: &str) -> EngineResult<Option<String>> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => Ok(i.id),
            Err(e) => match self.err(e) {
                EngineError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }

    async fn network_labels(&self, name: &str) -> EngineResult<Option<BTreeMap<String, String>>> {
        Ok(self
            .networks_named(name)
            .await?
            .into_iter()
            .next()
            .map(|n| n.labels.unwrap_or_default().into_iter().collect()))
    }

    async fn volume_labels(&self, name: &str) -> EngineResult<Option<BTreeMap<String, String>>> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(v.labels.into_iter().collect())),
            Err(e) => match self.err(e) {
                EngineError::NotFound(_) => Ok(None),
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_resolution_prefers_argument_then_env_then_socket() {
        assert_eq!(
            resolve_host(Some("tcp://a:1"), Some("tcp://b:2")),
            "tcp://a:1"
        );
        assert_eq!(resolve_host(Some("  "), Some("tcp://b:2")), "tcp://b:2");
        assert_eq!(resolve_host(None, None), DEFAULT_HOST);
        assert_eq!(resolve_host(None, Some("")), DEFAULT_HOST);
    }

    fn fake_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    #[test]
    fn tls_follows_the_docker_cli_variables() {
        assert!(tls_settings(&fake_env(&[])).is_none());
        assert!(tls_settings(&fake_env(&[("DOCKER_TLS_VERIFY", "")])).is_none());
        let tls = tls_settings(&fake_env(&[
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", "/certs"),
        ]))
        .expect("tls on");
        assert_eq!(tls.ca, Path::new("/certs/ca.pem"));
        assert_eq!(tls.cert, Path::new("/certs/cert.pem"));
        assert_eq!(tls.key, Path::new("/certs/key.pem"));
        let tls = tls_settings(&fake_env(&[
            ("DOCKER_TLS_VERIFY", "1"),
            ("HOME", "/home/u"),
        ]))
        .expect("tls on");
        assert_eq!(tls.ca, Path::new("/home/u/.docker/ca.pem"));
    }

    #[tokio::test]
    async fn tls_without_certificates_is_a_clear_unreachable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert_path = dir.path().to_string_lossy().into_owned();
        let env = fake_env(&[
            ("DOCKER_HOST", "tcp://127.0.0.1:1"),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", &cert_path),
        ]);
        match connect_with(None, &env).await {
            Err(EngineError::Unreachable { host, reason }) => {
                assert_eq!(host, "tcp://127.0.0.1:1");
                assert!(reason.contains("ca.pem"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_failed_tls_handshake_is_unreachable_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            std::fs::write(dir.path().join(f), "").expect("write");
        }
        // A peer that accepts and hangs up instead of speaking TLS.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                drop(conn);
            }
        });
        let host = format!("tcp://127.0.0.1:{port}");
        let cert_path = dir.path().to_string_lossy().into_owned();
        let env = fake_env(&[("DOCKER_TLS_VERIFY", "1"), ("DOCKER_CERT_PATH", &cert_path)]);
        let started = std::time::Instant::now();
        let result = connect_with(Some(&host), &env).await;
        server.abort();
        match result {
            Err(EngineError::Unreachable { host: h, .. }) => assert_eq!(h, host),
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < CONNECT_TIMEOUT + Duration::from_secs(1));
    }

    #[test]
    fn too_new_message_yields_the_maximum_version() {
        let v = max_supported_version(
            "client version 1.53 is too new. Maximum supported API version is 1.41",
        )
        .expect("parsed");
        assert_eq!(v.to_string(), "1.41");
        assert!(max_supported_version("something else").is_none());
        assert!(parse_version("1.x").is_none());
    }

    #[test]
    fn unsupported_addresses_are_rejected_clearly() {
        for host in [
            "ssh://me@box",
            "example.com:2375",
            "npipe:////./pipe/docker",
        ] {
            match open(host, None, API_DEFAULT_VERSION) {
                Err(EngineError::Unreachable { host: h, reason }) => {
                    assert_eq!(h, host);
                    assert!(!reason.is_empty());
                }
                other => panic!("{host}: {other:?}"),
            }
        }
    }

    #[test]
    fn server_errors_map_by_status() {
        let e = |code| BollardError::DockerResponseServerError {
            status_code: code,
            message: "msg".to_string(),
        };
        assert!(matches!(map_error(e(404), "h"), EngineError::NotFound(m) if m == "msg"));
        assert!(matches!(map_error(e(409), "h"), EngineError::Conflict(_)));
        assert!(matches!(map_error(e(500), "h"), EngineError::Api(m) if m == "msg"));
        assert!(matches!(
            map_error(BollardError::SocketNotFoundError("/x".into()), "h"),
            EngineError::Unreachable { .. }
        ));
        assert!(matches!(build_error(e(500), "h"), EngineError::Build(m) if m == "msg"));
    }

    #[test]
    fn lines_are_split_across_chunks() {
        let mut got = Vec::new();
        let mut s = LineSplitter::default();
        s.push(b"a\nb", |l| got.push(l.to_string()));
        s.push(b"c\r\n\nd", |l| got.push(l.to_string()));
        s.finish(|l| got.push(l.to_string()));
        assert_eq!(got, ["a", "bc", "", "d"]);
    }

    #[test]
    fn container_spec_maps_to_the_api_body() {
        use crate::engine::{HealthcheckSpec, PortPublish, VolumeMount};
        let spec = ContainerSpec {
            name: "n".into(),
            image: "img:1".into(),
            labels: BTreeMap::from([("a".into(), "b".into())]),
            env: vec![("K".into(), "v=1".into())],
            cmd: Some(vec!["serve".into()]),
            network: Some("net".into()),
            network_aliases: vec!["web".into()],
            ports: vec![PortPublish {
                host_ip: "127.0.0.1".into(),
                host_port: 8080,
                container_port: 80,
            }],
            restart_policy: RestartPolicy::UnlessStopped,
            healthcheck: Some(HealthcheckSpec {
                test: vec!["/app".into(), "check".into()],
                interval: Duration::from_millis(1500),
                timeout: Duration::from_secs(2),
                retries: 3,
            }),
            mounts: vec![VolumeMount {
                volume: "vol".into(),
                target: "/data".into(),
            }],
            stop_timeout: Some(Duration::from_millis(2500)),
        };
        let body = create_body(&spec);
        assert_eq!(body.env, Some(vec!["K=v=1".to_string()]));
        assert_eq!(body.stop_timeout, Some(3));
        let hc = body.healthcheck.expect("healthcheck");
        assert_eq!(
            hc.test,
            Some(vec!["CMD".into(), "/app".into(), "check".into()])
        );
        assert_eq!(hc.interval, Some(1_500_000_000));
        assert_eq!(hc.timeout, Some(2_000_000_000));
        let host = body.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("net"));
        let bindings = host.port_bindings.expect("ports");
        let b = &bindings["80/tcp"].as_ref().expect("binding")[0];
        assert_eq!(b.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(b.host_port.as_deref(), Some("8080"));
        assert_eq!(
            host.restart_policy.and_then(|r| r.name),
            Some(RestartPolicyNameEnum::UNLESS_STOPPED)
        );
        let ep = &body
            .networking_config
            .expect("net")
            .endpoints_config
            .expect("eps")["net"];
        assert_eq!(ep.aliases, Some(vec!["web".to_string()]));
    }

    #[test]
    fn created_keys_compare_across_fraction_lengths() {
        assert!(
            created_key("2024-01-01T00:00:00.5Z") > created_key("2024-01-01T00:00:00.123456789Z")
        );
    }
}
