#![cfg(feature = "record")]
//! How the command ended, as record's last line says it (even with `-q`), and record's exit
//! status, which is the command's: a non-zero exit, a crash by a signal, a clean exit (no
//! line), and a command urec itself ended when `-d` stopped the recording first.

mod common;

use std::process::{Output, Stdio};

use common::fixture::Fixture;
use common::{have_root, record};

/// Calls `leaf` 5 times, then with `segv` dies of SIGSEGV (without a core file), with `ok`
/// exits 0, with `sleep` sleeps 60 s, and otherwise exits with status 3.
const ENDS_C: &str = r#"
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
__attribute__((noinline)) int leaf(int x) { return x + 1; }
int main(int argc, char **argv) {
    int s = 0;
    for (int i = 0; i < 5; i++) s += leaf(i);
    if (argc > 1 && strcmp(argv[1], "segv") == 0) {
        struct rlimit none = {0, 0};
        setrlimit(RLIMIT_CORE, &none);
        raise(SIGSEGV);
    }
    if (argc > 1 && strcmp(argv[1], "ok") == 0) return 0;
    if (argc > 1 && strcmp(argv[1], "sleep") == 0) sleep(60);
    return s == 15 ? 3 : 4;
}
"#;

/// `urec record -q -e ends:leaf [EXTRA] -- ends MODE`.
fn run(t: &Fixture, mode: &str, extra: &[&str]) -> Output {
    let spec = format!("{}:leaf", t.path());
    let out = t.data(&format!("{mode}.data"));
    let mut args = vec!["-q", "-e", &spec, "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend(["--", t.path(), mode]);
    record(&args)
        .stdin(Stdio::null())
        .output()
        .expect("running urec record")
}

fn last_line(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr.lines().last().unwrap_or_default().to_string()
}

#[test]
fn the_last_line_says_how_the_command_ended() {
    if !have_root() {
        return;
    }
    let t = Fixture::build("ends", ENDS_C, &["-O1"]);

    let exited = run(&t, "three", &[]);
    assert_eq!(
        exited.status.code(),
        Some(3),
        "urec exits with the command's status"
    );
    assert_eq!(
        last_line(&exited),
        format!(
            "urec: {} exited with status 3; 10 events recorded",
            t.path()
        )
    );

    let killed = run(&t, "segv", &[]);
    assert_eq!(
        killed.status.code(),
        Some(128 + 11),
        "as a shell reports it"
    );
    assert_eq!(
        last_line(&killed),
        format!(
            "urec: {} was killed by SIGSEGV; 10 events recorded",
            t.path()
        )
    );

    // A clean exit: -q means nothing at all.
    let ok = run(&t, "ok", &[]);
    assert_eq!(ok.status.code(), Some(0));
    assert!(
        ok.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // urec ended it: the signal is urec's, and the line says so.
    let stopped = run(&t, "sleep", &["-d", "1"]);
    assert_eq!(stopped.status.code(), Some(128 + 15));
    assert_eq!(
        last_line(&stopped),
        format!(
            "urec: {} was killed by SIGTERM, which urec sent when recording stopped first; \
             10 events recorded",
            t.path()
        )
    );
}
