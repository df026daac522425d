//! The build context: a tar of a directory, filtered by its `.dockerignore` the way the docker
//! CLI filters it.
//!
//! Semantics kept from the CLI: patterns are relative to the context root (a leading `/` is
//! ignored, `./x`, `x/` and `x` are the same), `*` and `?` stay within one path component, `**`
//! spans any number of components, a pattern that matches a directory excludes everything below
//! it, later lines win and `!` re-includes. The Dockerfile and `.dockerignore` are always sent:
//! the daemon reads the Dockerfile from the context.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};

/// One parsed `.dockerignore` line.
#[derive(Debug)]
struct Pattern {
    matcher: GlobMatcher,
    /// A `!` line: re-includes what it matches.
    exception: bool,
}

/// The compiled `.dockerignore` of a context.
#[derive(Debug, Default)]
pub(crate) struct IgnoreRules {
    patterns: Vec<Pattern>,
    has_exceptions: bool,
}

impl IgnoreRules {
    /// Parses `.dockerignore` text. An invalid pattern is an error naming its line.
    pub(crate) fn parse(text: &str) -> Result<IgnoreRules, String> {
        let mut rules = IgnoreRules::default();
        for (idx, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exception, body) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let cleaned = clean_pattern(body);
            if cleaned.is_empty() {
                // `.` or `/`: the whole context; Docker ignores such a line too.
                continue;
            }
            // globset reads `{a,b}` as alternatives; Docker's matcher (Go's filepath.Match) does
            // not, so braces are literal here.
            let escaped = cleaned.replace('{', "\\{").replace('}', "\\}");
            let glob = GlobBuilder::new(&escaped)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| format!(".dockerignore line {}: `{}`: {e}", idx + 1, raw.trim()))?;
            rules.has_exceptions |= exception;
            rules.patterns.push(Pattern {
                matcher: glob.compile_matcher(),
                exception,
            });
        }
        Ok(rules)
    }

    /// Whether a context-relative path (`/`-separated) is excluded: the last matching line
    /// decides, and a line matches a path when it matches the path or one of its parents.
    pub(crate) fn is_excluded(&self, rel: &str) -> bool {
        let mut excluded = false;
        for p in &self.patterns {
            if excluded != p.exception {
                // This line cannot change the verdict.
                continue;
            }
            if matches_self_or_parent(&p.matcher, rel) {
                excluded = !p.exception;
            }
        }
        excluded
    }
}

fn matches_self_or_parent(m: &GlobMatcher, rel: &str) -> bool {
    if m.is_match(rel) {
        return true;
    }
    rel.match_indices('/').any(|(i, _)| m.is_match(&rel[..i]))
}

/// Go's `filepath.Clean` for a pattern, without the leading `/`.
fn clean_pattern(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.join("/")
}

/// A build context ready to send.
pub(crate) struct ContextTar {
    pub(crate) tar: Vec<u8>,
    /// The Dockerfile's path inside the tar, for the build's `dockerfile` parameter.
    pub(crate) dockerfile: String,
}

