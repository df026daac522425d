//! Validation of the merged tree: first against the JSON Schema that schemars derives from
//! `Config` (keys, types, enums, required keys), collecting every error instead of stopping at
//! the first as serde would; then the value rules the schema cannot express.

use std::net::SocketAddr;

use serde_json::Value as J;

use super::schema::{ByteSize, Duration};
use super::tree::{Entry, Errors, Loc, Node, Value, join_key};

const DURATION_HINT: &str = "write a duration like `500ms`, `2s`, `1m30s` or `1h`";
/// Integer keys that hold a TCP port: 0 is out of range too.
const PORT_KEYS: [&str; 2] = ["app.port", "health.port"];
const SIZE_HINT: &str = "write a size like `512MiB`, `2GiB` or `1GB`";

/// Schema checks. Nodes with an error are marked poisoned so the value rules skip them.
pub(crate) fn check_schema(root: &mut Node, schema: &J, errors: &mut Errors<'_>) {
    integer_listen_as_string(root);
    Walker { root: schema }.check(root, schema, "", errors);
}

/// `proxy.listen = 18090` means the same as `"18090"` (the listen checks then judge the port).
fn integer_listen_as_string(root: &mut Node) {
    let Value::Table(top) = &mut root.value else {
        return;
    };
    let Some(Value::Table(proxy)) = top
        .iter_mut()
        .find(|e| e.key == "proxy")
        .map(|e| &mut e.node.value)
    else {
        return;
    };
    if let Some(listen) = proxy.iter_mut().find(|e| e.key == "listen")
        && let Value::Integer(port) = listen.node.value
    {
        listen.node.value = Value::String(port.to_string());
    }
}

struct Walker<'s> {
    root: &'s J,
}

impl<'s> Walker<'s> {
    /// Follows `$ref`s to `#/$defs/...`; returns the definition name of the last one.
    fn resolve(&self, mut schema: &'s J) -> (&'s J, Option<&'s str>) {
        let mut name = None;
        // Bounded: a reference cycle in a broken schema must not hang the loader.
        for _ in 0..32 {
            let Some(r) = schema.get("$ref").and_then(J::as_str) else {
                break;
            };
            let def = r.strip_prefix("#/$defs/");
            match def.and_then(|d| self.root.get("$defs")?.get(d)) {
                Some(s) => {
                    name = def;
                    schema = s;
                }
                None => break,
            }
        }
        (schema, name)
    }

    fn check(&self, node: &mut Node, schema: &'s J, key: &str, errors: &mut Errors<'_>) {
        let (schema, def) = self.resolve(schema);
        if let Some(branches) = schema.get("anyOf").and_then(J::as_array) {
            self.check_any_of(node, branches, key, errors);
            return;
        }
        if !self.type_matches(node, schema) {
            let hint = match def {
                Some("Duration") => Some(format!("{DURATION_HINT}, in quotes")),
                Some("ByteSize") => Some(format!("{SIZE_HINT}, in quotes")),
                _ => unquote_hint(node, schema),
            };
            let expected = self.describe_resolved(schema, def);
            let message = format!("expected {expected}, found {}", node.kind());
            errors.push(node.loc, key, message, hint);
            node.poisoned = true;
            return;
        }
        match def {
            Some("Duration") => return check_parse::<Duration>(node, key, "duration", errors),
            Some("ByteSize") => return check_parse::<ByteSize>(node, key, "size", errors),
            _ => {}
        }
        if let Some(allowed) = schema.get("enum").and_then(J::as_array) {
            check_enum(node, allowed, key, errors);
        }
        self.check_range(node, schema, key, errors);
        match &mut node.value {
            Value::Array(items) => {
                if let Some(item_schema) = schema.get("items") {
                    for (i, item) in items.iter_mut().enumerate() {
                        self.check(item, item_schema, &format!("{key}[{i}]"), errors);
                    }
                }
            }
            Value::Table(entries) => {
                let loc = node.loc;
                self.check_table(entries, loc, schema, key, errors);
            }
            _ => {}
        }
    }

