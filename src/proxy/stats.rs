//! Per-target traffic counters with a bounded latency sample ring.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use super::metrics::{Answer, Series};
use super::protocol::{Target, TargetStats};

/// Latency samples kept per target: enough for stable p99 over a verify window, 16 KiB each.
const LATENCY_SAMPLES: usize = 4096;

/// Traffic of one target since it became live.
#[derive(Debug)]
pub struct Stats {
    requests: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    /// Woken each time `in_flight` drops to zero (the drain waits on it).
    idle: Notify,
    latencies: Ring,
    /// The target's (colour, version) series of the metrics, when they are on.
    series: Option<Arc<Series>>,
}

/// Fixed-size ring of latencies in microseconds: the most recent samples win. Lock-free, as
/// every request of every worker thread writes one sample: a writer claims a slot with one
/// `fetch_add`, and a reader may see a slot a moment before or after a concurrent write, which
/// does not matter for percentiles.
#[derive(Debug)]
struct Ring {
    samples: Box<[AtomicU32]>,
    /// Samples written so far; slot `n % LATENCY_SAMPLES` holds sample `n`.
    written: AtomicUsize,
}

impl Ring {
    fn push(&self, micros: u32) {
        let at = self.written.fetch_add(1, Ordering::Relaxed) % LATENCY_SAMPLES;
        self.samples[at].store(micros, Ordering::Relaxed);
    }

    fn collect(&self) -> Vec<u32> {
        let len = self.written.load(Ordering::Relaxed).min(LATENCY_SAMPLES);
        self.samples[..len]
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect()
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Stats {
    /// Stats that also record into `series` (the metrics), when given.
    pub fn new(series: Option<Arc<Series>>) -> Self {
        Self {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            idle: Notify::new(),
            latencies: Ring {
                samples: (0..LATENCY_SAMPLES).map(|_| AtomicU32::new(0)).collect(),
                written: AtomicUsize::new(0),
            },
            series,
        }
    }
}

impl Stats {
    /// Marks one request in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>, global: &Arc<AtomicU64>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        global.fetch_add(1, Ordering::SeqCst);
        if let Some(series) = &self.series {
            series.begin();
        }
        InFlight {
            stats: Arc::clone(self),
            global: Arc::clone(global),
        }
    }

    /// Counts one answered (or failed) request.
    pub fn record(&self, latency: Duration, error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.latencies.push(micros);
    }

    /// Counts a failure discovered after the answer was already counted (e.g. a body cut short).
    pub fn record_late_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no request is in flight; returns at once if none is.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Register before checking so a drop to zero between check and await is not missed.
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    pub fn snapshot(&self, target: &Target) -> TargetStats {
        let mut samples = self.latencies.collect();
        samples.sort_unstable();
        TargetStats {
            container: target.container.clone(),
            version: target.version.clone(),
            color: target.color,
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            in_flight: self.in_flight(),
            p50_ms: percentile_ms(&samples, 50.0),
            p95_ms: percentile_ms(&samples, 95.0),
            p99_ms: percentile_ms(&samples, 99.0),
        }
    }
}

/// Nearest-rank percentile of sorted microsecond samples, in milliseconds (0 when empty).
fn percentile_ms(sorted: &[u32], pct: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    f64::from(sorted[idx]) / 1000.0
}

/// One request in flight to a target; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight {
    stats: Arc<Stats>,
    global: Arc<AtomicU64>,
}

impl InFlight {
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counts the request's answer (its head) in the stats and, when on, the metrics. A 5xx
    /// or a failure counts as an error.
    pub fn record(&self, latency: Duration, answer: Answer) {
        let error = match answer {
            Answer::Status(code) => code >= 500,
            Answer::Failed => true,
        };
        self.stats.record(latency, error);
        if let Some(series) = &self.stats.series {
            series.record(latency, answer);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(series) = &self.stats.series {
            series.end();
        }
        self.global.fetch_sub(1, Ordering::SeqCst);
        if self.stats.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.stats.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            addr: "a:1".into(),
            container: "c".into(),
            version: "v".into(),
            color: crate::names::Color::Blue,
        }
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let stats = Stats::default();
        for ms in 1..=100u64 {
            stats.record(Duration::from_millis(ms), ms > 98);
        }
        let s = stats.snapshot(&target());
        assert_eq!(s.requests, 100);
        assert_eq!(s.errors, 2);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p95_ms, 95.0);
        assert_eq!(s.p99_ms, 99.0);
    }

    #[test]
    fn ring_stays_bounded_and_keeps_recent_samples() {
        let stats = Stats::default();
        for _ in 0..LATENCY_SAMPLES {
            stats.record(Duration::from_millis(500), false);
        }
        for _ in 0..LATENCY_SAMPLES {
            stats.record(Duration::from_millis(2), false);
        }
        assert_eq!(stats.latencies.collect().len(), LATENCY_SAMPLES);
        assert_eq!(stats.snapshot(&target()).p99_ms, 2.0);
    }

    #[tokio::test]
    async fn wait_idle_wakes_when_last_request_ends() {
        let stats = Arc::new(Stats::default());
        let global = Arc::new(AtomicU64::new(0));
        let guard = stats.begin(&global);
        assert_eq!(global.load(Ordering::SeqCst), 1);
        let waiter = tokio::spawn({
            let stats = Arc::clone(&stats);
            async move { stats.wait_idle().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("drain waiter woke")
            .expect("task ok");
        assert_eq!(global.load(Ordering::SeqCst), 0);
    }
}
