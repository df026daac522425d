//! The probe loop: probes every `interval_ms` until its [`Ending`] rule says how it ended. One
//! loop serves both the deploy gate ([`Ending::Until`]) and the verify window ([`Ending::Watch`]).

use std::time::Duration;

use tokio::time::Instant;

use super::{Client, HealthOutcome, HealthSpec, LastProbes, ProbeResult, probe_once};

/// When a series of probes ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The deploy gate. Healthy at `passes` consecutive passes; Unhealthy at
    /// `unhealthy_threshold` consecutive counted failures; DeadlineExceeded when no probe can
    /// start before `deadline`. A failure counts once the target has answered HTTP at all (a
    /// refused port while the app starts only uses up the deadline) and when its probe started
    /// `start_period` or later after the start.
    Until {
        passes: u32,
        unhealthy_threshold: u32,
        start_period: Duration,
        deadline: Duration,
    },
    /// The verify window after a switch: the target is already serving, so every failure
    /// counts. Unhealthy at `unhealthy_threshold` consecutive failures; Healthy once `window`
    /// has passed.
    Watch {
        window: Duration,
        unhealthy_threshold: u32,
    },
}

impl Ending {
    /// The gate's rule, from the spec's thresholds, start period and deadline.
    pub fn until(spec: &HealthSpec) -> Ending {
        Ending::Until {
            passes: spec.healthy_threshold,
            unhealthy_threshold: spec.unhealthy_threshold,
            start_period: Duration::from_millis(spec.start_period_ms),
            deadline: Duration::from_millis(spec.deadline_ms),
        }
    }

    /// The verify window's rule, with the spec's unhealthy threshold.
    pub fn watch(spec: &HealthSpec, window: Duration) -> Ending {
        Ending::Watch {
            window,
            unhealthy_threshold: spec.unhealthy_threshold,
        }
    }

    /// How long the loop may run at most (before the last probe's timeout).
    fn limit(&self) -> Duration {
        match self {
            Ending::Until { deadline, .. } => *deadline,
            Ending::Watch { window, .. } => *window,
        }
    }

    fn unhealthy_threshold(&self) -> u32 {
        match self {
            Ending::Until {
                unhealthy_threshold,
                ..
            }
            | Ending::Watch {
                unhealthy_threshold,
                ..
            } => (*unhealthy_threshold).max(1),
        }
    }

    /// Whether the failed probe `p` counts towards the unhealthy threshold.
    fn counts(&self, p: &ProbeResult, answered: bool) -> bool {
        match self {
            Ending::Until { start_period, .. } => answered && p.at_ms >= millis(*start_period),
            Ending::Watch { .. } => true,
        }
    }
}

/// The shorthand for the gate: [`run`] with [`Ending::until`].
pub async fn wait_healthy(
    spec: &HealthSpec,
    on_probe: &mut (dyn FnMut(&ProbeResult) + Send),
) -> HealthOutcome {
    run(spec, &Ending::until(spec), on_probe).await
}

/// The shorthand for the verify window: [`run`] with [`Ending::watch`].
pub async fn watch(
    spec: &HealthSpec,
    window: Duration,
    on_probe: &mut (dyn FnMut(&ProbeResult) + Send),
) -> HealthOutcome {
    run(spec, &Ending::watch(spec, window), on_probe).await
}

/// Probes `spec` every `interval_ms`, passing each probe to `on_probe`, until `ending` decides.
/// At least one probe is always made; a probe slower than the interval delays the next one, it
/// never overlaps; the end of the run is overshot by at most one `timeout_ms`.
pub async fn run(
    spec: &HealthSpec,
    ending: &Ending,
    on_probe: &mut (dyn FnMut(&ProbeResult) + Send),
) -> HealthOutcome {
    let client = Client::new();
    let start = Instant::now();
    let end = after(start, ending.limit());
    let interval = Duration::from_millis(spec.interval_ms);
    let unhealthy_threshold = ending.unhealthy_threshold();

    let mut last = LastProbes::new();
    let mut probes: u32 = 0;
    let mut passes: u32 = 0;
    let mut failures: u32 = 0;
    let mut ever_passed = false;
    let mut answered = false;
    loop {
        let probe_start = Instant::now();
        let mut result = probe_once(spec, &client).await;
        result.at_ms = millis(probe_start - start);
        probes = probes.saturating_add(1);
        on_probe(&result);
        answered |= result.status.is_some();
        if result.ok {
            passes = passes.saturating_add(1);
            failures = 0;
            ever_passed = true;
        } else {
            passes = 0;
            if ending.counts(&result, answered) {
                failures = failures.saturating_add(1);
            }
        }
        last.push(result);
        if let Ending::Until { passes: needed, .. } = ending
            && passes >= (*needed).max(1)
        {
            return HealthOutcome::Healthy {
                probes,
                elapsed_ms: millis(start.elapsed()),
            };
        }
        if failures >= unhealthy_threshold {
            let when = match ending {
                Ending::Watch { .. } => "during the verify window",
                Ending::Until { .. } if ever_passed => "after the target had passed",
                Ending::Until { .. } => "since its first answer",
            };
            return HealthOutcome::Unhealthy {
                reason: unhealthy_reason(failures, when, last.last()),
                last: last.into_vec(),
            };
        }
        let next = after(probe_start, interval).max(Instant::now());
        if next >= end {
            // No probe can start before the end: the outcome is known, but report it when the
            // end has really come, as the configuration promised the target that long.
            tokio::time::sleep_until(end).await;
            return match ending {
                Ending::Until { .. } => HealthOutcome::DeadlineExceeded {
                    last: last.into_vec(),
                },
                Ending::Watch { .. } => HealthOutcome::Healthy {
                    probes,
                    elapsed_ms: millis(start.elapsed()),
                },
            };
        }
        tokio::time::sleep_until(next).await;
    }
}

/// `from + d`, with `d` bounded so no spec (it is JSON from outside) can overflow the instant.
fn after(from: Instant, d: Duration) -> Instant {
    from.checked_add(d.min(crate::util::MAX_DURATION))
        .unwrap_or(from)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unhealthy_reason(failures: u32, when: &str, last: Option<&ProbeResult>) -> String {
    let plural = if failures == 1 { "" } else { "s" };
    let detail = last
        .and_then(|p| p.error.as_deref())
        .unwrap_or("unknown error");
    format!("{failures} consecutive failed probe{plural} {when}; last: {detail}")
}
