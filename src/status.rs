//! What is live now, read from the Docker host.

use serde::Serialize;

use crate::config::Loaded;
use crate::engine::Engine;
use crate::health::HealthSpec;
use crate::host::{self, engine_err};
use crate::names::Names;
use crate::proxy::protocol::{Outcome, ReleaseRecord};
use crate::release::plan::public_url;

#[derive(Debug, Clone, Serialize)]
pub struct LiveRelease {
    pub version: String,
    pub color: crate::names::Color,
    pub container: String,
    pub running: bool,
    /// Docker's status word for the container, or `missing`.
    pub state: String,
    pub started_at: Option<String>,
    /// Seconds since the container started, when it runs.
    pub uptime_seconds: Option<u64>,
    /// `passing`, or why the check failed.
    pub health: LiveHealth,
}

/// The live release's health right now; shown (and serialized) as `passing` or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveHealth {
    Passing,
    /// The check failed, with its last error.
    Failing(String),
    NotRunning,
    /// The check could not be run.
    Unknown(String),
}

impl std::fmt::Display for LiveHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LiveHealth::Passing => f.write_str("passing"),
            LiveHealth::Failing(why) => f.write_str(why),
            LiveHealth::NotRunning => f.write_str("not running"),
            LiveHealth::Unknown(why) => write!(f, "unknown ({why})"),
        }
    }
}

