use std::io::{BufRead, IsTerminal, Write};

use serde_json::json;

use crate::cli::{Global, RemoveArgs};
use crate::engine::Engine;
use crate::error::{Error, ExitCode};
use crate::host::engine_err;
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
    let removed = crate::remove::remove_environment(&engine, &names).await?;
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
