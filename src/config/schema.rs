//! The typed configuration: `deploy.toml` merged with `environments/<env>.toml`.
//!
//! Every struct rejects unknown keys and every field has a documented default, so a minimal
//! config is `[app] name = "web"`. Doc comments become the JSON Schema descriptions
//! (`deployctl config --schema`), so keep them short and user-facing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::listen::ListenAddr;
pub use super::notify::{Notify, NotifyEvent, NotifyKind};
use super::rules;
pub use super::units::{ByteSize, Duration};

/// The whole configuration of one application in one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The application being deployed.
    pub app: App,
    /// How to reach the Docker Engine.
    #[serde(default)]
    pub docker: DockerConfig,
    /// Git checks and how the release version is derived.
    #[serde(default)]
    pub git: Git,
    /// Checks that must pass before anything changes.
    #[serde(default)]
    pub prerequisites: Prerequisites,
    /// Test commands run before the image is built.
    #[serde(default)]
    pub test: Test,
    /// How the image is built.
    #[serde(default)]
    pub build: Build,
    /// Where built images are pushed (optional).
    #[serde(default)]
    pub registry: Registry,
    /// Release handling: retention, stop and drain times, locking.
    #[serde(default)]
    pub deploy: DeploySettings,
    /// The built-in proxy that owns the public port and switches traffic.
    #[serde(default)]
    pub proxy: Proxy,
    /// When a new release counts as healthy.
    #[serde(default)]
    pub health: Health,
    /// The watch window after the switch.
    #[serde(default)]
    pub verify: Verify,
    /// What happens when a deploy fails after the switch.
    #[serde(default)]
    pub rollback: Rollback,
    /// Commands run at fixed points of a deploy (argv, never a shell unless `shell = true`).
    #[serde(default)]
    pub hooks: Hooks,
    /// Notification targets (`[[notify]]`).
    #[serde(default)]
    pub notify: Vec<Notify>,
}

/// The application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// Name used in container, image, network and lock names: lowercase letters, digits, `-`, `_`, `.`.
    #[serde(deserialize_with = "rules::app_name")]
    pub name: String,
    /// The port the application listens on inside its container.
    #[serde(default = "default_app_port", deserialize_with = "rules::port")]
    #[schemars(range(min = 1))]
    pub port: u16,
    /// Environment variables passed to the application container.
    #[serde(default, deserialize_with = "rules::env_map")]
    pub env: BTreeMap<String, String>,
    /// Names in `app.env` whose values are secret: redacted wherever printed.
    #[serde(default)]
    pub secret_env: Vec<String>,
}

/// Docker Engine access.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// Engine address (`unix:///var/run/docker.sock`, `tcp://host:2376`, `ssh://user@host`). Default: `DOCKER_HOST`, then the local socket.
    #[serde(default)]
    pub host: Option<String>,
    /// A fleet: several engines serving this environment (`ssh://deploy@web1`, …), each with its
    /// own proxy. A deploy builds once on the first, ships the image to the others and switches
    /// them together. Exclusive with `host`.
    #[serde(default, deserialize_with = "rules::docker_hosts")]
    pub hosts: Vec<String>,
}

impl DockerConfig {
    /// The engines of this environment in the order they are locked and listed: `hosts`, or the
    /// one `host` (None: `DOCKER_HOST`, then the local socket).
    pub fn engines(&self) -> Vec<Option<String>> {
        if self.hosts.is_empty() {
            vec![self.host.clone()]
        } else {
            self.hosts.iter().cloned().map(Some).collect()
        }
    }
}

/// Git checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Git {
    /// Refuse to deploy with uncommitted changes. When false, the version gets a `-dirty` suffix.
    #[serde(default = "yes")]
    pub require_clean: bool,
    /// Branches allowed to deploy (globs such as `release/*`). Empty: any branch.
    #[serde(default, deserialize_with = "rules::branch_globs")]
    pub branches: Vec<String>,
    /// Require HEAD to be pushed to its upstream.
    #[serde(default)]
    pub require_pushed: bool,
}

