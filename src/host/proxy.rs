//! The proxy on the host: its container (created or started, then awaited on its control socket)
//! and its client, `deployctl proxy <command>` run with `docker exec` and a JSON request on stdin:
//! status, releases, record (ledger-safe), switch, and health probes from inside the private
//! network, with the health spec built from the config.

use super::{PROXY_BIN, engine_err, owned_container};
use crate::config::{Config, Loaded};
use crate::engine::{ContainerSpec, Engine, PortPublish, RestartPolicy, VolumeMount, labels};
use crate::health::{HealthOutcome, HealthSpec, ProbeResult};
use crate::names::Names;
use crate::proxy::protocol::{ProxyStatus, ReleaseRecord, SwitchRequest, SwitchResult};
use crate::proxy::{CONTAINER_METRICS_PORT, CONTAINER_PORT, DEFAULT_STATE_DIR};
use crate::util::now_unix;

/// Runs `deployctl proxy <args>` inside the proxy container and returns its stdout. A JSON
/// payload goes on stdin as one line, never in argv (visible in `ps` and `docker events`, and
/// limited in size). Proxies of earlier deployctl versions, which read requests only from argv,
/// carry the earlier object names and are never reached by this version.
async fn proxy_exec(
    engine: &dyn Engine,
    names: &Names,
    args: &[&str],
    payload: Option<String>,
    on_line: crate::engine::LineSink<'_>,
) -> anyhow::Result<String> {
    let mut cmd = vec![PROXY_BIN.to_string(), "proxy".to_string()];
    cmd.extend(args.iter().map(|a| a.to_string()));
    tracing::debug!(proxy = %names.proxy(), command = args.first().copied().unwrap_or(""), "docker exec");
    owned_container(engine, names, &names.proxy()).await?;
    let stdin = payload
        .as_ref()
        .map(|p| format!("{}\n", p.trim_end()).into_bytes());
    let out = engine
        .exec_with_stdin(&names.proxy(), &cmd, stdin, on_line)
        .await
        .map_err(engine_err)?;
    tracing::trace!(exit_code = out.exit_code, stdout = %out.stdout, stderr = %out.stderr, "docker exec finished");
    if out.exit_code != 0 {
        let msg = if out.stderr.trim().is_empty() {
            out.stdout.trim()
        } else {
            out.stderr.trim()
        };
        anyhow::bail!(
            "proxy {} failed (exit {}): {msg}",
            args.first().unwrap_or(&""),
            out.exit_code
        );
    }
    Ok(out.stdout)
}

fn no_lines(_: &str) {}

pub async fn proxy_status(engine: &dyn Engine, names: &Names) -> anyhow::Result<ProxyStatus> {
    let out = proxy_exec(engine, names, &["status"], None, &no_lines).await?;
    serde_json::from_str(out.trim()).map_err(|e| anyhow::anyhow!("unreadable proxy status: {e}"))
}

pub async fn proxy_releases(
    engine: &dyn Engine,
    names: &Names,
) -> anyhow::Result<Vec<ReleaseRecord>> {
    let out = proxy_exec(engine, names, &["releases"], None, &no_lines).await?;
    serde_json::from_str(out.trim()).map_err(|e| anyhow::anyhow!("unreadable release ledger: {e}"))
}

pub async fn proxy_record(
    engine: &dyn Engine,
    names: &Names,
    record: &ReleaseRecord,
) -> anyhow::Result<()> {
    let json = serde_json::to_string(&ledger_safe(record))?;
    proxy_exec(engine, names, &["record"], Some(json), &no_lines)
        .await
        .map(|_| ())
}

/// Longest failure reason kept in the ledger; a longer one keeps its end, where the error is.
pub const MAX_REASON_BYTES: usize = 8 * 1024;

