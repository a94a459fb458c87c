//! `urec report` end to end on synthetic recordings: outputs, `-`, exit statuses.

use std::process::{Command, Output};

#[path = "report/fixture.rs"]
mod fixture;
use fixture::write_recording;

fn urec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_urec"))
        .args(args)
        .output()
        .expect("run urec")
}

#[test]
fn table_and_outputs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("urec.data");
    write_recording(&data, true);
    let svg = dir.path().join("out.svg");
    let folded = dir.path().join("out.folded");
    let out = urec(&[
        "report",
        "-i",
        data.to_str().unwrap_or_default(),
        "--flamegraph",
        svg.to_str().unwrap_or_default(),
        "--folded",
        folded.to_str().unwrap_or_default(),
        "--histogram",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "# urec record -e app:work · host h (6.18.0) · 3.00ms · 20 events · workload: ./app --fast"
    );
    assert_eq!(
        lines[1],
        "PROBE     CALLS   TOTAL    MEAN     P50     P90     P99     MAX"
    );
    assert_eq!(
        lines[2],
        "app:work     10  55.0µs  5.50µs  5.01µs  8.99µs  10.0µs  10.0µs"
    );
    assert!(stdout.contains("@app:work latency (ns):"));
    assert_eq!(
        std::fs::read_to_string(&folded).expect("folded written"),
        "app;[unknown];[unknown] 10\n"
    );
    let svg = std::fs::read_to_string(&svg).expect("svg written");
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("app:work — urec record -e app:work"));
}

#[test]
fn json_to_stdout_replaces_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("urec.data");
    write_recording(&data, true);
    let out = urec(&[
        "report",
        "-i",
        data.to_str().unwrap_or_default(),
        "--json",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON only");
    assert_eq!(v["schema"], 1);
    assert_eq!(v["recording"]["workload"][1], "--fast");
    assert_eq!(v["functions"][0]["calls"], 10);
    assert_eq!(v["functions"][0]["latency_ns"]["total"], 55_000);
    assert_eq!(v["stacks"][0]["frames"][1], "[unknown]");
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("urec.data");
    write_recording(&data, true);
    let d = data.to_str().unwrap_or_default();
    let out = urec(&["report", "-i", d, "--json", "-", "--folded", "-"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most one output"));
    let out = urec(&["report", "-i", d, "--probe", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("app:work"));
    let out = urec(&["report", "-i", d, "--sort", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_files_exit_1_and_truncated_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let foreign = dir.path().join("foreign.data");
    std::fs::write(&foreign, b"GIF89a not a recording").expect("write");
    let out = urec(&["report", "-i", foreign.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read recording"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let missing = dir.path().join("missing.data");
    let out = urec(&["report", "-i", missing.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(1));

    let cut = dir.path().join("cut.data");
    write_recording(&cut, false);
    let out = urec(&[
        "report",
        "-i",
        cut.to_str().unwrap_or_default(),
        "--json",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("truncated"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["recording"]["truncated"], true);
    // Every event was flushed, only the footer is missing: all 10 calls are there.
    assert_eq!(v["functions"][0]["calls"], 10);
}
