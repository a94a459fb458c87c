//! Exports read by their real clients (SPEC "urec report": `--pprof`, `--perfetto`): a C target
//! with known call counts per path and per process is recorded, exported, and read back with
//! `go tool pprof -raw` and Perfetto's own Python protos; what they read must be the ground
//! truth. Under CI=true a missing client fails the test instead of skipping it.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixture::Fixture;
use common::*;

/// The parent calls `a` 600 times; a forked child calls `b` 400 times, then `a` 50 times. `mid`
/// is always inlined into `a`, so `a`'s call of `leaf` sits in an inlined frame.
const SOURCE: &str = r#"
#include <stdlib.h>
#include <unistd.h>
#include <sys/wait.h>
__attribute__((noinline)) int leaf(int x) { return x * 2; }
static inline __attribute__((always_inline)) int mid(int x) { return leaf(x) * 3; }
__attribute__((noinline)) int a(int x) { return mid(x) + 1; }
__attribute__((noinline)) int b(int x) { return leaf(x) + 2; }
int main(void) {
    int s = 0;
    pid_t c = fork();
    if (c == 0) {
        for (int i = 0; i < 400; i++) s += b(i);
        for (int i = 0; i < 50; i++) s += a(i);
        _exit(s == 0);
    }
    for (int i = 0; i < 600; i++) s += a(i);
    waitpid(c, 0, 0);
    return s == 0;
}
"#;

