//! Stack ids (issue 31, bpf/src/urec.h "Stack ids"): a stack walked in the kernel is stored
//! once in a map and its events carry an 8-byte id. What the file says must not change: the
//! same stacks with the same counts as when every event carries its frames
//! (`UREC_NO_STACK_IDS=1`), whether the ids are read from the map, or the map is full and the
//! frames travel in the events after all.
//!
//! The workload calls `leaf` through a recursion of `i % DEPTHS` levels, so its stacks are
//! known exactly: DEPTHS distinct ones, up to DEPTHS + 4 frames deep, each N / DEPTHS times.
//!
//! They need root (BPF, uprobes). Without it they skip with a message, unless `CI=true`, where
//! they fail loudly.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use common::{build_c, have_root, record, urec_ok};

const WORKLOAD_C: &str = r#"
#include <stdlib.h>
#define NI __attribute__((noinline, noclone))
volatile unsigned long sink;
NI unsigned long leaf(unsigned long x) { sink += x; return x + 1; }
NI unsigned long rec(unsigned long x, int d) {
    if (d == 0)
        return leaf(x);
    return rec(x, d - 1) + 1;
}
int main(int argc, char **argv) {
    int n = atoi(argv[1]), depths = atoi(argv[2]);
    for (int i = 0; i < n; i++)
        sink += rec(i, i % depths);
    return 0;
}
"#;

const N: u64 = 4000;
const DEPTHS: u64 = 100;

/// `-v`'s ring line: (records, bytes, stacks read by id).
fn ring(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("urec: ring: "))
        .unwrap_or_else(|| panic!("no ring line in:\n{stderr}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .filter_map(|w| w.parse().ok())
        .collect();
    // "ring: R records, B bytes (X.Y bytes per record); stack ids: S read in N batches"
    (nums[0], nums[1], nums[nums.len() - 2])
}

/// One recording of the workload: folded stacks and `-v`'s stderr.
fn run(dir: &Path, exe: &Path, env: &[(&str, &str)]) -> (BTreeMap<String, u64>, String) {
    let data = dir.join("ids.data");
    let exe_s = exe.to_str().unwrap();
    let leaf = format!("{exe_s}:leaf");
    let (n, depths) = (N.to_string(), DEPTHS.to_string());
    let args = [
        "-v",
        "-g",
        "fp",
        "-e",
        &leaf,
        "-o",
        data.to_str().unwrap(),
        "--",
        exe_s,
        &n,
        &depths,
    ];
    let o = record(&args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .output()
        .expect("running urec");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "urec record {args:?}: {stderr}");
    assert!(!stderr.contains("sampled"), "sampled out:\n{stderr}");
    assert!(!stderr.contains("without their stack"), "{stderr}");
    let folded = urec_ok(&["report", "-i", data.to_str().unwrap(), "--folded", "-"]);
    let mut stacks = BTreeMap::new();
    for line in folded.lines() {
        let (stack, n) = line.rsplit_once(' ').expect("folded line");
        *stacks.entry(stack.to_string()).or_default() += n.parse::<u64>().expect("count");
    }
    (stacks, stderr)
}

/// The workload, built with frame pointers in a fresh directory.
fn build() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "-O1",
        "-fno-omit-frame-pointer",
        "-fno-optimize-sibling-calls",
    ];
    let exe = build_c(dir.path(), "ids", WORKLOAD_C, &flags);
    (dir, exe)
}

/// The workload's stacks, exactly: one per recursion depth, N / DEPTHS calls each.
fn assert_ground_truth(stacks: &BTreeMap<String, u64>) {
    assert_eq!(stacks.len() as u64, DEPTHS, "{stacks:#?}");
    for d in 0..DEPTHS {
        let suffix = format!("main{};leaf", ";rec".repeat(d as usize + 1));
        let n = stacks
            .iter()
            .find(|(s, _)| s.ends_with(&suffix))
            .map(|(_, n)| *n);
        assert_eq!(n, Some(N / DEPTHS), "depth {d}: {suffix}\n{stacks:#?}");
    }
}

#[test]
fn ids_give_the_stacks_the_frames_gave() {
    if !have_root() {
        return;
    }
    let (dir, exe) = build();
    let (frames, frames_err) = run(dir.path(), &exe, &[("UREC_NO_STACK_IDS", "1")]);
    let (ids, ids_err) = run(dir.path(), &exe, &[]);
    assert_ground_truth(&frames);
    assert_eq!(frames, ids);
    // Every entry record is its 40-byte header and the id, whatever the depth (up to 104
    // frames here); returns carry no stack: 48 + 40 bytes a call.
    let (records, bytes, read) = ring(&ids_err);
    assert_eq!(records, 2 * N, "{ids_err}");
    assert_eq!(bytes, N * (48 + 40), "{ids_err}");
    // Each distinct stack read from the map once, with the few of the probe-cost calibration's
    // helper (its events are not the recording's, but a batch takes every stored stack).
    assert!((DEPTHS..DEPTHS + 8).contains(&read), "{ids_err}");
    let (records, bytes, read) = ring(&frames_err);
    assert_eq!((records, read), (2 * N, 0), "{frames_err}");
    assert!(bytes > N * (48 + 40), "{frames_err}");
}

#[test]
fn a_full_map_sends_the_frames_in_the_events() {
    if !have_root() {
        return;
    }
    let (dir, exe) = build();
    // Four stored stacks at most: the workload meets its 100 within a millisecond, long before
    // the recorder's next poll empties the map.
    let (stacks, stderr) = run(dir.path(), &exe, &[("UREC_TEST_STACK_STORE", "4")]);
    assert_ground_truth(&stacks);
    let (records, bytes, read) = ring(&stderr);
    assert_eq!(records, 2 * N, "{stderr}");
    assert!(
        bytes > N * (48 + 40),
        "no event carried its frames: {stderr}"
    );
    assert!((1..DEPTHS).contains(&read), "{stderr}");
}
