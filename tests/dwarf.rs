#![cfg(feature = "record")]
//! End-to-end tests of DWARF stacks (`-g dwarf`, and `-g auto` choosing it): a C program built
//! without frame pointers, with a 6-deep call chain under `main`, one whose frames take ≈40 KB,
//! one calling a function 200 times at once from 30 KB deep (in the main thread and in a
//! pthread: every stack whole from the first call), and Debian's bash reading lines
//! interactively. Ground truth is exact: every stack must be the full chain to `main`.
//!
//! They need root (BPF and system-wide perf events). Without it they skip with a message,
//! unless `CI=true`, where they fail loudly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::fixture::Fixture;
use common::recording::Recording;
use common::{have_root, record, urec_ok};
use urec_format::{EventKind, StackMode};

/// `main` calls `c1` N times; `c1 → c2 → c3 → c4 → c5 → work`. Built `-O2 -fomit-frame-pointer`:
/// none of them sets up a frame pointer. `noipa` keeps every call a real call (no inlining, no
/// clones), `-fno-optimize-sibling-calls` keeps each caller's frame on the stack.
const CHAIN_C: &str = include_str!("fixtures/chain.c");

const CALLS: usize = 1000;

/// `main → d1 → d2 → d3 → d4 → leaf`, each `d*` with a 10,000-byte array it writes page by
/// page: ≈40 KB of frames, so the unwind needs a copy of more than 32K.
const DEEP_C: &str = include_str!("fixtures/deep.c");

/// `rec` 30 levels deep (≈30 KB), then 200 calls of `probed` back to back, in the main thread
/// or a pthread (or 4 each in 50 pthreads, with another thread mapping memory).
const BURST_C: &str = include_str!("fixtures/burst.c");

/// The chain, built non-PIE (its `nm` addresses are those in the process).
fn chain() -> Fixture {
    let chain = Fixture::build(
        "chain",
        CHAIN_C,
        &[
            "-O2",
            "-fomit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-fcf-protection=none",
            "-no-pie",
        ],
    );
    // The probed function starts with `push %rbx`, which the kernel emulates (a
    // single-stepped first instruction would cost 10-20 µs a hit; correctness is the same).
    assert_eq!(
        first_byte(&chain, "work"),
        0x53,
        "work starts with push %rbx"
    );
    chain
}

/// The first code byte of a function (non-PIE: file offset = address - 0x400000).
fn first_byte(chain: &Fixture, name: &str) -> u8 {
    let (addr, _) = chain.symbols[name];
    std::fs::read(&chain.exe).unwrap()[(addr - 0x400000) as usize]
}

/// Runs `urec record -q ARGS -o DATA -- chain` (DATA in the chain's directory), which must
/// succeed, and reads the recording.
fn record_chain(chain: &Fixture, args: &[&str], data: &str) -> (PathBuf, Recording) {
    let out = chain.data(data);
    record_ok(&[args, &["-o", out.to_str().unwrap(), "--", chain.path()]].concat());
    let rec = Recording::read(&out);
    (out, rec)
}

/// Runs `urec record -q ARGS` to completion (the workload's stdout discarded); it must succeed.
fn record_ok(args: &[&str]) {
    let o = record(&["-q"])
        .args(args)
        .stdout(Stdio::null())
        .output()
        .expect("running urec");
    assert!(o.status.success(), "urec record {args:?}: {o:?}");
}

/// `urec report -i DATA --folded -`, which must succeed.
fn folded(data: &Path) -> String {
    urec_ok(&["report", "-i", data.to_str().unwrap(), "--folded", "-"])
}

/// Every entry stack of `probe` must be exactly `chain` (innermost first) and then leave the
/// program (into libc's start code) and not be truncated.
fn assert_entry_stacks(chain: &Fixture, rec: &Recording, probe: u32, expect: &[&str]) {
    let mut n = 0;
    for e in &rec.events {
        if e.probe != probe || e.kind != EventKind::Entry {
            continue;
        }
        n += 1;
        let stack = rec.stack_of(e, "entries carry a stack");
        let names = chain.names(stack);
        assert_eq!(&names[..expect.len()], expect, "stack {names:?}");
        assert!(!stack.truncated, "stack {names:?} truncated");
        // Below main: __libc_start_call_main, __libc_start_main, _start.
        assert!(stack.frames.len() > expect.len() + 1, "stack {names:?}");
    }
    assert_eq!(n, CALLS);
}

