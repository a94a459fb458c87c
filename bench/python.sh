#!/bin/sh
# Python frames (issue 33): what reading CPython's frame chain adds to a probe hit from Python.
# The workload (bench/targets/pycalls.py) calls libz's crc32 from Python code 8 frames deep,
# under Debian's python3.11 (no frame pointers, so `-g auto` captures a DWARF stack copy), and
# times only its own loop. Configurations, each run once per repetition (alternating, so drifts
# of the shared machine hit all alike):
#   none      the loop unprobed
#   count     urec -g none (counts and latencies, no stacks)
#   native    urec -g auto with the Python walk off (UREC_NO_PYTHON=1): native stacks only
#   nosnap    the same without code snapshots (UREC_NO_PY_SNAPSHOTS=1): the walk alone
#   python    urec -g auto: native stacks and Python frames (the default)
#   bpftrace  uprobe:libz:crc32 { @[ustack] = count() } (frame pointers only: no DWARF)
# ns/call = (probed loop - unprobed loop of the same repetition) / N. Prints each run, then
# medians, python - native (the Python frames' cost) and python - nosnap (the snapshots' cost
# in the steady state: one lookup per event once every code object is named). Run as root:
#
#   bench/python.sh UREC [RUNS] [N]
set -eu
urec=$1
runs=${2:-5}
n=${3:-200000}
py=/usr/bin/python3.11
dir=$(mktemp -d /tmp/urec-python.XXXXXX)
trap 'rm -rf "$dir"' EXIT
work="$(dirname "$0")/targets/pycalls.py"
libz=$(ldd "$py" | awk '/libz\.so/ {print $3; exit}')
elapsed() { sed -nE 's/.*elapsed_ns=([0-9]+).*/\1/p' | head -1; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
percall() { awk -v p="$1" -v b="$2" -v n="$n" 'BEGIN {printf "%.0f\n", (p - b) / n}'; }
printf 'run\tcount\tnative\tnosnap\tpython\tbpftrace\t(ns/call)\n'
r=1
while [ "$r" -le "$runs" ]; do
    base=$("$py" "$work" "$n" | elapsed)
    c=$("$urec" record -q -g none -e "$libz:crc32" -o "$dir/c.data" -- "$py" "$work" "$n" | elapsed)
    nat=$(UREC_NO_PYTHON=1 "$urec" record -q -g auto -e "$libz:crc32" -o "$dir/n.data" -- "$py" "$work" "$n" | elapsed)
    ns=$(UREC_NO_PY_SNAPSHOTS=1 "$urec" record -q -g auto -e "$libz:crc32" -o "$dir/s.data" -- "$py" "$work" "$n" | elapsed)
    p=$("$urec" record -q -g auto -e "$libz:crc32" -o "$dir/p.data" -- "$py" "$work" "$n" | elapsed)
    bt=$(bpftrace -e "uprobe:$libz:crc32 { @[ustack] = count() }" -c "$py $work $n" 2> /dev/null | elapsed)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$(percall "$c" "$base")" "$(percall "$nat" "$base")" \
        "$(percall "$ns" "$base")" "$(percall "$p" "$base")" "$(percall "$bt" "$base")" | tee -a "$dir/rows"
    r=$((r + 1))
done
mc=$(cut -f2 "$dir/rows" | median)
mn=$(cut -f3 "$dir/rows" | median)
ms=$(cut -f4 "$dir/rows" | median)
mp=$(cut -f5 "$dir/rows" | median)
mb=$(cut -f6 "$dir/rows" | median)
printf 'median\t%s\t%s\t%s\t%s\t%s\n' "$mc" "$mn" "$ms" "$mp" "$mb"
awk -v p="$mp" -v q="$mn" -v s="$ms" 'BEGIN {printf "python frames add %.0f ns/call over native stacks (8 Python frames deep), of which snapshots %.0f\n", p - q, p - s}'
printf 'snapshot records in one recording: %s\n' "$(UREC_DEBUG_PYTHON=1 "$urec" record -q -g auto -e "$libz:crc32" -o "$dir/one.data" -- "$py" "$work" 1000 2>&1 >/dev/null | grep -o 'snapshots=[0-9]* snapshot_bytes=[0-9]*' | head -1)"
"$urec" report -i "$dir/p.data" --folded - 2> /dev/null | sort -t' ' -k2 -nr | head -1 |
    awk '{print "heaviest python stack: " $0}'
