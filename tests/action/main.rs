//! The composite GitHub Action (`action.yml`) and the example workflows of
//! `examples/github-actions/`: inputs reach scripts only through `env:`, the SSH key goes into an
//! ssh-agent and nowhere else, known_hosts, the prebuilt release binary and the build cache key.
//! The scripts run for real under bash as the runner runs them (`bash --noprofile --norc -eo
//! pipefail`), with the real ssh-agent, ssh-add and ssh-keygen (openssh-client) and fake `curl`,
//! `cargo` and `rustc` where the network or a build would be needed. No YAML crate: the files are
//! read by the small parser in `yaml.rs`, which knows the subset they are written in.

mod install;
mod ssh;
mod yaml;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use yaml::Node;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn action() -> Node {
    yaml::parse(&fs::read_to_string(root().join("action.yml")).unwrap())
}

fn step<'a>(action: &'a Node, id: &str) -> &'a Node {
    action["runs"]["steps"]
        .seq()
        .iter()
        .find(|s| s["id"].str() == id)
        .unwrap_or_else(|| panic!("action.yml has no step with id {id}"))
}

fn script(action: &Node, id: &str) -> String {
    step(action, id)["run"].str().to_string()
}

/// A scratch machine for one script run: HOME, TMPDIR and RUNNER_TEMP of its own, the runner's
/// files, and a PATH of the tools the scripts need plus the fakes of `fake`.
struct Scratch {
    dir: tempfile::TempDir,
}

const TOOLS: &[&str] = &[
    "bash",
    "sh",
    "env",
    "timeout",
    "cat",
    "cp",
    "mv",
    "rm",
    "mkdir",
    "chmod",
    "touch",
    "tail",
    "head",
    "grep",
    "sed",
    "awk",
    "tr",
    "cut",
    "sort",
    "xargs",
    "find",
    "sha256sum",
    "basename",
    "dirname",
    "uname",
    "id",
    "ssh",
    "ssh-agent",
    "ssh-add",
    "ssh-keygen",
];

impl Scratch {
    fn new() -> Self {
        let b = Scratch {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in ["home", "tmp", "runner", "bin", "fake"] {
            fs::create_dir(b.path(d)).unwrap();
        }
        // The tools by absolute path, so a deployctl (or cargo, curl) installed on this machine
        // never answers for a fake or for "not found".
        for tool in TOOLS {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap();
            let found = String::from_utf8(out.stdout).unwrap();
            assert!(
                out.status.success(),
                "{tool} is missing: the action's tests need bash, coreutils, findutils, gawk or \
                 mawk, and openssh-client (ssh, ssh-agent, ssh-add, ssh-keygen)"
            );
            std::os::unix::fs::symlink(found.trim(), b.path("bin").join(tool)).unwrap();
        }
        b
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn fake(&self, name: &str, body: &str) {
        let p = self.path("fake").join(name);
        fs::write(&p, format!("#!/usr/bin/env bash\n{body}")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Runs `script` the way the runner runs a `shell: bash` step, with fresh runner files.
    fn run(&self, script: &str, env: &[(&str, &str)]) -> Ran {
        let file = self.path("step.sh");
        fs::write(&file, script).unwrap();
        for f in ["github_env", "github_output", "github_path"] {
            fs::write(self.path(f), "").unwrap();
        }
        let path = format!(
            "{}:{}",
            self.path("fake").display(),
            self.path("bin").display()
        );
        let mut cmd = Command::new(self.path("bin").join("timeout"));
        cmd.args(["60", "bash", "--noprofile", "--norc", "-eo", "pipefail"])
            .arg(&file)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.path("home"))
            .env("TMPDIR", self.path("tmp"))
            .env("RUNNER_TEMP", self.path("runner"))
            .env("RUNNER_OS", "Linux")
            .env("RUNNER_ARCH", "X64")
            .env("GITHUB_ENV", self.path("github_env"))
            .env("GITHUB_OUTPUT", self.path("github_output"))
            .env("GITHUB_PATH", self.path("github_path"))
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let read = |f: &str| fs::read_to_string(self.path(f)).unwrap();
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            github_env: read("github_env"),
            outputs: read("github_output")
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            github_path: read("github_path"),
        }
    }
}

#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    github_env: String,
    outputs: BTreeMap<String, String>,
    github_path: String,
}

impl Ran {
    fn log(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
    fn env_var(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        self.github_env
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_string))
    }
}

