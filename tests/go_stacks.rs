#![cfg(feature = "record")]
//! `-g auto` on Go programs (SPEC.md, "Go programs"): frame pointers, whatever the census of
//! `push %rbp` prologues says (Go sets its frame up after the stack check), and stacks that end
//! at `runtime.goexit` / `runtime.main`. The Go program is built here with `go build`; without
//! a Go toolchain the tests skip with a message (fail under `CI=true`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{have_root, record, urec_ok};
use urec_format::StackMode;

/// `Leaf` 500 times from main and 300 times from a goroutine; exits 0.
const GO_SOURCE: &str = r#"
package main

import (
	"fmt"
	"sync"
)

//go:noinline
func sink(n int) int { return n }

// Leaf calls, so it has a frame.
//
//go:noinline
func Leaf(s string, n int) int { return sink(len(s)) + n }

//go:noinline
func viaGoroutine(n int) int {
	t := 0
	for i := 0; i < n; i++ {
		t += Leaf("go", i)
	}
	return t
}

func main() {
	var wg sync.WaitGroup
	g := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		g = viaGoroutine(300)
	}()
	t := 0
	for i := 0; i < 500; i++ {
		t += Leaf("main", i)
	}
	wg.Wait()
	fmt.Println(t + g)
}
"#;

/// An entry-only spec for `main.Leaf`: the instruction after its frame pointer is set
/// (`lea N(%rsp),%rbp` in Go 1.19, `mov %rsp,%rbp` in newer Go), as `FUNCTION+OFF`. There the
/// frame-pointer walk starts from Leaf's own frame, so the caller is in it. (A plain entry
/// probe would do once record attaches Go probes at their Go sites; until then the default
/// entry+return would put a uretprobe on Go code.)
fn leaf_spec(exe: &Path) -> String {
    let out = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(exe)
        .output()
        .expect("running objdump");
    let text = String::from_utf8_lossy(&out.stdout);
    let body = text
        .split("<main.Leaf>:\n")
        .nth(1)
        .expect("main.Leaf in objdump");
    let addr = |l: &str| u64::from_str_radix(l.trim().split(':').next().unwrap(), 16).unwrap();
    let lines: Vec<&str> = body.lines().take_while(|l| !l.is_empty()).collect();
    let set = lines
        .iter()
        .position(|l| l.trim_end().ends_with(",%rbp") && (l.contains("lea") || l.contains("mov")))
        .expect("Leaf sets a frame pointer");
    format!(
        "{}:main.Leaf+{:#x}",
        exe.display(),
        addr(lines[set + 1]) - addr(lines[0])
    )
}

#[test]
fn auto_picks_frame_pointers_for_go() {
    let dir = tempfile::tempdir().unwrap();
    if !common::go::have_go() {
        return;
    }
    let exe = common::go::build_go(dir.path(), "gostacks", GO_SOURCE, &[], false);
    let spec = leaf_spec(&exe);
    let specs = vec![urec_probe::parse(&spec).unwrap()];
    let r = urec_probe::resolve(&specs, &Default::default()).unwrap();
    let p = &r.probes[0];
    assert!(p.binary_is_go);
    // The premise: the census alone would have said DWARF.
    assert!(
        !p.binary_keeps_frame_pointers,
        "Go 1.19 frames are `sub; mov %rbp; lea`"
    );
    assert!(urec_probe::keeps_frame_pointers(&exe), "a Go caller");
    assert_eq!(
        urec_record::plan::auto_stack_mode(p, true),
        StackMode::FramePointer
    );
    // A library probe called from a Go program: the Go program is no reason for DWARF.
    let libc = urec_probe::resolve(
        &[urec_probe::parse("libc:malloc").unwrap()],
        &Default::default(),
    )
    .unwrap();
    let callers_fp = urec_probe::keeps_frame_pointers(&exe);
    assert_eq!(
        urec_record::plan::auto_stack_mode(&libc.probes[0], callers_fp),
        urec_record::plan::auto_stack_mode(&libc.probes[0], true)
    );
}

#[test]
fn go_stacks_end_at_goexit_or_main() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    if !common::go::have_go() {
        return;
    }
    let exe = common::go::build_go(dir.path(), "gostacks", GO_SOURCE, &[], false);
    let data = dir.path().join("go.data");
    let spec = leaf_spec(&exe);
    let out = record(&[
        "-v",
        "-e",
        &spec,
        "-o",
        data.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
    ])
    .stdout(Stdio::piped())
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "172200");
    assert!(stderr.contains("stacks by frame pointers"), "{stderr}");

    let info = urec_ok(&["info", "-i", data.to_str().unwrap()]);
    assert!(
        info.lines()
            .any(|l| l.contains("main.Leaf") && l.split_whitespace().any(|w| w == "fp")),
        "{info}"
    );
    let folded = urec_ok(&["report", "-i", data.to_str().unwrap(), "--folded", "-"]);
    let mut from_main = 0;
    let mut from_goroutine = 0;
    for line in folded.lines() {
        let (stack, count) = line.rsplit_once(' ').unwrap();
        let count: u64 = count.parse().unwrap();
        let frames: Vec<&str> = stack.split(';').skip(1).collect();
        assert_eq!(frames.last(), Some(&"main.Leaf"), "{line}");
        assert!(
            frames[0] == "runtime.goexit" || frames[0] == "runtime.main",
            "a Go stack ends at runtime.goexit or runtime.main: {line}"
        );
        if frames.contains(&"main.viaGoroutine") {
            from_goroutine += count;
        } else if frames.contains(&"main.main") {
            from_main += count;
        }
    }
    assert_eq!((from_main, from_goroutine), (500, 300), "{folded}");
}
