#![cfg(feature = "record")]
//! `-g kernel-dwarf` (issue 31): stacks walked in the kernel over the binaries' unwind tables
//! must be exactly what `-g dwarf` (a stack copy unwound by framehop in the recorder) gives on
//! the same workload: the same call paths, the same counts. And both must be gdb's
//! backtraces of the same calls, with the counts the C source gives.
//!
//! The workload (tests/fixtures/kernel_dwarf.c, built `-O2 -fomit-frame-pointer`) is
//! deterministic, so two recordings of it, one per mode, must give the same folded stacks:
//! recursion of varying depth, a function whose CFA moves between rsp and rbp (a VLA), malloc
//! through the PLT, a library dlopen'd at run time calling through its own PLT and back into
//! the program, pending uretprobes of the recursion's own return probes (the walk replaces the
//! trampoline by what each hid), and a child forked and exec'd after the recording began.
//! Each test also checks that most stacks really were walked in the kernel (`-v`'s summary),
//! so that an always-falling-back walk cannot pass for an equal one.
//!
//! They need root (BPF, uprobes). Without it they skip with a message, unless `CI=true`, where
//! they fail loudly.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{build_c, have_root, record, urec_ok};

const WORKLOAD_C: &str = include_str!("fixtures/kernel_dwarf.c");
const PLUG_C: &str = include_str!("fixtures/kernel_dwarf_plug.c");

const FLAGS: &[&str] = &[
    "-O2",
    "-fomit-frame-pointer",
    "-fno-optimize-sibling-calls",
    "-fcf-protection=none",
];

/// The workload's iterations in each recording (in each of its two processes).
const ITERATIONS: u32 = 1500;

/// The workload and its library, built in a fresh directory under /tmp.
fn build() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("urec-kernel-dwarf")
        .tempdir_in("/tmp")
        .unwrap();
    let plug = build_c(
        dir.path(),
        "libkdplug.so",
        PLUG_C,
        &[FLAGS, &["-fPIC", "-shared"]].concat(),
    );
    let exe = build_c(dir.path(), "kd", WORKLOAD_C, &[FLAGS, &["-ldl"]].concat());
    (dir, exe, plug)
}

/// One recording: its folded stacks (stack → count) and `-v`'s stderr.
fn run(
    mode: &str,
    dir: &Path,
    exe: &Path,
    plug: &Path,
    extra: &[&str],
) -> (BTreeMap<String, u64>, String) {
    let data = dir.join(format!("{mode}.data"));
    let exe_s = exe.to_str().unwrap();
    let plug_s = plug.to_str().unwrap();
    let leaf = format!("{exe_s}:leaf");
    let rec = format!("{exe_s}:rec");
    let inner = format!("{plug_s}:plug_inner");
    let iterations = ITERATIONS.to_string();
    let mut args = vec!["-v", "-g", mode, "-e", &leaf, "-e", &rec, "-e", &inner];
    args.extend(extra);
    args.extend([
        "-o",
        data.to_str().unwrap(),
        "--",
        exe_s,
        &iterations,
        plug_s,
        "fork",
    ]);
    let o = record(&args)
        .stdout(Stdio::null())
        .output()
        .expect("running urec");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "urec record {args:?}: {stderr}");
    assert!(
        !stderr.contains("sampled"),
        "{mode}: events were sampled out under ring pressure: the counts would be estimates\n{stderr}"
    );
    let folded = urec_ok(&["report", "-i", data.to_str().unwrap(), "--folded", "-"]);
    let mut stacks = BTreeMap::new();
    for line in folded.lines() {
        let (stack, n) = line.rsplit_once(' ').expect("folded line");
        *stacks.entry(stack.to_string()).or_default() += n.parse::<u64>().expect("count");
    }
    (stacks, stderr)
}

/// `-v`'s kernel-dwarf line: (stacks walked in the kernel, walks started, the line).
fn walked(stderr: &str) -> (u64, u64, String) {
    let line = stderr
        .lines()
        .find(|l| l.contains("kernel-dwarf: "))
        .unwrap_or_else(|| panic!("no kernel-dwarf summary in:\n{stderr}"))
        .to_string();
    let rest = line.split("kernel-dwarf: ").nth(1).unwrap_or_default();
    let mut words = rest.split_whitespace();
    let walked = words.next().and_then(|w| w.parse().ok()).expect("walked");
    let total = words.nth(1).and_then(|w| w.parse().ok()).expect("walks");
    (walked, total, line)
}

