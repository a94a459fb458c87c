#!/usr/bin/env bash
# The main job end to end: install what is needed, build urec, record a real workload (every
# readline() of an interactive bash), and report it as a table, a latency histogram and a
# flamegraph (out.svg).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
cargo build --release
urec=target/release/urec
out=$(mktemp -d)
# Record system-wide for as long as the scripted bash session runs.
"$urec" record -e bash:readline -a -o "$out/urec.data" -- python3 scripts/drive-bash.py 20 0.05
"$urec" info -i "$out/urec.data"
"$urec" report -i "$out/urec.data" --histogram
"$urec" report -i "$out/urec.data" --flamegraph out.svg
echo "flamegraph written to $PWD/out.svg"
