#![cfg(feature = "record")]
//! Predicates (`-e 'SPEC if EXPR'`) end to end: a C program calls `take(size, name, sv)` 300
//! times with known arguments, and each predicate must keep exactly the calls it matches,
//! count the others as filtered (not lost), and drop the returns of the calls it rejected at
//! entry (so no return is unmatched).
//!
//! They need root (BPF); without it they skip with a message, unless `CI=true`, where they
//! fail loudly.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::fixture::Fixture;
use common::recording::Recording;
use common::{have_root, record, urec, urec_ok};
use urec_format::{ArgValue, EventKind, Reader, Record};

/// Call `i` (0..300) is `take(i * 100, names[i % 3], i % 4 - 2)`; the names live on main's
/// stack, whose pages are present, so reading them never faults.
const TARGET_C: &str = r#"
#include <stdio.h>
__attribute__((noinline)) long take(long size, const char *name, int sv) {
    __asm__ volatile("" :: "r"(name));
    return size + sv;
}
int main(void) {
    char names[3][8] = {"alpha", "beta", "gamma"};
    long sum = 0;
    for (int i = 0; i < 300; i++) sum += take(i * 100, names[i % 3], i % 4 - 2);
    printf("%ld\n", sum);
    return 0;
}
"#;

const CALLS: u64 = 300;

/// The arguments of call `i`.
fn call(i: u64) -> (u64, &'static str, i32) {
    (
        i * 100,
        ["alpha", "beta", "gamma"][i as usize % 3],
        (i % 4) as i32 - 2,
    )
}

fn target() -> Fixture {
    Fixture::build(
        "predtarget",
        TARGET_C,
        &["-O0", "-fno-omit-frame-pointer", "-no-pie"],
    )
}

/// What one recording with a predicate gave.
struct Outcome {
    rec: Recording,
    json: serde_json::Value,
    filtered: u64,
}

/// Filtered counts summed over the file's Filtered records.
fn filtered_in(path: &Path) -> u64 {
    let mut reader = Reader::open(path).expect("opening the recording");
    reader
        .records()
        .filter_map(|r| match r.expect("reading a record") {
            Record::Filtered(f) => Some(f.count),
            _ => None,
        })
        .sum()
}

fn run(t: &Fixture, spec: &str, name: &str) -> Outcome {
    let out = t.data(name);
    let st = record(&[
        "-q",
        "-e",
        spec,
        "-o",
        out.to_str().unwrap(),
        "--",
        t.path(),
    ])
    .stdout(Stdio::null())
    .status()
    .unwrap();
    assert!(st.success(), "urec record -e {spec:?}: {st}");
    let json: serde_json::Value = serde_json::from_str(&urec_ok(&[
        "report",
        "-i",
        out.to_str().unwrap(),
        "--json",
        "-",
    ]))
    .unwrap();
    Outcome {
        rec: Recording::read(&out),
        json,
        filtered: filtered_in(&out),
    }
}

/// The calls a predicate keeps: exactly `expected` (as indexes of calls), the others counted
/// as filtered, nothing lost, every kept entry's return recorded and paired, no return of a
/// rejected call.
fn assert_keeps(o: &Outcome, expected: &[u64], return_only: bool) {
    let kept = expected.len() as u64;
    let f = &o.json["functions"][0];
    assert_eq!(f["calls"], kept, "calls kept");
    assert_eq!(f["filtered"], CALLS - kept, "functions[].filtered");
    assert_eq!(o.filtered, CALLS - kept, "Filtered records in the file");
    assert_eq!(o.json["recording"]["lost"], 0);
    assert_eq!(o.rec.total_lost(), 0);
    assert_eq!(
        f["returns"], kept,
        "a rejected call's return is dropped too"
    );
    assert_eq!(f["unmatched"], 0);
    assert_eq!(f["in_flight"], 0);
    let count = |kind| o.rec.events.iter().filter(|e| e.kind == kind).count();
    let (entries, returns) = (count(EventKind::Entry), count(EventKind::Return));
    if return_only {
        assert_eq!((entries, returns), (0, kept as usize));
    } else {
        assert_eq!((entries, returns), (kept as usize, kept as usize));
        // Every return pairs with its entry: latency measured on all of them.
        assert!(o
            .rec
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Return)
            .all(|e| e.latency_ns.is_some()));
    }
}

/// The first argument value of each event of `kind`, in order.
fn first_args(o: &Outcome, kind: EventKind) -> Vec<ArgValue> {
    o.rec
        .events
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.args[0].clone())
        .collect()
}

