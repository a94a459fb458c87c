#![cfg(feature = "record")]
//! bpftrace as an oracle: on the same command, urec and bpftrace must count the same calls.
//! Needs bpftrace (scripts/install-deps.sh installs it); without it the test skips with a
//! message, except under `CI=true`.

mod common;

use std::process::Command;

use common::{have_root, urec_ok};

/// `ls /` with an empty environment, so both runs make the same allocations.
const LS: [&str; 4] = ["/usr/bin/env", "-i", "/usr/bin/ls", "/"];

fn bpftrace_count(probe: &str) -> Option<u64> {
    let script = format!("uprobe:{probe} /pid == cpid/ {{ @ = count(); }}");
    let out = match Command::new("bpftrace")
        .args(["-e", &script, "-c", &LS.join(" ")])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: bpftrace is needed as the oracle: {e}"
            );
            eprintln!("skipped: no bpftrace ({e})");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("@: "));
    let line = line.unwrap_or_else(|| panic!("bpftrace printed no count: {text}"));
    Some(line[3..].trim().parse().unwrap())
}

#[test]
fn libc_malloc_counts_match_bpftrace() {
    if !have_root() {
        return;
    }
    let Some(expected) = bpftrace_count("libc:malloc") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("malloc.data");
    let data = data.to_str().unwrap();
    let mut args = vec!["record", "-q", "-e", "libc:malloc", "-o", data, "--"];
    args.extend_from_slice(&LS);
    urec_ok(&args);
    let json: serde_json::Value =
        serde_json::from_str(&urec_ok(&["report", "-i", data, "--json", "-"])).unwrap();
    let f = &json["functions"][0];
    assert_eq!(f["calls"], expected, "urec vs bpftrace count of malloc");
    assert_eq!(f["returns"], expected);
    assert_eq!(json["recording"]["lost"], 0);
}
