//! A fleet: one environment served by several Docker hosts (`docker.hosts`), each with its own
//! proxy and releases, driven as one [`DeployTarget`] over a [`SingleHost`] per host.
//!
//! - locks: every host's, in the configured order, all or nothing;
//! - the image: built once on the first host, shipped to the others that lack it (`docker save`
//!   streamed into `docker load`, no registry);
//! - start and health gate: on every host, `deploy.parallel` hosts at a time; any failure stops
//!   the run before the switch, so every host stays on its old release;
//! - switch: every host's proxy at once; if one fails, the hosts that switched go back; the
//!   spread between the first and the last host's switch is measured;
//! - verify: on every host; a failure (or a host that stops answering) fails the release and the
//!   failure branch switches every reachable host back, naming the host and why.
//!
//! Drift (a host live on the other colour than the first host) is absorbed per host: on such a
//! host the plan's colours are swapped, so the new release always goes into that host's idle slot.
//! A switch back sends each host to what it served before this run.

use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use futures_util::future::{join_all, try_join_all};

use super::Session;
use super::plan::Observed;
use super::target::{DeployTarget, LockRequest, NewRelease, SingleHost, VerifyRules};
use crate::config::Duration;
use crate::engine::ContainerState;
use crate::health::HealthSpec;
use crate::names::Color;
use crate::proxy::protocol::{ReleaseRecord, ReleaseSpec, Target};
use crate::report::{FailureReport, HostReport};

/// One host of the fleet.
pub(super) struct Member<'s, 'a> {
    session: &'s Session<'a>,
    single: SingleHost<'s, 'a>,
}

/// What the fleet learnt about each host during the run.
#[derive(Default, Clone)]
struct HostState {
    /// This host runs the plan's colours swapped (it was live on the other colour).
    flip: bool,
    /// What it served when observed (where a switch back goes).
    live: Option<Target>,
    /// Its own ledger (a rollback restores each host's release from its own record).
    releases: Vec<ReleaseRecord>,
    /// The spec its new release was created with (for its own ledger).
    spec: Option<ReleaseSpec>,
    /// Image shipping: bytes and milliseconds, when it needed the image.
    shipped: Option<(u64, u64)>,
    /// When its switch to the new release completed, and how long the swap took.
    switched: Option<(Instant, f64)>,
    /// Why it failed, when it did.
    failure: Option<String>,
}

pub struct Fleet<'s, 'a> {
    members: Vec<Member<'s, 'a>>,
    parallel: usize,
    state: Mutex<Vec<HostState>>,
    /// When the fleet's switch to the new release began: the report's switch offsets count from it.
    first_switch: Mutex<Option<Instant>>,
}

impl<'s, 'a> Fleet<'s, 'a> {
    /// `sessions`: the first host's session first, then the others, in the configured order.
    pub fn new(sessions: Vec<&'s Session<'a>>) -> Self {
        let parallel = sessions[0]
            .loaded
            .config
            .deploy
            .parallel
            .map_or(sessions.len(), |p| p as usize)
            .max(1);
        let n = sessions.len();
        Fleet {
            members: sessions
                .into_iter()
                .map(|session| Member {
                    session,
                    single: SingleHost::new(session),
                })
                .collect(),
            parallel,
            state: Mutex::new(vec![HostState::default(); n]),
            first_switch: Mutex::new(None),
        }
    }

