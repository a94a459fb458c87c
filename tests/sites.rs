#![cfg(feature = "record")]
//! End-to-end tests of probe sites (SPEC.md, "Probe sites and probe cost"): a C program whose
//! every function starts with `endbr64` (single-stepped by the kernel), built `-O2
//! -fcf-protection` with and without frame pointers. Each function has a known right answer
//! for where its entry probe may go (tests/fixtures/sites.c); the recorded site must be it, and
//! counts, arguments, latencies and stacks must be exactly those of the calls the program
//! makes, its output unchanged.
//!
//! They need root (BPF). Without it they skip with a message, unless `CI=true`, where they fail
//! loudly.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};

use common::fixture::Fixture;
use common::recording::Recording;
use common::{have_root, record};
use urec_format::{ArgValue, EventKind, Probe, SitePath};

const SITES_C: &str = include_str!("fixtures/sites.c");

/// Iterations of main's loop.
const N: u64 = 300;

fn build(frame_pointers: bool) -> Fixture {
    Fixture::build(
        if frame_pointers { "fp" } else { "nofp" },
        SITES_C,
        &[
            "-O2",
            "-fcf-protection",
            if frame_pointers {
                "-fno-omit-frame-pointer"
            } else {
                "-fomit-frame-pointer"
            },
            "-no-pie",
        ],
    )
}

/// Runs `urec record -v ARGS -o DATA -- EXE N`, checks that the program printed what it prints
/// untraced, and reads the recording and urec's stderr.
fn record_run(fx: &Fixture, args: &[&str], data: &str) -> (Recording, String) {
    let n = N.to_string();
    let plain = Command::new(&fx.exe).arg(&n).output().unwrap();
    let out_path = fx.data(data);
    let o = record(&["-v"])
        .args(args)
        .args(["-o", out_path.to_str().unwrap(), "--", fx.path(), &n])
        .stdin(Stdio::null())
        .output()
        .expect("running urec");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "urec record {args:?}: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&plain.stdout),
        "the traced program's output changed"
    );
    (Recording::read(&out_path), stderr)
}

fn probe<'r>(rec: &'r Recording, func: &str) -> &'r Probe {
    rec.probes
        .iter()
        .find(|p| p.symbol == func)
        .unwrap_or_else(|| panic!("no probe on {func}"))
}

/// The recorded site of `func`'s probe, as (bytes past the start, path).
fn site(rec: &Recording, func: &str) -> (u64, SitePath) {
    let p = probe(rec, func);
    let s = p.site.expect("format 1.7 records the site");
    (s.offset.0 - p.offset.0, s.path)
}

fn int_args(rec: &Recording, func: &str, kind: EventKind) -> Vec<Vec<u64>> {
    let id = probe(rec, func).id;
    rec.events
        .iter()
        .filter(|e| e.probe == id && e.kind == kind)
        .map(|e| {
            e.args
                .iter()
                .map(|a| match a {
                    ArgValue::Int(v) => *v,
                    other => panic!("{func}: argument {other:?}"),
                })
                .collect()
        })
        .collect()
}

/// Entries and returns of `func`: `calls` each, every return with a latency.
fn assert_calls(rec: &Recording, func: &str, calls: u64, returns: bool) {
    let id = probe(rec, func).id;
    let entries = rec
        .events
        .iter()
        .filter(|e| e.probe == id && e.kind == EventKind::Entry)
        .count() as u64;
    assert_eq!(entries, calls, "{func}: entries");
    let rets: Vec<_> = rec
        .events
        .iter()
        .filter(|e| e.probe == id && e.kind == EventKind::Return)
        .collect();
    if returns {
        assert_eq!(rets.len() as u64, calls, "{func}: returns");
        assert!(
            rets.iter().all(|e| e.latency_ns.is_some_and(|l| l > 0)),
            "{func}: every return has its latency"
        );
        let agg = &rec.aggregates[&id];
        assert_eq!(
            (agg.calls, agg.returns),
            (calls, calls),
            "{func}: in-kernel counts"
        );
    } else {
        assert!(rets.is_empty(), "{func}: entry-only");
    }
}

