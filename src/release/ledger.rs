//! The release ledger as a run changes it: interrupted releases marked, a version's outcome set,
//! and old images pruned.

use super::Session;
use super::plan::Observed;
use crate::engine::labels;
use crate::host::{self, now_unix};
use crate::proxy::protocol::Outcome;
use crate::report::{Phase, PhaseName};

/// Releases left in progress by an interrupted run become failed.
/// One killed after its switch serves, though: the ledger says so rather than contradict the
/// proxy (and `rollback` can find it).
pub(crate) async fn mark_interrupted_releases(session: &Session<'_>, observed: &Observed) {
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
pub(crate) async fn mark_version(
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
pub(crate) async fn prune(session: &Session<'_>, images: &[String]) {
    let engine = session.engine;
    let names = &session.names;
    let phase = Phase::start(session.reporter, PhaseName::Prune, images.join(", "));
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
pub(crate) fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}
