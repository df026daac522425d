//! Every check that can run before anything changes, all reported at once: the result types
//! (`CheckResult`, `Level`) and the runner used by `deploy` and `check` (`run_prerequisites`,
//! `run_checks`); the human table is `output::render_checks`. The checks themselves live in the
//! submodules: git state (`git`), tools (`tools`), required variables and the env file (`env`),
//! the engine (`docker`) and free disk (`disk`).
//!
//! Entries, in order (an entry appears only when its check is configured, except `git` and
//! `docker`): `git`, `git-clean`, `git-branch`, `git-pushed`, `tool:<name>` per tool, `env`,
//! `env-file`, `docker`, `disk`. When no repository (or no commit) is found, only the `git`
//! entry is reported for git.

mod disk;
mod docker;
mod env;
mod git;
mod tools;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Loaded;
use crate::engine::Engine;

pub use tools::{TOOL_TIMEOUT, check_tool, extract_version};

/// How much a check result matters: only `Error` blocks a deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    /// Worth reading, but the deploy goes on.
    Warning,
    Error,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    /// False only for an error: a warning does not block.
    pub ok: bool,
    pub level: Level,
    pub detail: String,
    /// What to do about an error or a warning.
    pub fix: Option<String>,
}

impl CheckResult {
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(name, Level::Ok, detail, None)
    }

    pub fn warning(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Level::Warning, detail, Some(fix.into()))
    }

    pub fn error(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(name, Level::Error, detail, Some(fix.into()))
    }

    fn new(
        name: impl Into<String>,
        level: Level,
        detail: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        CheckResult {
            name: name.into(),
            ok: level != Level::Error,
            level,
            detail: detail.into(),
            fix,
        }
    }

    pub fn is_warning(&self) -> bool {
        self.level == Level::Warning
    }
}

/// True when no check is an error.
pub fn all_ok(checks: &[CheckResult]) -> bool {
    checks.iter().all(|c| c.ok)
}

/// The config entry, then every prerequisite, against the real process environment.
pub async fn run_checks(loaded: &Loaded, engine: Option<&dyn Engine>) -> Vec<CheckResult> {
    // Variables whose name or value is not UTF-8 cannot be named in the config anyway.
    let process_env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    run_checks_with_env(loaded, engine, &process_env).await
}

/// [`run_checks`] with the process environment passed in (PATH, DOCKER_HOST, required variables).
pub async fn run_checks_with_env(
    loaded: &Loaded,
    engine: Option<&dyn Engine>,
    process_env: &BTreeMap<String, String>,
) -> Vec<CheckResult> {
    let files = loaded
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ");
    let mut checks = vec![CheckResult::pass("config", files)];
    checks.extend(run_prerequisites(loaded, engine, process_env).await);
    checks
}

/// Runs every prerequisite check of `loaded`'s configuration.
///
/// `process_env` is the environment the checks see: `PATH` for finding tools (which also run
/// with exactly this environment), `DOCKER_HOST` for deciding whether the engine is local, and
/// the variables of `prerequisites.required_env`. Without an engine the `docker` entry fails.
pub async fn run_prerequisites(
    loaded: &Loaded,
    engine: Option<&dyn Engine>,
    process_env: &BTreeMap<String, String>,
) -> Vec<CheckResult> {
    let prereq = &loaded.config.prerequisites;
    // Tools and the Docker ping wait on other processes: run them side by side.
    let tools = futures_util::future::join_all(
        prereq
            .tools
            .iter()
            .map(|t| check_tool(t, &loaded.root, process_env, TOOL_TIMEOUT)),
    );
    let ping = async {
        match engine {
            Some(e) => Some(e.ping().await),
            None => None,
        }
    };
    let (tools, ping, git) = tokio::join!(tools, ping, async { git::git_checks(loaded) });

    let mut out = git;
    out.extend(tools);
    out.extend(env::required_env_check(loaded, process_env));
    out.extend(env::env_file_check(loaded));
    out.push(docker::docker_check(ping.as_ref()));
    if let Some(min) = prereq.min_free_disk {
        let host = match &ping {
            Some(Ok(info)) => info.host.clone(),
            _ => docker::configured_docker_host(loaded, process_env),
        };
        out.push(disk::disk_check(min, &host));
    }
    // Tool output, engine errors and file names could echo a secret of the env file. The `env`
    // entry is built from variable names only, never values, and a secret value that happens to
    // be part of a name would mangle it: it is left as is.
    for c in out.iter_mut().filter(|c| c.name != "env") {
        c.detail = loaded.redactor.redact(&c.detail).into_owned();
        if let Some(fix) = &mut c.fix {
            *fix = loaded.redactor.redact(fix).into_owned();
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// helpers shared by the checks

pub(super) fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}
