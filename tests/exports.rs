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
    recorded_with(&["{}:leaf", "{}:a"])
}

/// Builds the target and records it with these probes (`{}` stands for the target's path).
fn recorded_with(specs: &[&str]) -> (Fixture, PathBuf) {
    let t = Fixture::build("exports", SOURCE, &["-g", "-O1", "-fno-omit-frame-pointer"]);
    let data = t.data("exports.data");
    let specs: Vec<String> = specs.iter().map(|s| s.replace("{}", t.path())).collect();
    let mut args = vec!["-q", "-o", data.to_str().unwrap()];
    for s in &specs {
        args.extend(["-e", s.as_str()]);
    }
    args.extend(["--", t.path()]);
    let out = record(&args).output().unwrap();
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

/// The Python of the venv that has Perfetto's protos (pip `perfetto` and `protobuf`):
/// `$UREC_VENV`, else `~/.cache/urec/venv`, as scripts/install-deps.sh makes it.
fn perfetto_python() -> Option<PathBuf> {
    let venv = std::env::var_os("UREC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/urec/venv")
        });
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args([
            "-c",
            "import perfetto.protos.perfetto.trace.perfetto_trace_pb2",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "CI=true: no venv with pip perfetto + protobuf at {} (scripts/install-deps.sh makes it)",
            venv.display()
        );
    }
    eprintln!(
        "skipped: no venv with Perfetto's protos at {}",
        venv.display()
    );
    None
}

