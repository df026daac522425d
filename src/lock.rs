//! The deploy lock: a container that is created and never started. Creating a container with a
//! taken name fails atomically on the Docker host, so two deploys anywhere cannot both hold it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::{ContainerSpec, Engine, EngineError, RestartPolicy, labels};
use crate::error::Error;
use crate::host::engine_err;
use crate::names::Names;
use crate::util::now_unix;

#[derive(Debug, Clone, Serialize)]
pub struct LockInfo {
    pub name: String,
    pub owner: String,
    pub host: String,
    pub pid: u32,
    /// Unix seconds.
    pub since: u64,
    pub reason: String,
    /// Why the lock looks abandoned, if it does.
    pub stale: Option<String>,
    /// The exact command that breaks this lock.
    pub release_command: String,
}

/// The holder as the `Locked` error states it (`deploys are locked: ...`); `lock status` prints
/// the same text. It is an error message, so it stays with the lock.
impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let age = now_unix().saturating_sub(self.since);
        write!(
            f,
            "{} is held by {} on {} (pid {}) for {}: {}",
            self.name,
            self.owner,
            self.host,
            self.pid,
            humantime::format_duration(Duration::from_secs(age)),
            self.reason
        )?;
        if let Some(stale) = &self.stale {
            write!(
                f,
                "\n  it looks stale: {stale}\n  hint: if no deploy is running, break it with `{}`",
                self.release_command
            )?;
        }
        Ok(())
    }
}

