//! The rules that involve more than one field, checked on the deserialized sections of the
//! [`Config`] (the rules of single values are in its types, see [`super::rules`]). Each finding
//! names the path of the value it is about, which the located tree turns into `file:line:col`; a
//! finding that depends on a value that had an error of its own (and was left out) is dropped.

use super::de::{Seg, did_you_mean, node_at, path_text, value_at};
use super::schema::{App, Build, Config, DockerConfig, Health, Notify, NotifyKind};
use super::tree::{Errors, Node, make_error};
use crate::redact::Redactor;

fn key(path: &[&str]) -> Vec<Seg> {
    path.iter().map(|k| Seg::Key((*k).to_owned())).collect()
}

/// Whether the value at `path` was written but had an error.
fn left_out(root: &Node, path: &[Seg]) -> bool {
    node_at(root, path).is_some_and(|n| n.poisoned)
}

/// The indices in the tree of the items of the list at `path` that made it into the config.
fn item_paths(root: &Node, path: &[&str]) -> Vec<Vec<Seg>> {
    let items = node_at(root, &key(path))
        .and_then(Node::as_array)
        .unwrap_or_default();
    (0..items.len())
        .filter(|&i| !items[i].poisoned)
        .map(|i| {
            let mut p = key(path);
            p.push(Seg::Index(i));
            p
        })
        .collect()
}

fn push(root: &Node, errors: &mut Errors<'_>, path: &[Seg], message: String, hint: &str) {
    if let Some(node) = node_at(root, path) {
        errors.push(node.loc, &path_text(path), message, Some(hint.to_owned()));
    }
}

/// The sections the cross-field rules read: from the config, or, when other errors keep the
/// whole config from building, each section that still deserializes on its own, so that these
/// rules are reported together with the other errors.
pub(crate) struct Sections {
    app: Option<App>,
    build: Option<Build>,
    health: Option<Health>,
    docker: Option<DockerConfig>,
    notify: Option<Vec<Notify>>,
}

impl Sections {
    pub(crate) fn of(config: Option<&Config>, root: &Node) -> Self {
        if let Some(c) = config {
            return Sections {
                app: Some(c.app.clone()),
                build: Some(c.build.clone()),
                health: Some(c.health.clone()),
                docker: Some(c.docker.clone()),
                notify: Some(c.notify.clone()),
            };
        }
        // A section that is not written takes its defaults.
        fn section<T: serde::de::DeserializeOwned + Default>(root: &Node, name: &str) -> Option<T> {
            match root.entry(name) {
                None => Some(T::default()),
                Some(_) => value_at(root, &key(&[name])),
            }
        }
        Sections {
            app: value_at(root, &key(&["app"])),
            build: section(root, "build"),
            health: section(root, "health"),
            docker: section(root, "docker"),
            notify: section(root, "notify"),
        }
    }
}

/// The cross-field rules; warnings for likely mistakes that are not errors.
pub(crate) fn check(
    sections: &Sections,
    root: &Node,
    errors: &mut Errors<'_>,
    warnings: &mut Vec<String>,
) {
    if let Some(health) = &sections.health {
        check_timeout_deadline(health, root, errors);
    }
    if let Some(build) = &sections.build {
        refuse_secret_build_args(build, root, errors);
    }
    if let Some(app) = &sections.app {
        warn_unknown_secret_names(app, root, errors, warnings);
    }
    if let Some(docker) = &sections.docker {
        check_one_kind_of_host(docker, root, errors);
    }
    if let Some(notify) = &sections.notify {
        check_notify_keys_fit_the_kind(notify, root, errors);
    }
}

