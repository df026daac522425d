//! The pipeline of a deploy: the prerequisites, then the interpreter over the plan up to its lock
//! (tests, build, push: nothing on the host that serves changes), then the part after the lock,
//! planned again from what is there under it.

use std::collections::BTreeMap;
use std::time::Instant;

use super::execute::execute;
use super::outcome::{Failed, failed_before_lock};
use super::plan::{self, DeployRequest, Step};
use super::{DeployOptions, Session};
use crate::engine::{BuildRequest, RegistryAuth, labels};
use crate::host::{self, engine_err};
use crate::report::{FailureReport, Phase, PhaseName, Report};

pub(crate) async fn deploy_pipeline(
    session: &Session<'_>,
    opts: &DeployOptions,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let reporter = session.reporter;
    let engine = session.engine;
    let version = crate::version::resolve(opts.version.as_deref(), &session.loaded.root)?;
    let phase = Phase::start(reporter, PhaseName::Docker, "connecting");
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
    let first_plan =
        plan::plan_deploy(session.loaded, &req, &observed).with_lock_wait(opts.lock_wait);

    // Every prerequisite is checked and reported at once; any error stops before anything changes.
    let phase = Phase::start(reporter, PhaseName::Checks, "prerequisites");
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
        return Ok(failed_before_lock(session, &first_plan, started, failure).await);
    }
    phase.ok(format!("{} passed", checks.len()));

    // Up to the lock, by the interpreter: tests and the build change nothing on the host that
    // serves; a failure there runs only the failure branch's hooks and notifications.
    let target = session.target();
    let lock_at = first_plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::AcquireLock { .. }))
        .unwrap_or(0);
    let report = execute(
        session,
        target.as_ref(),
        &first_plan,
        &observed,
        &first_plan.steps[..=lock_at],
        started,
        &proxy_image,
    )
    .await?;
    if !report.ok {
        return Ok(report);
    }
    req.image_id = session
        .progress
        .lock()
        .ok()
        .and_then(|p| p.image_id.clone());

    let result = deploy_locked(session, target.as_ref(), &req, started).await;
    // The plan releases the lock; this is for runs that ended early (an error). A failure to
    // release is reported, not hidden.
    if session.lock_held()
        && let Err(e) = target.release_lock().await
    {
        reporter.warn(format!("could not release the lock: {e:#}"));
    }
    session.progress(|p| {
        p.lock_held = false;
        p.finished = true;
    });
    result
}

/// The proxy image, built once per deployctl binary (the first deploy with a new binary pays for it).
pub(crate) async fn proxy_image(session: &Session<'_>) -> anyhow::Result<String> {
    let phase = Phase::start(session.reporter, PhaseName::ProxyImage, "");
    let config = &session.loaded.config;
    // Every host builds it from this binary (it is small, and the lock needs it).
    let images = futures_util::future::join_all(session.hosts().into_iter().map(|s| async move {
        host::ensure_proxy_image(s.engine, config)
            .await
            .map_err(|e| e.context(format!("on {}", s.host)))
    }))
    .await;
    let mut image = String::new();
    for i in images {
        image = i?;
    }
    phase.ok(image.clone());
    Ok(image)
}

/// Hooks after the outcome is known: a failure is reported, never turned into another outcome.
pub(crate) async fn build(
    session: &Session<'_>,
    image: &str,
    version: &str,
) -> Result<String, Failed> {
    let config = &session.loaded.config;
    let phase = Phase::start(session.reporter, PhaseName::Build, image.to_string());
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
    match session.build_engine().build_image(&req, &log).await {
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

pub(crate) async fn push(session: &Session<'_>, image: &str, target: &str) -> Result<(), Failed> {
    let registry = &session.loaded.config.registry;
    let phase = Phase::start(session.reporter, PhaseName::Push, target.to_string());
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let auth = match (var(&registry.username_env), var(&registry.password_env)) {
        (Some(username), Some(password)) => Some(RegistryAuth { username, password }),
        _ => None,
    };
    let reporter = session.reporter;
    let log = move |line: &str| reporter.line("push", line);
    match session
        .build_engine()
        .push_image(image, target, auth.as_ref(), &log)
        .await
    {
        Ok(()) => {
            // The registry keeps its copy; locally the extra tag would only stop pruning and
            // `remove` from deleting the image.
            if let Err(e) = session.build_engine().remove_image(target).await {
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

pub(crate) async fn deploy_locked(
    session: &Session<'_>,
    target: &dyn super::target::DeployTarget,
    req: &DeployRequest,
    started: Instant,
) -> anyhow::Result<Report> {
    // Someone may have deployed between our first look and the lock: plan again from what is there now.
    let observed = session.observe_started(target, &req.proxy_image).await?;
    let plan = plan::plan_deploy(session.loaded, req, &observed);
    let lock_at = plan
        .steps
        .iter()
        .position(|s| matches!(s, Step::AcquireLock { .. }))
        .unwrap_or(0);
    execute(
        session,
        target,
        &plan,
        &observed,
        &plan.steps[lock_at + 1..],
        started,
        &req.proxy_image,
    )
    .await
}
