#![cfg(feature = "record")]
//! Python frames inside native stacks (SPEC.md "Interpreter frames (Python)", issue 33): a probe
//! on libz's `crc32` hit from Python code shows the Python functions that led there, with their
//! files and lines, and exact counts.
//!
//! The ground truth is `tests/fixtures/python/paths.py`: four call paths (a plain chain whose
//! crc32 releases the GIL while another thread runs Python, a recursive function, a generator,
//! a thread), each with a known number of calls and `# L:NAME` markers on the lines the stacks
//! must show. Debian's `/usr/bin/python3.11` (no frame pointers) is the first target; the pyenv
//! builds of 3.12 and 3.13 (shared builds: the interpreter is in libpython) run the same
//! assertions where the machine has them, and say they were skipped where it does not.

mod common;

use std::path::Path;

use common::python::{available, pyenv, PYENV, PYTHON311};
use common::{have_root, urec, urec_ok};

/// Calls of the chain, the generator and the thread paths; the recursion runs N / 10 times.
const N: u64 = 1000;

const SCRIPT: &str = include_str!("fixtures/python/paths.py");

/// The line carrying `# L:name` in the script.
fn line(name: &str) -> u32 {
    let marker = format!("# L:{name}");
    SCRIPT
        .lines()
        .position(|l| l.trim_end().ends_with(&marker))
        .map(|i| i as u32 + 1)
        .unwrap_or_else(|| panic!("no {marker} in paths.py"))
}

fn py(qualname: &str, at: &str) -> String {
    format!("{qualname} (paths.py:{})", line(at))
}

/// One stack of `report --json`: its Python frames (outermost first, by name) and its calls.
struct PyStack {
    python: Vec<String>,
    all: Vec<String>,
    calls: u64,
}

fn python_stacks(json: &serde_json::Value) -> Vec<PyStack> {
    let stacks = json["stacks"].as_array().expect("stacks");
    stacks
        .iter()
        .map(|s| {
            let frames: Vec<String> = s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_string())
                .collect();
            let locations = s["locations"].as_array().unwrap();
            let python = frames
                .iter()
                .zip(locations)
                .filter(|(_, l)| l["kind"] == "python")
                .map(|(f, _)| f.clone())
                .collect();
            PyStack {
                python,
                all: frames,
                calls: s["calls"].as_u64().unwrap(),
            }
        })
        .collect()
}

/// Records `paths.py` under `python` with `-g auto` and checks every path.
fn check_paths(python: &Path, lib_note: &str) {
    check_paths_delayed(python, lib_note, None);
}