    fn check_table(
        &self,
        entries: &mut [Entry],
        loc: Loc,
        schema: &'s J,
        key: &str,
        errors: &mut Errors<'_>,
    ) {
        let props = schema.get("properties").and_then(J::as_object);
        let additional = schema.get("additionalProperties");
        for e in entries.iter_mut() {
            let child_key = join_key(key, &e.key);
            match props.and_then(|p| p.get(&e.key)) {
                Some(s) => self.check(&mut e.node, s, &child_key, errors),
                None => match additional {
                    Some(s) if s.is_object() => self.check(&mut e.node, s, &child_key, errors),
                    // `additionalProperties` absent means anything goes; schemars always
                    // writes `false` for `deny_unknown_fields`.
                    None | Some(J::Bool(true)) => {}
                    Some(_) => {
                        let known: Vec<&str> = props
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        let hint = match did_you_mean(&e.key, &known) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None if known.is_empty() => "this table takes no keys".to_owned(),
                            None => format!("valid keys here: {}", known.join(", ")),
                        };
                        errors.push(
                            e.key_loc,
                            &child_key,
                            format!("unknown key `{}`", e.key),
                            Some(hint),
                        );
                        e.node.poisoned = true;
                    }
                },
            }
        }
        for required in schema
            .get("required")
            .and_then(J::as_array)
            .into_iter()
            .flatten()
            .filter_map(J::as_str)
        {
            if !entries.iter().any(|e| e.key == required) {
                errors.push(
                    loc,
                    &join_key(key, required),
                    format!("missing required key `{required}`"),
                    None,
                );
            }
        }
    }

    /// `anyOf`: valid when one branch accepts the value. Otherwise report the errors of the
    /// branch of the value's own type (a table is checked as a table), or a type error.
    fn check_any_of(&self, node: &mut Node, branches: &'s [J], key: &str, errors: &mut Errors<'_>) {
        let branches: Vec<&J> = branches
            .iter()
            .filter(|b| self.resolve(b).0.get("type").and_then(J::as_str) != Some("null"))
            .collect();
        let mut same_type = None;
        for b in &branches {
            let mut trial = node.clone();
            let mut trial_errors = Errors::new(errors.sources);
            self.check(&mut trial, b, key, &mut trial_errors);
            if trial_errors.list.is_empty() {
                *node = trial;
                return;
            }
            if same_type.is_none() && self.type_matches(node, self.resolve(b).0) {
                same_type = Some(*b);
            }
        }
        match same_type {
            Some(b) => self.check(node, b, key, errors),
            None => {
                let names: Vec<String> = branches
                    .iter()
                    .map(|b| self.describe(self.resolve(b).0))
                    .collect();
                let expected = match names.split_last() {
                    Some((last, rest)) if !rest.is_empty() => {
                        format!("{} or {last}", rest.join(", "))
                    }
                    _ => names.concat(),
                };
                errors.push(
                    node.loc,
                    key,
                    format!("expected {expected}, found {}", node.kind()),
                    None,
                );
                node.poisoned = true;
            }
        }
    }

    fn type_matches(&self, node: &Node, schema: &J) -> bool {
        type_matches(node, schema)
    }

    /// "a string", "an array of strings", "a duration such as `2s`", ...
    fn describe(&self, schema: &'s J) -> String {
        let (schema, def) = self.resolve(schema);
        self.describe_resolved(schema, def)
    }

    /// `describe` of a schema already resolved from the definition `def`.
    fn describe_resolved(&self, schema: &'s J, def: Option<&str>) -> String {
        match def {
            Some("Duration") => return "a duration string such as \"2s\"".to_owned(),
            Some("ByteSize") => return "a size string such as \"2GiB\"".to_owned(),
            _ => {}
        }
        let t = match schema.get("type") {
            Some(J::String(t)) => t.as_str(),
            Some(J::Array(ts)) => ts
                .iter()
                .filter_map(J::as_str)
                .find(|t| *t != "null")
                .unwrap_or("null"),
            _ => "",
        };
        match t {
            "string" => "a string".to_owned(),
            "integer" => "an integer".to_owned(),
            "number" => "a number".to_owned(),
            "boolean" => "a boolean (true or false)".to_owned(),
            "object" => "a table".to_owned(),
            "array" => match schema.get("items") {
                Some(items) => {
                    let inner = self.describe(items);
                    match inner
                        .strip_prefix("a ")
                        .or_else(|| inner.strip_prefix("an "))
                    {
                        Some(noun) if !noun.contains(' ') => format!("an array of {noun}s"),
                        _ => "an array".to_owned(),
                    }
                }
                None => "an array".to_owned(),
            },
            _ => "a value".to_owned(),
        }
    }

    fn check_range(&self, node: &mut Node, schema: &J, key: &str, errors: &mut Errors<'_>) {
        let Value::Integer(n) = node.value else {
            return;
        };
        // Bounds of the Rust integer type behind the field; `minimum`/`maximum` when given.
        let (mut lo, mut hi) = match schema.get("format").and_then(J::as_str) {
            Some("uint8") => (0, u8::MAX as i64),
            Some("uint16") => (0, u16::MAX as i64),
            Some("uint32") => (0, u32::MAX as i64),
            Some("uint64" | "uint") => (0, i64::MAX),
            Some("int8") => (i8::MIN as i64, i8::MAX as i64),
            Some("int16") => (i16::MIN as i64, i16::MAX as i64),
            Some("int32") => (i32::MIN as i64, i32::MAX as i64),
            _ => (i64::MIN, i64::MAX),
        };
        if let Some(min) = schema.get("minimum").and_then(J::as_i64) {
            lo = lo.max(min);
        }
        if let Some(max) = schema.get("maximum").and_then(J::as_i64) {
            hi = hi.min(max);
        }
        if PORT_KEYS.contains(&key) {
            lo = lo.max(1);
            if n < lo || n > hi {
                errors.push(
                    node.loc,
                    key,
                    format!("invalid port {n}"),
                    Some(format!("a port is a number from {lo} to {hi}")),
                );
                node.poisoned = true;
            }
        } else if n < lo || n > hi {
            errors.push(
                node.loc,
                key,
                format!("{n} is out of range"),
                Some(format!("use a number from {lo} to {hi}")),
            );
            node.poisoned = true;
        }
    }
}

