#![cfg(feature = "record")]
//! Record → report on a real run: `urec record` attaches to a PIE program built here, and every
//! report output is checked against the program's exact ground truth (1000 calls, 600 through
//! `a`, 400 through `b`, each sleeping at least 50 µs).

mod common;

use common::{build_c, have_root, start_attached, urec, urec_ok};

const TARGET_C: &str = r#"
#include <unistd.h>
__attribute__((noinline)) int leaf(int x) { usleep(50); return x + 1; }
__attribute__((noinline)) int a(int i) { return leaf(i) + 1; }
__attribute__((noinline)) int b(int i) { return leaf(i) + 2; }
int main(void) {
    int s = 0;
    for (int i = 0; i < 1000; i++) s += (i % 10 < 6) ? a(i) : b(i);
    return s == 0;
}
"#;

#[test]
fn record_then_every_report_output() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // PIE (gcc's default here): addresses only symbolize if rebased through the mapping.
    let exe = build_c(
        dir.path(),
        "e2e",
        TARGET_C,
        &["-O0", "-g", "-fno-omit-frame-pointer", "-pie", "-fPIE"],
    );
    let exe = exe.to_str().unwrap();
    let data = dir.path().join("e2e.data");
    let data = data.to_str().unwrap();
    let spec = format!("{exe}:leaf");
    urec_ok(&["record", "-q", "-e", &spec, "-o", data, "--", exe]);

    // Folded stacks: exact counts per call path, frames outermost first, above-main kept.
    let folded = urec_ok(&["report", "-i", data, "--folded", "-"]);
    let lines: Vec<&str> = folded.lines().collect();
    assert_eq!(lines.len(), 2, "{folded}");
    assert!(lines[0].starts_with("e2e;"), "{folded}");
    assert!(lines[0].ends_with(";main;a;leaf 600"), "{folded}");
    assert!(lines[1].ends_with(";main;b;leaf 400"), "{folded}");

    // JSON: the schema's numbers, exactly.
    let json: serde_json::Value =
        serde_json::from_str(&urec_ok(&["report", "-i", data, "--json", "-"])).unwrap();
    assert_eq!(json["schema"], 1);
    assert_eq!(json["recording"]["events"], 2000);
    assert_eq!(json["recording"]["lost"], 0);
    assert_eq!(json["recording"]["truncated"], false);
    let f = &json["functions"][0];
    assert_eq!(f["calls"], 1000);
    assert_eq!(f["returns"], 1000);
    assert_eq!(f["in_flight"], 0);
    assert_eq!(f["unmatched"], 0);
    assert_eq!(f["symbol"], "leaf");
    assert_eq!(f["binary"], exe);
    let min = f["latency_ns"]["min"].as_u64().unwrap();
    assert!(min >= 50_000, "every call sleeps ≥ 50 µs, min was {min} ns");
    let stacks = json["stacks"].as_array().unwrap();
    assert_eq!(stacks.len(), 2);
    assert_eq!(stacks[0]["calls"], 600);
    let frames: Vec<&str> = stacks[0]["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&frames[frames.len() - 3..], ["main", "a", "leaf"]);

    // Flamegraph: an SVG naming the probe and both paths.
    let svg = dir.path().join("out.svg");
    urec_ok(&["report", "-i", data, "--flamegraph", svg.to_str().unwrap()]);
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<?xml"), "not an SVG");
    for name in ["leaf (", "a (", "b (", "main ("] {
        assert!(svg.contains(name), "flamegraph lacks {name}");
    }

    // Table: one row, 1000 calls.
    let table = urec_ok(&["report", "-i", data]);
    let row = table.lines().find(|l| l.starts_with(&spec)).unwrap();
    assert!(row.split_whitespace().any(|w| w == "1000"), "{table}");

    // Script: one line per event, 1000 entries and 1000 returns.
    let script = urec_ok(&["script", "-i", data]);
    let entries = script.lines().filter(|l| l.contains(":leaf: (")).count();
    let returns = script
        .lines()
        .filter(|l| l.contains("leaf%return:"))
        .count();
    assert_eq!((entries, returns), (1000, 1000));

    // Info: counts and the probe.
    let info = urec_ok(&["info", "-i", data]);
    assert!(info.contains("leaf"), "{info}");
}

/// Calls `leaf` every millisecond for 30 seconds: long enough to be killed mid-recording.
const STEADY_C: &str = r#"
#include <unistd.h>
__attribute__((noinline)) int leaf(int x) { usleep(1000); return x + 1; }
int main(void) { int s = 0; for (int i = 0; i < 30000; i++) s += leaf(i); return s == 0; }
"#;

/// `kill -9` of the recorder must not lose what it already recorded: the file reads back up
/// to the recorder's last checkpoint (one per second), says it is truncated, and the report
/// still counts those calls.
/// The GNU build id of an ELF file, as `readelf -n` prints it.
fn build_id(path: &std::path::Path) -> String {
    let out = std::process::Command::new("readelf")
        .arg("-n")
        .arg(path)
        .output()
        .expect("running readelf");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("a build id")
        .to_string()
}

