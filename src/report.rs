//! How the core tells the outside world what it is doing. The CLI decides how it looks
//! (`src/output.rs`); the core only emits events, and the data of a run's outcome (`Report`).

use std::time::Duration;

use serde::Serialize;

use crate::engine::ContainerState;
use crate::health::ProbeResult;
use crate::names::Color;
use crate::proxy::protocol::{Outcome, RunKind};

/// Something worth telling the user while a command runs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A phase of the run begins (`build`, `health`, `switch`, ...).
    PhaseStarted {
        phase: String,
        detail: String,
    },
    PhaseFinished {
        phase: String,
        ok: bool,
        /// Serialized as `elapsed_ms`: whole milliseconds.
        #[serde(rename = "elapsed_ms", serialize_with = "ser_ms")]
        elapsed: Duration,
        detail: String,
    },
    Info {
        message: String,
    },
    Warning {
        message: String,
    },
    /// A line of streamed output from a build, test command, hook or container.
    Line {
        source: String,
        line: String,
    },
    Probe {
        probe: ProbeResult,
    },
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

pub trait Reporter: Send + Sync {
    fn event(&self, event: Event);
}

impl dyn Reporter + '_ {
    pub fn info(&self, message: impl Into<String>) {
        self.event(Event::Info {
            message: message.into(),
        });
    }
    pub fn warn(&self, message: impl Into<String>) {
        self.event(Event::Warning {
            message: message.into(),
        });
    }
    pub fn line(&self, source: &str, line: &str) {
        self.event(Event::Line {
            source: source.into(),
            line: line.into(),
        });
    }
}

/// The phases of a run, as progress events name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseName {
    /// Connecting to the Docker Engine.
    Docker,
    /// The prerequisites.
    Checks,
    /// A test command.
    Test,
    /// A hook command.
    Hook,
    /// Taking the deploy lock.
    Lock,
    /// Building (or finding) the proxy image.
    ProxyImage,
    /// Building the app image.
    Build,
    /// Pushing to the registry.
    Push,
    /// Shipping the image to the hosts of a fleet that lack it.
    Ship,
    /// Ensuring the proxy runs.
    Proxy,
    /// Draining a previous run's leftover requests.
    Drain,
    /// Starting the new release.
    Start,
    /// The health gate.
    Health,
    /// Switching traffic.
    Switch,
    /// The verify window.
    Verify,
    /// Switching traffic back.
    Rollback,
    /// Stopping the previous release.
    Stop,
    /// Removing old images.
    Prune,
    /// Sending notifications.
    Notify,
}

impl PhaseName {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Docker => "docker",
            PhaseName::Checks => "checks",
            PhaseName::Test => "test",
            PhaseName::Hook => "hook",
            PhaseName::Lock => "lock",
            PhaseName::ProxyImage => "proxy image",
            PhaseName::Build => "build",
            PhaseName::Push => "push",
            PhaseName::Ship => "ship",
            PhaseName::Proxy => "proxy",
            PhaseName::Drain => "drain",
            PhaseName::Start => "start",
            PhaseName::Health => "health",
            PhaseName::Switch => "switch",
            PhaseName::Verify => "verify",
            PhaseName::Rollback => "rollback",
            PhaseName::Stop => "stop",
            PhaseName::Prune => "prune",
            PhaseName::Notify => "notify",
        }
    }
}

/// Times a phase and reports its start and end.
pub struct Phase<'a> {
    reporter: &'a dyn Reporter,
    name: String,
    started: std::time::Instant,
    finished: bool,
}

impl<'a> Phase<'a> {
    pub fn start(reporter: &'a dyn Reporter, name: PhaseName, detail: impl Into<String>) -> Self {
        let name = name.as_str();
        reporter.event(Event::PhaseStarted {
            phase: name.into(),
            detail: detail.into(),
        });
        Phase {
            reporter,
            name: name.into(),
            started: std::time::Instant::now(),
            finished: false,
        }
    }
    pub fn ok(self, detail: impl Into<String>) {
        self.finish(true, detail.into());
    }
    pub fn failed(self, detail: impl Into<String>) {
        self.finish(false, detail.into());
    }
    fn finish(mut self, ok: bool, detail: String) {
        self.report(ok, detail);
    }

    fn report(&mut self, ok: bool, detail: String) {
        self.finished = true;
        self.reporter.event(Event::PhaseFinished {
            phase: self.name.clone(),
            ok,
            elapsed: self.started.elapsed(),
            detail,
        });
    }
}

/// A phase left by an early return (`?`) still ends, as failed: every start has its finish.
impl Drop for Phase<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.report(false, String::new());
        }
    }
}

/// A reporter that drops everything (library callers that do not care).
pub struct Silent;

impl Reporter for Silent {
    fn event(&self, _: Event) {}
}

/// Details of why a release was refused.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FailureReport {
    pub reason: String,
    /// The last health responses.
    pub probes: Vec<ProbeResult>,
    pub container: Option<String>,
    pub container_state: Option<ContainerState>,
    /// The container's last log lines.
    pub logs: Vec<String>,
    /// A fleet: the host the failure happened on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub kind: RunKind,
    pub app: String,
    pub env: String,
    pub version: String,
    pub color: Color,
    pub container: String,
    pub url: String,
    pub previous: Option<String>,
    /// `Live`, `Failed` or `RolledBack`.
    pub outcome: Outcome,
    pub duration_ms: u64,
    pub swap_ms: Option<f64>,
    pub failure: Option<FailureReport>,
    /// The plan's steps this run walked, in order, as `--dry-run` describes them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
    /// A fleet: one row per host, in the configured order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostReport>,
    /// A fleet: milliseconds between the first and the last host's completed switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch_spread_ms: Option<f64>,
}

/// One host of a fleet in a report.
#[derive(Debug, Clone, Serialize, Default)]
pub struct HostReport {
    /// The engine address, as configured (`ssh://deploy@web1`).
    pub host: String,
    /// Where that host's proxy serves the app.
    pub url: String,
    /// The host was live on the other colour than the first (drift): the colours are swapped there.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub flipped: bool,
    /// Milliseconds from the start of the fleet's switch to this host's completed switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switched_after_ms: Option<f64>,
    /// How long this host's proxy took to swap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_ms: Option<f64>,
    /// The image was shipped to this host: bytes streamed and milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_ms: Option<u64>,
    /// Why this host failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl HostReport {
    /// The spread between the first and the last completed switch of `hosts`.
    pub fn spread_ms(hosts: &[HostReport]) -> Option<f64> {
        let times: Vec<f64> = hosts.iter().filter_map(|h| h.switched_after_ms).collect();
        if times.len() < 2 {
            return None;
        }
        let max = times.iter().cloned().fold(f64::MIN, f64::max);
        let min = times.iter().cloned().fold(f64::MAX, f64::min);
        Some(((max - min) * 10.0).round() / 10.0)
    }
}
