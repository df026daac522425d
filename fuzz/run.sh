#!/usr/bin/env bash
# Coverage-guided fuzzing of the configuration loader with cargo-fuzz (libFuzzer).
#
#   bash fuzz/run.sh [SECONDS]     # default 60
#
# cargo-fuzz wants a nightly toolchain; RUSTC_BOOTSTRAP=1 lets the stable one accept the
# flags it passes, and `-s none` skips AddressSanitizer (safe Rust; sanitizers need nightly).
# The corpus starts from the valid fixture and grows in fuzz/corpus/; a crash is saved in
# fuzz/artifacts/ with the command that reproduces it.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: building it (a few minutes)"
    cargo install --locked cargo-fuzz
fi
mkdir -p corpus/config_load
cp ../tests/fixtures/config/valid/deploy.toml corpus/config_load/valid-deploy.toml
export RUSTC_BOOTSTRAP=1
cargo fuzz run --sanitizer none config_load corpus/config_load -- -max_total_time="$seconds"
