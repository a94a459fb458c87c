#![cfg(feature = "record")]
//! End-to-end tests of `urec record`: real uprobes on small C programs built here, with exact
//! ground truth (counts, callers, argument values, latencies), read back with the format's
//! reader.
//!
//! They need root (BPF and system-wide perf events). Without it they skip with a message,
//! unless `CI=true`, where they fail loudly.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use urec_format::{ArgValue, Event, EventKind, Lost, Mapping, Reader, Record, Stack};

const URE: &str = env!("CARGO_BIN_EXE_urec");

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

struct Target {
    dir: tempfile::TempDir,
    exe: PathBuf,
    /// name -> (address, size), from `nm` (the target is built non-PIE, so these are the
    /// addresses in the process).
    symbols: HashMap<String, (u64, u64)>,
}

impl Target {
    fn build() -> Target {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("target.c");
        std::fs::write(&src, TARGET_C).unwrap();
        let exe = dir.path().join("target");
        let st = Command::new("gcc")
            .args(["-O0", "-fno-omit-frame-pointer", "-no-pie", "-o"])
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
        Target { dir, exe, symbols }
    }

    fn path(&self) -> &str {
        self.exe.to_str().unwrap()
    }

    fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The function containing `addr` (a return address points after its call: `addr - 1`).
    fn symbolize(&self, addr: u64, is_return_address: bool) -> Option<&str> {
        let a = if is_return_address { addr - 1 } else { addr };
        self.symbols
            .iter()
            .find(|(_, &(start, size))| a >= start && a < start + size)
            .map(|(n, _)| n.as_str())
    }

    /// Innermost-first names of the first `n` frames.
    fn names(&self, stack: &Stack, n: usize) -> Vec<String> {
        stack
            .frames
            .iter()
            .take(n)
            .enumerate()
            .map(|(i, f)| self.symbolize(f.0, i > 0).unwrap_or("?").to_string())
            .collect()
    }
}

#[derive(Default)]
struct Recording {
    events: Vec<Event>,
    stacks: HashMap<u32, Stack>,
    mappings: Vec<Mapping>,
    lost: Vec<Lost>,
    probes: usize,
    finished: bool,
    workload_status: Option<i32>,
}

impl Recording {
    fn read(path: &Path) -> Recording {
        let mut reader = Reader::open(path).expect("opening the recording");
        let mut r = Recording::default();
        for rec in reader.records() {
            match rec.expect("reading a record") {
                Record::Event(e) => r.events.push(e),
                Record::Stack(s) => {
                    r.stacks.insert(s.id, s);
                }
                Record::Mapping(m) => r.mappings.push(m),
                Record::Lost(l) => r.lost.push(l),
                Record::Probe(_) => r.probes += 1,
                Record::Finish(f) => {
                    r.finished = true;
                    r.workload_status = f.workload_status;
                }
                _ => {}
            }
        }
        r
    }

    fn of_pid(&self, pid: u32) -> Vec<&Event> {
        self.events.iter().filter(|e| e.pid == pid).collect()
    }

    fn count(&self, pid: u32, kind: EventKind) -> usize {
        self.of_pid(pid).iter().filter(|e| e.kind == kind).count()
    }

    fn total_lost(&self) -> u64 {
        self.lost.iter().map(|l| l.count).sum()
    }
}

fn urec(args: &[&str]) -> Command {
    let mut c = Command::new(URE);
    c.arg("record").args(args);
    c
}