/// Builds the target and records `leaf` and `a` of its run; the fixture and the recording.
fn recorded() -> (Fixture, PathBuf) {
    let t = Fixture::build("exports", SOURCE, &["-g", "-O1", "-fno-omit-frame-pointer"]);
    let data = t.data("exports.data");
    let leaf = format!("{}:leaf", t.path());
    let a = format!("{}:a", t.path());
    let out = record(&[
        "-q",
        "-o",
        data.to_str().unwrap(),
        "-e",
        &leaf,
        "-e",
        &a,
        "--",
        t.path(),
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (t, data)
}

/// A tool the test needs: its path, or `None` (the caller skips) outside CI.
fn tool(name: &str, why: &str) -> Option<()> {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(());
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true: {name} is needed ({why}); scripts/install-deps.sh installs it");
    }
    eprintln!("skipped: no {name} ({why})");
    None
}

/// One sample of `go tool pprof -raw`: its values, its frames (outermost first, inlined frames
/// as frames of their own) and its labels.
#[derive(Debug)]
struct RawSample {
    calls: u64,
    latency: u64,
    frames: Vec<String>,
    labels: BTreeMap<String, String>,
}

/// Parses `go tool pprof -raw`: a "Samples:" block (values, then `: LOCATION_IDS`, then label
/// lines `key:[value]`), then "Locations" (`ID: ADDR M=N FUNCTION FILE:LINE`, inlined callers
/// on the following indented lines; the innermost first).
fn pprof_raw(file: &Path) -> (Vec<RawSample>, String) {
    let out = Command::new("go")
        .args(["tool", "pprof", "-raw"])
        .arg(file)
        .output()
        .expect("running go tool pprof");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof -raw failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut locations: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    // (calls, latency, location ids, labels)
    type Parsed = (u64, u64, Vec<u64>, BTreeMap<String, String>);
    let mut samples: Vec<Parsed> = Vec::new();
    let mut section = "";
    let mut last_loc = 0u64;
    for line in text.lines() {
        match line.trim_end() {
            "Samples:" => {
                section = "samples";
                continue;
            }
            "Locations" => {
                section = "locations";
                continue;
            }
            "Mappings" => {
                section = "mappings";
                continue;
            }
            _ => {}
        }
        let t = line.trim();
        match section {
            "samples"
                if t.contains(": ")
                    && t.split(':').next().is_some_and(|v| {
                        v.split_whitespace().all(|n| n.parse::<u64>().is_ok())
                    })
                    && !t.is_empty() =>
            {
                let (values, ids) = t.split_once(':').unwrap();
                let v: Vec<u64> = values
                    .split_whitespace()
                    .map(|n| n.parse().unwrap())
                    .collect();
                let ids = ids.split_whitespace().map(|n| n.parse().unwrap()).collect();
                samples.push((v[0], v[1], ids, BTreeMap::new()));
            }
            "samples" if t.contains(":[") => {
                let s = samples.last_mut().expect("a label before any sample");
                for part in t.split("] ") {
                    let (k, v) = part.split_once(":[").unwrap();
                    s.3.insert(k.to_string(), v.trim_end_matches(']').to_string());
                }
            }
            "locations" => {
                if let Some((id, rest)) = t.split_once(": ") {
                    if let Ok(id) = id.parse::<u64>() {
                        // "0xADDR M=N FUNCTION FILE:LINE s=0"
                        let name = rest.split_whitespace().nth(2).unwrap_or("?").to_string();
                        locations.insert(id, vec![name]);
                        last_loc = id;
                        continue;
                    }
                }
                // An inlined caller: "FUNCTION FILE:LINE s=0".
                let name = t.split_whitespace().next().unwrap_or("?").to_string();
                locations.get_mut(&last_loc).unwrap().push(name);
            }
            _ => {}
        }
    }
    let samples = samples
        .into_iter()
        .map(|(calls, latency, ids, labels)| {
            // Leaf location first, each location's lines innermost first: reverse both.
            let mut frames = Vec::new();
            for id in ids.iter().rev() {
                let lines = &locations[id];
                frames.extend(lines.iter().rev().cloned());
            }
            RawSample {
                calls,
                latency,
                frames,
                labels,
            }
        })
        .collect();
    (samples, text)
}

#[test]
fn pprof_samples_are_the_calls_per_stack_and_process() {
    if !have_root() {
        return;
    }
    let Some(()) = tool("go", "go tool pprof reads the --pprof output") else {
        return;
    };
    let (t, data) = recorded();
    let prof = t.data("exports.pb.gz");
    let folded_before = urec_ok(&["report", "-i", data.to_str().unwrap(), "--folded", "-"]);
    urec_ok(&[
        "report",
        "-i",
        data.to_str().unwrap(),
        "--pprof",
        prof.to_str().unwrap(),
    ]);
    let bytes = std::fs::read(&prof).unwrap();
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip-compressed");
    let (samples, text) = pprof_raw(&prof);
    assert!(
        text.contains("calls/count[dflt] latency/nanoseconds"),
        "sample types:\n{text}"
    );
    assert!(text.contains("PeriodType: calls count"), "{text}");
    // (pid, probe, program frames from main) → calls.
    let mut got: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let host = String::from_utf8_lossy(&Command::new("uname").arg("-n").output().unwrap().stdout)
        .trim()
        .to_string();
    for s in &samples {
        assert_eq!(s.labels.get("comm").map(String::as_str), Some("exports"));
        assert_eq!(s.labels.get("host"), Some(&host), "{s:?}");
        let own: Vec<&str> = s
            .frames
            .iter()
            .map(String::as_str)
            .skip_while(|f| *f != "main")
            .collect();
        let key = (
            s.labels["pid"].clone(),
            s.labels["probe"].rsplit(':').next().unwrap().to_string(),
            own.join(";"),
        );
        assert!(s.latency > 0, "every call returned: {s:?}");
        *got.entry(key).or_default() += s.calls;
    }
    let pids: std::collections::BTreeSet<&String> = got.keys().map(|k| &k.0).collect();
    assert_eq!(pids.len(), 2, "parent and child: {got:?}");
    // The child is the pid with `b` calls.
    let child = got
        .keys()
        .find(|k| k.2.contains(";b;"))
        .map(|k| k.0.clone())
        .expect("b's stack");
    let parent = pids.iter().find(|p| ***p != child).unwrap().to_string();
    let want: BTreeMap<(String, String, String), u64> = [
        ((&parent, "a", "main;a"), 600),
        ((&parent, "leaf", "main;a;mid;leaf"), 600),
        ((&child, "a", "main;a"), 50),
        ((&child, "leaf", "main;a;mid;leaf"), 50),
        ((&child, "leaf", "main;b;leaf"), 400),
    ]
    .into_iter()
    .map(|((p, probe, stack), n)| ((p.to_string(), probe.to_string(), stack.to_string()), n))
    .collect();
    assert_eq!(got, want, "go tool pprof -raw:\n{text}");
    // The inlined frame is a second line of `a`'s location, and mappings carry build ids.
    assert!(text.contains("[IN]"), "{text}");
    let build_id = Command::new("readelf")
        .args(["-n", t.path()])
        .output()
        .unwrap();
    let build_id = String::from_utf8_lossy(&build_id.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .expect("the target's build id");
    assert!(
        text.lines()
            .any(|l| l.contains(t.path()) && l.contains(&build_id)),
        "mapping of {} with build id {build_id}:\n{text}",
        t.path()
    );
    // The other outputs are unchanged by the per-process counters.
    let folded_after = urec_ok(&["report", "-i", data.to_str().unwrap(), "--folded", "-"]);
    assert_eq!(folded_before, folded_after);
    let own_folded: BTreeMap<String, u64> = folded_after
        .lines()
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').unwrap();
            let frames: Vec<&str> = stack.split(';').skip_while(|f| *f != "main").collect();
            (frames.join(";"), n.parse().unwrap())
        })
        .collect();
    assert_eq!(
        own_folded,
        [
            ("main;a".to_string(), 650),
            ("main;a;mid;leaf".to_string(), 650),
            ("main;b;leaf".to_string(), 400)
        ]
        .into_iter()
        .collect()
    );
}