/// Prerequisite checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Prerequisites {
    /// Tools that must be on PATH, with optional version constraints.
    #[serde(default)]
    pub tools: Vec<Tool>,
    /// A dotenv file (relative to deploy.toml). Its values feed `${VAR}` and are always secret.
    #[serde(default)]
    pub env_file: Option<PathBuf>,
    /// Variables that must be set in the process environment or the env file.
    #[serde(default)]
    pub required_env: Vec<String>,
    /// Minimum free disk space on the Docker data volume, such as `2GiB`.
    #[serde(default)]
    pub min_free_disk: Option<ByteSize>,
}

/// A required tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    /// Program name looked up on PATH.
    #[serde(deserialize_with = "rules::tool_name")]
    pub name: String,
    /// Semver requirement, such as `>= 18.17.0`.
    #[serde(default, deserialize_with = "rules::version_req")]
    pub version: Option<String>,
    /// Arguments that make the tool print its version.
    #[serde(default = "default_version_args")]
    pub version_args: Vec<String>,
}

/// Test commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Test {
    /// Commands run in order; the first failure stops the deploy.
    #[serde(default)]
    pub commands: Vec<CommandSpec>,
    /// Time limit for each command.
    #[serde(default = "default_test_timeout")]
    pub timeout: Duration,
}

/// Image build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// Build context directory, relative to deploy.toml.
    #[serde(default = "default_context")]
    pub context: PathBuf,
    /// Dockerfile path, relative to the context.
    #[serde(default = "default_dockerfile")]
    pub dockerfile: PathBuf,
    /// Build arguments.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
    /// Names in `build.args` whose values are secret.
    #[serde(default)]
    pub secret_args: Vec<String>,
    /// Target stage of a multi-stage Dockerfile.
    #[serde(default)]
    pub target: Option<String>,
    /// Build on the Docker Engine of the machine running deployctl (`DOCKER_HOST`, else the
    /// local socket) and ship the image to every host (`docker.host` or `docker.hosts`) that
    /// lacks it, without a registry. Default: build on the (first) host.
    #[serde(default)]
    pub local: bool,
}

/// A registry that receives every built image (`<server>/<repository>:<version>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registry {
    /// Registry address such as `registry.example.com` or `127.0.0.1:5000`. None: no push.
    #[serde(default, deserialize_with = "rules::registry_server")]
    pub server: Option<String>,
    /// Repository in the registry. Default: `app.name`.
    #[serde(default, deserialize_with = "rules::repository")]
    pub repository: Option<String>,
    /// Environment variable holding the registry user name (no credentials when unset).
    #[serde(default = "default_registry_username_env")]
    pub username_env: String,
    /// Environment variable holding the registry password or token.
    #[serde(default = "default_registry_password_env")]
    pub password_env: String,
}

/// Release handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    /// Good releases whose containers and images are kept for rollback (at least 1).
    #[serde(
        default = "default_keep_releases",
        deserialize_with = "rules::at_least_one"
    )]
    #[schemars(range(min = 1))]
    pub keep_releases: u32,
    /// Grace period between SIGTERM and SIGKILL when a container stops.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: Duration,
    /// How long in-flight requests to the old release may finish after the switch.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Duration,
    /// A lock older than this is reported as stale and may be broken.
    #[serde(default = "default_lock_stale_after")]
    pub lock_stale_after: Duration,
    /// With `docker.hosts`: how many hosts start and health-gate the new release at a time
    /// (default: all at once). The switch is always on every host together.
    #[serde(default, deserialize_with = "rules::optional_at_least_one")]
    #[schemars(range(min = 1))]
    pub parallel: Option<u32>,
}