/// Each `[[notify]]` has the keys of its kind, and only those: `url` for a webhook kind;
/// `smtp_url`, `from` and `to` for email, with `username_env` and `password_env` together, and
/// never over a plain connection that leaves the machine.
fn check_notify_keys_fit_the_kind(targets: &[Notify], root: &Node, errors: &mut Errors<'_>) {
    const EMAIL_KEYS: [&str; 5] = ["smtp_url", "from", "to", "username_env", "password_env"];
    for (target, item) in targets.iter().zip(item_paths(root, &["notify"])) {
        let at = |k: &str| {
            let mut p = item.clone();
            p.push(Seg::Key(k.to_owned()));
            p
        };
        let written = |k: &str| node_at(root, &at(k)).is_some();
        let missing = |errors: &mut Errors<'_>, k: &str, hint: &str| {
            if let Some(table) = node_at(root, &item).filter(|_| !written(k)) {
                let message = format!("missing required key `{k}`");
                errors.push(
                    table.loc,
                    &path_text(&at(k)),
                    message,
                    Some(hint.to_owned()),
                );
            }
        };
        if target.kind != NotifyKind::Email {
            missing(
                errors,
                "url",
                "give the webhook URL: `url = \"${SLACK_WEBHOOK_URL}\"`",
            );
            for k in EMAIL_KEYS.into_iter().filter(|k| written(k)) {
                let message = format!("`{k}` is only for email targets");
                push(
                    root,
                    errors,
                    &at(k),
                    message,
                    "remove it, or set `kind = \"email\"`",
                );
            }
            continue;
        }
        missing(
            errors,
            "smtp_url",
            "give the server: `smtp_url = \"smtps://mail.example.com\"`",
        );
        missing(
            errors,
            "from",
            "give the sender: `from = \"deploy@example.com\"`",
        );
        missing(
            errors,
            "to",
            "give the recipients: `to = [\"ops@example.com\"]`",
        );
        let no_items = node_at(root, &at("to"))
            .and_then(Node::as_array)
            .is_some_and(<[Node]>::is_empty);
        if no_items {
            push(
                root,
                errors,
                &at("to"),
                "no recipient".into(),
                "list at least one address, such as `to = [\"ops@example.com\"]`",
            );
        }
        if written("url") {
            push(
                root,
                errors,
                &at("url"),
                "`url` is for webhook targets; an email target sends through `smtp_url`".into(),
                "remove `url`, or set the webhook's kind (slack, discord or webhook)",
            );
        }
        let (user, password) = (written("username_env"), written("password_env"));
        if user != password {
            let (set, unset) = if user {
                ("username_env", "password_env")
            } else {
                ("password_env", "username_env")
            };
            push(
                root,
                errors,
                &at(set),
                format!("`{set}` is set without `{unset}`"),
                "name both variables, the user name's and the password's, or neither",
            );
        }
        let plain_remote = target
            .smtp_url
            .as_deref()
            .and_then(|u| crate::notify::SmtpUrl::parse(u).ok())
            .is_some_and(|u| u.security == crate::notify::SmtpSecurity::Plain && !u.is_loopback());
        if plain_remote && (user || password) {
            push(
                root,
                errors,
                &at("smtp_url"),
                "a plain `smtp://` connection to another host would send the password in clear"
                    .into(),
                "use `smtp+starttls://` or `smtps://` (plain `smtp://` takes credentials only on \
                 localhost)",
            );
        }
    }
}

/// `docker.host` and `docker.hosts` are exclusive: one engine or a fleet.
fn check_one_kind_of_host(docker: &DockerConfig, root: &Node, errors: &mut Errors<'_>) {
    if docker.host.is_none() || docker.hosts.is_empty() {
        return;
    }
    push(
        root,
        errors,
        &key(&["docker", "hosts"]),
        "docker.host and docker.hosts are both set".to_owned(),
        "keep one: `host` for one engine, `hosts` for a fleet (put the single host in the list)",
    );
}

/// `health.timeout` < `health.deadline`, with the defaults for whichever is not set.
fn check_timeout_deadline(health: &Health, root: &Node, errors: &mut Errors<'_>) {
    let (timeout, deadline) = (health.timeout, health.deadline);
    let (t_path, d_path) = (key(&["health", "timeout"]), key(&["health", "deadline"]));
    if timeout < deadline || left_out(root, &t_path) || left_out(root, &d_path) {
        return;
    }
    let path = if node_at(root, &t_path).is_some() {
        t_path
    } else {
        d_path
    };
    push(
        root,
        errors,
        &path,
        format!("health.timeout ({timeout}) must be shorter than health.deadline ({deadline})"),
        "one check must fit in the overall deadline: lower `timeout` or raise `deadline`",
    );
}

/// `build.secret_args` is refused: the classic builder (the only one reachable through the
/// Engine API without a BuildKit session) records build-arg values in the image history, so a
/// value called secret would be baked into every image (`docker history --no-trunc`).
fn refuse_secret_build_args(build: &Build, root: &Node, errors: &mut Errors<'_>) {
    let paths = item_paths(root, &["build", "secret_args"]);
    for (name, path) in build.secret_args.iter().zip(paths) {
        push(
            root,
            errors,
            &path,
            format!(
                "secret build arguments are not supported: the Docker builder records build-arg \
                 values in the image history (`docker history --no-trunc` shows `{name}` after \
                 any RUN step), so the secret would be baked into the image"
            ),
            "remove it from `build.secret_args` and keep the secret out of the build: give it \
             to the app at run time with `app.env` + `app.secret_env`, or fetch what needs it \
             in a `hooks.pre_build` command (which gets the process environment) and COPY the \
             result",
        );
    }
}

