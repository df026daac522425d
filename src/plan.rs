//! The planner: a pure function of (configuration, observed state) to the ordered steps of a deploy
//! or a rollback. `--dry-run` prints the plan; the executor (`deploy.rs`) performs the same steps,
//! so the preview cannot drift from what happens.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::config::{CommandSpec, Config, Loaded, NotifyEvent};
use crate::names::{Names, other_color};
use crate::proxy::protocol::{Outcome, ReleaseRecord, ReleaseSpec, Target};

/// What deployctl saw on the Docker host before planning.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observed {
    /// None when the engine could not be asked; the reason is kept for the plan.
    pub unknown_reason: Option<String>,
    pub proxy: Option<ProxyObserved>,
    /// The target the proxy routes to.
    pub live: Option<Target>,
    pub containers: Vec<AppContainer>,
    /// The release ledger, oldest first.
    pub releases: Vec<ReleaseRecord>,
    /// Versions that have an image of this app and environment (by labels; a tag may have moved).
    pub images: BTreeSet<String>,
    /// Version -> id of this environment's newest image of it.
    #[serde(skip)]
    pub image_ids: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProxyObserved {
    pub container: String,
    pub image: String,
    pub running: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppContainer {
    /// Docker's id.
    #[serde(skip)]
    pub id: String,
    pub name: String,
    pub color: String,
    pub version: String,
    pub running: bool,
}

impl Observed {
    pub fn unknown(reason: impl Into<String>) -> Self {
        Observed {
            unknown_reason: Some(reason.into()),
            ..Default::default()
        }
    }
    pub fn is_known(&self) -> bool {
        self.unknown_reason.is_none()
    }
    fn container(&self, name: &str) -> Option<&AppContainer> {
        self.containers.iter().find(|c| c.name == name)
    }
    /// The newest release recorded as good (or live) other than `except`.
    pub fn last_good(&self, except: Option<&str>) -> Option<&ReleaseRecord> {
        self.releases.iter().rev().find(|r| {
            matches!(r.outcome, Outcome::Good | Outcome::Live) && Some(r.version.as_str()) != except
        })
    }
}

/// One step, with every concrete value the executor will use. Secrets are already redacted
/// by the caller's output layer; the plan carries no secret values except through `Loaded`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    RunHook {
        hook: String,
        command: Vec<String>,
        shell: bool,
    },
    RunTest {
        command: Vec<String>,
        shell: bool,
        timeout: String,
    },
    BuildImage {
        image: String,
        context: String,
        dockerfile: String,
        target: Option<String>,
    },
    UseImage {
        image: String,
    },
    PushImage {
        image: String,
        target: String,
    },
    AcquireLock {
        lock: String,
    },
    EnsureNetwork {
        network: String,
    },
    EnsureProxy {
        container: String,
        image: String,
        listen: String,
        action: ProxyAction,
    },
    RemoveContainer {
        container: String,
        version: String,
        reason: String,
    },
    StartRelease {
        container: String,
        image: String,
        color: String,
        version: String,
        network: String,
        env: Vec<String>,
        /// Start the release's existing stopped container instead of creating one.
        reuse: bool,
    },
    WaitHealthy {
        url: String,
        expect_status: Vec<u16>,
        healthy_threshold: u32,
        interval: String,
        timeout: String,
        deadline: String,
        /// The other rules of each check; header values are always shown as `***`.
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        headers: std::collections::BTreeMap<String, String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expect_body: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        expect_json: Option<crate::config::ExpectJson>,
        /// `health.docker_cmd`: Docker's own HEALTHCHECK must pass too.
        #[serde(skip_serializing_if = "Option::is_none")]
        docker_cmd: Option<Vec<String>>,
        /// Consecutive failing answers that fail the release.
        unhealthy_threshold: u32,
        /// Failures in this first stretch do not count.
        start_period: String,
    },
    Switch {
        from: Option<String>,
        to: String,
        drain_timeout: String,
    },
    Verify {
        window: String,
        max_error_rate: f64,
        max_p95_latency: String,
    },
    StopContainer {
        container: String,
        version: String,
    },
    RecordRelease {
        version: String,
        outcome: String,
    },
    Prune {
        images: Vec<String>,
    },
    Notify {
        kind: String,
        url: String,
        event: String,
    },
    ReleaseLock {
        lock: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyAction {
    Create,
    Start,
    Keep,
}

impl Step {
    /// One line for humans.
    pub fn describe(&self) -> String {
        match self {
            Step::RunHook {
                hook,
                command,
                shell,
            } => format!("run {hook} hook: {}", show_command(command, *shell)),
            Step::RunTest {
                command,
                shell,
                timeout,
            } => {
                format!(
                    "run test: {} (timeout {timeout})",
                    show_command(command, *shell)
                )
            }
            Step::BuildImage {
                image,
                context,
                dockerfile,
                target,
            } => format!(
                "build image {image} from {context} ({dockerfile}{})",
                target
                    .as_ref()
                    .map(|t| format!(", target {t}"))
                    .unwrap_or_default()
            ),
            Step::UseImage { image } => format!("use existing image {image} (no build)"),
            Step::PushImage { image, target } => format!("push {image} as {target}"),
            Step::AcquireLock { lock } => format!("take lock {lock}"),
            Step::EnsureNetwork { network } => format!("ensure network {network}"),
            Step::EnsureProxy {
                container,
                image,
                listen,
                action,
            } => match action {
                ProxyAction::Create => {
                    format!("create proxy {container} ({image}) publishing {listen}")
                }
                ProxyAction::Start => format!("start stopped proxy {container}"),
                ProxyAction::Keep => format!("keep proxy {container} publishing {listen}"),
            },
            Step::RemoveContainer {
                container,
                version,
                reason,
            } => {
                format!("remove container {container} ({version}): {reason}")
            }
            Step::StartRelease {
                container,
                version,
                reuse: true,
                ..
            } => {
                format!("start the existing container {container} ({version}), no rebuild")
            }
            Step::StartRelease {
                container,
                image,
                color,
                version,
                network,
                env,
                reuse: false,
            } => format!(
                "start {container} from {image} as {color} (version {version}) on {network}{}",
                if env.is_empty() {
                    String::new()
                } else {
                    format!(", env {}", env.join(", "))
                }
            ),
            Step::WaitHealthy {
                url,
                expect_status,
                healthy_threshold,
                interval,
                timeout,
                deadline,
                host,
                headers,
                expect_body,
                expect_json,
                docker_cmd,
                unhealthy_threshold,
                start_period,
            } => {
                let mut rules = String::new();
                if let Some(b) = expect_body {
                    rules.push_str(&format!(", body contains {b:?}"));
                }
                if let Some(j) = expect_json {
                    rules.push_str(&format!(", JSON {} = {:?}", j.pointer, j.equals));
                }
                if let Some(h) = host {
                    rules.push_str(&format!(", Host: {h}"));
                }
                if let Some(cmd) = docker_cmd {
                    rules.push_str(&format!(", Docker HEALTHCHECK {}", shell_words::join(cmd)));
                }
                if !headers.is_empty() {
                    let list: Vec<String> =
                        headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                    rules.push_str(&format!(", headers {}", list.join(", ")));
                }
                format!(
                    "wait for {healthy_threshold} consecutive passing checks of {url} (status {}, every {interval}, timeout {timeout}, deadline {deadline}{rules}); fail after {unhealthy_threshold} consecutive failing answers{}",
                    expect_status
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join("|"),
                    if start_period == "0s" {
                        String::new()
                    } else {
                        format!(" (none counted in the first {start_period})")
                    }
                )
            }
            Step::Switch {
                from,
                to,
                drain_timeout,
            } => match from {
                Some(from) => {
                    format!("switch traffic {from} -> {to}, drain {from} up to {drain_timeout}")
                }
                None => format!("switch traffic to {to}"),
            },
            Step::Verify {
                window,
                max_error_rate,
                max_p95_latency,
            } => format!(
                "verify for {window}: health keeps passing, error rate <= {:.2}%, p95 <= {max_p95_latency}",
                max_error_rate * 100.0
            ),
            Step::StopContainer { container, version } => {
                format!("stop {container} ({version}), keep it for rollback")
            }
            Step::RecordRelease { version, outcome } => {
                format!("record release {version} as {outcome}")
            }
            Step::Prune { images } => format!("prune images {}", images.join(", ")),
            Step::Notify { kind, url, event } => format!("notify {kind} {url} on {event}"),
            Step::ReleaseLock { lock } => format!("release lock {lock}"),
        }
    }
}

/// Redacted before quoting: quoting a secret that holds quotes or spaces would hide it from the
/// redactor.
fn show_command(command: &[String], shell: bool) -> String {
    if shell {
        format!(
            "sh -c {}",
            crate::output::shell_quote(command.first().map(String::as_str).unwrap_or(""))
        )
    } else {
        crate::output::shell_join(command)
    }
}

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
    pub color: String,
    pub container: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// `deploy` or `rollback`.
    pub kind: String,
    pub app: String,
    pub env: String,
    pub version: String,
    pub image: String,
    /// The image id the container is created from, when known: this environment's own build,
    /// whatever the shared tag `image` points at by then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    pub color: String,
    pub container: String,
    /// What serves now, if known.
    pub previous: Option<ReleaseRef>,
    /// Where users reach the app (the proxy's published address).
    pub url: String,
    pub health_url: String,
    /// `known`, or why the live state could not be read.
    pub live_state: String,
    pub steps: Vec<Step>,
    /// What runs if the deploy fails.
    pub on_failure: Vec<Step>,
    /// `--skip-tests`: recorded in the ledger.
    pub tests_skipped: bool,
    /// A rollback re-creates its release from this recorded spec (None: from the current config).
    #[serde(skip)]
    pub restore: Option<ReleaseSpec>,
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
    let live_color = observed.live.as_ref().map(|t| t.color.as_str());
    let color = other_color(live_color).to_string();
    let container = names.container(&color);
    let mut steps = Vec::new();

    if !req.skip_tests {
        for spec in &config.test.commands {
            let (command, shell) = command_argv(spec);
            steps.push(Step::RunTest {
                command,
                shell,
                timeout: config.test.timeout.to_string(),
            });
        }
    }
    match &req.image {
        Some(image) => steps.push(Step::UseImage {
            image: image.clone(),
        }),
        None => {
            steps.extend(hook_steps("pre_build", &config.hooks.pre_build));
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
    steps.push(Step::AcquireLock { lock: names.lock() });
    steps.extend(swap_steps(
        loaded,
        observed,
        &names,
        &image,
        &req.version,
        &color,
        &req.proxy_image,
    ));
    steps.push(Step::Verify {
        window: config.verify.window.to_string(),
        max_error_rate: config.verify.max_error_rate,
        max_p95_latency: config.verify.max_p95_latency.to_string(),
    });
    steps.extend(go_live_steps(observed, &req.version));
    let prune = prune_images(loaded, observed, &req.version);
    if !prune.is_empty() {
        steps.push(Step::Prune { images: prune });
    }
    steps.push(Step::ReleaseLock { lock: names.lock() });
    steps.extend(hook_steps("post_deploy", &config.hooks.post_deploy));
    steps.extend(notify_steps(config, NotifyEvent::Success));

    let mut on_failure = Vec::new();
    if let Some(live) = &observed.live
        && config.rollback.automatic
    {
        on_failure.push(Step::Switch {
            from: Some(container.clone()),
            to: live.container.clone(),
            drain_timeout: config.deploy.drain_timeout.to_string(),
        });
    }
    on_failure.push(Step::StopContainer {
        container: container.clone(),
        version: req.version.clone(),
    });
    on_failure.push(Step::RecordRelease {
        version: req.version.clone(),
        outcome: "failed".into(),
    });
    on_failure.push(Step::ReleaseLock { lock: names.lock() });
    on_failure.extend(hook_steps("on_failure", &config.hooks.on_failure));
    on_failure.extend(notify_steps(config, NotifyEvent::Failure));

    Plan {
        kind: "deploy".into(),
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
    }
}

/// The steps shared by deploy and rollback: network, proxy, the idle colour's container, health, switch.
fn swap_steps(
    loaded: &Loaded,
    observed: &Observed,
    names: &Names,
    image: &str,
    version: &str,
    color: &str,
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
        color: color.to_string(),
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
        interval: h.interval.to_string(),
        timeout: h.timeout.to_string(),
        deadline: h.deadline.to_string(),
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
        start_period: h.start_period.to_string(),
    });
    steps.extend(hook_steps("pre_deploy", &config.hooks.pre_deploy));
    steps.push(Step::Switch {
        from: observed.live.as_ref().map(|t| t.container.clone()),
        to: container,
        drain_timeout: config.deploy.drain_timeout.to_string(),
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
        outcome: "live".into(),
    });
    steps
}

