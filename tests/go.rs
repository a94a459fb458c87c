//! Go programs (SPEC.md, "Go programs"), built by the test with the Go toolchain: the default
//! probe (entry and return) on several functions of a program whose goroutine stacks grow
//! while probed calls are in flight, and whose goroutines block mid-call and resume on other
//! threads. A uretprobe there crashes the runtime (`fatal error: unknown caller pc`); urec must
//! leave the program's output and exit status exactly as without it, and count every call and
//! return exactly, paired per goroutine.

mod common;

use std::process::Command;

use common::*;

/// Ground truth: 8 goroutines × 25 calls of `Deep(200)` (201 calls each, 512-byte frames: the
/// 8 KiB goroutine stacks grow many times under probed calls), and 16 goroutines × 10 calls
/// of `Nap`, which sleeps 1 ms mid-call (the goroutine resumes on any thread) and calls
/// `Leaf`, as does the innermost `Deep`.
const PROGRAM: &str = r#"package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
)

//go:noinline
func Leaf(n int) int { return n * 2 }

//go:noinline
func Deep(n int) int {
	var pad [512]byte
	pad[n%512] = byte(n)
	if n == 0 {
		return int(pad[0]) + Leaf(1)
	}
	return Deep(n-1) + int(pad[n%512]&1)
}

//go:noinline
func Nap(i int) int {
	time.Sleep(time.Millisecond)
	return Leaf(i)
}

func main() {
	runtime.GOMAXPROCS(4)
	var wg sync.WaitGroup
	deep := make([]int, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 25; i++ {
				deep[g] += Deep(200)
			}
		}(g)
	}
	naps := make([]int, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				naps[g] += Nap(i)
			}
		}(g)
	}
	wg.Wait()
	fmt.Println(deep, naps)
	os.Exit(3)
}
"#;

const DEEP_CALLS: u64 = 8 * 25 * 201;
const NAP_CALLS: u64 = 16 * 10;
const LEAF_CALLS: u64 = 8 * 25 + NAP_CALLS;

/// The program built with `flags`, in a directory of its own for the test's files; None (the
/// test skips) without a Go toolchain.
fn program(flags: &[&str]) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    if !common::go::have_go() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = common::go::build_go(dir.path(), "gotest", PROGRAM, flags, false);
    Some((dir, exe))
}

/// `urec report --json` of the recording at `data`.
fn report_json(data: &std::path::Path) -> serde_json::Value {
    let text = urec_ok(&["report", "-i", data.to_str().unwrap(), "--json", "-"]);
    serde_json::from_str(&text).unwrap()
}

fn function<'a>(json: &'a serde_json::Value, probe: &str) -> &'a serde_json::Value {
    json["functions"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["probe"] == probe))
        .unwrap_or_else(|| panic!("no function {probe} in {json}"))
}

#[test]
fn default_probes_on_go_functions_leave_the_program_alone_and_count_exactly() {
    if !have_root() {
        return;
    }
    let Some((dir, exe)) = program(&[]) else {
        return;
    };
    let untraced = Command::new(&exe).output().unwrap();
    assert_eq!(untraced.status.code(), Some(3));
    let data = dir.path().join("go.data");
    let target = exe.to_str().unwrap();
    let specs: Vec<String> = ["main.Deep", "main.Nap", "main.Leaf"]
        .iter()
        .map(|f| format!("{target}:{f}"))
        .collect();
    let mut args = vec!["-o", data.to_str().unwrap()];
    for s in &specs {
        args.extend(["-e", s.as_str()]);
    }
    args.extend(["--", target]);
    let traced = record(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&traced.stderr);
    assert_eq!(
        String::from_utf8_lossy(&traced.stdout),
        String::from_utf8_lossy(&untraced.stdout),
        "the traced program's output differs: {stderr}"
    );
    assert!(!stderr.contains("fatal error"), "{stderr}");
    assert_eq!(traced.status.code(), Some(3), "{stderr}");

    let json = report_json(&data);
    for (f, calls) in [
        ("main.Deep", DEEP_CALLS),
        ("main.Nap", NAP_CALLS),
        ("main.Leaf", LEAF_CALLS),
    ] {
        let probe = format!("{target}:{f}");
        let j = function(&json, &probe);
        assert_eq!(j["calls"], calls, "{probe}: {j}");
        assert_eq!(j["returns"], calls, "{probe}: {j}");
        assert_eq!(j["unmatched"], 0, "{probe}: {j}");
        assert_eq!(j["in_flight"], 0, "{probe}: {j}");
        assert_eq!(j["lost"], 0, "{probe}: {j}");
    }
    // Every Nap slept a millisecond inside the call, whichever thread it ended on.
    let nap = &function(&json, &format!("{target}:main.Nap"))["latency_ns"];
    assert!(nap["min"].as_u64().unwrap() >= 1_000_000, "{nap}");
}

