//! What deployctl does on the Docker host: read its state, run the proxy and talk to it through
//! `docker exec` (there is no admin port), and build the proxy image from this very binary.

pub mod container;

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{Config, Loaded};
use crate::engine::{
    ContainerSpec, Engine, EngineError, PortPublish, RestartPolicy, VolumeMount, labels,
};
use crate::error::Error;
use crate::health::{HealthOutcome, HealthSpec, ProbeResult};
use crate::names::Names;
use crate::proxy::protocol::{ProxyStatus, ReleaseRecord, SwitchRequest, SwitchResult, Target};
use crate::proxy::{CONTAINER_PORT, DEFAULT_STATE_DIR};
use crate::release::plan::{AppContainer, Observed, ProxyObserved, listen_parts};

/// Path of the deployctl binary inside the proxy image.
const PROXY_BIN: &str = "/deployctl";

/// Turns an engine failure into the error that decides the exit code.
pub fn engine_err(err: EngineError) -> anyhow::Error {
    match err {
        EngineError::Unreachable { host, reason } => {
            Error::DockerUnreachable { host, reason }.into()
        }
        other => anyhow::Error::new(other),
    }
}

/// Inspects the container `name` (one of `names`' own) and refuses it when its labels say it belongs
/// to another app or environment. None when it does not exist.
pub async fn owned_container(
    engine: &dyn Engine,
    names: &Names,
    name: &str,
) -> anyhow::Result<Option<crate::engine::ContainerInfo>> {
    let info = engine.inspect_container(name).await.map_err(engine_err)?;
    if let Some(info) = &info {
        crate::names::check_owner(names, "container", name, &info.labels)?;
    }
    Ok(info)
}

/// Creates the private network unless it exists, refusing one that is not ours.
pub async fn ensure_network(engine: &dyn Engine, names: &Names) -> anyhow::Result<()> {
    let network = names.network();
    if let Some(l) = engine.network_labels(&network).await.map_err(engine_err)? {
        crate::names::check_owner(names, "network", &network, &l)?;
    }
    engine
        .ensure_network(&network, &names.labels("network"))
        .await
        .map_err(engine_err)
}

/// Reads everything a plan needs. Errors only when the engine cannot be reached at all.
pub async fn observe(engine: &dyn Engine, names: &Names) -> anyhow::Result<Observed> {
    let mut observed = Observed::default();
    let scope = [
        (labels::APP, names.app.as_str()),
        (labels::ENV, names.env.as_str()),
    ];
    if let Some(proxy) = owned_container(engine, names, &names.proxy()).await? {
        observed.proxy = Some(ProxyObserved {
            container: proxy.name.clone(),
            image: proxy.image.clone(),
            running: proxy.state.running,
        });
        if proxy.state.running {
            let status = proxy_status(engine, names).await?;
            observed.live = status.live;
            observed.releases = proxy_releases(engine, names).await?;
        }
    }
    let app_scope = [scope[0], scope[1], (labels::ROLE, "app")];
    for c in engine
        .list_containers(&app_scope)
        .await
        .map_err(engine_err)?
    {
        observed.containers.push(AppContainer {
            id: c.id.clone(),
            color: c.labels.get(labels::COLOR).and_then(|c| c.parse().ok()),
            version: c.labels.get(labels::VERSION).cloned().unwrap_or_default(),
            running: c.state.running,
            name: c.name,
        });
    }
    let image_scope = [
        (labels::APP, names.app.as_str()),
        (labels::ENV, names.env.as_str()),
    ];
    // By labels, not by tag: `<app>:<version>` is shared by environments and moves with each
    // build of that version, while this environment's image keeps its labels and id.
    let mut images = engine.list_images(&image_scope).await.map_err(engine_err)?;
    images.sort_by_key(|i| i.created);
    for image in images {
        if let Some(v) = image.labels.get(labels::VERSION) {
            observed.images.insert(v.clone());
            observed.image_ids.insert(v.clone(), image.id.clone());
        }
    }
    tracing::debug!(
        proxy = ?observed.proxy.as_ref().map(|p| p.running),
        live = ?observed.live.as_ref().map(|t| &t.version),
        containers = observed.containers.len(),
        releases = observed.releases.len(),
        images = observed.images.len(),
        "observed the Docker host"
    );
    Ok(observed)
}

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

