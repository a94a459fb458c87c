#![cfg(feature = "record")]
//! USDT probes end to end: a C program built here with `<sys/sdt.h>` (Debian's
//! `systemtap-sdt-dev`), whose notes at -O2 use every operand form urec lowers (a register, a
//! RIP-relative global, a constant, memory at a register), one of them guarded by a semaphore;
//! and Debian's own `/usr/bin/python3.11`, counted against bpftrace's `usdt:`.
//!
//! Recording tests need root. Without it they skip with a message, unless `CI=true`, where
//! they fail loudly; so does a missing sdt.h, python3.11 or bpftrace under `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::recording::Recording;
use common::{have_root, interrupt, poll, record, start_attached, urec, urec_ok};
use urec_format::{ArgType, ArgValue, EventKind};

/// Calls `step` and `guarded` N times (argv[1]), sleeping argv[2] ms between iterations, and
/// prints how often the semaphore-guarded probe site ran.
const MAIN_C: &str = r#"
#include <sys/sdt.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

long limit = 1000;
long table[3] = {100, 200, 300};
static const char *names[] = {"alpha", "beta", "gamma"};
struct item { long id; int weight; };
static struct item items[4] = {{11, -1}, {22, -2}, {33, -3}, {44, -4}};
extern int guarded(int i);

/* One USDT probe written once, compiled at two sites, each with a constant operand. */
static inline __attribute__((always_inline)) void mark(int where) {
    STAP_PROBE1(demo, mark, where);
}

__attribute__((noinline)) int step(int i, struct item *it, const char *name) {
    /* a register, a global read RIP-relative, a constant */
    STAP_PROBE3(demo, tick, i, limit, -7);
    /* a string pointer in a register, a struct field in memory */
    STAP_PROBE2(demo, item, name, it->weight);
    /* an array element: a base and a scaled index register */
    STAP_PROBE1(demo, pick, table[i % 3]);
    return it->weight * 2;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 10;
    int pause_ms = argc > 2 ? atoi(argv[2]) : 0;
    int fired = 0;
    long sum = 0;
    mark(1);
    for (int i = 0; i < n; i++) {
        limit = 1000 + i;
        char name[16];
        snprintf(name, sizeof name, "%s%d", names[i % 3], i);
        sum += step(i, &items[i % 4], name);
        fired += guarded(i);
        if (pause_ms)
            usleep(pause_ms * 1000);
    }
    mark(2);
    printf("guarded fired %d of %d (sum %ld)\n", fired, n, sum);
    fflush(stdout);
    return 0;
}
"#;

/// The semaphore-guarded probe, in its own translation unit: `_SDT_HAS_SEMAPHORES` gives every
/// probe of a unit a semaphore, and the other probes must have none (so that one link mixes
/// probes with and without).
const GUARDED_C: &str = r#"
#define _SDT_HAS_SEMAPHORES 1
#include <sys/sdt.h>

__extension__ unsigned short demo_guarded_semaphore
    __attribute__((unused)) __attribute__((section(".probes")));

__attribute__((noinline)) int guarded(int i) {
    if (__builtin_expect(demo_guarded_semaphore, 0)) {
        STAP_PROBE1(demo, guarded, i * 5);
        return 1;
    }
    return 0;
}
"#;

const SDT_H: &str = "/usr/include/x86_64-linux-gnu/sys/sdt.h";

/// Skips (false) without sdt.h, except under `CI=true`.
fn have_sdt() -> bool {
    if Path::new(SDT_H).exists() || Path::new("/usr/include/sys/sdt.h").exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: sys/sdt.h is needed (scripts/install-deps.sh installs systemtap-sdt-dev)"
    );
    eprintln!("skipped: no sys/sdt.h (apt-get install systemtap-sdt-dev)");
    false
}

/// The demo program, built PIE at -O2 (so the RIP-relative operand needs the load bias).
struct Demo {
    dir: tempfile::TempDir,
    exe: PathBuf,
}