fn assert_same(dwarf: &BTreeMap<String, u64>, kernel: &BTreeMap<String, u64>) {
    assert_equal("-g dwarf", dwarf, "-g kernel-dwarf", kernel);
}

/// `a == b`, or a failure listing the (count, stack) pairs of each side the other lacks.
fn assert_equal(a_name: &str, a: &BTreeMap<String, u64>, b_name: &str, b: &BTreeMap<String, u64>) {
    let only = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| -> Vec<String> {
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| format!("{v} {k}"))
            .collect()
    };
    assert!(
        a == b,
        "stacks differ:\n {a_name} only:\n{}\n {b_name} only:\n{}",
        only(a, b).join("\n"),
        only(b, a).join("\n")
    );
}

#[test]
fn in_kernel_stacks_equal_the_copy_unwinds() {
    if !have_root() {
        return;
    }
    let (dir, exe, plug) = build();
    let (dwarf, _) = run("dwarf", dir.path(), &exe, &plug, &[]);
    let (kernel, stderr) = run("kernel-dwarf", dir.path(), &exe, &plug, &[]);
    assert_same(&dwarf, &kernel);
    // Every path of the workload is there: both processes, the library, the VLA frame.
    let all: String = kernel.keys().cloned().collect::<Vec<_>>().join("\n");
    for frame in [
        "vla;rec",
        "plug;plug_inner;leaf",
        "main;vla",
        &format!("main{}", ";down".repeat(110)),
        // Through the signal frame and on to main.
        "__restore_rt;on_signal;leaf",
    ] {
        assert!(all.contains(frame), "no `{frame}` in:\n{all}");
    }
    let (walked, _, line) = walked(&stderr);
    eprintln!("{line}");
    // The rest fell back before the recorder had written the process's mappings (after its
    // first event is released and the tables compiled: 5 ms for libc's in a release build,
    // up to a second in a debug one on a loaded machine) and are the calibration helper's:
    // a share that depends on the machine's load, so an absolute floor (of ≈18,000 stacks).
    assert!(
        walked >= 1000,
        "too few stacks walked in the kernel: {line}"
    );
    for unexpected in ["read failed", "bad stack", "fallback row", "exact depth"] {
        assert!(!line.contains(unexpected), "{unexpected}: {line}");
    }
    // The program's, libc's, ld.so's (every binary a process maps is loaded at its first
    // copy) and the library's tables, each loaded once (the exec'd child maps the same files)
    // and evicted once no traced process mapped it any more.
    assert!(
        line.contains("4 tables loaded (4 evicted, 0 refused)"),
        "{line}"
    );
}

#[test]
fn the_depth_limit_cuts_the_same_frames() {
    if !have_root() {
        return;
    }
    let (dir, exe, plug) = build();
    let depth = ["--stack-depth", "5"];
    let (dwarf, _) = run("dwarf", dir.path(), &exe, &plug, &depth);
    let (kernel, stderr) = run("kernel-dwarf", dir.path(), &exe, &plug, &depth);
    assert_same(&dwarf, &kernel);
    assert!(
        kernel.keys().any(|k| k.contains("[truncated]")),
        "no stack was cut at 5 frames: {kernel:?}"
    );
    let (walked, _, line) = walked(&stderr);
    eprintln!("{line}");
    assert!(
        walked >= 1000,
        "too few stacks walked in the kernel: {line}"
    );
}

/// urec record's default `--stack-depth`, its maximum too: a deeper stack keeps its innermost
/// frames under a `[truncated]` one.
const STACK_DEPTH: usize = 127;

/// The workload's iterations under gdb (≈ 1 ms a stop): the fewest that take every path (i = 0
/// to 4 give each of `rec`'s depths, 0 the 140-deep `down`, 50 the 110-deep one).
const GDB_ITERATIONS: u32 = 51;

