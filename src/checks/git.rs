//! The git checks: the repository and HEAD (`git`), uncommitted changes (`git-clean`), the
//! allowed branches (`git-branch`) and whether HEAD is pushed (`git-pushed`).

use git2::{BranchType, ErrorCode, Repository, Status, StatusOptions};

use super::{CheckResult, plural};
use crate::config::Loaded;
use crate::util::clean_path;

/// Changed paths named in the `git-clean` detail.
const LISTED_PATHS: usize = 5;

pub(super) fn git_checks(loaded: &Loaded) -> Vec<CheckResult> {
    let git = &loaded.config.git;
    let repo = match Repository::discover(&loaded.root) {
        Ok(r) => r,
        Err(e) => {
            return vec![CheckResult::error(
                "git",
                format!(
                    "{} is not inside a git repository ({})",
                    clean_path(&loaded.root),
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
    let workdir = repo.workdir().map(clean_path).unwrap_or_default();
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