/// `urec report --perfetto` of `data`, decoded by tests/perfetto_slices.py.
fn perfetto_slices(python: &Path, data: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "report",
        "-i",
        data.to_str().unwrap(),
        "--perfetto",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    urec_ok(&args);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/perfetto_slices.py");
    let o = Command::new(python).arg(script).arg(out).output().unwrap();
    assert!(
        o.status.success(),
        "decoding the trace with Perfetto's protos failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn perfetto_slices_nest_per_thread_as_the_calls_did() {
    if !have_root() {
        return;
    }
    let Some(python) = perfetto_python() else {
        return;
    };
    let (t, data) = recorded_with(&["{}:leaf x=arg1:s32 r=$retval:s32", "{}:a"]);
    let trace = perfetto_slices(&python, &data, &t.data("t.pftrace"), &[]);
    assert_eq!(trace["unclosed"], 0, "every begin has its end");
    let clocks = trace["clocks"].as_array().unwrap();
    assert!(
        clocks.iter().any(|c| c[0] == 3),
        "a MONOTONIC clock: {clocks:?}"
    );
    // Thread tracks are named from comm.
    let tracks = trace["tracks"].as_array().unwrap();
    let threads: Vec<_> = tracks.iter().filter(|t| t.get("tid").is_some()).collect();
    assert_eq!(threads.len(), 2, "parent and child threads: {tracks:?}");
    assert!(
        threads.iter().all(|t| t["name"] == "exports"),
        "{threads:?}"
    );
    assert_eq!(
        tracks
            .iter()
            .filter(|t| t.get("pid").is_some() && t.get("tid").is_none())
            .count(),
        2,
        "two process tracks: {tracks:?}"
    );
    // (pid, name, parent) → slices.
    let slices = trace["slices"].as_array().unwrap();
    let mut got: BTreeMap<(u64, String, String), u64> = BTreeMap::new();
    for s in slices {
        if s["pid"].is_null() {
            continue; // the summary slice
        }
        let key = (
            s["pid"].as_u64().unwrap(),
            s["name"].as_str().unwrap().to_string(),
            s["parent"].as_str().unwrap_or("-").to_string(),
        );
        *got.entry(key).or_default() += 1;
        assert!(s["end_args"].get("in_flight").is_none(), "{s}");
        if s["name"] == "leaf" {
            // x at entry, r = 2x at return, on the same slice.
            let x: i64 = s["args"]["x"].as_str().unwrap().parse().unwrap();
            let r: i64 = s["end_args"]["r"].as_str().unwrap().parse().unwrap();
            assert_eq!(r, 2 * x, "{s}");
            let stack: Vec<&str> = s["stack"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .collect();
            let own: Vec<&str> = stack.iter().copied().skip_while(|f| *f != "main").collect();
            let want: &[&str] = if s["parent"] == "a" {
                &["main", "a", "mid", "leaf"]
            } else {
                &["main", "b", "leaf"]
            };
            assert_eq!(own, want, "{s}");
        }
    }
    let child = got
        .keys()
        .find(|k| k.1 == "leaf" && k.2 == "-")
        .map(|k| k.0)
        .expect("the child's leaf calls from b");
    let parent = got.keys().map(|k| k.0).find(|&p| p != child).unwrap();
    let want: BTreeMap<(u64, String, String), u64> = [
        ((parent, "a", "-"), 600),
        ((parent, "leaf", "a"), 600),
        ((child, "a", "-"), 50),
        ((child, "leaf", "a"), 50),
        ((child, "leaf", "-"), 400),
    ]
    .into_iter()
    .map(|((p, n, par), c)| ((p, n.to_string(), par.to_string()), c))
    .collect();
    assert_eq!(got, want);
    // The parent's leaf calls saw x = 0..599, each once.
    let mut xs: Vec<i64> = slices
        .iter()
        .filter(|s| s["pid"] == parent && s["name"] == "leaf")
        .map(|s| s["args"]["x"].as_str().unwrap().parse().unwrap())
        .collect();
    xs.sort();
    assert_eq!(xs, (0..600).collect::<Vec<i64>>());
    assert!(
        trace["instants"].as_array().unwrap().is_empty(),
        "{}",
        trace["instants"]
    );
    // The summary slice on the `urec` track: events and lost counts.
    let summary: Vec<_> = slices.iter().filter(|s| s["pid"].is_null()).collect();
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert_eq!(summary[0]["name"], "urec");
    assert_eq!(
        summary[0]["args"]["events"],
        2 * (1050 + 650),
        "{}",
        summary[0]
    );
    assert_eq!(summary[0]["args"]["lost"], 0);
}

#[test]
fn perfetto_closes_calls_in_flight_at_the_stop() {
    if !have_root() {
        return;
    }
    let Some(python) = perfetto_python() else {
        return;
    };
    let t = Fixture::build(
        "hang",
        r#"
#include <unistd.h>
volatile int sink;
__attribute__((noinline)) int leaf(int x) { return x * 2; }
__attribute__((noinline)) void hang(void) { sink = leaf(7); sleep(30); }
int main(void) { hang(); return 0; }
"#,
        &["-g", "-O1", "-fno-omit-frame-pointer"],
    );
    let data = t.data("hang.data");
    let hang = format!("{}:hang", t.path());
    let leaf = format!("{}:leaf x=arg1:s32 r=$retval:s32", t.path());
    // -d 1 stops the recording (and the command) while `hang` sleeps.
    let _ = record(&[
        "-q",
        "-d",
        "1",
        "-o",
        data.to_str().unwrap(),
        "-e",
        &hang,
        "-e",
        &leaf,
        "--",
        t.path(),
    ])
    .output()
    .unwrap();
    let trace = perfetto_slices(&python, &data, &t.data("hang.pftrace"), &[]);
    let slices = trace["slices"].as_array().unwrap();
    let hang: Vec<_> = slices.iter().filter(|s| s["name"] == "hang").collect();
    assert_eq!(hang.len(), 1, "{slices:?}");
    assert_eq!(hang[0]["end_args"]["in_flight"], true, "{}", hang[0]);
    let leaf: Vec<_> = slices.iter().filter(|s| s["name"] == "leaf").collect();
    assert_eq!(leaf.len(), 1);
    assert_eq!(leaf[0]["parent"], "hang");
    assert_eq!(leaf[0]["args"]["x"], "7");
    assert_eq!(leaf[0]["end_args"]["r"], "14");
    // The stop is about 1 s after the entry of `hang`.
    let length = hang[0]["end"].as_u64().unwrap() - hang[0]["ts"].as_u64().unwrap();
    assert!(
        (300_000_000..5_000_000_000).contains(&length),
        "hang's slice lasts {length} ns"
    );
}

/// `main` calls `a` argv[1] times and `b` argv[2] times; both call `leaf`.
const COUNTED: &str = r#"
#include <stdlib.h>
__attribute__((noinline)) int leaf(int x) { return x * 2; }
__attribute__((noinline)) int a(int x) { return leaf(x) + 1; }
__attribute__((noinline)) int b(int x) { return leaf(x) + 2; }
int main(int argc, char **argv) {
    int na = atoi(argv[1]), nb = atoi(argv[2]), s = 0;
    for (int i = 0; i < na; i++) s += a(i);
    for (int i = 0; i < nb; i++) s += b(i);
    return s == 0;
}
"#;

/// Records `leaf` and `a` of `COUNTED na nb` into `name`, on a host named `host` (a UTS
/// namespace of its own, so two "hosts" can be told apart on one machine).
fn record_counted(t: &Fixture, name: &str, host: &str, na: u32, nb: u32) -> PathBuf {
    let data = t.data(name);
    let script = format!(
        "hostname {host} && exec {urec} record -q -o {data} -e {exe}:leaf -e {exe}:a -- {exe} {na} {nb}",
        urec = UREC,
        data = data.display(),
        exe = t.path()
    );
    let out = Command::new("unshare")
        .args(["--uts", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    data
}

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&urec_ok(args)).unwrap()
}

#[test]
fn several_inputs_merge_and_each_process_keeps_its_host() {
    if !have_root() {
        return;
    }
    let t = Fixture::build(
        "counted",
        COUNTED,
        &["-g", "-O1", "-fno-omit-frame-pointer"],
    );
    let one = record_counted(&t, "one.data", "host-one", 80, 20);
    let two = record_counted(&t, "two.data", "host-two", 90, 40);
    let (one, two) = (one.to_str().unwrap(), two.to_str().unwrap());
    let j = json(&["report", "-i", one, "-i", two, "--json", "-"]);
    let inputs = j["recording"]["inputs"]
        .as_array()
        .expect("recording.inputs");
    assert_eq!(inputs.len(), 2);
    assert_eq!(inputs[0]["file"], one);
    assert_eq!(inputs[0]["host"], "host-one");
    assert_eq!(inputs[1]["file"], two);
    assert_eq!(inputs[1]["host"], "host-two");
    // Every call has an entry and a return event.
    assert_eq!(inputs[0]["events"], 2 * (80 + 100));
    assert_eq!(inputs[1]["events"], 2 * (90 + 130));
    assert_eq!(j["recording"]["events"], 2 * (180 + 220));
    assert!(inputs
        .iter()
        .all(|i| i["duration_ns"].as_u64().unwrap() > 0));
    assert!(inputs[1]["command"].as_str().unwrap().ends_with(" 90 40"));
    let calls: BTreeMap<String, u64> = j["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["probe"]
                    .as_str()
                    .unwrap()
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .to_string(),
                f["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(calls, [("a".into(), 170), ("leaf".into(), 230)].into());
    let stacks: BTreeMap<String, u64> = j["stacks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let frames: Vec<&str> = s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap())
                .skip_while(|f| *f != "main")
                .collect();
            (frames.join(";"), s["calls"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        stacks,
        [
            ("main;a".into(), 170),
            ("main;a;leaf".into(), 170),
            ("main;b;leaf".into(), 60)
        ]
        .into()
    );
    // A quoted pattern stands for the files it matches, in name order.
    let pattern = t.data("*.data");
    let by_pattern = json(&["report", "-i", pattern.to_str().unwrap(), "--json", "-"]);
    assert_eq!(by_pattern["recording"]["inputs"], j["recording"]["inputs"]);
    assert_eq!(by_pattern["functions"], j["functions"]);
    let none = t.data("*.nothing");
    assert_eq!(
        urec(&["report", "-i", none.to_str().unwrap()])
            .status
            .code(),
        Some(2)
    );
    // One input alone has no `inputs`.
    let single = json(&["report", "-i", one, "--json", "-"]);
    assert!(single["recording"].get("inputs").is_none());
    // pprof: each process's samples carry the host of its recording.
    if tool("go", "go tool pprof reads the --pprof output").is_none() {
        return;
    }
    let prof = t.data("merged.pb.gz");
    urec_ok(&[
        "report",
        "-i",
        one,
        "-i",
        two,
        "--pprof",
        prof.to_str().unwrap(),
    ]);
    let (samples, text) = pprof_raw(&prof);
    let mut by_host: BTreeMap<(String, String), u64> = BTreeMap::new();
    for s in &samples {
        let own: Vec<&str> = s
            .frames
            .iter()
            .map(String::as_str)
            .skip_while(|f| *f != "main")
            .collect();
        *by_host
            .entry((s.labels["host"].clone(), own.join(";")))
            .or_default() += s.calls;
    }
    let want: BTreeMap<(String, String), u64> = [
        (("host-one", "main;a"), 80),
        (("host-one", "main;a;leaf"), 80),
        (("host-one", "main;b;leaf"), 20),
        (("host-two", "main;a"), 90),
        (("host-two", "main;a;leaf"), 90),
        (("host-two", "main;b;leaf"), 40),
    ]
    .into_iter()
    .map(|((h, s), n)| ((h.to_string(), s.to_string()), n))
    .collect();
    assert_eq!(by_host, want, "{text}");
}

#[test]
fn diff_compares_calls_and_latency_with_base() {
    if !have_root() {
        return;
    }
    let t = Fixture::build(
        "counted",
        COUNTED,
        &["-g", "-O1", "-fno-omit-frame-pointer"],
    );
    let base = record_counted(&t, "base.data", "vm-base", 80, 20);
    let new = record_counted(&t, "new.data", "vm-new", 90, 40);
    let (base, new) = (base.to_str().unwrap(), new.to_str().unwrap());
    // The table: the input's calls, BASE's, and the change (a: 80 → 90 = +12.5%; leaf: 100 →
    // 130 = +30.0%).
    let table = urec_ok(&["report", "-i", new, "--diff", base]);
    let row = |probe: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|p| p.ends_with(probe))
            })
            .unwrap_or_else(|| panic!("no row {probe}:\n{table}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let header: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("PROBE"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "PROBE", "CALLS", "BASE", "CHANGE", "MEAN", "BASE", "CHANGE", "P50", "BASE", "CHANGE",
            "P99", "BASE", "CHANGE"
        ]
    );
    assert_eq!(row(":a")[1..4], ["90", "80", "+12.5%"], "{table}");
    assert_eq!(row(":leaf")[1..4], ["130", "100", "+30.0%"], "{table}");
    for r in [row(":a"), row(":leaf")] {
        for c in [6, 9, 12] {
            assert!(
                r[c].ends_with('%') && (r[c].starts_with('+') || r[c].starts_with('-')),
                "{r:?}"
            );
        }
    }
    // JSON `diff`: both sides per probe, with latencies.
    let j = json(&["report", "-i", new, "--diff", base, "--json", "-"]);
    let diff = j["diff"].as_array().expect("diff");
    assert_eq!(diff.len(), 2);
    for d in diff {
        let (b, n) = match d["probe"].as_str().unwrap().rsplit(':').next().unwrap() {
            "a" => (80, 90),
            "leaf" => (100, 130),
            p => panic!("probe {p}"),
        };
        assert_eq!(d["base"]["calls"], b, "{d}");
        assert_eq!(d["new"]["calls"], n, "{d}");
        assert!(d["base"]["latency_ns"]["p99"].as_u64().unwrap() > 0);
        assert!(d["new"]["latency_ns"]["mean"].as_u64().unwrap() > 0);
    }
    // Without --diff there is no `diff`.
    assert!(json(&["report", "-i", new, "--json", "-"])
        .get("diff")
        .is_none());
    // The differential flamegraph: the input's counts, each frame with its change.
    let svg = t.data("diff.svg");
    urec_ok(&[
        "report",
        "-i",
        new,
        "--diff",
        base,
        "--flamegraph",
        svg.to_str().unwrap(),
    ]);
    let svg = std::fs::read_to_string(svg).unwrap();
    let titles: Vec<&str> = svg
        .split("<title>")
        .skip(1)
        .filter_map(|s| s.split("</title>").next())
        .collect();
    // `b`'s frame holds the 40 calls of leaf under it; a differential title ends in "; ±N%".
    assert!(
        titles
            .iter()
            .any(|t| t.starts_with("b (40 calls") && t.contains("; ")),
        "{titles:?}"
    );
    assert!(
        titles
            .iter()
            .any(|t| t.starts_with("a (180 calls") && t.contains("; +")),
        "{titles:?}"
    );
}

#[test]
fn bad_export_requests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.data");
    let missing = missing.to_str().unwrap();
    let out_file = dir.path().join("t.pftrace");
    // Perfetto takes one recording: a usage error, before any file is read.
    let out = urec(&[
        "report",
        "-i",
        missing,
        "-i",
        missing,
        "--perfetto",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--perfetto takes one recording"));
    // A BASE that does not exist: exit 1, naming it, no panic.
    let out = urec(&["report", "-i", missing, "--diff", missing]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing.data") && !err.contains("panicked"),
        "{err}"
    );
}
