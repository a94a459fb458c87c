//! Helpers shared by the end-to-end test binaries: privilege gating, building C fixtures,
//! running the `urec` binary, and reading what it recorded.
//!
//! Each test binary compiles its own copy (`mod common;`) and uses a part of it, hence the
//! `dead_code` allowance.
#![allow(dead_code)]

pub mod fixture;
pub mod go;
pub mod python;
pub mod recording;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The `urec` binary under test.
pub const UREC: &str = env!("CARGO_BIN_EXE_urec");

/// True when probes can be attached. Without root the caller skips, with a message, except
/// under `CI=true`, where a missing privilege must fail the run rather than hide it.
pub fn have_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true: this test must run as root (it attaches real uprobes)");
    }
    eprintln!("skipped: attaching uprobes needs root");
    false
}

/// The system's bash, for tests that drive it interactively; `None` (with a message: the
/// caller skips) where there is none.
#[cfg(feature = "record")]
pub fn bash() -> Option<PathBuf> {
    let bash = urec_record::command::find_program("bash");
    if bash.is_none() {
        eprintln!("skipped: no bash");
    }
    bash
}

/// Compiles one C file with gcc and `flags` into `dir/name`.
pub fn build_c(dir: &Path, name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let exe = dir.join(name);
    gcc(&exe, &[src], flags);
    exe
}

/// Compiles and links `sources` (C or assembly) with gcc and `flags` into `exe`.
pub fn gcc(exe: &Path, sources: &[PathBuf], flags: &[&str]) {
    let out = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(exe)
        .args(sources)
        .output()
        .expect("running gcc");
    assert!(
        out.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `urec ARGS` to completion, without the caller's debuginfod servers: a test must
/// not depend on the network (tests/debuginfod.rs runs its own server).
pub fn urec(args: &[&str]) -> Output {
    Command::new(UREC)
        .args(args)
        .env_remove("DEBUGINFOD_URLS")
        .output()
        .expect("running urec")
}

/// Runs `urec ARGS`, asserts success, and returns its stdout.
pub fn urec_ok(args: &[&str]) -> String {
    let out = urec(args);
    assert!(
        out.status.success(),
        "urec {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `urec record ARGS`, not yet started: the caller chooses how to run it.
pub fn record(args: &[&str]) -> Command {
    let mut c = Command::new(UREC);
    c.arg("record").args(args);
    c
}

/// Starts `urec record ARGS -v` and waits until it says the probes are attached; its stderr
/// goes on to this test's stderr, marked `[urec]`.
pub fn start_attached(args: &[&str]) -> Child {
    let mut command = record(args);
    command.arg("-v");
    start_until_attached(command)
}

/// Starts `command`, a `urec record ... -v` perhaps under a wrapper such as strace, and waits
/// until it says the probes are attached; as [`start_attached`].
pub fn start_until_attached(mut command: Command) -> Child {
    let mut child = command
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

/// Stops a `urec record` the way a user's Ctrl-C does, and waits for it.
pub fn interrupt(child: &mut Child) -> ExitStatus {
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    child.wait().unwrap()
}

/// Polls `ready` every 50 ms until it gives a value; fails with `what` after `timeout`.
pub fn poll<T>(timeout: Duration, what: &str, mut ready: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = ready() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
