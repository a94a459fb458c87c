#![cfg(feature = "record")]
//! `urec top` (SPEC.md, "`urec top`"): live counts from the in-kernel aggregates. A C target
//! calls `work` (entry+return, 20 µs sleep) and `tick` (entry only) a known number of times; the
//! final JSON line must have those counts exactly, with latencies for `work` only. The terminal
//! view is driven through a pseudo-terminal: it draws, redraws, quits on `q`, and leaves no
//! uprobe link behind. `--top-stacks` names the hot call paths of each interval.
//!
//! They need root. Without it they skip with a message, unless `CI=true`, where they fail.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::fixture::Fixture;
use common::{have_root, poll, UREC};

/// `work` sleeps 20 µs; `tick` does not. With `wait`, first waits for a line on stdin. Calls
/// each N times (argv[1]) and exits with status 7.
const TARGET_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
__attribute__((noinline)) int work(int x) { usleep(20); return x * 3; }
__attribute__((noinline)) int tick(int x) { return x + 1; }
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    if (argc > 2 && strcmp(argv[2], "wait") == 0) {
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 9;
    }
    if (argc > 2 && strcmp(argv[2], "forever") == 0) n = -1;
    volatile long s = 0;
    for (int i = 0; n < 0 || i < n; i++) { s += work(i); s += tick(i); }
    return 7;
}
"#;

fn target() -> Fixture {
    Fixture::build(
        "toptarget",
        TARGET_C,
        &["-O1", "-fno-omit-frame-pointer", "-no-pie"],
    )
}

fn lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn function<'a>(line: &'a serde_json::Value, symbol: &str) -> &'a serde_json::Value {
    line["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["symbol"] == symbol)
        .unwrap_or_else(|| panic!("no {symbol} in {line}"))
}

/// The final line's exact counts: `work` N calls and returns with latencies of at least its
/// sleep, `tick` N calls and no latency.
fn check_final(last: &serde_json::Value, n: u64) {
    assert_eq!(last["schema"], 1);
    assert_eq!(last["final"], true, "{last}");
    assert!(last["time_s"].is_f64());
    let work = function(last, "work");
    assert_eq!(work["calls"], n, "{work}");
    assert_eq!(work["returns"], n, "{work}");
    assert_eq!(work["in_flight"], 0);
    assert_eq!(work["filtered"], 0);
    let lat = &work["latency_ns"];
    assert!(lat["min"].as_u64().unwrap() >= 20_000, "{lat}");
    assert!(lat["p50"].as_u64().unwrap() >= lat["min"].as_u64().unwrap());
    assert!(lat["max"].as_u64().unwrap() >= lat["p99"].as_u64().unwrap());
    assert!(lat["total"].as_u64().unwrap() >= n * 20_000);
    let tick = function(last, "tick");
    assert_eq!(tick["calls"], n, "{tick}");
    assert_eq!(tick["returns"], 0);
    assert!(tick["latency_ns"].is_null());
    assert!(tick["interval_latency_ns"].is_null());
}

