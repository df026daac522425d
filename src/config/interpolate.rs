//! `${VAR}` / `${VAR:-default}` expansion in string values.
//!
//! Syntax: `${NAME}` is the value of NAME, an error when NAME is unset. `${NAME:-default}` is
//! the default when NAME is unset or empty (as in POSIX shells); the default may itself contain
//! `${...}`. `$${` is a literal `${`. A `$` not followed by `{` is literal.

use super::tree::{Errors, Loc, Node, Value, join_key};

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InterpError {
    /// Byte offsets are into the string value.
    Unset {
        name: String,
        at: usize,
    },
    Unterminated {
        at: usize,
    },
    BadName {
        name: String,
        at: usize,
    },
}

/// Expands one string. `lookup` returns the value of a variable.
pub(crate) fn expand(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpError> {
    let mut p = Parser { s, i: 0, lookup };
    p.run(true, None)
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Parser<'_> {
    /// Scans until the end, or until the `}` closing a default that began at `open`.
    /// Unset variables are errors only when `active` (a default that is not used cannot fail).
    fn run(&mut self, active: bool, open: Option<usize>) -> Result<String, InterpError> {
        let mut out = String::new();
        while let Some(c) = self.s[self.i..].chars().next() {
            let rest = &self.s[self.i..];
            if rest.starts_with("$${") {
                out.push_str("${");
                self.i += 3;
            } else if rest.starts_with("${") {
                out.push_str(&self.variable(active)?);
            } else if c == '}' && open.is_some() {
                self.i += 1;
                return Ok(out);
            } else {
                out.push(c);
                self.i += c.len_utf8();
            }
        }
        match open {
            Some(at) => Err(InterpError::Unterminated { at }),
            None => Ok(out),
        }
    }

    /// At `${`: reads `NAME}` or `NAME:-default}`.
    fn variable(&mut self, active: bool) -> Result<String, InterpError> {
        let start = self.i;
        self.i += 2;
        let name_len = self.s[self.i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.s.len() - self.i);
        let name = &self.s[self.i..self.i + name_len];
        self.i += name_len;
        let rest = &self.s[self.i..];
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if rest.is_empty() {
            return Err(InterpError::Unterminated { at: start });
        }
        if !valid || !(rest.starts_with('}') || rest.starts_with(":-")) {
            // Show what was written up to the next `}` (or the end) to make the message useful.
            let shown_end = self.s[start..]
                .find('}')
                .map_or(self.s.len(), |e| start + e + 1);
            if !self.s[start..].contains('}') {
                return Err(InterpError::Unterminated { at: start });
            }
            return Err(InterpError::BadName {
                name: self.s[start..shown_end].to_owned(),
                at: start,
            });
        }
        let value = (self.lookup)(name);
        if rest.starts_with('}') {
            self.i += 1;
            return match value {
                Some(v) => Ok(v),
                None if active => Err(InterpError::Unset {
                    name: name.to_owned(),
                    at: start,
                }),
                None => Ok(String::new()),
            };
        }
        self.i += 2;
        let use_default = value.as_deref().is_none_or(str::is_empty);
        let default = self.run(active && use_default, Some(start))?;
        Ok(if use_default {
            default
        } else {
            value.unwrap_or_default()
        })
    }
}

/// Where a string's content starts in the source, when offsets inside the value map one to one
/// onto the source (a one-line string without escapes); otherwise errors point at the value.
fn content_start(text: &str, value_start: usize) -> Option<usize> {
    let raw = text.get(value_start..)?;
    if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
        return None;
    }
    if raw.starts_with('\'') {
        return Some(value_start + 1);
    }
    if let Some(body) = raw.strip_prefix('"') {
        let end = body.find(['"', '\\'])?;
        return (body.as_bytes()[end] == b'"').then_some(value_start + 1);
    }
    None
}

