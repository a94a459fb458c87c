#![cfg(feature = "record")]
//! The BPF Python frame walk (issue 33) on real interpreters: Debian's `/usr/bin/python3.11`
//! and, where the machine has them, pyenv's shared 3.12.1 and 3.13.0 builds, running a script
//! whose call path is known (`<module>` → `outer` → `target` → `zlib.crc32`), probed at libz's
//! `crc32`. What the walk wrote is checked through the recorder's own count of the Python blocks
//! it decoded (`UREC_DEBUG_PYTHON=1` prints them); the names, files and lines those frames get
//! in the report are tests/python.rs's.
//!
//! They need root. Without it they skip with a message, unless `CI=true`, where they fail
//! loudly.

mod common;

use std::path::Path;

use common::have_root;
use common::python::{available, pyenv, PYENV, PYTHON311};

const LIBZ: &str = "/lib/x86_64-linux-gnu/libz.so.1";

/// `N` calls of zlib.crc32 through outer() → target(), after sleeping `WARMUP` seconds.
const SCRIPT: &str = "
import sys, time, zlib
n, warmup = int(sys.argv[1]), float(sys.argv[2])
time.sleep(warmup)
data = b'x' * 64
def target():
    return zlib.crc32(data)
def outer():
    return target()
for _ in range(n):
    outer()
";

const CALLS: u64 = 1000;

/// The counts of `python: stack_events=… blocks=… ok3=… …` (see record's `PyStats::line`).
#[derive(Debug, Default)]
struct Counts {
    stack_events: u64,
    blocks: u64,
    ok3: u64,
    frames: u64,
    read_failed: u64,
    no_thread: u64,
}

fn counts(stderr: &str) -> Counts {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("python: "))
        .unwrap_or_else(|| panic!("no python counts in urec's stderr:\n{stderr}"));
    let mut c = Counts::default();
    for word in line.split_whitespace().skip(1) {
        let (k, v) = word.split_once('=').expect("key=value");
        let v: u64 = v.parse().expect("a count");
        match k {
            "stack_events" => c.stack_events = v,
            "blocks" => c.blocks = v,
            "ok3" => c.ok3 = v,
            "frames" => c.frames = v,
            "read_failed" => c.read_failed = v,
            "no_thread" => c.no_thread = v,
            _ => {}
        }
    }
    c
}

/// Records `python SCRIPT CALLS warmup` with `-g stacks`, `env` set; returns the counts.
fn record(python: &str, stacks: &str, warmup: &str, env: &[(&str, &str)]) -> Counts {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("crc.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out_file = dir.path().join("out.urec");
    let probe = format!("{LIBZ}:crc32");
    let calls = CALLS.to_string();
    let mut cmd = std::process::Command::new(common::UREC);
    cmd.args(["record", "-g", stacks, "-o"])
        .arg(&out_file)
        .args(["-e", &probe, "--", python])
        .arg(&script)
        .args([calls.as_str(), warmup])
        .env("UREC_DEBUG_PYTHON", "1")
        .env_remove("DEBUGINFOD_URLS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running urec");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "urec record failed:\n{stderr}");
    let c = counts(&stderr);
    eprintln!("{python} -g {stacks}: {c:?}");
    c
}

fn present(path: &str) -> bool {
    assert!(
        Path::new(LIBZ).exists(),
        "no {LIBZ} (zlib1g is Debian's essential set)"
    );
    available(path)
}

/// At least 95% of the calls carry a complete walk: status 0 and `target`, `outer`,
/// `<module>` (3.12+ add the entry shim below it).
fn assert_walked(c: &Counts) {
    assert_eq!(c.stack_events, CALLS, "every call captured a stack: {c:?}");
    assert!(c.ok3 * 100 >= CALLS * 95, "fewer than 95% walked: {c:?}");
    assert_eq!((c.read_failed, c.no_thread), (0, 0), "{c:?}");
}