/// The entry stacks of `func`, as innermost-first names up to and including `main`, counted.
fn stacks(fx: &Fixture, rec: &Recording, func: &str) -> HashMap<Vec<String>, u64> {
    let id = probe(rec, func).id;
    let mut out = HashMap::new();
    for e in rec
        .events
        .iter()
        .filter(|e| e.probe == id && e.kind == EventKind::Entry)
    {
        let stack = rec.stack_of(e, "entries carry a stack");
        let mut names = fx.names(stack);
        let main = names
            .iter()
            .position(|n| n == "main")
            .unwrap_or_else(|| panic!("{func}: no main in {names:?}"));
        names.truncate(main + 1);
        *out.entry(names).or_default() += 1;
    }
    out
}

fn chain(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// What every build must record the same way: the sites that do not depend on frame pointers,
/// counts, arguments and latencies.
fn assert_common(rec: &Recording) {
    // Stays: nothing emulated before `ret`; a branch lands right after the first mov; the
    // arguments it reads are written before the jmp.
    assert_eq!(site(rec, "leaf"), (0, SitePath::SingleStepped));
    assert_eq!(site(rec, "loopy"), (0, SitePath::SingleStepped));
    assert_eq!(site(rec, "swap"), (0, SitePath::SingleStepped));
    // Moves: `test` writes only the flags, before `jle`; the tail jump (no arg read).
    assert_eq!(site(rec, "rec"), (7, SitePath::Emulated));
    assert_eq!(site(rec, "tail"), (0xd, SitePath::Emulated));

    assert_calls(rec, "leaf", 4 * N, true);
    assert_calls(rec, "tail", N, true);
    assert_calls(rec, "swap", N, true);
    assert_calls(rec, "rec", 6 * N, true);
    assert_calls(rec, "loopy", N, true);
    assert_calls(rec, "mid", N, true);

    let range: Vec<u64> = (0..N).collect();
    let firsts = |f| -> Vec<u64> {
        int_args(rec, f, EventKind::Entry)
            .into_iter()
            .map(|a| a[0])
            .collect()
    };
    assert_eq!(firsts("mid"), range, "mid's arg1 in call order");
    let swaps = int_args(rec, "swap", EventKind::Entry);
    assert_eq!(
        swaps,
        range.iter().map(|&i| vec![i, 2 * i]).collect::<Vec<_>>()
    );
    // leaf's arg1: i from mid and from slotty, i + 7 from tail, 2i from swap (its args
    // swapped).
    let mut want: Vec<u64> = range.clone();
    want.extend(range.iter().copied());
    want.extend(range.iter().map(|i| i + 7));
    want.extend(range.iter().map(|i| 2 * i));
    assert_eq!(sorted(firsts("leaf")), sorted(want));
    let mut want = Vec::new();
    for _ in 0..N {
        want.extend([5, 4, 3, 2, 1, 0]);
    }
    assert_eq!(firsts("rec"), want, "rec's n, in call order");
    assert_eq!(rec.total_lost(), 0);
}

/// The stacks every build must give (innermost first, up to main).
fn assert_stacks(fx: &Fixture, rec: &Recording) {
    let one = |c: &[&str]| HashMap::from([(chain(c), N)]);
    assert_eq!(stacks(fx, rec, "mid"), one(&["mid", "main"]));
    assert_eq!(stacks(fx, rec, "tail"), one(&["tail", "main"]));
    assert_eq!(stacks(fx, rec, "swap"), one(&["swap", "main"]));
    assert_eq!(stacks(fx, rec, "loopy"), one(&["loopy", "main"]));
    let mut want = HashMap::new();
    for depth in 1..=6 {
        let mut c = vec!["rec"; depth];
        c.push("main");
        want.insert(chain(&c), N);
    }
    assert_eq!(stacks(fx, rec, "rec"), want);
}

fn specs(fx: &Fixture) -> Vec<String> {
    let exe = fx.path();
    vec![
        format!("{exe}:leaf a=arg1"),
        format!("{exe}:mid a=arg1"),
        format!("{exe}:tail"),
        format!("{exe}:swap a=arg1 b=arg2"),
        format!("{exe}:rec n=arg1"),
        format!("{exe}:loopy"),
    ]
}

fn with_e(specs: &[String]) -> Vec<&str> {
    specs.iter().flat_map(|s| ["-e", s.as_str()]).collect()
}

#[test]
fn endbr_push_rbp_build_moves_to_the_push() {
    if !have_root() {
        return;
    }
    let fx = build(true);
    let mut s = specs(&fx);
    s.push(format!("{}:slotty%entry a=arg1", fx.path()));
    let (rec, stderr) = record_run(&fx, &[&with_e(&s)[..], &["-g", "fp"]].concat(), "fp.data");
    // `endbr64; push %rbp`: the push, entry and return.
    assert_eq!(site(&rec, "mid"), (4, SitePath::Emulated));
    assert_common(&rec);
    assert_stacks(&fx, &rec);
    // leaf: from mid (which has a frame), and jumped to from tail and swap (whose frames are
    // gone): [leaf, main]; from slotty, whose asm sets up no frame pointer: the walk skips
    // main there, as it does at any frame without one.
    let leaf = stacks_any(&fx, &rec, "leaf");
    assert_eq!(
        leaf.get(&chain(&["leaf", "mid", "main"])),
        Some(&N),
        "{leaf:?}"
    );
    assert_eq!(
        leaf.get(&chain(&["leaf", "main"])),
        Some(&(2 * N)),
        "{leaf:?}"
    );
    // slotty%entry: past `sub $24,%rsp; mov %rdi,(%rsp); mov $5,%esi` to the call, the
    // return address 3 words above sp, which the frame-pointer walk reads for the caller.
    assert_eq!(site(&rec, "slotty"), (0x11, SitePath::Emulated));
    assert_calls(&rec, "slotty", N, false);
    assert_eq!(
        stacks(&fx, &rec, "slotty"),
        HashMap::from([(chain(&["slotty", "main"]), N)])
    );
    let a: Vec<u64> = int_args(&rec, "slotty", EventKind::Entry)
        .into_iter()
        .map(|a| a[0])
        .collect();
    assert_eq!(a, (0..N).collect::<Vec<_>>());
    // The warning names only the probes that still single-step, with the reason.
    let warning = stderr
        .lines()
        .find(|l| l.contains("single-steps"))
        .expect("a single-step warning");
    for f in ["leaf", "swap", "loopy"] {
        assert!(warning.contains(&format!(":{f} (")), "{warning}");
    }
    for f in ["mid", "tail", ":rec", "slotty"] {
        assert!(!warning.contains(f), "{warning}");
    }
    assert!(stderr.contains(":mid: site +0x4"), "{stderr}");

    // A return-only probe moves with it (sp unchanged before the push): every return, the
    // return value, and the stack from the probed function (named from its start) up.
    let spec = format!("{}:mid%return r=$retval", fx.path());
    let (rec, _) = record_run(&fx, &["-e", &spec, "-g", "fp"], "fp-return.data");
    assert_eq!(site(&rec, "mid"), (4, SitePath::Emulated));
    let id = probe(&rec, "mid").id;
    let rets: Vec<_> = rec
        .events
        .iter()
        .filter(|e| e.probe == id && e.kind == EventKind::Return)
        .collect();
    assert_eq!(rets.len() as u64, N);
    // mid(i) returns leaf(i, 1) + 1 = 3i + 2.
    let values: Vec<u64> = int_args(&rec, "mid", EventKind::Return)
        .into_iter()
        .map(|a| a[0])
        .collect();
    assert_eq!(values, (0..N).map(|i| 3 * i + 2).collect::<Vec<_>>());
    for e in rets {
        let names = fx.first_names(rec.stack_of(e, "return-only returns carry a stack"), 2);
        assert_eq!(names, ["mid", "main"]);
    }
}

/// Like [`stacks`], counting every stack whatever its frames (for leaf, whose caller slotty
/// has no frame pointer).
fn stacks_any(fx: &Fixture, rec: &Recording, func: &str) -> HashMap<Vec<String>, u64> {
    let id = probe(rec, func).id;
    let mut out = HashMap::new();
    for e in rec
        .events
        .iter()
        .filter(|e| e.probe == id && e.kind == EventKind::Entry)
    {
        let mut names = fx.names(rec.stack_of(e, "entries carry a stack"));
        if let Some(main) = names.iter().position(|n| n == "main") {
            names.truncate(main + 1);
        }
        *out.entry(names).or_default() += 1;
    }
    out
}

#[test]
fn no_frame_pointer_build_with_dwarf_stacks() {
    if !have_root() {
        return;
    }
    let fx = build(false);
    let s = specs(&fx);
    // -g auto: the binary keeps no frame pointers, so DWARF, unwound from the real site.
    let (rec, _) = record_run(&fx, &with_e(&s), "nofp.data");
    // `endbr64; sub $8,%rsp; mov $1,%esi; call leaf`: an entry+return probe cannot move past
    // the sub (its uretprobe needs the return address at [sp]).
    assert_eq!(site(&rec, "mid"), (0, SitePath::SingleStepped));
    assert_common(&rec);
    assert_stacks(&fx, &rec);
    let leaf = stacks(&fx, &rec, "leaf");
    assert_eq!(leaf.get(&chain(&["leaf", "mid", "main"])), Some(&N));
    assert_eq!(leaf.get(&chain(&["leaf", "slotty", "main"])), Some(&N));
    assert_eq!(leaf.get(&chain(&["leaf", "main"])), Some(&(2 * N)));

    // mid%entry: entry only, so past the sub to the call; DWARF unwinds from there.
    let exe = fx.path();
    let spec = format!("{exe}:mid%entry a=arg1");
    let (rec, _) = record_run(&fx, &["-e", &spec], "nofp-entry.data");
    assert_eq!(site(&rec, "mid"), (0xd, SitePath::Emulated));
    assert_calls(&rec, "mid", N, false);
    assert_eq!(
        stacks(&fx, &rec, "mid"),
        HashMap::from([(chain(&["mid", "main"]), N)])
    );
    let a: Vec<u64> = int_args(&rec, "mid", EventKind::Entry)
        .into_iter()
        .map(|a| a[0])
        .collect();
    assert_eq!(a, (0..N).collect::<Vec<_>>());
    // The same entry-only probe with frame-pointer stacks: the caller read 1 word above sp.
    let (rec, _) = record_run(&fx, &["-e", &spec, "-g", "fp"], "nofp-entry-fp.data");
    assert_eq!(site(&rec, "mid"), (0xd, SitePath::Emulated));
    for (names, _) in stacks_any(&fx, &rec, "mid") {
        assert_eq!(&names[..2], &["mid", "main"], "{names:?}");
    }
}

#[test]
fn list_shows_sites() {
    let fx = build(true);
    let out = common::urec_ok(&["list", fx.path()]);
    let line = |f: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(f))
            .unwrap_or_else(|| panic!("{f} in {out}"))
            .to_string()
    };
    assert!(line("mid").ends_with("[site +0x4]"), "{out}");
    assert!(line("rec").ends_with("[site +0x7]"), "{out}");
    assert!(line("tail").ends_with("[site +0xd]"), "{out}");
    assert!(line("leaf").ends_with("[single-step]"), "{out}");
    assert!(line("loopy").ends_with("[single-step]"), "{out}");
    assert!(
        line("slotty").ends_with("[single-step; %entry site +0x11]"),
        "{out}"
    );
}
