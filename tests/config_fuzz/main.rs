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

mod inputs;
mod model;
mod values;

use inputs::*;
use model::*;
use values::*;

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
    let fixture_base = include_str!("../fixtures/config/valid/deploy.toml");
    let fixture_overlay = include_str!("../fixtures/config/valid/environments/production.toml");
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