/// Whether the node has one of the schema's `type`s (any type when the schema names none).
fn type_matches(node: &Node, schema: &J) -> bool {
    let matches = |t: &str| {
        matches!(
            (t, &node.value),
            ("string", Value::String(_))
                | ("integer", Value::Integer(_))
                | ("number", Value::Integer(_) | Value::Float(_))
                | ("boolean", Value::Boolean(_))
                | ("array", Value::Array(_))
                | ("object", Value::Table(_))
        )
    };
    match schema.get("type") {
        Some(J::String(t)) => matches(t),
        Some(J::Array(ts)) => ts.iter().filter_map(J::as_str).any(matches),
        _ => true,
    }
}

/// `port = "8080"` where a number is expected: suggest dropping the quotes.
fn unquote_hint(node: &Node, schema: &J) -> Option<String> {
    let s = node.as_str()?.trim();
    let parsed = Node::new(
        if let Ok(i) = s.parse::<i64>() {
            Value::Integer(i)
        } else if let Ok(f) = s.parse::<f64>() {
            Value::Float(f)
        } else if let Ok(b) = s.parse::<bool>() {
            Value::Boolean(b)
        } else {
            return None;
        },
        node.loc,
    );
    type_matches(&parsed, schema).then(|| format!("remove the quotes: `{s}`"))
}

