#![cfg(feature = "record")]
//! End-to-end tests of `urec record`: real uprobes on small C programs built here, with exact
//! ground truth (counts, callers, argument values, latencies), read back with the format's
//! reader.
//!
//! They need root (BPF and system-wide perf events). Without it they skip with a message,
//! unless `CI=true`, where they fail loudly.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::fixture::Fixture;
use common::recording::Recording;
use common::{have_root, interrupt, poll, record, start_attached};
use urec_format::{ArgValue, EventKind, Stack};

/// Calls leaf 600 times through `a` and 400 times through `b`; with `wait` as argument, first
/// waits for a line on stdin. Exits with status 3.
const TARGET_C: &str = r#"
#include <stdio.h>
#include <string.h>
#include <unistd.h>
__attribute__((noinline)) int leaf(int x, const char *s) { usleep(100); return x * 2 + (int)strlen(s); }
__attribute__((noinline)) int a(int i) { char buf[16]; snprintf(buf, sizeof buf, "a%d", i); return leaf(i, buf) + 1; }
__attribute__((noinline)) int b(int i) { char buf[16]; snprintf(buf, sizeof buf, "b%d", i); return leaf(-i, buf) + 2; }
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "wait") == 0) {
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 9;
    }
    long sum = 0;
    for (int i = 0; i < 600; i++) sum += a(i);
    for (int i = 0; i < 400; i++) sum += b(i);
    printf("%ld\n", sum);
    return 3;
}
"#;

/// Minimum latency of one leaf call: it sleeps 100 µs.
const LEAF_SLEEP_NS: u64 = 100_000;

/// The target, built non-PIE (its `nm` addresses are those in the process) with frame pointers.
fn target() -> Fixture {
    Fixture::build(
        "target",
        TARGET_C,
        &["-O0", "-fno-omit-frame-pointer", "-no-pie"],
    )
}

/// The arguments of the `i`th call of leaf: `a(0..600)` passes `(i, "a{i}")`, then
/// `b(0..400)` passes `(-i, "b{i}")`.
fn leaf_args(i: usize) -> (i64, String) {
    if i < 600 {
        (i as i64, format!("a{i}"))
    } else {
        (-(i as i64 - 600), format!("b{}", i - 600))
    }
}

/// Records `urec record -q -e SPEC -o DATA -- target` into the fixture's file `data`; urec
/// exits with the target's status, 3.
fn record_target(t: &Fixture, spec: &str, data: &str) -> (PathBuf, Recording) {
    let out = t.data(data);
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
    assert_eq!(st.code(), Some(3), "urec exits with the command's status");
    let rec = Recording::read(&out);
    (out, rec)
}

/// The `i`th call of leaf came from `a` for the first 600, then from `b`, and `a`/`b` from main.
fn assert_leaf_path(t: &Fixture, stack: &Stack, i: usize) {
    let caller = if i < 600 { "a" } else { "b" };
    assert_eq!(t.first_names(stack, 3), vec!["leaf", caller, "main"]);
}

#[test]
fn command_counts_stacks_args_and_latency() {
    if !have_root() {
        return;
    }
    let t = target();
    let spec = format!("{}:leaf x=arg1:s32 s=+0(arg2):string", t.path());
    let (out, rec) = record_target(&t, &spec, "urec.data");
    assert!(rec.finished);
    assert_eq!(rec.workload_status, Some(3));
    assert_eq!(rec.probes.len(), 1);
    let pid = rec.only_pid();
    assert_eq!(rec.count(pid, EventKind::Entry), 1000);
    assert_eq!(rec.count(pid, EventKind::Return), 1000);
    assert_eq!(rec.total_lost(), 0);
    assert!(
        rec.mappings
            .iter()
            .any(|m| m.pid == pid && m.path == t.path()),
        "the target's mapping is recorded"
    );

    let mut callers: HashMap<String, usize> = HashMap::new();
    let mut from_a = 0;
    for e in rec.of_pid(pid) {
        match e.kind {
            EventKind::Entry => {
                let stack = rec.stack_of(e, "entries carry a stack");
                let names = t.first_names(stack, 3);
                assert_eq!(names[0], "leaf");
                assert_eq!(names[2], "main", "stack {names:?}");
                *callers.entry(names[1].clone()).or_default() += 1;
                // Arguments, in call order.
                let (expect_x, expect_s) = leaf_args(from_a);
                from_a += 1;
                assert_eq!(
                    e.args[0],
                    ArgValue::Int(expect_x as i32 as u32 as u64),
                    "x of call {from_a}"
                );
                assert_eq!(
                    e.args[1],
                    ArgValue::Str {
                        bytes: expect_s.into_bytes(),
                        truncated: false
                    }
                );
            }
            EventKind::Return => {
                let latency = e.latency_ns.expect("returns carry the latency");
                assert!(latency >= LEAF_SLEEP_NS, "latency {latency} < the sleep");
                assert!(e.args.is_empty());
            }
        }
    }
    assert_eq!(callers.get("a"), Some(&600), "callers {callers:?}");
    assert_eq!(callers.get("b"), Some(&400), "callers {callers:?}");
    // Two distinct call paths, and the file is small.
    assert_eq!(rec.stacks.len(), 2);
    assert!(std::fs::metadata(&out).unwrap().len() < 64 * 1024);
}