impl Demo {
    fn build() -> Demo {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("main.c");
        let guarded = dir.path().join("guarded.c");
        std::fs::write(&main, MAIN_C).unwrap();
        std::fs::write(&guarded, GUARDED_C).unwrap();
        let exe = dir.path().join("demo");
        common::gcc(&exe, &[main, guarded], &["-O2", "-g", "-pie", "-fPIE"]);
        let notes = Command::new("readelf")
            .arg("-n")
            .arg(&exe)
            .output()
            .unwrap();
        let notes = String::from_utf8_lossy(&notes.stdout);
        // Each operand form this test means to cover is really in the notes.
        for form in [
            "-4@%edi",
            "-8@limit(%rip)",
            "-4@$-7",
            "8@%rdx",
            "-4@8(%rsi)",
            "-8@(%rax,%rdi,8)",
        ] {
            assert!(
                notes.contains(form),
                "gcc wrote no {form} operand:\n{notes}"
            );
        }
        Demo { dir, exe }
    }

    fn path(&self) -> &str {
        self.exe.to_str().unwrap()
    }

    fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The semaphore's ELF virtual address, from `nm`.
    fn semaphore_vaddr(&self) -> u64 {
        let nm = Command::new("nm").arg(&self.exe).output().unwrap();
        let text = String::from_utf8_lossy(&nm.stdout);
        let line = text
            .lines()
            .find(|l| l.ends_with(" demo_guarded_semaphore"))
            .expect("nm lists the semaphore");
        u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap()
    }

    /// The semaphore's current value in process `pid`, read from its memory at the PIE's
    /// load address plus the symbol's address.
    fn semaphore_in(&self, pid: u32, vaddr: u64) -> u16 {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let exe = std::fs::canonicalize(&self.exe).unwrap();
        let base = maps
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 6 && Path::new(f[5]) == exe && f[2] == "00000000")
                    .then(|| u64::from_str_radix(f[0].split('-').next().unwrap(), 16).unwrap())
            })
            .expect("the demo's first mapping");
        let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
        let mut buf = [0u8; 2];
        std::os::unix::fs::FileExt::read_exact_at(&mem, &mut buf, base + vaddr).unwrap();
        u16::from_ne_bytes(buf)
    }
}

fn int(v: &ArgValue) -> u64 {
    match v {
        ArgValue::Int(x) => *x,
        other => panic!("expected an integer, got {other:?}"),
    }
}

fn string(v: &ArgValue) -> String {
    match v {
        ArgValue::Str { bytes, .. } => String::from_utf8_lossy(bytes).into_owned(),
        other => panic!("expected a string, got {other:?}"),
    }
}