fn check_parse<T: std::str::FromStr>(
    node: &mut Node,
    key: &str,
    what: &str,
    errors: &mut Errors<'_>,
) {
    let Some(s) = node.as_str() else { return };
    if node.poisoned || s.parse::<T>().is_ok() {
        return;
    }
    let (message, hint) = if what == "duration" {
        let reason = match humantime::parse_duration(s.trim()) {
            Err(e) => format!(": {e}"),
            Ok(_) => format!(": {}", Duration::too_long()),
        };
        (format!("invalid duration `{s}`{reason}"), DURATION_HINT)
    } else {
        (format!("invalid size `{s}`"), SIZE_HINT)
    };
    errors.push(node.loc, key, message, Some(hint.to_owned()));
    node.poisoned = true;
}

fn check_enum(node: &mut Node, allowed: &[J], key: &str, errors: &mut Errors<'_>) {
    let names: Vec<&str> = allowed.iter().filter_map(J::as_str).collect();
    let Some(s) = node.as_str() else { return };
    if node.poisoned || names.contains(&s) {
        return;
    }
    let hint = match did_you_mean(s, &names) {
        Some(best) => format!("did you mean `{best}`? valid values: {}", names.join(", ")),
        None => format!("valid values: {}", names.join(", ")),
    };
    errors.push(node.loc, key, format!("invalid value `{s}`"), Some(hint));
    node.poisoned = true;
}

