//! The env file named by `prerequisites.env_file`: read (its path expanded from the process
//! environment only), parsed with dotenvy, and its problems located without ever quoting a line
//! (it holds secrets).

use std::collections::BTreeMap;
use std::path::Path;

use super::interpolate::interpolate_tree;
use super::tree::{self, Errors, Loc, Node, Source, Value};
use crate::error::ConfigError;
use crate::util::display_path;

pub(super) struct EnvFile {
    pub(super) vars: BTreeMap<String, String>,
    /// Shown path, for hints.
    pub(super) display: Option<String>,
    /// Named but not readable: its variables are unknown.
    pub(super) failed: bool,
    pub(super) errors: Vec<ConfigError>,
}

/// Reads the env file named by `prerequisites.env_file` (expanded from the process environment).
pub(super) fn read_env_file(
    root_node: &mut Node,
    root: &Path,
    process_env: &BTreeMap<String, String>,
    sources: &mut Vec<Source>,
    warnings: &mut Vec<String>,
) -> EnvFile {
    let mut out = EnvFile {
        vars: BTreeMap::new(),
        display: None,
        failed: false,
        errors: Vec::new(),
    };
    let Some(node) = env_file_node(root_node) else {
        return out;
    };
    let mut errors = Errors::new(sources);
    let lookup = |name: &str| process_env.get(name).cloned();
    interpolate_tree(
        node,
        "prerequisites.env_file",
        &lookup,
        false,
        None,
        &mut errors,
    );
    out.errors = errors.list;
    let Value::String(rel) = &node.value else {
        // Wrong type: deserializing the config reports it.
        out.failed = true;
        return out;
    };
    if node.poisoned {
        out.failed = true;
        return out;
    }
    let path = root.join(rel);
    let shown = display_path(&path);
    out.display = Some(shown.clone());
    let loc = node.loc;
    let bytes = match crate::util::read::read_config_file(&path) {
        Ok(b) => b,
        Err(e) => {
            let (message, hint) = if e.kind() == std::io::ErrorKind::NotFound {
                (
                    format!("env file `{shown}` does not exist"),
                    "create it (with `chmod 600`), or remove `prerequisites.env_file`",
                )
            } else {
                (
                    format!("cannot read env file `{shown}`: {e}"),
                    "check the path and its permissions",
                )
            };
            out.errors.push(tree::make_error(
                sources,
                loc,
                "prerequisites.env_file",
                message,
                Some(hint.to_owned()),
            ));
            out.failed = true;
            return out;
        }
    };
    warn_if_readable_by_others(&path, &shown, warnings);
    let text = String::from_utf8_lossy(&bytes).into_owned();
    // dotenvy reports invalid UTF-8 as an I/O error without a place: find the place first.
    let problem = match std::str::from_utf8(&bytes) {
        Err(e) => Some((
            Some(e.valid_up_to()),
            "the env file is not valid UTF-8".to_owned(),
        )),
        Ok(_) => dotenvy::from_read_iter(bytes.as_slice()).find_map(|item| match item {
            Ok((k, v)) => {
                out.vars.insert(k, v);
                None
            }
            // Never quote the line: it holds a secret.
            Err(dotenvy::Error::LineParse(line, index)) => {
                let start = text.find(line.trim_end_matches(['\n', '\r']));
                Some((
                    start.map(|s| s + index),
                    "syntax error in env file".to_owned(),
                ))
            }
            Err(_) => Some((None, "cannot parse env file".to_owned())),
        }),
    };
    let Some((offset, message)) = problem else {
        return out;
    };
    let hint = "write one `NAME=value` per line; quote values with spaces or `#`".to_owned();
    match offset {
        Some(offset) => {
            sources.push(Source {
                display: shown.clone(),
                text,
            });
            let file_loc = Loc {
                file: sources.len() - 1,
                offset: Some(offset),
            };
            out.errors
                .push(tree::make_error(sources, file_loc, "", message, Some(hint)));
        }
        // No place in the env file: point at the key that names it.
        None => out.errors.push(tree::make_error(
            sources,
            loc,
            "prerequisites.env_file",
            format!("{message} `{shown}`"),
            Some(hint),
        )),
    }
    out.failed = true;
    out
}

fn env_file_node(root_node: &mut Node) -> Option<&mut Node> {
    let Value::Table(entries) = &mut root_node.value else {
        return None;
    };
    let pre = entries.iter_mut().find(|e| e.key == "prerequisites")?;
    let Value::Table(entries) = &mut pre.node.value else {
        return None;
    };
    entries
        .iter_mut()
        .find(|e| e.key == "env_file")
        .map(|e| &mut e.node)
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path, shown: &str, warnings: &mut Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "env file {shown} is readable by group or others (mode {mode:o}); it holds secrets: run `chmod 600 {shown}`"
            ));
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path, _: &str, _: &mut Vec<String>) {}
