//! `deployctl check`: every check that can run before anything changes, all reported at once.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Loaded;
use crate::engine::Engine;
use crate::prereq::run_prerequisites;

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

/// The human table: one line per check (`ok`, `warn` or `FAIL`), plus the fix of warnings and
/// errors on the line below.
pub fn render_text(checks: &[CheckResult]) -> String {
    let mut text = String::new();
    for c in checks {
        let mark = match c.level {
            Level::Ok => "ok  ",
            Level::Warning => "warn",
            Level::Error => "FAIL",
        };
        text.push_str(&format!("{mark}  {:<10} {}\n", c.name, c.detail));
        if let Some(fix) = c.fix.as_ref().filter(|_| c.level != Level::Ok) {
            text.push_str(&format!("      {:<10} fix: {fix}\n", ""));
        }
    }
    text
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
