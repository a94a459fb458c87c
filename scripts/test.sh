#!/usr/bin/env bash
# Runs every test of the workspace, the ones that attach real probes included (they need root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
export CI="${CI:-true}"   # privileged tests fail loudly instead of skipping
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast
# The report side must build without libbpf, clang or the recorder.
cargo build --no-default-features -p urec
# House rules: formatted, and clippy-clean with warnings as errors.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