#[test]
fn counts_args_and_the_semaphore_guarded_site() {
    if !have_root() || !have_sdt() {
        return;
    }
    let d = Demo::build();
    // Without urec the guarded site never runs.
    let alone = Command::new(&d.exe).arg("25").output().unwrap();
    assert!(String::from_utf8_lossy(&alone.stdout).contains("guarded fired 0 of 25"));

    let out = d.data("usdt.data");
    let tick = format!("usdt:{}:demo:tick", d.path());
    let item = format!("usdt:{}:item name=+0(arg1):string w=arg2", d.path());
    let guarded = format!("usdt:{}:demo:guard* arg1 g=arg1:x16", d.path());
    let run = record(&[
        "-q",
        "-e",
        &tick,
        "-e",
        &item,
        "-e",
        &guarded,
        "-o",
        out.to_str().unwrap(),
        "--",
        d.path(),
        "25",
    ])
    .output()
    .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("guarded fired 25 of 25"),
        "the semaphore was set while recording: {}",
        String::from_utf8_lossy(&run.stdout)
    );

    let rec = Recording::read(&out);
    assert_eq!(rec.total_lost(), 0);
    let probe = |name: &str| {
        rec.probes
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no probe {name} in {:?}", rec.probes))
    };
    let (tick, item, guarded) = (
        probe("usdt:demo:tick"),
        probe("usdt:demo:item"),
        probe("usdt:demo:guarded"),
    );
    for p in [tick, item, guarded] {
        assert_eq!(p.kind, urec_format::ProbeKind::Entry, "{}", p.name);
        let events: Vec<_> = rec.events.iter().filter(|e| e.probe == p.id).collect();
        assert_eq!(events.len(), 25, "{} fired once per iteration", p.name);
        assert!(events.iter().all(|e| e.kind == EventKind::Entry));
        assert!(
            events.iter().all(|e| e.stack.is_some()),
            "{}: stacks",
            p.name
        );
    }
    // Without a TYPE, argN takes its operand's size and sign.
    assert_eq!(
        guarded.args.iter().map(|a| a.ty).collect::<Vec<_>>(),
        vec![ArgType::Signed(32), ArgType::Hex(16)]
    );
    assert_eq!(item.args[1].ty, ArgType::Signed(32));
    let names = ["alpha", "beta", "gamma"];
    let of = |p: &urec_format::Probe| -> Vec<&urec_format::Event> {
        let mut v: Vec<_> = rec.events.iter().filter(|e| e.probe == p.id).collect();
        v.sort_by_key(|e| e.time_ns);
        v
    };
    for (i, e) in of(item).iter().enumerate() {
        let name = format!("{}{i}", names[i % 3]);
        assert_eq!(string(&e.args[0]), name, "item {i}: a string in %rdx");
        assert_eq!(
            int(&e.args[1]) as i32,
            -(i as i32 % 4 + 1),
            "item {i}: 8(%rsi)"
        );
    }
    for (i, e) in of(guarded).iter().enumerate() {
        assert_eq!(int(&e.args[0]) as i32, i as i32 * 5, "guarded {i}: %eax");
    }
    // tick's ARGs were not asked for: the report's JSON counts, script shows args below.
    assert!(of(tick).iter().all(|e| e.args.is_empty()));

    let json: serde_json::Value = serde_json::from_str(&urec_ok(&[
        "report",
        "-i",
        out.to_str().unwrap(),
        "--json",
        "-",
        "--probe",
        "usdt:demo:guarded",
    ]))
    .unwrap();
    assert_eq!(json["functions"].as_array().unwrap().len(), 1);
    assert_eq!(json["functions"][0]["probe"], "usdt:demo:guarded");
    assert_eq!(json["functions"][0]["calls"], 25);
    assert_eq!(json["functions"][0]["symbol"], "guarded");
    let stacks = json["stacks"].as_array().unwrap();
    assert!(
        stacks.iter().all(|s| {
            let f: Vec<&str> = s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            f.ends_with(&["main", "guarded"])
        }),
        "stacks end main -> guarded: {stacks:?}"
    );
}

/// Predicates on USDT probes read the operands where the note says (a register, a global read
/// RIP-relative, memory at a register, a scaled index, a string through a register), compare
/// in the operand's size and sign, and keep exactly the firings they match; the semaphore of a
/// guarded site is still set, and the program's output is what it is without urec.
#[test]
fn predicates_on_usdt_operands_keep_exactly_the_matching_firings() {
    if !have_root() || !have_sdt() {
        return;
    }
    let d = Demo::build();
    const N: u64 = 25;
    let alone = Command::new(&d.exe).arg(N.to_string()).output().unwrap();
    let alone = String::from_utf8_lossy(&alone.stdout).into_owned();
    let p = d.path();
    // Firing i (0..25): tick(i, 1000 + i, -7), item(name_i, -(i % 4 + 1)),
    // pick(table[i % 3]), guarded(5 i).
    let specs = [
        // `-4@%edi` and `-8@limit(%rip)`: i in 10..20.
        format!("usdt:{p}:demo:tick if arg1 >= 10 && arg2 < 1020"),
        // `-4@8(%rsi)` compared as s32 (a sign or width error misses -2), or the string in
        // %rdx: i % 4 == 1 (6 firings) or "alpha3" (i = 3).
        format!("usdt:{p}:item name=+0(arg1):string w=arg2 if w == -2 || name == \"alpha3\""),
        // `-8@(%rax,%rdi,8)`: i % 3 == 1.
        format!("usdt:{p}:pick if !(arg1 != 200)"),
        // Behind the semaphore, `-4@%eax`: 5 i > 50, i in 11..25.
        format!("usdt:{p}:demo:guarded if arg1 > 50"),
    ];
    let expected = [
        ("usdt:demo:tick", 10u64),
        ("usdt:demo:item", 7),
        ("usdt:demo:pick", 8),
        ("usdt:demo:guarded", 14),
    ];
    let out = d.data("pred.data");
    let mut argv: Vec<&str> = vec!["-q"];
    for s in &specs {
        argv.extend(["-e", s.as_str()]);
    }
    let n = N.to_string();
    argv.extend(["-o", out.to_str().unwrap(), "--", p, &n]);
    let run = record(&argv).output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        stdout,
        alone.replace("guarded fired 0 of 25", "guarded fired 25 of 25"),
        "the program's output is unchanged but for the semaphore-guarded site, which fired"
    );

    let json: serde_json::Value = serde_json::from_str(&urec_ok(&[
        "report",
        "-i",
        out.to_str().unwrap(),
        "--json",
        "-",
    ]))
    .unwrap();
    assert_eq!(json["recording"]["lost"], 0);
    let functions = json["functions"].as_array().unwrap();
    for (probe, kept) in expected {
        let f = functions
            .iter()
            .find(|f| f["probe"] == probe)
            .unwrap_or_else(|| panic!("no {probe} in {functions:?}"));
        assert_eq!(f["calls"], kept, "{probe}: calls");
        assert_eq!(f["filtered"], N - kept, "{probe}: filtered");
    }
    // The kept firings are the expected ones, with their arguments.
    let rec = Recording::read(&out);
    let item = rec
        .probes
        .iter()
        .find(|p| p.name == "usdt:demo:item")
        .unwrap();
    let mut kept: Vec<(String, i32)> = rec
        .events
        .iter()
        .filter(|e| e.probe == item.id)
        .map(|e| (string(&e.args[0]), int(&e.args[1]) as i32))
        .collect();
    kept.sort();
    let names = ["alpha", "beta", "gamma"];
    let mut want: Vec<(String, i32)> = (0..N as i32)
        .filter(|i| i % 4 == 1 || *i == 3)
        .map(|i| (format!("{}{i}", names[i as usize % 3]), -(i % 4 + 1)))
        .collect();
    want.sort();
    assert_eq!(kept, want);
}

