//! Strategies for what surrounds a document: env files holding the canary secret, process
//! environments, and byte-level mutations of whole documents.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::{CANARY, CANARY_LINES};

/// The env file: the canary in some quoting, a multi-line secret, references between
/// variables, and sometimes a broken line that also holds the canary.
pub(crate) fn env_file() -> impl Strategy<Value = Vec<u8>> {
    let quoting = prop::sample::select(&["", "\"", "'"][..]);
    let broken = prop::option::weighted(
        0.15,
        prop::sample::select(
            &[
                "BROKEN LINE QzcanaryXsecretWvalueKp",
                "X=\"unterminated QzcanaryXsecretWvalueKp",
                "=QzcanaryXsecretWvalueKp",
                "Y='QzcanaryXsecretWvalueKp",
                "export",
                "Z=a b c",
            ][..],
        ),
    );
    (quoting, any::<bool>(), broken, any::<bool>()).prop_map(|(q, multi, broken, bad_utf8)| {
        // Every variable the fixture under tests/fixtures/config/valid uses, so it can load.
        let mut text = format!(
            "CANARY={q}{CANARY}{q}\nREF=${{CANARY}}\nDB_PASSWORD=pw-{CANARY}\n\
             NPM_TOKEN=npm_{CANARY}\nSLACK_TOKEN='{CANARY}'\n"
        );
        if multi {
            text.push_str(&format!(
                "SIGNING_KEY=\"-----BEGIN-----\n{}\n{}\n-----END-----\"\n",
                CANARY_LINES[0], CANARY_LINES[1]
            ));
        } else {
            text.push_str(&format!("SIGNING_KEY={}\n", CANARY_LINES[0]));
        }
        if let Some(line) = broken {
            text.push_str(line);
            text.push('\n');
        }
        let mut bytes = text.into_bytes();
        if bad_utf8 && broken.is_some() {
            bytes.extend_from_slice(b"W=\xff\xfe\n");
        }
        bytes
    })
}

pub(crate) fn process_env() -> impl Strategy<Value = BTreeMap<String, String>> {
    let var = prop::sample::select(
        &[
            ("HOST", "db.local"),
            ("EMPTY", ""),
            ("PORT", "8080"),
            ("PORT", "0"),
            ("DUR", "5s"),
            ("DUR", "soon"),
            ("ENVF", ".env"),
            ("ENVF", "missing.env"),
            ("NAME", "web"),
            ("NAME", "Bad Name"),
            ("X", "${HOST}"),
            ("CANARY", "process-wins"),
        ][..],
    );
    prop::collection::vec(var, 0..6).prop_map(|vars| {
        vars.into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    })
}

/// Bytes that matter to TOML and to interpolation, plus invalid UTF-8.
pub(crate) const INTERESTING: &[u8] = b"\"'[]{}=.,#$\\\n :-0123456789aezAZ_\xff\xc3\t";

#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    /// Positions are taken modulo the current length (+ 1 for insertion points).
    Replace(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    /// Copies a slice elsewhere: duplicate keys and tables.
    Duplicate(usize, usize, usize),
}

pub(crate) fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![4 => prop::sample::select(INTERESTING), 1 => any::<u8>()]
}

pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    let pos = any::<usize>;
    prop_oneof![
        (pos(), interesting_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (pos(), prop::collection::vec(interesting_byte(), 1..4))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (pos(), 1..12usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (pos(), 1..40usize, pos()).prop_map(|(i, n, to)| Mutation::Duplicate(i, n, to)),
    ]
}

pub(crate) fn apply(input: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut out = input.to_vec();
    for m in mutations {
        let at = |i: &usize, len: usize| i % (len + 1);
        match m {
            Mutation::Replace(i, b) if !out.is_empty() => {
                let at = i % out.len();
                out[at] = *b;
            }
            Mutation::Replace(..) => {}
            Mutation::Insert(i, bytes) => {
                let at = at(i, out.len());
                out.splice(at..at, bytes.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let from = at(i, out.len());
                let to = (from + n).min(out.len());
                out.drain(from..to);
            }
            Mutation::Duplicate(i, n, to) => {
                let from = at(i, out.len());
                let end = (from + n).min(out.len());
                let piece = out[from..end].to_vec();
                let to = at(to, out.len());
                out.splice(to..to, piece);
            }
        }
    }
    out
}
