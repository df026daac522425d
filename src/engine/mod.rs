//! The container engine as deployctl needs it. `docker/` implements it over bollard; unit tests
//! of the orchestration may use a fake.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

pub mod docker;

pub use docker::DockerEngine;

/// Labels every object deployctl creates carries.
pub mod labels {
    pub const APP: &str = "deployctl.app";
    pub const ENV: &str = "deployctl.env";
    /// `app`, `proxy` or `lock`.
    pub const ROLE: &str = "deployctl.role";
    pub const COLOR: &str = "deployctl.color";
    pub const VERSION: &str = "deployctl.version";
    pub const DEPLOY_ID: &str = "deployctl.deploy-id";
    pub const CREATED: &str = "deployctl.created";
    pub const OWNER: &str = "deployctl.lock.owner";
    pub const HOST: &str = "deployctl.lock.host";
    pub const PID: &str = "deployctl.lock.pid";
    pub const REASON: &str = "deployctl.lock.reason";
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the Docker Engine at {host}: {reason}")]
    Unreachable { host: String, reason: String },
    /// The object already exists (HTTP 409): how locks detect a holder.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("image build failed: {0}")]
    Build(String),
    #[error("image push failed: {0}")]
    Push(String),
    #[error("docker: {0}")]
    Api(String),
}

pub type EngineResult<T> = Result<T, EngineError>;

#[derive(Debug, Clone, Serialize)]
pub struct EngineInfo {
    /// What the daemon address resolved to, for messages.
    pub host: String,
    pub server_version: String,
    /// The negotiated API version.
    pub api_version: String,
}

#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// Directory sent as the build context (honouring `.dockerignore`).
    pub context_dir: PathBuf,
    /// Dockerfile path relative to the context.
    pub dockerfile: PathBuf,
    /// `name:tag`.
    pub tag: String,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    No,
    UnlessStopped,
    Always,
}

#[derive(Debug, Clone)]
pub struct HealthcheckSpec {
    /// `["CMD", ...]` argv form.
    pub test: Vec<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
}

#[derive(Debug, Clone)]
pub struct PortPublish {
    /// Host address; empty for all interfaces.
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
}

#[derive(Debug, Clone)]
pub struct VolumeMount {
    pub volume: String,
    pub target: String,
}

#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// `KEY=value` pairs; never logged.
    pub env: Vec<(String, String)>,
    pub cmd: Option<Vec<String>>,
    /// Network to attach at creation, with extra DNS aliases there.
    pub network: Option<String>,
    pub network_aliases: Vec<String>,
    pub ports: Vec<PortPublish>,
    pub restart_policy: RestartPolicy,
    pub healthcheck: Option<HealthcheckSpec>,
    pub mounts: Vec<VolumeMount>,
    /// Grace period between SIGTERM and SIGKILL on stop.
    pub stop_timeout: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ContainerState {
    /// Docker's status word: created, running, restarting, exited, paused, dead.
    pub status: String,
    pub running: bool,
    pub exit_code: i64,
    pub oom_killed: bool,
    pub restart_count: i64,
    /// RFC 3339, as Docker reports it; None when never started.
    pub started_at: Option<String>,
    /// Docker HEALTHCHECK status when one is configured: starting, healthy, unhealthy.
    pub health: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    /// The image reference the container was created from.
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// Network name → IP address of the container on it.
    pub networks: BTreeMap<String, String>,
    /// RFC 3339 creation time.
    pub created: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub id: String,
    pub tags: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Creation time, seconds since the Unix epoch.
    pub created: i64,
}

#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Credentials for a registry push.
#[derive(Clone)]
pub struct RegistryAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RegistryAuth {{ username: {:?}, password: *** }}",
            self.username
        )
    }
}

/// Receives lines as they arrive from a long-running call (build log, exec output).
pub type LineSink<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// An image as a tar stream (`docker save` of one engine, `docker load` into another).
pub type ImageTar = futures_util::stream::BoxStream<'static, EngineResult<bytes::Bytes>>;