#[test]
fn register_rip_relative_constant_and_indexed_operands() {
    if !have_root() || !have_sdt() {
        return;
    }
    let d = Demo::build();
    let out = d.data("tick.data");
    let tick = format!("usdt:{}:demo:tick arg1 arg2 arg3 +0(arg2)", d.path());
    let pick = format!("usdt:{}:demo:pick arg1", d.path());
    let run = record(&[
        "-q",
        "-e",
        &tick,
        "-e",
        &pick,
        "-o",
        out.to_str().unwrap(),
        "--",
        d.path(),
        "30",
    ])
    .stdout(Stdio::null())
    .status()
    .unwrap();
    assert!(run.success());
    let rec = Recording::read(&out);
    let p = &rec.probes[0];
    assert_eq!(
        rec.probes[1].args[0].ty,
        ArgType::Signed(64),
        "-8@(%rax,%rdi,8)"
    );
    let mut picks: Vec<_> = rec.events.iter().filter(|e| e.probe == 1).collect();
    picks.sort_by_key(|e| e.time_ns);
    assert_eq!(picks.len(), 30);
    for (i, e) in picks.iter().enumerate() {
        assert_eq!(
            int(&e.args[0]),
            [100, 200, 300][i % 3],
            "pick {i}: table[i % 3]"
        );
    }
    assert_eq!(
        p.args.iter().map(|a| a.ty).collect::<Vec<_>>(),
        vec![
            ArgType::Signed(32),
            ArgType::Signed(64),
            ArgType::Signed(32),
            ArgType::Hex(64)
        ]
    );
    let mut events: Vec<_> = rec
        .events
        .iter()
        .filter(|e| e.probe == 0)
        .cloned()
        .collect();
    events.sort_by_key(|e| e.time_ns);
    assert_eq!(events.len(), 30);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(int(&e.args[0]) as i32, i as i32, "tick {i}: %edi");
        assert_eq!(
            int(&e.args[1]) as i64,
            1000 + i as i64,
            "tick {i}: limit(%rip)"
        );
        assert_eq!(int(&e.args[2]) as i32, -7, "tick {i}: $-7");
        // `+0(arg2)` dereferences the value of `limit`, not an address: it faults.
        assert_eq!(e.args[3], ArgValue::Fault, "tick {i}: +0(arg2)");
    }
}

