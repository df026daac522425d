//! Property-based fuzzing of the configuration loader (parse + merge + interpolation +
//! validation), with proptest on the stable toolchain.
//!
//! Generated inputs: structured TOML documents (real keys at their place and at wrong depths,
//! dotted keys, inline tables, arrays of tables, values of every TOML type, durations, ports,
//! sizes, `${...}` strings that are valid, unset, escaped, unterminated or nested), base +
//! overlay pairs, process environments, env files holding a canary secret (sometimes broken),
//! and byte-level mutations of valid configurations.
//!
//! Properties: `load` never panics; it returns `Ok` or `Error::Config` with a non-empty,
//! sorted, duplicate-free list in which every error points at a real line and column of one of
//! the files written (line 0 only for a required top-level section missing from deploy.toml,
//! which has no place in any file); the canary secret never appears in any error, warning or
//! redacted output.
//!
//! `cargo test --test config_fuzz` runs 256 cases per property; `PROPTEST_CASES=20000` (read by
//! proptest) makes a long run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use deployctl::config::{LoadOptions, load};
use deployctl::error::{ConfigError, Error};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// The secret value of the env file. Letters only, so any 8-character window of it is
/// distinctive enough to call a leak.
const CANARY: &str = "QzcanaryXsecretWvalueKp";
/// A second secret, spread over the lines of a multi-line value.
const CANARY_LINES: [&str; 2] = ["MIIEcanaryLINEoneZZ", "c2VjcanaryLINEtwoYY"];

// ------------------------------------------------------------------------------ the model

/// How a string is written in TOML.
#[derive(Debug, Clone, Copy)]
enum Style {
    Basic,
    Literal,
    MultiBasic,
    MultiLiteral,
}

