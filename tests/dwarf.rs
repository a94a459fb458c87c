#![cfg(feature = "record")]
//! End-to-end tests of DWARF stacks (`-g dwarf`, and `-g auto` choosing it): a C program built
//! without frame pointers, with a 6-deep call chain under `main`, one whose frames take ≈40 KB
//! (more than the default 8K copy: the copy size must grow), and Debian's bash reading lines
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
/// page: ≈40 KB of frames, so the unwind needs a 64K copy (8K, 16K and 32K run off the end).
const DEEP_C: &str = include_str!("fixtures/deep.c");

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
    let (out, rec) = record_chain(
        &chain,
        &["-g", "dwarf", "--stack-size", "16", "-e", &spec],
        "short.data",
    );
    let entries: Vec<_> = rec
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Entry)
        .collect();
    assert_eq!(entries.len(), CALLS);
    let full = ["work", "c5", "c4", "c3", "c2", "c1", "main"];
    let mut truncated = 0;
    for (i, e) in entries.iter().enumerate() {
        let stack = rec.stack_of(e, "a stack");
        let names = chain.names(stack);
        if i == 0 {
            // 16 bytes hold work's return address (into c5) and c5's 8 bytes of alignment;
            // c5's return address (into c4) lies beyond.
            assert!(stack.truncated, "{names:?}");
            assert_eq!(names, ["work", "c5"]);
        }
        // Once the recorder has seen such a stack it doubles the copy (16, 32, 64 ... bytes)
        // for the following calls, which the chain makes faster than it unwinds: how many are
        // still copied short depends on timing, but each stack is a true prefix, or complete.
        if stack.truncated {
            truncated += 1;
            assert_eq!(&names[..], &full[..names.len()], "{names:?}");
        } else {
            assert_eq!(&names[..full.len()], full, "{names:?}");
        }
    }
    let text = folded(&out);
    assert!(text.contains("[truncated];c5;work "), "{text}");
    let shown: usize = text
        .lines()
        .filter(|l| l.contains("[truncated]"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<usize>().unwrap())
        .sum();
    assert_eq!(shown, truncated, "{text}");
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
    record_ok(&[
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
    ]);
    let text = folded(&out);
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
    assert_eq!(calls, 11, "10 lines + exit: {text}");
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

/// How many times the deep fixture calls `leaf`; after each of the first [`DEEP_SLOW`] calls
/// (the three with the 8K, 16K and 32K copies) it sleeps [`DEEP_PAUSE_MS`], time for the
/// recorder to unwind that call's stack and raise the copy size before the next call. A
/// release comes ≈10-20 ms after the event in a quiet release build; the margin is for a debug
/// build on a loaded 2-vCPU machine running the other tests in parallel, where 200 ms was
/// seen to fall short.
const DEEP_CALLS: usize = 300;
const DEEP_SLOW: &str = "3";
const DEEP_PAUSE_MS: &str = "700";

#[test]
fn the_stack_copy_grows_until_the_unwinds_reach_main() {
    if !have_root() {
        return;
    }
    let deep = deep();
    let spec = format!("{}:leaf", deep.path());
    let out = deep.data("deep.data");
    // Default --stack-size (8K), and not -q: the summary is checked too.
    let o = record(&["-g", "dwarf", "-e", &spec, "-o", out.to_str().unwrap()])
        .args([
            "--",
            deep.path(),
            &DEEP_CALLS.to_string(),
            DEEP_SLOW,
            DEEP_PAUSE_MS,
        ])
        .stdout(Stdio::null())
        .output()
        .expect("running urec");
    assert!(o.status.success(), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let rec = Recording::read(&out);
    assert_eq!(rec.total_lost(), 0);
    let full = ["leaf", "d4", "d3", "d2", "d1", "main"];
    let (mut complete, mut truncated) = (Vec::new(), Vec::new());
    for e in rec.events.iter().filter(|e| e.kind == EventKind::Entry) {
        let stack = rec.stack_of(e, "entries carry a stack");
        let names = deep.names(stack);
        if stack.truncated {
            truncated.push(names);
        } else {
            assert_eq!(&names[..full.len()], full, "stack {names:?}");
            complete.push(names);
        }
    }
    // The first three calls ran off the end of the 8K, 16K and 32K copies (in that order:
    // each unwinds further), every later one was copied with 64K and reaches main.
    assert_eq!(truncated.len(), 3, "{truncated:?}");
    assert_eq!(complete.len(), DEEP_CALLS - 3);
    for (names, depth) in truncated.iter().zip([2, 3, 5]) {
        assert_eq!(&names[..], &full[..depth], "{truncated:?}");
    }
    // The report shows the same three, and the summary counts them and says what avoids them.
    let text = folded(&out);
    let shown: u64 = text
        .lines()
        .filter(|l| l.contains("[truncated]"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(shown, 3, "{text}");
    assert!(
        text.contains(&format!(";main;d1;d2;d3;d4;leaf {}", DEEP_CALLS - 3)),
        "{text}"
    );
    assert!(
        stderr.contains(
            "3 stacks truncated (3 ran off the end of a stack copy before it grew; \
             --stack-size 64K avoids that)"
        ),
        "{stderr}"
    );

    // And with --stack-size 64K from the start, none is.
    let out = deep.data("deep64.data");
    let o = record(&["-g", "dwarf", "--stack-size", "64K", "-e", &spec])
        .args(["-o", out.to_str().unwrap(), "--", deep.path(), "100"])
        .stdout(Stdio::null())
        .output()
        .expect("running urec");
    assert!(o.status.success(), "{o:?}");
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("truncated"),
        "{o:?}"
    );
    assert!(folded(&out).contains(";main;d1;d2;d3;d4;leaf 100"));
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
        stderr.contains("--buffer-size 64K") && stderr.contains("use --buffer-size 128K"),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing recorded");
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
