//! Reads the state of the Docker host that a plan starts from: the proxy, the live target and the
//! release ledger, the app containers and the images of this app and environment; and the types
//! that hold it (`Observed`), which the planner reads.

use super::proxy::{proxy_releases, proxy_status};
use super::{engine_err, owned_container};
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::engine::{Engine, labels};
use crate::names::{Color, Names};
use crate::proxy::protocol::{Outcome, ReleaseRecord, Target};

/// Reads everything a plan needs. Errors only when the engine cannot be reached at all.
pub async fn observe(engine: &dyn Engine, names: &Names) -> anyhow::Result<Observed> {
    let mut observed = Observed::default();
    let scope = [
        (labels::APP, names.app.as_str()),
        (labels::ENV, names.env.as_str()),
    ];
    if let Some(proxy) = owned_container(engine, names, &names.proxy()).await? {
        observed.proxy = Some(ProxyObserved {
            container: proxy.name.clone(),
            image: proxy.image.clone(),
            running: proxy.state.running,
        });
        if proxy.state.running {
            let status = proxy_status(engine, names).await?;
            observed.live = status.live;
            observed.releases = proxy_releases(engine, names).await?;
        }
    }
    let app_scope = [scope[0], scope[1], (labels::ROLE, "app")];
    for c in engine
        .list_containers(&app_scope)
        .await
        .map_err(engine_err)?
    {
        observed.containers.push(AppContainer {
            id: c.id.clone(),
            color: c.labels.get(labels::COLOR).and_then(|c| c.parse().ok()),
            version: c.labels.get(labels::VERSION).cloned().unwrap_or_default(),
            running: c.state.running,
            name: c.name,
        });
    }
    let image_scope = [
        (labels::APP, names.app.as_str()),
        (labels::ENV, names.env.as_str()),
    ];
    // By labels, not by tag: `<app>:<version>` is shared by environments and moves with each
    // build of that version, while this environment's image keeps its labels and id.
    let mut images = engine.list_images(&image_scope).await.map_err(engine_err)?;
    images.sort_by_key(|i| i.created);
    for image in images {
        if let Some(v) = image.labels.get(labels::VERSION) {
            observed.images.insert(v.clone());
            observed.image_ids.insert(v.clone(), image.id.clone());
        }
    }
    tracing::debug!(
        proxy = ?observed.proxy.as_ref().map(|p| p.running),
        live = ?observed.live.as_ref().map(|t| &t.version),
        containers = observed.containers.len(),
        releases = observed.releases.len(),
        images = observed.images.len(),
        "observed the Docker host"
    );
    Ok(observed)
}

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
    /// None when its colour label is missing or not a colour.
    pub color: Option<Color>,
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
    pub fn container(&self, name: &str) -> Option<&AppContainer> {
        self.containers.iter().find(|c| c.name == name)
    }
    /// The newest release recorded as good (or live) other than `except`.
    pub fn last_good(&self, except: Option<&str>) -> Option<&ReleaseRecord> {
        self.releases.iter().rev().find(|r| {
            matches!(r.outcome, Outcome::Good | Outcome::Live) && Some(r.version.as_str()) != except
        })
    }
}
