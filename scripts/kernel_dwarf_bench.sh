#!/bin/bash
# -g fp vs -g dwarf vs -g kernel-dwarf on tests/fixtures/chain.c built without frame pointers
# (docs/performance.md, "In-kernel DWARF stacks"): alternating runs of
#   urec record -v -g MODE -e kdbenchchain:work -- kdbenchchain N
# printing per run the workload's ns/call, the BPF session program's ns/run (bpf_stats) and
# the recorder's CPU per call during the workload's loop. Root; a release build.
# Usage: scripts/kernel_dwarf_bench.sh [N=1000000] [REPS=5] [MODES="fp dwarf kernel-dwarf"]
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
U=$ROOT/target/release/urec
N=${1:-1000000}; REPS=${2:-5}; MODES=${3:-"fp dwarf kernel-dwarf"}
DIR=$(mktemp -d /tmp/urec-kd-bench.XXXXXX)
cd "$DIR"
# A name of its own: other jobs on the machine may run a `chain`.
gcc -O2 -fomit-frame-pointer -fno-optimize-sibling-calls -fcf-protection=none -no-pie \
    -o kdbenchchain "$ROOT/tests/fixtures/chain.c"
sysctl -qw kernel.bpf_stats_enabled=1
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
for r in $(seq "$REPS"); do
  for m in $MODES; do
    "$U" record -v -g "$m" -e ./kdbenchchain:work -o "$DIR/b.data" -- \
        bash -c "sleep 2; ./kdbenchchain $N 2>$DIR/ns.txt" >/dev/null 2>"$DIR/err.txt" &
    p=$!
    sleep 1.5
    t0=$(ticks $p)
    while ! pgrep -x kdbenchchain >/dev/null; do sleep 0.01; done
    sfd=""
    for fd in /proc/$p/fd/*; do
      i=/proc/$p/fdinfo/$(basename "$fd")
      grep -q "prog_type:\s*2" "$i" 2>/dev/null && sfd="$sfd $i"
    done
    prog=""
    while pgrep -x kdbenchchain >/dev/null; do
      for i in $sfd; do
        c=$(awk '/run_cnt/{print $2}' "$i" 2>/dev/null)
        t=$(awk '/run_time_ns/{print $2}' "$i" 2>/dev/null)
        [ -n "$c" ] && [ "$c" -gt 100000 ] && prog="$((t / c))"
      done
      sleep 0.05
    done
    t1=$(ticks $p)
    wait
    ns=$(awk '/NS_PER_CALL/{print $2}' "$DIR/ns.txt")
    kd=$(grep -o "kernel-dwarf: [0-9]* of [0-9]*" "$DIR/err.txt")
    samp=$(grep -o "[0-9]* calls sampled" "$DIR/err.txt")
    echo "$r $m ns_per_call=$ns bpf_ns_per_run=$prog reader_cpu_ns_per_call=$(( (t1 - t0) * 10000000 / N )) ${samp:-0 sampled} $kd"
  done
done
rm -rf "$DIR"