/// A `build.args` value that holds a secret (from the env file, or another secret value) is
/// refused for the same reason as `build.secret_args`: it would be baked into the image history.
pub(crate) fn check_build_args_hold_no_secret(
    sections: &Sections,
    root: &Node,
    redactor: &Redactor,
    errors: &mut Errors<'_>,
) {
    let Some(build) = &sections.build else {
        return;
    };
    for (name, value) in &build.args {
        if redactor.redact(value) == value.as_str() {
            continue;
        }
        push(
            root,
            errors,
            &key(&["build", "args", name]),
            "this build argument holds a secret value (from the env file or another secret), and \
             the Docker builder records build-arg values in the image history (`docker history \
             --no-trunc`), so the secret would be baked into the image"
                .to_owned(),
            "keep the secret out of the build: give it to the app at run time with `app.env` \
             + `app.secret_env`, or fetch what needs it in a `hooks.pre_build` command and COPY \
             the result",
        );
    }
}

/// A name in `app.secret_env` that is not a key of `app.env` protects nothing: most often a
/// typo. A warning, since an environment may legitimately not set every variable.
fn warn_unknown_secret_names(
    app: &App,
    root: &Node,
    errors: &Errors<'_>,
    warnings: &mut Vec<String>,
) {
    let keys: Vec<&str> = app.env.keys().map(String::as_str).collect();
    let paths = item_paths(root, &["app", "secret_env"]);
    for (name, path) in app.secret_env.iter().zip(paths) {
        let Some(node) = node_at(root, &path).filter(|_| !keys.contains(&name.as_str())) else {
            continue;
        };
        let at = make_error(errors.sources, node.loc, "", String::new(), None);
        let suggestion = did_you_mean(name, &keys)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        warnings.push(format!(
            "{}:{}:{}: `app.secret_env` names `{name}`, which is not set in `app.env`{suggestion}",
            at.file, at.line, at.col,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::super::de::did_you_mean;
    use super::super::load::{LoadOptions, load};
    use crate::error::Error;

    /// (line, col, key) of every error of a deploy.toml (with an empty overlay).
    fn errors_of(toml: &str) -> Vec<(usize, usize, String)> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("environments")).unwrap();
        std::fs::write(dir.path().join("environments/production.toml"), "").unwrap();
        std::fs::write(dir.path().join("deploy.toml"), toml).unwrap();
        let opts = LoadOptions {
            config_path: dir.path().join("deploy.toml"),
            env: "production".into(),
            process_env: Default::default(),
        };
        match load(&opts) {
            Err(Error::Config(errs)) => {
                errs.0.into_iter().map(|e| (e.line, e.col, e.key)).collect()
            }
            other => panic!("expected config errors, got {other:?}"),
        }
    }

    #[test]
    fn cross_field_rules_are_reported_with_errors_elsewhere() {
        let toml =
            "[health]\ntimeout = \"9s\"\ndeadline = \"5s\"\n[build]\nsecret_args = [\"T\"]\n";
        let keys = |errors: Vec<(usize, usize, String)>| -> Vec<String> {
            errors.into_iter().map(|e| e.2).collect()
        };
        // No `[app]`: the config does not build, the sections still do.
        assert_eq!(
            keys(errors_of(toml)),
            ["app", "health.timeout", "build.secret_args[0]"]
        );
        // The same with an error inside `[app]`.
        let with_app = format!("[app]\nname = \"Web\"\n{toml}");
        assert_eq!(
            errors_of(&with_app),
            [
                (2, 8, "app.name".to_owned()),
                (4, 11, "health.timeout".to_owned()),
                (7, 16, "build.secret_args[0]".to_owned()),
            ]
        );
        // A section with an error of its own is not checked again.
        let zero = "[app]\nname = \"web\"\n[health]\ntimeout = \"0s\"\ndeadline = \"x\"\n";
        assert_eq!(keys(errors_of(zero)), ["health.timeout", "health.deadline"]);
    }

    #[test]
    fn one_engine_or_a_fleet_never_both() {
        let toml = "[app]\nname = \"web\"\n[docker]\nhost = \"ssh://a\"\nhosts = [\"ssh://b\", \"ssh://c\"]\n";
        assert_eq!(errors_of(toml), [(5, 9, "docker.hosts".to_owned())]);
        let twice = "[app]\nname = \"web\"\n[docker]\nhosts = [\"ssh://b\", \"ssh://b\"]\n";
        assert_eq!(errors_of(twice).len(), 1);
        let bad = "[app]\nname = \"web\"\n[docker]\nhosts = [\"web1\"]\n";
        assert_eq!(errors_of(bad), [(4, 10, "docker.hosts[0]".to_owned())]);
        let zero = "[app]\nname = \"web\"\n[deploy]\nparallel = 0\n";
        assert_eq!(errors_of(zero), [(4, 12, "deploy.parallel".to_owned())]);
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
