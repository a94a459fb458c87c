#![cfg(feature = "record")]
//! Exact at any rate (SPEC.md): a C target calls a probed function as fast as the probe allows
//! into a ring buffer made deliberately small, so events are dropped; the calls, returns and
//! latencies must still be exact, from the in-kernel counts, and every output must say what
//! it covers. Ground truth is the target's own loop count.
//!
//! They need root. Without it they skip with a message, unless `CI=true`, where they fail.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::fixture::Fixture;
use common::recording::Recording;
use common::{have_root, record, urec_ok};

const PRESSURE_C: &str = include_str!("fixtures/pressure.c");
const CALLS: u64 = 200_000;

fn pressure() -> Fixture {
    Fixture::build(
        "pressure",
        PRESSURE_C,
        &["-O2", "-fomit-frame-pointer", "-fno-optimize-sibling-calls"],
    )
}

fn json(data: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let out = urec_ok(
        &[
            &["report", "-i", data.to_str().unwrap(), "--json", "-"],
            extra,
        ]
        .concat(),
    );
    serde_json::from_str(&out).expect("report --json")
}

fn function<'a>(report: &'a serde_json::Value, symbol: &str) -> &'a serde_json::Value {
    report["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["symbol"] == symbol)
        .unwrap_or_else(|| panic!("no function {symbol} in {report}"))
}

#[test]
fn counts_and_latencies_survive_a_full_ring() {
    if !have_root() {
        return;
    }
    let fx = pressure();
    let data = fx.data("small-ring.urec");
    let work = format!("{}:work", fx.path());
    let slow = format!("{}:slow", fx.path());
    let out = record(&[
        "-q",
        "-g",
        "dwarf",
        "--buffer-size",
        "128K",
        "-e",
        &work,
        "-e",
        &slow,
        "-o",
        data.to_str().unwrap(),
        "--",
        fx.path(),
        &CALLS.to_string(),
    ])
    .stdout(Stdio::piped())
    .output()
    .expect("running urec");
    assert!(out.status.success(), "urec record: {out:?}");
    // The traced program computed what it computes untraced.
    let untraced = std::process::Command::new(fx.path())
        .arg(CALLS.to_string())
        .output()
        .unwrap();
    assert_eq!(out.stdout, untraced.stdout);

    let rec = Recording::read(&data);
    let lost: u64 = rec.total_lost();
    assert!(
        lost > 0,
        "a 128K ring with 8K+ stack copies must overflow at this rate"
    );
    let report = json(&data, &[]);
    let w = function(&report, "work");
    assert_eq!(w["calls"], CALLS, "{w}");
    assert_eq!(w["returns"], CALLS, "{w}");
    assert_eq!(w["in_flight"], 0, "{w}");
    assert_eq!(w["unmatched"], 0, "{w}");
    assert_eq!(w["counts_from"], "kernel", "{w}");
    let recorded = w["recorded_calls"].as_u64().unwrap();
    assert!(recorded < CALLS, "{w}");
    assert_eq!(
        recorded,
        rec.events
            .iter()
            .filter(|e| e.probe == 0 && e.kind == urec_format::EventKind::Entry)
            .count() as u64
    );
    // The kernel's latency stats include those of every recorded call.
    let events_latency = rec
        .events
        .iter()
        .filter(|e| e.probe == 0)
        .filter_map(|e| e.latency_ns);
    let (emin, emax) = events_latency.fold((u64::MAX, 0), |(a, b), l| (a.min(l), b.max(l)));
    let lat = &w["latency_ns"];
    assert!(lat["min"].as_u64().unwrap() <= emin, "{lat} vs {emin}");
    assert!(lat["max"].as_u64().unwrap() >= emax, "{lat} vs {emax}");
    let sum = w["processes"].as_array().unwrap()[0]["calls"]
        .as_u64()
        .unwrap();
    assert_eq!(sum, recorded, "per-process counts come from the events");

    // The slow calls: 3, each at least the 20 ms it sleeps, whether or not their events made it.
    let s = function(&report, "slow");
    assert_eq!(s["calls"], 3, "{s}");
    assert_eq!(s["returns"], 3, "{s}");
    let lat = &s["latency_ns"];
    assert!(lat["min"].as_u64().unwrap() >= 20_000_000, "{lat}");
    assert!(lat["max"].as_u64().unwrap() < 1_000_000_000, "{lat}");

    // The recorded stacks are whole: main → c1 → c2 → work.
    let folded = urec_ok(&[
        "report",
        "-i",
        data.to_str().unwrap(),
        "--probe",
        &work,
        "--folded",
        "-",
    ]);
    let (mut whole, mut all) = (0u64, 0u64);
    for line in folded.lines() {
        let (stack, n) = line.rsplit_once(' ').unwrap();
        let n: u64 = n.parse().unwrap();
        all += n;
        if stack.ends_with("main;c1;c2;work") && !stack.contains("[truncated]") {
            whole += n;
        }
    }
    assert_eq!(all, recorded);
    assert!(
        whole * 100 >= all * 95,
        "{whole} of {all} stacks whole:\n{folded}"
    );

    // The table says what the stacks cover; a filter on events turns the kernel's counts off.
    let table = urec_ok(&["report", "-i", data.to_str().unwrap()]);
    assert!(
        table.contains(&format!("cover {recorded} of {CALLS} calls")),
        "{table}"
    );
    let filtered = json(&data, &["--min-latency", "0ns"]);
    let w = function(&filtered, "work");
    assert_eq!(w["counts_from"], "events", "{w}");
    assert!(w["calls"].as_u64().unwrap() < CALLS, "{w}");
}

/// A recorder killed with `kill -9` leaves the counts of its last checkpoint (each second).
#[test]
fn a_killed_recorder_keeps_its_last_snapshot() {
    if !have_root() {
        return;
    }
    let fx = pressure();
    let data = fx.data("killed.urec");
    let work = format!("{}:work", fx.path());
    let mut child = common::start_until_attached(record(&[
        "-v",
        "-e",
        &work,
        "-o",
        data.to_str().unwrap(),
        "--",
        fx.path(),
        "1000",
        "forever",
    ]));
    std::thread::sleep(Duration::from_millis(2500));
    child.kill().unwrap();
    child.wait().unwrap();
    // The workload outlives a recorder killed with SIGKILL.
    let _ = std::process::Command::new("pkill")
        .arg("-f")
        .arg(fx.path())
        .status();
    let rec = Recording::read(&data);
    let agg = rec.aggregates.get(&0).expect("a snapshot of the probe");
    assert!(agg.calls > 0, "{agg:?}");
    assert!(
        agg.returns <= agg.calls && agg.calls - agg.returns <= 1,
        "{agg:?}"
    );
    let l = agg.latency.as_ref().expect("latencies");
    assert_eq!(l.count, agg.returns);
    // (The histogram is read just after the counters, while the calls go on.)
    assert!(l.buckets.iter().map(|b| b.1).sum::<u64>() >= l.count);
    // The workload was killed with urec? It is urec's child: reap it if it lingers.
    let _ = std::process::Command::new("pkill")
        .arg("-f")
        .arg(fx.path())
        .status();
}
