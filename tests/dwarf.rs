#![cfg(feature = "record")]
//! End-to-end tests of DWARF stacks (`-g dwarf`, and `-g auto` choosing it): a C program built
//! without frame pointers, with a 6-deep call chain under `main`, and Debian's bash reading
//! lines interactively. Ground truth is exact: every stack must be the full chain to `main`.
//!
//! They need root (BPF and system-wide perf events). Without it they skip with a message,
//! unless `CI=true`, where they fail loudly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use urec_format::{EventKind, Lost, Probe, Reader, Record, Stack, StackMode};

const URE: &str = env!("CARGO_BIN_EXE_urec");

/// `main` calls `c1` N times; `c1 → c2 → c3 → c4 → c5 → work`. Built `-O2 -fomit-frame-pointer`:
/// none of them sets up a frame pointer. `noipa` keeps every call a real call (no inlining, no
/// clones), `-fno-optimize-sibling-calls` keeps each caller's frame on the stack.
const CHAIN_C: &str = r#"
#include <stdlib.h>
volatile long sink;
#define NI __attribute__((noipa))
NI void opaque(void) { sink++; }
NI long work(long n) { long a = n * 3 + sink; opaque(); return a + sink; }
NI long c5(long n) { long r = work(n + 1); sink = r; return r + 5; }
NI long c4(long n) { long r = c5(n + 1); sink = r; return r + 4; }
NI long c3(long n) { long r = c4(n + 1); sink = r; return r + 3; }
NI long c2(long n) { long r = c3(n + 1); sink = r; return r + 2; }
NI long c1(long n) { long r = c2(n + 1); sink = r; return r + 1; }
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000, s = 0;
    for (long i = 0; i < n; i++) s += c1(i);
    return s == 42;
}
"#;

const CALLS: usize = 1000;

fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true: these tests must run as root (they attach real uprobes)");
    }
    eprintln!("skipped: attaching uprobes needs root");
    false
}

struct Chain {
    dir: tempfile::TempDir,
    exe: PathBuf,
    /// name -> (address, size), from `nm` (non-PIE: the addresses in the process).
    symbols: HashMap<String, (u64, u64)>,
}

impl Chain {
    fn build() -> Chain {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("chain.c");
        std::fs::write(&src, CHAIN_C).unwrap();
        let exe = dir.path().join("chain");
        let st = Command::new("gcc")
            .args([
                "-O2",
                "-fomit-frame-pointer",
                "-fno-optimize-sibling-calls",
                "-fcf-protection=none",
                "-no-pie",
                "-o",
            ])
            .arg(&exe)
            .arg(&src)
            .status()
            .expect("running gcc");
        assert!(st.success(), "gcc failed");
        let nm = Command::new("nm")
            .arg("-S")
            .arg(&exe)
            .output()
            .expect("running nm");
        let mut symbols = HashMap::new();
        for line in String::from_utf8_lossy(&nm.stdout).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() == 4 && (f[2] == "T" || f[2] == "t") {
                let addr = u64::from_str_radix(f[0], 16).unwrap();
                let size = u64::from_str_radix(f[1], 16).unwrap();
                symbols.insert(f[3].to_string(), (addr, size));
            }
        }
        let chain = Chain { dir, exe, symbols };
        // The probed function starts with `push %rbx`, which the kernel emulates (a
        // single-stepped first instruction would cost 10-20 µs a hit; correctness is the same).
        assert_eq!(chain.first_byte("work"), 0x53, "work starts with push %rbx");
        chain
    }

    fn path(&self) -> &str {
        self.exe.to_str().unwrap()
    }

    fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The first code byte of a function (non-PIE: file offset = address - 0x400000).
    fn first_byte(&self, name: &str) -> u8 {
        let (addr, _) = self.symbols[name];
        std::fs::read(&self.exe).unwrap()[(addr - 0x400000) as usize]
    }

    /// Innermost-first names of the frames of `stack` inside the program ("?" elsewhere).
    fn names(&self, stack: &Stack) -> Vec<String> {
        stack
            .frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let a = if i > 0 { f.0 - 1 } else { f.0 };
                self.symbols
                    .iter()
                    .find(|(_, &(start, size))| a >= start && a < start + size)
                    .map_or("?", |(n, _)| n.as_str())
                    .to_string()
            })
            .collect()
    }
}

