//! The environment checks: the variables of `prerequisites.required_env` are set (`env`), and the
//! env file is readable by its owner only (`env-file`).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use super::{CheckResult, plural};
use crate::config::Loaded;
use crate::util::clean_path;

pub(super) fn required_env_check(
    loaded: &Loaded,
    process_env: &BTreeMap<String, String>,
) -> Option<CheckResult> {
    let names = &loaded.config.prerequisites.required_env;
    if names.is_empty() {
        return None;
    }
    let is_set = |name: &str| {
        process_env.get(name).is_some_and(|v| !v.is_empty())
            || loaded
                .env_file_vars
                .get(name)
                .is_some_and(|v| !v.is_empty())
    };
    // Each name once, in the order of the config.
    let mut seen = std::collections::BTreeSet::new();
    let unique: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| seen.insert(*n))
        .collect();
    let missing: Vec<&str> = unique.iter().copied().filter(|n| !is_set(n)).collect();
    if missing.is_empty() {
        return Some(CheckResult::pass(
            "env",
            format!("set: {}", unique.join(", ")),
        ));
    }
    let env_file = loaded
        .config
        .prerequisites
        .env_file
        .as_ref()
        .map(|f| clean_path(&loaded.root.join(f)));
    let detail = format!(
        "{} missing or empty: {}",
        plural(missing.len(), "required variable", "required variables"),
        missing.join(", ")
    );
    let fix = match env_file {
        Some(f) => format!("set {} in the environment or in {f}", missing.join(", ")),
        None => format!(
            "set {} in the environment (or in a prerequisites.env_file)",
            missing.join(", ")
        ),
    };
    Some(CheckResult::error("env", detail, fix))
}

pub(super) fn env_file_check(loaded: &Loaded) -> Option<CheckResult> {
    const NAME: &str = "env-file";
    let rel = loaded.config.prerequisites.env_file.as_ref()?;
    let path = loaded.root.join(rel);
    let display = clean_path(&path);
    Some(match std::fs::metadata(&path) {
        Err(e) => CheckResult::error(
            NAME,
            format!("{display} cannot be read: {e}"),
            "check prerequisites.env_file and the file's permissions",
        ),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                CheckResult::warning(
                    NAME,
                    format!(
                        "{display} is accessible by group or others (mode {mode:03o}); it holds secrets"
                    ),
                    format!("chmod 600 {}", shell_words::quote(&display)),
                )
            } else {
                CheckResult::pass(NAME, format!("{display} (mode {mode:03o})"))
            }
        }
    })
}
