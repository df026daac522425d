//! Releasing: one deploy or rollback from start to outcome. The session (what a run works with
//! and how far it got), the entry points `deploy`, `rollback` and their dry-run previews.
//!
//! Invariant: until the switch, the live release is never touched, so any failure before it only
//! has to stop the new container. After the switch, a failure switches back first and reports after.
//!
//! - `plan`: the pure planner (configuration + observed state -> steps)
//! - `pipeline`: before the lock (prerequisites, tests, build, push), then the locked part
//! - `execute`: the interpreter of the plan's steps after the lock, and the failure branch
//! - `watch`: the health gate, the verify window, crash detection, the switch
//! - `ledger`: release records, marks and pruning
//! - `outcome`: the report, hooks and notifications once the outcome is known
//! - `recover`: cleanup after a signal
//! - `tests`: the interpreter against a fake target, without Docker
//! - `target`: the seam the interpreter drives (`DeployTarget`), and its one-host implementation
//! - `fleet`: the same over several hosts (`docker.hosts`)

mod execute;
pub mod fleet;
mod ledger;
mod outcome;
mod pipeline;
pub mod plan;
mod recover;
pub mod target;
mod watch;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Loaded;
use crate::engine::Engine;
use crate::error::Error;
use crate::host::{self, engine_err};
use crate::names::{Color, Names};
use crate::proxy::protocol::{Outcome, ReleaseRecord, Target};
pub use crate::report::{FailureReport, Report};
use crate::report::{Phase, PhaseName, Reporter};
use crate::run;
use execute::execute;
use outcome::Failed;
use pipeline::{deploy_pipeline, proxy_image};
use plan::{DeployRequest, Observed, Plan};
pub use recover::recover;

/// Everything one deploy or rollback works with.
pub struct Session<'a> {
    pub loaded: &'a Loaded,
    pub engine: &'a dyn Engine,
    pub reporter: &'a dyn Reporter,
    pub names: Names,
    /// The engine address as configured (names the host in a fleet's messages).
    pub host: String,
    /// A fleet: the sessions of the other hosts, in the configured order (empty: one host).
    pub fleet: Vec<Session<'a>>,
    /// `build.local`: the engine that builds (this machine's), whose image is shipped to the hosts.
    pub builder: Option<&'a dyn Engine>,
    /// What has been done so far, for cleanup after a signal.
    pub progress: Arc<Mutex<Progress>>,
    /// The plan's steps walked so far, as `Step::describe` puts them.
    executed: Mutex<Vec<String>>,
}

#[derive(Debug, Default, Clone)]
pub struct Progress {
    pub lock_held: bool,
    /// The container started by this run and its version.
    pub started: Option<(String, String)>,
    /// The live target before this run switched (set when a switch begins).
    pub switched_from: Option<Target>,
    /// The target this run switches to (set when a switch begins).
    pub switched_to: Option<Target>,
    pub switch_started: bool,
    /// The plan's checks of the two sides of the switch (the `Switch` step's for the new release,
    /// the `SwitchBack` step's for the previous one), for the cleanup after a signal.
    pub switch_health: Option<crate::health::HealthSpec>,
    pub back_health: Option<crate::health::HealthSpec>,
    /// The plan's drain timeout of the switch.
    pub switch_drain: Option<crate::config::Duration>,
    /// The previous release's container was told to stop: traffic must not go back to it.
    pub old_stopping: bool,
    pub record: Option<ReleaseRecord>,
    /// The id of the image this run built (or found), once known.
    pub image_id: Option<String>,
    pub finished: bool,
}

#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub version: Option<String>,
    pub image: Option<String>,
    pub skip_tests: bool,
    pub lock_wait: Duration,
}

impl<'a> Session<'a> {
    pub fn new(loaded: &'a Loaded, engine: &'a dyn Engine, reporter: &'a dyn Reporter) -> Self {
        Session {
            names: Names::new(&loaded.config.app.name, &loaded.env),
            loaded,
            engine,
            reporter,
            host: String::new(),
            fleet: Vec::new(),
            builder: None,
            progress: Arc::default(),
            executed: Mutex::default(),
        }
    }

