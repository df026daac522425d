//! Getting deployctl: on PATH, the prebuilt binary of the action's release (checked against its
//! .sha256), or a build cached under a key that names the action's version.

use std::fs;
use std::path::{Path, PathBuf};

use std::io::Write;
use std::process::{Command, Stdio};

use super::{Ran, Scratch, action, root, script};

fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// A copy of the action's files where the runner keeps a downloaded action:
/// `<box>/_actions/OWNER/REPO/REF`.
fn action_dir(b: &Scratch, reference: &str) -> PathBuf {
    let dir = b.path(&format!("_actions/acme/deployctl/{reference}"));
    fs::create_dir_all(dir.join("src")).unwrap();
    for file in ["action.yml", "Cargo.toml", "Cargo.lock"] {
        fs::copy(root().join(file), dir.join(file)).unwrap();
    }
    fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
    dir
}

/// A fake `curl` serving `https://github.com/<path>` from `<box>/releases/<path>`, logging every
/// URL; 22 (HTTP error) for anything it does not have.
fn fake_curl(b: &Scratch) {
    fs::create_dir_all(b.path("releases")).unwrap();
    b.fake(
        "curl",
        &format!(
            r#"out=; url=
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out="$2"; shift 2 ;;
    --proto|--proto-redir|--connect-timeout|--max-time|--retry) shift 2 ;;
    -*) shift ;;
    *) url="$1"; shift ;;
  esac
done
printf '%s\n' "$url" >> '{log}'
src='{releases}'/"${{url#https://github.com/}}"
[ -f "$src" ] || exit 22
cp "$src" "$out"
"#,
            log = b.path("curl.log").display(),
            releases = b.path("releases").display()
        ),
    );
}

/// Publishes a "binary" (a script answering --version) and its .sha256 file for `reference`.
fn publish(b: &Scratch, reference: &str, sha_of: Option<&str>) {
    let dir = b.path(&format!(
        "releases/acme/deployctl/releases/download/{reference}"
    ));
    fs::create_dir_all(&dir).unwrap();
    let binary = format!("#!/bin/sh\necho 'deployctl {reference} (prebuilt)'\n");
    let name = "deployctl-x86_64-unknown-linux-musl";
    fs::write(dir.join(name), &binary).unwrap();
    let sum = sha256_hex(sha_of.unwrap_or(&binary).as_bytes());
    fs::write(
        dir.join(format!("{name}.sha256")),
        format!("{sum}  {name}\n"),
    )
    .unwrap();
}

fn install(b: &Scratch, dir: &Path, env: &[(&str, &str)]) -> Ran {
    let mut all = vec![("GITHUB_ACTION_PATH", dir.to_str().unwrap())];
    all.extend_from_slice(env);
    b.run(&script(&action(), "install"), &all)
}

fn curl_log(b: &Scratch) -> String {
    fs::read_to_string(b.path("curl.log")).unwrap_or_default()
}

