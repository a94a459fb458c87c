#![cfg(feature = "record")]
//! The probe cost (SPEC.md, "Probe sites and probe cost"), end to end: `urec record` calibrates
//! what a call through each way of probing costs and stores it per probe (format 2.3); `urec
//! report` says so under the table, puts it in JSON, and `--subtract-probe-cost` takes it off.
//! Ground truth: an empty function, whose whole latency is probe cost, and one that sleeps
//! 2 ms, which must not come out shorter than its sleep (tests/fixtures/probe_cost.c), built
//! the way Ubuntu and Fedora build (`endbr64; push %rbp`, the entry probe moved to the push).
//!
//! They need root (BPF). Without it they skip with a message, unless `CI=true`, where they fail
//! loudly.

mod common;

#[path = "report/fixture.rs"]
mod report_fixture;

use std::process::{Command, Stdio};

use common::fixture::Fixture;
use common::recording::Recording;
use common::{have_root, record, urec_ok};

const SOURCE: &str = include_str!("fixtures/probe_cost.c");
const CALLS: u64 = 2000;
const SLEEP_NS: u64 = 2_000_000;

fn json(args: &[&str]) -> serde_json::Value {
    let out = urec_ok(&[&["report", "--json", "-"], args].concat());
    serde_json::from_str(&out).expect("JSON")
}

fn function<'v>(v: &'v serde_json::Value, symbol: &str) -> &'v serde_json::Value {
    v["functions"]
        .as_array()
        .and_then(|fs| fs.iter().find(|f| f["symbol"] == symbol))
        .unwrap_or_else(|| panic!("no function {symbol} in {v}"))
}

fn record_run(fx: &Fixture, stack: &str, data: &str) -> (Recording, String, std::path::PathBuf) {
    let n = CALLS.to_string();
    let plain = Command::new(&fx.exe).arg(&n).output().unwrap();
    let out_path = fx.data(data);
    let o = record(&["-v", "-g", stack])
        .args(["-e", &format!("{}:empty", fx.path())])
        .args(["-e", &format!("{}:sleeper", fx.path())])
        .args(["-o", out_path.to_str().unwrap(), "--", fx.path(), &n])
        .stdin(Stdio::null())
        .output()
        .expect("running urec");
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "urec record: {stderr}");
    assert_eq!(
        o.stdout, plain.stdout,
        "the traced program's output changed"
    );
    (Recording::read(&out_path), stderr, out_path)
}

fn check(stack: &str) {
    let fx = Fixture::build(
        stack,
        SOURCE,
        &["-O2", "-fcf-protection", "-fno-omit-frame-pointer"],
    );
    let (rec, stderr, data) = record_run(&fx, stack, &format!("{stack}.data"));
    assert!(
        stderr.contains("probe cost calibrated in"),
        "record -v says what it measured: {stderr}"
    );
    // Both probes have latencies, so both carry a measured cost.
    for p in &rec.probes {
        let cost = p.site.and_then(|s| s.cost_ns);
        assert!(
            cost.is_some_and(|c| c > 0 && c < SLEEP_NS),
            "{}: probe cost {cost:?}",
            p.name
        );
    }
    let data = data.to_str().unwrap();

    let raw = json(&["-i", data]);
    let sub = json(&["-i", data, "--subtract-probe-cost"]);
    let cost = function(&raw, "empty")["probe_cost_ns"]
        .as_u64()
        .expect("functions[].probe_cost_ns");
    let largest = raw["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["probe_cost_ns"].as_u64())
        .max();
    assert_eq!(raw["recording"]["probe_cost_ns"].as_u64(), largest);
    assert_eq!(function(&raw, "empty")["calls"], CALLS);

    // The empty function: its latency is the probe's cost, which subtracting removes.
    let p50_raw = function(&raw, "empty")["latency_ns"]["p50"]
        .as_u64()
        .unwrap();
    let p50_sub = function(&sub, "empty")["latency_ns"]["p50"]
        .as_u64()
        .unwrap();
    eprintln!("{stack}: empty: cost {cost} ns, p50 {p50_raw} ns, less the cost {p50_sub} ns");
    assert!(
        p50_raw * 2 >= cost && p50_raw <= cost * 3 + 2_000,
        "{stack}: the empty function's p50 {p50_raw} ns is about its probe cost {cost} ns"
    );
    assert!(
        p50_sub <= p50_raw / 2 + 1_000,
        "{stack}: less the probe cost, the empty function's p50 is near 0: {p50_sub} ns"
    );
    let min_sub = function(&sub, "empty")["latency_ns"]["min"]
        .as_u64()
        .unwrap();
    assert!(min_sub <= p50_sub, "never below 0, and ordered");

    // The sleeper: still at least its sleep, less the probe cost.
    for v in [&raw, &sub] {
        let lat = &function(v, "sleeper")["latency_ns"];
        assert!(
            lat["min"].as_u64().unwrap() >= SLEEP_NS,
            "{stack}: sleeper's shortest call {lat} is at least its 2 ms sleep"
        );
    }
    let total = |v: &serde_json::Value| function(v, "sleeper")["latency_ns"]["total"].as_u64();
    let sleeper_cost = function(&raw, "sleeper")["probe_cost_ns"].as_u64().unwrap();
    assert_eq!(
        total(&sub),
        total(&raw).map(|t| t - 10 * sleeper_cost),
        "exactly the cost is taken off each call"
    );

    // The table says so, once.
    let table = urec_ok(&["report", "-i", data]);
    assert_eq!(
        table.matches("latencies include ≈").count(),
        1,
        "the note under the table: {table}"
    );
    let table = urec_ok(&["report", "-i", data, "--subtract-probe-cost"]);
    assert!(
        table.contains("of probe cost per call taken off the latencies"),
        "{table}"
    );
}

#[test]
fn frame_pointer_stacks() {
    if !have_root() {
        return;
    }
    check("fp");
}

#[test]
fn dwarf_stacks() {
    if !have_root() {
        return;
    }
    check("dwarf");
}

/// A recording without a measured cost (as before format 2.3) reports as it did: no note, JSON
/// nulls, and `--subtract-probe-cost` changes nothing.
#[test]
fn no_cost_recorded_reads_as_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("urec.data");
    report_fixture::write_recording(&data, true);
    let data = data.to_str().unwrap();
    let raw = json(&["-i", data]);
    let sub = json(&["-i", data, "--subtract-probe-cost"]);
    assert!(raw["recording"]["probe_cost_ns"].is_null());
    assert!(raw["functions"][0]["probe_cost_ns"].is_null());
    assert_eq!(raw["functions"], sub["functions"]);
    let table = urec_ok(&["report", "-i", data]);
    assert!(!table.contains("probe cost"), "{table}");
}