#[derive(Debug, Clone)]
enum V {
    Str(String, Style),
    /// Integers and floats as written (`0x1F`, `nan`, `1_000`, ...).
    Num(String),
    Bool(bool),
    Datetime(&'static str),
    Array(Vec<V>),
    Inline(Vec<(Vec<String>, V)>),
}

#[derive(Debug, Clone)]
enum Item {
    /// `key = value` under `[table]` (or at the root when `table` is empty).
    Header {
        table: Vec<String>,
        key: Vec<String>,
        value: V,
    },
    /// `table.key = value` at the root.
    Dotted { key: Vec<String>, value: V },
    /// `[[table]]` with its entries.
    ArrayOfTables {
        table: Vec<String>,
        entries: Vec<(Vec<String>, V)>,
    },
}

fn render_key_part(k: &str) -> String {
    let bare = !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare { k.to_owned() } else { basic_string(k) }
}

fn render_key(parts: &[String]) -> String {
    parts
        .iter()
        .map(|p| render_key_part(p))
        .collect::<Vec<_>>()
        .join(".")
}

fn basic_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn render_string(s: &str, style: Style) -> String {
    let plain = |extra_ok: &dyn Fn(char) -> bool| {
        s.chars()
            .all(|c| (!c.is_control() || c == '\t' || extra_ok(c)) && c != '\'')
    };
    match style {
        Style::Literal if plain(&|_| false) => format!("'{s}'"),
        Style::MultiLiteral if plain(&|c| c == '\n') && !s.ends_with('\n') => {
            format!("'''{s}'''")
        }
        Style::MultiBasic => {
            let mut body = String::new();
            for c in s.chars() {
                match c {
                    '"' => body.push_str("\\\""),
                    '\\' => body.push_str("\\\\"),
                    '\n' | '\t' => body.push(c),
                    c if c.is_control() => body.push_str(&format!("\\u{:04X}", c as u32)),
                    c => body.push(c),
                }
            }
            format!("\"\"\"{body}\"\"\"")
        }
        _ => basic_string(s),
    }
}

fn render_value(v: &V) -> String {
    match v {
        V::Str(s, style) => render_string(s, *style),
        V::Num(n) => n.clone(),
        V::Bool(b) => b.to_string(),
        V::Datetime(d) => (*d).to_owned(),
        V::Array(items) => {
            let inner: Vec<String> = items.iter().map(render_value).collect();
            format!("[{}]", inner.join(", "))
        }
        V::Inline(entries) => {
            let inner: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{} = {}", render_key(k), render_value(v)))
                .collect();
            format!("{{ {} }}", inner.join(", "))
        }
    }
}

/// TOML text of a document: root-level entries first, then `[table]` sections in order of
/// first appearance, then arrays of tables.
fn render(items: &[Item]) -> String {
    let mut root = Vec::new();
    let mut sections: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    let mut aots = Vec::new();
    for item in items {
        match item {
            Item::Header { table, key, value } if table.is_empty() => {
                root.push(format!("{} = {}", render_key(key), render_value(value)));
            }
            Item::Header { table, key, value } => {
                let line = format!("{} = {}", render_key(key), render_value(value));
                match sections.iter_mut().find(|(t, _)| t == table) {
                    Some((_, lines)) => lines.push(line),
                    None => sections.push((table.clone(), vec![line])),
                }
            }
            Item::Dotted { key, value } => {
                root.push(format!("{} = {}", render_key(key), render_value(value)));
            }
            Item::ArrayOfTables { table, entries } => {
                let mut text = format!("[[{}]]\n", render_key(table));
                for (k, v) in entries {
                    text.push_str(&format!("{} = {}\n", render_key(k), render_value(v)));
                }
                aots.push(text);
            }
        }
    }
    let mut out = String::new();
    for line in root {
        out.push_str(&line);
        out.push('\n');
    }
    for (table, lines) in sections {
        out.push_str(&format!("\n[{}]\n", render_key(&table)));
        for line in lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
    for text in aots {
        out.push('\n');
        out.push_str(&text);
    }
    out
}

// ------------------------------------------------------------------------------ strategies

/// What `${...}` strings are made of: variables that are set, empty, unset or secret,
/// defaults (nested too), escapes, and the broken forms.
const PIECES: &[&str] = &[
    "${HOST}",
    "${EMPTY}",
    "${UNSET}",
    "${UNSET:-dflt}",
    "${EMPTY:-x}",
    "${HOST:-y}",
    "${PORT}",
    "${DUR:-5s}",
    "$${",
    "$${HOST}",
    "$$${HOST}",
    "${",
    "${HOST",
    "${UNSET:-",
    "${UNSET:-${HOST",
    "${1X}",
    "${A B}",
    "${}",
    "${-}",
    "${X:-${Y:-z}}",
    "${UNSET:-${HOST}}",
    "${UNSET:-${UNSET2}}",
    "${HOST:-${UNSET}}",
    "${CANARY}",
    "${CANARY:-no}",
    "${SIGNING_KEY}",
    "${REF}",
    "$",
    "$$",
    "}",
    "{",
    ":-",
    "5s",
    "2GiB",
    "8080",
    "http://",
    "/health",
    "ü",
    "é\u{301}",
    "\t",
    "\n",
    " ",
    "a",
    "release/*",
    "[",
    ">= 1.0",
    "\\",
    "\"",
    "'",
];

/// Values that are valid somewhere (and wrong elsewhere).
const WORDS: &[&str] = &[
    "web",
    "assistant",
    "Web App",
    "",
    "2s",
    "500ms",
    "1m30s",
    "0s",
    "10",
    "-1s",
    "5 parsecs",
    "99999999999999999999h",
    "2GiB",
    "512MiB",
    "lots",
    "0.0.0.0:443",
    "8080",
    "0",
    "65536",
    "[::]:80",
    "localhost:80",
    "https://example.com/hooks/x",
    "ftp://x/y",
    "https://",
    "slack",
    "discord",
    "webhook",
    "sms",
    "failure",
    "success",
    "rollback",
    "/api/health",
    "health",
    "npm test",
    "echo 'unterminated",
    ">= 18.17.0",
    "not a version",
    ".env",
    "Dockerfile",
    ".",
    "release/[",
    "/status",
    "status",
    "DATABASE_URL",
    "1BAD",
];

fn style() -> impl Strategy<Value = Style> {
    prop_oneof![
        6 => Just(Style::Basic),
        2 => Just(Style::Literal),
        1 => Just(Style::MultiBasic),
        1 => Just(Style::MultiLiteral),
    ]
}

fn string_content() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(str::to_owned),
        3 => prop::collection::vec(prop::sample::select(PIECES), 0..6).prop_map(|p| p.concat()),
        1 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

fn string_value() -> impl Strategy<Value = V> {
    (string_content(), style()).prop_map(|(s, st)| V::Str(s, st))
}

fn number() -> impl Strategy<Value = V> {
    prop_oneof![
        3 => prop::sample::select(&[
            "0", "1", "-1", "2", "3", "80", "200", "204", "599", "600", "99", "65535", "65536",
            "4294967296", "9223372036854775807", "-9223372036854775808", "0x1F", "0o17",
            "0b11", "1_000", "0.05", "1.0", "-0.5", "1e3", "nan", "inf", "-inf", "+1.0",
            "2E-2", "1.5",
        ][..])
        .prop_map(|s| V::Num(s.to_owned())),
        1 => any::<i64>().prop_map(|n| V::Num(n.to_string())),
    ]
}

fn scalar() -> impl Strategy<Value = V> {
    prop_oneof![
        5 => string_value(),
        3 => number(),
        1 => any::<bool>().prop_map(V::Bool),
        1 => prop::sample::select(&["1979-05-27T07:32:00Z", "1979-05-27", "07:32:00"][..])
            .prop_map(V::Datetime),
    ]
}

/// Key names: the real ones of every table (to put them at wrong depths), misspellings,
/// and keys that need quoting.
const KEY_NAMES: &[&str] = &[
    "app",
    "name",
    "port",
    "env",
    "secret_env",
    "docker",
    "host",
    "git",
    "branches",
    "require_clean",
    "prerequisites",
    "tools",
    "env_file",
    "version",
    "test",
    "commands",
    "timeout",
    "build",
    "args",
    "deploy",
    "keep_releases",
    "proxy",
    "listen",
    "health",
    "path",
    "interval",
    "deadline",
    "expect_json",
    "pointer",
    "equals",
    "verify",
    "window",
    "rollback",
    "automatic",
    "hooks",
    "pre_build",
    "notify",
    "kind",
    "url",
    "on",
    "run",
    "shell",
    "timout",
    "nmae",
    "Health",
    "a.b",
    "with space",
    "ü",
    "",
    "1X",
    "DB_URL",
];

fn key_name() -> impl Strategy<Value = String> {
    prop::sample::select(KEY_NAMES).prop_map(str::to_owned)
}

fn key_path(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(key_name(), 1..=max)
}

/// Any value: scalars, arrays and inline tables, nested.
fn any_value() -> impl Strategy<Value = V> {
    scalar().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(V::Array),
            prop::collection::vec((key_path(2), inner), 0..3).prop_map(V::Inline),
        ]
    })
}