#[test]
fn default_options_unwind_a_chain_without_frame_pointers() {
    if !have_root() {
        return;
    }
    let chain = chain();
    let spec = format!("{}:work", chain.path());
    let (_, rec) = record_chain(&chain, &["-e", &spec], "auto.data");
    assert_eq!(rec.probes.len(), 1);
    assert_eq!(
        rec.probes[0].stack_mode,
        StackMode::Dwarf,
        "-g auto chose DWARF"
    );
    assert_eq!(rec.total_lost(), 0);
    assert_entry_stacks(
        &chain,
        &rec,
        0,
        &["work", "c5", "c4", "c3", "c2", "c1", "main"],
    );
    // One call path: one stack.
    assert_eq!(rec.stacks.len(), 1);
}

#[test]
fn pending_uretprobe_on_an_outer_function() {
    if !have_root() {
        return;
    }
    let chain = chain();
    let work = format!("{}:work", chain.path());
    let c2 = format!("{}:c2", chain.path());
    let (_, rec) = record_chain(
        &chain,
        &["-g", "dwarf", "-e", &work, "-e", &c2],
        "pending.data",
    );
    assert_eq!(rec.total_lost(), 0);
    let returns = rec
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Return)
        .count();
    assert_eq!(returns, 2 * CALLS);
    // c2's return probe is pending while work runs: its return address in the stack copy is
    // the trampoline's, and the recorder puts the original back.
    assert_entry_stacks(
        &chain,
        &rec,
        0,
        &["work", "c5", "c4", "c3", "c2", "c1", "main"],
    );
    assert_entry_stacks(&chain, &rec, 1, &["c2", "c1", "main"]);
}

#[test]
fn a_short_stack_copy_is_truncated_not_wrong() {
    if !have_root() {
        return;
    }
    let chain = chain();
    let spec = format!("{}:work", chain.path());
    let out = chain.data("short.data");
    // Not -q: the summary is checked too.
    let o = record(&["-g", "dwarf", "--stack-size", "16", "-e", &spec])
        .args(["-o", out.to_str().unwrap(), "--", chain.path()])
        .stdout(Stdio::null())
        .output()
        .expect("running urec");
    assert!(o.status.success(), "{o:?}");
    let rec = Recording::read(&out);
    let entries: Vec<_> = rec
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Entry)
        .collect();
    assert_eq!(entries.len(), CALLS);
    // 16 bytes hold work's return address (into c5) and c5's 8 bytes of alignment; c5's
    // return address (into c4) lies beyond. The cap is the cap: every stack, first to last,
    // is that true prefix, marked truncated.
    for e in &entries {
        let stack = rec.stack_of(e, "a stack");
        let names = chain.names(stack);
        assert!(stack.truncated, "{names:?}");
        assert_eq!(names, ["work", "c5"]);
    }
    let text = folded(&out);
    assert_eq!(
        text.trim_end(),
        format!("chain;[truncated];c5;work {CALLS}"),
        "{text}"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!(
            "{CALLS} stacks truncated ({CALLS} ran off the end of a stack copy cut at \
             --stack-size 16, which goes up to 64K)"
        )),
        "{stderr}"
    );
}

#[test]
fn interactive_bash_readline_reaches_main() {
    if !have_root() {
        return;
    }
    let Some(bash) = common::bash() else {
        return;
    };
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/drive-bash.py");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bash.data");
    let args = [
        "-v",
        "-e",
        "bash:readline",
        "-a",
        "-o",
        out.to_str().unwrap(),
        "--",
        "python3",
        driver.to_str().unwrap(),
        "10",
        "0.05",
        bash.to_str().unwrap(),
    ];
    let o = record(&args)
        .stdout(Stdio::null())
        .output()
        .expect("running urec");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "urec record {args:?}: {stderr}");
    let text = folded(&out);
    let json = urec_ok(&["report", "-i", out.to_str().unwrap(), "--json", "-"]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        report["functions"][0]["calls"], 11,
        "10 lines + exit, counted: {stderr}\n{text}"
    );
    // Only the driven bash reads lines (-a also sees any other bash reading, e.g. a user's).
    let mut calls = 0;
    for line in text.lines() {
        let (stack, count) = line.rsplit_once(' ').unwrap();
        let count: u64 = count.parse().unwrap();
        assert!(
            stack.contains(";main;reader_loop;read_command;parse_command;yyparse;")
                && stack.ends_with(";readline")
                && !stack.contains("[truncated]"),
            "stack {stack}"
        );
        calls += count;
    }
    assert_eq!(calls, 11, "10 lines + exit, with stacks: {text}\n{stderr}");
}

