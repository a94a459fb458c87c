#![cfg(feature = "record")]
//! The compiled unwind tables (urec-unwind-table) against today's unwinder (framehop) on real
//! recordings: `urec record -g dwarf` runs with `UREC_TEST_UNWIND_TABLES`, which makes the
//! recorder walk the tables over every stack copy it unwinds and write one line per stack
//! (record/src/unwind/check.rs). Every stack must give the same frames and ending both ways,
//! or stop at a row the tables leave to copy-and-unwind after a prefix of framehop's frames.
//!
//! Targets: C built `-O0`/`-O2`, with and without frame pointers (recursion, qsort calling
//! back, a `.cold` fragment), C++ throwing exceptions (libstdc++, libgcc_s's unwinder), Rust
//! (collections, a caught panic), and this machine's sqlite3, python3.11 (whose imports
//! `dlopen` through ld.so) and bash.
//!
//! They need root (BPF). Without it they skip with a message, unless `CI=true`, where they
//! fail loudly.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{build_c, have_root, record, urec_ok};

const MIX_C: &str = include_str!("fixtures/unwind_mix.c");
const SIGNAL_C: &str = include_str!("fixtures/unwind_signal.c");
const MIX_CPP: &str = include_str!("fixtures/unwind_mix.cpp");
const MIX_RS: &str = include_str!("fixtures/unwind_mix.rs");

/// What one recording's cross-check found.
#[derive(Debug, Default)]
struct Counts {
    equal: usize,
    fallback: usize,
}

/// Records `command` with `-g dwarf` and `probes`, checking every stack; returns the counts
/// and the recording (for callers that look at the stacks). Fails on any mismatch.
fn cross_check(what: &str, dir: &Path, probes: &[&str], command: &[&str]) -> Counts {
    let check = dir.join(format!("{what}.check"));
    let data = dir.join(format!("{what}.data"));
    let _ = std::fs::remove_file(&check);
    let mut args = vec!["-q", "-g", "dwarf"];
    for p in probes {
        args.extend(["-e", p]);
    }
    args.extend(["-o", data.to_str().unwrap(), "--"]);
    args.extend(command);
    let o = record(&args)
        .env("UREC_TEST_UNWIND_TABLES", &check)
        .stdout(Stdio::null())
        .output()
        .expect("running urec");
    assert!(o.status.success(), "{what}: urec record {args:?}: {o:?}");
    let lines = std::fs::read_to_string(&check).unwrap_or_default();
    let mut counts = Counts::default();
    let mut mismatches = Vec::new();
    for line in lines.lines() {
        if line.starts_with("equal ") {
            counts.equal += 1;
        } else if line.starts_with("fallback ") {
            counts.fallback += 1;
        } else {
            mismatches.push(line);
        }
    }
    eprintln!(
        "{what}: {} stacks equal, {} left to the fallback, {} mismatches",
        counts.equal,
        counts.fallback,
        mismatches.len()
    );
    assert!(
        mismatches.is_empty(),
        "{what}: {} of {} stacks differ; first: {:#?}",
        mismatches.len(),
        lines.lines().count(),
        &mismatches[..mismatches.len().min(5)]
    );
    assert!(
        counts.equal + counts.fallback >= 50,
        "{what}: too few stacks checked: {counts:?}"
    );
    counts
}

#[test]
fn c_targets_with_and_without_frame_pointers() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, flags) in [
        ("c_o0_fp", ["-O0", "-fno-omit-frame-pointer"]),
        ("c_o0_nofp", ["-O0", "-fomit-frame-pointer"]),
        ("c_o2_fp", ["-O2", "-fno-omit-frame-pointer"]),
        ("c_o2_nofp", ["-O2", "-fomit-frame-pointer"]),
    ] {
        let exe = build_c(dir.path(), name, MIX_C, &flags);
        let exe = exe.to_str().unwrap();
        let leaf = format!("{exe}:leaf");
        let counts = cross_check(
            name,
            dir.path(),
            &[&leaf, "libc:malloc", "libc:free"],
            &[exe, "300"],
        );
        assert_eq!(
            counts.fallback, 0,
            "{name}: nothing here needs the fallback"
        );
    }
}