    fn host(&self, i: usize) -> &str {
        &self.members[i].session.host
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut Vec<HostState>) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut s)
    }

    fn flip(&self, i: usize) -> bool {
        self.with_state(|s| s[i].flip)
    }

    /// The plan's container name as host `i` knows it.
    fn container(&self, i: usize, container: &str) -> String {
        let names = &self.members[i].session.names;
        if !self.flip(i) {
            return container.to_string();
        }
        for c in [Color::Blue, Color::Green] {
            if container == names.container(c) {
                return names.container(c.other());
            }
        }
        container.to_string()
    }

    fn color(&self, i: usize, color: Color) -> Color {
        if self.flip(i) { color.other() } else { color }
    }

    fn failed(&self, i: usize, why: &str) {
        self.with_state(|s| s[i].failure = Some(why.to_string()));
    }

    /// Runs `f` on every host at once; the first error names its host.
    async fn on_all<'f, T, F, Fut>(&'f self, f: F) -> anyhow::Result<Vec<T>>
    where
        F: Fn(usize, &'f Member<'s, 'a>) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let results = join_all(self.members.iter().enumerate().map(|(i, m)| f(i, m))).await;
        let mut out = Vec::with_capacity(results.len());
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(v) => out.push(v),
                Err(e) => {
                    self.failed(i, &format!("{e:#}"));
                    return Err(e.context(format!("on {}", self.host(i))));
                }
            }
        }
        Ok(out)
    }

    /// Runs `f` on the hosts, `parallel` at a time; the first failure stops the run and names
    /// its host.
    pub(super) async fn in_batches<'f, F, Fut>(&'f self, f: F) -> Result<(), FailureReport>
    where
        F: Fn(usize, &'f Member<'s, 'a>) -> Fut,
        Fut: std::future::Future<Output = Result<(), FailureReport>>,
    {
        let indices: Vec<usize> = (0..self.members.len()).collect();
        for batch in indices.chunks(self.parallel) {
            // The first failure ends the batch: the others' checks are dropped, not waited for.
            try_join_all(batch.iter().map(|&i| {
                let run = f(i, &self.members[i]);
                async move { run.await.map_err(|report| (i, report)) }
            }))
            .await
            .map_err(|(i, report)| self.name_host(i, report))?;
        }
        Ok(())
    }

    fn name_host(&self, i: usize, mut report: FailureReport) -> FailureReport {
        self.failed(i, &report.reason);
        report.reason = format!("on {}: {}", self.host(i), report.reason);
        report.host = Some(self.host(i).to_string());
        report
    }

    /// Puts each host in `hosts` back on what it served before this run. Returns the failures
    /// of hosts that had not failed before (a host already known to be down is warned about).
    async fn back(&self, hosts: &[usize], health: &HealthSpec, drain: Duration) -> Vec<String> {
        let results = join_all(hosts.iter().map(|&i| async move {
            let Some(live) = self.with_state(|s| s[i].live.clone()) else {
                return Ok(());
            };
            let spec = own_spec(health, &live.container);
            self.members[i]
                .single
                .switch(&live, &spec, drain)
                .await
                .map(|_| ())
        }))
        .await;
        let mut errors = Vec::new();
        for (&i, r) in hosts.iter().zip(results) {
            let Err(e) = r else { continue };
            let message = format!("{}: {e:#}", self.host(i));
            if self.with_state(|s| s[i].failure.is_some()) {
                self.members[i].session.reporter.warn(format!(
                    "{} failed during this run and could not be switched back: {e:#}",
                    self.host(i)
                ));
            } else {
                errors.push(message);
            }
        }
        errors
    }
}

#[async_trait]
impl DeployTarget for Fleet<'_, '_> {
    async fn observe(&self) -> anyhow::Result<Observed> {
        let all = self.on_all(|_, m| m.single.observe()).await?;
        let first_color = all[0].live.as_ref().map(|t| t.color);
        self.with_state(|s| {
            for (i, o) in all.iter().enumerate() {
                let color = o.live.as_ref().map(|t| t.color);
                s[i].flip = matches!((first_color, color), (Some(a), Some(b)) if a != b);
                s[i].live = o.live.clone();
                s[i].releases = o.releases.clone();
            }
        });
        // Planned from the first host's view; the steps apply on each host to its own slots.
        Ok(all.into_iter().next().unwrap_or_default())
    }

    async fn acquire_lock(&self, req: &LockRequest<'_>) -> anyhow::Result<()> {
        // A fixed order (the configured one), so two runs cannot each hold a part.
        for i in 0..self.members.len() {
            if let Err(e) = self.members[i].single.acquire_lock(req).await {
                for j in (0..i).rev() {
                    let _ = self.members[j].single.release_lock().await;
                }
                self.failed(i, &format!("{e:#}"));
                return Err(e.context(format!("on {}", self.host(i))));
            }
        }
        Ok(())
    }

