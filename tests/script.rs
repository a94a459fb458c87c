//! `urec script` end to end: one line per event in time order, stacks in perf's layout.

use std::process::Command;

#[path = "report/fixture.rs"]
mod fixture;

#[test]
fn one_line_per_event_with_stacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("urec.data");
    fixture::write_recording(&data, true);
    let out = Command::new(env!("CARGO_BIN_EXE_urec"))
        .args(["script", "-i", data.to_str().unwrap_or_default()])
        .output()
        .expect("run urec");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let events: Vec<&str> = text.lines().filter(|l| l.starts_with("app ")).collect();
    assert_eq!(events.len(), 20);
    assert_eq!(
        events[0],
        "app      7/7      [000] 0.001000000: app:work: (1000)"
    );
    assert_eq!(
        events[1],
        "app      7/7      [000] 0.001001000: app:work%return: (1000) latency=1000"
    );
    assert!(text.starts_with(
        "app      7/7      [000] 0.001000000: app:work: (1000)\n\
         \t            1000 [unknown] ([unknown])\n\
         \t            2000 [unknown] ([unknown])\n\n"
    ));
}