fn ints(values: &[ArgValue]) -> Vec<u64> {
    values
        .iter()
        .map(|v| match v {
            ArgValue::Int(x) => *x,
            other => panic!("expected an integer, got {other:?}"),
        })
        .collect()
}

fn matching(pred: impl Fn(u64, &str, i32) -> bool) -> Vec<u64> {
    (0..CALLS)
        .filter(|&i| {
            let (size, name, sv) = call(i);
            pred(size, name, sv)
        })
        .collect()
}

#[test]
fn integer_predicates_keep_exactly_the_matching_calls() {
    if !have_root() {
        return;
    }
    let t = target();
    let take = format!("{}:take", t.path());

    // The issue's example: only sizes >= 4096, and the recorded values are exactly those.
    let o = run(
        &t,
        &format!("{take} size=arg1:u64 if size >= 4096"),
        "ge.data",
    );
    let want = matching(|size, _, _| size >= 4096);
    assert_eq!(want.len(), 259);
    assert_keeps(&o, &want, false);
    let sizes: Vec<u64> = want.iter().map(|&i| call(i).0).collect();
    assert_eq!(ints(&first_args(&o, EventKind::Entry)), sizes);

    // == N keeps exactly one call.
    let o = run(
        &t,
        &format!("{take} size=arg1:u64 if size == 5000"),
        "eq.data",
    );
    assert_keeps(&o, &[50], false);
    assert_eq!(ints(&first_args(&o, EventKind::Entry)), vec![5000]);

    // An operand the spec does not store (argN), && || ! and parentheses.
    let o = run(
        &t,
        &format!("{take} if !(arg1 >= 5000 || arg1 < 100) && arg1 != 700"),
        "expr.data",
    );
    let want = matching(|size, _, _| (100..5000).contains(&size) && size != 700);
    assert_eq!(want.len(), 48);
    assert_keeps(&o, &want, false);
    assert!(o.rec.events.iter().all(|e| e.args.is_empty()));
}

#[test]
fn comparisons_use_the_arg_type_sign_and_width() {
    if !have_root() {
        return;
    }
    let t = target();
    let take = format!("{}:take", t.path());

    // sv is -2, -1, 0, 1, -2, ...: as s32, < 0 keeps the negative ones.
    let o = run(&t, &format!("{take} sv=arg3:s32 if sv < 0"), "s32.data");
    assert_keeps(&o, &matching(|_, _, sv| sv < 0), false);
    let svs = ints(&first_args(&o, EventKind::Entry));
    assert!(svs.iter().all(|&v| (v as u32 as i32) < 0), "{svs:?}");

    // The same bits as u32: the negative ones are huge, so < 2 keeps 0 and 1 instead.
    let o = run(&t, &format!("{take} sv=arg3:u32 if sv < 2"), "u32.data");
    assert_keeps(&o, &matching(|_, _, sv| (0..2).contains(&sv)), false);

    // Width: as s8 only the low byte counts; -1 is 0xff.
    let o = run(&t, &format!("{take} sv=arg3:s8 if sv == -1"), "s8.data");
    assert_keeps(&o, &matching(|_, _, sv| sv == -1), false);

    // The return value of a %return probe, signed: only call 0 returns a negative number.
    let o = run(
        &t,
        &format!("{take}%return r=$retval:s64 if r < 0"),
        "ret.data",
    );
    assert_keeps(&o, &[0], true);
    assert_eq!(
        ints(&first_args(&o, EventKind::Return)),
        vec![(-2i64) as u64]
    );
}

#[test]
fn string_predicates() {
    if !have_root() {
        return;
    }
    let t = target();
    let take = format!("{}:take", t.path());

    let o = run(
        &t,
        &format!("{take} name=+0(arg2):string if name == \"beta\""),
        "str.data",
    );
    assert_keeps(&o, &matching(|_, name, _| name == "beta"), false);
    assert!(first_args(&o, EventKind::Entry)
        .iter()
        .all(|v| matches!(v, ArgValue::Str { bytes, .. } if bytes == b"beta")));

    let o = run(
        &t,
        &format!("{take} name=+0(arg2):string size=arg1:u64 if name != \"beta\" && size < 1000"),
        "strne.data",
    );
    let want = matching(|size, name, _| name != "beta" && size < 1000);
    assert_eq!(want.len(), 7);
    assert_keeps(&o, &want, false);
}

