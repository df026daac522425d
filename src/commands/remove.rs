//! `deployctl remove`: confirmation, the deploy lock, then everything of one environment.

use std::io::{BufRead, IsTerminal, Write};

use serde_json::json;

use crate::cli::{Global, RemoveArgs};
use crate::engine::Engine;
use crate::error::{Error, ExitCode};
use crate::host::engine_err;
use crate::lock;
use crate::names::Names;
use crate::output::Output;

pub async fn remove(g: &Global, out: &Output, args: RemoveArgs) -> anyhow::Result<ExitCode> {
    let loaded = super::load(g, out)?;
    let hosts = super::connect_all(&loaded).await?;
    for h in &hosts {
        h.engine.ping().await.map_err(engine_err)?;
    }
    let fleet = hosts.len() > 1;
    let names = Names::new(&loaded.config.app.name, &loaded.env);
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            return Err(Error::Usage("`remove` needs confirmation: pass --yes".into()).into());
        }
        eprint!(
            "Remove {} / {}: its containers, proxy (the public port stops answering), network, lock, ledger and images? [y/N] ",
            names.app, names.env
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            out.result("nothing removed", json!({ "removed": [] }));
            return Ok(ExitCode::Ok);
        }
    }
    // A deploy holding the lock would die half-way: take the lock first (or refuse, naming the
    // holder), unless --force; on a fleet every host's, in order, before anything is removed.
    // The lock goes with everything else.
    if !args.force
        && let Err(e) = super::lock_every_host(&hosts, &loaded, "remove", false).await
    {
        if matches!(Error::find(&e), Some(Error::Locked { .. })) {
            return Err(Error::Locked {
                message: format!(
                    "{e:#}\n  nothing was removed; `deployctl remove --yes --force` removes it anyway (a deploy in progress then fails)"
                ),
            }
            .into());
        }
        return Err(e);
    }
    let mut removed = Vec::new();
    for h in &hosts {
        match crate::remove::remove_environment(&h.engine, &names).await {
            Ok(r) if fleet => removed.extend(r.into_iter().map(|x| format!("{}: {x}", h.address))),
            Ok(r) => removed.extend(r),
            Err(e) => {
                if !args.force {
                    for h in &hosts {
                        let _ = lock::release(&h.engine, &names, false).await;
                    }
                }
                return Err(if fleet {
                    e.context(format!("on {}", h.address))
                } else {
                    e
                });
            }
        }
    }
    out.result(
        &format!(
            "removed {} / {}:\n  {}",
            names.app,
            names.env,
            removed.join("\n  ")
        ),
        json!({ "removed": removed }),
    );
    Ok(ExitCode::Ok)
}
