#!/usr/bin/env bash
# Supply-chain checks with cargo-deny, policy in deny.toml: licences, banned and duplicate
# crates, registries and git sources, and RustSec advisories.
#
# The advisory database is a git repository on GitHub. When it cannot be fetched (a machine
# without internet access), a copy fetched earlier is used offline; with no copy at all the
# advisory check is skipped with a line that says so. The other checks never need the network
# beyond crates.io and always run.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2

if ! cargo deny --version >/dev/null 2>&1; then
    echo "cargo-deny is missing: building cargo-deny $CARGO_DENY_VERSION (takes several minutes)"
    started=$SECONDS
    cargo install --locked --version "$CARGO_DENY_VERSION" cargo-deny
    echo "cargo-deny built in $((SECONDS - started))s"
fi
cargo deny --version

echo "--- cargo deny check licenses bans sources"
cargo deny --locked check --hide-inclusion-graph licenses bans sources

echo "--- cargo deny check advisories"
db_dir="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs"
# Bounded: a network that drops packets instead of refusing must not stall CI.
if fetch_log=$(timeout 180 cargo deny --locked fetch db 2>&1); then
    cargo deny --locked check --hide-inclusion-graph advisories
elif compgen -G "$db_dir/*/crates" >/dev/null; then
    echo "advisory database unreachable: checking against the copy in $db_dir (may be stale)"
    cargo deny --locked --offline check --hide-inclusion-graph advisories
else
    # Say why, without the noise: the last line is git's reason (DNS, connection refused, ...).
    reason=$(printf '%s\n' "$fetch_log" | { grep -v '^\s*$' || true; } | tail -n 1)
    [ -n "$reason" ] || reason="no answer within 180s"
    echo "skipped: advisory database unreachable ($reason)"
fi