/// A record fit for the ledger: its reason, the one field of free text (it quotes hook and test
/// output, health bodies, logs, which can echo a secret), redacted and cut to its last
/// [`MAX_REASON_BYTES`]. The ledger is readable by anyone with `docker exec`. Names, versions and
/// image references are left as they are: rollback looks them up.
fn ledger_safe(record: &ReleaseRecord) -> ReleaseRecord {
    let mut safe = record.clone();
    if let Some(reason) = &mut safe.reason {
        *reason = keep_tail(&crate::output::redact(reason), MAX_REASON_BYTES);
    }
    safe
}

/// `text` if it fits in `max` bytes, else `[… N bytes cut …]` and its last bytes (on a char boundary).
fn keep_tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let marker_room = 40;
    let mut start = text.len() - max.saturating_sub(marker_room);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[… {start} bytes cut …]\n{}", &text[start..])
}

pub async fn proxy_switch(
    engine: &dyn Engine,
    names: &Names,
    req: &SwitchRequest,
) -> anyhow::Result<SwitchResult> {
    let json = serde_json::to_string(req)?;
    let out = proxy_exec(engine, names, &["switch"], Some(json), &no_lines).await?;
    serde_json::from_str(out.trim()).map_err(|e| anyhow::anyhow!("unreadable switch result: {e}"))
}

/// Runs health probes from inside the proxy container (so they use the private network), passing
/// each probe to `on_probe`. `watch` probes for that long instead of waiting for healthy.
pub async fn proxy_health(
    engine: &dyn Engine,
    names: &Names,
    spec: &HealthSpec,
    watch: Option<std::time::Duration>,
    on_probe: &(dyn Fn(&ProbeResult) + Send + Sync),
) -> anyhow::Result<HealthOutcome> {
    let json = serde_json::to_string(spec)?;
    let watch_ms = watch.map(|w| w.as_millis().to_string());
    let mut args = vec!["health"];
    if let Some(ms) = &watch_ms {
        args.extend(["--watch-ms", ms.as_str()]);
    }
    let on_line = |line: &str| {
        if let Ok(probe) = serde_json::from_str::<ProbeResult>(line) {
            on_probe(&probe);
        }
    };
    let out = proxy_exec(engine, names, &args, Some(json), &on_line).await?;
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last)
        .map_err(|e| anyhow::anyhow!("unreadable health result `{last}`: {e}"))
}

/// The health spec for a target address `host:port`, from the config.
pub fn health_spec(config: &Config, host: &str) -> HealthSpec {
    let h = &config.health;
    HealthSpec {
        url: format!("http://{host}:{}{}", config.health_port(), h.path),
        host_header: h.host.clone(),
        headers: h.headers.clone(),
        interval_ms: h.interval.get().as_millis() as u64,
        timeout_ms: h.timeout.get().as_millis() as u64,
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
        start_period_ms: h.start_period.get().as_millis() as u64,
        deadline_ms: h.deadline.get().as_millis() as u64,
        expect_status: h.expect_status.clone(),
        expect_body: h.expect_body.clone(),
        expect_json: h
            .expect_json
            .as_ref()
            .map(|j| (j.pointer.clone(), j.equals.clone())),
    }
}

/// Label of the proxy container: the `proxy.metrics` address it was created with ("" for off).
const METRICS_LABEL: &str = "deployctl.proxy-metrics";