fn hook_steps(hook: &str, specs: &[CommandSpec]) -> Vec<Step> {
    specs
        .iter()
        .map(|s| {
            let (command, shell) = command_argv(s);
            Step::RunHook {
                hook: hook.into(),
                command,
                shell,
            }
        })
        .collect()
}

fn live_ref(observed: &Observed) -> Option<ReleaseRef> {
    observed.live.as_ref().map(|t| ReleaseRef {
        version: t.version.clone(),
        color: t.color.clone(),
        container: t.container.clone(),
    })
}

fn notify_steps(config: &Config, event: NotifyEvent) -> Vec<Step> {
    config
        .notify
        .iter()
        .filter(|n| n.on.contains(&event))
        .map(|n| Step::Notify {
            kind: format!("{:?}", n.kind).to_lowercase(),
            // Webhook URLs carry tokens: never in a plan.
            url: "***".into(),
            event: format!("{event:?}").to_lowercase(),
        })
        .collect()
}

fn live_state(observed: &Observed) -> String {
    match &observed.unknown_reason {
        None => "known".into(),
        Some(reason) => format!("unknown ({reason})"),
    }
}

/// Images to remove after `new_version` becomes live: beyond the newest `keep_releases` good
/// releases, never the live one, never the last good one, never one a container still runs.
pub fn prune_images(loaded: &Loaded, observed: &Observed, new_version: &str) -> Vec<String> {
    let names = Names::new(&loaded.config.app.name, &loaded.env);
    let keep_n = loaded.config.deploy.keep_releases as usize;
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

/// Which release a rollback goes to.
pub fn rollback_target<'a>(
    observed: &'a Observed,
    to: Option<&str>,
) -> Result<&'a ReleaseRecord, String> {
    let live_version = observed.live.as_ref().map(|t| t.version.as_str());
    let named = |r: &&ReleaseRecord| to.is_some_and(|v| r.version == v || r.version.starts_with(v));
    // The newest record of that version that served (good or live, else rolled back): a failed
    // attempt's record does not say how it ran.
    let served = [
        &[Outcome::Good, Outcome::Live][..],
        &[Outcome::RolledBack],
        &[Outcome::Failed, Outcome::InProgress],
    ];
    match to {
        Some(v) => served
            .iter()
            .find_map(|outcomes| {
                observed
                    .releases
                    .iter()
                    .rev()
                    .find(|r| named(r) && outcomes.contains(&r.outcome))
            })
            .ok_or_else(|| {
                format!("no release {v} in the ledger; `deployctl releases` lists them")
            }),
        None => observed.last_good(live_version).ok_or_else(|| {
            "no earlier good release to roll back to; `deployctl releases` lists them".to_string()
        }),
    }
}