#[test]
fn return_only_probe() {
    if !have_root() {
        return;
    }
    let t = target();
    let spec = format!("{}:leaf%return r=$retval:s32", t.path());
    let (_, rec) = record_target(&t, &spec, "ret.data");
    let pid = rec.only_pid();
    assert_eq!(rec.count(pid, EventKind::Entry), 0);
    assert_eq!(rec.count(pid, EventKind::Return), 1000);
    for (i, e) in rec.of_pid(pid).into_iter().enumerate() {
        // leaf returns 2x + strlen(s).
        let (x, s) = leaf_args(i);
        let expect = 2 * x + s.len() as i64;
        assert_eq!(e.args, vec![ArgValue::Int(expect as i32 as u32 as u64)]);
        assert_eq!(e.latency_ns, None, "no entry seen, no latency");
        assert_leaf_path(&t, rec.stack_of(e, "return-only probes carry a stack"), i);
    }
}

#[test]
fn entry_only_inside_a_function() {
    if !have_root() {
        return;
    }
    let t = target();
    // leaf+0x4: after `push %rbp; mov %rsp,%rbp` at -O0.
    let spec = format!("{}:leaf+0x4 x=%di:s32", t.path());
    let (_, rec) = record_target(&t, &spec, "off.data");
    let pid = rec.only_pid();
    assert_eq!(rec.count(pid, EventKind::Entry), 1000);
    assert_eq!(rec.count(pid, EventKind::Return), 0);
    let leaf = t.symbols["leaf"].0;
    for (i, e) in rec.of_pid(pid).into_iter().enumerate() {
        let stack = rec.stack_of(e, "entries carry a stack");
        assert_eq!(stack.frames[0].0, leaf + 4);
        assert_leaf_path(&t, stack, i);
    }
}