/// Stacks through a signal frame: the walk steps `__restore_rt` (a `SignalFrame` row) from
/// the signal frame's saved registers, as the recorder's unwinder does around framehop, and
/// both go on to `main` alike: every stack equal, none left to the fallback.
#[test]
fn signal_handler_frames_are_walked_through() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = build_c(dir.path(), "signal", SIGNAL_C, &["-O2"]);
    let counts = cross_check(
        "signal",
        dir.path(),
        &["libc:malloc"],
        &[exe.to_str().unwrap(), "200"],
    );
    assert_eq!(counts.fallback, 0, "{counts:?}");
    assert!(counts.equal >= 200, "{counts:?}");
    // The handler's mallocs reach main through the interrupted frame.
    let data = dir.path().join("signal.data");
    let folded = common::urec_ok(&["report", "-i", data.to_str().unwrap(), "--folded", "-"]);
    assert!(
        folded
            .lines()
            .any(|l| l.contains(";main;") && l.contains("__restore_rt;") && l.contains(";malloc ")),
        "{folded}"
    );
}

#[test]
fn cpp_exceptions() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("mix.cpp");
    std::fs::write(&src, MIX_CPP).unwrap();
    let exe = dir.path().join("cpp_mix");
    let o = Command::new("g++")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("running g++");
    assert!(o.status.success(), "g++: {o:?}");
    // Entry probes only: a uretprobe on __cxa_throw puts the kernel's trampoline in the
    // return address the C++ unwinder walks through, which then finds no FDE and calls
    // std::terminate (the program dies of SIGABRT).
    let libstdcxx = "/usr/lib/x86_64-linux-gnu/libstdc++.so.6:__cxa_throw%entry";
    let libgcc = "/lib/x86_64-linux-gnu/libgcc_s.so.1:_Unwind_Find_FDE%entry";
    cross_check(
        "cpp_exceptions",
        dir.path(),
        &["libc:malloc", libstdcxx, libgcc],
        &[exe.to_str().unwrap(), "200"],
    );
}

#[test]
fn rust_target() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("mix.rs");
    std::fs::write(&src, MIX_RS).unwrap();
    let exe = dir.path().join("rust_mix");
    let o = Command::new("rustc")
        .args(["-O", "--edition", "2021", "-o"])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("running rustc");
    assert!(o.status.success(), "rustc: {o:?}");
    cross_check(
        "rust",
        dir.path(),
        &["libc:malloc", "libc:free"],
        &[exe.to_str().unwrap(), "300"],
    );
}

#[test]
fn system_binaries() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    if Path::new("/usr/bin/sqlite3").exists() {
        cross_check(
            "sqlite3",
            dir.path(),
            &["libc:malloc", "libc:free"],
            &[
                "/usr/bin/sqlite3",
                ":memory:",
                "create table t(a, b); \
                 with recursive c(x) as (select 1 union all select x + 1 from c where x < 3000) \
                 insert into t select x, hex(randomblob(20)) from c; \
                 select count(*) from t;",
            ],
        );
    } else {
        eprintln!("skipping sqlite3: not installed (apt-get install sqlite3)");
    }
    if Path::new("/usr/bin/python3.11").exists() {
        cross_check(
            "python3.11",
            dir.path(),
            &["libc:malloc", "libc:free"],
            &[
                "/usr/bin/python3.11",
                "-c",
                "import json, ctypes, decimal\n\
                 d = [{'a': i, 'b': str(i) * 3} for i in range(2000)]\n\
                 print(len(json.loads(json.dumps(d))))",
            ],
        );
        // The imports dlopen extension modules: some stacks run through ld.so.
        let data = dir.path().join("python3.11.data");
        let folded = urec_ok(&["report", "-i", data.to_str().unwrap(), "--folded", "-"]);
        assert!(
            folded.contains("_dl_") || folded.contains("ld-linux"),
            "no stack through ld.so"
        );
    } else {
        eprintln!("skipping python3.11: not installed (apt-get install python3.11)");
    }
    cross_check(
        "bash",
        dir.path(),
        &["libc:malloc", "bash:e*"],
        &[
            "/usr/bin/bash",
            "-c",
            "for i in $(seq 1 100); do x=$((i * 2)); y=$(echo $x | tr 1 2); done",
        ],
    );
}

/// `urec list --unwind-stats` (no root needed): libc's table within the goals of issue 30
/// (≤ 200 KB, under 1% of its code left to the fallback).
#[test]
fn list_unwind_stats() {
    let out = urec_ok(&["list", "--unwind-stats", "libc"]);
    let field = |name: &str| -> u64 {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} line in {out}"));
        line.split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("no number in {line:?}"))
    };
    let size = field("size");
    let covered = field("code with CFI");
    let fallback = field("fallback");
    assert!(size > 10_000 && size <= 200_000, "{out}");
    assert!(fallback * 100 < covered, "{out}");
    assert!(out.contains(".eh_frame"), "{out}");
}