/// A gdb backtrace (innermost first, each inlined frame listed before the one it is inlined
/// into) named as urec's folded stacks name it: outermost first, inlined frames in, the probed
/// function's own frame (with anything inlined at its first instruction) under the probe's
/// name rather than the debug info's (`malloc`, not `__GI___libc_malloc`), and cut as
/// `--stack-depth` cuts: whole physical frames, the innermost kept.
fn fold(probe: &str, frames: &[(&str, bool)]) -> String {
    let mut physical: Vec<Vec<&str>> = Vec::new();
    let mut inlined = Vec::new();
    for &(name, inline) in frames {
        inlined.push(name);
        if !inline {
            physical.push(std::mem::take(&mut inlined));
        }
    }
    assert!(inlined.is_empty(), "an inlined frame outermost: {frames:?}");
    physical[0] = vec![probe];
    let cut = physical.len() > STACK_DEPTH;
    physical.truncate(STACK_DEPTH);
    let mut names = physical.concat();
    if cut {
        names.push("[truncated]");
    }
    names.reverse();
    names.join(";")
}

/// gdb's backtrace of every call of the probed functions (tests/fixtures/kernel_dwarf_bt.py)
/// in the workload's parent and exec'd child, folded (stack → calls) so that it compares with
/// `urec report --folded` line for line.
fn gdb_stacks(gdb: &Path, dir: &Path, exe: &Path, plug: &Path) -> BTreeMap<String, u64> {
    let out = dir.join("gdb.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kernel_dwarf_bt.py");
    let o = Command::new(gdb)
        .args(["-batch", "-nx", "-ex"])
        .arg(format!("python bt_out = {:?}", out.to_str().unwrap()))
        .arg("-x")
        .arg(&script)
        .arg("--args")
        .arg(exe)
        .arg(GDB_ITERATIONS.to_string())
        .arg(plug)
        .arg("fork")
        .stdin(Stdio::null())
        // No debug file from the network: libc6-dbg's are the ones urec reads too.
        .env_remove("DEBUGINFOD_URLS")
        .output()
        .expect("running gdb");
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    // The child's end: the parent, detached at the fork, is not gdb's any more.
    assert!(
        o.status.success() && stdout.contains("exited normally") && !stderr.contains("Python"),
        "gdb: {}\n{stdout}\n{stderr}",
        o.status
    );
    let mut stacks = BTreeMap::new();
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let stop: serde_json::Value = serde_json::from_str(line).expect("gdb's JSON line");
        let probe = stop["probe"].as_str().unwrap();
        // At the first instruction, as the uprobe (or its moved site, before any push).
        let at = stop["at"].as_str().unwrap();
        assert!(!at.contains(" + "), "gdb stopped inside {probe}: {line}");
        // Down to _start, whose CFI ends the stack: no unwind gave up half-way.
        assert_eq!(
            stop["end"], "outermost",
            "gdb's unwind stopped early: {line}"
        );
        let frames: Vec<(&str, bool)> = stop["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f[0].as_str().unwrap(), f[1].as_bool().unwrap()))
            .collect();
        *stacks.entry(fold(probe, &frames)).or_default() += 1;
    }
    stacks
}

