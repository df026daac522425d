//! HTTP health checks, the one prober of deployctl: what to probe ([`HealthSpec`]), one probe's
//! outcome ([`ProbeResult`]), the HTTP client, and how a series of probes ends ([`HealthOutcome`]).
//!
//! Every health check goes through here: the deploy gate and the verify window (both [`run`],
//! with an [`Ending`] rule), the proxy's check right before a switch and `deployctl status`
//! (both [`probe_once`] with the same spec). They run inside the proxy container
//! (`deployctl proxy health`, `deployctl proxy switch`), next to the app containers on their
//! Docker network, over plain HTTP/1.1 with a fresh connection per probe, so a probe says
//! something about the app and not about a pooled connection.

mod probe;
mod run;

use std::collections::{BTreeMap, VecDeque};

use hyper::header::HeaderValue;
use serde::{Deserialize, Serialize};

pub use probe::probe_once;
pub use run::{Ending, run, wait_healthy, watch};

/// At most this much of a response body is read; checks look only at this prefix.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Bytes of the body kept in [`ProbeResult::body_head`] for reports.
pub const BODY_HEAD_BYTES: usize = 200;
/// Probes kept in `last` of an outcome.
pub const LAST_PROBES: usize = 5;

/// What to probe and when the target counts as healthy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct HealthSpec {
    /// `http://host:port/path?query`; only plain HTTP.
    pub url: String,
    /// Host header to send instead of the URL's authority.
    #[serde(default)]
    pub host_header: Option<String>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Time from the start of one probe to the start of the next.
    pub interval_ms: u64,
    /// Limit on one probe: connect, request and body read.
    pub timeout_ms: u64,
    /// Consecutive passes needed (0 counts as 1).
    pub healthy_threshold: u32,
    /// Consecutive failures, counted from the target's first HTTP answer, that make it
    /// unhealthy (0 counts as 1). Failures before any answer (a refused port) do not count.
    pub unhealthy_threshold: u32,
    /// Failures of probes started within this long of the start of the wait do not count.
    #[serde(default)]
    pub start_period_ms: u64,
    /// Limit on the whole wait; overshot by at most one `timeout_ms`.
    pub deadline_ms: u64,
    /// Passing status codes; empty means any 2xx.
    #[serde(default)]
    pub expect_status: Vec<u16>,
    /// A substring the body (its first 64 KiB) must contain.
    #[serde(default)]
    pub expect_body: Option<String>,
    /// (JSON pointer, expected value): strings compare by value, other JSON values by their
    /// compact JSON text (`true`, `3`, `{"a":1}`).
    #[serde(default)]
    pub expect_json: Option<(String, String)>,
}

/// One probe's outcome.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProbeResult {
    pub ok: bool,
    /// HTTP status, when a response head arrived.
    pub status: Option<u16>,
    pub latency_ms: f64,
    /// The first 200 bytes of the body, lossy UTF-8.
    pub body_head: String,
    /// Why the probe failed; `None` when `ok`.
    pub error: Option<String>,
    /// When the probe started, in ms since the start of the wait (0 from [`probe_once`]).
    pub at_ms: u64,
}

/// How a wait or a watch ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum HealthOutcome {
    Healthy {
        probes: u32,
        elapsed_ms: u64,
    },
    Unhealthy {
        reason: String,
        last: Vec<ProbeResult>,
    },
    /// `last` holds at most the last 5 probes.
    DeadlineExceeded {
        last: Vec<ProbeResult>,
    },
}

/// Sends the probes. Holds no connections: each probe opens its own.
#[derive(Clone, Debug)]
pub struct Client {
    user_agent: HeaderValue,
}

impl Client {
    pub fn new() -> Client {
        Client {
            user_agent: HeaderValue::from_static(concat!(
                "deployctl-health/",
                env!("CARGO_PKG_VERSION")
            )),
        }
    }
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

/// The last [`LAST_PROBES`] probes, oldest first: what an outcome reports.
#[derive(Clone, Debug, Default)]
pub struct LastProbes(VecDeque<ProbeResult>);

impl LastProbes {
    pub fn new() -> LastProbes {
        LastProbes(VecDeque::with_capacity(LAST_PROBES))
    }

    /// Keeps `p`, forgetting the oldest probe when full.
    pub fn push(&mut self, p: ProbeResult) {
        if self.0.len() == LAST_PROBES {
            self.0.pop_front();
        }
        self.0.push_back(p);
    }

    pub fn last(&self) -> Option<&ProbeResult> {
        self.0.back()
    }

    pub fn into_vec(self) -> Vec<ProbeResult> {
        self.0.into()
    }
}
