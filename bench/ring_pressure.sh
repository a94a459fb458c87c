#!/bin/sh
# The ring-pressure workload of issue 26: sqlite3 building a table of ROWS rows (one INSERT
# from a recursive CTE, a printf'd name each: ≈2 mallocs a row, 60,700 for 30,000), recorded with `urec record -e libc:malloc` and
# default options, RUNS times. Prints per run the events written, events lost, the stacks
# marked [truncated] (the report's folded output, weighted), the stack bytes copied per event
# (-v), the calls the report counts (the kernel's when events were lost or sampled), the
# calls sampled out under ring pressure, the folded stacks' weighted total and the share of
# it that is whole (no [truncated]), then the medians. Run as root:
#
#   bench/ring_pressure.sh UREC [RUNS] [ROWS] [EXTRA URECORD ARGS...]
#
# e.g. bench/ring_pressure.sh target/release/urec 5 30000
# The machine's load moves these numbers a lot (the loss is a race between the workload and
# the recorder for 2 shared cores): compare medians of alternating runs.
set -eu
urec=$1
runs=${2:-5}
rows=${3:-30000}
shift $(( $# < 3 ? $# : 3 ))
dir=$(mktemp -d /tmp/urec-ring-pressure.XXXXXX)
trap 'rm -rf "$dir"' EXIT
{
    echo "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL);"
    echo "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<$rows)"
    echo "INSERT INTO t SELECT x, printf('name-%d', x), x*1.5 FROM c;"
} > "$dir/work.sql"
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
printf 'run\tevents\tlost\ttruncated\tstacks\tbytes/stack\tcalls\tsampled\tweighted\twhole%%\n'
r=1
while [ "$r" -le "$runs" ]; do
    rm -f "$dir/w.db"
    "$urec" record -v "$@" -e libc:malloc -o "$dir/u.data" -- \
        sqlite3 "$dir/w.db" ".read $dir/work.sql" > /dev/null 2> "$dir/err"
    line=$(grep -E '^urec: [0-9,]+ events' "$dir/err" | tail -1)
    events=$(echo "$line" | sed -E 's/^urec: ([0-9,]+) events.*/\1/' | tr -d ,)
    lost=$(echo "$line" | sed -E 's/.* ([0-9,]+) lost.*/\1/' | tr -d ,)
    stacks=$(echo "$line" | sed -E 's/.*; ([0-9,]+) stacks?$/\1/' | tr -d ,)
    copied=$(grep -Eo '[0-9]+ stack bytes copied each' "$dir/err" | cut -d' ' -f1 || true)
    truncated=$("$urec" report -i "$dir/u.data" --folded - 2> /dev/null |
        awk '/\[truncated\]/ {n += $NF} END {print n + 0}')
    "$urec" report -i "$dir/u.data" --json - > "$dir/r.json" 2> /dev/null
    calls=$(jq '[.functions[] | select(.symbol == "malloc") | .calls] | add // 0' "$dir/r.json")
    sampled=$(jq '[.functions[] | select(.symbol == "malloc") | .sampled // 0] | add // 0' "$dir/r.json")
    weighted=$("$urec" report -i "$dir/u.data" --folded - 2> /dev/null | awk '{n += $NF} END {print n + 0}')
    whole=$(awk -v w="$weighted" -v t="$truncated" 'BEGIN {printf "%.1f", w ? 100 * (w - t) / w : 0}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$events" "$lost" "$truncated" \
        "$stacks" "${copied:--}" "$calls" "$sampled" "$weighted" "$whole" |
        tee -a "$dir/rows"
    r=$((r + 1))
done
printf 'median\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
    "$(cut -f2 "$dir/rows" | median)" "$(cut -f3 "$dir/rows" | median)" \
    "$(cut -f4 "$dir/rows" | median)" "$(cut -f5 "$dir/rows" | median)" \
    "$(cut -f6 "$dir/rows" | grep -v - | median)" "$(cut -f7 "$dir/rows" | median)" \
    "$(cut -f8 "$dir/rows" | median)" "$(cut -f9 "$dir/rows" | median)" \
    "$(cut -f10 "$dir/rows" | median)"
