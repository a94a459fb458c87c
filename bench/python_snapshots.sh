#!/bin/sh
# Python code snapshots (docs/python-frames.md): what they cost a probe hit from Python in the
# steady state (every code object named: the stack hash folded in the walk, one
# `py_stacks_named` lookup per event). The workload (targets/pycalls.py) calls libz's crc32
# from Python code 9 frames deep under Debian's python3.11 (`-g auto`: DWARF), and times only
# its own loop. Configurations, alternating in each repetition:
#   native    UREC_NO_PYTHON=1: native stacks only
#   nosnap    UREC_NO_PY_SNAPSHOTS=1: the Python walk, no snapshots (nor their hash)
#   snap      the default
# ns/call = (probed loop - unprobed loop of the same repetition) / N; prints each run, the
# medians, the median of the per-run differences snap - nosnap, and the snapshot records one
# recording sent. Run as root:
#
#   bench/python_snapshots.sh UREC [RUNS] [N]
set -eu
urec=$1
runs=${2:-7}
n=${3:-200000}
py=/usr/bin/python3.11
dir=$(mktemp -d /tmp/urec-pysnap.XXXXXX)
trap 'rm -rf "$dir"' EXIT
work="$(dirname "$0")/targets/pycalls.py"
libz=$(ldd "$py" | awk '/libz\.so/ {print $3; exit}')
elapsed() { sed -nE 's/.*elapsed_ns=([0-9]+).*/\1/p' | head -1; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
percall() { awk -v p="$1" -v b="$2" -v n="$n" 'BEGIN {printf "%.0f\n", (p - b) / n}'; }
printf 'run\tnative\tnosnap\tsnap\t(ns/call)\n'
r=1
while [ "$r" -le "$runs" ]; do
    base=$("$py" "$work" "$n" | elapsed)
    nat=$(UREC_NO_PYTHON=1 "$urec" record -q -g auto -e "$libz:crc32" -o "$dir/n.data" -- "$py" "$work" "$n" | elapsed)
    ns=$(UREC_NO_PY_SNAPSHOTS=1 "$urec" record -q -g auto -e "$libz:crc32" -o "$dir/s.data" -- "$py" "$work" "$n" | elapsed)
    p=$(UREC_DEBUG_PYTHON=1 "$urec" record -q -g auto -e "$libz:crc32" -o "$dir/p.data" -- "$py" "$work" "$n" 2> "$dir/p.err" | elapsed)
    printf '%s\t%s\t%s\t%s\n' "$r" "$(percall "$nat" "$base")" "$(percall "$ns" "$base")" \
        "$(percall "$p" "$base")" | tee -a "$dir/rows"
    r=$((r + 1))
done
printf 'median\t%s\t%s\t%s\n' "$(cut -f2 "$dir/rows" | median)" "$(cut -f3 "$dir/rows" | median)" \
    "$(cut -f4 "$dir/rows" | median)"
awk -F'\t' '{print $4 - $3}' "$dir/rows" | median |
    awk '{printf "code snapshots add %.0f ns/call (median of the per-run differences)\n", $1}'
grep -o 'snapshots=[0-9]* snapshot_bytes=[0-9]*' "$dir/p.err" || true
