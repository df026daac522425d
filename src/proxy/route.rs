//! The live pointer: which target new requests go to, swapped atomically by a switch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, bail};
use hyper::http::uri::Authority;

use super::metrics::Metrics;
use super::protocol::{ProxyStatus, Target};
use super::stats::{InFlight, Stats};
use super::upstream::Upstream;

/// Earlier targets whose stats `status` still shows.
const HISTORY: usize = 4;

/// One target with its own connection pool and stats. A new `Route` is made each time a target
/// becomes live, so stats restart and no pooled connection of an earlier container (which may
/// have had the same name) is ever reused; dropping it closes its idle connections.
pub struct Route {
    pub target: Target,
    pub upstream: Upstream,
    pub stats: Arc<Stats>,
}

impl Route {
    pub fn new(target: Target) -> anyhow::Result<Self> {
        let authority = parse_addr(&target.addr)?;
        Ok(Self {
            target,
            upstream: Upstream::new(authority),
            stats: Arc::new(Stats::default()),
        })
    }
}

/// Validates a `host:port` target address.
pub fn parse_addr(addr: &str) -> anyhow::Result<Authority> {
    let authority: Authority = addr
        .parse()
        .with_context(|| format!("invalid target address {addr:?}: expected host:port"))?;
    if authority.port_u16().is_none() || authority.host().is_empty() || addr.contains('@') {
        bail!("invalid target address {addr:?}: expected host:port");
    }
    Ok(authority)
}

/// `route` (just made, so its stats are fresh) recording into its series of `metrics` too.
fn with_series(mut route: Route, metrics: Option<&Metrics>) -> Route {
    if let Some(metrics) = metrics {
        route.stats = Arc::new(Stats::new(Some(metrics.series(&route.target))));
    }
    route
}

struct Live {
    route: Option<Arc<Route>>,
    switched_at: Option<u64>,
}

/// Shared routing table of a running proxy.
pub struct Router {
    live: RwLock<Live>,
    /// Stats of targets that were live before, newest first.
    history: Mutex<VecDeque<(Target, Arc<Stats>)>>,
    /// Requests in flight across all targets.
    in_flight: Arc<AtomicU64>,
    /// The Prometheus metrics, when `proxy.metrics` is on.
    metrics: Option<Arc<Metrics>>,
}

impl Router {
    pub fn new(
        initial: Option<Route>,
        switched_at: Option<u64>,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let initial = initial.map(|route| Arc::new(with_series(route, metrics.as_deref())));
        Self {
            live: RwLock::new(Live {
                route: initial,
                switched_at,
            }),
            history: Mutex::new(VecDeque::new()),
            in_flight: Arc::new(AtomicU64::new(0)),
            metrics,
        }
    }

    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_deref()
    }

    /// Picks the live route for one request and marks it in flight. Both happen under the read
    /// lock so a switch that has swapped the pointer sees every request of the old route.
    pub fn acquire(&self) -> Option<(Arc<Route>, InFlight)> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        let route = live.route.as_ref()?;
        let guard = route.stats.begin(&self.in_flight);
        Some((Arc::clone(route), guard))
    }

    pub fn live_route(&self) -> Option<Arc<Route>> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.route.clone()
    }

    pub fn live_target(&self) -> Option<Target> {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        live.route.as_ref().map(|r| r.target.clone())
    }

    /// Makes `route` live; returns the route it replaced.
    pub fn swap(&self, route: Route, switched_at: u64) -> Option<Arc<Route>> {
        let new_target = route.target.clone();
        let route = Arc::new(with_series(route, self.metrics()));
        let previous = {
            let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
            live.switched_at = Some(switched_at);
            live.route.replace(route)
        };
        if let Some(metrics) = self.metrics() {
            metrics.switched();
        }
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.retain(|(t, _)| *t != new_target);
        if let Some(prev) = &previous {
            history.retain(|(t, _)| *t != prev.target);
            history.push_front((prev.target.clone(), Arc::clone(&prev.stats)));
            history.truncate(HISTORY);
        }
        previous
    }

    pub fn status(&self) -> ProxyStatus {
        let (live, switched_at) = {
            let live = self.live.read().unwrap_or_else(|e| e.into_inner());
            (live.route.clone(), live.switched_at)
        };
        let mut targets = Vec::new();
        if let Some(route) = &live {
            targets.push(route.stats.snapshot(&route.target));
        }
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        targets.extend(history.iter().map(|(t, s)| s.snapshot(t)));
        ProxyStatus {
            live: live.map(|r| r.target.clone()),
            switched_at,
            in_flight: self.in_flight.load(Ordering::SeqCst),
            targets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> Target {
        Target {
            addr: format!("{name}:3000"),
            container: name.into(),
            version: "1".into(),
            color: crate::names::Color::Blue,
        }
    }

    #[test]
    fn addresses_must_be_host_port() {
        assert!(parse_addr("app-blue:3000").is_ok());
        assert!(parse_addr("10.0.0.2:80").is_ok());
        assert!(parse_addr("app-blue").is_err());
        assert!(parse_addr("").is_err());
        assert!(parse_addr("user@host:80").is_err());
        assert!(parse_addr("host:80/path").is_err());
    }

    #[tokio::test]
    async fn swap_moves_new_requests_and_keeps_history() {
        let router = Router::new(Some(Route::new(target("a")).expect("route")), Some(1), None);
        let (old, guard) = router.acquire().expect("live");
        assert_eq!(old.target.container, "a");
        let prev = router.swap(Route::new(target("b")).expect("route"), 2);
        assert_eq!(
            prev.map(|p| p.target.container.clone()).as_deref(),
            Some("a")
        );
        let (new, _g) = router.acquire().expect("live");
        assert_eq!(new.target.container, "b");
        let status = router.status();
        assert_eq!(status.in_flight, 2);
        let names: Vec<_> = status
            .targets
            .iter()
            .map(|t| t.container.as_str())
            .collect();
        assert_eq!(names, vec!["b", "a"]);
        assert_eq!(status.targets[1].in_flight, 1);
        drop(guard);
        // Back to "a": fresh stats, no duplicate entry.
        router.swap(Route::new(target("a")).expect("route"), 3);
        let status = router.status();
        let names: Vec<_> = status
            .targets
            .iter()
            .map(|t| t.container.as_str())
            .collect();
        assert_eq!(names, vec!["a", "b"]);
        assert_eq!(status.targets[0].in_flight, 0);
        assert_eq!(status.switched_at, Some(3));
    }
}
