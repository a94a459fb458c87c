#!/usr/bin/env bash
# Installs what building and testing urec needs on Debian 12 (run as root). Idempotent.
#   clang, libelf-dev, zlib1g-dev, pkg-config, make: the BPF programs (libbpf-cargo, libbpf-sys)
#   gcc, g++, binutils: test fixtures are C/C++ programs the tests build themselves
#   strace: a test checks which system calls hand the output file over (fchown, never chown)
#   python3: drives an interactive bash through a pty in the tests
#   python3.11: Debian's CPython, whose Python frames tests/python.rs checks in native stacks
#   libc6-dbg: libc's symbols and DWARF (Debian strips libc), so tests can name its frames
#   bpftrace: the oracle a test compares counts with; also a benchmark peer
#   gdb: the independent unwinder whose backtraces tests/kernel_dwarf.rs compares stacks with
#   systemtap-sdt-dev: <sys/sdt.h>, for the USDT test target (tests/usdt.rs)
#   debuginfod: the real server tests/debuginfod.rs fetches debug files from (never a mock)
#   golang-go: `go tool pprof`, the real client tests/exports.rs reads `report --pprof` with
#   python3-venv + pip perfetto, protobuf (in $UREC_VENV, default ~/.cache/urec/venv): Perfetto's
#     own protos, which tests/exports.rs decodes `report --perfetto` with
#   util-linux, mount: unshare and mount -t overlay make the containers of tests/containers.rs
#   linux-perf, bpfcc-tools, time: benchmark peers (UREC_BENCH_DEPS=1)
set -euo pipefail
need=(clang libelf-dev zlib1g-dev pkg-config make gcc g++ binutils python3 python3.11 file libc6-dbg bpftrace gdb strace systemtap-sdt-dev debuginfod golang-go python3-venv util-linux mount)
if [ "${UREC_BENCH_DEPS:-0}" = 1 ]; then need+=(linux-perf bpfcc-tools time); fi
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  # Debian 12's own cargo is too old for the workspace's rust-version; rustup brings a current one.
  apt-get install -y -qq curl ca-certificates
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
venv="${UREC_VENV:-$HOME/.cache/urec/venv}"
if ! "$venv/bin/python" -c 'import perfetto.protos.perfetto.trace.perfetto_trace_pb2' >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q perfetto protobuf
fi
