//! Deploy and rollback: the executor of a plan, with failure handling.
//!
//! Invariant: until the switch, the live release is never touched, so any failure before it only
//! has to stop the new container. After the switch, a failure switches back first and reports after.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{CommandSpec, Loaded};
use crate::engine::{
    BuildRequest, ContainerSpec, ContainerState, Engine, EngineError, HealthcheckSpec,
    RegistryAuth, RestartPolicy, labels,
};
use crate::error::Error;
use crate::health::{HealthOutcome, ProbeResult};
use crate::host::{self, engine_err, now_unix};
use crate::lock;
use crate::names::Names;
use crate::plan::{self, DeployRequest, Observed, Plan, Step, command_argv};
use crate::proxy::protocol::{Outcome, ReleaseRecord, ReleaseSpec, SpecEnv, SwitchRequest, Target};
use crate::report::{Phase, Reporter};
use crate::run;

/// Everything one deploy or rollback works with.
pub struct Session<'a> {
    pub loaded: &'a Loaded,
    pub engine: &'a dyn Engine,
    pub reporter: &'a dyn Reporter,
    pub names: Names,
    /// What has been done so far, for cleanup after a signal.
    pub progress: Arc<Mutex<Progress>>,
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
    /// The previous release's container was told to stop: traffic must not go back to it.
    pub old_stopping: bool,
    pub record: Option<ReleaseRecord>,
    pub finished: bool,
}

#[derive(Debug, Clone)]
pub struct DeployOptions {
    pub version: Option<String>,
    pub image: Option<String>,
    pub skip_tests: bool,
    pub lock_wait: Duration,
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
}

impl FailureReport {
    pub fn render(&self) -> String {
        let mut out = format!("reason: {}\n", self.reason);
        if !self.probes.is_empty() {
            out.push_str("last health checks:\n");
            for p in &self.probes {
                let status = p
                    .status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "-".into());
                out.push_str(&format!(
                    "  {:>6} ms  status {status}  {}  {}\n",
                    p.at_ms,
                    p.error.as_deref().unwrap_or("ok"),
                    p.body_head
                        .chars()
                        .take(80)
                        .collect::<String>()
                        .replace('\n', " ")
                ));
            }
        }
        if let (Some(name), Some(s)) = (&self.container, &self.container_state) {
            out.push_str(&format!(
                "container {name}: {} (exit code {}, OOM killed {}, restarts {})\n",
                s.status, s.exit_code, s.oom_killed, s.restart_count
            ));
        }
        if !self.logs.is_empty() {
            out.push_str(&format!("last {} log lines:\n", self.logs.len()));
            for l in &self.logs {
                out.push_str(&format!("  | {l}\n"));
            }
        }
        out
    }
}

/// The outcome of a deploy or rollback, as printed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub kind: String,
    pub app: String,
    pub env: String,
    pub version: String,
    pub color: String,
    pub container: String,
    pub url: String,
    pub previous: Option<String>,
    /// live, failed, rolled_back
    pub outcome: String,
    pub duration_ms: u64,
    pub swap_ms: Option<f64>,
    pub failure: Option<FailureReport>,
}

/// A failure while executing, with how far it got.
struct Failed {
    report: FailureReport,
}

impl From<anyhow::Error> for Failed {
    fn from(e: anyhow::Error) -> Self {
        Failed {
            report: FailureReport {
                reason: format!("{e:#}"),
                ..Default::default()
            },
        }
    }
}

