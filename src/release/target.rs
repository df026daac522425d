//! The seam between the interpreter and where releases run.
//!
//! The interpreter (`execute`) walks a plan and asks a [`DeployTarget`] to do each operation on
//! the releases: prepare the new one, health-gate it, switch traffic, verify, switch back, retire
//! the old one, and observe what runs. [`SingleHost`] (one Docker Engine with deployctl's proxy in
//! front, controlled through `docker exec`) is the basic implementation.
//!
//! A fleet of hosts (`fleet.rs`) is another implementation over one `SingleHost` per host; a
//! Docker Swarm service would be a third: "prepare" updates the service's idle slot, "switch"
//! flips every proxy task.
//! Nothing in the interpreter names a host, a container engine or the proxy's transport.

use async_trait::async_trait;

use super::Session;
use super::plan::Observed;
pub use super::watch::VerifyRules;
use super::watch::{drain_leftover, switch_to, verify, watch_health};
use crate::config::Duration;
use crate::engine::{ContainerState, EngineError};
use crate::error::Error;
use crate::health::HealthSpec;
use crate::host::container::{release_spec, restored_spec, spec_record};
use crate::host::{self, engine_err};
use crate::names::Color;
use crate::proxy::protocol::{ReleaseRecord, ReleaseSpec, Target};
use crate::report::FailureReport;

/// How a run takes the deploy lock.
pub struct LockRequest<'p> {
    /// The proxy image (the lock is a container made from it).
    pub image: &'p str,
    /// `deploy 1.2.0`, `rollback to 1.1.0`.
    pub reason: &'p str,
    pub wait: std::time::Duration,
    pub stale_after: std::time::Duration,
}

/// The new release as a `StartRelease` step describes it.
pub struct NewRelease<'p> {
    /// The slot's name (on a single host, the container's).
    pub container: &'p str,
    /// The image reference; `image_id`, when known, is what is really run.
    pub image: &'p str,
    pub image_id: Option<&'p str>,
    pub color: Color,
    pub version: &'p str,
    pub network: &'p str,
    /// Re-create the release as it ran, from its ledger record (a rollback).
    pub restore: Option<&'p ReleaseSpec>,
}