#[test]
fn action_deployctl_on_path_is_used_as_it_is() {
    let b = Scratch::new();
    b.fake("deployctl", "echo 'deployctl 9.9.9'\n");
    let dir = action_dir(&b, "v1.2.3");
    let ran = install(
        &b,
        &dir,
        &[
            ("ACTION_REF", "v1.2.3"),
            ("ACTION_REPOSITORY", "acme/deployctl"),
        ],
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let bin = b.path("fake/deployctl").display().to_string();
    assert_eq!(ran.outputs, [("bin".to_string(), bin)].into());
    assert_eq!(curl_log(&b), "");
}

#[test]
fn action_prebuilt_binary_is_used_only_when_its_sha256_matches() {
    let b = Scratch::new();
    fake_curl(&b);
    let repo = ("ACTION_REPOSITORY", "acme/deployctl");
    publish(&b, "v1.2.3", None);
    let dir = action_dir(&b, "v1.2.3");
    let ran = install(&b, &dir, &[("ACTION_REF", "v1.2.3"), repo]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let bin_dir = b.path("runner/deployctl-action/v1.2.3/bin");
    assert_eq!(
        ran.outputs["bin"],
        bin_dir.join("deployctl").display().to_string()
    );
    assert!(!ran.outputs.contains_key("cache-key"), "{ran:?}");
    assert_eq!(ran.github_path, format!("{}\n", bin_dir.display()));
    assert!(
        ran.stdout.contains("deployctl v1.2.3 (prebuilt)"),
        "{ran:?}"
    );
    let url = "https://github.com/acme/deployctl/releases/download/v1.2.3/\
               deployctl-x86_64-unknown-linux-musl";
    assert_eq!(curl_log(&b), format!("{url}.sha256\n{url}\n"));

    // github.action_* empty, as composite actions can see them: the checkout's path names them.
    fs::remove_dir_all(b.path("runner/deployctl-action")).unwrap();
    let ran = install(&b, &dir, &[]);
    assert_eq!(
        ran.outputs["bin"],
        bin_dir.join("deployctl").display().to_string(),
        "{ran:?}"
    );

    // A binary that does not match its checksum is not used: a warning, then the build.
    publish(&b, "v1.2.4", Some("something else"));
    let dir = action_dir(&b, "v1.2.4");
    let ran = install(&b, &dir, &[("ACTION_REF", "v1.2.4"), repo]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stdout
            .contains("::warning::the prebuilt deployctl of v1.2.4 does not match")
    );
    assert!(!ran.outputs.contains_key("bin") && ran.outputs.contains_key("cache-key"));
    assert!(
        !b.path("runner/deployctl-action/v1.2.4").exists(),
        "the download stays around"
    );

    // No release asset: quietly on to the build.
    let ran = install(
        &b,
        &action_dir(&b, "v2.0.0"),
        &[("ACTION_REF", "v2.0.0"), repo],
    );
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(!ran.log().contains("::"), "{ran:?}");
    assert!(ran.outputs.contains_key("cache-key"), "{ran:?}");

    // A branch or a commit is no release; nor is there an arm64 binary.
    fs::write(b.path("curl.log"), "").unwrap();
    for (reference, arch) in [("main", "X64"), ("0123abc", "X64"), ("v1.2.3", "ARM64")] {
        let env = [("ACTION_REF", reference), repo, ("RUNNER_ARCH", arch)];
        let ran = install(&b, &action_dir(&b, reference), &env);
        assert!(
            ran.outputs.contains_key("cache-key"),
            "{reference} {arch}: {ran:?}"
        );
    }
    assert_eq!(curl_log(&b), "");
}

#[test]
fn action_cache_key_names_the_action_version_and_its_sources() {
    let b = Scratch::new();
    let key = |dir: &Path, reference: &str| {
        let env = [
            ("ACTION_REF", reference),
            ("ACTION_REPOSITORY", "acme/deployctl"),
        ];
        let ran = install(&b, dir, &env);
        assert_eq!(ran.code, Some(0), "{ran:?}");
        let key = ran.outputs["cache-key"].clone();
        let cache = b.path("home/.cache/deployctl-action").join(&key);
        assert_eq!(ran.outputs["cache-dir"], cache.display().to_string());
        assert!(!key.contains(',') && key.len() < 512, "{key}");
        key
    };
    let dir = action_dir(&b, "main");
    let main = key(&dir, "main");
    assert!(
        main.starts_with("deployctl-action-Linux-X64-main-"),
        "{main}"
    );
    assert_eq!(key(&dir, "main"), main, "the key is stable");
    assert!(key(&dir, "release/2.x").contains("-release_2.x-"));
    assert_ne!(key(&dir, "v1"), main);
    // A moved tag (same ref, other files) is another build.
    for file in ["Cargo.lock", "src/main.rs", "action.yml"] {
        let path = dir.join(file);
        let before = fs::read_to_string(&path).unwrap();
        fs::write(&path, format!("{before}\n# changed\n")).unwrap();
        assert_ne!(key(&dir, "main"), main, "{file} changed, the key did not");
        fs::write(&path, before).unwrap();
    }
    assert_eq!(key(&dir, "main"), main);
    // `uses: ./`: the action is the workspace, with no ref at all.
    let workspace = b.path("workspace");
    fs::rename(&dir, &workspace).unwrap();
    let ran = install(
        &b,
        &workspace,
        &[("ACTION_REF", ""), ("ACTION_REPOSITORY", "")],
    );
    let local = &ran.outputs["cache-key"];
    assert!(
        local.starts_with("deployctl-action-Linux-X64-local-"),
        "{ran:?}"
    );
    assert_eq!(
        local[local.len() - 33..],
        main[main.len() - 33..],
        "same files, same hashes"
    );
}

#[test]
fn action_build_step_uses_the_cache_or_builds_a_static_binary() {
    let b = Scratch::new();
    let build = script(&action(), "build");
    let dir = action_dir(&b, "main");
    let cache = b.path("home/.cache/deployctl-action/k");
    let calls = b.path("cargo.log");
    b.fake(
        "rustc",
        "echo 'rustc 1.99.0'; echo 'host: x86_64-unknown-linux-gnu'\n",
    );
    b.fake(
        "cargo",
        &format!(
            r#"printf '%s\n' "$*" "$CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS" >> '{calls}'
root=; while [ $# -gt 0 ]; do [ "$1" = --root ] && root="$2"; shift; done
mkdir -p "$root/bin"
printf '#!/bin/sh\necho deployctl built\n' > "$root/bin/deployctl"
chmod 755 "$root/bin/deployctl"
"#,
            calls = calls.display()
        ),
    );
    let env = |hit| {
        [
            ("CACHE_DIR", cache.to_str().unwrap()),
            ("CACHE_HIT", hit),
            ("GITHUB_ACTION_PATH", dir.to_str().unwrap()),
        ]
    };
    let bin = cache.join("bin/deployctl").display().to_string();
    let path_line = format!("{}\n", cache.join("bin").display());

    // A miss builds, static, into the cache directory, and says so for the save step.
    let ran = b.run(&build, &env(""));
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let want = format!(
        "install --locked --path {} --target x86_64-unknown-linux-gnu --root {} --bin deployctl\n\
         -C target-feature=+crt-static\n",
        dir.display(),
        cache.display()
    );
    assert_eq!(fs::read_to_string(&calls).unwrap(), want);
    assert_eq!(ran.outputs["bin"], bin);
    assert_eq!(ran.outputs["built"], "true");
    assert_eq!(ran.github_path, path_line);

    // A hit runs no cargo and saves nothing.
    fs::remove_file(&calls).unwrap();
    let ran = b.run(&build, &env("true"));
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(!calls.exists(), "cargo ran on a cache hit");
    assert_eq!(
        (ran.outputs.get("built"), &ran.outputs["bin"]),
        (None, &bin)
    );
    assert!(
        ran.stdout
            .contains("deployctl from the cache: deployctl built"),
        "{ran:?}"
    );
    assert_eq!(ran.github_path, path_line);

    // A hit whose binary does not run is rebuilt.
    fs::write(cache.join("bin/deployctl"), "garbage").unwrap();
    let ran = b.run(&build, &env("true"));
    assert_eq!(
        ran.outputs.get("built").map(String::as_str),
        Some("true"),
        "{ran:?}"
    );

    // No cargo: an error that says what to do.
    fs::remove_file(b.path("fake/cargo")).unwrap();
    let ran = b.run(&build, &env(""));
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stdout
            .contains("::error::deployctl is not on PATH, no prebuilt binary")
    );
}