#[test]
fn python311_dwarf_and_fp() {
    if !have_root() || !present(PYTHON311) {
        return;
    }
    // No warm-up: Debian's python3.11 is a fixed-address executable, entered in the map
    // before the command's exec.
    for stacks in ["dwarf", "fp"] {
        let c = record(PYTHON311, stacks, "0", &[]);
        assert_walked(&c);
        // target, outer, <module>: exactly three Python frames per call.
        assert_eq!(c.frames, 3 * c.blocks, "-g {stacks}: {c:?}");
    }
}

/// Without stacks nothing is walked; with `UREC_NO_PYTHON` neither.
#[test]
fn python311_no_walk_without_stacks_or_when_disabled() {
    if !have_root() || !present(PYTHON311) {
        return;
    }
    let c = record(PYTHON311, "none", "0", &[]);
    assert_eq!((c.stack_events, c.blocks), (0, 0), "{c:?}");
    let c = record(PYTHON311, "dwarf", "0", &[("UREC_NO_PYTHON", "1")]);
    assert_eq!((c.stack_events, c.blocks), (CALLS, 0), "{c:?}");
}

/// pyenv's shared builds: `_PyRuntime` is in the libpython the executable maps, whose address
/// is known only once mapped, from the side-band (read every 10 ms; the library is detected
/// before the command starts, through the executable's RUNPATH, so that its mapping only needs
/// its bias). The interpreter's start-up (tens of milliseconds) is the margin, which a loaded
/// machine (tests in parallel on two cores) sometimes eats: the script waits 0.2 s before its
/// calls, so that this test checks the walk, not that race. 3.12+ add the entry shim frame
/// below `<module>`: four frames per call.
#[test]
fn pyenv_builds() {
    if !have_root() {
        return;
    }
    for (version, program) in PYENV {
        let python = pyenv(version, program);
        let python = python.to_str().unwrap();
        if !present(python) {
            continue;
        }
        for stacks in ["dwarf", "fp"] {
            let c = record(python, stacks, "0.2", &[]);
            assert_walked(&c);
            assert_eq!(c.frames, 4 * c.blocks, "{python} -g {stacks}: {c:?}");
        }
    }
}

/// A program that says it is CPython 3.14 (`Py_Version`, `_PyRuntime` exported, as a CPython
/// build exports them) but whose layout urec does not know: named once on stderr, and
/// nothing else changes (its events are recorded, with native stacks).
#[test]
fn unknown_version_is_named_once() {
    if !have_root() || !Path::new(LIBZ).exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("fakepy.c");
    std::fs::write(
        &src,
        r#"
#include <zlib.h>
const unsigned long Py_Version = 0x030e00f0;
char _PyRuntime[4096];
int main(void) {
    unsigned char buf[64] = {0};
    unsigned long c = 0;
    for (int i = 0; i < 100; i++) c += crc32(0, buf, 64);
    return (int)(c & 0);
}
"#,
    )
    .unwrap();
    let exe = dir.path().join("fakepy");
    // libz by its path (no -dev package needed); -rdynamic exports the two symbols, as a
    // CPython executable exports them for its extension modules.
    common::gcc(&exe, &[src, LIBZ.into()], &["-O1", "-rdynamic"]);
    let out_file = dir.path().join("out.urec");
    let probe = format!("{LIBZ}:crc32");
    let out = std::process::Command::new(common::UREC)
        .args(["record", "-g", "fp", "-o"])
        .arg(&out_file)
        .args(["-e", &probe, "--"])
        .arg(&exe)
        .env("UREC_DEBUG_PYTHON", "1")
        .env_remove("DEBUGINFOD_URLS")
        .output()
        .expect("running urec");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let said = "python3.14: unknown frame layout, native stacks only";
    assert_eq!(stderr.matches(said).count(), 1, "{stderr}");
    let c = counts(&stderr);
    assert_eq!((c.stack_events, c.blocks), (100, 0), "{c:?}");
}

/// Two threads calling zlib.crc32 on 64 KiB buffers (the GIL released inside) while a third
/// runs Python code, then a child forked without exec making 300 more calls: each event walks
/// its own thread's frames (matched by fsbase, not the GIL holder's), and the child walks from
/// its first call (its entry copied by the fork program). The script first waits 0.3 s: a
/// pyenv build is PIE with a shared libpython, so its process has no `py_procs` entry until
/// the recorder has read libpython's mapping from the side-band (docs/python-frames.md, the
/// start-up limit); on a loaded machine that took long enough for 75 of the 1,300 calls to
/// come first. This test is about the walk of threads and a fork, not about that limit.
const THREADS: &str = "
import os, threading, time, zlib
time.sleep(0.3)
big = b'x' * 65536
def target():
    return zlib.crc32(big)