/// The workload's own calls of the probed functions in `iterations` iterations, per stack
/// (folded): what the C source says it does, in its parent and its exec'd child alike.
/// `start` is the frames outer to `main`, whatever libc's startup names them; `raise` those
/// from `main` to the signal frame (`raise` and what it inlines, as libc's debug info names
/// them).
fn known(iterations: u32, start: &str, raise: &str) -> BTreeMap<String, u64> {
    let mut calls: Vec<Vec<&str>> = Vec::new();
    // Each `leaf` calls malloc once.
    fn leaf<'a>(calls: &mut Vec<Vec<&'a str>>, mut path: Vec<&'a str>) {
        path.push("leaf");
        calls.push(path.clone());
        path.push("malloc");
        calls.push(path);
    }
    for i in 0..iterations {
        // vla(8 + i % 24, i) → rec(n % 5) → … → rec(0) → leaf.
        let mut path = vec!["main", "vla"];
        for _ in 0..=(8 + i % 24) % 5 {
            path.push("rec");
            calls.push(path.clone());
        }
        leaf(&mut calls, path);
        calls.push(vec!["main", "plug", "plug_inner"]);
        leaf(&mut calls, vec!["main", "plug", "plug_inner"]);
        if i % 50 == 0 {
            let depth = if i % 100 == 0 { 140 } else { 110 };
            let mut path = vec!["main"];
            path.extend(std::iter::repeat_n("down", depth + 1));
            leaf(&mut calls, path);
        }
        if i % 25 == 5 {
            let mut path = vec!["main"];
            path.extend(raise.split(';'));
            path.extend(["__restore_rt", "on_signal"]);
            leaf(&mut calls, path);
        }
    }
    let mut stacks = BTreeMap::new();
    for path in calls {
        let mut frames: Vec<&str> = start.split(';').chain(path).collect();
        if frames.len() > STACK_DEPTH {
            frames.drain(..frames.len() - STACK_DEPTH);
            frames.insert(0, "[truncated]");
        }
        *stacks.entry(frames.join(";")).or_default() += 2;
    }
    stacks
}

/// Issue 31's other half of "done": the in-kernel walk's stacks are gdb's backtraces of the
/// same calls. gdb is an independent unwinder (its own CFI reader, libc's debug info from
/// libc6-dbg, and real return addresses: int3 breakpoints leave no uretprobe trampoline on
/// the stack), so agreeing with it is more than agreeing with `-g dwarf`, whose unwinder and
/// tables urec shares with the walk. gdb stops about 1 ms a call, so it runs the workload a
/// few iterations, enough to take every path, and urec the usual 1,500 (the walk needs the
/// process's mappings written, which takes the recorder a while): the set of stacks must be
/// gdb's, and each stack's count what the C source says for 1,500 iterations, plus, for
/// malloc's calls from within libc and ld.so (dlopen, printf's buffer: once a process
/// however many iterations), gdb's counts. gdb follows the forked child through its exec and
/// lets the parent go; the parent makes no probed call after the fork, or urec's counts
/// would exceed the model's. A signal handler's stacks go through `__restore_rt` (gdb's
/// sigtramp frame) into the interrupted `raise` as in gdb; gdb's tail-call frames (guessed
/// from call-site debug info, not on the stack) are left out of its side.
#[test]
fn in_kernel_stacks_equal_gdbs_backtraces() {
    if !have_root() {
        return;
    }
    let Some(gdb) = urec_record::command::find_program("gdb") else {
        // scripts/install-deps.sh installs it: its absence is a broken machine under CI.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: gdb is missing"
        );
        eprintln!("skipped: no gdb");
        return;
    };
    let (dir, exe, plug) = build();
    let gdb = gdb_stacks(&gdb, dir.path(), &exe, &plug);
    let start = gdb
        .keys()
        .find_map(|k| k.strip_suffix(";main;plug;plug_inner"))
        .unwrap_or_else(|| panic!("no plug_inner called from main in gdb's stacks: {gdb:?}"))
        .to_string();
    // From main to the signal frame: raise and what libc's debug info says it inlines.
    let raise = gdb
        .keys()
        .find_map(|k| {
            let (_, rest) = k.split_once(";main;")?;
            rest.strip_suffix(";__restore_rt;on_signal;leaf")
        })
        .unwrap_or_else(|| panic!("no signal handler's leaf in gdb's stacks: {gdb:?}"))
        .to_string();
    assert!(raise.contains("raise"), "{raise}");
    let own = known(GDB_ITERATIONS, &start, &raise);
    let inside: BTreeMap<String, u64> = gdb
        .iter()
        .filter(|(k, _)| !own.contains_key(*k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    // Every other call is malloc's, made inside libc or ld.so on behalf of main.
    assert!(!inside.is_empty(), "no malloc call from inside libc");
    for stack in inside.keys() {
        assert!(
            stack.starts_with(&format!("{start};main;")) && stack.ends_with(";malloc"),
            "{stack}"
        );
    }
    // The model is gdb's own stacks and counts: it can judge urec's for 1,500 iterations.
    let mut want = own;
    want.extend(inside.clone());
    assert_equal("known calls", &want, "gdb", &gdb);

    let (urec, stderr) = run(
        "kernel-dwarf",
        dir.path(),
        &exe,
        &plug,
        &["-e", "libc:malloc"],
    );
    let urec: BTreeMap<String, u64> = urec
        .into_iter()
        .map(|(k, v)| {
            let stack = k
                .strip_prefix("kd;")
                .unwrap_or_else(|| panic!("not kd's: {k}"));
            (stack.to_string(), v)
        })
        .collect();
    let paths = |m: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        m.keys().map(|k| (k.clone(), 1)).collect()
    };
    assert_equal("gdb", &paths(&gdb), "urec", &paths(&urec));
    let mut want = known(ITERATIONS, &start, &raise);
    want.extend(inside);
    assert_equal("known calls", &want, "urec", &urec);

    let (walked, total, line) = walked(&stderr);
    eprintln!("{line}");
    // As in the tests above: the share of stacks that fell back (before the recorder had
    // written a process's mappings) depends on the machine's load, hence an absolute floor.
    assert!(
        walked >= 1000,
        "too few of {total} stacks walked in the kernel: {line}"
    );
    for unexpected in ["read failed", "bad stack", "fallback row", "exact depth"] {
        assert!(!line.contains(unexpected), "{unexpected}: {line}");
    }
}

