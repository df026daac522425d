//! The `tool:<name>` checks: a tool is found on PATH and, when a version is required, prints a
//! version that satisfies it within a timeout.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use semver::{Version, VersionReq};

use super::CheckResult;
use crate::config::Tool;
use crate::util::truncate_chars;

/// How long a tool may take to print its version.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks one tool: found on `process_env["PATH"]` (a name with a `/` is a path relative to
/// `root`), and when it has a version requirement, `name version_args...` prints a version that
/// satisfies it within `timeout`.
pub async fn check_tool(
    tool: &Tool,
    root: &Path,
    process_env: &BTreeMap<String, String>,
    timeout: Duration,
) -> CheckResult {
    let name = format!("tool:{}", tool.name);
    let path_var = process_env.get("PATH").map(String::as_str).unwrap_or("");
    let Some(program) = find_program(&tool.name, root, path_var) else {
        let detail = if tool.name.contains('/') {
            format!("{} is not an executable file", tool.name)
        } else if path_var.is_empty() {
            format!("{} not found: PATH is empty", tool.name)
        } else {
            format!("{} not found on PATH", tool.name)
        };
        return CheckResult::error(
            name,
            detail,
            format!("install {} or add its directory to PATH", tool.name),
        );
    };
    let Some(req_text) = &tool.version else {
        return CheckResult::pass(name, format!("found at {}", program.display()));
    };
    let req = match VersionReq::parse(req_text) {
        Ok(r) => r,
        Err(e) => {
            return CheckResult::error(
                name,
                format!("invalid version requirement `{req_text}`: {e}"),
                "write a semver requirement such as `>= 18.17.0`",
            );
        }
    };
    let command = shell_words::join(std::iter::once(&tool.name).chain(&tool.version_args));
    let version_args_fix = format!(
        "make `{command}` print the version, or set version_args of {} in prerequisites.tools",
        tool.name
    );
    let output =
        match run_version_command(&program, &tool.version_args, root, process_env, timeout).await {
            Ok(o) => o,
            Err(RunError::Spawn(e)) => {
                return CheckResult::error(
                    name,
                    format!("`{command}` cannot run ({}): {e}", program.display()),
                    format!("check that {} is a working executable", program.display()),
                );
            }
            Err(RunError::Timeout) => {
                return CheckResult::error(
                    name,
                    format!(
                        "`{command}` did not finish within {}",
                        humantime::format_duration(timeout)
                    ),
                    version_args_fix,
                );
            }
        };
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let Some(found) = extract_version(&text) else {
        let first = text.lines().map(str::trim).find(|l| !l.is_empty());
        let shown_output = match first {
            Some(line) => format!("it printed `{}`", truncate_chars(line, 81)),
            None => "it printed nothing".to_owned(),
        };
        let status = match output.status.code() {
            Some(0) => String::new(),
            Some(code) => format!(" and exited with {code}"),
            None => " and was killed by a signal".to_owned(),
        };
        return CheckResult::error(
            name,
            format!("no version in the output of `{command}`: {shown_output}{status}"),
            version_args_fix,
        );
    };
    if req.matches(&found) {
        CheckResult::pass(
            name,
            format!("{found} at {} (requires {req_text})", program.display()),
        )
    } else {
        CheckResult::error(
            name,
            format!(
                "{found} at {} does not satisfy {req_text}",
                program.display()
            ),
            format!("install a version of {} matching `{req_text}`", tool.name),
        )
    }
}

enum RunError {
    Spawn(std::io::Error),
    Timeout,
}

async fn run_version_command(
    program: &Path,
    args: &[String],
    root: &Path,
    env: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<std::process::Output, RunError> {
    let mut attempts = 0;
    let child = loop {
        let spawned = tokio::process::Command::new(program)
            .args(args)
            .env_clear()
            .envs(env)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(c) => break c,
            // ETXTBSY: the file was just written and another thread's fork still holds it open
            // for writing for an instant (a freshly installed tool, or parallel tests).
            Err(e) if e.raw_os_error() == Some(26) && attempts < 5 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(RunError::Spawn(e)),
        }
    };
    // On timeout the future is dropped, which kills the child (kill_on_drop).
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(RunError::Spawn(e)),
        Err(_) => Err(RunError::Timeout),
    }
}

