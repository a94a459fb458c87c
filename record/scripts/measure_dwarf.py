#!/usr/bin/env python3
"""Per-call cost and bytes per event of urec -g fp, urec -g dwarf and perf --call-graph dwarf
on the same workload, interleaved, medians of ROUNDS (docs/performance.md "DWARF stacks").

usage (root): measure_dwarf.py [URE] [CALLS] [ROUNDS]

The workload: main -> c1 -> c2 -> c3 -> c4 -> c5 -> work, CALLS times, built -O2 once with
and once without frame pointers; the probe is `work` entry + return (first instruction
`push %rbp` / `push %rbx`, both emulated by the kernel). The program times its own loop:
ns/call = loop time / CALLS, with the probe's cost included. perf's tracefs probes are
created with `perf probe` and deleted at the end.
"""
import os, re, statistics, subprocess, sys, tempfile
from pathlib import Path

URE = sys.argv[1] if len(sys.argv) > 1 else "target/release/urec"
CALLS = int(sys.argv[2]) if len(sys.argv) > 2 else 200000
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3

# The same chain as tests/dwarf.rs.
SRC = (Path(__file__).resolve().parents[2] / "tests/fixtures/chain.c").read_text()


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {p.stderr}")
    return p.stdout + p.stderr


def ns_per_call(out):
    return float(re.search(r"NS_PER_CALL ([\d.]+)", out).group(1))


def main():
    d = tempfile.mkdtemp()
    src = os.path.join(d, "chain.c")
    open(src, "w").write(SRC)
    exes = {}
    for name, flag in [("chain_fp", "-fno-omit-frame-pointer"), ("chain_nofp", "-fomit-frame-pointer")]:
        exes[name] = os.path.join(d, name)
        run(["gcc", "-O2", flag, "-fno-optimize-sibling-calls", "-fcf-protection=none",
             "-o", exes[name], src])
    fp = exes["chain_fp"]
    run(["perf", "probe", "-q", "-x", fp, "work"])
    run(["perf", "probe", "-q", "-x", fp, "work%return"])
    rows = {}

    def add(key, ns, bpe, lost, note=""):
        rows.setdefault(key, []).append((ns, bpe, lost, note))

    def urec(key, exe, mode):
        data = os.path.join(d, "u.data")
        out = run([URE, "record", "-g", mode, "-e", f"{exe}:work", "-o", data, "--", exe, str(CALLS)])
        m = re.search(r"urec: (\d+) events .* (\d+) lost", out)
        events, lost = int(m.group(1)), int(m.group(2))
        extra = re.search(r"stacks not unwound|stacks truncated", out)
        add(key, ns_per_call(out), os.path.getsize(data) / max(events, 1), lost,
            extra.group(0) if extra else "")

    try:
        for _ in range(ROUNDS):
            add("no probe (fp build)", ns_per_call(run([fp, str(CALLS)])), 0, 0)
            urec("urec -g fp (fp build)", fp, "fp")
            urec("urec -g dwarf (fp build)", fp, "dwarf")
            urec("urec -g dwarf (no-fp build)", exes["chain_nofp"], "dwarf")
            urec("urec -g auto (no-fp build)", exes["chain_nofp"], "auto")
            pdata = os.path.join(d, "perf.data")
            out = run(["perf", "record", "-q", "-o", pdata, "--call-graph", "dwarf",
                       "-e", "probe_chain_fp:work", "-e", "probe_chain_fp:work__return",
                       "--", fp, str(CALLS)])
            stats = run(["perf", "report", "-i", pdata, "--stats"])
            # The first SAMPLE line is the total; the per-event LOST_SAMPLES lines count
            # samples the kernel dropped (perf's ring was full).
            samples = int(re.search(r"SAMPLE events:\s+(\d+)", stats).group(1))
            lost = 2 * CALLS - samples
            add("perf --call-graph dwarf (fp build)", ns_per_call(out),
                os.path.getsize(pdata) / max(samples, 1), lost,
                f"{samples} samples of {2 * CALLS}")
    finally:
        subprocess.run(["perf", "probe", "-q", "-d", "probe_chain_fp:*"])
    print(f"{CALLS} calls, entry+return probe on work, medians of {ROUNDS}")
    print("| run | ns/call | bytes/event | lost | note |")
    print("|---|---|---|---|---|")
    for key, v in rows.items():
        ns = statistics.median(x[0] for x in v)
        bpe = statistics.median(x[1] for x in v)
        lost = max(x[2] for x in v)
        print(f"| {key} | {ns:.0f} ({', '.join(f'{x[0]:.0f}' for x in v)}) | {bpe:.1f} | {lost} | {v[-1][3]} |")


main()