/// The closest candidate, when close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(word, c), *c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The rules the schema cannot express. Runs on the schema-checked tree; skips poisoned values.
pub(crate) fn check_values(root: &Node, errors: &mut Errors<'_>, warnings: &mut Vec<String>) {
    let v = Values { root };
    let get = |path: &[&str]| v.get(path);

    if let Some((node, s)) = v.string(&["app", "name"])
        && !valid_app_name(s)
    {
        let hint = "use at most 63 lowercase letters, digits, `-`, `_` or `.`, starting with a letter or digit";
        errors.push(
            node.loc,
            "app.name",
            format!("invalid app name `{s}`"),
            Some(hint.to_owned()),
        );
    }
    if let Some((node, s)) = v.string(&["proxy", "listen"])
        && let Err(reason) = check_listen(s)
    {
        errors.push(
            node.loc,
            "proxy.listen",
            format!("invalid listen address `{s}`: {reason}"),
            Some("write `PORT` or `IP:PORT`, such as `80` or `0.0.0.0:443`".to_owned()),
        );
    }
    if let Some((node, s)) = v.string(&["proxy", "public_url"])
        && let Err(reason) = check_url(s)
    {
        errors.push(
            node.loc,
            "proxy.public_url",
            format!("invalid public URL `{s}`: {reason}"),
            Some("write an http:// or https:// URL, such as `https://shop.example.com`".to_owned()),
        );
    }
    for path in [
        &["health", "healthy_threshold"][..],
        &["health", "unhealthy_threshold"],
        &["deploy", "keep_releases"],
        &["proxy", "max_connections"],
    ] {
        if let Some((node, n)) = v.int(path)
            && n < 1
        {
            errors.push(
                node.loc,
                &path.join("."),
                format!("must be at least 1, found {n}"),
                None,
            );
        }
    }
    // A zero interval would spin, a zero timeout fails every check, a zero deadline never waits.
    for key in ["interval", "timeout", "deadline"] {
        if let Some((node, d)) = v.duration(&["health", key])
            && d.get().is_zero()
        {
            errors.push(
                node.loc,
                &format!("health.{key}"),
                "must be greater than zero".to_owned(),
                Some(DURATION_HINT.to_owned()),
            );
        }
    }
    for path in [
        &["proxy", "idle_timeout"][..],
        &["proxy", "header_read_timeout"],
    ] {
        if let Some((node, d)) = v.duration(path)
            && d.get().is_zero()
        {
            errors.push(
                node.loc,
                &path.join("."),
                "must be greater than zero".to_owned(),
                Some(DURATION_HINT.to_owned()),
            );
        }
    }
    check_timeout_deadline(&v, errors);
    if let Some(node) = get(&["verify", "max_error_rate"]) {
        let rate = match node.value {
            Value::Float(f) => Some(f),
            Value::Integer(i) => Some(i as f64),
            _ => None,
        };
        if let Some(rate) = rate.filter(|r| !(0.0..=1.0).contains(r)) {
            errors.push(
                node.loc,
                "verify.max_error_rate",
                format!("must be between 0.0 and 1.0, found {rate}"),
                Some("a share: 0.01 means 1% of requests".to_owned()),
            );
        }
    }
    if let Some((node, s)) = v.string(&["registry", "server"])
        && (s.is_empty()
            || s.contains("://")
            || s.contains('/')
            || s.chars().any(char::is_whitespace))
    {
        errors.push(
            node.loc,
            "registry.server",
            format!("`{s}` is not a registry address"),
            Some("write the host and optional port only, such as `registry.example.com` or `127.0.0.1:5000`".to_owned()),
        );
    }
    if let Some((node, s)) = v.string(&["registry", "repository"])
        && !valid_repository(s)
    {
        errors.push(
            node.loc,
            "registry.repository",
            format!("`{s}` is not a repository name"),
            Some(
                "lowercase letters, digits and `._-`, in `/`-separated parts, such as `team/web`"
                    .to_owned(),
            ),
        );
    }
    if let Some((node, s)) = v.string(&["health", "path"]) {
        if !s.starts_with('/') {
            errors.push(
                node.loc,
                "health.path",
                format!("`{s}` does not start with `/`"),
                Some(format!("write `/{}`", s.trim_start_matches('/'))),
            );
        } else if let Err(reason) = check_url_path(s) {
            errors.push(
                node.loc,
                "health.path",
                format!("{s:?} is not a valid URL path: {reason}"),
                Some("percent-encode such characters, such as `%20` for a space".to_owned()),
            );
        }
    }
    for (i, item) in v.array(&["health", "expect_status"]) {
        if let Some(n) = v.int_of(item)
            && !(100..=599).contains(&n)
        {
            errors.push(
                item.loc,
                &format!("health.expect_status[{i}]"),
                format!("{n} is not an HTTP status code"),
                Some("use codes from 100 to 599".to_owned()),
            );
        }
    }
    if let Some((node, s)) = v.string(&["health", "expect_json", "pointer"])
        && !(s.is_empty() || s.starts_with('/'))
    {
        errors.push(
            node.loc,
            "health.expect_json.pointer",
            format!("`{s}` is not a JSON pointer"),
            Some(format!(
                "a JSON pointer is empty or starts with `/`, such as `/{s}`"
            )),
        );
    }
    if let Some(node) = get(&["health", "docker_cmd"])
        && node.as_array().is_some_and(<[Node]>::is_empty)
        && !node.poisoned
    {
        errors.push(
            node.loc,
            "health.docker_cmd",
            "empty command".to_owned(),
            Some("give the argv, such as `[\"/app\", \"--check\"]`".to_owned()),
        );
    }
    for (i, item) in v.array(&["notify"]) {
        let key = format!("notify[{i}].url");
        if let Some((node, url)) = v.string_of(item.get(&["url"]))
            && let Err(reason) = check_url(url)
        {
            // The URL is secret: never quote it.
            errors.push(
                node.loc,
                &key,
                format!("invalid webhook URL: {reason}"),
                Some("write an http:// or https:// URL".to_owned()),
            );
        }
    }
    for (i, item) in v.array(&["git", "branches"]) {
        if let Some((node, glob)) = v.string_of(Some(item))
            && let Err(e) = globset::Glob::new(glob)
        {
            errors.push(
                node.loc,
                &format!("git.branches[{i}]"),
                format!("invalid branch pattern `{glob}`: {}", e.kind()),
                Some("write a branch name or a glob such as `release/*`".to_owned()),
            );
        }
    }
    for (i, tool) in v.array(&["prerequisites", "tools"]) {
        if let Some((node, req)) = v.string_of(tool.get(&["version"]))
            && let Err(e) = semver::VersionReq::parse(req)
        {
            errors.push(
                node.loc,
                &format!("prerequisites.tools[{i}].version"),
                format!("invalid version requirement `{req}`: {e}"),
                Some("write a semver requirement such as `>= 18.17.0` or `^1.2`".to_owned()),
            );
        }
        if let Some((node, name)) = v.string_of(tool.get(&["name"]))
            && name.trim().is_empty()
        {
            errors.push(
                node.loc,
                &format!("prerequisites.tools[{i}].name"),
                "empty tool name".to_owned(),
                None,
            );
        }
    }
    if let Some(entries) = get(&["app", "env"]).and_then(Node::entries) {
        for e in entries {
            if !crate::util::valid_env_var_name(&e.key) {
                errors.push(
                    e.key_loc,
                    &join_key("app.env", &e.key),
                    format!("invalid environment variable name `{}`", e.key),
                    Some("use letters, digits and `_`, not starting with a digit".to_owned()),
                );
            }
        }
    }
    for name in [
        "pre_build",
        "pre_deploy",
        "post_deploy",
        "on_failure",
        "on_rollback",
    ] {
        check_commands(&v, &["hooks", name], errors);
    }
    check_commands(&v, &["test", "commands"], errors);
    warn_unknown_secret_names(
        &v,
        &["app", "secret_env"],
        &["app", "env"],
        warnings,
        errors,
    );
    refuse_secret_build_args(&v, errors);
}