/// Expands every not yet expanded string in the tree, in place. Failed values are reported,
/// keep their raw text and are marked poisoned. `silence_unset` suppresses "not set" errors
/// (used when the env file that may define them could not be read: that error is reported).
pub(crate) fn interpolate_tree(
    node: &mut Node,
    key: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    silence_unset: bool,
    env_file_hint: Option<&str>,
    errors: &mut Errors<'_>,
) {
    match &mut node.value {
        Value::String(s) if !node.interpolated => {
            node.interpolated = true;
            match expand(s, lookup) {
                Ok(v) => *s = v,
                Err(e) => {
                    node.poisoned = true;
                    let (at, message, hint) = describe(&e, env_file_hint);
                    if silence_unset && matches!(e, InterpError::Unset { .. }) {
                        return;
                    }
                    let source = &errors.sources[node.loc.file].text;
                    let offset = node.loc.offset.map(|start| {
                        content_start(source, start).map_or(start, |content| content + at)
                    });
                    let loc = Loc {
                        file: node.loc.file,
                        offset,
                    };
                    errors.push(loc, key, message, Some(hint));
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let key = format!("{key}[{i}]");
                interpolate_tree(item, &key, lookup, silence_unset, env_file_hint, errors);
            }
        }
        Value::Table(entries) => {
            for e in entries {
                let key = join_key(key, &e.key);
                interpolate_tree(
                    &mut e.node,
                    &key,
                    lookup,
                    silence_unset,
                    env_file_hint,
                    errors,
                );
            }
        }
        _ => {}
    }
}

fn describe(e: &InterpError, env_file: Option<&str>) -> (usize, String, String) {
    match e {
        InterpError::Unset { name, at } => {
            let place = match env_file {
                Some(f) => format!("in the environment or in {f}"),
                None => "in the environment".to_owned(),
            };
            (
                *at,
                format!("variable `{name}` is not set"),
                format!("set `{name}` {place}, or give a default: `${{{name}:-default}}`"),
            )
        }
        InterpError::Unterminated { at } => (
            *at,
            "unterminated `${`: missing `}`".to_owned(),
            "close it as `${NAME}`, or write `$${` for a literal `${`".to_owned(),
        ),
        InterpError::BadName { name, at } => (
            *at,
            format!("invalid variable reference `{name}`"),
            "write `${NAME}` or `${NAME:-default}`; names are letters, digits and `_`, not starting with a digit".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.local".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn ex(s: &str) -> Result<String, InterpError> {
        expand(s, &env)
    }

    #[test]
    fn expands_variables_and_defaults() {
        assert_eq!(ex("pg://${HOST}:5432").unwrap(), "pg://db.local:5432");
        assert_eq!(ex("${PORT:-5432}").unwrap(), "5432");
        assert_eq!(ex("${HOST:-other}").unwrap(), "db.local");
        assert_eq!(ex("${EMPTY:-fallback}").unwrap(), "fallback");
        assert_eq!(ex("${EMPTY}").unwrap(), "");
        assert_eq!(ex("${PORT:-}").unwrap(), "");
        assert_eq!(ex("${A:-${HOST}}").unwrap(), "db.local");
        assert_eq!(ex("${A:-x${B:-y}z}").unwrap(), "xyz");
    }

    #[test]
    fn escapes_and_plain_dollars() {
        assert_eq!(ex("$${HOST}").unwrap(), "${HOST}");
        assert_eq!(ex("cost $5 and $HOST").unwrap(), "cost $5 and $HOST");
        assert_eq!(ex("$$${HOST}").unwrap(), "$${HOST}");
        assert_eq!(ex("ünï ${HOST}").unwrap(), "ünï db.local");
    }

    #[test]
    fn errors_carry_offsets() {
        assert_eq!(
            ex("ab${NOPE}"),
            Err(InterpError::Unset {
                name: "NOPE".into(),
                at: 2
            })
        );
        assert_eq!(ex("x ${HOST"), Err(InterpError::Unterminated { at: 2 }));
        assert_eq!(ex("${"), Err(InterpError::Unterminated { at: 0 }));
        assert_eq!(ex("${A:-abc"), Err(InterpError::Unterminated { at: 0 }));
        assert_eq!(
            ex("${1X}"),
            Err(InterpError::BadName {
                name: "${1X}".into(),
                at: 0
            })
        );
        assert_eq!(
            ex("${A B}"),
            Err(InterpError::BadName {
                name: "${A B}".into(),
                at: 0
            })
        );
        assert_eq!(
            ex("${}"),
            Err(InterpError::BadName {
                name: "${}".into(),
                at: 0
            })
        );
    }

    #[test]
    fn unused_default_cannot_fail() {
        assert_eq!(ex("${HOST:-${NOPE}}").unwrap(), "db.local");
        assert_eq!(
            ex("${A:-${NOPE}}"),
            Err(InterpError::Unset {
                name: "NOPE".into(),
                at: 5
            })
        );
    }

    #[test]
    fn content_start_only_for_simple_strings() {
        let t = r#"a = "x${Y}" b = 'lit' c = "e\n" d = """m""""#;
        assert_eq!(content_start(t, 4), Some(5));
        assert_eq!(content_start(t, t.find("'lit").unwrap()), Some(17));
        assert_eq!(content_start(t, t.find("\"e").unwrap()), None);
        assert_eq!(content_start(t, t.find("\"\"\"").unwrap()), None);
    }
}
