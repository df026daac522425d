//! What the CLI and the proxy say to each other (JSON printed by `deployctl proxy ...` commands
//! run through `docker exec`).

use serde::{Deserialize, Serialize};

pub use crate::names::Color;

/// Where traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `host:port` reachable from the proxy (container name on the private network, or IP).
    pub addr: String,
    pub container: String,
    pub version: String,
    pub color: Color,
}

/// Per-target traffic since that target became live (or since the proxy started).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetStats {
    pub container: String,
    pub version: String,
    pub color: Color,
    pub requests: u64,
    /// 5xx answers plus requests that could not be proxied.
    pub errors: u64,
    pub in_flight: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// `deployctl proxy status` prints this.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyStatus {
    pub live: Option<Target>,
    /// Unix seconds of the last switch.
    pub switched_at: Option<u64>,
    pub in_flight: u64,
    pub targets: Vec<TargetStats>,
}

/// `deployctl proxy switch` prints this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchResult {
    pub previous: Option<Target>,
    pub live: Target,
    /// Milliseconds from the request to the swap of the live pointer.
    pub swap_ms: f64,
    /// Milliseconds spent waiting for in-flight requests of the previous target.
    pub drain_ms: f64,
    /// In-flight requests to the previous target still open when the drain timeout hit.
    pub abandoned: u64,
}

/// What `deployctl proxy switch` asks of the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchRequest {
    pub target: Target,
    /// Checked once on the new target before any traffic moves, with every rule of the deploy
    /// gate's spec (port, path, Host, headers, timeout, status, body, JSON); its URL is on the
    /// target's host.
    pub health: crate::health::HealthSpec,
    /// How long to wait for requests still in flight to the previous target.
    pub drain_timeout_ms: u64,
}

/// How a release ended (or where it stands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    InProgress,
    /// Serving traffic now; at most one record is `Live`.
    Live,
    /// Served traffic and was replaced normally: a rollback candidate.
    Good,
    Failed,
    RolledBack,
}

/// What a run does: deploy a new release or roll back to an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Deploy,
    Rollback,
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Deploy => "deploy",
            RunKind::Rollback => "rollback",
        }
    }
}

impl std::fmt::Display for RunKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Outcome {
    /// The word the ledger and reports use (`rolled_back`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::InProgress => "in_progress",
            Outcome::Live => "live",
            Outcome::Good => "good",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the release ledger (`<state_dir>/releases.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub id: String,
    pub version: String,
    pub image: String,
    pub color: Color,
    pub container: String,
    #[serde(default)]
    pub git_sha: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
    /// Unix seconds.
    pub started_at: u64,
    #[serde(default)]
    pub finished_at: Option<u64>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    pub outcome: Outcome,
    #[serde(default)]
    pub reason: Option<String>,
    /// Deployed with `--skip-tests`.
    #[serde(default)]
    pub tests_skipped: bool,
    /// How its container was made, so a rollback can make it again as it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<Box<ReleaseSpec>>,
}

/// The container of a release as it was created. Secret values are never stored: a secret
/// variable keeps only its name and is read again from the configuration when re-created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSpec {
    pub image_id: String,
    /// In the order given to Docker.
    pub env: Vec<SpecEnv>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// Published ports as `host_ip:host_port:container_port` (app containers publish none today).
    #[serde(default)]
    pub ports: Vec<String>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Docker's id of the container made from this spec: only that very container is ever reused.
    #[serde(default)]
    pub container_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecEnv {
    pub name: String,
    /// None for a secret.
    #[serde(default)]
    pub value: Option<String>,
}

/// One request on the control socket (one JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    Switch(SwitchRequest),
    Status,
    /// Insert or replace (by `id`) a ledger record.
    Record(ReleaseRecord),
    Releases,
    /// One health check run from the proxy container (by `deployctl proxy health`), for the
    /// metrics: whether it passed.
    HealthCheck {
        passed: bool,
    },
}

/// The answer to a [`ControlRequest`] (one JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ControlResponse {
    Switched(SwitchResult),
    Status(ProxyStatus),
    Recorded,
    Releases { releases: Vec<ReleaseRecord> },
    Counted,
    Error { message: String },
}
