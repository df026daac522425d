//! One small file per subcommand: arguments in, one call into the core, result out.

use std::collections::BTreeMap;

use crate::cli::{Cli, Command, Global};
use crate::config::{LoadOptions, Loaded};
use crate::engine::DockerEngine;
use crate::error::{Error, ExitCode, Signal};
use crate::host::engine_err;
use crate::output::Output;

mod completions;
mod config;
mod deploy;
mod init;
mod lock;
mod proxy;
mod remove;
mod status;

pub async fn run(cli: Cli, out: &Output) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Deploy(args) => deploy::deploy(g, out, args).await,
        Command::Rollback(args) => deploy::rollback(g, out, args).await,
        Command::Status => status::status(g, out).await,
        Command::Releases => status::releases(g, out).await,
        Command::Check => config::check(g, out).await,
        Command::Config(args) => config::config(g, out, args),
        Command::Init(args) => init::init(out, args),
        Command::Lock(cmd) => lock::lock(g, out, cmd).await,
        Command::Remove(args) => remove::remove(g, out, args).await,
        Command::Completions(args) => completions::completions(args),
        Command::Man => completions::man(),
        Command::Proxy(cmd) => proxy::proxy(cmd).await,
    }
}

/// Loads the configuration for `--env`, and makes its secrets known to the output.
pub fn load(g: &Global, out: &Output) -> anyhow::Result<Loaded> {
    let root = g.config.parent().map(|p| {
        if p.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            p
        }
    });
    let Some(env) = g.env.clone() else {
        let known = root
            .map(crate::config::list_environments)
            .unwrap_or_default();
        return Err(Error::Usage(format!(
            "no environment given: pass --env NAME (or set DEPLOYCTL_ENV){}",
            if known.is_empty() {
                String::new()
            } else {
                format!("; environments: {}", known.join(", "))
            }
        ))
        .into());
    };
    let process_env: BTreeMap<String, String> = std::env::vars().collect();
    let loaded = crate::config::load(&LoadOptions {
        config_path: g.config.clone(),
        env,
        process_env,
    })?;
    out.secrets_known(&loaded.redactor);
    for w in &loaded.warnings {
        out.warn(w);
    }
    Ok(loaded)
}

pub async fn connect(loaded: &Loaded) -> anyhow::Result<DockerEngine> {
    DockerEngine::connect(loaded.config.docker.host.as_deref())
        .await
        .map_err(engine_err)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() -> Signal {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => Signal::Int,
        _ = term.recv() => Signal::Term,
    }
}