/// Tars `context_dir` honouring its `.dockerignore`. `dockerfile` is relative to the context
/// (or absolute); one outside the context is added under a generated name, as the CLI does.
/// `extra` lines are appended to a copy of the Dockerfile sent under a generated name.
pub(crate) fn build_context(
    context_dir: &Path,
    dockerfile: &Path,
    extra: Option<&str>,
) -> Result<ContextTar, String> {
    let root = fs::canonicalize(context_dir)
        .map_err(|e| format!("build context {}: {e}", context_dir.display()))?;
    if !root.is_dir() {
        return Err(format!(
            "build context {} is not a directory",
            context_dir.display()
        ));
    }
    let df_path = if dockerfile.is_absolute() {
        dockerfile.to_path_buf()
    } else {
        root.join(dockerfile)
    };
    let df_real =
        fs::canonicalize(&df_path).map_err(|e| format!("Dockerfile {}: {e}", df_path.display()))?;
    if !df_real.is_file() {
        return Err(format!("Dockerfile {} is not a file", df_path.display()));
    }

    let rules = match crate::util::read::read_config_file(&root.join(".dockerignore")) {
        Ok(bytes) => IgnoreRules::parse(&String::from_utf8_lossy(&bytes))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => IgnoreRules::default(),
        Err(e) => return Err(format!("cannot read .dockerignore: {e}")),
    };

    // Inside the context the Dockerfile is sent under its own path; outside, under a name
    // that cannot clash with a context file.
    let (df_rel, df_outside) = match df_real.strip_prefix(&root) {
        Ok(rel) if extra.is_none() => (slash_path(rel), false),
        _ => (
            format!(".dockerfile.deployctl-{}", std::process::id()),
            true,
        ),
    };

    let mut always = vec![df_rel.clone(), ".dockerignore".to_string()];
    always.dedup();

    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    walk(&root, &root, &rules, &always, &mut builder)
        .map_err(|e| format!("cannot read build context: {e}"))?;
    match extra {
        Some(lines) => {
            let mut text = crate::util::read::read_config_file(&df_real)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| format!("cannot read Dockerfile {}: {e}", df_real.display()))?;
            text.push('\n');
            text.push_str(lines);
            text.push('\n');
            let mut header = tar::Header::new_gnu();
            header.set_size(text.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, &df_rel, text.as_bytes())
                .map_err(|e| format!("cannot write build context: {e}"))?;
        }
        None if df_outside => {
            append_file(&mut builder, &df_real, Path::new(&df_rel))
                .map_err(|e| format!("cannot read Dockerfile {}: {e}", df_real.display()))?;
        }
        None => {}
    }
    let tar = builder
        .into_inner()
        .map_err(|e| format!("cannot write build context: {e}"))?;
    Ok(ContextTar {
        tar,
        dockerfile: df_rel,
    })
}

/// `/`-joined relative path, as patterns and the daemon see it.
fn slash_path(rel: &Path) -> String {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn walk(
    root: &Path,
    dir: &Path,
    rules: &IgnoreRules,
    always: &[String],
    out: &mut tar::Builder<Vec<u8>>,
) -> io::Result<()> {
    let mut entries = fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    // A stable order keeps the tar, and so the daemon's build cache, reproducible.
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel_path: PathBuf = match path.strip_prefix(root) {
            Ok(r) => r.to_path_buf(),
            Err(_) => continue,
        };
        let rel = slash_path(&rel_path);
        let excluded = rules.is_excluded(&rel) && !always.contains(&rel);
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            if !excluded {
                append_header_only(out, &meta, &rel_path, tar::EntryType::Directory)?;
            }
            // An excluded directory is entered only when a `!` line may re-include something
            // below it, or when it holds the Dockerfile.
            let holds_always = always.iter().any(|a| a.starts_with(&format!("{rel}/")));
            if !excluded || rules.has_exceptions || holds_always {
                walk(root, &path, rules, always, out)?;
            }
        } else if excluded {
            continue;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&path)?;
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            out.append_link(&mut header, &rel_path, &target)?;
        } else if meta.is_file() {
            append_file(out, &path, &rel_path)?;
        }
        // Sockets, fifos and devices cannot be part of an image context; the CLI skips them too.
    }
    Ok(())
}

fn append_header_only(
    out: &mut tar::Builder<Vec<u8>>,
    meta: &fs::Metadata,
    rel: &Path,
    kind: tar::EntryType,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Deterministic);
    header.set_entry_type(kind);
    header.set_size(0);
    out.append_data(&mut header, rel, io::empty())
}

