//! Removes one environment of one app: exactly the objects labelled with it, nothing else.

use crate::engine::{Engine, EngineError, labels};
use crate::host::engine_err;
use crate::names::Names;

/// Returns what was removed.
pub async fn remove_environment(engine: &dyn Engine, names: &Names) -> anyhow::Result<Vec<String>> {
    let scope = [
        (labels::APP, names.app.as_str()),
        (labels::ENV, names.env.as_str()),
    ];
    // Checked before anything goes: a network or volume of our name but another owner stays.
    if let Some(l) = engine
        .network_labels(&names.network())
        .await
        .map_err(engine_err)?
    {
        crate::names::check_owner(names, "network", &names.network(), &l)?;
    }
    if let Some(l) = engine
        .volume_labels(&names.state_volume())
        .await
        .map_err(engine_err)?
    {
        crate::names::check_owner(names, "volume", &names.state_volume(), &l)?;
    }
    let mut removed = Vec::new();
    let mut lock = None;
    for c in engine.list_containers(&scope).await.map_err(engine_err)? {
        // The lock goes last: until everything else is gone, no deploy may start.
        if c.name == names.lock() {
            lock = Some(c.name);
            continue;
        }
        match engine.remove_container(&c.name, true).await {
            Ok(()) | Err(EngineError::NotFound(_)) => removed.push(format!("container {}", c.name)),
            Err(e) => return Err(engine_err(e)),
        }
    }
    for (kind, result) in [
        ("network", engine.remove_network(&names.network()).await),
        ("volume", engine.remove_volume(&names.state_volume()).await),
    ] {
        match result {
            Ok(()) => removed.push(format!(
                "{kind} {}",
                if kind == "network" {
                    names.network()
                } else {
                    names.state_volume()
                }
            )),
            Err(EngineError::NotFound(_)) => {}
            Err(e) => return Err(engine_err(e)),
        }
    }
    for image in engine.list_images(&scope).await.map_err(engine_err)? {
        match engine.remove_image(&image.id).await {
            Ok(()) | Err(EngineError::NotFound(_)) => removed.push(format!(
                "image {}",
                image.tags.first().cloned().unwrap_or(image.id)
            )),
            Err(e) => return Err(engine_err(e)),
        }
    }
    if let Some(lock) = lock {
        match engine.remove_container(&lock, true).await {
            Ok(()) | Err(EngineError::NotFound(_)) => removed.push(format!("container {lock}")),
            Err(e) => return Err(engine_err(e)),
        }
    }
    Ok(removed)
}