#[async_trait]
pub trait Engine: Send + Sync {
    /// Reachability and the negotiated API version.
    async fn ping(&self) -> EngineResult<EngineInfo>;

    async fn image_exists(&self, reference: &str) -> EngineResult<bool>;
    /// `docker save` of one image (with its tag) as a stream: how a fleet ships an image from
    /// the engine that built it to the others without a registry.
    fn export_image(&self, reference: &str) -> ImageTar;
    /// `docker load` of a stream `export_image` produced, on this engine.
    async fn import_image(&self, tar: ImageTar) -> EngineResult<()>;
    /// Builds from a directory, streaming the build log to `log`. Returns the built image's id,
    /// which (unlike the tag) no later build can move.
    async fn build_image(&self, req: &BuildRequest, log: LineSink<'_>) -> EngineResult<String>;
    /// Builds from a ready tar of a context (used for the proxy image).
    async fn build_image_from_tar(
        &self,
        context_tar: Vec<u8>,
        tag: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()>;
    /// Tags `source` as `target` (`registry/repository:tag`) and pushes it, streaming progress.
    async fn push_image(
        &self,
        source: &str,
        target: &str,
        auth: Option<&RegistryAuth>,
        log: LineSink<'_>,
    ) -> EngineResult<()>;
    /// Images carrying all the given labels.
    async fn list_images(&self, labels: &[(&str, &str)]) -> EngineResult<Vec<ImageInfo>>;
    /// Removes an image by reference or id; NotFound when absent.
    async fn remove_image(&self, reference: &str) -> EngineResult<()>;

    /// Creates a bridge network unless it exists.
    async fn ensure_network(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()>;
    async fn remove_network(&self, name: &str) -> EngineResult<()>;
    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> EngineResult<()>;
    async fn remove_volume(&self, name: &str) -> EngineResult<()>;

    /// Creates without starting; `Conflict` when the name is taken. Returns the id.
    async fn create_container(&self, spec: &ContainerSpec) -> EngineResult<String>;
    async fn start_container(&self, name_or_id: &str) -> EngineResult<()>;
    /// Stops a running container; Ok when it is already stopped.
    async fn stop_container(&self, name_or_id: &str, timeout: Duration) -> EngineResult<()>;
    async fn restart_container(&self, name_or_id: &str, timeout: Duration) -> EngineResult<()>;
    /// Removes (with `force`, even a running one); NotFound when absent.
    async fn remove_container(&self, name_or_id: &str, force: bool) -> EngineResult<()>;
    /// None when no such container.
    async fn inspect_container(&self, name_or_id: &str) -> EngineResult<Option<ContainerInfo>>;
    /// Containers, running or not, carrying all the given labels.
    async fn list_containers(&self, labels: &[(&str, &str)]) -> EngineResult<Vec<ContainerInfo>>;

    /// Runs a command in a running container and waits for it; stdout lines also go to `on_stdout`.
    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        on_stdout: LineSink<'_>,
    ) -> EngineResult<ExecOutput> {
        self.exec_with_stdin(container, cmd, None, on_stdout).await
    }
    /// [`Engine::exec`] that first writes `stdin` to the command's standard input. Payloads go
    /// this way rather than in `cmd`: argv shows in `ps` and `docker events`, and is size-limited.
    async fn exec_with_stdin(
        &self,
        container: &str,
        cmd: &[String],
        stdin: Option<Vec<u8>>,
        on_stdout: LineSink<'_>,
    ) -> EngineResult<ExecOutput>;
    /// The last `lines` lines of the container's stdout and stderr, oldest first.
    async fn logs_tail(&self, container: &str, lines: usize) -> EngineResult<Vec<String>>;

    /// The id of the image `reference` names now; None when there is none.
    async fn image_id(&self, reference: &str) -> EngineResult<Option<String>>;
    /// Labels of the network named exactly `name`; None when there is none.
    async fn network_labels(&self, name: &str) -> EngineResult<Option<BTreeMap<String, String>>>;
    /// Labels of the volume `name`; None when there is none.
    async fn volume_labels(&self, name: &str) -> EngineResult<Option<BTreeMap<String, String>>>;
}