/// libstdc++'s `throw` probe, found through the library's short name: every C++ throw of a
/// program built here, with the thrown type's name read through the `type_info` argument.
#[test]
fn libstdcxx_throw() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("throw.cc");
    std::fs::write(
        &src,
        r#"
#include <stdexcept>
#include <cstdio>
int main() {
    int caught = 0;
    for (int i = 0; i < 17; i++) {
        try { throw std::runtime_error("x"); } catch (const std::exception &) { caught++; }
    }
    std::printf("%d\n", caught);
}
"#,
    )
    .unwrap();
    let exe = dir.path().join("throw");
    let st = Command::new("g++")
        .arg("-O2")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success());
    let out = dir.path().join("throw.data");
    // std::type_info is {vptr, const char *name}: the mangled name's pointer is at +8.
    let spec = "usdt:libstdc++:libstdcxx:throw type=+0(+8(arg2)):string";
    let run = record(&[
        "-q",
        "-e",
        spec,
        "-o",
        out.to_str().unwrap(),
        "--",
        exe.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), "17");
    let rec = Recording::read(&out);
    assert_eq!(rec.probes[0].name, "usdt:libstdcxx:throw");
    assert_eq!(rec.events.len(), 17);
    for e in &rec.events {
        assert_eq!(string(&e.args[0]), "St13runtime_error");
    }
}

/// A probe written once and compiled at two sites is one probe per site, named
/// `usdt:PROVIDER:NAME@0xVADDR`; `--probe usdt:PROVIDER:NAME` selects them all.
#[test]
fn one_probe_at_two_sites() {
    if !have_root() || !have_sdt() {
        return;
    }
    let d = Demo::build();
    let out = d.data("mark.data");
    let spec = format!("usdt:{}:demo:mark where=arg1", d.path());
    let run = record(&[
        "-q",
        "-e",
        &spec,
        "-o",
        out.to_str().unwrap(),
        "--",
        d.path(),
        "3",
    ])
    .stdout(Stdio::null())
    .status()
    .unwrap();
    assert!(run.success());
    let rec = Recording::read(&out);
    assert_eq!(rec.probes.len(), 2);
    let mut seen = Vec::new();
    for p in &rec.probes {
        assert!(
            p.name.starts_with("usdt:demo:mark@0x"),
            "a site named by its address: {}",
            p.name
        );
        let events: Vec<_> = rec.events.iter().filter(|e| e.probe == p.id).collect();
        assert_eq!(events.len(), 1, "{}", p.name);
        seen.push(int(&events[0].args[0]) as i32);
    }
    seen.sort();
    assert_eq!(seen, [1, 2], "the constants $1 and $2");
    let json: serde_json::Value = serde_json::from_str(&urec_ok(&[
        "report",
        "-i",
        out.to_str().unwrap(),
        "--json",
        "-",
        "--probe",
        "usdt:demo:mark",
    ]))
    .unwrap();
    let functions = json["functions"].as_array().unwrap();
    assert_eq!(functions.len(), 2);
    assert!(functions.iter().all(|f| f["calls"] == 1));
}