#[test]
fn json_lines_with_a_command_are_exact() {
    if !have_root() {
        return;
    }
    let t = target();
    let n = 3000u64;
    let out = Command::new(UREC)
        .args([
            "top",
            "--json",
            "--interval",
            "100ms",
            "-e",
            &format!("{}:work", t.path()),
            "-e",
            &format!("{}:tick%entry", t.path()),
            "--",
            t.path(),
            &n.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "the command's status: {out:?}");
    let lines = lines(&out.stdout);
    let last = lines.last().expect("JSON lines");
    check_final(last, n);
    assert_eq!(
        lines.iter().filter(|l| l["final"] == true).count(),
        1,
        "one final line"
    );
    // The intervals add up to the totals, and each carries its rate.
    let sum: u64 = lines
        .iter()
        .map(|l| function(l, "work")["interval_calls"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, n);
    for l in &lines {
        assert!(function(l, "work")["rate"].is_number());
    }
}

#[test]
fn all_processes_for_a_duration() {
    if !have_root() {
        return;
    }
    let t = target();
    let n = 2000u64;
    // Started first, waiting for a line before it calls anything.
    let mut target = Command::new(&t.exe)
        .args([&n.to_string(), "wait"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut top = Command::new(UREC)
        .args([
            "top",
            "-d",
            "2",
            "-a",
            "--interval",
            "200ms",
            "-e",
            &format!("{}:work", t.path()),
            "-e",
            &format!("{}:tick%entry", t.path()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Not a terminal: JSON lines without --json. The first line means attached.
    let mut reader = BufReader::new(top.stdout.take().unwrap());
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    assert!(first.starts_with("{\"schema\":1"), "{first}");
    target.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(target.wait().unwrap().code(), Some(7));
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut rest).unwrap();
    let status = top.wait().unwrap();
    assert!(status.success(), "{status}");
    let lines = lines(&rest);
    let last = lines.last().expect("more lines");
    check_final(last, n);
    let t_s = last["time_s"].as_f64().unwrap();
    assert!((1.9..4.0).contains(&t_s), "-d 2 ended at {t_s} s");
}

#[test]
fn the_terminal_view_redraws_and_quits() {
    if !have_root() {
        return;
    }
    let t = target();
    // Calls work and tick until killed (when this test ends, however it ends).
    let _busy = KillOnDrop(
        Command::new(&t.exe)
            .args(["0", "forever"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let driver = t.data("drive.py");
    std::fs::write(
        &driver,
        r#"
import os, pty, sys, time, select, fcntl, termios, struct
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
out = b""
def read_until(cond, t):
    global out
    end = time.time() + t
    while time.time() < end and not cond():
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try:
                d = os.read(fd, 65536)
            except OSError:
                return
            if not d:
                return
            out += d
# The first frame (its header), then two more draws (each ends by hiding the cursor).
read_until(lambda: b"PROBE" in out and out.count(b"\x1b[?25l") >= 3, 30)
frames = out.count(b"\x1b[?25l")
sys.stdout.write("frames %d\n" % frames)
sys.stdout.write("header %s\n" % (b"PROBE" in out))
sys.stdout.flush()
os.write(fd, b"q")
end = time.time() + 10
while time.time() < end:
    r, _, _ = select.select([fd], [], [], 0.05)
    if r:
        try:
            d = os.read(fd, 65536)
        except OSError:
            break
        if not d:
            break
        out += d
_, st = os.waitpid(pid, 0)
sys.stdout.write("status %d\n" % os.waitstatus_to_exitcode(st))
sys.stdout.write(out.split(b"\x1b[?1049l")[-1].decode(errors="replace"))
"#,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = Command::new("python3")
        .arg(&driver)
        .args([
            UREC,
            "top",
            "-a",
            "--interval",
            "200ms",
            "-e",
            &format!("{}:work", t.path()),
            "-e",
            &format!("{}:tick%entry", t.path()),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("header True"), "{text}");
    let frames: u32 = text
        .lines()
        .find_map(|l| l.strip_prefix("frames "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(frames >= 3, "a redraw: {text}");
    assert!(text.contains("status 0"), "q quits with 0: {text}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "q quit promptly"
    );
    // What stays on the terminal: the final totals.
    assert!(text.contains("final totals"), "{text}");
    assert!(text.contains(&format!("{}:work", t.path())), "{text}");
    // Nothing stays attached (links live on urec's descriptors).
    poll(Duration::from_secs(5), "a link outlived urec top", || {
        urec_record::attach::links_on(&t.exe)
            .is_empty()
            .then_some(())
    });
}

/// A child killed and reaped when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `work` reached through `via_a` 3 calls in 4 and through `via_b` 1 in 4.
const PATHS_C: &str = r#"
#include <stdlib.h>
#include <unistd.h>
__attribute__((noinline)) int work(int x) { usleep(20); return x * 3; }
__attribute__((noinline)) int via_a(int x) { return work(x) + 1; }
__attribute__((noinline)) int via_b(int x) { return work(x) + 2; }
int main(int argc, char **argv) {
    int n = atoi(argv[1]);
    volatile long s = 0;
    for (int i = 0; i < n; i++) s += (i % 4 == 0) ? via_b(i) : via_a(i);
    return 0;
}
"#;

#[test]
fn top_stacks_name_the_hot_paths() {
    if !have_root() {
        return;
    }
    let t = Fixture::build(
        "paths",
        PATHS_C,
        &["-O1", "-fno-omit-frame-pointer", "-no-pie"],
    );
    let n = 4000u64;
    let out = Command::new(UREC)
        .args([
            "top",
            "--json",
            "--top-stacks",
            "2",
            "--interval",
            "200ms",
            "-e",
            &format!("{}:work", t.path()),
            "--",
            t.path(),
            &n.to_string(),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let lines = lines(&out.stdout);
    let last = lines.last().expect("JSON lines");
    assert_eq!(function(last, "work")["calls"], n);
    // Per interval, the paths' calls (nothing lost at this rate) add up to the run's.
    let mut by_path: std::collections::HashMap<String, u64> = Default::default();
    for l in &lines {
        let f = function(l, "work");
        let stacks = f["top_stacks"]
            .as_array()
            .expect("top_stacks with --top-stacks");
        assert!(stacks.len() <= 2);
        for s in stacks {
            let names: Vec<&str> = s["stack"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let tail = names[names.len().saturating_sub(3)..].join(";");
            *by_path.entry(tail).or_default() += s["calls"].as_u64().unwrap();
        }
    }
    assert_eq!(by_path.get("main;via_a;work"), Some(&3000), "{by_path:?}");
    assert_eq!(by_path.get("main;via_b;work"), Some(&1000), "{by_path:?}");
}

#[test]
fn top_stacks_zero_is_a_usage_error() {
    let out = Command::new(UREC)
        .args(["top", "-e", "libc:malloc", "--top-stacks", "0", "-a"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--top-stacks"));
}