    async fn ship_image(&self, image: &str, image_id: Option<&str>) -> anyhow::Result<()> {
        // From the machine's own engine with `build.local`, else from the first host.
        let builder = self.members[0].session.builder;
        let source = builder.unwrap_or(self.members[0].session.engine);
        let wanted = image_id.unwrap_or(image);
        self.on_all(|i, m| async move {
            if i == 0 && builder.is_none() {
                return Ok(());
            }
            let started = Instant::now();
            if let Some(bytes) =
                crate::host::ship_image(source, m.session.engine, image, wanted).await?
            {
                let ms = started.elapsed().as_millis() as u64;
                self.with_state(|s| s[i].shipped = Some((bytes, ms)));
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    async fn ensure_network(&self) -> anyhow::Result<()> {
        self.on_all(|_, m| m.single.ensure_network())
            .await
            .map(|_| ())
    }

    async fn ensure_router(&self, router_image: &str) -> anyhow::Result<()> {
        self.on_all(|_, m| m.single.ensure_router(router_image))
            .await
            .map(|_| ())
    }

    async fn record(&self, record: &ReleaseRecord) -> anyhow::Result<()> {
        self.on_all(|i, m| {
            let mut own = record.clone();
            own.color = self.color(i, record.color);
            own.container = self.container(i, &record.container);
            if own.spec.is_some()
                && let Some(spec) = self.with_state(|s| s[i].spec.clone())
            {
                own.spec = Some(Box::new(spec));
            }
            async move { m.single.record(&own).await }
        })
        .await
        .map(|_| ())
    }

    async fn clear_slot(&self, container: &str) -> anyhow::Result<()> {
        self.on_all(|i, m| {
            let c = self.container(i, container);
            async move { m.single.clear_slot(&c).await }
        })
        .await
        .map(|_| ())
    }

    async fn create_release(&self, release: &NewRelease<'_>) -> anyhow::Result<ReleaseSpec> {
        let specs = self
            .on_all(|i, m| {
                let container = self.container(i, release.container);
                let color = self.color(i, release.color);
                // A rollback re-creates each host's release from that host's own record.
                let own = release.restore.map(|r| {
                    self.with_state(|s| {
                        s[i].releases
                            .iter()
                            .rev()
                            .find(|rec| rec.version == release.version)
                            .and_then(|rec| rec.spec.as_deref().cloned())
                    })
                    .unwrap_or_else(|| r.clone())
                });
                async move {
                    let r = NewRelease {
                        container: &container,
                        color,
                        restore: own.as_ref(),
                        ..*release
                    };
                    m.single.create_release(&r).await
                }
            })
            .await?;
        self.with_state(|s| {
            for (i, spec) in specs.iter().enumerate() {
                s[i].spec = Some(spec.clone());
            }
        });
        specs
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("a fleet without hosts"))
    }

    async fn start_release(&self, container: &str) -> Result<(), FailureReport> {
        self.in_batches(|i, m| {
            let c = self.container(i, container);
            async move { m.single.start_release(&c).await }
        })
        .await
    }

    async fn health_gate(
        &self,
        container: &str,
        spec: &HealthSpec,
        docker_health: bool,
    ) -> Result<(), FailureReport> {
        self.in_batches(|i, m| {
            let c = self.container(i, container);
            let spec = own_spec(spec, &c);
            async move { m.single.health_gate(&c, &spec, docker_health).await }
        })
        .await
    }

    fn route_to(&self, container: &str, version: &str, color: Color) -> Target {
        self.members[0].single.route_to(container, version, color)
    }

    async fn switch(
        &self,
        to: &Target,
        health: &HealthSpec,
        drain: Duration,
    ) -> anyhow::Result<f64> {
        let first_live = self.with_state(|s| s[0].live.clone());
        let all: Vec<usize> = (0..self.members.len()).collect();
        // Back to what served before: each host to its own previous release.
        if first_live.as_ref() == Some(to) {
            let errors = self.back(&all, health, drain).await;
            if errors.is_empty() {
                return Ok(0.0);
            }
            anyhow::bail!("{}", errors.join("; "));
        }
        *self.first_switch.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let results = join_all(self.members.iter().enumerate().map(|(i, m)| {
            let container = self.container(i, &to.container);
            let target = Target {
                addr: to.addr.replacen(&to.container, &container, 1),
                container: container.clone(),
                version: to.version.clone(),
                color: self.color(i, to.color),
            };
            let spec = own_spec(health, &container);
            async move {
                let r = m.single.switch(&target, &spec, drain).await;
                if let Ok(ms) = &r {
                    self.with_state(|s| s[i].switched = Some((Instant::now(), *ms)));
                }
                r
            }
        }))
        .await;
        let mut failures = Vec::new();
        let mut switched = Vec::new();
        let mut slowest: f64 = 0.0;
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(ms) => {
                    switched.push(i);
                    slowest = slowest.max(ms);
                }
                Err(e) => {
                    self.failed(i, &format!("{e:#}"));
                    failures.push(format!("on {}: {e:#}", self.host(i)));
                }
            }
        }
        if failures.is_empty() {
            return Ok(slowest);
        }
        // All or nothing: the hosts that switched go back before the failure is reported.
        let errors = self.back(&switched, health, drain).await;
        let mut message = failures.join("; ");
        if !errors.is_empty() {
            message.push_str(&format!("; switching back failed {}", errors.join("; ")));
        }
        anyhow::bail!("{message}")
    }

    async fn verify(&self, container: &str, rules: &VerifyRules) -> Result<(), FailureReport> {
        // The first host that fails ends the window everywhere: the switch back should not wait.
        try_join_all(self.members.iter().enumerate().map(|(i, m)| {
            let c = self.container(i, container);
            let rules = VerifyRules {
                health: own_spec(&rules.health, &c),
                ..rules.clone()
            };
            async move {
                m.single
                    .verify(&c, &rules)
                    .await
                    .map_err(|report| (i, report))
            }
        }))
        .await
        .map(|_| ())
        .map_err(|(i, report)| self.name_host(i, report))
    }

    async fn retire(&self, container: &str) -> anyhow::Result<()> {
        self.on_all(|i, m| {
            let c = self.container(i, container);
            async move { m.single.retire(&c).await }
        })
        .await
        .map(|_| ())
    }

    async fn inspect(&self, container: &str) -> (Option<ContainerState>, Vec<String>) {
        // The host that failed says most; else the first.
        let i = self
            .with_state(|s| s.iter().position(|h| h.failure.is_some()))
            .unwrap_or(0);
        let c = self.container(i, container);
        self.members[i].single.inspect(&c).await
    }

    async fn release_lock(&self) -> anyhow::Result<()> {
        let results = join_all(self.members.iter().map(|m| m.single.release_lock())).await;
        let errors: Vec<String> = results
            .into_iter()
            .enumerate()
            .filter_map(|(i, r)| r.err().map(|e| format!("on {}: {e:#}", self.host(i))))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", errors.join("; "))
        }
    }

