//! The steps of a plan, each with every value the executor uses (typed durations, the health rules,
//! the target), and the small types they are made of.

use serde::Serialize;

use crate::config::{Duration, NotifyEvent, NotifyKind};
use crate::health::HealthSpec;
use crate::names::Color;
use crate::proxy::protocol::{Outcome, Target};

/// A value a step carries for the executor that may hold secrets (a webhook URL with its token,
/// health-check header values): never printed (`Debug` shows `***`), never serialized (the
/// fields holding one are `#[serde(skip)]`; the plan shows a redacted form next to it).
#[derive(Clone, PartialEq)]
pub struct Hidden<T>(pub T);

impl<T> std::fmt::Debug for Hidden<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hidden(***)")
    }
}

/// One step, with every concrete value the executor will use. Secrets are already redacted
/// by the caller's output layer; the plan carries no secret values except through `Loaded`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    RunHook {
        hook: Hook,
        command: Vec<String>,
        shell: bool,
        /// The limit on the command (`test.timeout`).
        timeout: Duration,
        /// In a failure branch: runs only when traffic went back to the previous release.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        if_rolled_back: bool,
    },
    RunTest {
        command: Vec<String>,
        shell: bool,
        timeout: Duration,
    },
    BuildImage {
        image: String,
        context: String,
        dockerfile: String,
        target: Option<String>,
    },
    UseImage {
        image: String,
    },
    PushImage {
        image: String,
        target: String,
    },
    /// The deploy lock (every host's, in order, on a fleet).
    AcquireLock {
        lock: String,
        /// How long to wait for another holder (`--lock-wait`; zero: fail at once, exit 3).
        wait: Duration,
        /// A lock older than this is reported as stale (`deploy.lock_stale_after`).
        stale_after: Duration,
    },
    /// A fleet: the image goes from the first host to each other host that lacks it.
    ShipImage {
        image: String,
        from: String,
        to: Vec<String>,
    },
    EnsureNetwork {
        network: String,
    },
    EnsureProxy {
        container: String,
        image: String,
        listen: String,
        action: ProxyAction,
    },
    RemoveContainer {
        container: String,
        version: String,
        reason: String,
    },
    StartRelease {
        container: String,
        image: String,
        color: Color,
        version: String,
        network: String,
        env: Vec<String>,
        /// Start the release's existing stopped container instead of creating one.
        reuse: bool,
    },
    WaitHealthy {
        url: String,
        expect_status: Vec<u16>,
        healthy_threshold: u32,
        interval: Duration,
        timeout: Duration,
        deadline: Duration,
        /// The other rules of each check; header values are always shown as `***`.
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        headers: std::collections::BTreeMap<String, String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expect_body: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expect_json: Option<crate::config::ExpectJson>,
        /// `health.docker_cmd`: Docker's own HEALTHCHECK must pass too.
        #[serde(skip_serializing_if = "Option::is_none")]
        docker_cmd: Option<Vec<String>>,
        /// Consecutive failing answers that fail the release.
        unhealthy_threshold: u32,
        /// Failures in this first stretch do not count.
        start_period: Duration,
        /// What the executor probes: the fields above, with the real header values.
        #[serde(skip)]
        spec: Hidden<HealthSpec>,
    },
    Switch {
        from: Option<String>,
        to: String,
        drain_timeout: Duration,
        /// The router's last check of `to` before it switches (the health step's rules).
        #[serde(skip)]
        health: Hidden<HealthSpec>,
    },
    /// Failure branch: when traffic reached `from`, it goes back to `to`.
    SwitchBack {
        from: String,
        to: Target,
        drain_timeout: Duration,
        /// The router's check of `to` before it switches back.
        #[serde(skip)]
        health: Hidden<HealthSpec>,
    },
    /// Failure branch: the new release stops (kept for inspection) unless it still serves.
    StopFailed {
        container: String,
        version: String,
    },
    /// Failure branch: the release is recorded `failed`, or `rolled_back` once traffic is back.
    RecordFailure {
        version: String,
        /// The previous release traffic goes back to, when the failure branch switches back.
        #[serde(skip_serializing_if = "Option::is_none")]
        rolled_back_to: Option<String>,
    },
    /// Failure branch of a deploy: failed releases pile up images too (the failed one stays).
    PruneFailed {
        keep_releases: u32,
    },
    Verify {
        window: Duration,
        max_error_rate: f64,
        max_p95_latency: Duration,
        /// The health checks that keep running during the window.
        #[serde(skip)]
        health: Hidden<HealthSpec>,
    },
    StopContainer {
        container: String,
        version: String,
    },
    RecordRelease {
        version: String,
        outcome: Outcome,
    },
    Prune {
        images: Vec<String>,
    },
    /// Every notification target of the event, sent at once.
    Notify {
        event: NotifyEvent,
        /// The targets' kinds, in the configured order; their URLs (which carry tokens) are
        /// never shown.
        kinds: Vec<NotifyKind>,
        /// The targets themselves, never shown.
        #[serde(skip)]
        targets: Hidden<Vec<crate::config::Notify>>,
    },
    ReleaseLock {
        lock: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyAction {
    Create,
    Start,
    Keep,
}

/// The hooks of the configuration, by when they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// Before the build; a failure stops the deploy.
    PreBuild,
    /// After the health gate, before the switch; a failure stops the deploy.
    PreDeploy,
    /// After a successful deploy; a failure is a warning.
    PostDeploy,
    /// After a failed run; a failure is a warning.
    OnFailure,
    /// After a rollback (asked for or automatic); a failure is a warning.
    OnRollback,
}

impl Hook {
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::PreBuild => "pre_build",
            Hook::PreDeploy => "pre_deploy",
            Hook::PostDeploy => "post_deploy",
            Hook::OnFailure => "on_failure",
            Hook::OnRollback => "on_rollback",
        }
    }
    /// Hooks that run before the outcome is known stop the run when they fail.
    pub fn gates(self) -> bool {
        matches!(self, Hook::PreBuild | Hook::PreDeploy)
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the planner could read the live state; printed as `known` or `unknown (<why>)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveState {
    Known,
    Unknown(String),
}

impl std::fmt::Display for LiveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LiveState::Known => f.write_str("known"),
            LiveState::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

impl Serialize for LiveState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}