/// A `build.args` value that holds a secret (from the env file, or another secret value) is
/// refused for the same reason as `build.secret_args`: it would be baked into the image history.
pub(crate) fn check_build_args_hold_no_secret(
    root: &Node,
    redactor: &crate::redact::Redactor,
    errors: &mut Errors<'_>,
) {
    let entries = root.get(&["build", "args"]).and_then(Node::entries);
    for e in entries.unwrap_or_default() {
        let Some(value) = e.node.as_str() else {
            continue;
        };
        if redactor.redact(value) == value {
            continue;
        }
        errors.push(
            e.node.loc,
            &join_key("build.args", &e.key),
            "this build argument holds a secret value (from the env file or another secret), and \
             the Docker builder records build-arg values in the image history (`docker history \
             --no-trunc`), so the secret would be baked into the image"
                .to_owned(),
            Some(
                "keep the secret out of the build: give it to the app at run time with `app.env` \
                 + `app.secret_env`, or fetch what needs it in a `hooks.pre_build` command and COPY \
                 the result"
                    .to_owned(),
            ),
        );
    }
}

/// `build.secret_args` is refused: the classic builder (the only one reachable through the
/// Engine API without a BuildKit session) records build-arg values in the image history, so a
/// value called secret would be baked into every image (`docker history --no-trunc`).
fn refuse_secret_build_args(v: &Values<'_>, errors: &mut Errors<'_>) {
    for (i, item) in v.array(&["build", "secret_args"]) {
        let name = item.as_str().unwrap_or("?");
        errors.push(
            item.loc,
            &format!("build.secret_args[{i}]"),
            format!(
                "secret build arguments are not supported: the Docker builder records build-arg \
                 values in the image history (`docker history --no-trunc` shows `{name}` after \
                 any RUN step), so the secret would be baked into the image"
            ),
            Some(
                "remove it from `build.secret_args` and keep the secret out of the build: give it \
                 to the app at run time with `app.env` + `app.secret_env`, or fetch what needs it \
                 in a `hooks.pre_build` command (which gets the process environment) and COPY the \
                 result"
                    .to_owned(),
            ),
        );
    }
}

/// Read access to healthy (not poisoned) values.
struct Values<'a> {
    root: &'a Node,
}