fn s(v: &str) -> V {
    V::Str(v.to_owned(), Style::Basic)
}

fn pick(values: &'static [&'static str]) -> BoxedStrategy<V> {
    (prop::sample::select(values), style())
        .prop_map(|(v, st)| V::Str(v.to_owned(), st))
        .boxed()
}

fn duration() -> BoxedStrategy<V> {
    prop_oneof![
        4 => pick(&["2s", "500ms", "1m30s", "10m", "1h", "30s", "${DUR:-3s}", "${DUR}"]),
        1 => string_value(),
    ]
    .boxed()
}

fn command() -> BoxedStrategy<V> {
    prop::sample::select(vec![
        V::Array(vec![s("npm"), s("test")]),
        s("npm run lint"),
        V::Inline(vec![
            (vec!["run".into()], s("echo ok | cat")),
            (vec!["shell".into()], V::Bool(true)),
        ]),
        V::Array(vec![]),
        s("   "),
        s("echo 'unterminated"),
    ])
    .boxed()
}

fn env_map() -> BoxedStrategy<V> {
    prop::collection::vec(
        (
            prop::sample::select(&["DATABASE_URL", "NODE_ENV", "KEY", "1BAD", "A-B", "a.b"][..]),
            string_value(),
        ),
        0..4,
    )
    .prop_map(|kv| {
        V::Inline(
            kv.into_iter()
                .map(|(k, v)| (vec![k.to_owned()], v))
                .collect(),
        )
    })
    .boxed()
}