/// The built-in proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Proxy {
    /// Host address the proxy publishes: `PORT` or `IP:PORT` (a bare port may be an integer).
    #[serde(default = "default_listen")]
    pub listen: ListenAddr,
    /// Use this proxy image instead of building one from the deployctl binary.
    #[serde(default)]
    pub image: Option<String>,
    /// The URL users reach the app at, printed by deploy and status (default: derived from
    /// `docker.host` and `listen`).
    #[serde(default, deserialize_with = "rules::public_url")]
    pub public_url: Option<String>,
    /// A keep-alive client connection with no request in progress is closed after this long.
    #[serde(
        default = "default_proxy_idle_timeout",
        deserialize_with = "rules::positive"
    )]
    pub idle_timeout: Duration,
    /// A client must complete a request head within this long of starting it.
    #[serde(
        default = "default_proxy_header_read_timeout",
        deserialize_with = "rules::positive"
    )]
    pub header_read_timeout: Duration,
    /// Client connections open at once; beyond, new ones get a 503 and are closed.
    #[serde(
        default = "default_proxy_max_connections",
        deserialize_with = "rules::at_least_one"
    )]
    #[schemars(range(min = 1))]
    pub max_connections: u32,
    /// Serve Prometheus metrics (`GET /metrics`) on this host address, `PORT` or `IP:PORT`,
    /// such as `127.0.0.1:9464` (off when unset).
    #[serde(default)]
    pub metrics: Option<ListenAddr>,
}

/// Health gating.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// HTTP path polled on the new release.
    #[serde(
        default = "default_health_path",
        deserialize_with = "rules::health_path"
    )]
    pub path: String,
    /// Port polled inside the container. Default: `app.port`.
    #[serde(default, deserialize_with = "rules::opt_port")]
    pub port: Option<u16>,
    /// Host header sent with each check.
    #[serde(default)]
    pub host: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time between two checks.
    #[serde(
        default = "default_health_interval",
        deserialize_with = "rules::positive"
    )]
    pub interval: Duration,
    /// Time limit of one check; must be shorter than `deadline`.
    #[serde(
        default = "default_health_timeout",
        deserialize_with = "rules::positive"
    )]
    pub timeout: Duration,
    /// Consecutive passing checks before the release counts as healthy.
    #[serde(
        default = "default_healthy_threshold",
        deserialize_with = "rules::at_least_one"
    )]
    #[schemars(range(min = 1))]
    pub healthy_threshold: u32,
    /// Consecutive failing checks after which the release counts as unhealthy. Failures count
    /// from the release's first HTTP answer: refused connections while it starts do not.
    #[serde(
        default = "default_unhealthy_threshold",
        deserialize_with = "rules::at_least_one"
    )]
    #[schemars(range(min = 1))]
    pub unhealthy_threshold: u32,
    /// Time after the container starts during which failing checks do not count towards
    /// `unhealthy_threshold` (like Docker HEALTHCHECK's start period); `deadline` still applies.
    #[serde(default = "default_health_start_period")]
    pub start_period: Duration,
    /// Overall time allowed for the release to become healthy.
    #[serde(
        default = "default_health_deadline",
        deserialize_with = "rules::positive"
    )]
    pub deadline: Duration,
    /// Status codes that count as passing.
    #[serde(
        default = "default_expect_status",
        deserialize_with = "rules::status_codes"
    )]
    pub expect_status: Vec<u16>,
    /// A substring the response body must contain.
    #[serde(default)]
    pub expect_body: Option<String>,
    /// A JSON value the body must hold at a JSON pointer.
    #[serde(default)]
    pub expect_json: Option<ExpectJson>,
    /// A Docker HEALTHCHECK command for the container, as argv (`["/app", "--check"]`).
    #[serde(default, deserialize_with = "rules::docker_cmd")]
    pub docker_cmd: Option<Vec<String>>,
}

/// Equality of the JSON value at `pointer` with `equals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectJson {
    /// RFC 6901 pointer, such as `/status`.
    #[serde(deserialize_with = "rules::json_pointer")]
    pub pointer: String,
    /// Expected value; compared with the JSON value (strings as-is, others by their JSON text).
    pub equals: String,
}

