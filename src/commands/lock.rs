//! `deployctl lock acquire|release|status`: the deploy lock by hand (on a fleet, every host's:
//! acquired in the configured order, all or nothing).

use serde_json::json;

use crate::cli::{Global, LockCommand};
use crate::engine::Engine;
use crate::error::ExitCode;
use crate::host::engine_err;
use crate::lock;
use crate::names::Names;
use crate::output::Output;

pub async fn lock(g: &Global, out: &Output, cmd: LockCommand) -> anyhow::Result<ExitCode> {
    let loaded = super::load(g, out)?;
    let hosts = super::connect_all(&loaded).await?;
    for h in &hosts {
        h.engine.ping().await.map_err(engine_err)?;
    }
    let fleet = hosts.len() > 1;
    let on = |address: &str| {
        if fleet {
            format!(" on {address}")
        } else {
            String::new()
        }
    };
    let names = Names::new(&loaded.config.app.name, &loaded.env);
    let stale_after = loaded.config.deploy.lock_stale_after.get();
    match cmd {
        LockCommand::Acquire { reason } => {
            super::lock_every_host(&hosts, &loaded, &reason, true).await?;
            let where_ = if fleet {
                format!(" on {} hosts", hosts.len())
            } else {
                String::new()
            };
            out.result(
                &format!("locked {}{where_}: {reason}", names.lock()),
                json!({ "locked": true, "lock": names.lock(), "reason": reason }),
            );
        }
        LockCommand::Release { force } => {
            let mut lines = Vec::new();
            let mut released = Vec::new();
            for h in &hosts {
                let removed = lock::release(&h.engine, &names, force).await?;
                lines.push(if removed {
                    format!("released {}{}", names.lock(), on(&h.address))
                } else {
                    format!("{} was not held{}", names.lock(), on(&h.address))
                });
                released.push(removed);
            }
            let any = released.iter().any(|r| *r);
            out.result(
                &lines.join("\n"),
                json!({ "released": any, "lock": names.lock() }),
            );
        }
        LockCommand::Status => {
            let mut lines = Vec::new();
            let mut infos = Vec::new();
            for h in &hosts {
                let info = lock::status(&h.engine, &names, stale_after, &g.config).await?;
                lines.push(match &info {
                    Some(i) => format!("{i}{}", on(&h.address)),
                    None => format!("{} is free{}", names.lock(), on(&h.address)),
                });
                infos.push(info);
            }
            let held = infos.iter().any(Option::is_some);
            let doc = if fleet {
                let rows: Vec<_> = hosts
                    .iter()
                    .zip(&infos)
                    .map(|(h, i)| json!({ "host": h.address, "held": i.is_some(), "lock": i }))
                    .collect();
                json!({ "held": held, "hosts": rows })
            } else {
                json!({ "held": held, "lock": infos.first().cloned().flatten() })
            };
            out.result(&lines.join("\n"), doc);
        }
    }
    Ok(ExitCode::Ok)
}