fn names() -> BoxedStrategy<V> {
    prop::collection::vec(pick(&["DATABASE_URL", "KEY", "NPM_TOKEN", "MISSING"]), 0..3)
        .prop_map(V::Array)
        .boxed()
}

/// A plausible value for a real key: mostly valid, so that some documents load.
fn valid_value(table: &str, key: &str) -> BoxedStrategy<V> {
    match (table, key) {
        ("app", "name") => pick(&["web", "assistant", "a.b-c_1", "${NAME:-web}"]),
        ("app", "port") | ("health", "port") => {
            (1..=65535i64).prop_map(|n| V::Num(n.to_string())).boxed()
        }
        ("app", "env") | ("build", "args") | ("health", "headers") => env_map(),
        ("app", "secret_env") | ("build", "secret_args") | ("prerequisites", "required_env") => {
            names()
        }
        ("docker", "host") => pick(&["unix:///var/run/docker.sock", "tcp://127.0.0.1:2375"]),
        ("git", "require_clean") | ("git", "require_pushed") | ("rollback", "automatic") => {
            any::<bool>().prop_map(V::Bool).boxed()
        }
        ("git", "branches") => prop::collection::vec(pick(&["main", "release/*"]), 0..3)
            .prop_map(V::Array)
            .boxed(),
        ("prerequisites", "tools") => prop::collection::vec(
            pick(&["node", "docker"]).prop_map(|name| {
                V::Inline(vec![
                    (vec!["name".into()], name),
                    (vec!["version".into()], s(">= 18.17.0")),
                ])
            }),
            0..2,
        )
        .prop_map(V::Array)
        .boxed(),
        ("prerequisites", "env_file") => pick(&[
            ".env",
            ".env",
            "missing.env",
            "${ENVF}",
            "${ENVF:-.env}",
            "sub/../.env",
            ".",
            "environments",
            "",
        ]),
        ("prerequisites", "min_free_disk") => pick(&["2GiB", "512MiB", "1GB"]),
        ("test", "commands") | ("hooks", _) => prop::collection::vec(command(), 0..3)
            .prop_map(V::Array)
            .boxed(),
        ("build", "context") => pick(&[".", "app"]),
        ("build", "dockerfile") => pick(&["Dockerfile"]),
        ("build", "target") | ("proxy", "image") => pick(&["runtime", "img:1"]),
        ("deploy", "keep_releases")
        | ("health", "healthy_threshold")
        | ("health", "unhealthy_threshold") => {
            (1..10i64).prop_map(|n| V::Num(n.to_string())).boxed()
        }
        ("proxy", "listen") => pick(&["8080", "0.0.0.0:443", "[::]:80", "${PORT:-8080}"]),
        ("health", "path") => pick(&["/health", "/api/health"]),
        ("health", "host") | ("health", "expect_body") => pick(&["example.com", "ok"]),
        ("health", "expect_status") => {
            prop::collection::vec(prop::sample::select(&["200", "204", "301"][..]), 1..3)
                .prop_map(|v| V::Array(v.into_iter().map(|n| V::Num(n.to_owned())).collect()))
                .boxed()
        }
        ("health", "expect_json") => Just(V::Inline(vec![
            (vec!["pointer".into()], s("/status")),
            (vec!["equals".into()], s("ok")),
        ]))
        .boxed(),
        ("health", "docker_cmd") => Just(V::Array(vec![s("/app"), s("--check")])).boxed(),
        ("verify", "max_error_rate") => {
            prop::sample::select(&["0.0", "0.01", "0.5", "1.0", "0"][..])
                .prop_map(|n| V::Num(n.to_owned()))
                .boxed()
        }
        // Durations: test.timeout, deploy.*_timeout, health.interval/timeout/deadline, ...
        _ => duration(),
    }
}

