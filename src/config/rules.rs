//! The value rules of single fields, as serde deserializers named on the fields of the schema
//! (`#[serde(deserialize_with = "rules::...")]`) and `Deserialize` impls of value types: the
//! types say what is valid, and a value that breaks a rule fails to deserialize with a message
//! and a hint, located by [`super::de`]. Rules that involve several fields are in
//! [`super::validate`].

use std::collections::BTreeMap;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use super::de::{HINT, invalid};
use super::schema::{CommandSpec, CommandTable};
use super::units::{DURATION_HINT, Duration};

/// A rule: Ok, or the message and hint of why not.
type Rule<T> = fn(&T) -> Result<(), (String, Option<&'static str>)>;

fn fail<E: de::Error>((message, hint): (String, Option<&'static str>)) -> E {
    match hint {
        Some(hint) => invalid(message, hint),
        None => E::custom(message),
    }
}

/// Deserializes a `T` and applies `rule` to it.
fn checked<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    rule: Rule<T>,
) -> Result<T, D::Error> {
    let value = T::deserialize(d)?;
    rule(&value).map_err(fail)?;
    Ok(value)
}

/// Deserializes an optional `T` and applies `rule` to it when present.
fn optional<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    rule: Rule<T>,
) -> Result<Option<T>, D::Error> {
    let value = Option::<T>::deserialize(d)?;
    if let Some(v) = &value {
        rule(v).map_err(fail)?;
    }
    Ok(value)
}

/// Deserializes a list, applying `rule` to each item (so an error points at the item).
fn each<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    rule: Rule<T>,
) -> Result<Vec<T>, D::Error> {
    struct Item<T>(T);
    struct Seed<T>(Rule<T>);
    impl<'de, T: Deserialize<'de>> de::DeserializeSeed<'de> for Seed<T> {
        type Value = Item<T>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Item<T>, D::Error> {
            checked(d, self.0).map(Item)
        }
    }
    struct V<T>(Rule<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(Item(v)) = seq.next_element_seed(Seed(self.0))? {
                out.push(v);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(V(rule))
}

const PORT_HINT: &str = "a port is a number from 1 to 65535";

fn port_rule(n: &i64) -> Result<(), (String, Option<&'static str>)> {
    if (1..=65535).contains(n) {
        Ok(())
    } else {
        Err((format!("invalid port {n}"), Some(PORT_HINT)))
    }
}

/// A TCP port: 1 to 65535.
pub(crate) fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    checked(d, port_rule).map(|n| n as u16)
}

pub(crate) fn opt_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    optional(d, port_rule).map(|n| n.map(|n| n as u16))
}

/// A count that must be at least 1 (thresholds, releases kept, connections).
pub(crate) fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n: i64 = checked(d, |n| match n {
        n if *n < 1 => Err((format!("must be at least 1, found {n}"), None)),
        n if *n > i64::from(u32::MAX) => Err((
            format!("{n} is out of range"),
            Some("use a number from 1 to 4294967295"),
        )),
        _ => Ok(()),
    })?;
    Ok(n as u32)
}

pub(crate) fn optional_at_least_one<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<u32>, D::Error> {
    at_least_one(d).map(Some)
}

/// `docker.hosts`: engine addresses, each written once.
pub(crate) fn docker_hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let hosts = each(d, |h: &String| {
        let scheme = h.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("ssh" | "tcp" | "unix" | "http" | "https") => Ok(()),
            _ => Err((
                format!("`{h}` is not a Docker address"),
                Some("write ssh://user@host, tcp://host:2376 or unix:///path/to/docker.sock"),
            )),
        }
    })?;
    for (i, h) in hosts.iter().enumerate() {
        if hosts[..i].contains(h) {
            return Err(serde::de::Error::custom(format!(
                "`{h}` is listed twice in docker.hosts"
            )));
        }
    }
    Ok(hosts)
}

/// A duration that must not be zero: a zero interval would spin, a zero timeout fails every
/// check, a zero deadline never waits.
pub(crate) fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    checked(d, |d: &Duration| {
        if d.get().is_zero() {
            Err(("must be greater than zero".to_owned(), Some(DURATION_HINT)))
        } else {
            Ok(())
        }
    })
}

