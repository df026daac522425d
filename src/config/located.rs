//! The errors of the located deserializer ([`super::de`]): what a type refused, pinned to the
//! node (or key) it came from, in the words of the configuration (`expected an integer, found a
//! string`, `unknown key`, `did you mean`). `Deserialize` impls pass hints after [`HINT`].

use std::fmt;

use serde::de;

use super::tree::{Entry, Loc, Node, join_key};

/// Separates a message from its hint in the text of a `serde::de::Error::custom` error or of a
/// visitor's `expecting`: `Deserialize` impls have no other way to pass a hint.
pub(crate) const HINT: &str = "\n  hint: ";

/// A message with a hint, for a `Deserialize` impl to fail with.
pub(crate) fn invalid<E: de::Error>(message: impl fmt::Display, hint: impl fmt::Display) -> E {
    E::custom(format_args!("{message}{HINT}{hint}"))
}

/// One step of a path into the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// `health.timeout`, `notify[0].url`, `app.env."A.B"`.
pub(crate) fn path_text(path: &[Seg]) -> String {
    path.iter().fold(String::new(), |acc, seg| match seg {
        Seg::Key(k) => join_key(&acc, k),
        Seg::Index(i) => format!("{acc}[{i}]"),
    })
}

#[derive(Debug)]
enum Kind {
    /// A complete message, with a hint after [`HINT`].
    Message(String),
    /// The value has the wrong type: "expected {0}, found <the node's type>".
    Type(String),
    UnknownKey(String, &'static [&'static str]),
    UnknownVariant(String, &'static [&'static str]),
    Missing(&'static str),
}

/// An error pinned to its place.
#[derive(Debug)]
pub(super) struct Found {
    /// The node to leave out on the next pass.
    pub(super) poison: Vec<Seg>,
    pub(super) loc: Loc,
    pub(super) key: String,
    pub(super) message: String,
    pub(super) hint: Option<String>,
    /// A missing key whose value was left out after its own error: not reported again.
    pub(super) echo: bool,
}

/// The error of the located deserializer: what went wrong, then where (once a node claims it).
#[derive(Debug)]
pub(crate) struct Error {
    kind: Kind,
    pub(super) found: Option<Box<Found>>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.found, &self.kind) {
            (Some(found), _) => write!(f, "{}: {}", found.key, found.message),
            (None, kind) => write!(f, "{kind:?}"),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::new(Kind::Message(msg.to_string()))
    }
    fn invalid_type(_: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Error::new(Kind::Type(exp.to_string()))
    }
    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Error::new(Kind::UnknownKey(field.to_owned(), expected))
    }
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Error::new(Kind::UnknownVariant(variant.to_owned(), expected))
    }
    fn missing_field(field: &'static str) -> Self {
        Error::new(Kind::Missing(field))
    }
}

fn split_hint(text: &str) -> (String, Option<String>) {
    match text.split_once(HINT) {
        Some((message, hint)) => (message.to_owned(), Some(hint.to_owned())),
        None => (text.to_owned(), None),
    }
}

impl Error {
    fn new(kind: Kind) -> Self {
        Error { kind, found: None }
    }

    pub(super) fn expected(what: &str) -> Self {
        Error::new(Kind::Type(what.to_owned()))
    }

    /// Pins the error to `node` at `path`, unless a deeper node already did.
    pub(super) fn locate(mut self, node: &Node, path: &[Seg]) -> Self {
        if self.found.is_some() {
            return self;
        }
        let mut found = Found {
            poison: path.to_vec(),
            loc: node.loc,
            key: path_text(path),
            message: String::new(),
            hint: None,
            echo: false,
        };
        match &self.kind {
            Kind::Message(text) => (found.message, found.hint) = split_hint(text),
            Kind::Type(expected) => {
                let (expected, hint) = split_hint(expected);
                found.message = format!("expected {expected}, found {}", node.kind());
                found.hint = hint.or_else(|| unquote_hint(node, &expected));
            }
            Kind::UnknownKey(key, known) => {
                found.message = format!("unknown key `{key}`");
                found.hint = Some(key_hint(key, known));
            }
            Kind::UnknownVariant(value, names) => {
                found.message = format!("invalid value `{value}`");
                found.hint = Some(match did_you_mean(value, names) {
                    Some(best) => {
                        format!("did you mean `{best}`? valid values: {}", names.join(", "))
                    }
                    None => format!("valid values: {}", names.join(", ")),
                });
            }
            Kind::Missing(field) => {
                found.key = join_key(&found.key, field);
                found.message = format!("missing required key `{field}`");
                found.echo = node.entry(field).is_some_and(|e| e.node.poisoned);
            }
        }
        self.found = Some(Box::new(found));
        self
    }

    /// Pins an error found while reading a key to the key.
    pub(super) fn locate_key(self, entry: &Entry, path: &[Seg]) -> Self {
        let mut e = self.locate(&entry.node, path);
        if let Some(found) = &mut e.found {
            found.loc = entry.key_loc;
        }
        e
    }
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

fn key_hint(key: &str, known: &[&str]) -> String {
    let mut sorted = known.to_vec();
    sorted.sort_unstable();
    match did_you_mean(key, known) {
        Some(s) => format!("did you mean `{s}`?"),
        None if known.is_empty() => "this table takes no keys".to_owned(),
        None => format!("valid keys here: {}", sorted.join(", ")),
    }
}

/// `port = "8080"` where a number is expected: suggest dropping the quotes.
fn unquote_hint(node: &Node, expected: &str) -> Option<String> {
    let s = node.as_str()?.trim();
    let fits = match expected {
        "an integer" => s.parse::<i64>().is_ok(),
        "a number" => s.parse::<f64>().is_ok(),
        "a boolean (true or false)" => s.parse::<bool>().is_ok(),
        _ => false,
    };
    fits.then(|| format!("remove the quotes: `{s}`"))
}
