//! libFuzzer target over the configuration loader: the input is deploy.toml, the overlay and
//! the env file, separated by NUL bytes. `load` must not panic, and every error must have a
//! place (line 0 only for a top-level section missing from deploy.toml) and hide the secret.
#![no_main]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use deployctl::config::{LoadOptions, load};
use deployctl::error::Error;
use libfuzzer_sys::fuzz_target;

const CANARY: &str = "QzcanaryXsecretWvalueKp";

/// One directory per fuzzing process, rewritten for every input.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("deployctl-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(d.join("environments")).expect("temp dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let base = parts.next().unwrap_or_default();
    let overlay = parts.next().unwrap_or_default();
    let env_file = parts.next().unwrap_or_default();
    let dir = dir();
    let mut env_bytes = format!("CANARY={CANARY}\n").into_bytes();
    env_bytes.extend_from_slice(env_file);
    for (rel, bytes) in [
        ("deploy.toml", base),
        ("environments/production.toml", overlay),
        (".env", env_bytes.as_slice()),
    ] {
        let path = dir.join(rel);
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, bytes).expect("write input");
    }
    let opts = LoadOptions {
        config_path: dir.join("deploy.toml"),
        env: "production".to_owned(),
        process_env: BTreeMap::from([("HOST".to_owned(), "db.local".to_owned())]),
    };
    // libFuzzer learns the canary from comparisons and may write it into the config itself;
    // a key or value the user wrote is no leak.
    let in_config = [base, overlay]
        .iter()
        .any(|b| b.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()));
    match load(&opts) {
        Ok(loaded) => assert!(in_config || !format!("{loaded:?}").contains(CANARY)),
        Err(Error::Config(errs)) => {
            assert!(!errs.0.is_empty());
            for e in &errs.0 {
                assert!(
                    (e.line >= 1 && e.col >= 1)
                        || (e.file.ends_with("deploy.toml")
                            && !e.key.contains(['.', '['])
                            // An env-file value may mask part of the message (`***`).
                            && (e.message == format!("missing required key `{}`", e.key)
                                || e.message.contains("***"))),
                    "unlocated: {e:?}"
                );
                assert!(in_config || !e.to_string().contains(CANARY), "leak: {e}");
            }
        }
        Err(other) => panic!("unexpected error kind: {other}"),
    }
});