/// A share from 0.0 to 1.0.
pub(crate) fn share<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    checked(d, |r: &f64| {
        if (0.0..=1.0).contains(r) {
            Ok(())
        } else {
            Err((
                format!("must be between 0.0 and 1.0, found {r}"),
                Some("a share: 0.01 means 1% of requests"),
            ))
        }
    })
}

pub(crate) fn app_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |s: &String| {
        if valid_app_name(s) {
            Ok(())
        } else {
            Err((
                format!("invalid app name `{s}`"),
                Some(
                    "use at most 63 lowercase letters, digits, `-`, `_` or `.`, starting with a letter or digit",
                ),
            ))
        }
    })
}

pub(crate) fn public_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, |s: &String| {
        check_url(s).map_err(|reason| {
            (
                format!("invalid public URL `{s}`: {reason}"),
                Some("write an http:// or https:// URL, such as `https://shop.example.com`"),
            )
        })
    })
}

/// A webhook URL: secret, so never quoted.
pub(crate) fn webhook_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, |s: &String| {
        check_url(s).map_err(|reason| {
            (
                format!("invalid webhook URL: {reason}"),
                Some("write an http:// or https:// URL"),
            )
        })
    })
}

/// An SMTP server: `smtp://`, `smtp+starttls://` or `smtps://`, host and optional port, nothing
/// else. Not quoted: a URL with a password in it is refused, not printed.
pub(crate) fn smtp_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, |s: &String| {
        crate::notify::SmtpUrl::parse(s)
            .map(|_| ())
            .map_err(|(message, hint)| (format!("invalid SMTP URL: {message}"), Some(hint)))
    })
}

const MAILBOX_HINT: &str =
    "write an address such as `deploy@example.com` or `Deploy Bot <deploy@example.com>`";

fn mailbox_rule(s: &String) -> Result<(), (String, Option<&'static str>)> {
    s.parse::<lettre::message::Mailbox>()
        .map(|_| ())
        // The parser's own words say nothing more ("Invalid input").
        .map_err(|_| (format!("`{s}` is not an email address"), Some(MAILBOX_HINT)))
}

/// An email address, with an optional display name.
pub(crate) fn mailbox<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, mailbox_rule)
}

/// A list of email addresses (each error points at its item; an empty list is refused by
/// `validate.rs`, which sees the items left out).
pub(crate) fn mailboxes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    each(d, mailbox_rule)
}

/// The name of an environment variable: letters, digits and `_`, not starting with a digit.
pub(crate) fn opt_env_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, |name: &String| {
        if crate::util::valid_env_var_name(name) {
            Ok(())
        } else {
            Err((
                // Not quoted: it may be the secret itself, written where its name belongs.
                "invalid environment variable name".to_owned(),
                Some(
                    "name the variable that holds the value (letters, digits and `_`), such as `SMTP_PASSWORD`; never the value itself",
                ),
            ))
        }
    })
}

pub(crate) fn registry_server<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, |s: &String| {
        if s.is_empty()
            || s.contains("://")
            || s.contains('/')
            || s.chars().any(char::is_whitespace)
        {
            Err((
                format!("`{s}` is not a registry address"),
                Some(
                    "write the host and optional port only, such as `registry.example.com` or `127.0.0.1:5000`",
                ),
            ))
        } else {
            Ok(())
        }
    })
}

pub(crate) fn repository<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, |s: &String| {
        if valid_repository(s) {
            Ok(())
        } else {
            Err((
                format!("`{s}` is not a repository name"),
                Some(
                    "lowercase letters, digits and `._-`, in `/`-separated parts, such as `team/web`",
                ),
            ))
        }
    })
}

/// The health check's path: starts with `/` and can go on a request line as it is.
pub(crate) fn health_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if !s.starts_with('/') {
        return Err(invalid(
            format_args!("`{s}` does not start with `/`"),
            format_args!("write `/{}`", s.trim_start_matches('/')),
        ));
    }
    if let Err(reason) = check_url_path(&s) {
        return Err(invalid(
            format_args!("{s:?} is not a valid URL path: {reason}"),
            "percent-encode such characters, such as `%20` for a space",
        ));
    }
    Ok(s)
}

