#![cfg(feature = "record")]
//! Who gets traced, and what the file keeps of them: threads, children forked by the traced
//! command (followed in the kernel at fork time, so a child calling the probed code at once is
//! not missed), a library dlopen'd after recording began, and the output file's handling.
//! Ground truth is exact: every count is the number of calls the program makes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;

use common::fixture::Fixture;
use common::recording::Recording;
use common::{build_c, have_root, urec_ok};
use urec_format::EventKind;

/// `threads`: 4 threads call `leaf` 250 times each. `fork`: 10 children each call `leaf` 100
/// times right after fork and exit; the parent never calls it. `dlopen LIB`: after 50 ms,
/// dlopen LIB and call its `lib_leaf` 100 times.
const PROGRAM_C: &str = r#"
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
volatile int sink;
__attribute__((noinline)) int leaf(int x) { sink += x; return x + 1; }
static void *worker(void *arg) { for (int i = 0; i < 250; i++) leaf(i); return arg; }
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "threads") == 0) {
        pthread_t t[4];
        for (int i = 0; i < 4; i++) pthread_create(&t[i], 0, worker, 0);
        for (int i = 0; i < 4; i++) pthread_join(t[i], 0);
    } else if (argc > 1 && strcmp(argv[1], "fork") == 0) {
        for (int c = 0; c < 10; c++) {
            if (fork() == 0) { for (int i = 0; i < 100; i++) leaf(i); _exit(0); }
        }
        while (wait(0) > 0) {}
    } else if (argc > 2 && strcmp(argv[1], "dlopen") == 0) {
        usleep(50000);
        void *h = dlopen(argv[2], RTLD_NOW);
        if (!h) return 7;
        int (*f)(int) = (int (*)(int))dlsym(h, "lib_leaf");
        for (int i = 0; i < 100; i++) f(i);
    }
    return 0;
}
"#;

const LIB_C: &str = r#"
volatile int lib_sink;
__attribute__((noinline)) int lib_leaf(int x) { lib_sink += x; return x * 2; }
"#;

fn program() -> Fixture {
    Fixture::build(
        "prog",
        PROGRAM_C,
        &["-O0", "-fno-omit-frame-pointer", "-pthread", "-ldl"],
    )
}

/// Records `prog ARGS` with the probe `spec` into `name`, and reads it back.
fn record(prog: &Fixture, spec: &str, name: &str, args: &[&str]) -> (String, Recording) {
    let data = prog.data(name);
    let data = data.to_str().unwrap().to_string();
    let mut argv = vec!["record", "-q", "-e", spec, "-o", &data, "--", prog.path()];
    argv.extend_from_slice(args);
    urec_ok(&argv);
    let rec = Recording::read(data.as_ref());
    (data, rec)
}

#[test]
fn four_threads_one_process() {
    if !have_root() {
        return;
    }
    let prog = program();
    let spec = format!("{}:leaf", prog.path());
    let (_, rec) = record(&prog, &spec, "threads.data", &["threads"]);
    let mut per_tid: BTreeMap<u32, usize> = BTreeMap::new();
    for e in rec.events.iter().filter(|e| e.kind == EventKind::Entry) {
        *per_tid.entry(e.tid).or_default() += 1;
    }
    assert_eq!(per_tid.len(), 4, "threads: {per_tid:?}");
    assert!(per_tid.values().all(|&n| n == 250), "{per_tid:?}");
    let pids: BTreeSet<u32> = rec.events.iter().map(|e| e.pid).collect();
    assert_eq!(pids.len(), 1);
    assert!(
        !per_tid.contains_key(pids.iter().next().unwrap()),
        "main thread never calls leaf"
    );
    assert_eq!(rec.total_lost(), 0);
}

#[test]
fn children_forked_by_the_command_are_followed() {
    if !have_root() {
        return;
    }
    let prog = program();
    let spec = format!("{}:leaf", prog.path());
    let (_, rec) = record(&prog, &spec, "fork.data", &["fork"]);
    let mut per_pid: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for e in &rec.events {
        let c = per_pid.entry(e.pid).or_default();
        match e.kind {
            EventKind::Entry => c.0 += 1,
            EventKind::Return => c.1 += 1,
        }
    }
    assert_eq!(per_pid.len(), 10, "children: {per_pid:?}");
    assert!(per_pid.values().all(|&c| c == (100, 100)), "{per_pid:?}");
    // Each child is in the file with the traced command as its parent.
    let parents: BTreeSet<u32> = rec
        .processes
        .iter()
        .filter(|p| per_pid.contains_key(&p.pid))
        .map(|p| p.ppid)
        .collect();
    assert_eq!(parents.len(), 1, "children's parents: {parents:?}");
    assert_eq!(rec.total_lost(), 0);
}

#[test]
fn library_dlopened_after_start() {
    if !have_root() {
        return;
    }
    let prog = program();
    let lib_dir = tempfile::tempdir().unwrap();
    let lib = build_c(
        lib_dir.path(),
        "libfix.so",
        LIB_C,
        &["-O0", "-shared", "-fPIC", "-fno-omit-frame-pointer"],
    );
    let lib = lib.to_str().unwrap();
    let spec = format!("{lib}:lib_leaf");
    let (data, rec) = record(&prog, &spec, "dlopen.data", &["dlopen", lib]);
    let entries = rec
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Entry)
        .count();
    assert_eq!(entries, 100);
    assert!(
        rec.mappings.iter().any(|m| m.path == lib && m.time_ns > 0),
        "the dlopen'd library's mapping (made after recording began) is in the file"
    );
    // The report rebases through that later mapping: main → lib_leaf, 100 calls.
    let folded = urec_ok(&["report", "-i", &data, "--folded", "-"]);
    assert!(
        folded.lines().any(|l| l.ends_with(";main;lib_leaf 100")),
        "{folded}"
    );
}

#[test]
fn output_file_is_private_and_the_old_one_kept() {
    if !have_root() {
        return;
    }
    let prog = program();
    let spec = format!("{}:leaf", prog.path());
    let (first, _) = record(&prog, &spec, "out.data", &["threads"]);
    let (second, rec) = record(&prog, &spec, "out.data", &["threads"]);
    assert_eq!(first, second);
    let mode = std::fs::metadata(&second).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the recording may hold arguments: mode {mode:o}"
    );
    let old = Recording::read(format!("{second}.old").as_ref());
    assert_eq!(
        old.events.len(),
        2000,
        "the first recording survives as FILE.old"
    );
    assert_eq!(rec.events.len(), 2000);
}
