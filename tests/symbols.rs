//! Portable recordings (SPEC "Portable recordings"): the symbols section that `urec record`
//! appends and `urec archive` adds or refreshes names a recording's frames on a machine
//! without its binaries, exactly as the recording host named them.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::fixture::Fixture;
use common::*;

const SOURCE: &str = r#"
#include <stdlib.h>
__attribute__((noinline)) int leaf(int x) { return x * 2; }
__attribute__((noinline)) int a(int x) { return leaf(x) + 1; }
__attribute__((noinline)) int b(int x) { return leaf(x) + 2; }
int main(void) {
    int s = 0;
    for (int i = 0; i < 600; i++) s += a(i);
    for (int i = 0; i < 400; i++) s += b(i);
    return s == 0;
}
"#;

fn build() -> Fixture {
    Fixture::build(
        "portable",
        SOURCE,
        &["-g", "-O1", "-fno-omit-frame-pointer"],
    )
}

/// `urec record -q EXTRA -o NAME -e FIXTURE:leaf -- FIXTURE`, which must succeed; the file.
fn record_quietly(t: &Fixture, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let data = t.data(name);
    let spec = format!("{}:leaf", t.path());
    let mut args = vec!["-q"];
    args.extend_from_slice(extra);
    args.extend(["-o", data.to_str().unwrap(), "-e", &spec, "--", t.path()]);
    let out = record(&args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    data
}

fn folded(data: &Path, extra: &[&str]) -> String {
    let mut args = vec!["report", "-i", data.to_str().unwrap(), "--folded", "-"];
    args.extend_from_slice(extra);
    urec_ok(&args)
}

/// The folded stacks of the program's own frames (libc's are named on this host either way).
fn own(folded: &str) -> Vec<String> {
    folded
        .lines()
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').unwrap();
            let frames: Vec<&str> = stack
                .split(';')
                .skip_while(|f| *f != "main" && !f.starts_with("portable+"))
                .collect();
            format!("{} {n}", frames.join(";"))
        })
        .collect()
}