/// The proxy image: `proxy.image`, or one built FROM scratch out of this binary.
pub async fn ensure_proxy_image(engine: &dyn Engine, config: &Config) -> anyhow::Result<String> {
    if let Some(image) = &config.proxy.image {
        return Ok(image.clone());
    }
    let exe = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the deployctl binary: {e}"))?;
    let tag = self_image_tag(&exe)?;
    if engine.image_exists(&tag).await.map_err(engine_err)? {
        return Ok(tag);
    }
    let binary =
        std::fs::read(&exe).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", exe.display()))?;
    if !is_static_elf(&binary) {
        anyhow::bail!(
            "{} is dynamically linked, so it cannot run in a FROM scratch proxy image\n  hint: build deployctl with the repository's .cargo/config.toml (static), or set proxy.image",
            exe.display()
        );
    }
    let tar = proxy_context_tar(&binary)?;
    let labels = BTreeMap::from([(labels::ROLE.to_string(), "proxy".to_string())]);
    engine
        .build_image_from_tar(tar, &tag, &labels)
        .await
        .map_err(engine_err)?;
    prune_proxy_images(engine, &tag).await;
    Ok(tag)
}

/// How old another binary's proxy image must be before it is pruned: a younger one may belong to a
/// run of another deployctl build that has just built it and is about to create its container.
const PROXY_IMAGE_GRACE_SECS: i64 = 15 * 60;

/// Removes the proxy images of earlier deployctl binaries once unused. By tag, never by id: an
/// untagged image may be another run's build that is about to be tagged; and only once older than
/// `PROXY_IMAGE_GRACE_SECS`, for the same reason. Docker refuses to remove an image a container
/// still uses, so every running proxy keeps its own; those failures are expected and ignored.
async fn prune_proxy_images(engine: &dyn Engine, keep: &str) {
    let Ok(images) = engine.list_images(&[(labels::ROLE, "proxy")]).await else {
        return;
    };
    let cutoff = now_unix() as i64 - PROXY_IMAGE_GRACE_SECS;
    let old_tags = images
        .iter()
        .filter(|i| i.created < cutoff)
        .flat_map(|i| i.tags.iter())
        .filter(|t| t.starts_with("deployctl-proxy:") && t.as_str() != keep);
    for tag in old_tags {
        if engine.remove_image(tag).await.is_ok() {
            tracing::debug!(image = %tag, "removed an unused proxy image");
        }
    }
}

/// The proxy image this binary would build (without building it).
pub fn self_image_name() -> anyhow::Result<String> {
    self_image_tag(&std::env::current_exe()?)
}

/// Tag of the proxy image for this binary: its version plus a fingerprint of size and mtime,
/// so a rebuilt binary gets a new image without hashing the whole file on every run.
fn self_image_tag(exe: &Path) -> anyhow::Result<String> {
    use std::hash::{Hash, Hasher};
    let meta = std::fs::metadata(exe)?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    meta.len().hash(&mut h);
    meta.modified().ok().hash(&mut h);
    Ok(format!(
        "deployctl-proxy:{}-{:012x}",
        env!("CARGO_PKG_VERSION"),
        h.finish() & 0xffff_ffff_ffff
    ))
}

/// An ELF without a PT_INTERP program header needs no dynamic loader.
fn is_static_elf(bin: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if bin.len() < 64 || &bin[..4] != b"\x7fELF" || bin[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bin[o], bin[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bin[0x20..0x28].try_into().unwrap_or([0; 8])) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        bin.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != PT_INTERP)
            .unwrap_or(false)
    })
}

fn proxy_context_tar(binary: &[u8]) -> anyhow::Result<Vec<u8>> {
    let dockerfile = format!(
        "FROM scratch\nCOPY deployctl {PROXY_BIN}\nENTRYPOINT [\"{PROXY_BIN}\"]\nCMD [\"proxy\", \"run\"]\n"
    );
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data, mode) in [
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("deployctl", binary, 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        builder.append_data(&mut header, name, data)?;
    }
    Ok(builder.into_inner()?)
}

/// Creates or starts the proxy as needed and waits until it answers on its control socket.
pub async fn ensure_proxy(
    engine: &dyn Engine,
    loaded: &Loaded,
    names: &Names,
    image: &str,
) -> anyhow::Result<()> {
    let config = &loaded.config;
    let mut labels = names.labels("proxy");
    labels.insert(labels::CREATED.into(), now_unix().to_string());
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
    match owned_container(engine, names, &names.proxy()).await? {
        Some(info) if info.state.running => return Ok(()),
        Some(_) => engine
            .start_container(&names.proxy())
            .await
            .map_err(engine_err)?,
        None => {
            let (host_ip, host_port) = listen_parts(&config.proxy.listen);
            let spec = ContainerSpec {
                name: names.proxy(),
                image: image.to_string(),
                labels,
                env: vec![],
                cmd: Some(vec![
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
                ]),
                network: Some(names.network()),
                network_aliases: vec![],
                ports: vec![PortPublish {
                    host_ip,
                    host_port,
                    container_port: CONTAINER_PORT,
                }],
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

/// How the proxy reaches an app container: its name, resolved by Docker's DNS on the private network.
pub fn target_for(
    config: &Config,
    container: &str,
    version: &str,
    color: crate::names::Color,
) -> Target {
    Target {
        addr: format!("{container}:{}", config.app.port),
        container: container.to_string(),
        version: version.to_string(),
        color,
    }
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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
