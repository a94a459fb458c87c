#!/usr/bin/env bash
# The cost and the truncated share of -g dwarf on deep stacks, before and after the per-probe
# copy size grew adaptive (docs/performance.md, "Deep stacks: the copy grows"; that growth was
# since replaced by copies to the stack's end, "Deep stacks: the copy spans the stack", so a
# NEW build's "new-8K" configuration now copies up to 64K). Run as root:
#
#   record/scripts/measure_stack_growth.sh OLD_UREC NEW_UREC [REPS] [DEEP_CALLS]
#
# Workloads: tests/fixtures/deep.c (≈40 KB of frames, no frame pointers; probe `leaf`; the
# program measures the CPU time of its own loop, uprobe handlers included) and Debian's
# sqlite3 running 5,000 INSERTs into a file in /dev/shm (synchronous=OFF, journal off: CPU
# only; probe libsqlite3's sqlite3_step; the CPU time of sqlite3, user + system, from
# getrusage). CPU time rather than wall time: the machine is shared, and the probes' cost is
# charged to the traced process. Each repetition runs every configuration once, in order.
# Prints one line per run: workload, configuration, CPU ns per call and the extra over the
# unprobed run of the same repetition, truncated stacks / entries stored.
set -euo pipefail
old=$1 new=$2 reps=${3:-3} n=${4:-20000}
here=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir" /dev/shm/urec-growth.db' EXIT
cd "$dir"
gcc -O2 -fomit-frame-pointer -fno-optimize-sibling-calls -fcf-protection=none -no-pie \
    -o deep "$here/tests/fixtures/deep.c"
{
    echo "PRAGMA synchronous=OFF; PRAGMA journal_mode=OFF;"
    echo "CREATE TABLE t(a INTEGER, b TEXT);"
    for i in $(seq 5000); do echo "INSERT INTO t VALUES($i, 'row $i some text');"; done
} > ins.sql
cat > sq.py <<'PY'
import os, resource, subprocess
if os.path.exists("/dev/shm/urec-growth.db"):
    os.unlink("/dev/shm/urec-growth.db")
with open("ins.sql") as sql:
    subprocess.run(["sqlite3", "/dev/shm/urec-growth.db"], stdin=sql, stdout=subprocess.DEVNULL)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print("CPU %.6f" % (r.ru_utime + r.ru_stime), flush=True)
PY

# truncated/entries of a recording (entry stacks: one folded line per stack).
share() {
    "$new" report -i "$1" --folded - |
        awk '{n=$NF; t+=n; if ($0 ~ /\[truncated\]/) tr+=n} END {printf "%d/%d", tr, t}'
}
configs=(none old-8K old-65528 new-8K new-64K)
args() {
    case $1 in
    old-8K) echo "$old record -q -g dwarf" ;;
    old-65528) echo "$old record -q -g dwarf --stack-size 65528" ;;
    new-8K) echo "$new record -q -g dwarf" ;;
    new-64K) echo "$new record -q -g dwarf --stack-size 64K" ;;
    esac
}
declare -A base
for r in $(seq "$reps"); do
    for c in "${configs[@]}"; do
        # deep: its own CPU ns/call.
        if [ "$c" = none ]; then
            ns=$(./deep "$n" 2>&1 >/dev/null | awk '/CPU_NS_PER_CALL/ {print $2}')
            base[deep]=$ns
            echo "rep $r deep $c ns/call $ns"
        else
            ns=$($(args "$c") -e ./deep:leaf -o d.data -- ./deep "$n" 2>&1 >/dev/null |
                awk '/CPU_NS_PER_CALL/ {print $2}')
            echo "rep $r deep $c ns/call $ns extra $(echo "$ns - ${base[deep]}" | bc) truncated $(share d.data)"
        fi
        # sqlite3: CPU time of 5,000 INSERTs; extra ns per sqlite3_step call recorded.
        if [ "$c" = none ]; then
            w=$(python3 sq.py 2>&1 | awk '/^CPU/ {print $2}')
            base[sq]=$w
            echo "rep $r sqlite3 $c cpu-s $w"
        else
            w=$($(args "$c") -e libsqlite3.so.0:sqlite3_step -o s.data -- python3 sq.py 2>&1 |
                awk '/^CPU/ {print $2}')
            tr=$(share s.data)
            calls=${tr#*/}
            echo "rep $r sqlite3 $c cpu-s $w extra-ns/call $(echo "($w - ${base[sq]}) * 1000000000 / $calls" | bc) truncated $tr"
        fi
    done
done