#[test]
fn go_functions_are_probed_past_the_stack_check_and_at_each_ret() {
    let Some((_dir, exe)) = program(&[]) else {
        return;
    };
    let spec = urec_probe::parse(&format!("{}:main.Deep", exe.display())).unwrap();
    let r = urec_probe::resolve(&[spec], &urec_probe::ResolveOptions::default()).unwrap();
    let p = &r.probes[0];
    let go = p.go.as_ref().expect("a Go function");
    assert!(
        go.entry_offset > p.probe.offset.0,
        "the entry probe is past the stack check: {go:?}"
    );
    let rets = go.returns.as_ref().expect("Deep returns by ret");
    assert!(!rets.is_empty());
    assert_eq!(p.probe.kind, urec_format::ProbeKind::EntryReturn);
}

#[test]
fn entry_only_and_return_only_probes_on_go_functions() {
    if !have_root() {
        return;
    }
    let Some((dir, exe)) = program(&[]) else {
        return;
    };
    let data = dir.path().join("go.data");
    let target = exe.to_str().unwrap();
    let deep = format!("{target}:main.Deep%entry");
    // Deep's innermost call passes 1 to Leaf, Nap passes 0..9: Leaf returns 2n in rax.
    let leaf = format!("{target}:main.Leaf%return r=$retval");
    let traced = record(&[
        "-g",
        "fp",
        "-o",
        data.to_str().unwrap(),
        "-e",
        &deep,
        "-e",
        &leaf,
        "--",
        target,
    ])
    .output()
    .unwrap();
    assert_eq!(
        traced.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&traced.stderr)
    );
    let json = report_json(&data);
    let d = function(&json, &format!("{target}:main.Deep"));
    assert_eq!(
        (&d["calls"], &d["returns"]),
        (&DEEP_CALLS.into(), &0.into()),
        "{d}"
    );
    let l = function(&json, &format!("{target}:main.Leaf"));
    assert_eq!(
        (&l["calls"], &l["returns"]),
        (&LEAF_CALLS.into(), &LEAF_CALLS.into()),
        "{l}"
    );
    // The return values, as the program computed them.
    let script = urec_ok(&["script", "-i", data.to_str().unwrap()]);
    let mut values: Vec<u64> = script
        .lines()
        .filter_map(|l| l.split(" r=0x").nth(1)?.split_whitespace().next())
        .map(|v| u64::from_str_radix(v, 16).unwrap())
        .collect();
    values.sort_unstable();
    // Each Go event names its goroutine.
    assert!(
        script
            .lines()
            .filter(|l| l.contains(": (") && l.contains(":main."))
            .all(|l| l.contains(" goroutine=0x")),
        "{script}"
    );
    let mut expected: Vec<u64> = std::iter::repeat_n(2, 8 * 25)
        .chain((0..16).flat_map(|_| (0..10u64).map(|i| 2 * i)))
        .collect();
    expected.sort_unstable();
    assert_eq!(values, expected);
}

