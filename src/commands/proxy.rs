//! `deployctl proxy ...`: what runs inside the proxy container. Prints JSON for the CLI on the other
//! side of `docker exec`.

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
            })
            .await?;
        }
        ProxyCommand::Switch { request, state_dir } => {
            let req = serde_json::from_str(&request)
                .map_err(|e| Error::Usage(format!("bad switch request: {e}")))?;
            print_json(&proxy::client_switch(&state_dir, req).await?)?;
        }
        ProxyCommand::Status { state_dir } => print_json(&proxy::client_status(&state_dir).await?)?,
        ProxyCommand::Record { record, state_dir } => {
            let record = serde_json::from_str(&record)
                .map_err(|e| Error::Usage(format!("bad release record: {e}")))?;
            proxy::client_record(&state_dir, record).await?;
        }
        ProxyCommand::Releases { state_dir } => {
            print_json(&proxy::client_releases(&state_dir).await?)?
        }
        ProxyCommand::Health { spec, watch_ms } => {
            let spec: HealthSpec = serde_json::from_str(&spec)
                .map_err(|e| Error::Usage(format!("bad health spec: {e}")))?;
            // Each probe is a line the CLI reads as it arrives.
            let mut on_probe = |p: &health::ProbeResult| {
                if let Ok(line) = serde_json::to_string(p) {
                    let mut stdout = std::io::stdout().lock();
                    let _ = writeln!(stdout, "{line}");
                    let _ = stdout.flush();
                }
            };
            let outcome = match watch_ms {
                Some(ms) => {
                    health::watch(&spec, std::time::Duration::from_millis(ms), &mut on_probe).await
                }
                None => health::wait_healthy(&spec, &mut on_probe).await,
            };
            print_json(&outcome)?;
        }
    }
    Ok(ExitCode::Ok)
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let line = serde_json::to_string(value).context("cannot encode the answer")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()?;
    Ok(())
}