/// An executable regular file named `name` in a directory of `path_var`, or at `root/name`
/// when the name holds a `/`. Empty PATH entries (the current directory) are skipped.
fn find_program(name: &str, root: &Path, path_var: &str) -> Option<PathBuf> {
    if name.is_empty() {
        return None;
    }
    if name.contains('/') {
        let path = root.join(name);
        return is_executable(&path).then_some(path);
    }
    std::env::split_paths(path_var)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first version-looking word of a tool's output: `v18.17.0`, `node 18.17.0`, `go1.22.1`,
/// `Docker version 28.2.2, build …`, `3.11` (as 3.11.0). Only the numeric `major.minor[.patch]`
/// is kept: `1.80.0-nightly` is 1.80.0, `2.39.2.windows.1` is 2.39.2.
pub fn extract_version(text: &str) -> Option<Version> {
    text.split(|c: char| c.is_whitespace() || ",;:()[]{}\"'=<>".contains(c))
        .find_map(|word| {
            // A letter prefix (`v`, `go`, `OpenSSH_`) may precede the number; a digit prefix may
            // not, so `3ubuntu13.5` is no version.
            let rest =
                word.trim_start_matches(|c: char| c.is_ascii_alphabetic() || "_-/".contains(c));
            parse_numeric(rest)
        })
}

/// `major.minor[.patch]` at the start of `s`, whatever follows it.
fn parse_numeric(s: &str) -> Option<Version> {
    let mut parts = [0u64; 3];
    let mut count = 0;
    let mut rest = s;
    while count < 3 {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            break;
        }
        parts[count] = rest[..digits].parse().ok()?;
        count += 1;
        rest = &rest[digits..];
        match rest.strip_prefix('.') {
            Some(after) if after.starts_with(|c: char| c.is_ascii_digit()) && count < 3 => {
                rest = after
            }
            _ => break,
        }
    }
    (count >= 2).then(|| Version::new(parts[0], parts[1], parts[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<String> {
        extract_version(s).map(|v| v.to_string())
    }

    #[test]
    fn versions_are_found_in_common_outputs() {
        assert_eq!(v("v18.17.0\n").as_deref(), Some("18.17.0"));
        assert_eq!(v("node 18.17.0").as_deref(), Some("18.17.0"));
        assert_eq!(
            v("Docker version 28.2.2, build e6534b4").as_deref(),
            Some("28.2.2")
        );
        assert_eq!(v("git version 2.47.3").as_deref(), Some("2.47.3"));
        assert_eq!(v("Python 3.11").as_deref(), Some("3.11.0"));
        assert_eq!(
            v("go version go1.22.1 linux/amd64").as_deref(),
            Some("1.22.1")
        );
        assert_eq!(
            v("rustc 1.80.0-nightly (0514789 2024-07-21)").as_deref(),
            Some("1.80.0")
        );
        assert_eq!(v("git version 2.39.2.windows.1").as_deref(), Some("2.39.2"));
        assert_eq!(
            v("OpenSSH_9.6p1 Ubuntu-3ubuntu13.5, OpenSSL 3.0.13").as_deref(),
            Some("9.6.0")
        );
    }

    #[test]
    fn words_that_are_not_versions_are_skipped() {
        assert_eq!(v("built for x86_64 3ubuntu13.5"), None);
        assert_eq!(v("tool 7 (build 12)"), None);
        assert_eq!(v(""), None);
        assert_eq!(v("version: unknown"), None);
        assert_eq!(v("1.99999999999999999999999.0"), None);
        assert_eq!(v("build 12, release 4.5.6").as_deref(), Some("4.5.6"));
    }

    #[tokio::test]
    async fn a_hanging_tool_times_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join("slowtool");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 5\n").expect("write script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("chmod script");
        let tool = Tool {
            name: "slowtool".into(),
            version: Some(">= 1.0.0".into()),
            version_args: vec!["--version".into()],
        };
        // `sleep` comes from the system directories.
        let path = format!("{}:/usr/bin:/bin", dir.path().display());
        let env = BTreeMap::from([("PATH".to_owned(), path)]);
        let started = std::time::Instant::now();
        let r = check_tool(&tool, dir.path(), &env, Duration::from_millis(200)).await;
        assert!(started.elapsed() < Duration::from_secs(3), "{r:?}");
        assert!(!r.ok, "{r:?}");
        assert!(r.detail.contains("did not finish within 200ms"), "{r:?}");
    }
}
