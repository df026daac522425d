//! The fakes of the interpreter tests: an engine that refuses everything (the interpreter must
//! not reach it directly) and a `DeployTarget` that records what it is asked and fails where a
//! test says.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration as StdDuration;

use async_trait::async_trait;

use crate::config::Duration;
use crate::engine::*;
use crate::health::HealthSpec;
use crate::names::Color;
use crate::proxy::protocol::{ReleaseRecord, ReleaseSpec, Target};
use crate::release::plan::Observed;
use crate::release::target::{DeployTarget, NewRelease, VerifyRules};
use crate::report::FailureReport;

/// Every call fails: what the interpreter needs goes through the target.
pub(super) struct NoEngine;

fn refused<T>() -> EngineResult<T> {
    Err(EngineError::Api(
        "the interpreter tests have no engine".into(),
    ))
}

#[async_trait]
impl Engine for NoEngine {
    async fn ping(&self) -> EngineResult<EngineInfo> {
        refused()
    }
    async fn image_exists(&self, _: &str) -> EngineResult<bool> {
        refused()
    }
    fn export_image(&self, _: &str) -> crate::engine::ImageTar {
        Box::pin(futures_util::stream::once(async { refused() }))
    }
    async fn import_image(&self, _: crate::engine::ImageTar) -> EngineResult<()> {
        refused()
    }
    async fn build_image(&self, _: &BuildRequest, _: LineSink<'_>) -> EngineResult<String> {
        refused()
    }
    async fn build_image_from_tar(
        &self,
        _: Vec<u8>,
        _: &str,
        _: &BTreeMap<String, String>,
    ) -> EngineResult<()> {
        refused()
    }
    async fn push_image(
        &self,
        _: &str,
        _: &str,
        _: Option<&RegistryAuth>,
        _: LineSink<'_>,
    ) -> EngineResult<()> {
        refused()
    }
    async fn list_images(&self, _: &[(&str, &str)]) -> EngineResult<Vec<ImageInfo>> {
        refused()
    }
    async fn remove_image(&self, _: &str) -> EngineResult<()> {
        refused()
    }
    async fn ensure_network(&self, _: &str, _: &BTreeMap<String, String>) -> EngineResult<()> {
        refused()
    }
    async fn remove_network(&self, _: &str) -> EngineResult<()> {
        refused()
    }
    async fn ensure_volume(&self, _: &str, _: &BTreeMap<String, String>) -> EngineResult<()> {
        refused()
    }
    async fn remove_volume(&self, _: &str) -> EngineResult<()> {
        refused()
    }
    async fn create_container(&self, _: &ContainerSpec) -> EngineResult<String> {
        refused()
    }
    async fn start_container(&self, _: &str) -> EngineResult<()> {
        refused()
    }
    async fn stop_container(&self, _: &str, _: StdDuration) -> EngineResult<()> {
        refused()
    }
    async fn restart_container(&self, _: &str, _: StdDuration) -> EngineResult<()> {
        refused()
    }
    async fn remove_container(&self, _: &str, _: bool) -> EngineResult<()> {
        refused()
    }
    async fn inspect_container(&self, _: &str) -> EngineResult<Option<ContainerInfo>> {
        refused()
    }
    async fn list_containers(&self, _: &[(&str, &str)]) -> EngineResult<Vec<ContainerInfo>> {
        refused()
    }
    async fn exec_with_stdin(
        &self,
        _: &str,
        _: &[String],
        _: Option<Vec<u8>>,
        _: LineSink<'_>,
    ) -> EngineResult<ExecOutput> {
        refused()
    }
    async fn logs_tail(&self, _: &str, _: usize) -> EngineResult<Vec<String>> {
        refused()
    }
    async fn image_id(&self, _: &str) -> EngineResult<Option<String>> {
        refused()
    }
    async fn network_labels(&self, _: &str) -> EngineResult<Option<BTreeMap<String, String>>> {
        refused()
    }
    async fn volume_labels(&self, _: &str) -> EngineResult<Option<BTreeMap<String, String>>> {
        refused()
    }
}

/// Records each operation as `op target`, and refuses the release at `fail_at`.
#[derive(Default)]
pub(super) struct FakeTarget {
    calls: Mutex<Vec<String>>,
    /// The health rules each operation was given, as `op url threshold`.
    specs: Mutex<Vec<String>>,
    fail_at: Option<&'static str>,
    /// The call (counted from 0) that never returns, as if a signal came while it ran.
    hang_at: Option<usize>,
    /// Told when the call `hang_at` is reached.
    pub(super) hung: tokio::sync::Notify,
    /// Releases told to stop (those not in it run).
    stopped: Mutex<BTreeSet<String>>,
}

impl FakeTarget {
    pub(super) fn failing_at(op: &'static str) -> Self {
        FakeTarget {
            fail_at: Some(op),
            ..Default::default()
        }
    }
    pub(super) fn hanging_at(call: usize) -> Self {
        FakeTarget {
            hang_at: Some(call),
            ..Default::default()
        }
    }

    /// `call`, and never returns if this is the call to hang at.
    async fn op(&self, op: &str, what: &str) -> Result<(), String> {
        let r = self.call(op, what);
        if let Some(n) = self.hang_at
            && self.calls().len() == n + 1
        {
            self.hung.notify_one();
            std::future::pending::<()>().await;
        }
        r
    }