/// A rollback re-creates the release from the spec recorded in the ledger (as it ran), unless
/// `current_config`; only the very container that ran it is reused, and only without `current_config`.
pub fn plan_rollback(
    loaded: &Loaded,
    to: Option<&str>,
    observed: &Observed,
    built_proxy_image: &str,
    current_config: bool,
) -> Result<Plan, String> {
    let config = &loaded.config;
    let names = Names::new(&config.app.name, &loaded.env);
    let target = rollback_target(observed, to)?;
    if observed
        .live
        .as_ref()
        .is_some_and(|l| l.version == target.version)
    {
        return Err(format!("{} is already live", target.version));
    }
    if !observed.images.contains(&target.version)
        && !observed
            .containers
            .iter()
            .any(|c| c.version == target.version)
    {
        return Err(format!(
            "the image of {} is gone (pruned?); deploy that version again instead",
            target.version
        ));
    }
    let live_color = observed.live.as_ref().map(|t| t.color.as_str());
    let color = other_color(live_color).to_string();
    let container = names.container(&color);
    let image = names.image(&target.version);
    let mut steps = vec![Step::AcquireLock { lock: names.lock() }];
    // The release's own container, if it is in the idle colour, is reused: no new create. Only the
    // very container the ledger recorded: a leftover of a failed attempt may differ from it.
    let restore = target.spec.as_deref().cloned().filter(|_| !current_config);
    let reusable = observed.container(&container).is_some_and(|c| {
        c.version == target.version
            && restore
                .as_ref()
                .is_some_and(|s| s.container_id.as_deref() == Some(c.id.as_str()))
    });
    if reusable {
        let mut swap = swap_steps(
            loaded,
            observed,
            &names,
            &image,
            &target.version,
            &color,
            built_proxy_image,
        );
        swap.retain(|s| !matches!(s, Step::RemoveContainer { .. }));
        for s in &mut swap {
            if let Step::StartRelease { env, reuse, .. } = s {
                // Reused as created: its environment is the one it had.
                env.clear();
                *reuse = true;
            }
        }
        steps.extend(swap);
    } else {
        steps.extend(swap_steps(
            loaded,
            observed,
            &names,
            &image,
            &target.version,
            &color,
            built_proxy_image,
        ));
    }
    steps.extend(go_live_steps(observed, &target.version));
    steps.push(Step::ReleaseLock { lock: names.lock() });
    steps.extend(hook_steps("on_rollback", &config.hooks.on_rollback));
    steps.extend(notify_steps(config, NotifyEvent::Rollback));
    Ok(Plan {
        kind: "rollback".into(),
        app: config.app.name.clone(),
        env: loaded.env.clone(),
        version: target.version.clone(),
        image,
        color,
        health_url: health_url(config, &container),
        container,
        previous: live_ref(observed),
        url: public_url(config),
        live_state: live_state(observed),
        steps,
        on_failure: vec![Step::ReleaseLock { lock: names.lock() }],
        tests_skipped: false,
        image_id: target
            .spec
            .as_ref()
            .map(|s| s.image_id.clone())
            .or_else(|| observed.image_ids.get(&target.version).cloned()),
        restore,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::redact::Redactor;

    fn loaded(extra: &str) -> Loaded {
        let text = format!("[app]\nname = \"web\"\n{extra}");
        let config: Config = toml::from_str(&text).expect("test config parses");
        Loaded {
            config,
            env: "prod".into(),
            root: PathBuf::from("."),
            files: vec![],
            redactor: Redactor::new(),
            env_file_vars: BTreeMap::from([("DB_PASSWORD".to_string(), "hunter22".to_string())]),
            warnings: vec![],
        }
    }

    fn request(version: &str) -> DeployRequest {
        DeployRequest {
            version: version.into(),
            image: None,
            image_id: None,
            skip_tests: false,
            proxy_image: "deployctl-proxy:test".into(),
        }
    }

    fn release(version: &str, outcome: Outcome, color: &str) -> ReleaseRecord {
        ReleaseRecord {
            id: version.into(),
            version: version.into(),
            image: format!("web:{version}"),
            color: color.into(),
            container: format!("web.prod-{color}"),
            git_sha: None,
            author: None,
            started_at: 0,
            finished_at: None,
            duration_ms: None,
            outcome,
            reason: None,
            tests_skipped: false,
            spec: None,
        }
    }

    fn live(version: &str, color: &str) -> Target {
        Target {
            addr: format!("web.prod-{color}:8080"),
            container: format!("web.prod-{color}"),
            version: version.into(),
            color: color.into(),
        }
    }

    fn container(version: &str, color: &str, running: bool) -> AppContainer {
        AppContainer {
            id: format!("id-{version}-{color}"),
            name: format!("web.prod-{color}"),
            color: color.into(),
            version: version.into(),
            running,
        }
    }

    /// The observed state after good releases `versions` (the last one live in `color`).
    fn after_releases(versions: &[&str], live_color: &str) -> Observed {
        let last = versions.last().copied().unwrap_or_default();
        let mut releases: Vec<ReleaseRecord> = versions
            .iter()
            .map(|v| release(v, Outcome::Good, "blue"))
            .collect();
        if let Some(r) = releases.last_mut() {
            r.outcome = Outcome::Live;
        }
        Observed {
            proxy: Some(ProxyObserved {
                container: "deployctl-proxy-web.prod".into(),
                image: "deployctl-proxy:test".into(),
                running: true,
            }),
            live: Some(live(last, live_color)),
            containers: vec![container(last, live_color, true)],
            images: versions.iter().map(|v| v.to_string()).collect(),
            releases,
            ..Default::default()
        }
    }

    fn kinds(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| {
                serde_json::to_value(s).expect("serializes")["step"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn first_deploy_goes_blue_and_creates_the_proxy() {
        let l = loaded(
            "[test]\ncommands = [\"cargo test\"]\n[hooks]\npre_build = [[\"make\", \"assets\"]]\n",
        );
        let plan = plan_deploy(&l, &request("v1"), &Observed::default());
        assert_eq!(plan.color, "blue");
        assert_eq!(plan.container, "web.prod-blue");
        assert_eq!(plan.image, "web:v1");
        assert!(plan.previous.is_none());
        assert_eq!(plan.url, "http://localhost:8080");
        assert_eq!(plan.health_url, "http://web.prod-blue:8080/health");
        assert_eq!(
            kinds(&plan.steps),
            [
                "run_test",
                "run_hook",
                "build_image",
                "acquire_lock",
                "ensure_network",
                "ensure_proxy",
                "start_release",
                "wait_healthy",
                "switch",
                "verify",
                "record_release",
                "release_lock"
            ]
        );
        assert!(matches!(
            &plan.steps[5],
            Step::EnsureProxy {
                action: ProxyAction::Create,
                ..
            }
        ));
        assert_eq!(
            plan.steps[0],
            Step::RunTest {
                command: vec!["cargo".into(), "test".into()],
                shell: false,
                timeout: "10m".into()
            }
        );
        // The env file's variables reach the container by name only.
        let Step::StartRelease { env, .. } = &plan.steps[6] else {
            panic!("start step")
        };
        assert_eq!(env, &["DB_PASSWORD".to_string()]);
        assert!(
            !serde_json::to_string(&plan)
                .expect("json")
                .contains("hunter22")
        );
    }

    #[test]
    fn next_deploy_goes_to_the_idle_colour_and_stops_the_old_one_after_verify() {
        let mut observed = after_releases(&["v1"], "blue");
        // A failed earlier attempt left a green container behind: it makes room.
        observed
            .containers
            .push(container("v0-failed", "green", false));
        let plan = plan_deploy(&loaded(""), &request("v2"), &observed);
        assert_eq!(plan.color, "green");
        assert_eq!(
            plan.previous.as_ref().map(|p| p.version.as_str()),
            Some("v1")
        );
        let k = kinds(&plan.steps);
        let pos = |name: &str| k.iter().position(|s| s == name).unwrap_or(usize::MAX);
        assert!(pos("remove_container") < pos("start_release"));
        assert!(pos("switch") < pos("verify") && pos("verify") < pos("stop_container"));
        assert!(plan.steps.contains(&Step::Switch {
            from: Some("web.prod-blue".into()),
            to: "web.prod-green".into(),
            drain_timeout: "30s".into()
        }));
        assert!(plan.steps.contains(&Step::StopContainer {
            container: "web.prod-blue".into(),
            version: "v1".into()
        }));
        assert!(matches!(
            &plan.steps[pos("ensure_proxy")],
            Step::EnsureProxy {
                action: ProxyAction::Keep,
                ..
            }
        ));
        // Automatic rollback switches back first.
        assert!(matches!(&plan.on_failure[0], Step::Switch { to, .. } if to == "web.prod-blue"));
    }

    #[test]
    fn no_automatic_rollback_means_no_switch_back_in_the_failure_plan() {
        let plan = plan_deploy(
            &loaded("[rollback]\nautomatic = false\n"),
            &request("v2"),
            &after_releases(&["v1"], "blue"),
        );
        assert!(
            !plan
                .on_failure
                .iter()
                .any(|s| matches!(s, Step::Switch { .. }))
        );
    }

    #[test]
    fn existing_image_and_skipped_tests_skip_build_and_tests() {
        let l =
            loaded("[test]\ncommands = [[\"npm\", \"test\"]]\n[hooks]\npre_build = [\"make\"]\n");
        let mut req = request("v9");
        req.image = Some("registry.local/web:v9".into());
        req.skip_tests = true;
        let plan = plan_deploy(&l, &req, &Observed::default());
        let k = kinds(&plan.steps);
        assert_eq!(k[0], "use_image");
        assert!(
            !k.iter()
                .any(|s| s == "build_image" || s == "run_test" || s == "run_hook")
        );
        assert_eq!(plan.image, "registry.local/web:v9");
        assert!(plan.tests_skipped);
    }

    #[test]
    fn unknown_live_state_is_said_and_notifications_hide_their_url() {
        let l = loaded(
            "[[notify]]\nkind = \"slack\"\nurl = \"https://hooks.example/T0KEN\"\non = [\"success\"]\n",
        );
        let plan = plan_deploy(&l, &request("v1"), &Observed::unknown("connection refused"));
        assert_eq!(plan.live_state, "unknown (connection refused)");
        assert!(plan.steps.contains(&Step::Notify {
            kind: "slack".into(),
            url: "***".into(),
            event: "success".into()
        }));
        assert!(
            !serde_json::to_string(&plan)
                .expect("json")
                .contains("T0KEN")
        );
        // Only `success` was asked for.
        assert!(
            !plan
                .on_failure
                .iter()
                .any(|s| matches!(s, Step::Notify { .. }))
        );
    }

    #[test]
    fn pruning_keeps_the_newest_good_releases_and_never_the_live_or_last_good() {
        let l = loaded("[deploy]\nkeep_releases = 2\n");
        let observed = after_releases(&["r1", "r2", "r3", "r4", "r5"], "blue");
        let pruned = prune_images(&l, &observed, "r6");
        assert_eq!(pruned, ["web:r1", "web:r2", "web:r3", "web:r4"]);
        let plan = plan_deploy(&l, &request("r6"), &observed);
        assert!(plan.steps.contains(&Step::Prune { images: pruned }));

        // keep_releases = 1 still keeps the live release and the last good one.
        let l = loaded("[deploy]\nkeep_releases = 1\n");
        let mut observed = after_releases(&["g1"], "blue");
        observed
            .releases
            .push(release("f2", Outcome::Failed, "green"));
        observed.images.insert("f2".into());
        let pruned = prune_images(&l, &observed, "n3");
        assert_eq!(pruned, ["web:f2"]);
    }

    #[test]
    fn rollback_picks_the_last_good_release_and_reuses_its_stopped_container() {
        let mut observed = after_releases(&["v1", "v2"], "green");
        observed.containers.push(container("v1", "blue", false));
        observed.releases[0].spec = Some(Box::new(ReleaseSpec {
            image_id: "sha256:v1".into(),
            env: vec![],
            cmd: None,
            ports: vec![],
            labels: BTreeMap::new(),
            container_id: Some("id-v1-blue".into()),
        }));
        let plan = plan_rollback(&loaded(""), None, &observed, "deployctl-proxy:test", false)
            .expect("a plan");
        assert_eq!(plan.image_id.as_deref(), Some("sha256:v1"));
        assert_eq!(plan.version, "v1");
        assert_eq!(plan.color, "blue");
        let k = kinds(&plan.steps);
        assert!(
            !k.iter()
                .any(|s| s == "build_image" || s == "remove_container"),
            "{k:?}"
        );
        assert!(plan.steps.iter().any(
            |s| matches!(s, Step::StartRelease { reuse: true, version, .. } if version == "v1")
        ));
        assert!(plan.steps.contains(&Step::StopContainer {
            container: "web.prod-green".into(),
            version: "v2".into()
        }));
    }

    #[test]
    fn rollback_to_a_version_recreates_it_when_its_container_is_gone() {
        let observed = after_releases(&["v1", "v2", "v3"], "blue");
        let plan = plan_rollback(&loaded(""), Some("v1"), &observed, "p", false).expect("a plan");
        assert_eq!(plan.version, "v1");
        assert!(plan.steps.iter().any(
            |s| matches!(s, Step::StartRelease { reuse: false, image, .. } if image == "web:v1")
        ));
    }

    #[test]
    fn rollback_refuses_what_cannot_work() {
        let observed = after_releases(&["v1"], "blue");
        assert!(
            plan_rollback(&loaded(""), None, &observed, "p", false)
                .unwrap_err()
                .contains("no earlier good release")
        );
        assert!(
            plan_rollback(&loaded(""), Some("v1"), &observed, "p", false)
                .unwrap_err()
                .contains("already live")
        );
        assert!(
            plan_rollback(&loaded(""), Some("v7"), &observed, "p", false)
                .unwrap_err()
                .contains("no release v7")
        );
        let mut observed = after_releases(&["v1", "v2"], "green");
        observed.images.remove("v1");
        assert!(
            plan_rollback(&loaded(""), None, &observed, "p", false)
                .unwrap_err()
                .contains("image of v1 is gone")
        );
        // Failed releases are never a rollback target.
        let mut observed = after_releases(&["v1", "v2"], "green");
        observed
            .releases
            .insert(1, release("v1b", Outcome::Failed, "blue"));
        assert_eq!(
            rollback_target(&observed, None).map(|r| r.version.as_str()),
            Ok("v1")
        );
    }

    #[test]
    fn listen_addresses_and_urls() {
        let l =
            loaded("[proxy]\nlisten = \"127.0.0.1:9000\"\n[health]\npath = \"/up\"\nport = 9100\n");
        assert_eq!(public_url(&l.config), "http://127.0.0.1:9000");
        assert_eq!(health_url(&l.config, "c"), "http://c:9100/up");
    }
}