/// The post-switch watch window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// How long to watch the new release after the switch; `0s` skips it.
    #[serde(default = "default_verify_window")]
    pub window: Duration,
    /// Largest share of 5xx or failed proxied requests (0.0 to 1.0).
    #[serde(default = "default_max_error_rate", deserialize_with = "rules::share")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: f64,
    /// Largest p95 latency of proxied requests.
    #[serde(default = "default_max_p95_latency")]
    pub max_p95_latency: Duration,
}

/// Rollback behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// Switch back to the previous release at once when the verify window fails.
    #[serde(default = "yes")]
    pub automatic: bool,
}

/// Hook commands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Before the image build.
    #[serde(default)]
    pub pre_build: Vec<CommandSpec>,
    /// After the new release is healthy, before the switch; a failure aborts the deploy.
    #[serde(default)]
    pub pre_deploy: Vec<CommandSpec>,
    /// After a successful deploy.
    #[serde(default)]
    pub post_deploy: Vec<CommandSpec>,
    /// After a failed deploy.
    #[serde(default)]
    pub on_failure: Vec<CommandSpec>,
    /// After a rollback (automatic or manual).
    #[serde(default)]
    pub on_rollback: Vec<CommandSpec>,
}

/// A command: an argv array (`["npm", "test"]`), a string split like a shell would split words
/// but run without one (`"npm test"`), or a table `{ run = "...", shell = true }` to run through `sh -c`.
// Never empty: its `Deserialize` (with that rule) is in `rules.rs`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum CommandSpec {
    Argv(Vec<String>),
    Line(String),
    Table(CommandTable),
}

/// A command given as a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandTable {
    /// The command line.
    pub run: String,
    /// Run through `sh -c` instead of splitting into argv.
    #[serde(default)]
    pub shell: bool,
}

fn yes() -> bool {
    true
}
fn default_app_port() -> u16 {
    8080
}
fn default_version_args() -> Vec<String> {
    vec!["--version".into()]
}
fn default_test_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_context() -> PathBuf {
    PathBuf::from(".")
}
fn default_dockerfile() -> PathBuf {
    PathBuf::from("Dockerfile")
}
fn default_registry_username_env() -> String {
    "REGISTRY_USERNAME".into()
}
fn default_registry_password_env() -> String {
    "REGISTRY_PASSWORD".into()
}
fn default_keep_releases() -> u32 {
    5
}
fn default_stop_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_lock_stale_after() -> Duration {
    Duration::from_secs(3600)
}
fn default_listen() -> ListenAddr {
    ListenAddr::port_only(8080).expect("8080 is a port")
}
fn default_proxy_idle_timeout() -> Duration {
    Duration(crate::proxy::conn::DEFAULT_IDLE_TIMEOUT)
}
fn default_proxy_header_read_timeout() -> Duration {
    Duration(crate::proxy::conn::DEFAULT_HEADER_READ_TIMEOUT)
}
fn default_proxy_max_connections() -> u32 {
    crate::proxy::conn::DEFAULT_MAX_CONNECTIONS as u32
}
fn default_health_path() -> String {
    "/health".into()
}
fn default_health_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}
fn default_health_start_period() -> Duration {
    Duration::from_secs(0)
}
fn default_health_deadline() -> Duration {
    Duration::from_secs(60)
}
fn default_expect_status() -> Vec<u16> {
    vec![200]
}
fn default_verify_window() -> Duration {
    Duration::from_secs(10)
}
fn default_max_error_rate() -> f64 {
    0.01
}
fn default_max_p95_latency() -> Duration {
    Duration::from_secs(1)
}
macro_rules! default_from_serde {
    ($($ty:ty),*) => {$(
        impl Default for $ty {
            // One source of truth for defaults: the serde attributes above.
            fn default() -> Self {
                toml::from_str("").expect("every field of this table has a default")
            }
        }
    )*};
}
default_from_serde!(
    Git,
    Test,
    Build,
    Registry,
    DeploySettings,
    Proxy,
    Health,
    Verify,
    Rollback
);

impl Config {
    /// The port health checks use.
    pub fn health_port(&self) -> u16 {
        self.health.port.unwrap_or(self.app.port)
    }
}
