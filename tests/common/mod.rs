//! Helpers shared by the end-to-end test binaries: privilege gating, building C fixtures,
//! running the `urec` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Compiles one C file with gcc and `flags` into `dir/name`.
pub fn build_c(dir: &Path, name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let exe = dir.join(name);
    let out = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("running gcc");
    assert!(
        out.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Runs `urec ARGS` to completion.
pub fn urec(args: &[&str]) -> Output {
    Command::new(UREC)
        .args(args)
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