/// `/proc/PID/mem` of a long-running demo shows the semaphore at 1 while urec is attached and
/// back at 0 when it detaches, whether it stops normally or is killed with SIGKILL.
#[test]
fn semaphore_released_on_detach_and_kill_9() {
    if !have_root() || !have_sdt() {
        return;
    }
    let d = Demo::build();
    let vaddr = d.semaphore_vaddr();
    let mut demo = Command::new(&d.exe)
        .args(["100000", "5"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = demo.id();
    poll(Duration::from_secs(5), "the demo did not start", || {
        std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .ok()
            .filter(|m| m.contains("demo"))
    });
    assert_eq!(d.semaphore_in(pid, vaddr), 0, "no tracer yet");
    let spec = format!("usdt:{}:demo:guarded", d.path());
    let pid_s = pid.to_string();
    let out = d.data("sema.data");
    let args = [
        "-e",
        spec.as_str(),
        "-p",
        pid_s.as_str(),
        "-o",
        out.to_str().unwrap(),
    ];

    let mut u = start_attached(&args);
    assert_eq!(d.semaphore_in(pid, vaddr), 1, "attached: counted once");
    let st = interrupt(&mut u);
    assert!(st.success(), "urec stopped with {st}");
    assert_eq!(d.semaphore_in(pid, vaddr), 0, "detached");
    let rec = Recording::read(&out);
    assert!(
        !rec.events.is_empty(),
        "the guarded site ran while attached"
    );

    let mut u = start_attached(&args);
    assert_eq!(d.semaphore_in(pid, vaddr), 1, "attached again");
    u.kill().unwrap(); // SIGKILL
    u.wait().unwrap();
    poll(
        Duration::from_secs(5),
        "the semaphore outlived urec",
        || (d.semaphore_in(pid, vaddr) == 0).then_some(()),
    );
    demo.kill().unwrap();
    demo.wait().unwrap();
}

/// The Python script both tools run. CPython 3.11 fires `function__entry` only while a trace
/// or profile function is set (its evaluation loop checks the semaphore on the tracing path
/// only; measured: without one, only two `<genexpr>` entries of its startup code fire, for
/// bpftrace alike), hence the no-op `settrace`.
const PY: &str = r#"import sys
def square(x):
    return x * x

def main():
    for _ in range(3):
        for i in range(100):
            square(i)

sys.settrace(lambda *a: None)
main()
"#;

/// `square` is called 3 × 100 times.
const SQUARE_CALLS: u64 = 300;

const PYTHON: &str = "/usr/bin/python3.11";

/// bpftrace's counts of every `function__entry` of the script's process, and of `square`'s.
fn bpftrace_python_counts(script: &Path) -> Option<(u64, u64)> {
    let prog = format!(
        "usdt:{PYTHON}:python:function__entry /pid == cpid/ {{ @all = count(); \
         if (str(arg1) == \"square\") {{ @square = count(); }} }}"
    );
    let cmd = format!("{PYTHON} -S {}", script.display());
    let out = match Command::new("bpftrace")
        .args(["-e", &prog, "-c", &cmd])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: bpftrace is needed as the oracle: {e}"
            );
            eprintln!("skipped: no bpftrace ({e})");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let count = |key: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("bpftrace printed no {key}: {text}"))
            .trim()
            .parse()
            .unwrap()
    };
    Some((count("@all: "), count("@square: ")))
}

