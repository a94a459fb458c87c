//! Asking the recording (SPEC "urec report": Filters, Breakdowns, Zero rows): slow-call stacks,
//! time windows, breakdowns by caller and argument, argument histograms, the warning when a
//! filter matches nothing. One target whose calls are known exactly:
//! - phase 1: `fast_path` calls `work` 400 times (size 4096 every fourth time, else 16, no
//!   sleep), then `slow_path` calls it 5 times with size 65536, sleeping 20 ms each;
//! - a 3 s pause;
//! - phase 2: `fast_path` calls `work` 200 times with size 16.
//!
//! `work` returns size * 2. `never` is never called.

mod common;

use std::path::{Path, PathBuf};

use common::fixture::Fixture;
use common::*;

const SOURCE: &str = r#"
#include <unistd.h>
__attribute__((noinline)) long work(long size, int sleep_us) {
    if (sleep_us) usleep(sleep_us);
    return size * 2;
}
__attribute__((noinline)) long never(void) { return 7; }
__attribute__((noinline)) long fast_path(long i) { return work(i % 4 == 0 ? 4096 : 16, 0); }
__attribute__((noinline)) long slow_path(void) { return work(65536, 20000); }
int main(int argc, char **argv) {
    long s = 0;
    for (int i = 0; i < 400; i++) s += fast_path(i);
    for (int i = 0; i < 5; i++) s += slow_path();
    usleep(3000000);
    for (int i = 0; i < 200; i++) s += fast_path(1);
    if (argc > 5) s += never();
    return s == 0;
}
"#;

struct Recorded {
    _t: Fixture,
    data: PathBuf,
}

fn recorded() -> Option<Recorded> {
    if !have_root() {
        return None;
    }
    let t = Fixture::build(
        "questions",
        SOURCE,
        &["-g", "-O1", "-fno-omit-frame-pointer"],
    );
    let data = t.data("q.data");
    let work = format!("{}:work size=arg1:s64 r=$retval:s64", t.path());
    let never = format!("{}:never", t.path());
    let out = record(&[
        "-q",
        "-o",
        data.to_str().unwrap(),
        "-e",
        &work,
        "-e",
        &never,
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
    Some(Recorded { _t: t, data })
}

fn json(data: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["report", "-i", data.to_str().unwrap(), "--json", "-"];
    args.extend_from_slice(extra);
    serde_json::from_str(&urec_ok(&args)).unwrap()
}

fn calls_of(v: &serde_json::Value, probe_suffix: &str) -> u64 {
    v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["probe"].as_str().unwrap().ends_with(probe_suffix))
        .unwrap_or_else(|| panic!("no {probe_suffix} in {v}"))["calls"]
        .as_u64()
        .unwrap()
}

/// Folded stacks of `work`, cut to the program's own frames from `main` on.
fn own_folded(data: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["report", "-i", data.to_str().unwrap(), "--folded", "-"];
    args.extend_from_slice(extra);
    let mut lines: Vec<String> = urec_ok(&args)
        .lines()
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').unwrap();
            let frames: Vec<&str> = stack.split(';').skip_while(|f| *f != "main").collect();
            format!("{} {n}", frames.join(";"))
        })
        .collect();
    lines.sort();
    lines
}

/// The groups of `--group-by KEY` as (value, calls, has latency).
fn groups(v: &serde_json::Value, key: &str) -> Vec<(String, u64, bool)> {
    let mut out: Vec<(String, u64, bool)> = v["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("groups in {v}"))
        .iter()
        .filter(|g| g["probe"].as_str().unwrap().ends_with(":work"))
        .map(|g| {
            (
                g["key"][key].to_string(),
                g["calls"].as_u64().unwrap(),
                g["latency_ns"].is_object(),
            )
        })
        .collect();
    out.sort();
    out
}

fn buckets(v: &serde_json::Value) -> Vec<(i64, i64, u64)> {
    let h = v["histograms"]
        .as_array()
        .unwrap_or_else(|| panic!("histograms in {v}"))
        .iter()
        .find(|h| h["probe"].as_str().unwrap().ends_with(":work"))
        .unwrap_or_else(|| panic!("work's histogram in {v}"));
    h["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["low"].as_i64().unwrap(),
                b["high"].as_i64().unwrap(),
                b["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn slicing_and_breakdowns_have_exact_answers() {
    let Some(r) = recorded() else { return };
    let d = &r.data;

    // Everything.
    let all = json(d, &[]);
    assert_eq!(calls_of(&all, ":work"), 605);
    assert_eq!(calls_of(&all, ":never"), 0);

    // Where the slow calls come from: only slow_path, with their latency.
    let slow = json(d, &["--min-latency", "10ms"]);
    assert_eq!(calls_of(&slow, ":work"), 5);
    let lat = &slow["functions"][0]["latency_ns"];
    assert!(lat["min"].as_u64().unwrap() >= 20_000_000, "{slow}");
    assert_eq!(
        own_folded(d, &["--min-latency", "10ms", "--probe", "work"]),
        ["main;slow_path;work 5"]
    );
    let fast = json(d, &["--max-latency", "10ms"]);
    assert_eq!(calls_of(&fast, ":work"), 600);

    // Two phases, by time since the attach.
    assert_eq!(calls_of(&json(d, &["--time", "..1.5"]), ":work"), 405);
    assert_eq!(calls_of(&json(d, &["--time", "2.0.."]), ":work"), 200);

    // By argument (fetched at entry), with latency per group.
    let by_size = json(d, &["--group-by", "size"]);
    assert_eq!(
        groups(&by_size, "size"),
        [
            ("16".to_string(), 500, true),
            ("4096".to_string(), 100, true),
            ("65536".to_string(), 5, true)
        ]
    );
    // By a value only the return carries.
    let by_ret = json(d, &["--group-by", "r"]);
    assert_eq!(
        groups(&by_ret, "r"),
        [
            ("131072".to_string(), 5, true),
            ("32".to_string(), 500, true),
            ("8192".to_string(), 100, true)
        ]
    );
    // By caller.
    let by_caller = json(d, &["--group-by", "caller"]);
    assert_eq!(
        groups(&by_caller, "caller"),
        [
            ("\"fast_path\"".to_string(), 600, true),
            ("\"slow_path\"".to_string(), 5, true)
        ]
    );
    // Slow calls by size: the latency filter applies to the groups too.
    let slow_by_size = json(d, &["--group-by", "size", "--min-latency", "10ms"]);
    assert_eq!(
        groups(&slow_by_size, "size"),
        [("65536".to_string(), 5, true)]
    );

    // Histograms of an entry argument and of the return value.
    assert_eq!(
        buckets(&json(d, &["--hist", "size"])),
        [(16, 32, 500), (4096, 8192, 100), (65536, 131072, 5)]
    );
    assert_eq!(
        buckets(&json(d, &["--hist", "retval"])),
        [(32, 64, 500), (8192, 16384, 100), (131072, 262144, 5)]
    );

    // The table: grouped rows, the zero-call probe hidden and said so.
    let table = urec_ok(&["report", "-i", d.to_str().unwrap(), "--group-by", "size"]);
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(":work "))
        .collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[0].split_whitespace().nth(1) == Some("16"), "{table}");
    assert!(
        table.contains("1 probe had no calls (--show-zero lists them)"),
        "{table}"
    );
    let rows_of = |text: &str, probe: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains(probe))
            .count()
    };
    assert_eq!(rows_of(&table, ":never "), 0, "{table}");
    let zero = urec_ok(&["report", "-i", d.to_str().unwrap(), "--show-zero"]);
    assert_eq!(rows_of(&zero, ":never "), 1, "{zero}");
    let hist = urec_ok(&["report", "-i", d.to_str().unwrap(), "--hist", "size"]);
    assert!(hist.contains("@"), "{hist}");
    assert!(
        hist.lines()
            .any(|l| l.starts_with("[4K, 8K)") && l.contains(" 100 ")),
        "{hist}"
    );
}