/// Debian's python3.11 (no frame pointers; its libc and libz neither) calling zlib.crc32
/// from three Python functions: native frames walked in the kernel through the interpreter,
/// with the Python frames of issue 33 in the same stacks, equal to `-g dwarf`'s.
#[test]
fn debian_python_stacks_equal_the_copy_unwinds() {
    if !have_root() {
        return;
    }
    let python = Path::new("/usr/bin/python3.11");
    if !python.is_file() {
        // scripts/install-deps.sh installs it: its absence is a broken machine under CI.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: /usr/bin/python3.11 is missing"
        );
        eprintln!("skipped: no /usr/bin/python3.11");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("urec-kernel-dwarf-py")
        .tempdir_in("/tmp")
        .unwrap();
    let script = dir.path().join("crc.py");
    std::fs::write(
        &script,
        "import zlib, time\n\
         def c(i): return zlib.crc32(b'x' * (i % 64))\n\
         def b(i): return c(i) + 1\n\
         def a(n):\n    s = 0\n    for i in range(n):\n        s += b(i)\n        \
         if i % 10 == 0: time.sleep(0.001)\n    return s\n\
         a(10000)\n",
    )
    .unwrap();
    let mut stacks = Vec::new();
    let mut summary = String::new();
    for mode in ["dwarf", "kernel-dwarf"] {
        let data = dir.path().join(format!("{mode}.data"));
        let args = [
            "-v",
            "-g",
            mode,
            "-e",
            "libz.so.1:crc32",
            "-o",
            data.to_str().unwrap(),
            "--",
            python.to_str().unwrap(),
            script.to_str().unwrap(),
        ];
        let o = record(&args)
            .stdout(Stdio::null())
            .output()
            .expect("running urec");
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "urec record {args:?}: {stderr}");
        assert!(!stderr.contains("sampled"), "{mode}: sampled\n{stderr}");
        let folded = urec_ok(&["report", "-i", data.to_str().unwrap(), "--folded", "-"]);
        let mut m = BTreeMap::new();
        for line in folded.lines() {
            let (stack, n) = line.rsplit_once(' ').expect("folded line");
            *m.entry(stack.to_string()).or_default() += n.parse::<u64>().expect("count");
        }
        stacks.push(m);
        summary = stderr;
    }
    assert_same(&stacks[0], &stacks[1]);
    let all: String = stacks[1].keys().cloned().collect::<Vec<_>>().join("\n");
    assert!(all.contains("Py_BytesMain"), "{all}");
    assert!(all.contains("crc32"), "{all}");
    assert_eq!(stacks[1].values().sum::<u64>(), 10000, "{all}");
    let (walked, _, line) = walked(&summary);
    eprintln!("{line}");
    assert!(
        walked >= 3000,
        "too few stacks walked in the kernel: {line}"
    );
}