fn append_file(out: &mut tar::Builder<Vec<u8>>, src: &Path, rel: &Path) -> io::Result<()> {
    let file = fs::File::open(src)?;
    let meta = file.metadata()?;
    let mut header = tar::Header::new_gnu();
    // Deterministic: owner root, no timestamps, mode 0644 or 0755; so the same files give the
    // same context and the daemon's layer cache hits.
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Deterministic);
    header.set_size(meta.len());
    out.append_data(&mut header, rel, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> IgnoreRules {
        IgnoreRules::parse(text).expect("valid rules")
    }

    #[test]
    fn patterns_are_anchored_at_the_root() {
        let r = rules("*.md\nsecret.txt\n");
        assert!(r.is_excluded("README.md"));
        assert!(!r.is_excluded("docs/README.md"));
        assert!(r.is_excluded("secret.txt"));
        assert!(!r.is_excluded("sub/secret.txt"));
    }

    #[test]
    fn double_star_spans_directories() {
        let r = rules("**/*.tmp\n");
        assert!(r.is_excluded("a.tmp"));
        assert!(r.is_excluded("a/b/c.tmp"));
        assert!(!r.is_excluded("a/b/c.txt"));
    }

    #[test]
    fn a_directory_pattern_excludes_its_contents() {
        let r = rules("node_modules\n/build/\n./dist\n");
        assert!(r.is_excluded("node_modules"));
        assert!(r.is_excluded("node_modules/x/y.js"));
        assert!(r.is_excluded("build/out.o"));
        assert!(r.is_excluded("dist/app.js"));
        assert!(!r.is_excluded("src/node_modules_like.rs"));
    }

    #[test]
    fn exceptions_re_include_and_last_line_wins() {
        let r = rules("logs\n!logs/keep.log\n");
        assert!(r.is_excluded("logs/a.log"));
        assert!(!r.is_excluded("logs/keep.log"));
        let r = rules("!keep.txt\n*.txt\n");
        assert!(r.is_excluded("keep.txt"));
    }

    #[test]
    fn comments_blanks_and_whole_context_lines_are_skipped() {
        let r = rules("# a comment\n\n   \n.\n/\n");
        assert!(!r.is_excluded("anything"));
    }

    #[test]
    fn braces_are_literal_as_in_docker() {
        let r = rules("{a,b}.txt\n");
        assert!(!r.is_excluded("a.txt"));
        assert!(r.is_excluded("{a,b}.txt"));
    }

    #[test]
    fn single_star_stays_within_a_component() {
        let r = rules("src/*.rs\n");
        assert!(r.is_excluded("src/main.rs"));
        assert!(!r.is_excluded("src/engine/mod.rs"));
    }

    #[test]
    fn an_invalid_pattern_names_its_line() {
        let err = IgnoreRules::parse("ok\n[unclosed\n").expect_err("invalid");
        assert!(err.contains("line 2"), "{err}");
    }

    fn tar_names(tar: &[u8]) -> Vec<String> {
        let mut archive = tar::Archive::new(tar);
        let mut names = Vec::new();
        for entry in archive.entries().expect("entries") {
            let entry = entry.expect("entry");
            names.push(entry.path().expect("path").to_string_lossy().into_owned());
        }
        names
    }

    #[test]
    fn context_tar_honours_dockerignore_and_keeps_the_dockerfile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::write(root.join("Dockerfile"), "FROM scratch\n").expect("write");
        fs::write(
            root.join(".dockerignore"),
            "Dockerfile\nsecret\nlogs\n!logs/keep.log\n",
        )
        .expect("write");
        fs::write(root.join("secret"), "x").expect("write");
        fs::write(root.join("app"), "x").expect("write");
        fs::create_dir_all(root.join("logs")).expect("mkdir");
        fs::write(root.join("logs/a.log"), "x").expect("write");
        fs::write(root.join("logs/keep.log"), "x").expect("write");
        std::os::unix::fs::symlink("app", root.join("link")).expect("symlink");

        let ctx = build_context(root, Path::new("Dockerfile"), None).expect("context");
        assert_eq!(ctx.dockerfile, "Dockerfile");
        let names = tar_names(&ctx.tar);
        for want in [
            "Dockerfile",
            ".dockerignore",
            "app",
            "link",
            "logs/keep.log",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
        }
        for absent in ["secret", "logs/a.log"] {
            assert!(
                !names.iter().any(|n| n == absent),
                "{absent} sent: {names:?}"
            );
        }
    }

    #[test]
    fn a_dockerfile_outside_the_context_is_added_under_a_generated_name() {
        let ctx_dir = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        let df = other.path().join("Containerfile");
        fs::write(&df, "FROM scratch\n").expect("write");
        fs::write(ctx_dir.path().join("app"), "x").expect("write");
        let ctx = build_context(ctx_dir.path(), &df, None).expect("context");
        assert!(ctx.dockerfile.starts_with(".dockerfile."));
        let names = tar_names(&ctx.tar);
        assert!(names.contains(&ctx.dockerfile), "{names:?}");
    }

    #[test]
    fn a_missing_dockerfile_or_context_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = build_context(dir.path(), Path::new("Dockerfile"), None).err();
        assert!(err.is_some_and(|e| e.contains("Dockerfile")));
        let err = build_context(&dir.path().join("nope"), Path::new("Dockerfile"), None).err();
        assert!(err.is_some_and(|e| e.contains("build context")));
    }
}