#[test]
fn a_stripped_go_binary_records_and_reports_like_an_unstripped_one() {
    if !have_root() {
        return;
    }
    let Some((dir, exe)) = program(&["-ldflags=-s -w"]) else {
        return;
    };
    let untraced = Command::new(&exe).output().unwrap();
    let data = dir.path().join("go.data");
    let target = exe.to_str().unwrap();
    let nap = format!("{target}:main.Nap");
    let leaf = format!("{target}:main.Leaf");
    let traced = record(&[
        "-o",
        data.to_str().unwrap(),
        "-e",
        &nap,
        "-e",
        &leaf,
        "--",
        target,
    ])
    .output()
    .unwrap();
    assert_eq!(traced.stdout, untraced.stdout);
    assert_eq!(
        traced.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&traced.stderr)
    );
    // Reported where the binary is not: the names travel in the file, from Go's own table.
    let empty = tempfile::tempdir().unwrap();
    let folded = urec_ok(&[
        "report",
        "-i",
        data.to_str().unwrap(),
        "--symfs",
        empty.path().to_str().unwrap(),
        "--no-debuginfod",
        "--folded",
        "-",
        "--probe",
        &leaf,
    ]);
    let calls = |path: &str| -> u64 {
        folded
            .lines()
            .filter(|l| l.contains(path))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(calls("main.Deep;main.Leaf "), 8 * 25, "{folded}");
    assert_eq!(calls("main.Nap;main.Leaf "), NAP_CALLS, "{folded}");
    // Every goroutine's stack ends in runtime.goexit, but for Deep's 200 frames, deeper than
    // the 127 a stack keeps.
    assert!(
        folded
            .lines()
            .all(|l| l.contains("runtime.goexit;main.main.func") || l.contains(";[truncated];")),
        "{folded}"
    );
}

#[test]
fn a_c_function_that_ends_in_a_tail_jump_keeps_its_uretprobe() {
    let dir = tempfile::tempdir().unwrap();
    let exe = build_c(
        dir.path(),
        "tail",
        "__attribute__((noinline)) int g(int x) { return x * 3; }\n\
         __attribute__((noinline)) int f(int x) { return g(x + 1); }\n\
         int main(void) { return f(1) == 6 ? 0 : 1; }\n",
        &["-O2"],
    );
    let dis = Command::new("objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(&exe)
        .output()
        .unwrap();
    let dis = String::from_utf8_lossy(&dis.stdout);
    let f = dis.split("<f>:").nth(1).unwrap_or_default();
    assert!(
        f.lines().take(4).any(|l| l.contains("jmp")),
        "f ends in a tail jump: {f}"
    );
    let spec = urec_probe::parse(&format!("{}:f", exe.display())).unwrap();
    let r = urec_probe::resolve(&[spec], &urec_probe::ResolveOptions::default()).unwrap();
    assert_eq!(r.probes[0].probe.kind, urec_format::ProbeKind::EntryReturn);
    assert!(r.probes[0].go.is_none(), "C code: an ordinary uretprobe");
}

/// A recursion that panics at its bottom and recovers three frames up: each call of
/// `Risky(6)` enters 7 frames, 4 return (n = 3..6; 3 by its deferred recover), and the 3 the
/// panic unwound (n = 0..2) never return. Started by a line on stdin, so that the probes are
/// attached first; it then waits, alive, until killed.
const PANICKY: &str = r#"package main

import (
	"bufio"
	"fmt"
	"os"
	"time"
)

//go:noinline
func Risky(n int) (r int) {
	if n == 3 {
		defer func() {
			if recover() != nil {
				r = 100
			}
		}()
	}
	if n == 0 {
		panic("boom")
	}
	return Risky(n-1) + 1
}

func main() {
	bufio.NewReader(os.Stdin).ReadString('\n')
	sum := 0
	for i := 0; i < 10; i++ {
		sum += Risky(6)
	}
	fmt.Println(sum)
	time.Sleep(time.Minute)
}
"#;

#[test]
fn frames_a_recovered_panic_skipped_are_unmatched_not_in_flight() {
    if !have_root() || !common::go::have_go() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = common::go::build_go(dir.path(), "panicky", PANICKY, &[], false);
    let mut prog = Command::new(&exe)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = prog.id().to_string();
    let data = dir.path().join("panic.data");
    let spec = format!("{}:main.Risky", exe.display());
    let mut urec = start_attached(&[
        "-p",
        &pid,
        "-d",
        "3",
        "-o",
        data.to_str().unwrap(),
        "-e",
        &spec,
    ]);
    {
        use std::io::{BufRead, Write};
        let mut stdin = prog.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(prog.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "1030", "Risky(6) is 103, traced or not");
    }
    let status = urec.wait().unwrap();
    let _ = prog.kill();
    let _ = prog.wait();
    assert!(status.success(), "urec record: {status}");
    let json = report_json(&data);
    let r = function(&json, &spec);
    assert_eq!(
        (&r["calls"], &r["returns"], &r["unmatched"], &r["in_flight"]),
        (&70.into(), &40.into(), &30.into(), &0.into()),
        "{r}"
    );
}