    /// Names the host this session drives (for a fleet's messages and rows).
    pub fn on_host(mut self, host: impl Into<String>) -> Self {
        self.host = host.into();
        self
    }

    /// Makes this session the first host of a fleet whose other hosts are `others`.
    pub fn with_fleet(mut self, others: Vec<Session<'a>>) -> Self {
        self.fleet = others;
        self
    }

    /// Builds on `builder` (`build.local`) and ships the image to the hosts.
    pub fn with_builder(mut self, builder: Option<&'a dyn Engine>) -> Self {
        self.builder = builder;
        self
    }

    /// The engine images are built on.
    pub fn build_engine(&self) -> &'a dyn Engine {
        self.builder.unwrap_or(self.engine)
    }

    /// Every host's session, the first (this one) first.
    pub fn hosts(&self) -> Vec<&Session<'a>> {
        std::iter::once(self).chain(self.fleet.iter()).collect()
    }

    /// What the run drives: this host, or the fleet it leads.
    pub fn target(&self) -> Box<dyn target::DeployTarget + '_> {
        if self.fleet.is_empty() {
            Box::new(target::SingleHost::new(self))
        } else {
            Box::new(fleet::Fleet::new(self.hosts()))
        }
    }

    /// Where this host's proxy serves the app.
    pub fn url(&self) -> String {
        let config = &self.loaded.config;
        let engine = Some(self.host.as_str()).filter(|h| !h.is_empty());
        match engine {
            Some(engine) => crate::public_url::derive(
                &config.proxy.listen,
                Some(engine),
                config.proxy.public_url.as_deref(),
            ),
            None => plan::public_url(config),
        }
    }

    /// Logs a step of the plan as walked.
    fn walked(&self, step: &plan::Step) {
        tracing::debug!(step = %step.describe(), "executing");
        if let Ok(mut e) = self.executed.lock() {
            e.push(step.describe());
        }
    }

    /// The steps walked so far.
    pub fn executed(&self) -> Vec<String> {
        self.executed.lock().map(|e| e.clone()).unwrap_or_default()
    }

    fn lock_held(&self) -> bool {
        self.progress.lock().map(|p| p.lock_held).unwrap_or(true)
    }

    fn progress(&self, f: impl FnOnce(&mut Progress)) {
        if let Ok(mut p) = self.progress.lock() {
            f(&mut p);
        }
    }

    /// The environment hooks see.
    fn hook_env(
        &self,
        version: &str,
        previous: Option<&str>,
        color: Color,
        outcome: Option<Outcome>,
    ) -> Vec<(String, String)> {
        vec![
            ("DEPLOYCTL_APP".into(), self.names.app.clone()),
            ("DEPLOYCTL_ENV".into(), self.names.env.clone()),
            ("DEPLOYCTL_VERSION".into(), version.into()),
            (
                "DEPLOYCTL_PREVIOUS_VERSION".into(),
                previous.unwrap_or("").into(),
            ),
            ("DEPLOYCTL_COLOR".into(), color.to_string()),
            (
                "DEPLOYCTL_OUTCOME".into(),
                outcome.map(Outcome::as_str).unwrap_or("").into(),
            ),
        ]
    }

    async fn run_command(
        &self,
        source: &str,
        spec: (&[String], bool),
        env: &[(String, String)],
        timeout: Duration,
    ) -> Result<(), Failed> {
        run::run(
            spec.0,
            spec.1,
            &self.loaded.root,
            env,
            timeout,
            source,
            self.reporter,
        )
        .await
        .map_err(|f| Failed {
            report: FailureReport {
                reason: format!("{source} failed: {f}"),
                ..Default::default()
            },
        })
    }

    /// Observes the host, or says why it could not.
    pub async fn observe(&self) -> anyhow::Result<Observed> {
        host::observe(self.engine, &self.names).await
    }

    /// Observes (through `target`, every host of a fleet) after starting a stopped proxy: only
    /// a running proxy can tell which release is live (its state file restores the route), and
    /// planning without that would pick the wrong colour.
    async fn observe_started(
        &self,
        target: &dyn target::DeployTarget,
        proxy_image: &str,
    ) -> anyhow::Result<Observed> {
        let observed = target.observe().await?;
        if observed.proxy.as_ref().is_some_and(|p| !p.running) {
            target.ensure_router(proxy_image).await?;
            return target.observe().await;
        }
        Ok(observed)
    }
}