/// An ssh-agent a test started (or the action started for it), killed on drop.
struct Agent {
    sock: String,
    pid: String,
}

impl Agent {
    fn start(b: &Scratch) -> Agent {
        let out = Command::new("ssh-agent")
            .arg("-s")
            .env("TMPDIR", b.path("tmp"))
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let field = |name: &str| {
            let at = text.find(&format!("{name}=")).unwrap() + name.len() + 1;
            text[at..].split(';').next().unwrap().to_string()
        };
        Agent {
            sock: field("SSH_AUTH_SOCK"),
            pid: field("SSH_AGENT_PID"),
        }
    }

    /// The agent a run of the SSH step started (exported through GITHUB_ENV), if any: taken
    /// right after the run, before any assertion, so that a failing test still kills it.
    fn started_by(ran: &Ran) -> Option<Agent> {
        Some(Agent {
            sock: ran.env_var("SSH_AUTH_SOCK")?,
            pid: ran.env_var("SSH_AGENT_PID")?,
        })
    }

    /// `ssh-add -l` of this agent: one line per key.
    fn keys(&self) -> String {
        let out = Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", &self.sock)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(&self.pid).status();
    }
}

/// A new ed25519 key in `dir` (outside the scratch machine's HOME, TMPDIR and RUNNER_TEMP):
/// (private key text, public key line).
fn keygen(dir: &Path, comment: &str, passphrase: &str) -> (String, String) {
    let file = dir.join(format!("key-{}", passphrase.len()));
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f"])
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    let private = fs::read_to_string(&file).unwrap();
    let public = fs::read_to_string(file.with_extension("pub")).unwrap();
    (private, public)
}