/// What the interpreter drives. Errors (`anyhow`) make the run impossible (the target cannot be
/// reached); a `FailureReport` refuses the release and sends the interpreter down the failure
/// branch.
#[async_trait]
pub trait DeployTarget: Send + Sync {
    /// What runs now: the router, the releases, the ledger.
    async fn observe(&self) -> anyhow::Result<Observed>;
    /// Takes the deploy lock (on every host, in a fixed order, all or nothing).
    async fn acquire_lock(&self, req: &LockRequest<'_>) -> anyhow::Result<()>;
    /// Makes the image present wherever a release starts (a fleet ships it to the hosts that
    /// lack it; one host already has what it built).
    async fn ship_image(&self, image: &str, image_id: Option<&str>) -> anyhow::Result<()>;
    /// Removes the images of old releases (a failure is a warning).
    async fn prune(&self, images: &[String]);
    /// One row per host for the report (empty for one host).
    fn hosts(&self) -> Vec<crate::report::HostReport> {
        Vec::new()
    }
    /// The private network releases and the router share.
    async fn ensure_network(&self) -> anyhow::Result<()>;
    /// The router in front of the releases (started or created from `router_image`).
    async fn ensure_router(&self, router_image: &str) -> anyhow::Result<()>;
    /// Writes one ledger record (replacing the one with the same id).
    async fn record(&self, record: &ReleaseRecord) -> anyhow::Result<()>;
    /// Frees the slot the new release needs: a leftover's open requests get the drain timeout,
    /// then it is removed.
    async fn clear_slot(&self, container: &str) -> anyhow::Result<()>;
    /// Creates the new release without starting it; returns what the ledger keeps of its spec.
    async fn create_release(&self, release: &NewRelease<'_>) -> anyhow::Result<ReleaseSpec>;
    /// Starts a created (or a kept, stopped) release.
    async fn start_release(&self, container: &str) -> Result<(), FailureReport>;
    /// Waits until the release passes the health checks of `spec` (and, with `docker_health`,
    /// Docker's own HEALTHCHECK); fails when they fail or it crashes.
    async fn health_gate(
        &self,
        container: &str,
        spec: &HealthSpec,
        docker_health: bool,
    ) -> Result<(), FailureReport>;
    /// Where the router sends traffic for a release in a slot.
    fn route_to(&self, container: &str, version: &str, color: Color) -> Target;
    /// Sends traffic to `to` once it passes a last check against `health`; requests to the
    /// previous release get up to `drain`. Returns how long the swap itself took, in
    /// milliseconds. Also the way back after a failure.
    async fn switch(
        &self,
        to: &Target,
        health: &HealthSpec,
        drain: Duration,
    ) -> anyhow::Result<f64>;
    /// Watches the live release for the verify window against `rules`.
    async fn verify(&self, container: &str, rules: &VerifyRules) -> Result<(), FailureReport>;
    /// Stops a release and keeps it for rollback; one already gone is not an error.
    async fn retire(&self, container: &str) -> anyhow::Result<()>;
    /// A release's state and last log lines, for a failure report.
    async fn inspect(&self, container: &str) -> (Option<ContainerState>, Vec<String>);
    /// Releases this run's deploy lock (taken before the plan was made).
    async fn release_lock(&self) -> anyhow::Result<()>;
    /// Whether a release runs (for the cleanup after a signal).
    async fn running(&self, container: &str) -> bool;
    /// Stops a release within `grace` (the cleanup after a signal has no time for more); one
    /// already gone is not an error.
    async fn stop(&self, container: &str, grace: std::time::Duration) -> anyhow::Result<()>;
}

/// One Docker host: releases are containers, the router is deployctl's proxy container.
pub struct SingleHost<'s, 'a> {
    session: &'s Session<'a>,
}

impl<'s, 'a> SingleHost<'s, 'a> {
    pub fn new(session: &'s Session<'a>) -> Self {
        SingleHost { session }
    }
}

#[async_trait]
impl DeployTarget for SingleHost<'_, '_> {
    async fn observe(&self) -> anyhow::Result<Observed> {
        self.session.observe().await
    }

    async fn acquire_lock(&self, req: &LockRequest<'_>) -> anyhow::Result<()> {
        let s = self.session;
        crate::lock::acquire(
            s.engine,
            &s.names,
            req.image,
            req.reason,
            req.wait,
            req.stale_after,
            false,
            &s.loaded.files[0],
        )
        .await
    }

    async fn ship_image(&self, image: &str, image_id: Option<&str>) -> anyhow::Result<()> {
        // Only with `build.local`: else the image was built here.
        if let Some(builder) = self.session.builder {
            let wanted = image_id.unwrap_or(image);
            host::ship_image(builder, self.session.engine, image, wanted).await?;
        }
        Ok(())
    }

    async fn prune(&self, images: &[String]) {
        super::ledger::prune(self.session, images).await
    }

    async fn ensure_network(&self) -> anyhow::Result<()> {
        host::ensure_network(self.session.engine, &self.session.names).await
    }

    async fn ensure_router(&self, router_image: &str) -> anyhow::Result<()> {
        let s = self.session;
        host::ensure_proxy(s.engine, s.loaded, &s.names, router_image).await
    }

    async fn record(&self, record: &ReleaseRecord) -> anyhow::Result<()> {
        host::proxy_record(self.session.engine, &self.session.names, record).await
    }

    async fn clear_slot(&self, container: &str) -> anyhow::Result<()> {
        drain_leftover(self.session, container).await;
        match self.session.engine.remove_container(container, true).await {
            Ok(()) | Err(EngineError::NotFound(_)) => Ok(()),
            Err(e) => Err(engine_err(e)),
        }
    }

    async fn create_release(&self, release: &NewRelease<'_>) -> anyhow::Result<ReleaseSpec> {
        let s = self.session;
        // A container of that name not listed as ours (by labels) is someone else's.
        host::owned_container(s.engine, &s.names, release.container).await?;
        let image = release.image_id.unwrap_or(release.image);
        let spec = match release.restore {
            Some(restore) => restored_spec(
                s.loaded,
                &s.names,
                restore,
                release.container,
                release.color,
                release.version,
            )
            .map_err(Error::DeployFailed)?,
            None => release_spec(
                s.loaded,
                &s.names,
                release.container,
                image,
                release.color,
                release.version,
                release.network,
            ),
        };
        let id = s.engine.create_container(&spec).await.map_err(engine_err)?;
        Ok(spec_record(s.loaded, &spec, image, id))
    }

    async fn start_release(&self, container: &str) -> Result<(), FailureReport> {
        self.session
            .engine
            .start_container(container)
            .await
            .map_err(|e| FailureReport {
                reason: format!("{:#}", engine_err(e)),
                ..Default::default()
            })
    }

    async fn health_gate(
        &self,
        container: &str,
        spec: &HealthSpec,
        docker_health: bool,
    ) -> Result<(), FailureReport> {
        watch_health(self.session, container, spec, None, docker_health)
            .await
            .map_err(|f| f.report)
    }

    fn route_to(&self, container: &str, version: &str, color: Color) -> Target {
        host::target_for(&self.session.loaded.config, container, version, color)
    }

    async fn switch(
        &self,
        to: &Target,
        health: &HealthSpec,
        drain: Duration,
    ) -> anyhow::Result<f64> {
        switch_to(self.session, to, health, drain).await
    }

    async fn verify(&self, container: &str, rules: &VerifyRules) -> Result<(), FailureReport> {
        verify(self.session, container, rules)
            .await
            .map_err(|f| f.report)
    }

    async fn retire(&self, container: &str) -> anyhow::Result<()> {
        let stop_timeout = self.session.loaded.config.deploy.stop_timeout.get();
        self.stop(container, stop_timeout).await
    }

    async fn running(&self, container: &str) -> bool {
        matches!(
            self.session.engine.inspect_container(container).await,
            Ok(Some(info)) if info.state.running
        )
    }

    async fn stop(&self, container: &str, grace: std::time::Duration) -> anyhow::Result<()> {
        match self.session.engine.stop_container(container, grace).await {
            Ok(()) | Err(EngineError::NotFound(_)) => Ok(()),
            Err(e) => Err(anyhow::Error::new(e)),
        }
    }

    async fn inspect(&self, container: &str) -> (Option<ContainerState>, Vec<String>) {
        let engine = self.session.engine;
        let state = match engine.inspect_container(container).await {
            Ok(Some(info)) => Some(info.state),
            _ => None,
        };
        let logs = engine.logs_tail(container, 50).await.unwrap_or_default();
        (state, logs)
    }

    async fn release_lock(&self) -> anyhow::Result<()> {
        crate::lock::release(self.session.engine, &self.session.names, false)
            .await
            .map(|_| ())
    }
}