    async fn running(&self, container: &str) -> bool {
        let all = join_all(self.members.iter().enumerate().map(|(i, m)| {
            let c = self.container(i, container);
            async move { m.single.running(&c).await }
        }))
        .await;
        all.into_iter().all(|r| r)
    }

    async fn stop(&self, container: &str, grace: std::time::Duration) -> anyhow::Result<()> {
        let results = join_all(self.members.iter().enumerate().map(|(i, m)| {
            let c = self.container(i, container);
            async move { m.single.stop(&c, grace).await }
        }))
        .await;
        results
            .into_iter()
            .collect::<anyhow::Result<Vec<()>>>()
            .map(|_| ())
    }

    async fn prune(&self, images: &[String]) {
        join_all(self.members.iter().map(|m| m.single.prune(images))).await;
    }

    fn hosts(&self) -> Vec<HostReport> {
        let first = *self.first_switch.lock().unwrap_or_else(|e| e.into_inner());
        self.with_state(|s| {
            s.iter()
                .enumerate()
                .map(|(i, h)| {
                    let m = &self.members[i];
                    HostReport {
                        host: m.session.host.clone(),
                        url: m.session.url(),
                        flipped: h.flip,
                        switched_after_ms: match (first, h.switched) {
                            (Some(f), Some((at, _))) => Some(
                                (at.saturating_duration_since(f).as_secs_f64() * 10_000.0).round()
                                    / 10.0,
                            ),
                            _ => None,
                        },
                        swap_ms: h.switched.map(|(_, ms)| ms),
                        image_bytes: h.shipped.map(|(b, _)| b),
                        image_ms: h.shipped.map(|(_, ms)| ms),
                        failure: h.failure.clone(),
                    }
                })
                .collect()
        })
    }
}

/// The plan's health checks of a release, aimed at the container of that release on one host
/// (its name differs on a host whose colours are swapped).
fn own_spec(spec: &HealthSpec, container: &str) -> HealthSpec {
    let url = match spec.url.split_once("://") {
        Some((scheme, rest)) => {
            let tail = rest.find([':', '/']).map_or("", |at| &rest[at..]);
            format!("{scheme}://{container}{tail}")
        }
        None => spec.url.clone(),
    };
    HealthSpec {
        url,
        ..spec.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_health_check_is_aimed_at_the_hosts_own_container() {
        let spec: HealthSpec = serde_json::from_value(serde_json::json!({
            "url": "http://shop.prod-blue:8080/health?deep=1",
            "interval_ms": 100, "timeout_ms": 100, "healthy_threshold": 1,
            "unhealthy_threshold": 1, "deadline_ms": 1000
        }))
        .unwrap();
        assert_eq!(
            own_spec(&spec, "shop.prod-green").url,
            "http://shop.prod-green:8080/health?deep=1"
        );
    }
}