/// Every real key, by table.
const CATALOG: &[(&str, &str)] = &[
    ("app", "name"),
    ("app", "port"),
    ("app", "env"),
    ("app", "secret_env"),
    ("docker", "host"),
    ("git", "require_clean"),
    ("git", "branches"),
    ("git", "require_pushed"),
    ("prerequisites", "tools"),
    ("prerequisites", "env_file"),
    ("prerequisites", "required_env"),
    ("prerequisites", "min_free_disk"),
    ("test", "commands"),
    ("test", "timeout"),
    ("build", "context"),
    ("build", "dockerfile"),
    ("build", "args"),
    ("build", "secret_args"),
    ("build", "target"),
    ("deploy", "keep_releases"),
    ("deploy", "stop_timeout"),
    ("deploy", "drain_timeout"),
    ("deploy", "lock_stale_after"),
    ("proxy", "listen"),
    ("proxy", "image"),
    ("health", "path"),
    ("health", "port"),
    ("health", "host"),
    ("health", "headers"),
    ("health", "interval"),
    ("health", "timeout"),
    ("health", "healthy_threshold"),
    ("health", "unhealthy_threshold"),
    ("health", "deadline"),
    ("health", "expect_status"),
    ("health", "expect_body"),
    ("health", "expect_json"),
    ("health", "docker_cmd"),
    ("verify", "window"),
    ("verify", "max_error_rate"),
    ("rollback", "automatic"),
    ("hooks", "pre_build"),
    ("hooks", "pre_deploy"),
    ("hooks", "post_deploy"),
    ("hooks", "on_failure"),
    ("hooks", "on_rollback"),
];

/// A real key with a mostly valid value (sometimes any value), under its table header or as a
/// dotted key at the root.
fn known_item() -> impl Strategy<Value = Item> {
    prop::sample::select(CATALOG).prop_flat_map(|(table, key)| {
        let value = prop_oneof![4 => valid_value(table, key), 1 => any_value()];
        (value, any::<bool>()).prop_map(move |(value, dotted)| {
            if dotted {
                Item::Dotted {
                    key: vec![table.to_owned(), key.to_owned()],
                    value,
                }
            } else {
                Item::Header {
                    table: vec![table.to_owned()],
                    key: vec![key.to_owned()],
                    value,
                }
            }
        })
    })
}

fn notify_entry() -> impl Strategy<Value = Vec<(Vec<String>, V)>> {
    let kind = prop_oneof![4 => pick(&["slack", "discord", "webhook"]), 1 => any_value()];
    let url = prop_oneof![
        4 => pick(&[
            "https://hooks.example.com/x/${SLACK:-t}",
            "https://hooks.example.com/${CANARY}",
            "http://127.0.0.1:9/h",
        ]),
        1 => any_value(),
    ];
    let on = prop::collection::vec(pick(&["success", "failure", "rollback"]), 0..3);
    (kind, url, on, prop::option::of(duration())).prop_map(|(kind, url, on, timeout)| {
        let mut e = vec![
            (vec!["kind".to_owned()], kind),
            (vec!["url".to_owned()], url),
            (vec!["on".to_owned()], V::Array(on)),
        ];
        if let Some(t) = timeout {
            e.push((vec!["timeout".to_owned()], t));
        }
        e
    })
}

/// Keys at random depths and random places; arrays of tables, real or not.
fn wild_item() -> impl Strategy<Value = Item> {
    prop_oneof![
        3 => (key_path(3), key_path(2), any_value())
            .prop_map(|(table, key, value)| Item::Header { table, key, value }),
        2 => (key_path(4), any_value()).prop_map(|(key, value)| Item::Dotted { key, value }),
        2 => notify_entry().prop_map(|entries| Item::ArrayOfTables {
            table: vec!["notify".to_owned()],
            entries,
        }),
        1 => (key_path(2), prop::collection::vec((key_path(2), any_value()), 0..3))
            .prop_map(|(table, entries)| Item::ArrayOfTables { table, entries }),
    ]
}

fn document(max_items: usize, wild_weight: u32) -> impl Strategy<Value = Vec<Item>> {
    prop::collection::vec(
        prop_oneof![8 => known_item(), wild_weight => wild_item()],
        0..max_items,
    )
}

/// deploy.toml: usually with a valid `app.name` first, so that documents can load.
fn base_doc() -> impl Strategy<Value = String> {
    (prop::bool::weighted(0.85), document(8, 1)).prop_map(|(named, items)| {
        let mut text = String::new();
        if named {
            text.push_str("app.name = \"web\"\n");
        }
        text.push_str(&render(&items));
        text
    })
}

