//! `deployctl remove`: confirmation, the deploy lock, then everything of one environment.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use serde_json::json;

use crate::cli::{Global, RemoveArgs};
use crate::engine::Engine;
use crate::error::{Error, ExitCode};
use crate::host::{engine_err, ensure_proxy_image};
use crate::lock;
use crate::names::Names;
use crate::output::Output;

pub async fn remove(g: &Global, out: &Output, args: RemoveArgs) -> anyhow::Result<ExitCode> {
    let loaded = super::load(g, out)?;
    let engine = super::connect(&loaded).await?;
    engine.ping().await.map_err(engine_err)?;
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
    // holder), unless --force. The lock goes with everything else.
    if !args.force {
        let image = ensure_proxy_image(&engine, &loaded.config).await?;
        let acquired = lock::acquire(
            &engine,
            &names,
            &image,
            "remove",
            Duration::ZERO,
            loaded.config.deploy.lock_stale_after.get(),
            false,
            &g.config,
        )
        .await;
        if let Err(e) = acquired {
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
    }
    let removed = match crate::remove::remove_environment(&engine, &names).await {
        Ok(removed) => removed,
        Err(e) => {
            if !args.force {
                let _ = lock::release(&engine, &names, false).await;
            }
            return Err(e);
        }
    };
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
