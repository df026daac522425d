#!/bin/sh
# Builds the static demo-app binary and puts it in examples/demo-app/dist/ for the Dockerfile.
# Usage: examples/demo-app/build.sh   (from anywhere; respects CARGO_TARGET_DIR)
set -eu

script_dir=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
repo_root=$(CDPATH= cd -- "$script_dir/../.." && pwd)

cd "$repo_root"
cargo build --release --example demo-app

target_dir=${CARGO_TARGET_DIR:-$repo_root/target}
# A relative CARGO_TARGET_DIR is relative to where cargo ran: the repo root.
case $target_dir in
    /*) ;;
    *) target_dir=$repo_root/$target_dir ;;
esac
binary=$target_dir/x86_64-unknown-linux-gnu/release/examples/demo-app

if [ ! -f "$binary" ]; then
    echo "build.sh: $binary not found after the build" >&2
    exit 1
fi

mkdir -p "$script_dir/dist"
# Copy to a temporary name and rename, so a concurrent docker build never sees half a file.
cp "$binary" "$script_dir/dist/demo-app.tmp"
chmod 755 "$script_dir/dist/demo-app.tmp"
mv -f "$script_dir/dist/demo-app.tmp" "$script_dir/dist/demo-app"
echo "build.sh: wrote $script_dir/dist/demo-app"
