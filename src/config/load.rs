//! Loading: parse deploy.toml and the environment overlay, merge, interpolate, validate.
//!
//! The pipeline keeps the location of every key and value, so every problem is reported as
//! `file:line:col` in the file the value came from, and all problems are reported at once:
//!
//! 1. parse `deploy.toml` and `environments/<env>.toml` (syntax errors stop here);
//! 2. deep-merge the overlay into the base (tables key by key; scalars, arrays and arrays of
//!    tables replace);
//! 3. read the env file named by `prerequisites.env_file` and expand `${...}` in every string;
//! 4. deserialize the tree into [`Config`] with the located deserializer of [`super::de`]: the
//!    types (and the value rules they name, [`super::rules`]) decide what is valid, and every
//!    error is reported at its place;
//! 5. check the rules that involve several fields on the typed [`Config`] ([`super::validate`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::interpolate::interpolate_tree;
use super::schema::Config;
use super::tree::{self, Errors, Loc, Node, Source};
use super::{de, envfile, validate};
use crate::error::{ConfigError, ConfigErrors, Error};
use crate::redact::{MASK, Redactor};
use crate::util::{display_path, valid_environment_name};

/// What to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Path of `deploy.toml`; the overlay and the env file are found next to it.
    pub config_path: PathBuf,
    /// Environment name: selects `environments/<env>.toml`.
    pub env: String,
    /// The process environment used for `${VAR}` (passed in so tests need not mutate it).
    pub process_env: BTreeMap<String, String>,
}

