//! `deployctl check`: every check that can run before anything changes, all reported at once.

use serde::Serialize;

use crate::config::Loaded;
use crate::engine::Engine;

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// What to do when it fails.
    pub fix: Option<String>,
}

pub async fn run_checks(loaded: &Loaded, engine: Option<&dyn Engine>) -> Vec<CheckResult> {
    let mut checks = vec![CheckResult {
        name: "config".into(),
        ok: true,
        detail: loaded
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" + "),
        fix: None,
    }];
    let docker = match engine {
        None => CheckResult {
            name: "docker".into(),
            ok: false,
            detail: "no engine address could be used".into(),
            fix: Some("set DOCKER_HOST or docker.host".into()),
        },
        Some(engine) => match engine.ping().await {
            Ok(info) => CheckResult {
                name: "docker".into(),
                ok: true,
                detail: format!("{} (engine {}, API {})", info.host, info.server_version, info.api_version),
                fix: None,
            },
            Err(e) => CheckResult {
                name: "docker".into(),
                ok: false,
                detail: e.to_string(),
                fix: Some("start the Docker daemon, or point DOCKER_HOST (or docker.host) at a reachable engine".into()),
            },
        },
    };
    checks.push(docker);
    checks
}
