//! Secret redaction: every value known to be secret is replaced by `***` wherever it is printed.

use std::borrow::Cow;
use std::fmt;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Shorter values are not treated as secrets (see `Redactor::add`).
pub const MIN_SECRET_CHARS: usize = 4;

/// The set of secret strings of one run, and the one function that hides them in text.
///
/// Matching is exact and case-sensitive. At each position the longest secret that matches wins,
/// so a secret that contains another one is hidden as a whole.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Distinct secrets, longest first.
    secrets: Vec<String>,
    /// What `redact` looks for, longest first: the secrets, plus each one as it reads once
    /// escaped inside a JSON string or a Rust `{:?}` (a secret holding a quote, a backslash or a
    /// control character changes there, and would otherwise slip through).
    forms: Vec<String>,
}

impl Redactor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret. Empty values are ignored. A multi-line value is registered whole and
    /// line by line, because tools (and GitHub's `::add-mask::`) print and mask line by line.
    /// Registers a secret value; values shorter than `MIN_SECRET_CHARS` are not masked.
    pub fn add(&mut self, secret: &str) {
        self.insert(secret);
        if secret.contains('\n') {
            for line in secret.lines() {
                if !line.trim().is_empty() {
                    self.insert(line);
                }
            }
        }
    }

    fn insert(&mut self, secret: &str) {
        // Values this short (`1`, `true`, `dev`) are flags, not credentials; masking every
        // occurrence of them would garble all output.
        if secret.chars().count() < MIN_SECRET_CHARS || self.secrets.iter().any(|s| s == secret) {
            return;
        }
        insert_longest_first(&mut self.secrets, secret);
        let json = serde_json::to_string(secret).unwrap_or_default();
        let debug = format!("{secret:?}");
        let escaped = [json, debug];
        let inner = escaped
            .iter()
            .filter_map(|q| q.strip_prefix('"').and_then(|q| q.strip_suffix('"')));
        for form in std::iter::once(secret).chain(inner) {
            if !self.forms.iter().any(|f| f == form) {
                insert_longest_first(&mut self.forms, form);
            }
        }
    }

    /// `text` with every occurrence of every secret replaced by `***`. Borrows when nothing matched.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if self.forms.is_empty() || !self.forms.iter().any(|s| text.contains(s.as_str())) {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            match self.forms.iter().find(|s| rest.starts_with(s.as_str())) {
                Some(secret) => {
                    out.push_str(MASK);
                    rest = &rest[secret.len()..];
                }
                None => {
                    out.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        Cow::Owned(out)
    }

    /// Every registered secret (whole values and single lines), longest first: for `::add-mask::`.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.secrets.iter().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Number of registered secrets.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }
}

/// Inserts `value` into `list` (longest first: the scan in `redact` relies on it).
fn insert_longest_first(list: &mut Vec<String>, value: &str) {
    let at = list
        .iter()
        .position(|s| s.len() < value.len())
        .unwrap_or(list.len());
    list.insert(at, value.to_owned());
}

impl fmt::Debug for Redactor {
    // Never the values: a `{:?}` of a struct holding a Redactor must not leak them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("secrets", &format_args!("<{} hidden>", self.secrets.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_every_occurrence() {
        let mut r = Redactor::new();
        r.add("hunter2");
        assert_eq!(r.redact("a hunter2 b hunter2"), "a *** b ***");
    }

    #[test]
    fn borrows_when_nothing_matches() {
        let mut r = Redactor::new();
        r.add("hunter2");
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
        assert!(matches!(Redactor::new().redact("x"), Cow::Borrowed(_)));
    }

    #[test]
    fn longest_secret_wins() {
        let mut r = Redactor::new();
        r.add("abcd");
        r.add("abcdefg");
        // A shorter-first replacement would leave `***efg`.
        assert_eq!(r.redact("xabcdefgx abcd"), "x***x ***");
        assert_eq!(r.secrets().collect::<Vec<_>>(), ["abcdefg", "abcd"]);
    }

    #[test]
    fn short_values_are_not_secrets() {
        let mut r = Redactor::new();
        r.add("1");
        r.add("yes");
        assert!(r.is_empty());
        assert_eq!(r.redact("1 yes"), "1 yes");
    }

    #[test]
    fn multi_line_registers_each_line() {
        let mut r = Redactor::new();
        r.add("-----BEGIN KEY-----\nMIIsecret\n\n-----END KEY-----\n");
        assert_eq!(r.len(), 4);
        assert_eq!(r.redact("line: MIIsecret"), "line: ***");
        assert_eq!(
            r.redact("-----BEGIN KEY-----\nMIIsecret\n\n-----END KEY-----\n"),
            "***"
        );
    }

    #[test]
    fn ignores_empty_and_duplicates() {
        let mut r = Redactor::new();
        r.add("");
        assert!(r.is_empty());
        r.add("tok3n");
        r.add("tok3n");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn handles_multibyte_text() {
        let mut r = Redactor::new();
        r.add("clé✓");
        assert_eq!(r.redact("ünï clé✓ ünï"), "ünï *** ünï");
    }

    #[test]
    fn item08_escaped_forms_of_a_secret_with_quotes_are_masked() {
        let mut r = Redactor::new();
        let secret = "it's \"qu0ted\" a\\b";
        r.add(secret);
        let json = serde_json::json!({ "v": format!("x {secret} y") }).to_string();
        assert_eq!(r.redact(&json), r#"{"v":"x *** y"}"#);
        assert_eq!(
            r.redact(&format!("{:?}", format!("x {secret}"))),
            "\"x ***\""
        );
        assert_eq!(r.redact(secret), "***");
        // Only the real values are registered (for `::add-mask::`), not the escaped forms.
        assert_eq!(r.secrets().collect::<Vec<_>>(), [secret]);
    }

    #[test]
    fn debug_hides_values() {
        let mut r = Redactor::new();
        r.add("s3cr3t-value");
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("s3cr3t"), "{dbg}");
        assert!(dbg.contains("1 hidden"), "{dbg}");
    }
}