#[test]
fn python_function_entry_counts_match_bpftrace() {
    if !have_root() {
        return;
    }
    if !Path::new(PYTHON).exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: {PYTHON} (Debian's python3.11) is needed"
        );
        eprintln!("skipped: no {PYTHON}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("square.py");
    std::fs::write(&script, PY).unwrap();
    let Some((bt_all, bt_square)) = bpftrace_python_counts(&script) else {
        return;
    };
    assert_eq!(bt_square, SQUARE_CALLS, "bpftrace's own count of square");

    let out = dir.path().join("py.data");
    let spec = format!(
        "usdt:{PYTHON}:python:function__entry file=+0(arg1):string func=+0(arg2):string line=arg3"
    );
    let run = record(&[
        "-q",
        "-e",
        &spec,
        "-o",
        out.to_str().unwrap(),
        "--",
        PYTHON,
        "-S",
        script.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rec = Recording::read(&out);
    assert_eq!(rec.total_lost(), 0);
    assert_eq!(rec.probes[0].args[2].ty, ArgType::Signed(32), "-4@%eax");
    let square: Vec<_> = rec
        .events
        .iter()
        .filter(|e| string(&e.args[1]) == "square")
        .collect();
    assert_eq!(square.len() as u64, SQUARE_CALLS, "urec's count of square");
    assert_eq!(
        rec.events.len() as u64,
        bt_all,
        "urec vs bpftrace: every function entry"
    );
    let def_line = PY
        .lines()
        .position(|l| l.starts_with("def square"))
        .unwrap()
        + 1;
    for e in &square {
        assert_eq!(string(&e.args[0]), script.to_str().unwrap());
        assert_eq!(
            int(&e.args[2]) as i32,
            def_line as i32,
            "square's first line"
        );
    }

    // The report names the probe usdt:PROVIDER:NAME, and --probe selects it by that name.
    let json: serde_json::Value = serde_json::from_str(&urec_ok(&[
        "report",
        "-i",
        out.to_str().unwrap(),
        "--json",
        "-",
        "--probe",
        "usdt:python:function__entry",
    ]))
    .unwrap();
    assert_eq!(json["functions"][0]["probe"], "usdt:python:function__entry");
    assert_eq!(json["functions"][0]["calls"], bt_all);
}

#[test]
fn list_usdt_shows_sites_semaphores_and_operands() {
    if !have_sdt() {
        return;
    }
    let d = Demo::build();
    let text = urec_ok(&["list", "--usdt", d.path()]);
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{text}"))
    };
    assert!(line("demo:tick ").contains("args: -4@%edi -8@limit(%rip) -4@$-7"));
    assert!(line("demo:tick ").contains("no semaphore"));
    let sema = format!("semaphore {:#010x}", d.semaphore_vaddr());
    assert!(line("demo:guarded ").contains(&sema), "{text}");
    assert_eq!(text.lines().count(), 6, "demo:mark has two sites:\n{text}");
    // A glob over PROVIDER:NAME.
    let text = urec_ok(&["list", "--usdt", d.path(), "demo:t*"]);
    assert_eq!(text.lines().count(), 1);
    let out = urec(&["list", "--usdt", "/usr/bin/env"]);
    assert_eq!(out.status.code(), Some(1), "no USDT probes: status 1");
}

/// A spec urec cannot use exits 2 before anything is attached, saying why.
#[test]
fn bad_usdt_specs_exit_2() {
    if !have_sdt() {
        return;
    }
    let d = Demo::build();
    let out = d.data("never.data");
    let refused = |spec: &str, expect: &[&str]| {
        let r = urec(&[
            "record",
            "-e",
            spec,
            "-o",
            out.to_str().unwrap(),
            "--",
            "true",
        ]);
        let err = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(2), "{spec}: {err}");
        for e in expect {
            assert!(err.contains(e), "{spec}: no {e:?} in {err}");
        }
        assert!(!out.exists());
    };
    let p = d.path();
    refused(
        &format!("usdt:{p}:demo:nosuch"),
        &[
            "no USDT probe demo:nosuch",
            "demo:guarded",
            "demo:item",
            "demo:tick",
        ],
    );
    refused(
        &format!("usdt:{p}:tick arg4"),
        &["arg4 does not exist", "3 arguments"],
    );
    refused(&format!("usdt:{p}:tick $retval"), &["no return"]);
    refused(&format!("usdt:{p}:tick%return"), &["no return probe"]);
    // A predicate's constant is checked against the site's operand type (tick's arg1 is
    // `-4@%edi`: s32), and its argN against the site's operands.
    refused(
        &format!("usdt:{p}:tick if arg1 == 0x80000000"),
        &["does not fit arg1's type s32", "usdt:demo:tick"],
    );
    refused(
        &format!("usdt:{p}:tick if arg4 == 1"),
        &["arg4 does not exist"],
    );
    refused(&format!("usdt:{p}:tick if $retval == 1"), &["no return"]);
    refused(&format!("usdt:{p}"), &["usdt:TARGET:PROVIDER:NAME"]);
    refused("usdt:/usr/bin/env:x:y", &["has no USDT probes"]);

    // A pyenv-style shim first on PATH: named, and the ELF program behind it suggested.
    let shims = d.data("shims");
    std::fs::create_dir(&shims).unwrap();
    let shim = shims.join("demo");
    std::fs::write(&shim, format!("#!/bin/sh\nexec {p} \"$@\"\n")).unwrap();
    std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", shims.display(), d.dir.path().display());
    let r = Command::new(common::UREC)
        .args(["list", "--usdt", "demo"])
        .env("PATH", &path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{} is not an x86-64 ELF file", shim.display())),
        "{err}"
    );
    assert!(err.contains("script (`#!/bin/sh`)"), "{err}");
    assert!(err.contains(&format!("e.g. {p}")), "{err}");
}

/// Three hand-written `.note.stapsdt` notes, laid out as sys/sdt.h writes them:
/// `crafted:good` at a `nop` (no semaphore); `crafted:inside` whose pc lies inside the 3-byte
/// `imul` of `site_inside` (a probe there killed the program); `crafted:gotplt` at a `nop`
/// whose semaphore is `crafted_gotplt_entry`, which the link sets to puts's `.got.plt` slot
/// (the kernel's increment of it killed the program with SIGSEGV).
const CRAFTED_S: &str = r#"
	.text
	.globl site_inside
	.type site_inside,@function
site_inside:
	mov %edi,%eax           # +0x0, 2 bytes
	imul %esi,%eax          # +0x2, 3 bytes: the note's pc is +0x3
	ret
	.size site_inside, .-site_inside

	.globl site_good
	.type site_good,@function
site_good:
	mov %edi,%eax
980:	nop
981:	nop
	ret
	.size site_good, .-site_good

.macro note pc, sema, name
	.pushsection .note.stapsdt,"?","note"
	.balign 4
	.4byte 992f-991f, 994f-993f, 3
991:	.asciz "stapsdt"
992:	.balign 4
993:	.8byte \pc
	.8byte _.stapsdt.base
	.8byte \sema
	.asciz "crafted"
	.asciz "\name"
	.asciz ""
994:	.balign 4
	.popsection
.endm
	note 980b, 0, good
	note site_inside+3, 0, inside
	note 981b, crafted_gotplt_entry, gotplt

	.pushsection .stapsdt.base,"aG","progbits",.stapsdt.base,comdat
	.weak _.stapsdt.base
	.hidden _.stapsdt.base
_.stapsdt.base:
	.space 1
	.size _.stapsdt.base, 1
	.popsection
	.section .note.GNU-stack,"",@progbits
"#;

/// Calls both functions argv[1] times, printing through puts (whose `.got.plt` slot the bad
/// semaphore names); exits 3.
const CRAFTED_MAIN_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
int site_inside(int, int);
int site_good(int);
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1;
    long s = 0;
    for (int i = 0; i < n; i++) {
        s += site_inside(i, 3) + site_good(i);
        puts("tick");
    }
    printf("sum %ld\n", s);
    return 3;
}
"#;