fn overlay_doc() -> impl Strategy<Value = String> {
    document(4, 1).prop_map(|items| render(&items))
}

/// The env file: the canary in some quoting, a multi-line secret, references between
/// variables, and sometimes a broken line that also holds the canary.
fn env_file() -> impl Strategy<Value = Vec<u8>> {
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

fn process_env() -> impl Strategy<Value = BTreeMap<String, String>> {
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
const INTERESTING: &[u8] = b"\"'[]{}=.,#$\\\n :-0123456789aezAZ_\xff\xc3\t";

#[derive(Debug, Clone)]
enum Mutation {
    /// Positions are taken modulo the current length (+ 1 for insertion points).
    Replace(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    /// Copies a slice elsewhere: duplicate keys and tables.
    Duplicate(usize, usize, usize),
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![4 => prop::sample::select(INTERESTING), 1 => any::<u8>()]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let pos = any::<usize>;
    prop_oneof![
        (pos(), interesting_byte()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (pos(), prop::collection::vec(interesting_byte(), 1..4))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (pos(), 1..12usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (pos(), 1..40usize, pos()).prop_map(|(i, n, to)| Mutation::Duplicate(i, n, to)),
    ]
}

fn apply(input: &[u8], mutations: &[Mutation]) -> Vec<u8> {
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

// ------------------------------------------------------------------------------ the checks

struct Case {
    base: Vec<u8>,
    overlay: Vec<u8>,
    env_file: Vec<u8>,
    process_env: BTreeMap<String, String>,
}

/// Files as text, so a failing (shrunk) case is readable.
impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        write!(
            f,
            "\n--- deploy.toml\n{}\n--- environments/production.toml\n{}\n--- .env\n{}\n--- process env: {:?}\n",
            text(&self.base),
            text(&self.overlay),
            text(&self.env_file),
            self.process_env
        )
    }
}

impl Case {
    fn text(
        base: String,
        overlay: String,
        env_file: Vec<u8>,
        env: BTreeMap<String, String>,
    ) -> Self {
        Case {
            base: base.into_bytes(),
            overlay: overlay.into_bytes(),
            env_file,
            process_env: env,
        }
    }
}

/// Counts outcomes, so a run that never loads (or never fails) is caught: both mean the
/// generators stopped exercising the loader.
#[derive(Default)]
struct Outcomes {
    ok: AtomicUsize,
    err: AtomicUsize,
}

fn runner() -> TestRunner {
    // `Config::default()` reads PROPTEST_CASES (default 256) and PROPTEST_RNG_SEED. Without a
    // seed the run is the same every time, so `cargo test` in CI cannot flake; long runs pass
    // a new seed. No regression files: a failure prints the shrunk input, and a test run must
    // not write into the source tree.
    let mut config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(0x5EED_C0F1_6F22);
    }
    TestRunner::new(config)
}

/// Windows of the secrets long enough that finding one in output is a leak.
fn secret_fragments() -> Vec<&'static str> {
    let mut out = Vec::new();
    for secret in [CANARY, CANARY_LINES[0], CANARY_LINES[1]] {
        for start in 0..=secret.len() - 8 {
            out.push(&secret[start..start + 8]);
        }
    }
    out
}

fn assert_no_secret(what: &str, text: &str) -> Result<(), TestCaseError> {
    for fragment in secret_fragments() {
        prop_assert!(
            !text.contains(fragment),
            "{what} leaks secret fragment `{fragment}`: {text}"
        );
    }
    Ok(())
}

fn line_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count() + 1
}

/// Characters on 1-based `line` (as the loader sees the file: invalid UTF-8 replaced).
fn line_chars(bytes: &[u8], line: usize) -> usize {
    let text = String::from_utf8_lossy(bytes);
    text.split('\n')
        .nth(line - 1)
        .map_or(0, |l| l.chars().count())
}

fn check(case: &Case, outcomes: &Outcomes) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let write = |rel: &str, bytes: &[u8]| {
        let path = dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, bytes)
    };
    write("deploy.toml", &case.base)
        .and_then(|()| write("environments/production.toml", &case.overlay))
        .and_then(|()| write(".env", &case.env_file))
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    // The env file is private, as it should be: no permission warning noise.
    set_private(&dir.path().join(".env"));

    let base_path = dir.path().join("deploy.toml");
    let opts = LoadOptions {
        config_path: base_path.clone(),
        env: "production".to_owned(),
        process_env: case.process_env.clone(),
    };
    // The temporary directory is not under the working directory: shown paths are absolute.
    let base_shown = base_path.display().to_string();
    let overlay_shown = dir
        .path()
        .join("environments/production.toml")
        .display()
        .to_string();
    let files: [(&str, &[u8]); 2] = [(&base_shown, &case.base), (&overlay_shown, &case.overlay)];

    let result = std::panic::catch_unwind(|| load(&opts));
    let result = match result {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            return Err(TestCaseError::fail(format!("load panicked: {msg}")));
        }
    };
    match result {
        Ok(loaded) => {
            outcomes.ok.fetch_add(1, Ordering::Relaxed);
            assert_no_secret("Debug of Loaded", &format!("{loaded:?}"))?;
            assert_no_secret("redacted_json", &loaded.redacted_json().to_string())?;
            for w in &loaded.warnings {
                assert_no_secret("warning", w)?;
            }
        }
        Err(Error::Config(errs)) => {
            outcomes.err.fetch_add(1, Ordering::Relaxed);
            let list = &errs.0;
            prop_assert!(!list.is_empty(), "empty error list");
            let env_shown = dir.path().join(".env").display().to_string();
            let rank = |e: &ConfigError| match e.file.as_str() {
                f if f == base_shown => 0,
                f if f == overlay_shown => 1,
                _ => 2,
            };
            for e in list {
                let bytes: &[u8] = match files.iter().find(|(name, _)| *name == e.file) {
                    Some((_, bytes)) => bytes,
                    // Only a syntax error of the env file points into it.
                    None if e.file == env_shown && e.message.contains("env file") => &case.env_file,
                    None => return Err(TestCaseError::fail(format!("error in no file: {e:?}"))),
                };
                if e.line == 0 {
                    // The one problem without a place: a required section missing from the
                    // root table of deploy.toml.
                    prop_assert!(
                        e.file == base_shown
                            && e.col == 0
                            && !e.key.contains(['.', '['])
                            && e.message == format!("missing required key `{}`", e.key),
                        "unlocated error: {e:?}"
                    );
                } else {
                    prop_assert!(e.line <= line_count(bytes), "line past the end: {e:?}");
                    prop_assert!(
                        e.col >= 1 && e.col <= line_chars(bytes, e.line) + 1,
                        "column past the end of the line: {e:?}"
                    );
                }
                assert_no_secret("error", &e.to_string())?;
            }
            for pair in list.windows(2) {
                let key = |e: &ConfigError| (rank(e), e.line, e.col);
                prop_assert!(
                    key(&pair[0]) <= key(&pair[1]),
                    "errors not sorted: {pair:?}"
                );
                prop_assert!(pair[0] != pair[1], "duplicate error: {:?}", pair[0]);
            }
            assert_no_secret("error list", &errs.to_string())?;
        }
        Err(other) => {
            return Err(TestCaseError::fail(format!(
                "expected Ok or Error::Config, got: {other}"
            )));
        }
    }
    Ok(())
}

