//! Small helpers used across the crate, each in one version: the clock in unix seconds, the
//! longest duration, the two name rules (environment names, environment variable names), paths as
//! shown in messages, cutting text to a length, and reading a small file safely (`read`).

pub mod read;

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest duration deployctl accepts anywhere (config, flags, or a spec sent to the proxy):
/// far beyond any real timeout, and far from the overflow of `Instant + Duration`.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Seconds since the unix epoch (0 for a clock set before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An environment name (`--env production`): it becomes a file name (`environments/<name>.toml`)
/// and part of Docker object names, so no separators and no leading dot.
pub fn valid_environment_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// An environment variable name as POSIX shells accept it: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A path without `./` segments, for messages and fix commands; `.` when nothing is left.
pub fn clean_path(path: &Path) -> String {
    let cleaned: PathBuf = path
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    if cleaned.as_os_str().is_empty() {
        ".".to_owned()
    } else {
        cleaned.display().to_string()
    }
}

/// A path as the user would write it: relative to the current directory when possible,
/// without `./` segments.
pub fn display_path(path: &Path) -> String {
    let relative = if path.is_absolute() {
        std::env::current_dir()
            .ok()
            .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
            .unwrap_or_else(|| path.to_path_buf())
    } else {
        path.to_path_buf()
    };
    clean_path(&relative)
}

/// `text` if it has at most `max` characters, else its first `max - 1` characters and `…`.
pub fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_names() {
        assert!(valid_environment_name("production"));
        assert!(valid_environment_name("eu-west.1"));
        assert!(!valid_environment_name(""));
        assert!(!valid_environment_name("../x"));
        assert!(!valid_environment_name(".hidden"));
        assert!(!valid_environment_name("a/b"));
    }

    #[test]
    fn env_var_names() {
        assert!(valid_env_var_name("DATABASE_URL"));
        assert!(valid_env_var_name("_x1"));
        assert!(!valid_env_var_name("1X"));
        assert!(!valid_env_var_name("A-B"));
        assert!(!valid_env_var_name(""));
    }

    #[test]
    fn paths_are_clean() {
        assert_eq!(clean_path(Path::new("./a/./b")), "a/b");
        assert_eq!(clean_path(Path::new("./")), ".");
        assert_eq!(clean_path(Path::new("/x/./y")), "/x/y");
    }

    #[test]
    fn display_paths_are_clean() {
        assert_eq!(
            display_path(Path::new("./environments/p.toml")),
            "environments/p.toml"
        );
        assert_eq!(display_path(Path::new("deploy.toml")), "deploy.toml");
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(display_path(&cwd.join("a/b.toml")), "a/b.toml");
    }

    #[test]
    fn truncation_keeps_at_most_max_chars() {
        assert_eq!(truncate_chars("héllo", 5), "héllo");
        assert_eq!(truncate_chars("héllo!", 5), "héll…");
        assert_eq!(truncate_chars("", 0), "");
    }
}
