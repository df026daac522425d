//! The planner: a pure function of (configuration, observed state) to the ordered steps of a deploy
//! or a rollback. `--dry-run` prints the plan; the executor (`release::execute`) performs the same
//! steps, so the preview cannot drift from what happens. The steps' text is in `describe`, the
//! rollback planning in `rollback`.

mod describe;
mod rollback;
mod step;
#[cfg(test)]
mod tests;

pub use rollback::{plan_rollback, rollback_target};
pub use step::{Hidden, Hook, LiveState, ProxyAction, Step};
// What the planner reads: observed by `host`, which knows nothing of plans.
pub use crate::host::{AppContainer, Observed, ProxyObserved};

use std::collections::BTreeSet;

use serde::Serialize;

use crate::config::{CommandSpec, Config, Loaded, NotifyEvent};
use crate::names::{Color, Names};
use crate::proxy::protocol::{Outcome, ReleaseRecord, ReleaseSpec, RunKind};

/// A command as (argv, through a shell?).
pub fn command_argv(spec: &CommandSpec) -> (Vec<String>, bool) {
    match spec {
        CommandSpec::Argv(argv) => (argv.clone(), false),
        // Validation has already checked that the line splits.
        CommandSpec::Line(line) => (
            shell_words::split(line).unwrap_or_else(|_| vec![line.clone()]),
            false,
        ),
        CommandSpec::Table(t) if t.shell => (vec![t.run.clone()], true),
        CommandSpec::Table(t) => (
            shell_words::split(&t.run).unwrap_or_else(|_| vec![t.run.clone()]),
            false,
        ),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ReleaseRef {
    pub version: String,
    pub color: Color,
    pub container: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub kind: RunKind,
    pub app: String,
    pub env: String,
    pub version: String,
    pub image: String,
    /// The image id the container is created from, when known: this environment's own build,
    /// whatever the shared tag `image` points at by then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    pub color: Color,
    pub container: String,
    /// What serves now, if known.
    pub previous: Option<ReleaseRef>,
    /// Where users reach the app (the proxy's published address).
    pub url: String,
    pub health_url: String,
    /// Whether the live state could be read (`known`), or why not.
    pub live_state: LiveState,
    pub steps: Vec<Step>,
    /// What runs if the deploy fails.
    pub on_failure: Vec<Step>,
    /// `--skip-tests`: recorded in the ledger.
    pub tests_skipped: bool,
    /// A rollback re-creates its release from this recorded spec (None: from the current config).
    #[serde(skip)]
    pub restore: Option<ReleaseSpec>,
    /// A fleet (`docker.hosts`): every host, in the order they are locked; the plan's steps run
    /// on each (the live state and colours are the first host's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

impl Plan {
    /// The plan with `--lock-wait` in its lock step.
    pub fn with_lock_wait(mut self, lock_wait: std::time::Duration) -> Plan {
        for step in &mut self.steps {
            if let Step::AcquireLock { wait, .. } = step {
                *wait = crate::config::Duration::from_millis(lock_wait.as_millis() as u64);
            }
        }
        self
    }
}

/// Inputs of a deploy that do not come from the config.
#[derive(Debug, Clone)]
pub struct DeployRequest {
    pub version: String,
    /// Deploy this existing image instead of building.
    pub image: Option<String>,
    /// The id of the image built or resolved for this deploy, once known.
    pub image_id: Option<String>,
    pub skip_tests: bool,
    /// deployctl's proxy image reference.
    pub proxy_image: String,
}

/// The address users reach the app at (`DOCKER_HOST` stands in for an unset `docker.host`).
pub fn public_url(config: &Config) -> String {
    let env_host = std::env::var("DOCKER_HOST").ok();
    let engine = config.docker.host.as_deref().or(env_host.as_deref());
    crate::public_url::derive(
        &config.proxy.listen,
        engine,
        config.proxy.public_url.as_deref(),
    )
}

pub fn health_url(config: &Config, container: &str) -> String {
    format!(
        "http://{container}:{}{}",
        config.health_port(),
        config.health.path
    )
}

/// The image reference of the proxy (the configured one wins).
pub fn proxy_image(config: &Config, built: &str) -> String {
    config
        .proxy
        .image
        .clone()
        .unwrap_or_else(|| built.to_string())
}

pub fn plan_deploy(loaded: &Loaded, req: &DeployRequest, observed: &Observed) -> Plan {
    let config = &loaded.config;
    let names = Names::new(&config.app.name, &loaded.env);
    let image = req
        .image
        .clone()
        .unwrap_or_else(|| names.image(&req.version));
    let color = Color::next(observed.live.as_ref().map(|t| t.color));
    let container = names.container(color);
    let mut steps = Vec::new();

    if !req.skip_tests {
        for spec in &config.test.commands {
            let (command, shell) = command_argv(spec);
            steps.push(Step::RunTest {
                command,
                shell,
                timeout: config.test.timeout,
            });
        }
    }
    match &req.image {
        Some(image) => steps.push(Step::UseImage {
            image: image.clone(),
        }),
        None => {
            steps.extend(hook_steps(config, Hook::PreBuild, &config.hooks.pre_build));
            steps.push(Step::BuildImage {
                image: image.clone(),
                context: config.build.context.display().to_string(),
                dockerfile: config.build.dockerfile.display().to_string(),
                target: config.build.target.clone(),
            });
            if let Some(target) = registry_target(config, &req.version) {
                steps.push(Step::PushImage {
                    image: image.clone(),
                    target,
                });
            }
        }
    }
    steps.push(Step::AcquireLock {
        lock: names.lock(),
        wait: crate::config::Duration::from_secs(0),
        stale_after: config.deploy.lock_stale_after,
    });
    steps.extend(swap_steps(
        loaded,
        observed,
        &names,
        &image,
        &req.version,
        color,
        &req.proxy_image,
    ));
    steps.push(Step::Verify {
        window: config.verify.window,
        max_error_rate: config.verify.max_error_rate,
        max_p95_latency: config.verify.max_p95_latency,
        health: Hidden(crate::host::health_spec(config, &container)),
    });
    steps.extend(go_live_steps(observed, &req.version));
    let prune = prune_images(&names, config.deploy.keep_releases, observed, &req.version);
    if !prune.is_empty() {
        steps.push(Step::Prune { images: prune });
    }
    steps.push(Step::ReleaseLock { lock: names.lock() });
    steps.extend(hook_steps(
        config,
        Hook::PostDeploy,
        &config.hooks.post_deploy,
    ));
    steps.extend(notify_steps(config, NotifyEvent::Success));

    let mut on_failure = Vec::new();
    if let Some(live) = &observed.live
        && config.rollback.automatic
    {
        on_failure.push(Step::SwitchBack {
            from: container.clone(),
            to: live.clone(),
            drain_timeout: config.deploy.drain_timeout,
            health: Hidden(crate::host::health_spec(config, &live.container)),
        });
    }
    on_failure.push(Step::StopFailed {
        container: container.clone(),
        version: req.version.clone(),
    });
    let switches_back = observed.live.as_ref().filter(|_| config.rollback.automatic);
    on_failure.push(Step::RecordFailure {
        version: req.version.clone(),
        rolled_back_to: switches_back.map(|l| l.version.clone()),
    });
    on_failure.push(Step::PruneFailed {
        keep_releases: config.deploy.keep_releases,
    });
    on_failure.push(Step::ReleaseLock { lock: names.lock() });
    on_failure.extend(hook_steps(
        config,
        Hook::OnFailure,
        &config.hooks.on_failure,
    ));
    if switches_back.is_some() {
        on_failure.extend(
            hook_steps(config, Hook::OnRollback, &config.hooks.on_rollback)
                .into_iter()
                .map(|mut s| {
                    if let Step::RunHook { if_rolled_back, .. } = &mut s {
                        *if_rolled_back = true;
                    }
                    s
                }),
        );
    }
    on_failure.extend(notify_steps(config, NotifyEvent::Failure));

    Plan {
        kind: RunKind::Deploy,
        app: config.app.name.clone(),
        env: loaded.env.clone(),
        version: req.version.clone(),
        image,
        image_id: req.image_id.clone(),
        color,
        health_url: health_url(config, &container),
        container,
        previous: live_ref(observed),
        url: public_url(config),
        live_state: live_state(observed),
        steps,
        on_failure,
        tests_skipped: req.skip_tests && !loaded.config.test.commands.is_empty(),
        restore: None,
        hosts: fleet_hosts(config),
    }
}

/// The steps shared by deploy and rollback: network, proxy, the idle colour's container, health, switch.
fn swap_steps(
    loaded: &Loaded,
    observed: &Observed,
    names: &Names,
    image: &str,
    version: &str,
    color: Color,
    built_proxy_image: &str,
) -> Vec<Step> {
    let config = &loaded.config;
    let container = names.container(color);
    let mut steps = vec![Step::EnsureNetwork {
        network: names.network(),
    }];
    let action = match &observed.proxy {
        None => ProxyAction::Create,
        Some(p) if !p.running => ProxyAction::Start,
        Some(_) => ProxyAction::Keep,
    };
    steps.push(Step::EnsureProxy {
        container: names.proxy(),
        image: proxy_image(config, built_proxy_image),
        listen: config.proxy.listen.to_string(),
        action,
    });
    if let Some(ship) = ship_step(config, image) {
        steps.push(ship);
    }
    if let Some(existing) = observed.container(&container) {
        steps.push(Step::RemoveContainer {
            container: container.clone(),
            version: existing.version.clone(),
            reason: "its colour is needed for the new release; its image stays for rollback".into(),
        });
    }
    let mut env: Vec<String> = config.app.env.keys().cloned().collect();
    env.extend(loaded.env_file_vars.keys().cloned());
    env.sort();
    env.dedup();
    steps.push(Step::StartRelease {
        container: container.clone(),
        image: image.to_string(),
        color,
        version: version.to_string(),
        network: names.network(),
        env,
        reuse: false,
    });
    let h = &config.health;
    steps.push(Step::WaitHealthy {
        url: health_url(config, &container),
        expect_status: h.expect_status.clone(),
        healthy_threshold: h.healthy_threshold,
        interval: h.interval,
        timeout: h.timeout,
        deadline: h.deadline,
        host: h.host.clone(),
        headers: h
            .headers
            .keys()
            .map(|k| (k.clone(), "***".into()))
            .collect(),
        expect_body: h.expect_body.clone(),
        expect_json: h.expect_json.clone(),
        docker_cmd: h.docker_cmd.clone(),
        unhealthy_threshold: h.unhealthy_threshold,
        start_period: h.start_period,
        spec: Hidden(crate::host::health_spec(config, &container)),
    });
    steps.extend(hook_steps(
        config,
        Hook::PreDeploy,
        &config.hooks.pre_deploy,
    ));
    steps.push(Step::Switch {
        from: observed.live.as_ref().map(|t| t.container.clone()),
        health: Hidden(crate::host::health_spec(config, &container)),
        to: container,
        drain_timeout: config.deploy.drain_timeout,
    });
    steps
}

/// `<server>/<repository>:<version>` when a registry is configured.
pub fn registry_target(config: &Config, version: &str) -> Option<String> {
    let server = config.registry.server.as_deref()?;
    let repository = config
        .registry
        .repository
        .as_deref()
        .unwrap_or(&config.app.name);
    Some(format!("{server}/{repository}:{version}"))
}

/// After the switch and its checks: the previous release stops (kept for rollback) and the new one
/// is recorded live. Shared by deploy and rollback.
fn go_live_steps(observed: &Observed, version: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = observed
        .live
        .iter()
        .map(|live| Step::StopContainer {
            container: live.container.clone(),
            version: live.version.clone(),
        })
        .collect();
    steps.push(Step::RecordRelease {
        version: version.to_string(),
        outcome: Outcome::Live,
    });
    steps
}

fn hook_steps(config: &Config, hook: Hook, specs: &[CommandSpec]) -> Vec<Step> {
    specs
        .iter()
        .map(|s| {
            let (command, shell) = command_argv(s);
            Step::RunHook {
                hook,
                command,
                shell,
                timeout: config.test.timeout,
                if_rolled_back: false,
            }
        })
        .collect()
}

fn live_ref(observed: &Observed) -> Option<ReleaseRef> {
    observed.live.as_ref().map(|t| ReleaseRef {
        version: t.version.clone(),
        color: t.color,
        container: t.container.clone(),
    })
}

fn notify_steps(config: &Config, event: NotifyEvent) -> Vec<Step> {
    let targets: Vec<crate::config::Notify> = config
        .notify
        .iter()
        .filter(|n| n.on.contains(&event))
        .cloned()
        .collect();
    if targets.is_empty() {
        return Vec::new();
    }
    vec![Step::Notify {
        event,
        kinds: targets.iter().map(|n| n.kind).collect(),
        targets: Hidden(targets),
    }]
}

/// Where the image goes before the release starts: with `build.local` from this machine to every
/// host, on a fleet from the first host to the others; None when it is built where it runs.
fn ship_step(config: &Config, image: &str) -> Option<Step> {
    let hosts: Vec<String> = config
        .docker
        .engines()
        .into_iter()
        .map(|h| h.unwrap_or_else(|| "the Docker host".into()))
        .collect();
    let (from, to) = if config.build.local {
        ("this machine".to_string(), hosts)
    } else {
        match hosts.split_first() {
            Some((first, others)) if !others.is_empty() => (first.clone(), others.to_vec()),
            _ => return None,
        }
    };
    Some(Step::ShipImage {
        image: image.to_string(),
        from,
        to,
    })
}

/// The hosts of a fleet; empty for one host.
fn fleet_hosts(config: &Config) -> Vec<String> {
    if config.docker.hosts.len() > 1 {
        config.docker.hosts.clone()
    } else {
        Vec::new()
    }
}

fn live_state(observed: &Observed) -> LiveState {
    match &observed.unknown_reason {
        None => LiveState::Known,
        Some(reason) => LiveState::Unknown(reason.clone()),
    }
}

/// Images to remove after `new_version` becomes live: beyond the newest `keep_releases` good
/// releases, never the live one, never the last good one, never one a container still runs.
pub fn prune_images(
    names: &Names,
    keep_releases: u32,
    observed: &Observed,
    new_version: &str,
) -> Vec<String> {
    let keep_n = keep_releases as usize;
    let mut keep: BTreeSet<&str> = BTreeSet::from([new_version]);
    if let Some(live) = &observed.live {
        keep.insert(&live.version);
    }
    if let Some(good) = observed.last_good(None) {
        keep.insert(&good.version);
    }
    let mut good_versions = Vec::new();
    for r in observed.releases.iter().rev() {
        if matches!(r.outcome, Outcome::Good | Outcome::Live)
            && !good_versions.contains(&r.version.as_str())
        {
            good_versions.push(r.version.as_str());
        }
    }
    // The new release counts as one of the kept good ones.
    keep.extend(
        good_versions
            .iter()
            .filter(|v| **v != new_version)
            .take(keep_n.saturating_sub(1)),
    );
    for c in &observed.containers {
        if c.running {
            keep.insert(&c.version);
        }
    }
    observed
        .images
        .iter()
        .filter(|v| !keep.contains(v.as_str()))
        .map(|v| names.image(v))
        .collect()
}