#[test]
fn crafted_sites_inside_instructions_and_semaphores_in_the_got_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (s, c) = (dir.path().join("crafted.S"), dir.path().join("main.c"));
    std::fs::write(&s, CRAFTED_S).unwrap();
    std::fs::write(&c, CRAFTED_MAIN_C).unwrap();
    let exe = dir.path().join("crafted");
    common::gcc(
        &exe,
        &[c, s],
        &[
            "-O2",
            "-Wl,-z,lazy",
            "-Wl,--defsym=crafted_gotplt_entry=_GLOBAL_OFFSET_TABLE_+24",
        ],
    );
    let p = exe.to_str().unwrap();
    let data = dir.path().join("urec.data");
    let data_s = data.to_str().unwrap();
    let run = |spec: &str| urec(&["record", "-e", spec, "-o", data_s, "--", p, "5"]);
    let direct = Command::new(&exe).arg("5").output().unwrap();
    assert_eq!(direct.status.code(), Some(3));
    let expected = String::from_utf8_lossy(&direct.stdout).into_owned();
    assert!(expected.ends_with("sum 40\n"), "{expected}");

    let out = run(&format!("usdt:{p}:crafted:inside"));
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("usdt:crafted:inside: its site")
            && e.contains(
                "site_inside+0x3 lies inside the 3-byte instruction `imul %esi,%eax` at \
                 site_inside+0x2"
            ),
        "{e}"
    );
    let out = run(&format!("usdt:{p}:crafted:gotplt"));
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("usdt:crafted:gotplt: its semaphore")
            && e.contains("it lies in .got.plt, which holds addresses the dynamic linker fills in"),
        "{e}"
    );
    assert!(!data.exists(), "a refused spec wrote a file");

    if !have_root() {
        return;
    }
    // A glob skips both, says why, and counts the good site; the program runs as without urec.
    let out = run(&format!("usdt:{p}:crafted:*"));
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{e}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected, "{e}");
    assert!(
        e.contains(
            "skipped 2 USDT sites that cannot be probed: usdt:crafted:inside, usdt:crafted:gotplt"
        ),
        "{e}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&urec_ok(&["report", "-i", data_s, "--json", "-"])).unwrap();
    assert_eq!(
        json["functions"].as_array().map(Vec::len),
        Some(1),
        "{json}"
    );
    assert_eq!(json["functions"][0]["calls"], 5, "{json}");
}
