#!/usr/bin/env bash
# Runs every test of the workspace, the ones that attach real probes included (they need root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
export CI="${CI:-true}"   # privileged tests fail loudly instead of skipping
cargo build --workspace --all-targets
log=$(mktemp)
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
# The report side must build without libbpf, clang or the recorder.
cargo build --no-default-features -p urec
# House rules: formatted, and clippy-clean with warnings as errors.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# One closing line with the totals of every test binary above.
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
rm -f "$log"