#[derive(Default)]
struct Recording {
    probes: Vec<Probe>,
    /// (probe, kind, stack id) of every event.
    events: Vec<(u32, EventKind, Option<u32>)>,
    stacks: HashMap<u32, Stack>,
    lost: Vec<Lost>,
}

fn read(path: &Path) -> Recording {
    let mut reader = Reader::open(path).expect("opening the recording");
    let mut r = Recording::default();
    for rec in reader.records() {
        match rec.expect("reading a record") {
            Record::Probe(p) => r.probes.push(p),
            Record::Event(e) => r.events.push((e.probe, e.kind, e.stack)),
            Record::Stack(s) => {
                r.stacks.insert(s.id, s);
            }
            Record::Lost(l) => r.lost.push(l),
            _ => {}
        }
    }
    r
}

fn record(args: &[&str]) {
    let o = Command::new(URE)
        .arg("record")
        .arg("-q")
        .args(args)
        .stdout(Stdio::null())
        .output()
        .expect("running urec");
    assert!(o.status.success(), "urec record {args:?}: {o:?}");
}

/// Every entry stack of `probe` must be exactly `chain` (innermost first) and then leave the
/// program (into libc's start code) and not be truncated.
fn assert_entry_stacks(chain: &Chain, rec: &Recording, probe: u32, expect: &[&str]) {
    let mut n = 0;
    for &(p, kind, stack) in &rec.events {
        if p != probe || kind != EventKind::Entry {
            continue;
        }
        n += 1;
        let stack = &rec.stacks[&stack.expect("entries carry a stack")];
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
    let chain = Chain::build();
    let out = chain.data("auto.data");
    let spec = format!("{}:work", chain.path());
    record(&["-e", &spec, "-o", out.to_str().unwrap(), "--", chain.path()]);
    let rec = read(&out);
    assert_eq!(rec.probes.len(), 1);
    assert_eq!(
        rec.probes[0].stack_mode,
        StackMode::Dwarf,
        "-g auto chose DWARF"
    );
    assert_eq!(rec.lost.iter().map(|l| l.count).sum::<u64>(), 0);
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
    let chain = Chain::build();
    let out = chain.data("pending.data");
    let work = format!("{}:work", chain.path());
    let c2 = format!("{}:c2", chain.path());
    record(&[
        "-g",
        "dwarf",
        "-e",
        &work,
        "-e",
        &c2,
        "-o",
        out.to_str().unwrap(),
        "--",
        chain.path(),
    ]);
    let rec = read(&out);
    assert_eq!(rec.lost.iter().map(|l| l.count).sum::<u64>(), 0);
    let returns = rec
        .events
        .iter()
        .filter(|e| e.1 == EventKind::Return)
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
    let chain = Chain::build();
    let out = chain.data("short.data");
    let spec = format!("{}:work", chain.path());
    record(&[
        "-g",
        "dwarf",
        "--stack-size",
        "16",
        "-e",
        &spec,
        "-o",
        out.to_str().unwrap(),
        "--",
        chain.path(),
    ]);
    let rec = read(&out);
    let entries: Vec<_> = rec
        .events
        .iter()
        .filter(|e| e.1 == EventKind::Entry)
        .collect();
    assert_eq!(entries.len(), CALLS);
    for e in entries {
        let stack = &rec.stacks[&e.2.expect("a stack")];
        let names = chain.names(stack);
        // 16 bytes hold work's return address (into c5) and c5's 8 bytes of alignment; c5's
        // return address (into c4) lies beyond.
        assert!(stack.truncated, "{names:?}");
        assert_eq!(names, ["work", "c5"]);
    }
    let folded = Command::new(URE)
        .args(["report", "-i", out.to_str().unwrap(), "--folded", "-"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&folded.stdout);
    assert!(text.contains("[truncated];c5;work 1000"), "{text}");
}

#[test]
fn interactive_bash_readline_reaches_main() {
    if !have_root() {
        return;
    }
    let Some(bash) = urec_record::command::find_program("bash") else {
        eprintln!("skipped: no bash");
        return;
    };
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/drive-bash.py");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bash.data");
    record(&[
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
    let folded = Command::new(URE)
        .args(["report", "-i", out.to_str().unwrap(), "--folded", "-"])
        .output()
        .unwrap();
    assert!(folded.status.success(), "{folded:?}");
    let text = String::from_utf8_lossy(&folded.stdout);
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