#[test]
fn pid_filter_isolates_one_instance() {
    if !have_root() {
        return;
    }
    let t = target();
    let out = t.data("p.data");
    let spawn = || {
        Command::new(&t.exe)
            .arg("wait")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut traced = spawn();
    let mut other = spawn();
    let pid = traced.id().to_string();
    let spec = format!("{}:leaf", t.path());
    let mut u = start_attached(&["-e", &spec, "-p", &pid, "-o", out.to_str().unwrap()]);
    for c in [&mut traced, &mut other] {
        c.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    assert_eq!(traced.wait().unwrap().code(), Some(3));
    assert_eq!(other.wait().unwrap().code(), Some(3));
    // urec stops by itself once every -p process has exited.
    let status = poll(
        Duration::from_secs(20),
        "urec did not stop after -p's process exited",
        || u.try_wait().unwrap(),
    );
    assert!(status.success());
    let rec = Recording::read(&out);
    assert_eq!(rec.only_pid(), traced.id());
    assert_eq!(rec.count(traced.id(), EventKind::Entry), 1000);
    assert_eq!(rec.count(traced.id(), EventKind::Return), 1000);
}

#[test]
fn all_catches_a_process_started_later() {
    if !have_root() {
        return;
    }
    let t = target();
    let out = t.data("a.data");
    let spec = format!("{}:leaf", t.path());
    let mut u = start_attached(&["-e", &spec, "-a", "-o", out.to_str().unwrap()]);
    let child = Command::new(&t.exe).stdout(Stdio::null()).spawn().unwrap();
    let pid = child.id();
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(3));
    assert!(interrupt(&mut u).success());
    let rec = Recording::read(&out);
    assert!(rec.finished);
    assert_eq!(rec.count(pid, EventKind::Entry), 1000);
    assert_eq!(rec.count(pid, EventKind::Return), 1000);
    assert_eq!(rec.total_lost(), 0);
}

#[test]
fn bad_spec_exits_2_and_creates_no_file() {
    let t = target();
    let out = t.data("bad.data");
    for spec in [
        format!("{}:no_such_function", t.path()),
        "/no/such/binary:main".to_string(),
        format!("{}:leaf x=arg0", t.path()),
        format!("{}:leaf+0x4%return", t.path()),
    ] {
        let o = record(&["-e", &spec, "-o", out.to_str().unwrap(), "--", "true"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "spec {spec}: {:?}", o);
        assert!(!out.exists(), "spec {spec} created the output file");
    }
    // An existing recording is not clobbered either.
    std::fs::write(&out, b"keep").unwrap();
    let spec = format!("{}:no_such_function", t.path());
    let o = record(&["-e", &spec, "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    let o = record(&[
        "-e",
        &format!("{}:leaf", t.path()),
        "-g",
        "dwarf",
        "--stack-size",
        "1M",
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

/// `urec record -e BINARY:leaf -- shim` where the shim script execs a *copy* of BINARY (a pyenv
/// shim running another python): the probes get nothing, and the end of the recording says
/// which binary was never mapped and what ran instead.
#[test]
fn probed_binary_never_mapped_is_named() {
    if !have_root() {
        return;
    }
    let t = target();
    let copy_dir = t.data("elsewhere");
    std::fs::create_dir_all(&copy_dir).unwrap();
    let copy = copy_dir.join("target");
    std::fs::copy(&t.exe, &copy).unwrap();
    let shim = t.data("shim");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\nexec {} \"$@\"\n", copy.display()),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let probed = std::fs::canonicalize(&t.exe).unwrap();
    let copy = std::fs::canonicalize(&copy).unwrap();
    let out = t.data("shim.data");
    let run = |binary: &std::path::Path| {
        let o = record(&[
            "-e",
            &format!("{}:leaf", binary.display()),
            "-o",
            out.to_str().unwrap(),
            "--",
            shim.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .output()
        .unwrap();
        assert_eq!(o.status.code(), Some(3), "{o:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let stderr = run(&probed);
    let want = format!(
        "urec: warning: {} was never mapped by the traced process (it ran ",
        probed.display()
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&want))
        .unwrap_or_else(|| panic!("no warning naming {}: {stderr}", probed.display()));
    assert!(line.contains(&format!("{})", copy.display())), "{line}");
    assert_eq!(stderr.matches("never mapped").count(), 1, "{stderr}");
    assert!(stderr.contains("0 events"), "{stderr}");
    // Probing the binary that really runs: events, and no warning.
    let stderr = run(&copy);
    assert!(!stderr.contains("never mapped"), "{stderr}");
    assert!(stderr.contains("2000 events"), "{stderr}");
}

/// With `-a`, a binary no process on the host mapped is named; libc, mapped everywhere but
/// maybe not called in that second, is not.
#[test]
fn all_names_a_binary_no_process_mapped() {
    if !have_root() {
        return;
    }
    let t = target();
    let out = t.data("all-unmapped.data");
    let o = record(&[
        "-e",
        &format!("{}:leaf", t.path()),
        "-e",
        "libc:getpwnam_r",
        "-a",
        "-d",
        "500ms",
        "-o",
        out.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let probed = std::fs::canonicalize(&t.exe).unwrap();
    assert_only_never_mapped_by_any(&stderr, &probed.display());
}

#[test]
fn command_without_dashes_gets_a_hint() {
    // No root needed: the command line is refused before anything is attached.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.data");
    let o = record(&[
        "-e",
        "libc:malloc size=arg1:u64",
        "-o",
        out.to_str().unwrap(),
        "/usr/bin/true",
        "-x",
    ])
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let want = format!(
        "to trace a command, put `--` before it: urec record -e 'libc:malloc size=arg1:u64' \
         -o {} -- /usr/bin/true -x",
        out.display()
    );
    assert!(stderr.contains(&want), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn kill_9_leaves_no_link_behind() {
    if !have_root() {
        return;
    }
    let t = target();
    let out = t.data("k.data");
    let spec = format!("{}:leaf", t.path());
    let mut u = start_attached(&["-e", &spec, "-a", "-o", out.to_str().unwrap()]);
    assert_eq!(
        urec_record::attach::links_on(&t.exe).len(),
        1,
        "one multi link"
    );
    u.kill().unwrap(); // SIGKILL
    u.wait().unwrap(); // reaped: the kernel has released its files
    poll(Duration::from_secs(5), "a link outlived urec", || {
        urec_record::attach::links_on(&t.exe)
            .is_empty()
            .then_some(())
    });
}

#[test]
fn interactive_bash_readline() {
    if !have_root() {
        return;
    }
    let Some(bash) = common::bash() else {
        return;
    };
    let t = target();
    let driver = t.data("drive.py");
    std::fs::write(
        &driver,
        r#"
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "--norc", "--noprofile", "-i"])
print(pid, flush=True)
def drain(t):
    end = time.time() + t
    while time.time() < end:
        try:
            import select
            r, _, _ = select.select([fd], [], [], 0.02)
            if r:
                os.read(fd, 4096)
        except OSError:
            return
drain(0.5)
for i in range(10):
    os.write(fd, b"echo line%d\n" % i)
    drain(0.1)
os.write(fd, b"exit\n")
while True:
    try:
        if not os.read(fd, 4096):
            break
    except OSError:
        break
os.waitpid(pid, 0)
"#,
    )
    .unwrap();
    let out = t.data("bash.data");
    let o = record(&[
        "-q",
        "-e",
        "bash:readline",
        "-o",
        out.to_str().unwrap(),
        "--",
        "python3",
        driver.to_str().unwrap(),
        bash.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(o.status.success(), "{o:?}");
    let bash_pid: u32 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    let rec = Recording::read(&out);
    assert_eq!(rec.count(bash_pid, EventKind::Entry), 11, "10 lines + exit");
    assert_eq!(rec.count(bash_pid, EventKind::Return), 11);
    assert!(rec
        .mappings
        .iter()
        .any(|m| m.pid == bash_pid && m.path.ends_with("/bash") && m.build_id.is_some()));
}

/// `-a -- COMMAND`: a probed binary that only a process running since before the recording
/// maps (the command does not) counts as mapped (the recorder learns it from `/proc`, since
/// the side-band reports only new mappings); a copy that no process maps is named.
#[test]
fn all_with_a_command_counts_binaries_mapped_before_it_began() {
    if !have_root() {
        return;
    }
    let t = target();
    let copy = t.data("all-command-copy");
    std::fs::copy(&t.exe, &copy).unwrap();
    let copy = std::fs::canonicalize(&copy).unwrap();
    let mut running = Command::new(&t.exe)
        .arg("wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let out = t.data("all-command.data");
    let o = record(&[
        "-e",
        &format!("{}:leaf", t.path()),
        "-e",
        &format!("{}:leaf", copy.display()),
        "-a",
        "-o",
        out.to_str().unwrap(),
        "--",
        "true",
    ])
    .output()
    .unwrap();
    running.kill().unwrap();
    running.wait().unwrap();
    assert!(o.status.success(), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_only_never_mapped_by_any(&stderr, &copy.display());
}

/// `-p`: what the process had mapped and was running before the recording began comes from
/// `/proc` (the process table's snapshot): the probed binary it runs is not named, a copy it
/// does not map is, with the program it ran.
#[test]
fn pid_counts_what_the_process_mapped_before_it_began() {
    if !have_root() {
        return;
    }
    let t = target();
    let copy = t.data("pid-copy");
    std::fs::copy(&t.exe, &copy).unwrap();
    let copy = std::fs::canonicalize(&copy).unwrap();
    let probed = std::fs::canonicalize(&t.exe).unwrap();
    let mut running = Command::new(&t.exe)
        .arg("wait")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let out = t.data("pid-mapped.data");
    let o = record(&[
        "-e",
        &format!("{}:leaf", t.path()),
        "-e",
        &format!("{}:leaf", copy.display()),
        "-p",
        &running.id().to_string(),
        "-d",
        "300ms",
        "-o",
        out.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    running.kill().unwrap();
    running.wait().unwrap();
    assert!(o.status.success(), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&format!(
            "urec: warning: {} was never mapped by the traced process (it ran {})",
            copy.display(),
            probed.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches("never mapped").count(), 1, "{stderr}");
}

/// The one "never mapped" warning of an `-a` recording names `binary`.
fn assert_only_never_mapped_by_any(stderr: &str, binary: &dyn std::fmt::Display) {
    assert!(
        stderr.contains(&format!(
            "urec: warning: {binary} was never mapped by any process during the recording"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches("never mapped").count(), 1, "{stderr}");
}