/// The deep-stack fixture, built like the chain (non-PIE, no frame pointers).
fn deep() -> Fixture {
    Fixture::build(
        "deep",
        DEEP_C,
        &[
            "-O2",
            "-fomit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-fcf-protection=none",
            "-no-pie",
        ],
    )
}

/// The burst fixture, built like the chain (non-PIE, no frame pointers), with pthreads.
fn burst() -> Fixture {
    Fixture::build(
        "burst",
        BURST_C,
        &[
            "-O2",
            "-fomit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-fcf-protection=none",
            "-no-pie",
            "-pthread",
        ],
    )
}

/// Records the burst fixture (`-g dwarf`, default `--stack-size`, `-v`) in `thread` ("main",
/// "thread" or "churn"); returns the recording and urec's stderr.
fn record_burst(burst: &Fixture, thread: &str) -> (Recording, String) {
    let spec = format!("{}:probed", burst.path());
    let out = burst.data(&format!("burst-{thread}.data"));
    let o = record(&[
        "-v",
        "-g",
        "dwarf",
        "-e",
        &spec,
        "-o",
        out.to_str().unwrap(),
    ])
    .args(["--", burst.path(), thread])
    .stdout(Stdio::null())
    .output()
    .expect("running urec");
    assert!(o.status.success(), "{o:?}");
    (
        Recording::read(&out),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The average stack bytes copied per event, from `-v`'s "N stack bytes copied each".
fn copied_each(stderr: &str) -> f64 {
    let line = stderr
        .lines()
        .find(|l| l.contains("stack bytes copied each"))
        .unwrap_or_else(|| panic!("no copy size in {stderr}"));
    let before = line.split(" stack bytes copied each").next().unwrap();
    before.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Every one of the burst's 200 entry stacks is exactly `expect` (innermost first), whole.
/// On a loaded machine the programs may sample calls under ring pressure (SPEC.md, "Exact at
/// any rate"; seen: 164 events under a parallel build): then every recorded stack must still
/// be whole, and the kernel's counts say the 200 calls were all made and which were sampled.
fn assert_burst_stacks(burst: &Fixture, rec: &Recording, expect: &[&str]) {
    assert_eq!(rec.total_lost(), 0);
    let mut whole = 0u64;
    for e in rec.events.iter().filter(|e| e.kind == EventKind::Entry) {
        let stack = rec.stack_of(e, "entries carry a stack");
        let names = burst.names(stack);
        assert!(!stack.truncated, "stack {names:?} truncated");
        assert_eq!(names, expect, "stack {names:?}");
        whole += 1;
    }
    let counted = rec.aggregates.values().map(|a| a.calls).sum::<u64>();
    let sampled = rec.aggregates.values().map(|a| a.sampled).sum::<u64>();
    assert_eq!(counted, 200, "calls counted in the kernel");
    assert_eq!(whole + sampled, 200, "{whole} recorded, {sampled} sampled");
}

/// `probed`, then `rec` 30 times.
fn burst_frames() -> Vec<&'static str> {
    let mut v = vec!["probed"];
    v.extend(std::iter::repeat_n("rec", 30));
    v
}

/// 200 calls at once from 30 KB deep: the copy spans the stack from the first event (a copy
/// that grew only once the recorder had seen a truncated unwind lost the whole burst).
#[test]
fn a_deep_burst_is_whole_from_the_first_call() {
    if !have_root() {
        return;
    }
    let burst = burst();
    let (rec, stderr) = record_burst(&burst, "main");
    // Below main: __libc_start_call_main and __libc_start_main (libc), then the program's
    // _start.
    let mut expect = burst_frames();
    expect.extend(["main", "?", "?", "_start"]);
    assert_burst_stacks(&burst, &rec, &expect);
    // The copy ends at the top of the main thread's stack: ≈30 KB, not the 64K cap.
    let copied = copied_each(&stderr);
    assert!((30_000.0..40_000.0).contains(&copied), "{stderr}");
}

/// The same burst in a pthread, whose stack is a mapping of its own (found by bpf_find_vma).
#[test]
fn a_deep_burst_in_a_thread_is_whole_from_the_first_call() {
    if !have_root() {
        return;
    }
    let burst = burst();
    let (rec, stderr) = record_burst(&burst, "thread");
    // Below thread_main: start_thread and clone3 (libc).
    let mut expect = burst_frames();
    expect.extend(["thread_main", "?", "?"]);
    assert_burst_stacks(&burst, &rec, &expect);
    // Up to the end of the thread's stack mapping (the thread's descriptor and TLS lie above
    // its frames): not the cap.
    let copied = copied_each(&stderr);
    assert!((30_000.0..50_000.0).contains(&copied), "{stderr}");
}

/// The burst in 50 short-lived pthreads (4 calls each) while another thread maps and unmaps
/// memory without pause: a thread's first look at its stack mapping (`bpf_find_vma`) then
/// often finds the mmap lock taken (-EBUSY) and copies the cap instead. Either way every stack
/// is whole: the copy never ends short of the stack.
#[test]
fn a_deep_burst_is_whole_while_another_thread_maps_memory() {
    if !have_root() {
        return;
    }
    let burst = burst();
    let (rec, stderr) = record_burst(&burst, "churn");
    let mut expect = burst_frames();
    expect.extend(["thread_main", "?", "?"]);
    assert_burst_stacks(&burst, &rec, &expect);
    // Between the thread's stack (≈35 KB) and the cap, depending on how many lookups failed.
    let copied = copied_each(&stderr);
    assert!((30_000.0..=65_528.0).contains(&copied), "{stderr}");
}

/// A shallow stack costs what it is: the chain's copies are a few hundred bytes, not the 64K
/// cap.
#[test]
fn a_shallow_stack_copies_little() {
    if !have_root() {
        return;
    }
    let chain = chain();
    let spec = format!("{}:work", chain.path());
    let out = chain.data("shallow.data");
    let o = record(&[
        "-v",
        "-g",
        "dwarf",
        "-e",
        &spec,
        "-o",
        out.to_str().unwrap(),
    ])
    .args(["--", chain.path()])
    .stdout(Stdio::null())
    .output()
    .expect("running urec");
    assert!(o.status.success(), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let copied = copied_each(&stderr);
    assert!(copied > 0.0 && copied < 1024.0, "{stderr}");
    let rec = Recording::read(&out);
    assert_entry_stacks(
        &chain,
        &rec,
        0,
        &["work", "c5", "c4", "c3", "c2", "c1", "main"],
    );
}

#[test]
fn a_ring_buffer_too_small_for_a_full_copy_is_refused() {
    if !have_root() {
        return;
    }
    let deep = deep();
    let spec = format!("{}:leaf", deep.path());
    let out = deep.data("small.data");
    let o = record(&["-g", "dwarf", "--buffer-size", "64K", "-e", &spec])
        .args(["-o", out.to_str().unwrap(), "--", deep.path(), "1"])
        .output()
        .expect("running urec");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("--buffer-size 64K")
            && stderr.contains("--stack-size 64K")
            && stderr.contains("use --buffer-size 128K"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing recorded");
    // A smaller cap makes the largest record smaller: 64K holds an 8K copy.
    record_ok(&[
        "-g",
        "dwarf",
        "--stack-size",
        "8K",
        "--buffer-size",
        "64K",
        "-e",
        &spec,
        "-o",
        out.to_str().unwrap(),
        "--",
        deep.path(),
        "1",
    ]);
    // 128K holds it.
    record_ok(&[
        "-g",
        "dwarf",
        "--buffer-size",
        "128K",
        "-e",
        &spec,
        "-o",
        out.to_str().unwrap(),
        "--",
        deep.path(),
        "1",
    ]);
}
