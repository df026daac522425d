//! The release version: the git HEAD short sha, or what the user names.

use std::path::Path;

use crate::error::Error;

/// What git says about the working tree the config lives in.
#[derive(Debug, Clone)]
pub struct GitState {
    pub sha: String,
    pub short_sha: String,
    pub branch: Option<String>,
    pub dirty: bool,
}

pub fn git_state(root: &Path) -> Result<GitState, String> {
    let repo = git2::Repository::discover(root)
        .map_err(|e| format!("not in a git repository ({})", e.message()))?;
    let head = repo
        .head()
        .map_err(|e| format!("git HEAD cannot be read ({})", e.message()))?;
    let commit = head
        .peel_to_commit()
        .map_err(|e| format!("git HEAD is not a commit ({})", e.message()))?;
    let sha = commit.id().to_string();
    let branch = if head.is_branch() {
        head.shorthand().ok().map(str::to_string)
    } else {
        None
    };
    let mut opts = git2::StatusOptions::new();
    opts.include_untracked(true)
        .include_ignored(false)
        .exclude_submodules(true);
    let dirty = repo
        .statuses(Some(&mut opts))
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    Ok(GitState {
        short_sha: sha.chars().take(7).collect(),
        sha,
        branch,
        dirty,
    })
}

/// The ledger's author of a release: `GITHUB_ACTOR` in GitHub Actions, else the author of the
/// git HEAD commit, else `$USER`.
pub fn author(root: &Path) -> String {
    let var = |name: &str| std::env::var(name).ok();
    pick_author(
        var("GITHUB_ACTIONS").as_deref() == Some("true"),
        var("GITHUB_ACTOR"),
        head_author(root),
        var("USER"),
    )
}

fn pick_author(
    in_actions: bool,
    actor: Option<String>,
    git: Option<String>,
    user: Option<String>,
) -> String {
    let actor = actor.filter(|_| in_actions);
    [actor, git, user]
        .into_iter()
        .flatten()
        .map(|s| s.trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn head_author(root: &Path) -> Option<String> {
    let repo = git2::Repository::discover(root).ok()?;
    let commit = repo.head().ok()?.peel_to_commit().ok()?;
    let author = commit.author();
    author.name().ok().map(str::to_string)
}

/// Valid as a Docker tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_version(version: &str) -> Result<(), Error> {
    let mut chars = version.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && version.len() <= 128;
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "`{version}` cannot be a version: use letters, digits, `_`, `.` and `-` (at most 128, not starting with `.` or `-`)"
        )))
    }
}

/// The version to deploy: the one asked for, else the short sha (`-dirty` with uncommitted changes).
pub fn resolve(explicit: Option<&str>, root: &Path) -> Result<String, Error> {
    if let Some(v) = explicit {
        validate_version(v)?;
        return Ok(v.to_string());
    }
    let state = git_state(root).map_err(|reason| {
        Error::Usage(format!(
            "cannot derive the release version: {reason}\n  hint: pass --release VERSION"
        ))
    })?;
    Ok(if state.dirty {
        format!("{}-dirty", state.short_sha)
    } else {
        state.short_sha
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item19_author_is_actor_in_actions_then_git_author_then_user() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(pick_author(true, s("octo"), s("Ann"), s("bob")), "octo");
        assert_eq!(pick_author(false, s("octo"), s("Ann"), s("bob")), "Ann");
        assert_eq!(pick_author(true, s(""), s("Ann"), s("bob")), "Ann");
        assert_eq!(pick_author(true, None, None, s("bob")), "bob");
        assert_eq!(pick_author(false, None, None, None), "unknown");
    }

    #[test]
    fn versions_must_be_docker_tags() {
        assert!(validate_version("v1.2.3").is_ok());
        assert!(validate_version("3f2a9c1-dirty").is_ok());
        assert!(validate_version("").is_err());
        assert!(validate_version("-x").is_err());
        assert!(validate_version("a/b").is_err());
        assert!(validate_version(&"a".repeat(129)).is_err());
    }
}
