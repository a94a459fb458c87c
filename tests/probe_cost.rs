#![cfg(feature = "record")]
//! The probe cost (SPEC.md, "Probe sites and probe cost"), end to end: `urec record` calibrates
//! what a call through each way of probing costs and stores it per probe (format 2.3); `urec
//! report` says so under the table, puts it in JSON, and `--subtract-probe-cost` takes it off.
//! Ground truth (tests/fixtures/probe_cost.c): two empty functions, whose whole latency is
//! probe cost, one probed on an instruction the kernel emulates (`endbr64; push %rbp`, the
//! entry probe moved to the push) and one on an instruction it single-steps, and a function
//! that sleeps 2 ms, which must not come out shorter than its sleep.
//!
//! They need root (BPF). Without it they skip with a message, unless `CI=true`, where they fail
//! loudly.

mod common;

#[path = "report/fixture.rs"]
mod report_fixture;

use std::collections::HashMap;
use std::process::{Command, Stdio};

use common::fixture::Fixture;
use common::recording::Recording;
use common::{have_root, record, urec_ok};
use urec_format::SitePath;

const SOURCE: &str = include_str!("fixtures/probe_cost.c");
const CALLS: u64 = 2000;
const SLEEPS: u64 = 10;
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

fn latency(v: &serde_json::Value, symbol: &str, stat: &str) -> u64 {
    function(v, symbol)["latency_ns"][stat]
        .as_u64()
        .unwrap_or_else(|| panic!("{symbol}: no latency_ns.{stat}"))
}

/// Records `empty`, `stepped` and `sleeper` with `-g STACK`; checks that the program printed
/// what it prints untraced.
fn record_run(fx: &Fixture, stack: &str) -> (Recording, String, std::path::PathBuf) {
    let n = CALLS.to_string();
    let plain = Command::new(&fx.exe).arg(&n).output().unwrap();
    let out_path = fx.data(&format!("{stack}.data"));
    let mut cmd = record(&["-v", "-g", stack]);
    for func in ["empty", "stepped", "sleeper"] {
        cmd.args(["-e", &format!("{}:{func}", fx.path())]);
    }
    let o = cmd
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
    let (rec, stderr, data) = record_run(&fx, stack);
    assert!(
        stderr.contains("probe cost calibrated in"),
        "record -v says what it measured: {stderr}"
    );
    // Every probe has latencies, so every one carries a measured cost: that of its path.
    let mut recorded = HashMap::new();
    for p in &rec.probes {
        let site = p.site.expect("the site is recorded");
        let cost = site.cost_ns;
        assert!(
            cost.is_some_and(|c| c > 0 && c < SLEEP_NS),
            "{}: probe cost {cost:?}",
            p.name
        );
        recorded.insert(p.symbol.clone(), (site.path, cost.unwrap_or(0)));
    }
    let (empty_path, emulated) = recorded["empty"];
    let (stepped_path, single_stepped) = recorded["stepped"];
    assert_eq!(
        (empty_path, stepped_path),
        (SitePath::Emulated, SitePath::SingleStepped)
    );
    // A second trap costs more (3x on bare metal, 10x or more in a VM).
    assert!(
        single_stepped > emulated,
        "{stack}: single-stepped {single_stepped} ns vs emulated {emulated} ns"
    );

    let data = data.to_str().unwrap();
    let raw = json(&["-i", data]);
    let sub = json(&["-i", data, "--subtract-probe-cost"]);
    let largest = raw["functions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["probe_cost_ns"].as_u64())
        .max();
    assert_eq!(raw["recording"]["probe_cost_ns"].as_u64(), largest);
    assert_eq!(largest, Some(single_stepped));

    // The empty functions: their latency is the probe's cost, which subtracting removes.
    for func in ["empty", "stepped"] {
        assert_eq!(function(&raw, func)["calls"], CALLS);
        let cost = function(&raw, func)["probe_cost_ns"].as_u64();
        assert_eq!(cost, Some(recorded[func].1), "JSON gives the recorded cost");
        let cost = cost.unwrap_or(0);
        let (p50_raw, p50_sub) = (latency(&raw, func, "p50"), latency(&sub, func, "p50"));
        eprintln!("{stack}: {func}: cost {cost} ns, p50 {p50_raw} ns, less the cost {p50_sub} ns");
        assert!(
            p50_raw * 2 >= cost && p50_raw <= cost * 3 + 2_000,
            "{stack}: {func}'s p50 {p50_raw} ns is about its probe cost {cost} ns"
        );
        assert!(
            p50_sub <= p50_raw / 2 + 1_000,
            "{stack}: less the probe cost, {func}'s p50 is near 0: {p50_sub} ns"
        );
        assert!(
            latency(&sub, func, "min") <= p50_sub,
            "never below 0, and ordered"
        );
    }

    // The sleeper: still at least its sleep, less the probe cost, which is taken off each
    // call exactly.
    for v in [&raw, &sub] {
        assert!(
            latency(v, "sleeper", "min") >= SLEEP_NS,
            "{stack}: sleeper's shortest call is at least its 2 ms sleep"
        );
    }
    let sleeper_cost = recorded["sleeper"].1;
    assert_eq!(
        latency(&sub, "sleeper", "total"),
        latency(&raw, "sleeper", "total") - SLEEPS * sleeper_cost,
    );

    // The table says so, once.
    let table = urec_ok(&["report", "-i", data]);
    assert_eq!(
        table.matches("# latencies include ≈").count(),
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

/// A calibration that fails leaves the recording alone: it says so once, records every call,
/// and its probes carry no cost, so the report says nothing of one.
#[test]
fn a_failed_calibration_records_without_a_cost() {
    if !have_root() {
        return;
    }
    let fx = Fixture::build("failed", SOURCE, &["-O2", "-fcf-protection"]);
    let data = fx.data("failed.data");
    let o = record(&["-e", &format!("{}:empty", fx.path())])
        .args(["-o", data.to_str().unwrap(), "--", fx.path(), "100"])
        .env("UREC_TEST_CALIBRATION_FAILS", "1")
        .stdin(Stdio::null())
        .output()
        .expect("running urec");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("probe cost not measured").count(),
        1,
        "{stderr}"
    );
    let rec = Recording::read(&data);
    assert!(rec
        .probes
        .iter()
        .all(|p| p.site.is_some_and(|s| s.cost_ns.is_none())));
    let data = data.to_str().unwrap();
    assert_eq!(function(&json(&["-i", data]), "empty")["calls"], 100);
    let table = urec_ok(&["report", "-i", data]);
    assert!(!table.contains("probe cost"), "{table}");
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