    pub(super) fn is_stopped(&self, container: &str) -> bool {
        self.stopped
            .lock()
            .expect("stopped lock")
            .contains(container)
    }

    fn stopping(&self, container: &str) {
        self.stopped
            .lock()
            .expect("stopped lock")
            .insert(container.to_string());
    }

    /// Records the call; the reason of the scripted failure when `op` is the one to fail.
    fn call(&self, op: &str, what: &str) -> Result<(), String> {
        self.calls
            .lock()
            .expect("calls lock")
            .push(format!("{op} {what}").trim_end().to_string());
        match self.fail_at {
            Some(f) if f == op => Err(format!("{op} failed (scripted)")),
            _ => Ok(()),
        }
    }

    fn spec(&self, op: &str, spec: &HealthSpec) {
        self.specs
            .lock()
            .expect("specs lock")
            .push(format!("{op} {} {}", spec.url, spec.healthy_threshold));
    }

    pub(super) fn specs(&self) -> Vec<String> {
        self.specs.lock().expect("specs lock").clone()
    }

    pub(super) fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("calls lock").clone()
    }
}

#[async_trait]
impl DeployTarget for FakeTarget {
    async fn observe(&self) -> anyhow::Result<Observed> {
        Ok(Observed::default())
    }
    async fn acquire_lock(&self, _: &super::super::target::LockRequest<'_>) -> anyhow::Result<()> {
        self.op("acquire_lock", "")
            .await
            .map_err(|reason| anyhow::anyhow!(reason))
    }
    async fn ship_image(&self, image: &str, _: Option<&str>) -> anyhow::Result<()> {
        self.op("ship_image", image)
            .await
            .map_err(|reason| anyhow::anyhow!(reason))
    }
    async fn prune(&self, images: &[String]) {
        let _ = self.op("prune", &images.join(" ")).await;
    }
    async fn ensure_network(&self) -> anyhow::Result<()> {
        self.op("ensure_network", "")
            .await
            .map_err(|reason| anyhow::anyhow!(reason))
    }
    async fn ensure_router(&self, _: &str) -> anyhow::Result<()> {
        self.op("ensure_router", "")
            .await
            .map_err(|reason| anyhow::anyhow!(reason))
    }
    async fn record(&self, record: &ReleaseRecord) -> anyhow::Result<()> {
        let what = format!("{} {}", record.version, record.outcome);
        self.op("record", &what)
            .await
            .map_err(|reason| anyhow::anyhow!(reason))
    }
    async fn clear_slot(&self, container: &str) -> anyhow::Result<()> {
        self.op("clear_slot", container)
            .await
            .map_err(|reason| anyhow::anyhow!(reason))
    }
    async fn create_release(&self, release: &NewRelease<'_>) -> anyhow::Result<ReleaseSpec> {
        self.op("create_release", release.container)
            .await
            .map_err(|reason| anyhow::anyhow!(reason))?;
        Ok(ReleaseSpec {
            image_id: release.image.to_string(),
            env: vec![],
            cmd: None,
            ports: vec![],
            labels: BTreeMap::new(),
            container_id: Some("fake".into()),
        })
    }
    async fn start_release(&self, container: &str) -> Result<(), FailureReport> {
        self.op("start_release", container).await.map_err(refusal)
    }
    async fn health_gate(
        &self,
        container: &str,
        spec: &HealthSpec,
        _: bool,
    ) -> Result<(), FailureReport> {
        self.spec("health_gate", spec);
        self.op("health_gate", container).await.map_err(refusal)
    }
    fn route_to(&self, container: &str, version: &str, color: Color) -> Target {
        Target {
            addr: format!("{container}:8080"),
            container: container.into(),
            version: version.into(),
            color,
        }
    }
    async fn switch(&self, to: &Target, spec: &HealthSpec, _: Duration) -> anyhow::Result<f64> {
        self.spec("switch", spec);
        self.op("switch", &to.container)
            .await
            .map_err(|reason| anyhow::anyhow!(reason))?;
        Ok(1.0)
    }
    async fn verify(&self, container: &str, rules: &VerifyRules) -> Result<(), FailureReport> {
        self.spec("verify", &rules.health);
        self.op("verify", container).await.map_err(refusal)
    }
    async fn retire(&self, container: &str) -> anyhow::Result<()> {
        // A hung stop has not reached the host yet: the release still runs (the harder case
        // for the cleanup, which must not send traffic back to it).
        let r = self.op("retire", container).await;
        self.stopping(container);
        r.map_err(|reason| anyhow::anyhow!(reason))
    }
    async fn inspect(&self, _: &str) -> (Option<ContainerState>, Vec<String>) {
        (None, vec!["last log line".into()])
    }
    async fn release_lock(&self) -> anyhow::Result<()> {
        self.op("release_lock", "")
            .await
            .map_err(|reason| anyhow::anyhow!(reason))
    }
    async fn running(&self, container: &str) -> bool {
        !self.is_stopped(container)
    }
    async fn stop(&self, container: &str, _: StdDuration) -> anyhow::Result<()> {
        self.stopping(container);
        self.op("stop", container)
            .await
            .map_err(|reason| anyhow::anyhow!(reason))
    }
}

fn refusal(reason: String) -> FailureReport {
    FailureReport {
        reason,
        ..Default::default()
    }
}
