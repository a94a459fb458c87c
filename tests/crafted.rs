//! Crafted data files (urec_format::hostile) through every reading command, as subprocesses:
//! none may panic or die of a signal, each either succeeds or says what is wrong (exit 1), and
//! none may take more memory than the budget, whatever the file claims (SPEC.md, "Security
//! model": memory proportional to what the file really holds, never to counts it claims).
//!
//! Peak memory is the child's own high-water mark (`ru_maxrss` from `wait4`), not a timing:
//! it does not depend on the machine's load. That mark starts from the parent's own (std
//! spawns with vfork, and the kernel carries the high-water mark across exec), so the files
//! are crafted by a child process (this binary, running `write_crafted_files`) and this
//! process stays small.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use urec_format::hostile::{self, Scale};

/// Peak resident memory allowed, in KiB: the 64 MiB a single chunk may decompress to (its
/// buffer is the largest allocation a valid file can ask for), plus 32 MiB for the program,
/// its libraries, the bounded windows of `script` and what the files really hold (one or two
/// unique stacks, at most 60,000 processes). docs/performance.md, "Untrusted files: memory",
/// has the numbers this leaves room for.
const BUDGET_KIB: i64 = 96 * 1024;

/// Smaller than the documented scale where a class's cost is one event at a time (a debug
/// build takes about a microsecond per event and command), still far beyond the budget
/// before the limits: 5 million open entries took 140 MB, 60,000 processes 480 MB in script.
fn scale() -> Scale {
    Scale {
        entries: 5_000_000,
        processes: 60_000,
        ..Scale::default()
    }
}

const COMMANDS: &[&[&str]] = &[
    &["report"],
    &["report", "--json", "-"],
    &["report", "--flamegraph", "FLAMEGRAPH"],
    &["report", "--folded", "-"],
    &["report", "--pprof", "OUTFILE"],
    &["report", "--perfetto", "OUTFILE"],
    &["script"],
    &["info"],
];

/// Commands that read the file twice (`--diff` against itself, two `-i` merged), run on the
/// classes whose cost the review measured through them (each other class's cost is the same
/// per read, and a debug run of the suite must stay short).
const TWICE: &[&[&str]] = &[&["report", "--diff", "DATA"], &["report", "-i", "DATA"]];
const TWICE_CLASSES: &[&str] = &["symbols-repeat", "symbols-spread", "unreturned-threads"];

/// CPU time allowed per command, in seconds of a debug build: a hang guard that is not a
/// timing (CPU, not wall, so a loaded machine does not trip it), far above what the bounded
/// code needs (under 10 s for every class) and far below what the unbounded code took (the
/// symbols classes and the unreturned threads ran for minutes before the bounds).
const CPU_BUDGET_S: f64 = 60.0;

struct Run {
    /// Exit status, or `None` when a signal ended it.
    code: Option<i32>,
    signal: Option<i32>,
    max_rss_kib: i64,
    cpu_s: f64,
    stderr: String,
}