/// A workstation without the binary: its debug file alone, in gdb's build-id layout under a
/// `--debug-dir`, names every frame; `--symfs` with an empty root never falls back to this
/// host's files; and the warning for the missing binary names each remedy.
#[test]
fn debug_file_alone_and_strict_symfs() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = build_c(
        dir.path(),
        "gone",
        TARGET_C,
        &[
            "-O0",
            "-g",
            "-fno-omit-frame-pointer",
            "-pie",
            "-fPIE",
            "-Wl,--build-id",
        ],
    );
    let exe_s = exe.to_str().unwrap();
    let data = dir.path().join("gone.data");
    let data = data.to_str().unwrap();
    let spec = format!("{exe_s}:leaf");
    // Without the symbols section: this is about what local files name.
    urec_ok(&[
        "record",
        "-q",
        "--no-symbols",
        "-e",
        &spec,
        "-o",
        data,
        "--",
        exe_s,
    ]);
    let report = |extra: &[&str]| {
        let out = urec(&[&["report", "-i", data, "--folded", "-"], extra].concat());
        assert!(out.status.success(), "{out:?}");
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // --symfs with an empty root: the binary (still here, at its recorded path) and libc are
    // not looked up on this host.
    let empty = dir.path().join("empty-root");
    std::fs::create_dir(&empty).unwrap();
    let (folded, stderr) = report(&["--symfs", empty.to_str().unwrap()]);
    assert!(!folded.contains(";main;a;leaf"), "{folded}");
    assert!(folded.contains(";gone+0x"), "{folded}");
    assert!(
        stderr.contains(&format!("{exe_s} with build id")),
        "{stderr}"
    );
    assert!(stderr.contains("searched --symfs"), "{stderr}");

    // The debug file alone at DIR/.build-id/xx/rest.debug, the binary deleted.
    let id = build_id(&exe);
    let rel = format!(".build-id/{}/{}.debug", &id[..2], &id[2..]);
    let dbg = dir.path().join("dbg");
    let debug_file = dbg.join(&rel);
    std::fs::create_dir_all(debug_file.parent().unwrap()).unwrap();
    let objcopy = std::process::Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&exe)
        .arg(&debug_file)
        .status()
        .expect("running objcopy");
    assert!(objcopy.success());
    std::fs::remove_file(&exe).unwrap();

    let (folded, stderr) = report(&[]);
    assert!(folded.contains(";gone+0x"), "{folded}");
    let warning = stderr
        .lines()
        .find(|l| l.contains(exe_s))
        .unwrap_or_else(|| panic!("no warning about {exe_s}: {stderr}"));
    for remedy in [
        "its frames are shown as offsets",
        "--symfs DIR (a copy of the recording host's root)",
        &format!("--debug-dir DIR holding DIR/{rel}"),
        "`urec archive FILE` on the recording host",
        "installing its -dbgsym package",
    ] {
        assert!(warning.contains(remedy), "{remedy:?} not in {warning}");
    }

    let (folded, stderr) = report(&["--debug-dir", dbg.to_str().unwrap()]);
    let lines: Vec<&str> = folded.lines().collect();
    assert_eq!(lines.len(), 2, "{folded}");
    assert!(lines[0].ends_with(";main;a;leaf 600"), "{folded}");
    assert!(lines[1].ends_with(";main;b;leaf 400"), "{folded}");
    assert!(!stderr.contains(exe_s), "{stderr}");
}

#[test]
fn kill_9_keeps_what_was_recorded() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = build_c(
        dir.path(),
        "steady",
        STEADY_C,
        &["-O0", "-fno-omit-frame-pointer"],
    );
    let exe = exe.to_str().unwrap();
    let data = dir.path().join("killed.data");
    let data = data.to_str().unwrap();
    let spec = format!("{exe}:leaf");
    let mut workload = std::process::Command::new(exe).spawn().unwrap();
    let pid = workload.id().to_string();
    let mut recorder = start_attached(&["-e", &spec, "-p", &pid, "-o", data]);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    recorder.kill().unwrap(); // SIGKILL: no drain, no footer
    recorder.wait().unwrap();
    workload.kill().unwrap();
    workload.wait().unwrap();

    let out = urec(&["report", "-i", data, "--json", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("truncated"),
        "no truncation warning: {stderr}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["recording"]["truncated"], true);
    let calls = json["functions"][0]["calls"].as_u64().unwrap();
    // ≈ 1000 calls per second for at least the first full checkpoint.
    assert!(calls >= 500, "only {calls} calls survived the kill");
    let returns = json["functions"][0]["returns"].as_u64().unwrap();
    assert!(
        returns + 1 >= calls && returns <= calls,
        "{calls} calls, {returns} returns"
    );
}

/// A return probe on `a` replaces its return address on the stack with the kernel's uretprobe
/// trampoline while `a` runs; `leaf`'s frame-pointer stacks must still name `a` and `main`,
/// never `[uprobes]`, in every stack mode.
#[test]
fn stacks_under_a_pending_uretprobe_on_the_caller() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = build_c(
        dir.path(),
        "nested",
        TARGET_C,
        &["-O0", "-fno-omit-frame-pointer", "-pie", "-fPIE"],
    );
    let exe = exe.to_str().unwrap();
    for mode in ["fp", "dwarf"] {
        let data = dir.path().join(format!("{mode}.data"));
        let data = data.to_str().unwrap();
        let leaf = format!("{exe}:leaf");
        let a = format!("{exe}:a");
        urec_ok(&[
            "record", "-q", "-g", mode, "-e", &leaf, "-e", &a, "-o", data, "--", exe,
        ]);
        let folded = urec_ok(&["report", "-i", data, "--folded", "-"]);
        let lines: Vec<&str> = folded.lines().collect();
        let expected = [";main;a 600", ";main;a;leaf 600", ";main;b;leaf 400"];
        assert_eq!(lines.len(), expected.len(), "-g {mode}:\n{folded}");
        for (line, end) in lines.iter().zip(expected) {
            assert!(
                line.ends_with(end),
                "-g {mode}: {line:?} should end {end:?}"
            );
            assert!(
                !line.contains("uprobes"),
                "-g {mode}: trampoline in {line:?}"
            );
        }
    }
}