#[test]
fn a_recording_names_its_frames_after_the_binary_is_gone() {
    if !have_root() {
        return;
    }
    let t = build();
    let data = t.data("a.data");
    let spec = format!("{}:leaf", t.path());
    let out = record(&["-o", data.to_str().unwrap(), "-e", &spec, "--", t.path()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("urec: symbols: named"), "{stderr}");
    let host = folded(&data, &[]);
    assert_eq!(own(&host), ["main;a;leaf 600", "main;b;leaf 400"], "{host}");
    std::fs::remove_file(&t.exe).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let elsewhere = folded(&data, &["--symfs", empty.path().to_str().unwrap()]);
    assert_eq!(
        elsewhere, host,
        "a workstation reports what the host reported"
    );
    // script too: the section comes last in the file, script needs it first.
    let script = urec_ok(&["script", "-i", data.to_str().unwrap()]);
    assert!(
        script.contains(" leaf (") && script.contains(" a ("),
        "{script}"
    );
    let info = urec_ok(&["info", "-i", data.to_str().unwrap()]);
    assert!(info.contains("symbols:    "), "{info}");
    assert!(info.contains(" with file:line)"), "{info}");
}

#[test]
fn archive_names_a_recording_made_without_symbols_and_keeps_its_mode() {
    if !have_root() {
        return;
    }
    let t = build();
    let data = record_quietly(&t, "b.data", &["--no-symbols"]);
    let info = urec_ok(&["info", "-i", data.to_str().unwrap()]);
    assert!(info.contains("symbols:    none"), "{info}");
    let host = folded(&data, &[]);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    let out = urec(&["archive", "-i", data.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("urec: symbols: named"), "{stderr}");
    let meta = std::fs::metadata(&data).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    std::fs::remove_file(&t.exe).unwrap();
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        folded(&data, &["--symfs", empty.path().to_str().unwrap()]),
        host
    );
    // Archiving again refreshes the section in place of the old one (the binary is gone now:
    // the old names are kept), and the file does not grow.
    let before = std::fs::metadata(&data).unwrap().len();
    let out = urec(&["archive", "-i", data.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::metadata(&data).unwrap().len(), before);
    assert_eq!(
        folded(&data, &["--symfs", empty.path().to_str().unwrap()]),
        host
    );
}

#[test]
fn archive_refuses_a_truncated_recording_and_leaves_it_alone() {
    if !have_root() {
        return;
    }
    let t = build();
    let data = record_quietly(&t, "c.data", &["--no-symbols"]);
    let bytes = std::fs::read(&data).unwrap();
    let cut = t.data("cut.data");
    std::fs::write(&cut, &bytes[..bytes.len() - 30]).unwrap();
    let out = urec(&["archive", "-i", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a complete recording"));
    assert_eq!(std::fs::read(&cut).unwrap(), &bytes[..bytes.len() - 30]);
}

#[test]
fn an_interrupted_symbols_step_leaves_a_complete_recording() {
    if !have_root() {
        return;
    }
    let t = build();
    let data = record_quietly(&t, "d.data", &[]);
    let complete = {
        let r = urec_format::Reader::open(&data).unwrap();
        r.complete_len().unwrap() as usize
    };
    let bytes = std::fs::read(&data).unwrap();
    assert!(bytes.len() > complete + 40);
    std::fs::write(&data, &bytes[..complete + 30]).unwrap();
    let out = urec(&["report", "-i", data.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("unfinished"), "{stderr}");
    assert!(!stderr.contains("truncated"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(" 1000 "));
}

/// `report --json` says where names came from: with the binary gone and `--symfs EMPTY`, the
/// program is named by the embedded symbols, libc too (EMPTY holds no libc).
#[test]
fn json_says_where_the_names_came_from() {
    if !have_root() {
        return;
    }
    let t = build();
    let data = record_quietly(&t, "e.data", &[]);
    let json = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["report", "-i", data.to_str().unwrap(), "--json", "-"];
        args.extend_from_slice(extra);
        serde_json::from_str(&urec_ok(&args)).unwrap()
    };
    let here = json(&[]);
    assert_eq!(here["recording"]["symbols"]["binaries"]["embedded"], 0);
    assert_eq!(here["recording"]["symbols"]["binaries"]["none"], 0);
    let empty = tempfile::tempdir().unwrap();
    let there = json(&["--symfs", empty.path().to_str().unwrap()]);
    let b = &there["recording"]["symbols"]["binaries"];
    assert_eq!(
        (b["local"].as_u64(), b["none"].as_u64()),
        (Some(0), Some(0)),
        "{there}"
    );
    assert!(b["embedded"].as_u64() >= Some(2), "{there}");
    assert_eq!(here["stacks"], there["stacks"]);
}

/// A binary deleted while it runs (an upgrade, a rebuild) is still named: the recorder kept
/// the file the process mapped open, and the symbols step reads that one.
#[test]
fn a_binary_deleted_during_the_recording_is_named_from_the_kept_file() {
    if !have_root() {
        return;
    }
    let t = Fixture::build(
        "doomed",
        &SOURCE
            .replace("return s == 0;", "usleep(600000); return s == 0;")
            .replace(
                "#include <stdlib.h>",
                "#include <stdlib.h>\n#include <unistd.h>",
            ),
        &["-g", "-O1", "-fno-omit-frame-pointer"],
    );
    let data = t.data("f.data");
    let spec = format!("{}:leaf", t.path());
    let script = format!("{0} & sleep 0.3; rm {0}; wait", t.path());
    let out = record(&[
        "-q",
        "-o",
        data.to_str().unwrap(),
        "-e",
        &spec,
        "--",
        "sh",
        "-c",
        &script,
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!t.exe.exists());
    let empty = tempfile::tempdir().unwrap();
    let folded = folded(&data, &["--symfs", empty.path().to_str().unwrap()]);
    assert_eq!(
        own(&folded),
        ["main;a;leaf 600", "main;b;leaf 400"],
        "{folded}"
    );
}

/// `stacks[].locations` (SPEC, "`--json` schema") carry each frame's binary, file offset,
/// source file and line, parallel to `frames`: here the lines of SOURCE where `leaf` begins and
/// where `a`, `b` and `main` call on, the same from the binary and from the symbols section.
#[test]
fn json_locations_give_file_and_line_of_every_frame() {
    if !have_root() {
        return;
    }
    let t = build();
    let data = record_quietly(&t, "loc.data", &[]);
    let line_of = |needle: &str| -> u64 {
        SOURCE
            .lines()
            .position(|l| l.contains(needle))
            .expect("needle in SOURCE") as u64
            + 1
    };
    let empty = tempfile::tempdir().unwrap();
    for extra in [&[][..], &["--symfs", empty.path().to_str().unwrap()][..]] {
        let mut args = vec!["report", "-i", data.to_str().unwrap(), "--json", "-"];
        args.extend_from_slice(extra);
        let v: serde_json::Value = serde_json::from_str(&urec_ok(&args)).unwrap();
        let stacks = v["stacks"].as_array().expect("stacks");
        for (caller, calls, call_line) in [
            ("a", 600, line_of("int a(int x)")),
            ("b", 400, line_of("int b(int x)")),
        ] {
            let s = stacks
                .iter()
                .find(|s| {
                    let f = s["frames"].as_array().unwrap();
                    f.len() >= 3 && f[f.len() - 2] == caller && f[f.len() - 1] == "leaf"
                })
                .unwrap_or_else(|| panic!("a stack through {caller} ({extra:?}): {v}"));
            assert_eq!(s["calls"], calls, "{s}");
            let frames = s["frames"].as_array().unwrap();
            let locations = s["locations"].as_array().expect("locations");
            assert_eq!(locations.len(), frames.len(), "{s}");
            let n = frames.len();
            let at = |i: usize| &locations[i];
            let main = frames.iter().position(|f| f == "main").expect("main");
            for (i, want) in [
                (n - 1, line_of("int leaf(int x)")),
                (n - 2, call_line),
                (main, line_of(&format!("s += {caller}(i)"))),
            ] {
                let l = at(i);
                assert_eq!(l["binary"], t.path(), "{s}");
                assert!(
                    l["file"]
                        .as_str()
                        .is_some_and(|f| f.ends_with("portable.c")),
                    "{s}"
                );
                assert_eq!(l["line"].as_u64(), Some(want), "frame {i} of {s}");
                assert_eq!(l["inlined"], false, "{s}");
                assert!(l["offset"].as_u64().is_some(), "{s}");
            }
        }
    }
}