#[test]
fn comm_predicates() {
    if !have_root() {
        return;
    }
    let t = target();
    let take = format!("{}:take", t.path());
    let o = run(
        &t,
        &format!("{take} if $comm == \"predtarget\""),
        "comm.data",
    );
    assert_keeps(&o, &(0..CALLS).collect::<Vec<_>>(), false);
    let o = run(
        &t,
        &format!("{take} if $comm != \"predtarget\""),
        "nocomm.data",
    );
    assert_keeps(&o, &[], false);
    // A prefix of the name is not the name.
    let o = run(
        &t,
        &format!("{take} if $comm == \"predtar\""),
        "prefix.data",
    );
    assert_keeps(&o, &[], false);
}

/// Recursion: `rec(d)` calls `rec(d - 1)` down to 0; main calls `rec(5)` 10 times. A predicate
/// on the depth keeps the outer calls of each recursion and rejects the inner ones, whose
/// returns come first: every kept return must still pair with its own entry.
const RECURSIVE_C: &str = r#"
#include <stdio.h>
__attribute__((noinline)) int rec(int d) {
    if (d == 0) return 0;
    int r = rec(d - 1) + d;
    __asm__ volatile("" ::: "memory");
    return r;
}
int main(void) {
    int sum = 0;
    for (int i = 0; i < 10; i++) sum += rec(5);
    printf("%d\n", sum);
    return 0;
}
"#;

fn recursion(single: bool) {
    let t = Fixture::build(
        "recursive",
        RECURSIVE_C,
        &["-O0", "-fno-omit-frame-pointer", "-no-pie"],
    );
    let out = t.data("rec.data");
    let mut cmd = record(&[
        "-q",
        "-e",
        &format!("{}:rec d=arg1:s32 if d >= 3", t.path()),
        "-o",
        out.to_str().unwrap(),
        "--",
        t.path(),
    ]);
    if single {
        cmd.env("UREC_TEST_SINGLE_UPROBES", "1");
    }
    let st = cmd.stdout(Stdio::null()).status().unwrap();
    assert!(st.success());
    let rec = Recording::read(&out);
    assert_eq!(
        filtered_in(&out),
        30,
        "d = 2, 1, 0 of each of the 10 recursions"
    );
    assert_eq!(rec.total_lost(), 0);
    let entries: Vec<u64> = rec
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Entry)
        .map(|e| match e.args[0] {
            ArgValue::Int(v) => v,
            ref other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(entries, [5, 4, 3].repeat(10));
    let returns = rec
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Return)
        .count();
    assert_eq!(returns, 30, "the returns of rejected calls are dropped");
    let json: serde_json::Value = serde_json::from_str(&urec_ok(&[
        "report",
        "-i",
        out.to_str().unwrap(),
        "--json",
        "-",
    ]))
    .unwrap();
    let f = &json["functions"][0];
    assert_eq!(f["unmatched"], 0);
    assert_eq!(f["in_flight"], 0);
    assert_eq!(f["filtered"], 30);
    assert!(rec
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Return)
        .all(|e| e.latency_ns.is_some()));
}

#[test]
fn recursion_keeps_pairs_with_session_programs() {
    if !have_root() {
        return;
    }
    recursion(false);
}

/// The single-uprobe fallback marks a rejected entry in its per-thread stack.
#[test]
fn recursion_keeps_pairs_with_single_uprobes() {
    if !have_root() {
        return;
    }
    recursion(true);
}

/// Bad predicates are refused before anything is attached, exit status 2, naming the problem.
#[test]
fn bad_predicates_exit_2() {
    if !have_root() {
        return;
    }
    let t = target();
    let take = format!("{}:take", t.path());
    for (spec, why) in [
        (
            format!("{take} x=arg1:u8 if x < 256"),
            "does not fit x's type u8",
        ),
        (format!("{take} if $retval == 0"), "only on a %return probe"),
        (format!("{take} if nosuch == 1"), "neither an ARG"),
        (format!("{take} if arg1 = 1"), "use '=='"),
        (format!("{take} if $comm < \"a\""), "== or != only"),
    ] {
        let out = urec(&["record", "-q", "-e", &spec, "--", "/bin/true"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {stderr}");
        assert!(stderr.contains(why), "{spec}: {stderr}");
    }
    // Two specs probing one function must agree on the predicate.
    let (a, b) = (
        format!("{take} if arg1 == 1"),
        format!("{take} if arg1 == 2"),
    );
    let out = urec(&["record", "-q", "-e", &a, "-e", &b, "--", "/bin/true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("must have the same predicate"), "{stderr}");
}
