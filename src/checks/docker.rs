//! The `docker` check (the engine answers a ping) and the engine address as the client resolves
//! it, which decides whether the disk check can measure anything.

use std::collections::BTreeMap;

use super::CheckResult;
use crate::config::Loaded;
use crate::engine::{EngineInfo, EngineResult};

/// What the engine client uses when neither `docker.host` nor `DOCKER_HOST` is set.
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

pub(super) fn docker_check(ping: Option<&EngineResult<EngineInfo>>) -> CheckResult {
    match ping {
        None => CheckResult::error(
            "docker",
            "no engine address could be used",
            "set DOCKER_HOST or docker.host",
        ),
        Some(Ok(info)) => CheckResult::pass(
            "docker",
            format!(
                "{} (engine {}, API {})",
                info.host, info.server_version, info.api_version
            ),
        ),
        Some(Err(e)) => CheckResult::error(
            "docker",
            e.to_string(),
            "start the Docker daemon, or point DOCKER_HOST (or docker.host) at a reachable engine",
        ),
    }
}

/// The engine address as the client resolves it: `docker.host`, `DOCKER_HOST`, the local socket.
pub(super) fn configured_docker_host(
    loaded: &Loaded,
    process_env: &BTreeMap<String, String>,
) -> String {
    loaded
        .config
        .docker
        .host
        .as_deref()
        .or(process_env.get("DOCKER_HOST").map(String::as_str))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .unwrap_or(DEFAULT_DOCKER_HOST)
        .to_owned()
}