#[test]
fn a_filter_that_matches_nothing_says_what_the_file_holds() {
    let Some(r) = recorded() else { return };
    let d = r.data.to_str().unwrap();
    let out = urec(&["report", "-i", d, "--comm", "nosuch"]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no call matched the filters") && err.contains("comms questions"),
        "{err}"
    );
    let out = urec(&["report", "-i", d, "--time", "100.."]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("after the attach"), "{err}");
    // Usage errors: an argument no probe has, a bad window.
    let out = urec(&["report", "-i", d, "--hist", "nosuch"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("size") && err.contains("r"), "{err}");
    let out = urec(&["report", "-i", d, "--time", "5..1"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `urec script` takes the same filters: with a latency filter each kept call prints its entry
/// and return together; `--time` and `--reltime` share one scale; `-F` gives the collapsers
/// the layout they read, and inferno's perf collapser then yields `report --folded`'s stacks.
#[test]
fn script_filters_reltime_and_the_collapsers() {
    let Some(r) = recorded() else { return };
    let d = r.data.to_str().unwrap();
    let script = |extra: &[&str]| {
        let mut args = vec!["script", "-i", d, "--probe", "work"];
        args.extend_from_slice(extra);
        urec_ok(&args)
    };
    let events = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('\t') && !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    let slow = events(&script(&["--min-latency", "10ms"]));
    assert_eq!(slow.len(), 10, "{slow:#?}");
    for pair in slow.chunks(2) {
        assert!(
            pair[0].contains(":work: ") && pair[0].contains("size=65536"),
            "{pair:?}"
        );
        assert!(pair[1].contains(":work%return: "), "{pair:?}");
        let lat: u64 = pair[1]
            .rsplit_once("latency=")
            .and_then(|(_, l)| l.parse().ok())
            .unwrap();
        assert!(lat >= 20_000_000, "{pair:?}");
    }
    assert_eq!(events(&script(&["--time", "2.0.."])).len(), 400);
    // --reltime: phase 1 begins within the first second and a half, phase 2 after two.
    let rel = events(&script(&["--reltime"]));
    let secs = |l: &str| -> f64 {
        l.split_whitespace()
            .find(|w| {
                w.ends_with(':') && w.contains('.') && w[..w.len() - 1].parse::<f64>().is_ok()
            })
            .and_then(|w| w[..w.len() - 1].parse().ok())
            .unwrap()
    };
    assert!(secs(&rel[0]) < 1.5, "{}", rel[0]);
    assert!(secs(&rel[rel.len() - 1]) >= 2.0, "{}", rel[rel.len() - 1]);

    let fields = script(&["-F", "comm,pid,tid,cpu,time,event,ip,sym,dso"]);
    let first = fields.lines().next().unwrap();
    assert!(first.ends_with(":work:"), "{first}");
    use inferno::collapse::Collapse;
    let mut folder = inferno::collapse::perf::Folder::default();
    let mut collapsed = Vec::new();
    folder.collapse(fields.as_bytes(), &mut collapsed).unwrap();
    let folded = urec_ok(&["report", "-i", d, "--probe", "work", "--folded", "-"]);
    assert_eq!(String::from_utf8(collapsed).unwrap(), folded);
    // A bad field is a usage error.
    assert_eq!(
        urec(&["script", "-i", d, "-F", "comm,nosuch"])
            .status
            .code(),
        Some(2)
    );
}