impl<'a> Session<'a> {
    pub fn new(loaded: &'a Loaded, engine: &'a dyn Engine, reporter: &'a dyn Reporter) -> Self {
        Session {
            names: Names::new(&loaded.config.app.name, &loaded.env),
            loaded,
            engine,
            reporter,
            progress: Arc::default(),
        }
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
        color: &str,
        outcome: &str,
    ) -> Vec<(String, String)> {
        vec![
            ("DEPLOYCTL_APP".into(), self.names.app.clone()),
            ("DEPLOYCTL_ENV".into(), self.names.env.clone()),
            ("DEPLOYCTL_VERSION".into(), version.into()),
            (
                "DEPLOYCTL_PREVIOUS_VERSION".into(),
                previous.unwrap_or("").into(),
            ),
            ("DEPLOYCTL_COLOR".into(), color.into()),
            ("DEPLOYCTL_OUTCOME".into(), outcome.into()),
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

    /// Observes after starting a stopped proxy: only a running proxy can tell which release is
    /// live (its state file restores the route), and planning without that would pick the wrong colour.
    async fn observe_started(&self, proxy_image: &str) -> anyhow::Result<Observed> {
        let observed = self.observe().await?;
        if observed.proxy.as_ref().is_some_and(|p| !p.running) {
            host::ensure_proxy(self.engine, self.loaded, &self.names, proxy_image).await?;
            return self.observe().await;
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
    Ok(plan::plan_deploy(loaded, &req, &observed))
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
    let report = deploy_pipeline(session, opts).await?;
    after_outcome(session, &report).await;
    Ok(report)
}

/// Hooks and notifications once the outcome is known. Their failures are reported as warnings,
/// never turned into another outcome.
async fn after_outcome(session: &Session<'_>, report: &Report) {
    let config = &session.loaded.config;
    let env = session.hook_env(
        &report.version,
        report.previous.as_deref(),
        &report.color,
        &report.outcome,
    );
    match (report.kind.as_str(), report.ok) {
        ("deploy", true) => {
            run_hooks(session, "post_deploy", &config.hooks.post_deploy, &env).await
        }
        ("rollback", true) => {
            run_hooks(session, "on_rollback", &config.hooks.on_rollback, &env).await
        }
        _ => run_hooks(session, "on_failure", &config.hooks.on_failure, &env).await,
    }
    if report.outcome == "rolled_back" {
        run_hooks(session, "on_rollback", &config.hooks.on_rollback, &env).await;
    }
    if !config.notify.is_empty() {
        let mut notification = crate::notify::Notification::from_report(report);
        // Failure reasons can quote logs: secrets never leave for a chat channel.
        notification.reason = notification
            .reason
            .map(|r| session.loaded.redactor.redact(&r).into_owned());
        let phase = Phase::start(
            session.reporter,
            "notify",
            format!("{} target(s)", config.notify.len()),
        );
        let deliveries =
            crate::notify::send_all(&config.notify, &notification, session.reporter).await;
        let failed = deliveries.iter().filter(|d| !d.ok).count();
        if failed == 0 {
            phase.ok(format!("{} sent", deliveries.len()));
        } else {
            phase.failed(format!("{failed} of {} failed", deliveries.len()));
        }
    }
}

async fn deploy_pipeline(session: &Session<'_>, opts: &DeployOptions) -> anyhow::Result<Report> {
    let started = Instant::now();
    let config = &session.loaded.config;
    let reporter = session.reporter;
    let engine = session.engine;
    let version = crate::version::resolve(opts.version.as_deref(), &session.loaded.root)?;
    let phase = Phase::start(reporter, "docker", "connecting");
    let info = engine.ping().await.map_err(engine_err)?;
    phase.ok(format!("{} (API {})", info.host, info.api_version));

    let observed = session.observe().await?;
    let proxy_image = proxy_image(session).await?;
    let mut req = DeployRequest {
        version: version.clone(),
        image: opts.image.clone(),
        image_id: None,
        skip_tests: opts.skip_tests,
        proxy_image: proxy_image.clone(),
    };
    let first_plan = plan::plan_deploy(session.loaded, &req, &observed);
    let env = session.hook_env(
        &version,
        observed.live.as_ref().map(|t| t.version.as_str()),
        &first_plan.color,
        "",
    );

    // Every prerequisite is checked and reported at once; any error stops before anything changes.
    let phase = Phase::start(reporter, "checks", "prerequisites");
    let process_env: BTreeMap<String, String> = std::env::vars().collect();
    let checks = crate::checks::run_prerequisites(session.loaded, Some(engine), &process_env).await;
    let failing: Vec<String> = checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| {
            format!(
                "{}: {}{}",
                c.name,
                c.detail,
                c.fix
                    .as_ref()
                    .map(|f| format!(" (fix: {f})"))
                    .unwrap_or_default()
            )
        })
        .collect();
    for c in checks.iter().filter(|c| c.is_warning()) {
        reporter.warn(format!("{}: {}", c.name, c.detail));
    }
    if !failing.is_empty() {
        phase.failed(format!("{} failed", failing.len()));
        let reason = format!("prerequisites failed:\n  {}", failing.join("\n  "));
        let failure = FailureReport {
            reason,
            ..Default::default()
        };
        return Ok(failed_report(
            session,
            &first_plan,
            started,
            failure,
            "failed",
        ));
    }
    phase.ok(format!("{} passed", checks.len()));

    // Before the lock: tests and the build change nothing on the host that serves.
    for step in &first_plan.steps {
        let result = match step {
            Step::RunTest { command, shell, .. } => {
                let phase = Phase::start(reporter, "test", crate::output::shell_join(command));
                let r = session
                    .run_command("test", (command, *shell), &env, config.test.timeout.get())
                    .await;
                finish(phase, &r);
                r
            }
            Step::RunHook {
                hook,
                command,
                shell,
            } if hook == "pre_build" => {
                let phase = Phase::start(
                    reporter,
                    "hook",
                    format!("pre_build: {}", crate::output::shell_join(command)),
                );
                let r = session
                    .run_command(
                        "pre_build",
                        (command, *shell),
                        &env,
                        config.test.timeout.get(),
                    )
                    .await;
                finish(phase, &r);
                r
            }
            // The id, not the tag, is what the container is made from: another environment's
            // build of the same version may move the tag while this deploy waits for its lock.
            Step::BuildImage { image, .. } => build(session, image, &version)
                .await
                .map(|id| req.image_id = Some(id)),
            Step::PushImage { image, target } => push(session, image, target).await,
            Step::UseImage { image } => match engine.image_id(image).await.map_err(engine_err)? {
                Some(id) => {
                    req.image_id = Some(id);
                    Ok(())
                }
                None => Err(Failed::from(anyhow::anyhow!(
                    "image {image} does not exist on the Docker host"
                ))),
            },
            Step::AcquireLock { .. } => break,
            _ => Ok(()),
        };
        if let Err(failed) = result {
            return Ok(failed_report(
                session,
                &first_plan,
                started,
                failed.report,
                "failed",
            ));
        }
    }

    let phase = Phase::start(reporter, "lock", session.names.lock());
    let stale_after = config.deploy.lock_stale_after.get();
    lock::acquire(
        engine,
        &session.names,
        &proxy_image,
        &format!("deploy {version}"),
        opts.lock_wait,
        stale_after,
        false,
        &session.loaded.files[0],
    )
    .await?;
    session.progress(|p| p.lock_held = true);
    phase.ok("");

    let result = deploy_locked(session, &req, started).await;
    // The lock goes whatever happened; a failure to release is reported, not hidden.
    if let Err(e) = lock::release(engine, &session.names, false).await {
        reporter.warn(format!("could not release the lock: {e:#}"));
    }
    session.progress(|p| {
        p.lock_held = false;
        p.finished = true;
    });
    result
}

/// The proxy image, built once per deployctl binary (the first deploy with a new binary pays for it).
async fn proxy_image(session: &Session<'_>) -> anyhow::Result<String> {
    let phase = Phase::start(session.reporter, "proxy image", "");
    let image = host::ensure_proxy_image(session.engine, &session.loaded.config).await?;
    phase.ok(image.clone());
    Ok(image)
}

fn finish(phase: Phase<'_>, r: &Result<(), Failed>) {
    match r {
        Ok(()) => phase.ok(""),
        Err(f) => phase.failed(f.report.reason.lines().next().unwrap_or("").to_string()),
    }
}

/// Hooks after the outcome is known: a failure is reported, never turned into another outcome.
async fn run_hooks(
    session: &Session<'_>,
    name: &str,
    hooks: &[CommandSpec],
    env: &[(String, String)],
) {
    for spec in hooks {
        let (argv, shell) = command_argv(spec);
        let phase = Phase::start(
            session.reporter,
            "hook",
            format!("{name}: {}", crate::output::shell_join(&argv)),
        );
        let r = session
            .run_command(
                name,
                (&argv, shell),
                env,
                session.loaded.config.test.timeout.get(),
            )
            .await;
        if let Err(f) = &r {
            session
                .reporter
                .warn(format!("{name} hook failed: {}", f.report.reason));
        }
        finish(phase, &r);
    }
}

async fn build(session: &Session<'_>, image: &str, version: &str) -> Result<String, Failed> {
    let config = &session.loaded.config;
    let phase = Phase::start(session.reporter, "build", image.to_string());
    // Docker's classic builder spends one build step per label, so images carry only what
    // finding and pruning them needs, plus the git sha; the image's own `Created` is the time.
    let mut image_labels = BTreeMap::from([
        (labels::APP.to_string(), session.names.app.clone()),
        (labels::ENV.to_string(), session.names.env.clone()),
        (labels::VERSION.to_string(), version.to_string()),
    ]);
    if let Ok(git) = crate::version::git_state(&session.loaded.root) {
        image_labels.insert("deployctl.git-sha".into(), git.sha);
    }
    let req = BuildRequest {
        context_dir: session.loaded.root.join(&config.build.context),
        dockerfile: config.build.dockerfile.clone(),
        tag: image.to_string(),
        args: config.build.args.clone(),
        target: config.build.target.clone(),
        labels: image_labels,
    };
    let reporter = session.reporter;
    let log = move |line: &str| reporter.line("build", line);
    match session.engine.build_image(&req, &log).await {
        Ok(id) => {
            phase.ok("");
            Ok(id)
        }
        Err(e) => {
            phase.failed(e.to_string());
            Err(Failed {
                report: FailureReport {
                    reason: e.to_string(),
                    ..Default::default()
                },
            })
        }
    }
}

async fn push(session: &Session<'_>, image: &str, target: &str) -> Result<(), Failed> {
    let registry = &session.loaded.config.registry;
    let phase = Phase::start(session.reporter, "push", target.to_string());
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let auth = match (var(&registry.username_env), var(&registry.password_env)) {
        (Some(username), Some(password)) => Some(RegistryAuth { username, password }),
        _ => None,
    };
    let reporter = session.reporter;
    let log = move |line: &str| reporter.line("push", line);
    match session
        .engine
        .push_image(image, target, auth.as_ref(), &log)
        .await
    {
        Ok(()) => {
            // The registry keeps its copy; locally the extra tag would only stop pruning and
            // `remove` from deleting the image.
            if let Err(e) = session.engine.remove_image(target).await {
                session
                    .reporter
                    .warn(format!("could not remove the local tag {target}: {e}"));
            }
            phase.ok("");
            Ok(())
        }
        Err(e) => {
            phase.failed(e.to_string());
            Err(Failed::from(engine_err(e)))
        }
    }
}

fn failed_report(
    session: &Session<'_>,
    plan: &Plan,
    started: Instant,
    failure: FailureReport,
    outcome: &str,
) -> Report {
    Report {
        ok: false,
        kind: plan.kind.clone(),
        app: session.names.app.clone(),
        env: session.names.env.clone(),
        version: plan.version.clone(),
        color: plan.color.clone(),
        container: plan.container.clone(),
        url: plan.url.clone(),
        previous: plan.previous.as_ref().map(|p| p.version.clone()),
        outcome: outcome.into(),
        duration_ms: started.elapsed().as_millis() as u64,
        swap_ms: None,
        failure: Some(failure),
    }
}

async fn deploy_locked(
    session: &Session<'_>,
    req: &DeployRequest,
    started: Instant,
) -> anyhow::Result<Report> {
    // Someone may have deployed between our first look and the lock: plan again from what is there now.
    let observed = session.observe_started(&req.proxy_image).await?;
    let plan = plan::plan_deploy(session.loaded, req, &observed);
    let lock_at = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::AcquireLock { .. }))
        .unwrap_or(0);
    let report = execute(
        session,
        &plan,
        &observed,
        &plan.steps[lock_at + 1..],
        started,
        &req.proxy_image,
    )
    .await?;
    if !report.ok {
        // Failed releases pile up images too; the failed one itself stays for inspection.
        let now = session.observe().await?;
        let images = plan::prune_images(session.loaded, &now, &req.version);
        if !images.is_empty() {
            prune(session, &images).await;
        }
    }
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
    let phase = Phase::start(session.reporter, "lock", session.names.lock());
    let reason = format!(
        "rollback{}",
        to.map(|v| format!(" to {v}")).unwrap_or_default()
    );
    lock::acquire(
        engine,
        &session.names,
        &proxy_image,
        &reason,
        lock_wait,
        config.deploy.lock_stale_after.get(),
        false,
        &session.loaded.files[0],
    )
    .await?;
    session.progress(|p| p.lock_held = true);
    phase.ok("");
    let result = async {
        let observed = session.observe_started(&proxy_image).await?;
        let plan = plan::plan_rollback(session.loaded, to, &observed, &proxy_image, current_config)
            .map_err(Error::DeployFailed)?;
        execute(
            session,
            &plan,
            &observed,
            &plan.steps[1..],
            started,
            &proxy_image,
        )
        .await
    }
    .await;
    if let Err(e) = lock::release(engine, &session.names, false).await {
        session
            .reporter
            .warn(format!("could not release the lock: {e:#}"));
    }
    session.progress(|p| {
        p.lock_held = false;
        p.finished = true;
    });
    let report = result?;
    after_outcome(session, &report).await;
    Ok(report)
}

/// Runs the steps after the lock. Returns a report for release failures; errors are for
/// problems that make the run itself impossible (Docker gone, signals).
async fn execute(
    session: &Session<'_>,
    plan: &Plan,
    observed: &Observed,
    steps: &[Step],
    started: Instant,
    proxy_image: &str,
) -> anyhow::Result<Report> {
    let engine = session.engine;
    let names = &session.names;
    let config = &session.loaded.config;
    let reporter = session.reporter;
    let mut record = ReleaseRecord {
        id: format!("{}-{}", now_unix(), std::process::id()),
        version: plan.version.clone(),
        image: plan.image.clone(),
        color: plan.color.clone(),
        container: plan.container.clone(),
        git_sha: crate::version::git_state(&session.loaded.root)
            .ok()
            .map(|g| g.sha),
        author: Some(crate::version::author(&session.loaded.root)),
        started_at: now_unix(),
        finished_at: None,
        duration_ms: None,
        outcome: Outcome::InProgress,
        tests_skipped: plan.tests_skipped,
        spec: None,
        reason: if plan.kind == "rollback" {
            Some("rollback".into())
        } else {
            None
        },
    };
    let new_target = host::target_for(config, &plan.container, &plan.version, &plan.color);
    let mut swap_ms = None;
    let mut switched = false;

    for step in steps {
        tracing::debug!(step = %step.describe(), "executing");
        let outcome: Result<(), Failed> = match step {
            Step::EnsureNetwork { .. } => {
                host::ensure_network(engine, names).await?;
                Ok(())
            }
            Step::EnsureProxy { .. } => {
                let phase = Phase::start(reporter, "proxy", names.proxy());
                host::ensure_proxy(engine, session.loaded, names, proxy_image).await?;
                phase.ok(config.proxy.listen.to_string());
                mark_interrupted_releases(session, observed).await;
                host::proxy_record(engine, names, &record).await?;
                session.progress(|p| p.record = Some(record.clone()));
                Ok(())
            }
            Step::RemoveContainer { container, .. } => {
                drain_leftover(session, container).await;
                match engine.remove_container(container, true).await {
                    Ok(()) | Err(EngineError::NotFound(_)) => {}
                    Err(e) => return Err(engine_err(e)),
                }
                Ok(())
            }
            Step::StartRelease {
                container,
                image,
                color,
                version,
                network,
                reuse,
                ..
            } => {
                let phase = Phase::start(reporter, "start", format!("{container} ({version})"));
                if !reuse {
                    // A container of that name not listed as ours (by labels) is someone else's.
                    host::owned_container(engine, names, container).await?;
                    let image = plan.image_id.as_deref().unwrap_or(image);
                    let spec = match &plan.restore {
                        Some(restore) => restored_spec(session, restore, container, color, version)
                            .map_err(Error::DeployFailed)?,
                        None => release_spec(session, container, image, color, version, network),
                    };
                    let id = engine.create_container(&spec).await.map_err(engine_err)?;
                    record.spec = Some(Box::new(spec_record(session, &spec, image, id)));
                } else {
                    record.spec = plan.restore.clone().map(Box::new);
                }
                session.progress(|p| p.started = Some((container.clone(), version.clone())));
                let r = engine
                    .start_container(container)
                    .await
                    .map_err(|e| Failed::from(engine_err(e)));
                finish(phase, &r);
                r
            }
            Step::WaitHealthy { .. } => {
                let phase = Phase::start(reporter, "health", plan.health_url.clone());
                let r = watch_health(session, &plan.container, None).await;
                finish(phase, &r);
                r
            }
            // Hooks after the outcome (post_deploy, on_rollback) run in the caller, once it is known.
            Step::RunHook { hook, .. } if hook != "pre_deploy" => Ok(()),
            Step::RunHook {
                hook,
                command,
                shell,
            } => {
                let env = session.hook_env(
                    &plan.version,
                    plan.previous.as_ref().map(|p| p.version.as_str()),
                    &plan.color,
                    "",
                );
                let phase = Phase::start(
                    reporter,
                    "hook",
                    format!("{hook}: {}", crate::output::shell_join(command)),
                );
                let r = session
                    .run_command(hook, (command, *shell), &env, config.test.timeout.get())
                    .await;
                finish(phase, &r);
                r
            }
            Step::Switch { .. } => {
                let phase = Phase::start(reporter, "switch", format!("-> {}", plan.container));
                session.progress(|p| {
                    p.switched_from = observed.live.clone();
                    p.switched_to = Some(new_target.clone());
                    p.switch_started = true;
                });
                match switch_to(session, &new_target).await {
                    Ok(ms) => {
                        swap_ms = Some(ms);
                        switched = true;
                        phase.ok(format!("swapped in {ms:.0} ms"));
                        Ok(())
                    }
                    Err(e) => {
                        phase.failed(format!("{e:#}"));
                        Err(Failed::from(e))
                    }
                }
            }
            Step::Verify { window, .. } => {
                let phase = Phase::start(reporter, "verify", format!("watching for {window}"));
                let r = verify(session, &plan.container).await;
                finish(phase, &r);
                r
            }
            Step::StopContainer { container, .. } => {
                // From here on an interrupt keeps the new release serving (see `recover`).
                session.progress(|p| p.old_stopping = true);
                let phase = Phase::start(reporter, "stop", container.clone());
                match engine
                    .stop_container(container, config.deploy.stop_timeout.get())
                    .await
                {
                    Ok(()) | Err(EngineError::NotFound(_)) => phase.ok("kept for rollback"),
                    // The new release already serves: a stop failure is worth a warning, not a rollback.
                    Err(e) => {
                        reporter.warn(format!("could not stop {container}: {e}"));
                        phase.failed(e.to_string());
                    }
                }
                Ok(())
            }
            Step::RecordRelease { .. } => {
                record.outcome = Outcome::Live;
                record.finished_at = Some(now_unix());
                record.duration_ms = Some(started.elapsed().as_millis() as u64);
                if plan.kind == "rollback"
                    && let Some(prev) = observed.live.as_ref()
                {
                    mark_version(
                        session,
                        observed,
                        &prev.version,
                        Outcome::RolledBack,
                        "rolled back",
                    )
                    .await;
                }
                host::proxy_record(engine, names, &record).await?;
                Ok(())
            }
            Step::Prune { images } => {
                prune(session, images).await;
                Ok(())
            }
            // Taken before `execute`; released by the caller whatever happens.
            Step::AcquireLock { .. } | Step::ReleaseLock { .. } => Ok(()),
            // Post-outcome hooks and notifications are run by the caller.
            Step::RunTest { .. }
            | Step::BuildImage { .. }
            | Step::PushImage { .. }
            | Step::UseImage { .. }
            | Step::Notify { .. } => Ok(()),
        };
        if let Err(failed) = outcome {
            return Ok(handle_failure(
                session,
                plan,
                observed,
                &new_target,
                record,
                switched,
                started,
                failed.report,
            )
            .await);
        }
    }
    Ok(Report {
        ok: true,
        kind: plan.kind.clone(),
        app: names.app.clone(),
        env: names.env.clone(),
        version: plan.version.clone(),
        color: plan.color.clone(),
        container: plan.container.clone(),
        url: plan.url.clone(),
        previous: plan.previous.as_ref().map(|p| p.version.clone()),
        outcome: "live".into(),
        duration_ms: started.elapsed().as_millis() as u64,
        swap_ms,
        failure: None,
    })
}

/// Puts traffic back where it was (if the switch happened), keeps the failed container stopped for
/// inspection, and records why.
#[allow(clippy::too_many_arguments)]
async fn handle_failure(
    session: &Session<'_>,
    plan: &Plan,
    observed: &Observed,
    new_target: &Target,
    mut record: ReleaseRecord,
    switched: bool,
    started: Instant,
    mut failure: FailureReport,
) -> Report {
    let engine = session.engine;
    let config = &session.loaded.config;
    let mut outcome = "failed";
    if failure.container_state.is_none()
        && let Ok(Some(info)) = engine.inspect_container(&plan.container).await
    {
        failure.container = Some(plan.container.clone());
        failure.container_state = Some(info.state);
    }
    if failure.logs.is_empty() {
        failure.logs = engine
            .logs_tail(&plan.container, 50)
            .await
            .unwrap_or_default();
    }
    if switched {
        match (&observed.live, config.rollback.automatic) {
            (Some(previous), true) => {
                let phase = Phase::start(
                    session.reporter,
                    "rollback",
                    format!("-> {}", previous.container),
                );
                match switch_to(session, previous).await {
                    Ok(_) => {
                        phase.ok(format!("rolled back to {}", previous.version));
                        outcome = "rolled_back";
                        failure.reason =
                            format!("{}; rolled back to {}", failure.reason, previous.version);
                        mark_version(session, observed, &previous.version, Outcome::Live, "").await;
                    }
                    Err(e) => {
                        phase.failed(format!("{e:#}"));
                        failure.reason = format!(
                            "{}; switching back to {} FAILED: {e:#}",
                            failure.reason, previous.version
                        );
                    }
                }
            }
            (Some(previous), false) => {
                failure.reason = format!(
                    "{}; {} still serves (rollback.automatic is off)\n  hint: `deployctl rollback` goes back to {}",
                    failure.reason, plan.version, previous.version
                );
            }
            (None, _) => {
                failure.reason = format!(
                    "{}; there is no earlier release to go back to, {} still serves",
                    failure.reason, plan.version
                );
            }
        }
    }
    let new_still_live = switched && outcome != "rolled_back";
    if !new_still_live && !is_reused_live(observed, &plan.container) {
        let _ = engine
            .stop_container(&plan.container, config.deploy.stop_timeout.get())
            .await;
    }
    record.outcome = if outcome == "rolled_back" {
        Outcome::RolledBack
    } else {
        Outcome::Failed
    };
    record.finished_at = Some(now_unix());
    record.duration_ms = Some(started.elapsed().as_millis() as u64);
    record.reason = Some(failure.reason.clone());
    if let Err(e) = host::proxy_record(engine, &session.names, &record).await {
        session
            .reporter
            .warn(format!("could not record the failed release: {e:#}"));
    }
    let _ = new_target;
    failed_report(session, plan, started, failure, outcome)
}

fn is_reused_live(observed: &Observed, container: &str) -> bool {
    observed
        .live
        .as_ref()
        .is_some_and(|l| l.container == container)
}

fn release_spec(
    session: &Session<'_>,
    container: &str,
    image: &str,
    color: &str,
    version: &str,
    network: &str,
) -> ContainerSpec {
    let loaded = session.loaded;
    let config = &loaded.config;
    let mut container_labels = session.names.labels("app");
    container_labels.extend([
        (labels::COLOR.to_string(), color.to_string()),
        (labels::VERSION.to_string(), version.to_string()),
        (labels::CREATED.to_string(), now_unix().to_string()),
        (
            labels::DEPLOY_ID.to_string(),
            format!("{}-{}", now_unix(), std::process::id()),
        ),
    ]);
    // Env file first, then app.env, then what deployctl itself tells the app.
    let mut env: Vec<(String, String)> = loaded
        .env_file_vars
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.extend(config.app.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.push(("DEPLOYCTL_VERSION".into(), version.into()));
    env.push(("DEPLOYCTL_COLOR".into(), color.into()));
    let h = &config.health;
    ContainerSpec {
        name: container.to_string(),
        image: image.to_string(),
        labels: container_labels,
        env,
        cmd: None,
        network: Some(network.to_string()),
        network_aliases: vec![],
        ports: vec![],
        restart_policy: RestartPolicy::UnlessStopped,
        healthcheck: h.docker_cmd.as_ref().map(|cmd| HealthcheckSpec {
            test: std::iter::once("CMD".to_string())
                .chain(cmd.iter().cloned())
                .collect(),
            interval: h.interval.get(),
            timeout: h.timeout.get(),
            retries: h.unhealthy_threshold,
        }),
        mounts: vec![],
        stop_timeout: Some(config.deploy.stop_timeout.get()),
    }
}

/// What the ledger keeps of a container spec: everything but secret values (a variable whose name
/// is secret, that comes from the env file, or whose value holds a secret keeps only its name).
fn spec_record(
    session: &Session<'_>,
    spec: &ContainerSpec,
    image_id: &str,
    container_id: String,
) -> ReleaseSpec {
    let loaded = session.loaded;
    let secret = |name: &str, value: &str| {
        loaded.config.app.secret_env.iter().any(|s| s == name)
            || loaded.env_file_vars.contains_key(name)
            || loaded.redactor.redact(value) != value
    };
    ReleaseSpec {
        image_id: image_id.to_string(),
        env: spec
            .env
            .iter()
            .map(|(name, value)| SpecEnv {
                name: name.clone(),
                value: (!secret(name, value)).then(|| value.clone()),
            })
            .collect(),
        cmd: spec.cmd.clone(),
        ports: spec
            .ports
            .iter()
            .map(|p| format!("{}:{}:{}", p.host_ip, p.host_port, p.container_port))
            .collect(),
        labels: spec.labels.clone(),
        container_id: Some(container_id),
    }
}

/// The container spec of a release re-created as it ran, from its ledger record: its image id,
/// environment, command and labels; secret values read again by name from the configuration;
/// only colour, version and creation labels are this run's.
fn restored_spec(
    session: &Session<'_>,
    restore: &ReleaseSpec,
    container: &str,
    color: &str,
    version: &str,
) -> Result<ContainerSpec, String> {
    let loaded = session.loaded;
    let mut spec = release_spec(
        session,
        container,
        &restore.image_id,
        color,
        version,
        &session.names.network(),
    );
    let mut env = Vec::with_capacity(restore.env.len());
    for e in &restore.env {
        let value = match (&e.value, e.name.as_str()) {
            (_, "DEPLOYCTL_VERSION") => version.to_string(),
            (_, "DEPLOYCTL_COLOR") => color.to_string(),
            (Some(v), _) => v.clone(),
            (None, name) => loaded
                .env_file_vars
                .get(name)
                .or_else(|| loaded.config.app.env.get(name))
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "{version} ran with the secret {name}, which the configuration no longer sets\n  hint: set it again, or `deployctl rollback --with-current-config`"
                    )
                })?,
        };
        env.push((e.name.clone(), value));
    }
    spec.env = env;
    spec.cmd = restore.cmd.clone();
    let mut labels = restore.labels.clone();
    // This run's colour and creation; app, env and role stay ours whatever the record says.
    let this_run = [
        labels::APP,
        labels::ENV,
        labels::ROLE,
        labels::COLOR,
        labels::VERSION,
        labels::CREATED,
        labels::DEPLOY_ID,
    ];
    labels.extend(
        spec.labels
            .iter()
            .filter(|(k, _)| this_run.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    spec.labels = labels;
    Ok(spec)
}

/// Health checks from inside the proxy, raced against the container crashing.
async fn watch_health(
    session: &Session<'_>,
    container: &str,
    window: Option<Duration>,
) -> Result<(), Failed> {
    let spec = host::health_spec(&session.loaded.config, container);
    let last: Arc<Mutex<VecDeque<ProbeResult>>> = Arc::default();
    let reporter = session.reporter;
    let keep = last.clone();
    let on_probe = move |p: &ProbeResult| {
        reporter.event(crate::report::Event::Probe { probe: p.clone() });
        if let Ok(mut l) = keep.lock() {
            if l.len() == 5 {
                l.pop_front();
            }
            l.push_back(p.clone());
        }
    };
    let started = Instant::now();
    let health = host::proxy_health(session.engine, &session.names, &spec, window, &on_probe);
    let reason = tokio::select! {
        outcome = health => match outcome {
            Ok(HealthOutcome::Healthy { .. }) if window.is_some() || session.loaded.config.health.docker_cmd.is_none() => return Ok(()),
            Ok(HealthOutcome::Healthy { .. }) => {
                let deadline = session.loaded.config.health.deadline.get().saturating_sub(started.elapsed());
                match docker_healthy(session.engine, container, deadline).await {
                    Ok(()) => return Ok(()),
                    Err(reason) => reason,
                }
            }
            Ok(HealthOutcome::Unhealthy { reason, .. }) => format!("health check failed: {reason}"),
            Ok(HealthOutcome::DeadlineExceeded { last }) => format!(
                "not healthy within {} ({} consecutive passing checks needed){}",
                session.loaded.config.health.deadline,
                session.loaded.config.health.healthy_threshold,
                last.iter()
                    .rev()
                    .find_map(|p| p.error.as_deref())
                    .map(|e| format!("; last failure: {e}"))
                    .unwrap_or_default()
            ),
            Err(e) => format!("health checks could not run: {e:#}"),
        },
        crash = crashed(session.engine, container) => crash,
    };
    let probes = last
        .lock()
        .map(|l| l.iter().cloned().collect())
        .unwrap_or_default();
    let mut report = FailureReport {
        reason,
        probes,
        container: Some(container.to_string()),
        ..Default::default()
    };
    if let Ok(Some(info)) = session.engine.inspect_container(container).await {
        report.container_state = Some(info.state);
    }
    report.logs = session
        .engine
        .logs_tail(container, 50)
        .await
        .unwrap_or_default();
    Err(Failed { report })
}

/// Waits for Docker's own HEALTHCHECK (`health.docker_cmd`) to report healthy.
async fn docker_healthy(
    engine: &dyn Engine,
    container: &str,
    within: Duration,
) -> Result<(), String> {
    let give_up = crate::config::Duration::deadline(Instant::now(), within);
    loop {
        let state = engine
            .inspect_container(container)
            .await
            .ok()
            .flatten()
            .map(|i| i.state);
        match state.as_ref().and_then(|s| s.health.as_deref()) {
            Some("healthy") => return Ok(()),
            Some("unhealthy") => {
                return Err(format!(
                    "Docker reports {container} unhealthy (health.docker_cmd)"
                ));
            }
            _ if Instant::now() >= give_up => {
                return Err(
                    "Docker's health check (health.docker_cmd) did not pass within the deadline"
                        .to_string(),
                );
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// Resolves when the container stops running or restarts (a crash loop); never otherwise.
async fn crashed(engine: &dyn Engine, container: &str) -> String {
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        match engine.inspect_container(container).await {
            Ok(None) => return format!("container {container} disappeared"),
            Ok(Some(info)) => {
                let s = &info.state;
                if s.oom_killed {
                    return format!("container {container} was killed for lack of memory (OOM)");
                }
                if s.restart_count > 0 {
                    return format!(
                        "container {container} is crash-looping: restarted {} time(s), last exit code {}",
                        s.restart_count, s.exit_code
                    );
                }
                if !s.running && s.status != "created" {
                    return format!("container {container} exited with code {}", s.exit_code);
                }
            }
            // A passing engine hiccup is not a crash.
            Err(_) => {}
        }
    }
}

async fn switch_to(session: &Session<'_>, target: &Target) -> anyhow::Result<f64> {
    let config = &session.loaded.config;
    let req = SwitchRequest {
        target: target.clone(),
        health: host::health_spec(config, &target.container),
        drain_timeout_ms: config.deploy.drain_timeout.get().as_millis() as u64,
    };
    let result = host::proxy_switch(session.engine, &session.names, &req).await?;
    if result.abandoned > 0 {
        session.reporter.warn(format!(
            "{} request(s) to the previous release were still open after drain_timeout",
            result.abandoned
        ));
    }
    Ok(result.swap_ms)
}

/// A run killed during its drain leaves the previous release with requests in flight and nobody
/// waiting for them; before its container is removed they get the same `deploy.drain_timeout`.
async fn drain_leftover(session: &Session<'_>, container: &str) {
    let in_flight = || async {
        host::proxy_status(session.engine, &session.names)
            .await
            .map(|s| {
                s.targets
                    .iter()
                    .filter(|t| t.container == container)
                    .map(|t| t.in_flight)
                    .sum::<u64>()
            })
            .unwrap_or(0)
    };
    let open = in_flight().await;
    if open == 0 {
        return;
    }
    let phase = Phase::start(
        session.reporter,
        "drain",
        format!("{open} request(s) still in flight to {container}"),
    );
    let give_up = crate::config::Duration::deadline(
        Instant::now(),
        session.loaded.config.deploy.drain_timeout.get(),
    );
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let open = in_flight().await;
        if open == 0 {
            phase.ok("");
            return;
        }
        if Instant::now() >= give_up {
            session.reporter.warn(format!(
                "{open} request(s) to {container} were still open after drain_timeout"
            ));
            phase.failed(format!("{open} abandoned"));
            return;
        }
    }
}

/// The watch window after the switch: health keeps passing, and the proxy's figures for the new
/// release stay under the limits.
async fn verify(session: &Session<'_>, container: &str) -> Result<(), Failed> {
    let v = &session.loaded.config.verify;
    if v.window.get().is_zero() {
        return Ok(());
    }
    watch_health(session, container, Some(v.window.get())).await?;
    let status = host::proxy_status(session.engine, &session.names).await?;
    let Some(stats) = status.targets.iter().find(|t| t.container == container) else {
        return Ok(());
    };
    if stats.requests > 0 {
        let rate = stats.errors as f64 / stats.requests as f64;
        if rate > v.max_error_rate {
            return Err(Failed::from(anyhow::anyhow!(
                "error rate {:.1}% ({} of {} requests) is above verify.max_error_rate {:.1}%",
                rate * 100.0,
                stats.errors,
                stats.requests,
                v.max_error_rate * 100.0
            )));
        }
        let max_ms = v.max_p95_latency.get().as_secs_f64() * 1000.0;
        if stats.p95_ms > max_ms {
            return Err(Failed::from(anyhow::anyhow!(
                "p95 latency {:.0} ms is above verify.max_p95_latency {}",
                stats.p95_ms,
                v.max_p95_latency
            )));
        }
    }
    Ok(())
}

/// Releases left in progress by an interrupted run become failed.
/// One killed after its switch serves, though: the ledger says so rather than contradict the
/// proxy (and `rollback` can find it).
async fn mark_interrupted_releases(session: &Session<'_>, observed: &Observed) {
    let mut live_found = false;
    for r in observed
        .releases
        .iter()
        .rev()
        .filter(|r| r.outcome == Outcome::InProgress)
    {
        let mut r = r.clone();
        let serving = observed
            .live
            .as_ref()
            .is_some_and(|l| l.container == r.container && l.version == r.version);
        if serving && !live_found {
            live_found = true;
            r.outcome = Outcome::Live;
            r.reason = Some("interrupted after its switch".into());
        } else {
            r.outcome = Outcome::Failed;
            r.reason = Some("interrupted".into());
        }
        r.finished_at = Some(now_unix());
        let _ = host::proxy_record(session.engine, &session.names, &r).await;
    }
}

/// Sets the outcome of the newest record of `version`.
async fn mark_version(
    session: &Session<'_>,
    observed: &Observed,
    version: &str,
    outcome: Outcome,
    reason: &str,
) {
    let current = host::proxy_releases(session.engine, &session.names)
        .await
        .unwrap_or_else(|_| observed.releases.clone());
    if let Some(r) = current
        .iter()
        .rev()
        .find(|r| r.version == version && r.outcome != Outcome::Failed)
    {
        let mut r = r.clone();
        r.outcome = outcome;
        if !reason.is_empty() {
            r.reason = Some(reason.into());
        }
        if let Err(e) = host::proxy_record(session.engine, &session.names, &r).await {
            session
                .reporter
                .warn(format!("could not update the ledger for {version}: {e:#}"));
        }
    }
}

/// Removes old images and the stopped containers made from them; failures are warnings. `images`
/// are `<app>:<version>` names; what goes is this environment's images of those versions, found by
/// their labels and removed by id: a tag another environment's build has taken is never touched.
async fn prune(session: &Session<'_>, images: &[String]) {
    let engine = session.engine;
    let names = &session.names;
    let phase = Phase::start(session.reporter, "prune", images.join(", "));
    let scope = [
        (labels::APP, names.app.as_str()),
        (labels::ENV, names.env.as_str()),
        (labels::ROLE, "app"),
    ];
    let containers = engine.list_containers(&scope).await.unwrap_or_default();
    let ours = engine
        .list_images(&scope[..2])
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|i| {
            i.labels
                .get(labels::VERSION)
                .is_some_and(|v| images.contains(&names.image(v)))
        });
    for image in ours {
        let tag = names.image(&image.labels[labels::VERSION]);
        for c in containers
            .iter()
            .filter(|c| (c.image == image.id || c.image == tag) && !c.state.running)
        {
            let _ = engine.remove_container(&c.name, false).await;
        }
        if let Err(e) = engine.remove_image(&image.id).await {
            session.reporter.warn(format!(
                "could not prune {tag} ({}): {e}",
                short_id(&image.id)
            ));
        }
    }
    phase.ok("");
}

/// `sha256:0123456789ab…` as `0123456789ab`.
fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

/// After SIGINT/SIGTERM: traffic on a running release, the new container stopped unless it is
/// the one that serves, the lock released. Bounded in time by the caller.
///
/// Before the switch nothing live was touched. After it, traffic goes back to the previous
/// release only while that one still runs and was not told to stop; once its stop has begun
/// (or it is gone), the new release, which passed its health checks, keeps serving.
pub async fn recover(session: &Session<'_>) {
    let progress = session
        .progress
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    if progress.finished {
        return;
    }
    let engine = session.engine;
    let mut new_is_live = false;
    if progress.switch_started {
        let previous = progress.switched_from.as_ref();
        let previous_runs = match previous {
            Some(p) if !progress.old_stopping => engine
                .inspect_container(&p.container)
                .await
                .ok()
                .flatten()
                .is_some_and(|i| i.state.running),
            _ => false,
        };
        match (previous, &progress.switched_to) {
            (Some(previous), _) if previous_runs => match switch_to(session, previous).await {
                Ok(_) => session
                    .reporter
                    .info(format!("traffic is back on {}", previous.version)),
                Err(e) => {
                    // The proxy refuses a target that fails its check: traffic stayed on the new one.
                    new_is_live = true;
                    session.reporter.warn(format!(
                        "could not switch back to {}: {e:#}",
                        previous.version
                    ));
                }
            },
            (previous, Some(new)) => {
                new_is_live = true;
                let why = match previous {
                    Some(p) if progress.old_stopping => {
                        format!(": {} was already being stopped", p.version)
                    }
                    Some(p) => format!(": {} is not running", p.version),
                    None => String::new(),
                };
                // A no-op when the switch completed; finishes it (after a check) when it did not.
                match switch_to(session, new).await {
                    Ok(_) => session
                        .reporter
                        .info(format!("traffic stays on {}{why}", new.version)),
                    Err(e) => session.reporter.warn(format!(
                        "could not keep traffic on {}{why}: {e:#}",
                        new.version
                    )),
                }
            }
            (_, None) => {}
        }
    } else {
        session
            .reporter
            .info("traffic was not switched: the live release was not touched");
    }
    if let Some((container, _)) = &progress.started
        && !new_is_live
    {
        let _ = engine
            .stop_container(container, Duration::from_secs(2))
            .await;
    }
    if let Some(mut record) = progress.record.clone() {
        if new_is_live {
            // It serves: the ledger says so rather than contradict the proxy.
            record.outcome = Outcome::Live;
            record.reason = Some("interrupted after its switch".into());
        } else {
            record.outcome = Outcome::Failed;
            record.reason = Some("interrupted".into());
        }
        record.finished_at = Some(now_unix());
        let _ = host::proxy_record(engine, &session.names, &record).await;
    }
    if progress.lock_held {
        let _ = lock::release(engine, &session.names, false).await;
    }
    // The interrupt may have come before the stop request reached Docker: ask again, so the old
    // colour ends stopped as the run meant (the daemon carries out a stop it has received).
    if new_is_live
        && progress.old_stopping
        && let Some(previous) = &progress.switched_from
    {
        let stop = engine.stop_container(
            &previous.container,
            session.loaded.config.deploy.stop_timeout.get(),
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), stop).await;
    }
}
