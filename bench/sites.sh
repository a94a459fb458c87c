#!/bin/sh
# Probe sites (issue 29): the hammer workload (bench/targets/hammer.c) built the way Ubuntu
# 24.04 and Fedora build (`-fcf-protection -fno-omit-frame-pointer`: `hot` starts
# `endbr64; push %rbp`) and without `-fcf-protection` (`hot` starts `push %rbp`), probed on
# `hot` entry+return by urec's defaults and by bpftrace's
#   uprobe:BIN:hot { @s[tid] = nsecs } uretprobe:BIN:hot { @ = hist(nsecs - @s[tid]) }
# RUNS repetitions, each running every configuration once (alternating, so drifts of the
# shared machine hit all alike). ns/call = (probed loop - unprobed loop of the same build and
# repetition) / N, as bench/run computes it. Prints each run, then medians. Run as root:
#
#   bench/sites.sh UREC [RUNS] [N]
#
# e.g. bench/sites.sh target/release/urec 5 200000
set -eu
urec=$1
runs=${2:-5}
n=${3:-200000}
dir=$(mktemp -d /tmp/urec-sites.XXXXXX)
trap 'rm -rf "$dir"' EXIT
src=$(dirname "$0")/targets/hammer.c
gcc -O1 -g -fno-omit-frame-pointer -fcf-protection -o "$dir/endbr" "$src"
gcc -O1 -g -fno-omit-frame-pointer -fcf-protection=none -o "$dir/plain" "$src"
for b in endbr plain; do
    printf '%s: hot starts with: %s\n' "$b" "$(objdump -d --no-show-raw-insn "$dir/$b" |
        awk '/<hot>:/ {getline; sub(/^[ \t]*[0-9a-f]+:[ \t]*/, ""); print; exit}')"
done
elapsed() { sed -nE 's/.*elapsed_ns=([0-9]+).*/\1/p' | head -1; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
percall() { awk -v p="$1" -v b="$2" -v n="$n" 'BEGIN {printf "%.0f\n", (p - b) / n}'; }
printf 'run\turec endbr\turec plain\tbpftrace endbr\t(ns/call)\n'
r=1
while [ "$r" -le "$runs" ]; do
    base_e=$("$dir/endbr" "$n" | elapsed)
    base_p=$("$dir/plain" "$n" | elapsed)
    ue=$("$urec" record -q -e "$dir/endbr:hot" -o "$dir/u.data" -- "$dir/endbr" "$n" | elapsed)
    up=$("$urec" record -q -e "$dir/plain:hot" -o "$dir/u.data" -- "$dir/plain" "$n" | elapsed)
    bt=$(bpftrace -e "uprobe:$dir/endbr:hot { @s[tid] = nsecs } uretprobe:$dir/endbr:hot { @ = hist(nsecs - @s[tid]) }" \
        -c "$dir/endbr $n" 2> /dev/null | elapsed)
    a=$(percall "$ue" "$base_e")
    b=$(percall "$up" "$base_p")
    c=$(percall "$bt" "$base_e")
    printf '%s\t%s\t%s\t%s\n' "$r" "$a" "$b" "$c" | tee -a "$dir/rows"
    r=$((r + 1))
done
me=$(cut -f2 "$dir/rows" | median)
mp=$(cut -f3 "$dir/rows" | median)
mb=$(cut -f4 "$dir/rows" | median)
printf 'median\t%s\t%s\t%s\n' "$me" "$mp" "$mb"
awk -v e="$me" -v p="$mp" -v b="$mb" 'BEGIN {
    printf "urec endbr / urec plain = %.2fx (goal <= 1.2x); urec endbr / bpftrace endbr = %.3fx (goal <= 0.1x)\n",
        e / p, e / b }'