#[cfg(unix)]
fn set_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn set_private(_: &Path) {}

/// Both outcomes must occur in a run of any real size, or the generators are broken.
fn assert_both_outcomes(name: &str, outcomes: &Outcomes) {
    let (ok, err) = (
        outcomes.ok.load(Ordering::Relaxed),
        outcomes.err.load(Ordering::Relaxed),
    );
    eprintln!("{name}: {ok} loaded, {err} rejected");
    if ok + err >= 100 {
        assert!(ok > 0, "{name}: no generated configuration loaded");
        assert!(err > 0, "{name}: no generated configuration was rejected");
    }
}

fn run<S: Strategy<Value = Case>>(name: &str, strategy: S) {
    let outcomes = Outcomes::default();
    let result = runner().run(&strategy, |case| check(&case, &outcomes));
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
    assert_both_outcomes(name, &outcomes);
}

// ------------------------------------------------------------------------------ properties

#[test]
fn generated_documents_load_or_fail_located() {
    run(
        "generated",
        (base_doc(), overlay_doc(), env_file(), process_env())
            .prop_map(|(b, o, f, env)| Case::text(b, o, f, env)),
    );
}

#[test]
fn mutated_documents_load_or_fail_located() {
    let fixture_base = include_str!("fixtures/config/valid/deploy.toml");
    let fixture_overlay = include_str!("fixtures/config/valid/environments/production.toml");
    let bases = prop_oneof![Just(fixture_base.to_owned()), base_doc(),];
    let overlays = prop_oneof![Just(fixture_overlay.to_owned()), overlay_doc()];
    let ops = || prop::collection::vec(mutation(), 0..5);
    run(
        "mutated",
        (bases, ops(), overlays, ops(), env_file(), process_env()).prop_map(
            |(b, bm, o, om, f, env)| Case {
                base: apply(b.as_bytes(), &bm),
                overlay: apply(o.as_bytes(), &om),
                env_file: f,
                process_env: env,
            },
        ),
    );
}

