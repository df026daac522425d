//! Strategies for documents: keys of the real configuration at their place and at wrong depths,
//! values of every TOML type, durations, commands, env maps and `${VAR}` interpolations.

use proptest::prelude::*;

use crate::model::*;

/// What `${...}` strings are made of: variables that are set, empty, unset or secret,
/// defaults (nested too), escapes, and the broken forms.
pub(crate) const PIECES: &[&str] = &[
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
pub(crate) const WORDS: &[&str] = &[
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

pub(crate) fn style() -> impl Strategy<Value = Style> {
    prop_oneof![
        6 => Just(Style::Basic),
        2 => Just(Style::Literal),
        1 => Just(Style::MultiBasic),
        1 => Just(Style::MultiLiteral),
    ]
}

pub(crate) fn string_content() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(str::to_owned),
        3 => prop::collection::vec(prop::sample::select(PIECES), 0..6).prop_map(|p| p.concat()),
        1 => any::<String>().prop_map(|s| s.chars().take(12).collect()),
    ]
}

pub(crate) fn string_value() -> impl Strategy<Value = V> {
    (string_content(), style()).prop_map(|(s, st)| V::Str(s, st))
}

pub(crate) fn number() -> impl Strategy<Value = V> {
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

pub(crate) fn scalar() -> impl Strategy<Value = V> {
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
pub(crate) const KEY_NAMES: &[&str] = &[
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

pub(crate) fn key_name() -> impl Strategy<Value = String> {
    prop::sample::select(KEY_NAMES).prop_map(str::to_owned)
}

pub(crate) fn key_path(max: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(key_name(), 1..=max)
}

/// Any value: scalars, arrays and inline tables, nested.
pub(crate) fn any_value() -> impl Strategy<Value = V> {
    scalar().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(V::Array),
            prop::collection::vec((key_path(2), inner), 0..3).prop_map(V::Inline),
        ]
    })
}

pub(crate) fn s(v: &str) -> V {
    V::Str(v.to_owned(), Style::Basic)
}

pub(crate) fn pick(values: &'static [&'static str]) -> BoxedStrategy<V> {
    (prop::sample::select(values), style())
        .prop_map(|(v, st)| V::Str(v.to_owned(), st))
        .boxed()
}

pub(crate) fn duration() -> BoxedStrategy<V> {
    prop_oneof![
        4 => pick(&["2s", "500ms", "1m30s", "10m", "1h", "30s", "${DUR:-3s}", "${DUR}"]),
        1 => string_value(),
    ]
    .boxed()
}

pub(crate) fn command() -> BoxedStrategy<V> {
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

pub(crate) fn env_map() -> BoxedStrategy<V> {
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

pub(crate) fn names() -> BoxedStrategy<V> {
    prop::collection::vec(pick(&["DATABASE_URL", "KEY", "NPM_TOKEN", "MISSING"]), 0..3)
        .prop_map(V::Array)
        .boxed()
}

/// A plausible value for a real key: mostly valid, so that some documents load.
pub(crate) fn valid_value(table: &str, key: &str) -> BoxedStrategy<V> {
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
pub(crate) const CATALOG: &[(&str, &str)] = &[
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
pub(crate) fn known_item() -> impl Strategy<Value = Item> {
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

pub(crate) fn notify_entry() -> impl Strategy<Value = Vec<(Vec<String>, V)>> {
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
pub(crate) fn wild_item() -> impl Strategy<Value = Item> {
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

pub(crate) fn document(max_items: usize, wild_weight: u32) -> impl Strategy<Value = Vec<Item>> {
    prop::collection::vec(
        prop_oneof![8 => known_item(), wild_weight => wild_item()],
        0..max_items,
    )
}

/// deploy.toml: usually with a valid `app.name` first, so that documents can load.
pub(crate) fn base_doc() -> impl Strategy<Value = String> {
    (prop::bool::weighted(0.85), document(8, 1)).prop_map(|(named, items)| {
        let mut text = String::new();
        if named {
            text.push_str("app.name = \"web\"\n");
        }
        text.push_str(&render(&items));
        text
    })
}

pub(crate) fn overlay_doc() -> impl Strategy<Value = String> {
    document(4, 1).prop_map(|items| render(&items))
}
