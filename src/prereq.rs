//! Prerequisite checks run by `deploy` and `check`: git state, tools, required variables, the env
//! file's permissions, Docker, free disk. Every check runs and all results come back at once.
//!
//! Entries, in order (an entry appears only when its check is configured, except `git` and
//! `docker`): `git`, `git-clean`, `git-branch`, `git-pushed`, `tool:<name>` per tool, `env`,
//! `env-file`, `docker`, `disk`. When no repository (or no commit) is found, only the `git`
//! entry is reported for git.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use git2::{BranchType, ErrorCode, Repository, Status, StatusOptions};
use semver::{Version, VersionReq};

use crate::check::CheckResult;
use crate::config::{ByteSize, Loaded, Tool};
use crate::engine::Engine;
use crate::engine::{EngineInfo, EngineResult};

/// How long a tool may take to print its version.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(5);

/// Changed paths named in the `git-clean` detail.
const LISTED_PATHS: usize = 5;

/// Where Docker keeps images and containers on a standard Linux install.
const DOCKER_DATA_ROOT: &str = "/var/lib/docker";

/// What the engine client uses when neither `docker.host` nor `DOCKER_HOST` is set.
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

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
    let (tools, ping, git) = tokio::join!(tools, ping, async { git_checks(loaded) });

    let mut out = git;
    out.extend(tools);
    out.extend(required_env_check(loaded, process_env));
    out.extend(env_file_check(loaded));
    out.push(docker_check(ping.as_ref()));
    if let Some(min) = prereq.min_free_disk {
        let host = match &ping {
            Some(Ok(info)) => info.host.clone(),
            _ => configured_docker_host(loaded, process_env),
        };
        out.push(disk_check(min, &host));
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
// git

fn git_checks(loaded: &Loaded) -> Vec<CheckResult> {
    let git = &loaded.config.git;
    let repo = match Repository::discover(&loaded.root) {
        Ok(r) => r,
        Err(e) => {
            return vec![CheckResult::error(
                "git",
                format!(
                    "{} is not inside a git repository ({})",
                    shown(&loaded.root),
                    e.message()
                ),
                "deploy from a git checkout (new project: `git init && git add -A && git commit -m init`)",
            )];
        }
    };
    if repo.is_bare() {
        return vec![CheckResult::error(
            "git",
            format!(
                "{} is a bare repository: there is no working tree",
                repo.path().display()
            ),
            "deploy from a checkout of the repository",
        )];
    }
    let head = match repo.head() {
        Ok(h) => h,
        Err(e) if e.code() == ErrorCode::UnbornBranch => {
            return vec![CheckResult::error(
                "git",
                "the repository has no commit yet",
                "commit first: `git add -A && git commit`",
            )];
        }
        Err(e) => {
            return vec![CheckResult::error(
                "git",
                format!("HEAD cannot be read ({})", e.message()),
                "repair the repository (`git status` shows what is wrong)",
            )];
        }
    };
    let head_id = match head.peel_to_commit() {
        Ok(c) => c.id(),
        Err(e) => {
            return vec![CheckResult::error(
                "git",
                format!("HEAD is not a commit ({})", e.message()),
                "check out a branch or a commit",
            )];
        }
    };
    let short: String = head_id.to_string().chars().take(7).collect();
    let branch = if head.is_branch() {
        head.shorthand().ok().map(str::to_owned)
    } else {
        None
    };
    let workdir = repo.workdir().map(shown).unwrap_or_default();
    let mut out = vec![CheckResult::pass(
        "git",
        match &branch {
            Some(b) => format!("HEAD {short} on {b} ({workdir})"),
            None => format!("HEAD {short}, detached ({workdir})"),
        },
    )];
    out.push(clean_check(&repo, git.require_clean, &short));
    if !git.branches.is_empty() {
        out.push(branch_check(&git.branches, branch.as_deref(), &short));
    }
    if git.require_pushed {
        out.push(pushed_check(&repo, branch.as_deref(), head_id, &short));
    }
    out
}

fn clean_check(repo: &Repository, require_clean: bool, short: &str) -> CheckResult {
    const NAME: &str = "git-clean";
    let mut opts = StatusOptions::new();
    // Untracked files count (a forgotten new file changes what gets built); ignored ones do not.
    opts.include_untracked(true)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = match repo.statuses(Some(&mut opts)) {
        Ok(s) => s,
        Err(e) => {
            return CheckResult::error(
                NAME,
                format!("the working tree status cannot be read ({})", e.message()),
                "run `git status` to see what is wrong",
            );
        }
    };
    let changed: Vec<String> = statuses
        .iter()
        .filter(|s| s.status() != Status::CURRENT && !s.status().is_ignored())
        .map(|s| {
            let path = String::from_utf8_lossy(s.path_bytes()).into_owned();
            if s.status().is_wt_new() {
                format!("{path} (untracked)")
            } else {
                path
            }
        })
        .collect();
    if changed.is_empty() {
        return CheckResult::pass(NAME, "working tree clean");
    }
    let mut list = changed
        .iter()
        .take(LISTED_PATHS)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if changed.len() > LISTED_PATHS {
        list.push_str(&format!(", and {} more", changed.len() - LISTED_PATHS));
    }
    let count = plural(changed.len(), "uncommitted change", "uncommitted changes");
    if require_clean {
        CheckResult::error(
            NAME,
            format!("{count}: {list}"),
            "commit or stash them (or set git.require_clean = false to deploy them as `<sha>-dirty`)",
        )
    } else {
        CheckResult::warning(
            NAME,
            format!("{count}: {list}; the version gets `-dirty` ({short}-dirty)"),
            "commit them for a release that can be rebuilt from git",
        )
    }
}

fn branch_check(patterns: &[String], branch: Option<&str>, short: &str) -> CheckResult {
    const NAME: &str = "git-branch";
    let allowed = patterns.join(", ");
    let mut builder = globset::GlobSetBuilder::new();
    for p in patterns {
        // `*` stays within one path segment, as in git refspecs: `release/*` is not `release/a/b`.
        match globset::GlobBuilder::new(p).literal_separator(true).build() {
            Ok(g) => {
                builder.add(g);
            }
            Err(e) => {
                return CheckResult::error(
                    NAME,
                    format!("invalid pattern `{p}` in git.branches: {}", e.kind()),
                    "write a branch name or a glob such as `release/*`",
                );
            }
        }
    }
    let set = match builder.build() {
        Ok(s) => s,
        Err(e) => {
            return CheckResult::error(
                NAME,
                format!("git.branches cannot be used: {e}"),
                "write branch names or globs such as `release/*`",
            );
        }
    };
    match branch {
        Some(b) if set.is_match(b) => {
            CheckResult::pass(NAME, format!("{b} is allowed ({allowed})"))
        }
        Some(b) => CheckResult::error(
            NAME,
            format!("branch {b} is not allowed; git.branches: {allowed}"),
            format!("check out an allowed branch, or add `{b}` to git.branches"),
        ),
        None => CheckResult::error(
            NAME,
            format!("HEAD is detached at {short}; git.branches allows only {allowed}"),
            "check out an allowed branch (`git switch <branch>`)",
        ),
    }
}

fn pushed_check(
    repo: &Repository,
    branch: Option<&str>,
    head: git2::Oid,
    short: &str,
) -> CheckResult {
    const NAME: &str = "git-pushed";
    let Some(branch) = branch else {
        // A detached HEAD (usual in CI) counts as pushed when a remote-tracking branch has it.
        return match remote_branch_containing(repo, head) {
            Some(remote) => {
                CheckResult::pass(NAME, format!("HEAD {short} (detached) is on {remote}"))
            }
            None => CheckResult::error(
                NAME,
                format!("HEAD is detached at {short} and no remote-tracking branch contains it"),
                "push the commit to a branch (then `git fetch`), or check out a pushed branch",
            ),
        };
    };
    let local = match repo.find_branch(branch, BranchType::Local) {
        Ok(b) => b,
        Err(e) => {
            return CheckResult::error(
                NAME,
                format!("branch {branch} cannot be read ({})", e.message()),
                "run `git status` to see what is wrong",
            );
        }
    };
    let upstream = match local.upstream() {
        Ok(u) => u,
        Err(_) => {
            return CheckResult::error(
                NAME,
                format!("branch {branch} has no upstream"),
                format!("git push -u {} {branch}", default_remote(repo)),
            );
        }
    };
    let upstream_name = String::from_utf8_lossy(upstream.get().shorthand_bytes()).into_owned();
    let Some(upstream_id) = upstream.get().target() else {
        return CheckResult::error(
            NAME,
            format!("the upstream {upstream_name} of {branch} does not point at a commit"),
            format!(
                "git fetch, then git push -u {} {branch}",
                default_remote(repo)
            ),
        );
    };
    match repo.graph_ahead_behind(head, upstream_id) {
        Ok((0, _)) => CheckResult::pass(NAME, format!("HEAD {short} is on {upstream_name}")),
        Ok((ahead, _)) => CheckResult::error(
            NAME,
            format!(
                "{branch} is {} ahead of {upstream_name}",
                plural(ahead, "commit", "commits")
            ),
            "git push",
        ),
        Err(e) => CheckResult::error(
            NAME,
            format!(
                "{branch} cannot be compared with {upstream_name} ({})",
                e.message()
            ),
            "git fetch, then try again",
        ),
    }
}

/// The first remote-tracking branch whose history contains `head`.
fn remote_branch_containing(repo: &Repository, head: git2::Oid) -> Option<String> {
    let branches = repo.branches(Some(BranchType::Remote)).ok()?;
    branches.filter_map(Result::ok).find_map(|(b, _)| {
        let tip = b.get().target()?;
        let contains = tip == head || repo.graph_descendant_of(tip, head).unwrap_or(false);
        contains.then(|| String::from_utf8_lossy(b.get().shorthand_bytes()).into_owned())
    })
}

/// `origin` when it exists, else the only remote, else a placeholder.
fn default_remote(repo: &Repository) -> String {
    let names: Vec<String> = repo
        .remotes()
        .map(|r| r.iter().flatten().flatten().map(str::to_owned).collect())
        .unwrap_or_default();
    if names.iter().any(|n| n == "origin") || names.is_empty() {
        "origin".to_owned()
    } else if names.len() == 1 {
        names[0].clone()
    } else {
        "<remote>".to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// tools

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
            Some(line) => format!("it printed `{}`", truncate(line, 80)),
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

// ---------------------------------------------------------------------------------------------
// environment

fn required_env_check(
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
        .map(|f| shown(&loaded.root.join(f)));
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

fn env_file_check(loaded: &Loaded) -> Option<CheckResult> {
    const NAME: &str = "env-file";
    let rel = loaded.config.prerequisites.env_file.as_ref()?;
    let path = loaded.root.join(rel);
    let display = shown(&path);
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

// ---------------------------------------------------------------------------------------------
// docker and disk

fn docker_check(ping: Option<&EngineResult<EngineInfo>>) -> CheckResult {
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
fn configured_docker_host(loaded: &Loaded, process_env: &BTreeMap<String, String>) -> String {
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

fn disk_check(min: ByteSize, docker_host: &str) -> CheckResult {
    const NAME: &str = "disk";
    let local = docker_host.starts_with("unix://") || docker_host.starts_with('/');
    if !local {
        return CheckResult::warning(
            NAME,
            format!("the engine at {docker_host} is remote: its free disk space is not measured"),
            format!("make sure its host has {min} free"),
        );
    }
    let path = if Path::new(DOCKER_DATA_ROOT).is_dir() {
        PathBuf::from(DOCKER_DATA_ROOT)
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
    };
    match rustix::fs::statvfs(&path) {
        Err(e) => CheckResult::error(
            NAME,
            format!("free space on {} cannot be measured: {e}", path.display()),
            "check the path, or remove prerequisites.min_free_disk",
        ),
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let detail = format!(
                "{} free on {} (needs {min})",
                human_bytes(free),
                path.display()
            );
            if free >= min.0 {
                CheckResult::pass(NAME, detail)
            } else {
                CheckResult::error(
                    NAME,
                    detail,
                    "free space or lower prerequisites.min_free_disk",
                )
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// helpers

/// `12.3 GiB`, `512 B`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// A path without `./` segments, for messages and fix commands.
fn shown(path: &Path) -> String {
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

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
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