/// The plan `deploy` would follow. Docker being unreachable (`engine` None or failing) is not an
/// error here: the plan says the live state is unknown.
pub async fn preview_deploy(
    loaded: &Loaded,
    engine: Option<&dyn Engine>,
    opts: &DeployOptions,
) -> anyhow::Result<Plan> {
    let version = crate::version::resolve(opts.version.as_deref(), &loaded.root)?;
    let names = Names::new(&loaded.config.app.name, &loaded.env);
    let observed = match engine {
        None => Observed::unknown("the Docker Engine cannot be reached"),
        Some(engine) => match engine.ping().await {
            Ok(_) => host::observe(engine, &names).await?,
            Err(e) => Observed::unknown(e.to_string()),
        },
    };
    let req = DeployRequest {
        version,
        image: opts.image.clone(),
        image_id: None,
        skip_tests: opts.skip_tests,
        proxy_image: proxy_image_name(loaded),
    };
    Ok(plan::plan_deploy(loaded, &req, &observed).with_lock_wait(opts.lock_wait))
}

/// The proxy image name without building it (for previews).
fn proxy_image_name(loaded: &Loaded) -> String {
    loaded
        .config
        .proxy
        .image
        .clone()
        .unwrap_or_else(|| host::self_image_name().unwrap_or_else(|_| "deployctl-proxy".into()))
}

pub async fn preview_rollback(
    session: &Session<'_>,
    to: Option<&str>,
    current_config: bool,
) -> anyhow::Result<Plan> {
    session.engine.ping().await.map_err(engine_err)?;
    let observed = session.observe().await?;
    plan::plan_rollback(
        session.loaded,
        to,
        &observed,
        &proxy_image_name(session.loaded),
        current_config,
    )
    .map_err(|m| Error::DeployFailed(m).into())
}

pub async fn deploy(session: &Session<'_>, opts: &DeployOptions) -> anyhow::Result<Report> {
    let mut report = deploy_pipeline(session, opts).await?;
    report.steps = session.executed();
    Ok(report)
}

pub async fn rollback(
    session: &Session<'_>,
    to: Option<&str>,
    lock_wait: Duration,
    current_config: bool,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let config = &session.loaded.config;
    let engine = session.engine;
    engine.ping().await.map_err(engine_err)?;
    let proxy_image = proxy_image(session).await?;
    let phase = Phase::start(session.reporter, PhaseName::Lock, session.names.lock());
    let reason = format!(
        "rollback{}",
        to.map(|v| format!(" to {v}")).unwrap_or_default()
    );
    let target = session.target();
    target
        .acquire_lock(&target::LockRequest {
            image: &proxy_image,
            reason: &reason,
            wait: lock_wait,
            stale_after: config.deploy.lock_stale_after.get(),
        })
        .await?;
    session.progress(|p| p.lock_held = true);
    phase.ok("");
    let result = async {
        let observed = session
            .observe_started(target.as_ref(), &proxy_image)
            .await?;
        let plan = plan::plan_rollback(session.loaded, to, &observed, &proxy_image, current_config)
            .map_err(Error::DeployFailed)?;
        // The lock was taken before planning: the plan is made from what is there under it.
        session.walked(&plan.steps[0]);
        execute(
            session,
            target.as_ref(),
            &plan,
            &observed,
            &plan.steps[1..],
            started,
            &proxy_image,
        )
        .await
    }
    .await;
    // The plan releases the lock; this is for runs that ended early (an error).
    if session.lock_held()
        && let Err(e) = target.release_lock().await
    {
        session
            .reporter
            .warn(format!("could not release the lock: {e:#}"));
    }
    session.progress(|p| {
        p.lock_held = false;
        p.finished = true;
    });
    let mut report = result?;
    report.steps = session.executed();
    Ok(report)
}