/// Who we are, for the lock's labels.
pub fn whoami() -> (String, String, u32) {
    let user = std::env::var("GITHUB_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    let host = hostname();
    (user, host, std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// The exact command that breaks the lock of `names.env`, for the configuration at `config`
/// (the path as the user gave it; left out when it is the default `deploy.toml`).
pub fn release_command(names: &Names, config: &Path) -> String {
    let mut words = vec![
        "deployctl".to_string(),
        "lock".into(),
        "release".into(),
        "--force".into(),
        "--env".into(),
        names.env.clone(),
    ];
    if config != Path::new("deploy.toml") {
        words.push("--config".into());
        words.push(config.to_string_lossy().into_owned());
    }
    shell_words::join(words)
}

/// Reads the lock, if held. `config` is the configuration file, for the command that breaks it.
pub async fn status(
    engine: &dyn Engine,
    names: &Names,
    stale_after: Duration,
    config: &Path,
) -> anyhow::Result<Option<LockInfo>> {
    let Some(info) = crate::host::owned_container(engine, names, &names.lock()).await? else {
        return Ok(None);
    };
    let get = |k: &str| info.labels.get(k).cloned().unwrap_or_default();
    let pid: u32 = get(labels::PID).parse().unwrap_or(0);
    let since: u64 = get(labels::CREATED).parse().unwrap_or(0);
    let host = get(labels::HOST);
    let age = now_unix().saturating_sub(since);
    let stale = if host == hostname()
        && pid != 0
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    {
        Some(format!("its process {pid} no longer runs on this host"))
    } else if age > stale_after.as_secs() {
        Some(format!(
            "it is older than deploy.lock_stale_after ({})",
            humantime::format_duration(stale_after)
        ))
    } else {
        None
    };
    Ok(Some(LockInfo {
        name: names.lock(),
        owner: get(labels::OWNER),
        host,
        pid,
        since,
        reason: get(labels::REASON),
        stale,
        release_command: release_command(names, config),
    }))
}

/// Who holds the lock, just after creating it failed with a conflict. The winner of a race is
/// not visible to `inspect` for a moment after its name is reserved, so this polls briefly;
/// `None` means the lock is free again (its holder let go meanwhile).
async fn holder_after_conflict(
    engine: &dyn Engine,
    names: &Names,
    stale_after: Duration,
    config: &Path,
) -> anyhow::Result<Option<LockInfo>> {
    let give_up = Instant::now() + HOLDER_VISIBLE_WITHIN;
    loop {
        if let Some(info) = status(engine, names, stale_after, config).await? {
            return Ok(Some(info));
        }
        if Instant::now() >= give_up {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How long a lock container may take to become visible after a create conflict.
const HOLDER_VISIBLE_WITHIN: Duration = Duration::from_secs(3);
/// How many times a lock found free right after a conflict is tried again before giving up.
const FREE_AGAIN_RETRIES: u32 = 3;

/// Takes the lock, waiting up to `wait` for a holder to let go. Exit code 3 when it stays taken,
/// naming the holder. `config` is the configuration file, for the command that breaks the lock.
#[allow(clippy::too_many_arguments)]
pub async fn acquire(
    engine: &dyn Engine,
    names: &Names,
    image: &str,
    reason: &str,
    wait: Duration,
    stale_after: Duration,
    manual: bool,
    config: &Path,
) -> anyhow::Result<()> {
    let (owner, host, pid) = whoami();
    // A manual lock outlives the command that took it: no pid to watch, only its age.
    let pid = if manual { 0 } else { pid };
    let mut lock_labels: BTreeMap<String, String> = names.labels("lock");
    lock_labels.extend([
        (labels::OWNER.to_string(), owner),
        (labels::HOST.to_string(), host),
        (labels::PID.to_string(), pid.to_string()),
        (labels::CREATED.to_string(), now_unix().to_string()),
        (labels::REASON.to_string(), reason.to_string()),
    ]);
    let spec = ContainerSpec {
        name: names.lock(),
        image: image.to_string(),
        labels: lock_labels,
        env: vec![],
        cmd: Some(vec!["lock".into()]),
        network: None,
        network_aliases: vec![],
        ports: vec![],
        restart_policy: RestartPolicy::No,
        healthcheck: None,
        mounts: vec![],
        stop_timeout: None,
    };
    let give_up = crate::config::Duration::deadline(Instant::now(), wait);
    let mut free_again = 0;
    loop {
        match engine.create_container(&spec).await {
            Ok(_) => return Ok(()),
            Err(EngineError::Conflict(_)) => {
                // Held by us-or-someone of this app, or a foreign object of that name: refuse that.
                crate::host::owned_container(engine, names, &names.lock()).await?;
                tracing::debug!(lock = %names.lock(), "lock is held; waiting or giving up");
                if Instant::now() >= give_up {
                    match holder_after_conflict(engine, names, stale_after, config).await? {
                        Some(info) => {
                            let message = format!("deploys are locked: {info}");
                            return Err(Error::Locked { message }.into());
                        }
                        // Released between our attempt and the look: try to take it again.
                        None if free_again < FREE_AGAIN_RETRIES => {
                            free_again += 1;
                            continue;
                        }
                        None => {
                            let message = format!(
                                "deploys are locked: {} is taken and released over and over by others; try again",
                                names.lock()
                            );
                            return Err(Error::Locked { message }.into());
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(engine_err(e)),
        }
    }
}

/// Releases the lock if this process holds it (or anyone does, with `force`).
/// Returns whether a lock was removed.
pub async fn release(engine: &dyn Engine, names: &Names, force: bool) -> anyhow::Result<bool> {
    let Some(info) = crate::host::owned_container(engine, names, &names.lock()).await? else {
        return Ok(false);
    };
    let (_, host, pid) = whoami();
    let (owner, _, _) = whoami();
    let label = |k: &str| info.labels.get(k).map(String::as_str).unwrap_or("");
    let same_pid = label(labels::PID) == pid.to_string();
    // A manual lock (pid 0) belongs to its owner on its host.
    let manual_mine = label(labels::PID) == "0" && label(labels::OWNER) == owner;
    let ours = label(labels::HOST) == host && (same_pid || manual_mine);
    if !ours && !force {
        let holder = info.labels.get(labels::OWNER).cloned().unwrap_or_default();
        return Err(Error::Locked {
            message: format!(
                "{} is held by {holder}, not by this process\n  hint: `deployctl lock release --force` breaks it",
                names.lock()
            ),
        }
        .into());
    }
    match engine.remove_container(&names.lock(), true).await {
        Ok(()) | Err(EngineError::NotFound(_)) => Ok(true),
        Err(e) => Err(engine_err(e)),
    }
}
