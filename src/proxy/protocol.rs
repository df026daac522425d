//! What the CLI and the proxy say to each other (JSON printed by `deployctl proxy ...` commands
//! run through `docker exec`).

use serde::{Deserialize, Serialize};

/// Where traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `host:port` reachable from the proxy (container name on the private network, or IP).
    pub addr: String,
    pub container: String,
    pub version: String,
    pub color: String,
}

/// Per-target traffic since that target became live (or since the proxy started).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetStats {
    pub container: String,
    pub version: String,
    pub color: String,
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