fn fingerprint(public: &str) -> String {
    let mut child = Command::new("ssh-keygen")
        .args(["-l", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(public.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().nth(1).unwrap().to_string()
}

/// Every regular file under `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if kind.is_file() {
            let data = fs::read(&path).unwrap_or_default();
            if data.windows(needle.len()).any(|w| w == needle) {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn action_inputs_reach_scripts_only_through_env() {
    let action = action();
    let declared: Vec<&str> = action["inputs"]
        .map()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    for name in ["ssh-key", "known-hosts", "docker-host", "environment"] {
        assert!(declared.contains(&name), "input {name} is not declared");
        assert!(
            !action["inputs"][name]["description"].str().is_empty(),
            "input {name} has no description"
        );
    }
    let steps = action["runs"]["steps"].seq();
    let mut used = BTreeMap::<String, Vec<String>>::new();
    for s in steps {
        let id = s["id"].str();
        for (key, value) in s.map() {
            if key == "run" {
                let text = value.str();
                assert!(!text.contains("${{"), "step {id}: an expression in run:");
                assert!(!text.contains("inputs."), "step {id}: run: names an input");
                for bad in [
                    "set -x",
                    "set -o xtrace",
                    "set -eux",
                    "set -euxo",
                    "bash -x",
                ] {
                    assert!(
                        !text.contains(bad),
                        "step {id}: {bad} would log the key's step"
                    );
                }
                // Every INPUT_* the script reads is set by its env:.
                for var in text.split(|c: char| !c.is_ascii_alphanumeric() && c != '_') {
                    if var.starts_with("INPUT_") {
                        assert!(
                            !s["env"][var].str().is_empty(),
                            "step {id}: uses {var}, which its env: does not set"
                        );
                    }
                }
                continue;
            }
            for (path, text) in value.leaves(key) {
                for part in text.split("inputs.").skip(1) {
                    let name: String = part
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                        .collect();
                    used.entry(name).or_default().push(format!("{id}.{path}"));
                }
            }
        }
    }
    for name in &declared {
        assert!(
            used.contains_key(*name),
            "input {name} is declared but never used"
        );
    }
    // The key: one env var of the SSH step, read by no other step.
    assert_eq!(used["ssh-key"], ["ssh.env.INPUT_SSH_KEY"]);
    for s in steps {
        if s["id"].str() != "ssh" {
            assert!(!s["run"].str().contains("INPUT_SSH_KEY"), "{:?}", s["id"]);
        }
    }
    let ssh = script(&action, "ssh");
    let unset = ssh
        .find("unset INPUT_SSH_KEY")
        .expect("the SSH step unsets the key's variable");
    assert!(
        unset < ssh.find("ssh-agent -s").unwrap(),
        "ssh-agent would inherit the key"
    );
    assert!(ssh.contains("| SSH_ASKPASS=false SSH_ASKPASS_REQUIRE=force ssh-add -q -"));
    // The version of the action names its build: ref and lock file go into the cache key.
    let install = step(&action, "install");
    assert_eq!(
        install["env"]["ACTION_REF"].str(),
        "${{ github.action_ref }}"
    );
    assert_eq!(
        install["env"]["ACTION_REPOSITORY"].str(),
        "${{ github.action_repository }}"
    );
    let key = "${{ steps.install.outputs.cache-key }}";
    let dir = "${{ steps.install.outputs.cache-dir }}";
    let restore = step(&action, "restore");
    assert!(restore["uses"].str().starts_with("actions/cache/restore@"));
    assert_eq!(
        (restore["with"]["key"].str(), restore["with"]["path"].str()),
        (key, dir)
    );
    let save = steps
        .iter()
        .find(|s| s["uses"].str().starts_with("actions/cache/save@"))
        .expect("a step saves the build");
    assert_eq!(
        (save["with"]["key"].str(), save["with"]["path"].str()),
        (key, dir)
    );
    assert_eq!(save["if"].str(), "steps.build.outputs.built == 'true'");
    // A cache service that fails must not fail the deploy.
    for s in [restore, save] {
        assert_eq!(s["continue-on-error"].str(), "true", "{:?}", s["name"]);
    }
    assert_eq!(
        step(&action, "deployctl")["env"]["INPUT_BIN"].str(),
        "${{ steps.install.outputs.bin || steps.build.outputs.bin }}"
    );
}

/// The steps of every job of a workflow that run this action (`uses: ./` or `…/deployctl@…`),
/// with their job.
fn action_uses(workflow: &Node) -> Vec<(&str, &Node, &Node)> {
    let mut found = Vec::new();
    for (name, job) in workflow["jobs"].map() {
        for s in job["steps"].seq() {
            let uses = s["uses"].str();
            if uses == "./" || uses.contains("/deployctl@") {
                found.push((name.as_str(), job, s));
            }
        }
    }
    found
}

#[test]
fn example_workflows_pass_declared_inputs_one_deploy_per_environment_at_a_time() {
    let action = action();
    let inputs: Vec<&str> = action["inputs"]
        .map()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    let mut files: Vec<PathBuf> = fs::read_dir(root().join("examples/github-actions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    let mut over_ssh = Vec::new();
    for file in &files {
        let workflow = yaml::parse(&fs::read_to_string(file).unwrap());
        let f = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            workflow["on"]["push"]["branches"].str().contains("main"),
            "{f}"
        );
        let uses = action_uses(&workflow);
        assert!(!uses.is_empty(), "{f} does not run the action");
        let mut groups = Vec::new();
        for (job_name, job, s) in uses {
            let with = &s["with"];
            for (key, _) in with.map() {
                assert!(
                    inputs.contains(&key.as_str()),
                    "{f} {job_name}: unknown input {key}"
                );
            }
            let environment = with["environment"].str();
            assert_eq!(
                job["environment"]["name"].str(),
                environment,
                "{f} {job_name}"
            );
            let group = job["concurrency"]["group"].str();
            assert!(
                group.contains(environment),
                "{f} {job_name}: group {group:?}"
            );
            assert_eq!(job["concurrency"]["cancel-in-progress"].str(), "false");
            groups.push(group);
            if with["docker-host"].str().starts_with("ssh://") {
                over_ssh.push((f.clone(), with.clone()));
            }
        }
        let distinct: std::collections::BTreeSet<_> = groups.iter().collect();
        assert_eq!(
            distinct.len(),
            groups.len(),
            "{f}: environments share a group"
        );
        for (job_name, job) in workflow["jobs"].map() {
            for s in job["steps"].seq() {
                assert!(
                    !s["run"].str().contains("${{"),
                    "{f} {job_name}: expression in run:"
                );
            }
        }
    }
    assert!(!over_ssh.is_empty(), "no example deploys over SSH");
    for (f, with) in over_ssh {
        assert_eq!(
            with["docker-host"].str(),
            "ssh://deploy@${{ vars.DEPLOY_HOST }}",
            "{f}"
        );
        assert_eq!(
            with["ssh-key"].str(),
            "${{ secrets.DEPLOY_SSH_KEY }}",
            "{f}"
        );
        assert_eq!(
            with["known-hosts"].str(),
            "${{ vars.DEPLOY_KNOWN_HOSTS }}",
            "{f}"
        );
    }
}