/// Runs `urec ARGS -i data` with stdout discarded (script's output is large) and stderr in a
/// file (no pipe to fill), and reaps it with `wait4` for its resource usage.
#[allow(
    clippy::zombie_processes,
    reason = "reaped by wait4, which std cannot do"
)]
fn run(args: &[&str], data: &Path, dir: &Path) -> Run {
    let err_path = dir.join("stderr");
    let svg = dir.join("out.svg");
    let args: Vec<&str> = args
        .iter()
        .map(|a| {
            if *a == "FLAMEGRAPH" || *a == "OUTFILE" {
                svg.to_str().unwrap_or_default()
            } else if *a == "DATA" {
                data.to_str().unwrap_or_default()
            } else {
                a
            }
        })
        .collect();
    let child = Command::new(env!("CARGO_BIN_EXE_urec"))
        .args(&args)
        .arg("-i")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("run urec");
    let pid = child.id() as libc::pid_t;
    // A hang guard, not a timing: a command still running after 10 minutes is killed (the
    // CPU budget below is what the test judges).
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if wait
            .recv_timeout(std::time::Duration::from_secs(600))
            .is_err()
        {
            // SAFETY: `pid` is our child, not reaped before `done` is sent.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    });
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills; `pid` is our child, not yet reaped (the
    // `Child` is never waited on, so std does not reap it behind our back).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let _ = done.send(());
    let _ = watchdog.join();
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    Run {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        max_rss_kib: usage.ru_maxrss,
        cpu_s: seconds(usage.ru_utime) + seconds(usage.ru_stime),
        stderr,
    }
}

fn seconds(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// Writes the crafted files into `$UREC_HOSTILE_DIR`; a no-op without it (see the module docs).
#[test]
fn write_crafted_files() {
    let Some(dir) = std::env::var_os("UREC_HOSTILE_DIR") else {
        return;
    };
    for crafted in hostile::all(scale()) {
        let data = Path::new(&dir).join(format!("{}.data", crafted.name));
        std::fs::write(&data, &crafted.bytes).expect("write crafted file");
    }
}

#[test]
fn crafted_files_in_bounded_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("this test binary");
    let out = Command::new(exe)
        .args(["--exact", "write_crafted_files", "--test-threads=1"])
        .env("UREC_HOSTILE_DIR", dir.path())
        .output()
        .expect("run the crafting child");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mut failures = Vec::new();
    let mut table = String::new();
    // Names and descriptions only: a tiny instance of each class.
    let tiny = Scale {
        n: 10,
        entries: 10,
        window_events: 1,
        processes: 1,
    };
    // Every (class, command) run, two at a time (the machine's cores): each in a directory of
    // its own, since a run writes its outputs and stderr there; judged below in order.
    let mut jobs = Vec::new();
    for crafted in hostile::all(tiny) {
        let data = dir.path().join(format!("{}.data", crafted.name));
        assert!(data.is_file(), "{} was not written", data.display());
        let twice = if TWICE_CLASSES.contains(&crafted.name) {
            TWICE
        } else {
            &[]
        };
        for args in COMMANDS.iter().chain(twice) {
            let work = dir.path().join(format!("run-{}", jobs.len()));
            std::fs::create_dir(&work).expect("a run's directory");
            jobs.push((crafted.name, crafted.what, *args, data.clone(), work));
        }
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let runs: Vec<std::sync::Mutex<Option<Run>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((_, _, args, data, work)) = jobs.get(i) else {
                    break;
                };
                let r = run(args, data, work);
                *runs[i].lock().unwrap() = Some(r);
            });
        }
    });
    for ((name, what, args, _, _), r) in jobs.iter().zip(runs) {
        let r = r.into_inner().unwrap().expect("every run ran");
        let what = format!("urec {} on {} ({})", args.join(" "), name, what);
        table.push_str(&format!(
            "{:<20} {:<28} {:>6} MiB {:>7.2} s CPU  exit {:?}\n",
            name,
            args.join(" "),
            r.max_rss_kib / 1024,
            r.cpu_s,
            r.code
        ));
        if let Some(sig) = r.signal {
            failures.push(format!("{what}: killed by signal {sig}\n{}", r.stderr));
            continue;
        }
        if r.stderr.contains("panicked") {
            failures.push(format!("{what}: panicked\n{}", r.stderr));
        }
        match r.code {
            Some(0) => {}
            Some(1) if r.stderr.contains("urec: error") => {}
            code => failures.push(format!("{what}: exit {code:?}\n{}", r.stderr)),
        }
        if r.cpu_s > CPU_BUDGET_S {
            failures.push(format!(
                "{what}: {:.1} s of CPU, budget {CPU_BUDGET_S} s",
                r.cpu_s
            ));
        }
        if r.max_rss_kib > BUDGET_KIB {
            failures.push(format!(
                "{what}: peak RSS {} MiB, budget {} MiB",
                r.max_rss_kib / 1024,
                BUDGET_KIB / 1024
            ));
        }
    }
    eprintln!("{table}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
