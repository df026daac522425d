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

/// The first engine of the environment (`docker.host`, or the first of `docker.hosts`).
pub async fn connect(loaded: &Loaded) -> anyhow::Result<DockerEngine> {
    let first = loaded.config.docker.engines().swap_remove(0);
    DockerEngine::connect(first.as_deref())
        .await
        .map_err(engine_err)
}

/// One connected engine of the environment, with its address as configured.
pub struct HostEngine {
    pub address: String,
    pub engine: DockerEngine,
}

/// Every engine of the environment, connected at once, in the configured order. One that cannot
/// be reached fails the command before anything changes anywhere (exit 4, naming it).
pub async fn connect_all(loaded: &Loaded) -> anyhow::Result<Vec<HostEngine>> {
    let engines = loaded.config.docker.engines();
    let results = futures_util::future::join_all(
        engines
            .iter()
            .map(|h| async move { DockerEngine::connect(h.as_deref()).await }),
    )
    .await;
    let mut out = Vec::with_capacity(results.len());
    for (address, r) in engines.into_iter().zip(results) {
        let engine = r.map_err(engine_err)?;
        out.push(HostEngine {
            address: address.unwrap_or_else(|| engine.host().to_string()),
            engine,
        });
    }
    Ok(out)
}

/// `build.local`: this machine's engine (`DOCKER_HOST`, else the local socket), which builds.
pub async fn connect_builder(loaded: &Loaded) -> anyhow::Result<Option<DockerEngine>> {
    if !loaded.config.build.local {
        return Ok(None);
    }
    DockerEngine::connect(None)
        .await
        .map(Some)
        .map_err(engine_err)
}

/// Takes the deploy lock of every host, in the configured order, all or nothing: when one
/// cannot be taken, the ones taken are released and the error names that host (on a fleet).
/// `manual`: a lock of `lock acquire`, which outlives the command.
pub async fn lock_every_host(
    hosts: &[HostEngine],
    loaded: &Loaded,
    reason: &str,
    manual: bool,
) -> anyhow::Result<()> {
    let names = crate::names::Names::new(&loaded.config.app.name, &loaded.env);
    for (i, h) in hosts.iter().enumerate() {
        let taken = async {
            let image = crate::host::ensure_proxy_image(&h.engine, &loaded.config).await?;
            crate::lock::acquire(
                &h.engine,
                &names,
                &image,
                reason,
                std::time::Duration::ZERO,
                loaded.config.deploy.lock_stale_after.get(),
                manual,
                &loaded.files[0],
            )
            .await
        }
        .await;
        if let Err(e) = taken {
            for earlier in &hosts[..i] {
                let _ = crate::lock::release(&earlier.engine, &names, manual).await;
            }
            return Err(if hosts.len() > 1 {
                e.context(format!("on {}", h.address))
            } else {
                e
            });
        }
    }
    Ok(())
}

/// The session of a run over `engines`: the first host leads, the others form its fleet;
/// `builder` builds the image when `build.local` is set.
pub fn session<'a>(
    loaded: &'a Loaded,
    engines: &'a [HostEngine],
    builder: Option<&'a DockerEngine>,
    out: &'a Output,
) -> crate::release::Session<'a> {
    use crate::release::Session;
    let one = |h: &'a HostEngine| Session::new(loaded, &h.engine, out).on_host(h.address.clone());
    let others: Vec<Session<'a>> = if engines.len() > 1 {
        engines[1..].iter().map(one).collect()
    } else {
        Vec::new()
    };
    one(&engines[0])
        .with_fleet(others)
        .with_builder(builder.map(|b| b as &dyn crate::engine::Engine))
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
