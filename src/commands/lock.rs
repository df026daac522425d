//! `deployctl lock acquire|release|status`: the deploy lock by hand.

use serde_json::json;

use crate::cli::{Global, LockCommand};
use crate::engine::Engine;
use crate::error::ExitCode;
use crate::host::{engine_err, ensure_proxy_image};
use crate::lock;
use crate::names::Names;
use crate::output::Output;

pub async fn lock(g: &Global, out: &Output, cmd: LockCommand) -> anyhow::Result<ExitCode> {
    let loaded = super::load(g, out)?;
    let engine = super::connect(&loaded).await?;
    engine.ping().await.map_err(engine_err)?;
    let names = Names::new(&loaded.config.app.name, &loaded.env);
    let stale_after = loaded.config.deploy.lock_stale_after.get();
    match cmd {
        LockCommand::Acquire { reason } => {
            let image = ensure_proxy_image(&engine, &loaded.config).await?;
            lock::acquire(
                &engine,
                &names,
                &image,
                &reason,
                std::time::Duration::ZERO,
                stale_after,
                true,
                &g.config,
            )
            .await?;
            out.result(
                &format!("locked {}: {reason}", names.lock()),
                json!({ "locked": true, "lock": names.lock(), "reason": reason }),
            );
        }
        LockCommand::Release { force } => {
            let removed = lock::release(&engine, &names, force).await?;
            let text = if removed {
                format!("released {}", names.lock())
            } else {
                format!("{} was not held", names.lock())
            };
            out.result(&text, json!({ "released": removed, "lock": names.lock() }));
        }
        LockCommand::Status => {
            let info = lock::status(&engine, &names, stale_after, &g.config).await?;
            let text = match &info {
                Some(i) => i.to_string(),
                None => format!("{} is free", names.lock()),
            };
            out.result(&text, json!({ "held": info.is_some(), "lock": info }));
        }
    }
    Ok(ExitCode::Ok)
}