/// A loaded, valid configuration and what was learnt while loading it.
///
/// Its `Debug` output is redacted: the config and the env file hold secrets.
#[derive(Clone)]
pub struct Loaded {
    pub config: Config,
    pub env: String,
    /// Directory of deploy.toml; relative paths in the config resolve against it.
    pub root: PathBuf,
    /// The files merged, base first.
    pub files: Vec<PathBuf>,
    pub redactor: Redactor,
    /// Variables read from the env file (secret values), for containers' environment.
    pub env_file_vars: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

/// Loads and validates the configuration of one environment.
///
/// `${VAR}` looks in the process environment first, then in the env file: **the process
/// environment wins**, so a CI job can override a value of a checked-in env file without editing
/// it. The `env_file` path itself is expanded from the process environment only.
///
/// The env file is parsed by `dotenvy`, which expands `$NAME` inside unquoted and double-quoted
/// values of the file itself (from earlier lines and the real process environment); single-quote
/// a value that contains a literal `$`.
///
/// Values that count as secret and are registered in [`Loaded::redactor`]: every value of the
/// env file, the `app.env` values named in `app.secret_env`, the `build.args` values named in
/// `build.secret_args`, and every `notify[].url`.
///
/// Errors: [`Error::Usage`] when deploy.toml or the environment's file does not exist;
/// [`Error::Config`] with every located problem otherwise.
pub fn load(opts: &LoadOptions) -> Result<Loaded, Error> {
    let root = match opts.config_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base_bytes = crate::util::read::read_config_file(&opts.config_path).map_err(|e| {
        let shown = display_path(&opts.config_path);
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Usage(format!(
                "no configuration file: {shown} does not exist\n  hint: run `deployctl init` to create one, or pass --config PATH"
            ))
        } else {
            Error::Usage(format!("cannot read {shown}: {e}"))
        }
    })?;
    let env = opts.env.as_str();
    if !valid_environment_name(env) {
        return Err(Error::Usage(format!(
            "invalid environment name `{env}`\n  hint: environment names are letters, digits, `-`, `_` and `.`, such as `production`"
        )));
    }
    let overlay_path = root.join("environments").join(format!("{env}.toml"));
    let overlay_bytes = match crate::util::read::read_config_file(&overlay_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let existing = list_environments(&root);
            let hint = if existing.is_empty() {
                format!(
                    "no environment is defined yet: create {}",
                    display_path(&overlay_path)
                )
            } else {
                format!("existing environments: {}", existing.join(", "))
            };
            return Err(Error::Usage(format!(
                "unknown environment `{env}`: {} does not exist\n  hint: {hint}",
                display_path(&overlay_path)
            )));
        }
        Err(e) => {
            return Err(Error::Usage(format!(
                "cannot read {}: {e}",
                display_path(&overlay_path)
            )));
        }
    };

    let mut sources = Vec::new();
    let mut syntax_errors = Vec::new();
    for (path, bytes) in [
        (&opts.config_path, base_bytes),
        (&overlay_path, overlay_bytes),
    ] {
        let (source, utf8_error) = decode(display_path(path), bytes);
        sources.push(source);
        if let Some(offset) = utf8_error {
            let loc = Loc {
                file: sources.len() - 1,
                offset: Some(offset),
            };
            syntax_errors.push(tree::make_error(
                &sources,
                loc,
                "",
                "the file is not valid UTF-8".to_owned(),
                None,
            ));
        }
    }
    let mut trees = Vec::new();
    for file in 0..sources.len() {
        if syntax_errors
            .iter()
            .any(|e| e.file == sources[file].display)
        {
            continue;
        }
        match tree::parse(&sources, file) {
            Ok(t) => trees.push(t),
            Err(e) => syntax_errors.push(e),
        }
    }
    if !syntax_errors.is_empty() {
        return Err(finish_errors(&sources, syntax_errors, &Redactor::new()));
    }
    let mut trees = trees.into_iter();
    let (Some(mut root_node), Some(overlay)) = (trees.next(), trees.next()) else {
        // Unreachable: both files parsed when there is no syntax error.
        return Err(Error::Usage(
            "configuration files could not be read".to_owned(),
        ));
    };
    tree::merge(&mut root_node, overlay);

    let mut warnings = Vec::new();
    let env_file = envfile::read_env_file(
        &mut root_node,
        &root,
        &opts.process_env,
        &mut sources,
        &mut warnings,
    );
    let mut errors = Errors::new(&sources);
    errors.list.extend(env_file.errors);

    let lookup = |name: &str| {
        opts.process_env
            .get(name)
            .or_else(|| env_file.vars.get(name))
            .cloned()
    };
    interpolate_tree(
        &mut root_node,
        "",
        &lookup,
        env_file.failed,
        env_file.display.as_deref(),
        &mut errors,
    );
    let config = de::collect::<Config>(&mut root_node, &mut errors);
    let sections = validate::Sections::of(config.as_ref(), &root_node);
    validate::check(&sections, &root_node, &mut errors, &mut warnings);

    let mut redactor = Redactor::new();
    for value in env_file.vars.values() {
        redactor.add(value);
    }
    for secret in tree_secrets(&root_node) {
        redactor.add(&secret);
    }
    // SMTP passwords of email targets: read from the process environment when sent.
    for name in tree_password_envs(&root_node) {
        if let Some(password) = opts.process_env.get(&name) {
            redactor.add(password);
        }
    }
    validate::check_build_args_hold_no_secret(&sections, &root_node, &redactor, &mut errors);
    let warnings = warnings
        .iter()
        .map(|w| redactor.redact(w).into_owned())
        .collect();

    if !errors.list.is_empty() {
        let list = std::mem::take(&mut errors.list);
        return Err(finish_errors(&sources, list, &redactor));
    }
    let Some(config) = config else {
        // Unreachable: a config that does not deserialize has an error pushed above.
        let err = tree::make_error(
            &sources,
            Loc::file_level(0),
            "",
            "invalid configuration".to_owned(),
            None,
        );
        return Err(finish_errors(&sources, vec![err], &redactor));
    };
    Ok(Loaded {
        config,
        env: env.to_owned(),
        root,
        files: vec![opts.config_path.clone(), overlay_path],
        redactor,
        env_file_vars: env_file.vars,
        warnings,
    })
}