/// Starts `urec record -v ...` and waits until it says the probes are attached.
fn start_attached(args: &[&str]) -> Child {
    let mut child = urec(args)
        .arg("-v")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting urec");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stderr).lines();
        let mut sent = false;
        while let Some(Ok(line)) = lines.next() {
            eprintln!("[urec] {line}");
            if !sent && line.contains("attached") {
                let _ = tx.send(());
                sent = true;
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("urec did not report its probes attached");
    child
}

fn interrupt(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    child.wait().unwrap()
}

/// The pid of the one process that produced events of the target binary.
fn only_pid(rec: &Recording) -> u32 {
    let mut pids: Vec<u32> = rec.events.iter().map(|e| e.pid).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 1, "events from pids {pids:?}");
    pids[0]
}

#[test]
fn command_counts_stacks_args_and_latency() {
    if !have_root() {
        return;
    }
    let t = Target::build();
    let out = t.data("urec.data");
    let spec = format!("{}:leaf x=arg1:s32 s=+0(arg2):string", t.path());
    let st = urec(&[
        "-q",
        "-e",
        &spec,
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
    assert!(rec.finished);
    assert_eq!(rec.workload_status, Some(3));
    assert_eq!(rec.probes, 1);
    let pid = only_pid(&rec);
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
                let stack = &rec.stacks[&e.stack.expect("entries carry a stack")];
                let names = t.names(stack, 3);
                assert_eq!(names[0], "leaf");
                assert_eq!(names[2], "main", "stack {names:?}");
                *callers.entry(names[1].clone()).or_default() += 1;
                // Arguments, in call order: a(0..600) passes i, b(0..400) passes -i.
                let (expect_x, expect_s) = if from_a < 600 {
                    (from_a as i64, format!("a{from_a}"))
                } else {
                    (-(from_a as i64 - 600), format!("b{}", from_a - 600))
                };
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
    let t = Target::build();
    let out = t.data("ret.data");
    let spec = format!("{}:leaf%return r=$retval:s32", t.path());
    let st = urec(&[
        "-q",
        "-e",
        &spec,
        "-o",
        out.to_str().unwrap(),
        "--",
        t.path(),
    ])
    .stdout(Stdio::null())
    .status()
    .unwrap();
    assert_eq!(st.code(), Some(3));
    let rec = Recording::read(&out);
    let pid = only_pid(&rec);
    assert_eq!(rec.count(pid, EventKind::Entry), 0);
    assert_eq!(rec.count(pid, EventKind::Return), 1000);
    for (i, e) in rec.of_pid(pid).into_iter().enumerate() {
        // leaf returns 2x + strlen(s).
        let expect = if i < 600 {
            2 * i as i64 + format!("a{i}").len() as i64
        } else {
            -2 * (i as i64 - 600) + format!("b{}", i - 600).len() as i64
        };
        assert_eq!(e.args, vec![ArgValue::Int(expect as i32 as u32 as u64)]);
        assert_eq!(e.latency_ns, None, "no entry seen, no latency");
        let stack = &rec.stacks[&e.stack.expect("return-only probes carry a stack")];
        let names = t.names(stack, 3);
        let caller = if i < 600 { "a" } else { "b" };
        assert_eq!(names, vec!["leaf", caller, "main"]);
    }
}

#[test]
fn entry_only_inside_a_function() {
    if !have_root() {
        return;
    }
    let t = Target::build();
    let out = t.data("off.data");
    // leaf+0x4: after `push %rbp; mov %rsp,%rbp` at -O0.
    let spec = format!("{}:leaf+0x4 x=%di:s32", t.path());
    let st = urec(&[
        "-q",
        "-e",
        &spec,
        "-o",
        out.to_str().unwrap(),
        "--",
        t.path(),
    ])
    .stdout(Stdio::null())
    .status()
    .unwrap();
    assert_eq!(st.code(), Some(3));
    let rec = Recording::read(&out);
    let pid = only_pid(&rec);
    assert_eq!(rec.count(pid, EventKind::Entry), 1000);
    assert_eq!(rec.count(pid, EventKind::Return), 0);
    let leaf = t.symbols["leaf"].0;
    for (i, e) in rec.of_pid(pid).into_iter().enumerate() {
        let stack = &rec.stacks[&e.stack.unwrap()];
        assert_eq!(stack.frames[0].0, leaf + 4);
        let caller = if i < 600 { "a" } else { "b" };
        assert_eq!(t.names(stack, 3), vec!["leaf", caller, "main"]);
    }
}

#[test]
fn pid_filter_isolates_one_instance() {
    if !have_root() {
        return;
    }
    let t = Target::build();
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
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = u.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "urec did not stop after -p's process exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let rec = Recording::read(&out);
    assert_eq!(only_pid(&rec), traced.id());
    assert_eq!(rec.count(traced.id(), EventKind::Entry), 1000);
    assert_eq!(rec.count(traced.id(), EventKind::Return), 1000);
}

#[test]
fn all_catches_a_process_started_later() {
    if !have_root() {
        return;
    }
    let t = Target::build();
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
    let t = Target::build();
    let out = t.data("bad.data");
    for spec in [
        format!("{}:no_such_function", t.path()),
        "/no/such/binary:main".to_string(),
        format!("{}:leaf x=arg0", t.path()),
        format!("{}:leaf+0x4%return", t.path()),
    ] {
        let o = urec(&["-e", &spec, "-o", out.to_str().unwrap(), "--", "true"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "spec {spec}: {:?}", o);
        assert!(!out.exists(), "spec {spec} created the output file");
    }
    // An existing recording is not clobbered either.
    std::fs::write(&out, b"keep").unwrap();
    let spec = format!("{}:no_such_function", t.path());
    let o = urec(&["-e", &spec, "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep");
    let o = urec(&[
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

#[test]
fn kill_9_leaves_no_link_behind() {
    if !have_root() {
        return;
    }
    let t = Target::build();
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
    let deadline = Instant::now() + Duration::from_secs(5);
    while !urec_record::attach::links_on(&t.exe).is_empty() {
        assert!(Instant::now() < deadline, "a link outlived urec");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn interactive_bash_readline() {
    if !have_root() {
        return;
    }
    let Some(bash) = urec_record::command::find_program("bash") else {
        eprintln!("skipped: no bash");
        return;
    };
    let t = Target::build();
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
    let o = urec(&[
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