impl<'a> Values<'a> {
    fn get(&self, path: &[&str]) -> Option<&'a Node> {
        self.root.get(path).filter(|n| !n.poisoned)
    }
    fn string(&self, path: &[&str]) -> Option<(&'a Node, &'a str)> {
        self.string_of(self.get(path))
    }
    fn string_of(&self, node: Option<&'a Node>) -> Option<(&'a Node, &'a str)> {
        let node = node.filter(|n| !n.poisoned)?;
        Some((node, node.as_str()?))
    }
    fn int(&self, path: &[&str]) -> Option<(&'a Node, i64)> {
        let node = self.get(path)?;
        Some((node, self.int_of(node)?))
    }
    fn int_of(&self, node: &Node) -> Option<i64> {
        match node.value {
            Value::Integer(n) if !node.poisoned => Some(n),
            _ => None,
        }
    }
    fn duration(&self, path: &[&str]) -> Option<(&'a Node, Duration)> {
        let (node, s) = self.string(path)?;
        Some((node, s.parse().ok()?))
    }
    fn array(&self, path: &[&str]) -> impl Iterator<Item = (usize, &'a Node)> {
        self.get(path)
            .and_then(Node::as_array)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.poisoned)
    }
}

/// A path (and query) that can go on an HTTP request line as it is.
fn check_url_path(s: &str) -> Result<(), String> {
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("it contains {c:?}"));
    }
    s.parse::<hyper::http::uri::PathAndQuery>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// `health.timeout` < `health.deadline`, with the defaults for whichever is not set.
fn check_timeout_deadline(v: &Values<'_>, errors: &mut Errors<'_>) {
    let defaults = super::schema::Health::default();
    let timeout_node = v.root.get(&["health", "timeout"]);
    let deadline_node = v.root.get(&["health", "deadline"]);
    // A value that is set but invalid was reported already.
    let value_of = |node: Option<&Node>, default: Duration| match node {
        None => Some(default),
        Some(n) if n.poisoned => None,
        Some(n) => n.as_str()?.parse::<Duration>().ok(),
    };
    let (Some(timeout), Some(deadline)) = (
        value_of(timeout_node, defaults.timeout),
        value_of(deadline_node, defaults.deadline),
    ) else {
        return;
    };
    // A zero value was reported on its own.
    if timeout.get().is_zero() || deadline.get().is_zero() {
        return;
    }
    if timeout >= deadline {
        let (node, key) = match (timeout_node, deadline_node) {
            (Some(t), _) => (t, "health.timeout"),
            (None, Some(d)) => (d, "health.deadline"),
            (None, None) => return,
        };
        errors.push(
            node.loc,
            key,
            format!("health.timeout ({timeout}) must be shorter than health.deadline ({deadline})"),
            Some(
                "one check must fit in the overall deadline: lower `timeout` or raise `deadline`"
                    .to_owned(),
            ),
        );
    }
}

fn check_commands(v: &Values<'_>, path: &[&str], errors: &mut Errors<'_>) {
    for (i, cmd) in v.array(path) {
        let key = format!("{}[{i}]", path.join("."));
        let problem = match &cmd.value {
            Value::Array(argv) if argv.is_empty() => Some("empty command".to_owned()),
            Value::String(line) if line.trim().is_empty() => Some("empty command".to_owned()),
            Value::String(line) => shell_words::split(line)
                .err()
                .map(|e| format!("cannot split `{line}` into words: {e}")),
            Value::Table(_) => match cmd.get(&["run"]).and_then(Node::as_str) {
                Some(run) if run.trim().is_empty() => Some("empty command".to_owned()),
                _ => None,
            },
            _ => None,
        };
        if let Some(message) = problem {
            errors.push(
                cmd.loc,
                &key,
                message,
                Some("write an argv array such as `[\"npm\", \"test\"]`, a command line, or `{ run = \"...\", shell = true }`".to_owned()),
            );
        }
    }
}