/// Sorted names of `environments/*.toml` under `root`.
pub fn list_environments(root: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(root.join("environments")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = dir
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .filter_map(|e| {
            let path = e.path();
            if path.extension()? != "toml" {
                return None;
            }
            path.file_stem()?.to_str().map(str::to_owned)
        })
        .filter(|name| valid_environment_name(name))
        .collect();
    names.sort();
    names
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("config", &self.redacted_json())
            .field("env", &self.env)
            .field("root", &self.root)
            .field("files", &self.files)
            .field("redactor", &self.redactor)
            .field(
                "env_file_vars",
                &self.env_file_vars.keys().collect::<Vec<_>>(),
            )
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl Loaded {
    /// The effective config as JSON with every secret value replaced by `"***"`: the secret
    /// fields whole, and secrets inside any other string (an env-file value interpolated into a
    /// URL, say) as substrings.
    pub fn redacted_json(&self) -> serde_json::Value {
        let mut json = serde_json::to_value(&self.config).unwrap_or(serde_json::Value::Null);
        let mask = |map: Option<&mut serde_json::Value>, names: &[String]| {
            if let Some(serde_json::Value::Object(map)) = map {
                for name in names {
                    if let Some(v) = map.get_mut(name) {
                        *v = MASK.into();
                    }
                }
            }
        };
        mask(json.pointer_mut("/app/env"), &self.config.app.secret_env);
        mask(
            json.pointer_mut("/build/args"),
            &self.config.build.secret_args,
        );
        if let Some(serde_json::Value::Array(targets)) = json.pointer_mut("/notify") {
            for t in targets {
                if let Some(url) = t.get_mut("url") {
                    *url = MASK.into();
                }
            }
        }
        redact_strings(&mut json, &self.redactor);
        json
    }
}

/// The JSON Schema of [`Config`], for editors and `deployctl config --schema`.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Config)).unwrap_or(serde_json::Value::Null)
}

fn redact_strings(v: &mut serde_json::Value, redactor: &Redactor) {
    match v {
        serde_json::Value::String(s) => {
            if let std::borrow::Cow::Owned(r) = redactor.redact(s) {
                *s = r;
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| redact_strings(v, redactor)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|v| redact_strings(v, redactor)),
        _ => {}
    }
}

/// The text of a file, and the offset of the first invalid UTF-8 byte if any.
fn decode(display: String, bytes: Vec<u8>) -> (Source, Option<usize>) {
    match String::from_utf8(bytes) {
        Ok(text) => (Source { display, text }, None),
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            (Source { display, text }, Some(offset))
        }
    }
}

/// Secret values in the (expanded) tree: `app.env` values named in `app.secret_env`,
/// `build.args` values named in `build.secret_args`, and every `notify[].url`.
fn tree_secrets(root: &Node) -> Vec<String> {
    let mut out = Vec::new();
    for (list, map) in [
        (["app", "secret_env"], ["app", "env"]),
        (["build", "secret_args"], ["build", "args"]),
    ] {
        let names = root.get(&list).and_then(Node::as_array).unwrap_or_default();
        for name in names.iter().filter_map(Node::as_str) {
            if let Some(v) = root
                .get(&map)
                .and_then(|m| m.get(&[name]))
                .and_then(Node::as_str)
            {
                out.push(v.to_owned());
            }
        }
    }
    for target in root
        .get(&["notify"])
        .and_then(Node::as_array)
        .unwrap_or_default()
    {
        if let Some(url) = target.get(&["url"]).and_then(Node::as_str) {
            out.push(url.to_owned());
        }
    }
    out
}

/// The variables named by `notify[].password_env`.
fn tree_password_envs(root: &Node) -> Vec<String> {
    let targets = root.get(&["notify"]).and_then(Node::as_array);
    targets
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t.get(&["password_env"]).and_then(Node::as_str))
        .map(str::to_owned)
        .collect()
}

/// Redacts, sorts (file order, then position) and wraps the errors.
fn finish_errors(sources: &[Source], list: Vec<ConfigError>, redactor: &Redactor) -> Error {
    let mut list: Vec<ConfigError> = list
        .into_iter()
        .map(|mut e| {
            e.message = redactor.redact(&e.message).into_owned();
            e.hint = e.hint.map(|h| redactor.redact(&h).into_owned());
            e
        })
        .collect();
    let file_rank = |file: &str| {
        sources
            .iter()
            .position(|s| s.display == file)
            .unwrap_or(usize::MAX)
    };
    list.sort_by(|a, b| {
        (file_rank(&a.file), a.line, a.col).cmp(&(file_rank(&b.file), b.line, b.col))
    });
    list.dedup();
    Error::Config(ConfigErrors(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_has_definitions() {
        let schema = json_schema();
        assert_eq!(schema["additionalProperties"], false);
        assert!(schema["$defs"]["Health"]["properties"]["timeout"].is_object());
    }
}
