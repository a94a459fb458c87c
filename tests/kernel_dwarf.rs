#![cfg(feature = "record")]
//! `-g kernel-dwarf` (issue 31): stacks walked in the kernel over the binaries' unwind tables
//! must be exactly what `-g dwarf` (a stack copy unwound by framehop in the recorder) gives on
//! the same workload: the same call paths, the same counts.
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
use std::process::Stdio;

use common::{build_c, have_root, record, urec_ok};

const WORKLOAD_C: &str = include_str!("fixtures/kernel_dwarf.c");
const PLUG_C: &str = include_str!("fixtures/kernel_dwarf_plug.c");

const FLAGS: &[&str] = &[
    "-O2",
    "-fomit-frame-pointer",
    "-fno-optimize-sibling-calls",
    "-fcf-protection=none",
];

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
    let mut args = vec!["-v", "-g", mode, "-e", &leaf, "-e", &rec, "-e", &inner];
    args.extend(extra);
    args.extend([
        "-o",
        data.to_str().unwrap(),
        "--",
        exe_s,
        "1500",
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
    let only = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| -> Vec<String> {
        a.iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| format!("{v} {k}"))
            .collect()
    };
    assert!(
        dwarf == kernel,
        "stacks differ:\n -g dwarf only:\n{}\n -g kernel-dwarf only:\n{}",
        only(dwarf, kernel).join("\n"),
        only(kernel, dwarf).join("\n")
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
    // The program's, libc's and the library's tables, each loaded once (the exec'd child
    // maps the same files) and evicted once no traced process mapped it any more.
    assert!(
        line.contains("3 tables loaded (3 evicted, 0 refused)"),
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