/// A name in `secret_env` / `secret_args` that is not a key of the map protects nothing: most
/// often a typo. A warning, since an environment may legitimately not set every variable.
fn warn_unknown_secret_names(
    v: &Values<'_>,
    list: &[&str],
    map: &[&str],
    warnings: &mut Vec<String>,
    errors: &Errors<'_>,
) {
    let keys: Vec<&str> = v
        .get(map)
        .and_then(Node::entries)
        .unwrap_or_default()
        .iter()
        .map(|e| e.key.as_str())
        .collect();
    for (_, item) in v.array(list) {
        let Some(name) = item.as_str() else { continue };
        if keys.contains(&name) {
            continue;
        }
        let err = super::tree::make_error(
            errors.sources,
            item.loc,
            &list.join("."),
            String::new(),
            None,
        );
        let suggestion = did_you_mean(name, &keys)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        warnings.push(format!(
            "{}:{}:{}: `{}` names `{name}`, which is not set in `{}`{suggestion}",
            err.file,
            err.line,
            err.col,
            list.join("."),
            map.join("."),
        ));
    }
}

/// A Docker repository path: `/`-separated parts of `[a-z0-9]` joined by `.`, `_` or `-`.
fn valid_repository(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|part| {
            part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
        })
}

fn valid_app_name(s: &str) -> bool {
    let mut chars = s.chars();
    s.len() <= 63
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
}

fn check_listen(s: &str) -> Result<(), String> {
    let port = if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        s.parse::<u32>()
            .map_err(|_| "port out of range".to_owned())?
    } else {
        let addr: SocketAddr = s
            .parse()
            .map_err(|_| "not `PORT` or `IP:PORT`".to_owned())?;
        u32::from(addr.port())
    };
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port {port} is not between 1 and 65535"))
    }
}

fn check_url(s: &str) -> Result<(), String> {
    let uri: hyper::Uri = s.parse().map_err(|_| "not a URL".to_owned())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("scheme `{other}` is not http or https")),
        None => return Err("no http:// or https:// scheme".to_owned()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories() {
        assert!(valid_repository("web"));
        assert!(valid_repository("team/web-app.v2"));
        assert!(!valid_repository(""));
        assert!(!valid_repository("Team/web"));
        assert!(!valid_repository("team//web"));
        assert!(!valid_repository("web-"));
    }

    #[test]
    fn app_names() {
        assert!(valid_app_name("web"));
        assert!(valid_app_name("0x.a_b-c"));
        assert!(!valid_app_name(""));
        assert!(!valid_app_name("Web"));
        assert!(!valid_app_name("-web"));
        assert!(!valid_app_name("web app"));
        assert!(valid_app_name(&"a".repeat(63)));
        assert!(!valid_app_name(&"a".repeat(64)));
    }

    #[test]
    fn listen_addresses() {
        assert!(check_listen("80").is_ok());
        assert!(check_listen("0.0.0.0:443").is_ok());
        assert!(check_listen("[::]:8080").is_ok());
        assert!(check_listen("0").is_err());
        assert!(check_listen("65536").is_err());
        assert!(check_listen("127.0.0.1:0").is_err());
        assert!(check_listen("localhost:80").is_err());
        assert!(check_listen("").is_err());
        assert!(check_listen("99999999999999999999").is_err());
    }

    #[test]
    fn urls() {
        assert!(check_url("https://hooks.slack.com/services/T0/B0/xyz").is_ok());
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_url("ftp://x/y").is_err());
        assert!(check_url("hooks.slack.com/x").is_err());
        assert!(check_url("https://").is_err());
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn health_paths() {
        assert!(check_url_path("/health").is_ok());
        assert!(check_url_path("/he%20alth?full=1&x=y").is_ok());
        assert_eq!(
            check_url_path("/he alth"),
            Err("it contains ' '".to_string())
        );
        assert_eq!(
            check_url_path("/health\n"),
            Err("it contains '\\n'".to_string())
        );
        assert!(check_url_path("/a\u{7f}").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("timout", &["timeout", "interval", "deadline"]),
            Some("timeout")
        );
        assert_eq!(did_you_mean("zzz", &["timeout", "interval"]), None);
    }
}