/// Creates or starts the proxy as needed and waits until it answers on its control socket.
/// An existing proxy made with another `proxy.metrics` is kept, with a warning: recreating it
/// pauses traffic, so that is left to the user.
pub async fn ensure_proxy(
    engine: &dyn Engine,
    loaded: &Loaded,
    names: &Names,
    image: &str,
) -> anyhow::Result<()> {
    let config = &loaded.config;
    let metrics_wanted = config
        .proxy
        .metrics
        .map(|m| m.to_string())
        .unwrap_or_default();
    let mut labels = names.labels("proxy");
    labels.insert(labels::CREATED.into(), now_unix().to_string());
    labels.insert(METRICS_LABEL.into(), metrics_wanted.clone());
    if let Some(l) = engine
        .volume_labels(&names.state_volume())
        .await
        .map_err(engine_err)?
    {
        crate::names::check_owner(names, "volume", &names.state_volume(), &l)?;
    }
    engine
        .ensure_volume(&names.state_volume(), &names.labels("state"))
        .await
        .map_err(engine_err)?;
    let existing = owned_container(engine, names, &names.proxy()).await?;
    if let Some(info) = &existing {
        let made_with = info.labels.get(METRICS_LABEL).map_or("", String::as_str);
        if made_with != metrics_wanted {
            let show = |m: &str| {
                if m.is_empty() {
                    "off".to_owned()
                } else {
                    format!("\"{m}\"")
                }
            };
            tracing::warn!(
                "proxy.metrics is {} but the proxy {} was created with {}: it keeps that until it \
                 is recreated (`docker rm -f {}`, then deploy; traffic pauses meanwhile)",
                show(&metrics_wanted),
                names.proxy(),
                show(made_with),
                names.proxy()
            );
        }
    }
    match existing {
        Some(info) if info.state.running => return Ok(()),
        Some(_) => engine
            .start_container(&names.proxy())
            .await
            .map_err(engine_err)?,
        None => {
            let (host_ip, host_port) = (config.proxy.listen.host_ip(), config.proxy.listen.port());
            let mut cmd = vec![
                "proxy".into(),
                "run".into(),
                "--listen".into(),
                format!("0.0.0.0:{CONTAINER_PORT}"),
                "--state-dir".into(),
                DEFAULT_STATE_DIR.into(),
                "--idle-timeout".into(),
                config.proxy.idle_timeout.to_string(),
                "--header-read-timeout".into(),
                config.proxy.header_read_timeout.to_string(),
                "--max-connections".into(),
                config.proxy.max_connections.to_string(),
            ];
            let mut ports = vec![PortPublish {
                host_ip,
                host_port,
                container_port: CONTAINER_PORT,
            }];
            // Metrics: a listener of their own inside the container, published like `listen`.
            if let Some(metrics) = &config.proxy.metrics {
                cmd.extend([
                    "--metrics".into(),
                    format!("0.0.0.0:{CONTAINER_METRICS_PORT}"),
                    "--metrics-app".into(),
                    names.app.clone(),
                    "--metrics-env".into(),
                    names.env.clone(),
                ]);
                ports.push(PortPublish {
                    host_ip: metrics.host_ip(),
                    host_port: metrics.port(),
                    container_port: CONTAINER_METRICS_PORT,
                });
            }
            let spec = ContainerSpec {
                name: names.proxy(),
                image: image.to_string(),
                labels,
                env: vec![],
                cmd: Some(cmd),
                network: Some(names.network()),
                network_aliases: vec![],
                ports,
                restart_policy: RestartPolicy::UnlessStopped,
                healthcheck: None,
                mounts: vec![VolumeMount {
                    volume: names.state_volume(),
                    target: DEFAULT_STATE_DIR.into(),
                }],
                stop_timeout: Some(config.deploy.drain_timeout.get()),
            };
            engine.create_container(&spec).await.map_err(engine_err)?;
            engine
                .start_container(&names.proxy())
                .await
                .map_err(engine_err)?;
        }
    }
    // The control socket appears a moment after the process starts.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match proxy_status(engine, names).await {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() > deadline => {
                let logs = engine
                    .logs_tail(&names.proxy(), 20)
                    .await
                    .unwrap_or_default();
                anyhow::bail!(
                    "the proxy {} did not come up: {e:#}\n{}",
                    names.proxy(),
                    logs.join("\n")
                );
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_tail_keeps_the_end_within_the_cap() {
        assert_eq!(keep_tail("short", 10), "short");
        let long = format!("{}END", "é".repeat(10_000));
        let kept = keep_tail(&long, MAX_REASON_BYTES);
        assert!(kept.len() <= MAX_REASON_BYTES, "{}", kept.len());
        assert!(kept.ends_with("éEND") && kept.starts_with("[… "), "{kept}");
    }
}