/// The generators themselves: rendered documents are valid TOML when their parts are, so
/// failures come from what the loader checks, not from the renderer.
#[test]
fn renderer_writes_valid_toml() {
    let items = vec![
        Item::Header {
            table: vec!["app".into()],
            key: vec!["env".into(), "a.b".into()],
            value: V::Str("x\"y\\z\n\u{1}".into(), Style::Literal),
        },
        Item::Dotted {
            key: vec!["health".into(), "timeout".into()],
            value: V::Str("'quoted'\n".into(), Style::MultiLiteral),
        },
        Item::ArrayOfTables {
            table: vec!["notify".into()],
            entries: vec![(
                vec!["on".into()],
                V::Array(vec![V::Num("1".into()), V::Inline(vec![])]),
            )],
        },
        Item::Header {
            table: vec!["with space".into()],
            key: vec!["".into()],
            value: V::Str("a\"\"\"b".into(), Style::MultiBasic),
        },
    ];
    let text = render(&items);
    let doc: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(doc["app"]["env"]["a.b"].as_str(), Some("x\"y\\z\n\u{1}"));
    assert_eq!(doc["health"]["timeout"].as_str(), Some("'quoted'\n"));
    assert_eq!(doc["with space"][""].as_str(), Some("a\"\"\"b"));
    assert_eq!(
        apply(
            b"abc",
            &[Mutation::Delete(4, 2), Mutation::Insert(1, b"x".to_vec())]
        ),
        b"cx"
    );
}

/// Found by the fuzzer: dotenvy reports invalid UTF-8 as an I/O error with no place, which
/// came out as an error at line 0. It now points at the first bad byte, without quoting it.
#[test]
fn env_file_with_invalid_utf8_is_located_at_the_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("environments")).unwrap();
    std::fs::write(
        dir.path().join("deploy.toml"),
        "app.name = \"web\"\nprerequisites.env_file = \".env\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("environments/production.toml"), "").unwrap();
    let env_path = dir.path().join(".env");
    std::fs::write(
        &env_path,
        format!("A=ok\nX=\"open {CANARY}\nW=\u{1}").as_bytes(),
    )
    .unwrap();
    // Invalid UTF-8 after `W=`: line 3, column 3.
    let mut bytes = std::fs::read(&env_path).unwrap();
    bytes.pop();
    bytes.extend_from_slice(b"\xff\xfe\n");
    std::fs::write(&env_path, bytes).unwrap();
    set_private(&env_path);

    let err = load(&LoadOptions {
        config_path: dir.path().join("deploy.toml"),
        env: "production".to_owned(),
        process_env: BTreeMap::new(),
    })
    .unwrap_err();
    let Error::Config(errs) = err else {
        panic!("expected config errors, got {err}")
    };
    assert_eq!(errs.0.len(), 1, "{errs:#?}");
    let e = &errs.0[0];
    assert_eq!(e.file, env_path.display().to_string());
    assert_eq!((e.line, e.col), (3, 3), "{e:?}");
    assert_eq!(e.message, "the env file is not valid UTF-8");
    assert!(!errs.to_string().contains(CANARY));
}