def outer(n):
    for _ in range(n):
        target()
def spin():
    x = 0
    for i in range(3000000):
        x += i
ts = [threading.Thread(target=outer, args=(500,)) for _ in range(2)]
ts.append(threading.Thread(target=spin))
for t in ts:
    t.start()
for t in ts:
    t.join()
pid = os.fork()
if pid == 0:
    outer(300)
    os._exit(0)
os.waitpid(pid, 0)
";

fn threads_and_fork(python: &str) {
    if !have_root() || !present(python) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("threads.py");
    std::fs::write(&script, THREADS).unwrap();
    let out_file = dir.path().join("out.urec");
    let probe = format!("{LIBZ}:crc32");
    let out = std::process::Command::new(common::UREC)
        .args(["record", "-g", "dwarf", "-o"])
        .arg(&out_file)
        .args(["-e", &probe, "--", python])
        .arg(&script)
        .env("UREC_DEBUG_PYTHON", "1")
        .env_remove("DEBUGINFOD_URLS")
        .output()
        .expect("running urec");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let c = counts(&stderr);
    eprintln!("{python}: {c:?}");
    assert_eq!(c.stack_events, 1300, "{c:?}");
    assert!(c.ok3 * 100 >= 1300 * 95, "fewer than 95% walked: {c:?}");
    assert_eq!((c.read_failed, c.no_thread), (0, 0), "{c:?}");
}

#[test]
fn python311_threads_and_fork() {
    threads_and_fork(PYTHON311);
}

#[test]
fn pyenv_313_threads_and_fork() {
    let python = pyenv(PYENV[1].0, PYENV[1].1);
    threads_and_fork(python.to_str().unwrap());
}

/// A native thread of a Python process (a C library's own pthread, started through ctypes)
/// has no thread state: its events say so (`UREC_PY_NO_THREAD`, no frames), while the main
/// thread's calls right after still walk (`target`, `<module>`).
#[test]
fn python311_native_thread_has_no_python_frames() {
    if !have_root() || !present(PYTHON311) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("nat.c");
    std::fs::write(
        &src,
        r#"
#include <pthread.h>
#include <zlib.h>
static void *worker(void *arg) {
    long n = (long)arg;
    unsigned char b[64] = {0};
    unsigned long c = 0;
    for (long i = 0; i < n; i++) c += crc32(0, b, 64);
    return (void *)c;
}
void run(long n) { pthread_t t; pthread_create(&t, 0, worker, (void *)n); pthread_join(t, 0); }
"#,
    )
    .unwrap();
    let lib = dir.path().join("nat.so");
    common::gcc(
        &lib,
        &[src, LIBZ.into()],
        &["-O1", "-shared", "-fPIC", "-pthread"],
    );
    let script = dir.path().join("nat.py");
    std::fs::write(
        &script,
        format!(
            "import ctypes, zlib\nctypes.CDLL('{}').run(ctypes.c_long(1000))\nd = b'x'\n\
             def target():\n    return zlib.crc32(d)\nfor _ in range(200):\n    target()\n",
            lib.display()
        ),
    )
    .unwrap();
    let out_file = dir.path().join("out.urec");
    let probe = format!("{LIBZ}:crc32");
    let out = std::process::Command::new(common::UREC)
        .args(["record", "-g", "fp", "-o"])
        .arg(&out_file)
        .args(["-e", &probe, "--", PYTHON311])
        .arg(&script)
        .env("UREC_DEBUG_PYTHON", "1")
        .env_remove("DEBUGINFOD_URLS")
        .output()
        .expect("running urec");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let c = counts(&stderr);
    assert_eq!((c.stack_events, c.blocks), (1200, 1200), "{c:?}");
    assert_eq!((c.no_thread, c.frames), (1000, 400), "{c:?}");
}