pub(crate) fn status_codes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    let codes: Vec<i64> = each(d, |n| {
        if (100..=599).contains(n) {
            Ok(())
        } else {
            Err((
                format!("{n} is not an HTTP status code"),
                Some("use codes from 100 to 599"),
            ))
        }
    })?;
    Ok(codes.into_iter().map(|n| n as u16).collect())
}

pub(crate) fn json_pointer<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() || s.starts_with('/') {
        return Ok(s);
    }
    Err(invalid(
        format_args!("`{s}` is not a JSON pointer"),
        format_args!("a JSON pointer is empty or starts with `/`, such as `/{s}`"),
    ))
}

pub(crate) fn docker_cmd<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    optional(d, |argv: &Vec<String>| {
        if argv.is_empty() {
            Err((
                "empty command".to_owned(),
                Some("give the argv, such as `[\"/app\", \"--check\"]`"),
            ))
        } else {
            Ok(())
        }
    })
}

pub(crate) fn branch_globs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    each(d, |glob: &String| {
        globset::Glob::new(glob).map(|_| ()).map_err(|e| {
            (
                format!("invalid branch pattern `{glob}`: {}", e.kind()),
                Some("write a branch name or a glob such as `release/*`"),
            )
        })
    })
}

pub(crate) fn version_req<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    optional(d, |req: &String| {
        semver::VersionReq::parse(req).map(|_| ()).map_err(|e| {
            (
                format!("invalid version requirement `{req}`: {e}"),
                Some("write a semver requirement such as `>= 18.17.0` or `^1.2`"),
            )
        })
    })
}

pub(crate) fn tool_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(d, |name: &String| {
        if name.trim().is_empty() {
            Err(("empty tool name".to_owned(), None))
        } else {
            Ok(())
        }
    })
}

/// Environment variables: names of letters, digits and `_`, not starting with a digit.
pub(crate) fn env_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct Name(String);
    impl<'de> Deserialize<'de> for Name {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
            let name = String::deserialize(d)?;
            if crate::util::valid_env_var_name(&name) {
                Ok(Name(name))
            } else {
                Err(invalid(
                    format_args!("invalid environment variable name `{name}`"),
                    "use letters, digits and `_`, not starting with a digit",
                ))
            }
        }
    }
    impl Ord for Name {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            self.0.cmp(&other.0)
        }
    }
    impl PartialOrd for Name {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl PartialEq for Name {
        fn eq(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }
    impl Eq for Name {}
    let map = BTreeMap::<Name, String>::deserialize(d)?;
    Ok(map.into_iter().map(|(k, v)| (k.0, v)).collect())
}

const COMMAND_HINT: &str = "write an argv array such as `[\"npm\", \"test\"]`, a command line, or `{ run = \"...\", shell = true }`";

/// A command: an argv array, a command line split into words, or a `{ run, shell }` table;
/// never empty.
impl<'de> Deserialize<'de> for CommandSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn empty<E: de::Error>() -> E {
            invalid("empty command", COMMAND_HINT)
        }
        impl<'de> Visitor<'de> for V {
            type Value = CommandSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of strings, a string or a table")
            }
            fn visit_str<E: de::Error>(self, line: &str) -> Result<CommandSpec, E> {
                if line.trim().is_empty() {
                    return Err(empty());
                }
                match shell_words::split(line) {
                    Ok(_) => Ok(CommandSpec::Line(line.to_owned())),
                    Err(e) => Err(E::custom(format_args!(
                        "cannot split `{line}` into words: {e}{HINT}{COMMAND_HINT}"
                    ))),
                }
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<CommandSpec, A::Error> {
                let argv = Vec::<String>::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                if argv.is_empty() {
                    return Err(empty());
                }
                Ok(CommandSpec::Argv(argv))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<CommandSpec, A::Error> {
                let table = CommandTable::deserialize(de::value::MapAccessDeserializer::new(map))?;
                if table.run.trim().is_empty() {
                    return Err(empty());
                }
                Ok(CommandSpec::Table(table))
            }
        }
        d.deserialize_any(V)
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
    fn env_names() {
        assert!(crate::util::valid_env_var_name("DATABASE_URL"));
        assert!(crate::util::valid_env_var_name("_x1"));
        assert!(!crate::util::valid_env_var_name("1X"));
        assert!(!crate::util::valid_env_var_name("A-B"));
        assert!(!crate::util::valid_env_var_name(""));
    }
}
