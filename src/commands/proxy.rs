//! `deployctl proxy ...`: what runs inside the proxy container. Prints JSON for the CLI on the other
//! side of `docker exec`, which sends requests on stdin.

use std::io::Write;

use anyhow::Context;

use crate::cli::ProxyCommand;
use crate::error::{Error, ExitCode};
use crate::health::{self, HealthSpec};
use crate::proxy;

pub async fn proxy(cmd: ProxyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ProxyCommand::Run {
            listen,
            state_dir,
            idle_timeout,
            header_read_timeout,
            max_connections,
            metrics,
            metrics_app,
            metrics_env,
        } => {
            let limits = proxy::Limits {
                idle_timeout: idle_timeout.into(),
                header_read_timeout: header_read_timeout.into(),
                max_connections: max_connections.max(1),
            };
            proxy::run(proxy::RunOptions {
                listen,
                state_dir,
                limits,
                metrics: metrics.map(|listen| proxy::MetricsOptions {
                    listen,
                    app: metrics_app,
                    env: metrics_env,
                }),
            })
            .await?;
        }
        ProxyCommand::Switch { request, state_dir } => {
            let req = serde_json::from_str(&payload(request)?)
                .map_err(|e| Error::Usage(format!("bad switch request: {e}")))?;
            print_json(&proxy::client_switch(&state_dir, req).await?)?;
        }
        ProxyCommand::Status { state_dir } => print_json(&proxy::client_status(&state_dir).await?)?,
        ProxyCommand::Record { record, state_dir } => {
            let record = serde_json::from_str(&payload(record)?)
                .map_err(|e| Error::Usage(format!("bad release record: {e}")))?;
            proxy::client_record(&state_dir, record).await?;
        }
        ProxyCommand::Releases { state_dir } => {
            print_json(&proxy::client_releases(&state_dir).await?)?
        }
        ProxyCommand::Health {
            spec,
            watch_ms,
            state_dir,
        } => {
            let spec: HealthSpec = serde_json::from_str(&payload(spec)?)
                .map_err(|e| Error::Usage(format!("bad health spec: {e}")))?;
            // Each result also goes to the running proxy, for its metrics, off the probe loop.
            let (results, mut counted) = tokio::sync::mpsc::unbounded_channel::<bool>();
            let counter = tokio::spawn(async move {
                while let Some(passed) = counted.recv().await {
                    if let Err(e) = proxy::client_health_check(&state_dir, passed).await {
                        tracing::debug!(error = %format!("{e:#}"), "health check not counted");
                    }
                }
            });
            // Each probe is a line the CLI reads as it arrives.
            let mut on_probe = |p: &health::ProbeResult| {
                let _ = results.send(p.ok);
                if let Ok(line) = serde_json::to_string(p) {
                    let mut stdout = std::io::stdout().lock();
                    let _ = writeln!(stdout, "{line}");
                    let _ = stdout.flush();
                }
            };
            let ending = match watch_ms {
                Some(ms) => health::Ending::watch(&spec, std::time::Duration::from_millis(ms)),
                None => health::Ending::until(&spec),
            };
            let outcome = health::run(&spec, &ending, &mut on_probe).await;
            print_json(&outcome)?;
            drop(results);
            // The last results are counted before exiting; a proxy that does not answer only
            // loses them.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), counter).await;
        }
    }
    Ok(ExitCode::Ok)
}

/// Largest payload read from stdin (a ledger record or a spec is far smaller).
const MAX_PAYLOAD: u64 = 1024 * 1024;

/// The JSON payload: the argument when given, else one line of stdin. The CLI always sends it on
/// stdin, so that secrets (health headers) never show in argv (`ps`, `docker events`) and a large
/// record does not hit the argv size limit.
fn payload(arg: Option<String>) -> anyhow::Result<String> {
    if let Some(arg) = arg {
        return Ok(arg);
    }
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(std::io::Read::take(std::io::stdin(), MAX_PAYLOAD)),
        &mut line,
    )
    .context("cannot read the request from stdin")?;
    if line.trim().is_empty() {
        return Err(Error::Usage("no request: pass it as an argument or on stdin".into()).into());
    }
    Ok(line)
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let line = serde_json::to_string(value).context("cannot encode the answer")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}