impl Serialize for LiveHealth {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PreviousRelease {
    pub version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub app: String,
    pub env: String,
    pub url: String,
    pub proxy: Option<ProxyInfo>,
    pub live: Option<LiveRelease>,
    /// The newest good release before the live one: where `rollback` would go.
    pub previous: Option<PreviousRelease>,
    /// Everything is serving as it should.
    pub healthy: bool,
    /// Problems found, each with what to do.
    pub problems: Vec<String>,
    /// A fleet (`docker.hosts`): one row per host, in the configured order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostStatus>,
    /// A fleet whose hosts serve different releases.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub drift: bool,
}

/// One host of a fleet in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct HostStatus {
    pub host: String,
    pub url: String,
    pub live: Option<HostLive>,
    pub healthy: bool,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostLive {
    pub version: String,
    pub color: crate::names::Color,
    pub container: String,
    pub health: LiveHealth,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProxyInfo {
    pub container: String,
    pub running: bool,
}

/// The status of every host of a fleet: a row per host, the top-level `live` only when all
/// hosts agree, drift (hosts on different releases) as a problem.
pub async fn fleet_status(
    loaded: &Loaded,
    hosts: &[(String, &dyn Engine)],
) -> anyhow::Result<StatusReport> {
    let all = futures_util::future::join_all(
        hosts
            .iter()
            .map(|(address, engine)| status_at(loaded, *engine, Some(address))),
    )
    .await;
    let mut rows = Vec::new();
    let mut reports = Vec::new();
    for ((address, _), r) in hosts.iter().zip(all) {
        let r = r.map_err(|e| e.context(format!("on {address}")))?;
        rows.push(HostStatus {
            host: address.clone(),
            url: r.url.clone(),
            live: r.live.as_ref().map(|l| HostLive {
                version: l.version.clone(),
                color: l.color,
                container: l.container.clone(),
                health: l.health.clone(),
            }),
            healthy: r.healthy,
            problems: r.problems.clone(),
        });
        reports.push(r);
    }
    let mut first = reports.swap_remove(0);
    let versions: std::collections::BTreeSet<Option<&str>> = rows
        .iter()
        .map(|h| h.live.as_ref().map(|l| l.version.as_str()))
        .collect();
    let drift = versions.len() > 1;
    let mut problems: Vec<String> = rows
        .iter()
        .flat_map(|h| h.problems.iter().map(move |p| format!("{}: {p}", h.host)))
        .collect();
    if drift {
        let on: Vec<String> = rows
            .iter()
            .map(|h| {
                let v = h.live.as_ref().map_or("nothing", |l| l.version.as_str());
                format!("{} on {v}", h.host)
            })
            .collect();
        problems.push(format!(
            "the hosts serve different releases ({}): `deployctl deploy` brings every host to one release",
            on.join(", ")
        ));
        first.live = None;
    }
    first.healthy = problems.is_empty();
    first.problems = problems;
    first.drift = drift;
    first.hosts = rows;
    Ok(first)
}

pub async fn status(loaded: &Loaded, engine: &dyn Engine) -> anyhow::Result<StatusReport> {
    status_at(loaded, engine, None).await
}

/// The status of one host; `address` names it in a fleet (its URL is derived from it).
async fn status_at(
    loaded: &Loaded,
    engine: &dyn Engine,
    address: Option<&str>,
) -> anyhow::Result<StatusReport> {
    let names = Names::new(&loaded.config.app.name, &loaded.env);
    engine.ping().await.map_err(engine_err)?;
    let observed = host::observe(engine, &names).await?;
    let mut problems = Vec::new();
    let proxy = observed.proxy.as_ref().map(|p| ProxyInfo {
        container: p.container.clone(),
        running: p.running,
    });
    match &proxy {
        None => problems.push(
            "nothing is deployed in this environment yet: run `deployctl deploy`".to_string(),
        ),
        Some(p) if !p.running => problems.push(format!(
            "the proxy {} is not running: `docker start {}`",
            p.container, p.container
        )),
        _ => {}
    }
    let mut live = None;
    if let Some(target) = &observed.live {
        let info = engine
            .inspect_container(&target.container)
            .await
            .map_err(engine_err)?;
        let (running, state, started_at) = match &info {
            Some(i) => (
                i.state.running,
                i.state.status.clone(),
                i.state.started_at.clone(),
            ),
            None => (false, "missing".to_string(), None),
        };
        let health = if running {
            probe_now(
                engine,
                &names,
                &host::health_spec(&loaded.config, &target.container),
            )
            .await
        } else {
            LiveHealth::NotRunning
        };
        if !running {
            problems.push(format!(
                "the live container {} is {state}: `deployctl rollback` switches to the last good release, or `docker start {}`",
                target.container, target.container
            ));
        } else if health != LiveHealth::Passing {
            problems.push(format!(
                "the live release {} fails its health check: {health}",
                target.version
            ));
        }
        let uptime_seconds = started_at
            .as_deref()
            .filter(|_| running)
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_secs());
        live = Some(LiveRelease {
            uptime_seconds,
            version: target.version.clone(),
            color: target.color,
            container: target.container.clone(),
            running,
            state,
            started_at,
            health,
        });
    } else if proxy.as_ref().is_some_and(|p| p.running) {
        problems.push(
            "the proxy routes to no release: run `deployctl deploy` or `deployctl rollback`"
                .to_string(),
        );
    }
    let previous = observed
        .last_good(observed.live.as_ref().map(|t| t.version.as_str()))
        .map(|r| PreviousRelease {
            version: r.version.clone(),
        });
    Ok(StatusReport {
        app: names.app.clone(),
        env: names.env.clone(),
        url: match address {
            Some(a) => crate::public_url::derive(
                &loaded.config.proxy.listen,
                Some(a),
                loaded.config.proxy.public_url.as_deref(),
            ),
            None => public_url(&loaded.config),
        },
        proxy,
        live,
        previous,
        healthy: problems.is_empty(),
        problems,
        hosts: Vec::new(),
        drift: false,
    })
}

/// One health check of the live release right now.
async fn probe_now(engine: &dyn Engine, names: &Names, spec: &HealthSpec) -> LiveHealth {
    let mut once = spec.clone();
    once.healthy_threshold = 1;
    once.deadline_ms = once.timeout_ms + 100;
    let last = std::sync::Mutex::new(None);
    let outcome = host::proxy_health(engine, names, &once, None, &|p| {
        if let Ok(mut l) = last.lock() {
            *l = Some(p.clone());
        }
    })
    .await;
    match outcome {
        Ok(crate::health::HealthOutcome::Healthy { .. }) => LiveHealth::Passing,
        Ok(_) => LiveHealth::Failing(
            last.lock()
                .ok()
                .and_then(|l| l.as_ref().and_then(|p| p.error.clone()))
                .unwrap_or_else(|| "failing".into()),
        ),
        Err(e) => LiveHealth::Unknown(format!("{e:#}")),
    }
}

pub async fn releases(loaded: &Loaded, engine: &dyn Engine) -> anyhow::Result<Vec<ReleaseRecord>> {
    let names = Names::new(&loaded.config.app.name, &loaded.env);
    engine.ping().await.map_err(engine_err)?;
    match host::owned_container(engine, &names, &names.proxy()).await? {
        Some(p) if p.state.running => host::proxy_releases(engine, &names).await,
        Some(_) => anyhow::bail!(
            "the proxy {} is not running, so its ledger cannot be read: `docker start {}`",
            names.proxy(),
            names.proxy()
        ),
        None => Ok(vec![]),
    }
}

pub fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::InProgress => "in progress",
        Outcome::Live => "live",
        Outcome::Good => "good",
        Outcome::Failed => "failed",
        Outcome::RolledBack => "rolled back",
    }
}