/// [`check_paths`], with the recorder not reading the ring for `delay_ms` after the start
/// (`UREC_TEST_DELAY_READ_MS`): the script has exited before its events are read, so every
/// name must come from the programs' code snapshots.
fn check_paths_delayed(python: &Path, lib_note: &str, delay_ms: Option<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("paths.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let data = dir.path().join("py.urec");
    let n = N.to_string();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_urec"));
    cmd.env_remove("DEBUGINFOD_URLS")
        .env("UREC_DEBUG_PYTHON", "1")
        .args(["record", "-g", "auto", "-e", "libz:crc32"]);
    if let Some(ms) = delay_ms {
        // Everything stays in the ring meanwhile: room for the whole recording.
        cmd.env("UREC_TEST_DELAY_READ_MS", ms.to_string())
            .args(["--buffer-size", "256M"]);
    }
    let out = cmd
        .args(["-o", data.to_str().unwrap(), "--"])
        .args([python.to_str().unwrap(), script.to_str().unwrap(), &n])
        .output()
        .expect("running urec");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stat = |name: &str| -> u64 {
        let line = stderr
            .lines()
            .find(|l| l.starts_with("python: "))
            .unwrap_or_else(|| panic!("{lib_note}: no python: line in {stderr}"));
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{lib_note}: no {name}= in {line}"))
    };
    assert!(
        out.status.success(),
        "{lib_note}: urec record failed: {stderr}"
    );
    // (Another test's python3.10 runs meanwhile: only traced processes' interpreters are
    // looked at, so it is not named here.)
    assert!(
        !stderr.contains("unknown frame layout"),
        "{lib_note}: a known CPython called unknown: {stderr}"
    );
    // Every frame named, whenever the recorder read it.
    assert_eq!(stat("unnamed"), 0, "{lib_note}: {stderr}");
    if delay_ms.is_some() {
        // The process was gone when its events were read: the names are the snapshots'.
        assert!(stat("unreadable") > 0, "{lib_note}: {stderr}");
        assert!(stat("from_snapshot") > 0, "{lib_note}: {stderr}");
        assert_eq!(stat("snapshot_failed"), 0, "{lib_note}: {stderr}");
    }
    let json: serde_json::Value = serde_json::from_str(&urec_ok(&[
        "report",
        "-i",
        data.to_str().unwrap(),
        "--json",
        "-",
    ]))
    .unwrap();
    assert_eq!(
        json["recording"]["lost"], 0,
        "{lib_note}: {}\n{stderr}",
        json["recording"]["lost_by_source"]
    );
    // Counts are exact whatever the stacks show.
    let calls = json["functions"][0]["calls"].as_u64().unwrap();
    assert_eq!(calls, 3 * N + N / 10, "{lib_note}: crc32 calls");

    // Under ring pressure (a loaded machine) the recorder keeps one call's stack in 2^k and
    // counts it 2^k times: stack counts are then estimates, within a few percent.
    let sampled = json["functions"][0]["sampled"].as_u64().unwrap_or(0) > 0;
    let at_most = |expected: u64| {
        if sampled {
            expected * 105 / 100
        } else {
            expected
        }
    };
    let stacks = python_stacks(&json);
    let module = py("<module>", "module");
    let paths: [(&str, Vec<String>, u64); 3] = [
        (
            "chain (GIL released, another thread running Python)",
            vec![
                module.clone(),
                py("main", "main-outer"),
                py("outer", "outer"),
                py("target", "target"),
            ],
            N,
        ),
        (
            "recursion",
            std::iter::once(module.clone())
                .chain(std::iter::once(py("main", "main-recurse")))
                .chain(std::iter::repeat_n(py("recurse", "recurse"), 5))
                .chain(std::iter::once(py("recurse", "recurse-leaf")))
                .collect(),
            N / 10,
        ),
        (
            "generator",
            vec![
                module.clone(),
                py("main", "main-consume"),
                py("consume", "consume"),
                py("gen", "gen"),
            ],
            N,
        ),
    ];
    let shown = |want: &[String]| -> u64 {
        stacks
            .iter()
            .filter(|s| s.python == want)
            .map(|s| s.calls)
            .sum()
    };
    let summary = || {
        let mut lines: Vec<String> = stacks
            .iter()
            .map(|s| format!("{} × {}", s.calls, s.all.join(";")))
            .collect();
        lines.sort();
        lines.join("\n")
    };
    for (what, want, expected) in &paths {
        let got = shown(want);
        assert!(
            got * 100 >= expected * 95 && got <= at_most(*expected),
            "{lib_note}: {what}: {got} of {expected} calls show {want:?}; stacks:\n{}",
            summary()
        );
    }
    // The thread: its Python frames end in threading's run and worker.
    let worker = py("worker", "worker");
    let thread: u64 = stacks
        .iter()
        .filter(|s| {
            let n = s.python.len();
            n >= 2
                && s.python[n - 1] == worker
                && s.python[n - 2].starts_with("Thread.run (threading.py:")
        })
        .map(|s| s.calls)
        .sum();
    assert!(
        thread * 100 >= N * 95 && thread <= at_most(N),
        "{lib_note}: thread: {thread} of {N} calls; stacks:\n{}",
        summary()
    );
    // The native eval frames the Python frames stand for are gone from merged stacks.
    for s in &stacks {
        if !s.python.is_empty() {
            assert!(
                !s.all.iter().any(|f| f == "_PyEval_EvalFrameDefault"),
                "{lib_note}: a merged stack keeps an eval frame: {}",
                s.all.join(";")
            );
        }
    }
    assert_eq!(
        json["recording"]["python"]["unmerged"], 0,
        "{lib_note}: {}",
        json["recording"]["python"]
    );

    // Folded and script see the same frames.
    let folded = urec_ok(&["report", "-i", data.to_str().unwrap(), "--folded", "-"]);
    let chain = paths[0].1.join(";");
    assert!(
        folded
            .lines()
            .any(|l| l.contains(&chain) && l.contains(";crc32 ")),
        "{lib_note}: folded:\n{folded}"
    );
}

#[test]
fn debian_python311_stacks_show_python_frames() {
    if !have_root() || !available(PYTHON311) {
        return;
    }
    check_paths(Path::new(PYTHON311), "Debian python3.11");
}

#[test]
fn pyenv_builds_stacks_show_python_frames() {
    if !have_root() {
        return;
    }
    for (version, program) in PYENV {
        let python = pyenv(version, program);
        if available(python.to_str().unwrap()) {
            check_paths(&python, &format!("pyenv {version}"));
        }
    }
}

/// A recorder that reads the ring only after the script has exited (a loaded machine, a
/// short script): every frame is still named, from the code snapshots the programs sent with
/// the events, with the same paths, files and lines as when read live.
#[test]
fn frames_are_named_after_the_process_exited() {
    if !have_root() {
        return;
    }
    if available(PYTHON311) {
        check_paths_delayed(
            Path::new(PYTHON311),
            "Debian python3.11, read late",
            Some(4000),
        );
    }
    let (version, program) = PYENV[1];
    let python = pyenv(version, program);
    if available(python.to_str().unwrap()) {
        check_paths_delayed(&python, &format!("pyenv {version}, read late"), Some(4000));
    }
}

/// An interpreter whose frame layout urec does not know is named once, and its stacks stay
/// native: CPython 3.10 (pyenv) stands in for a future 3.14.
#[test]
fn unknown_python_is_named_once_and_stays_native() {
    if !have_root() {
        return;
    }
    let python = pyenv("3.10.13", "python3.10");
    if !available(python.to_str().unwrap()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("paths.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let data = dir.path().join("py.urec");
    let out = urec(&[
        "record",
        "-g",
        "auto",
        "-e",
        "libz:crc32",
        "-o",
        data.to_str().unwrap(),
        "--",
        python.to_str().unwrap(),
        script.to_str().unwrap(),
        "100",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr
            .matches("python3.10: unknown frame layout, native stacks only")
            .count(),
        1,
        "{stderr}"
    );
    let json: serde_json::Value = serde_json::from_str(&urec_ok(&[
        "report",
        "-i",
        data.to_str().unwrap(),
        "--json",
        "-",
    ]))
    .unwrap();
    assert_eq!(json["functions"][0]["calls"], 3 * 100 + 10);
    let stacks = python_stacks(&json);
    assert!(stacks.iter().all(|s| s.python.is_empty()));
}
