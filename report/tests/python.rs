//! Python frames inside native stacks (issue 33), end to end through the report: a synthetic
//! recording of a fake `python3.11` (its names in the recording's symbols section, so no real
//! binary is read) calling libz's `crc32` from Python code, with Python frames on its stacks,
//! read back through every output that shows stacks: folded (and inferno's collapse of
//! `script`), JSON, pprof (with `go tool pprof` when there is one), Perfetto, `--group-by
//! caller`, and the counts of stacks merged and not.

mod common;

use std::io::Read;

use common::*;
use urec_format::*;
use urec_report::output::folded;
use urec_report::{analyze_bytes, GroupBy, ReportOptions};

const PYTHON: &str = "/opt/fake/bin/python3.11";
const LIBZ: &str = "/opt/fake/lib/libz.so.1";
const PID: u32 = 40;
const PY_BASE: u64 = 0x40_0000;
const Z_BASE: u64 = 0x7f00_0000_0000;

/// Return addresses in the fake python (named at address − 1 by the symbols section).
const ZLIB_CRC32: u64 = PY_BASE + 0x1101;
const EVAL_INNER: u64 = PY_BASE + 0x2201;
const VECTORCALL: u64 = PY_BASE + 0x3301;
const EVAL_OUTER: u64 = PY_BASE + 0x2211;
const MAIN: u64 = PY_BASE + 0x4401;
const START: u64 = PY_BASE + 0x5501;
const EVAL_COLD: u64 = PY_BASE + 0x6601;

/// The native stack of a `crc32` call from Python code, innermost first.
fn native() -> Vec<u64> {
    vec![
        Z_BASE + 0x1000,
        ZLIB_CRC32,
        EVAL_INNER,
        VECTORCALL,
        EVAL_OUTER,
        MAIN,
        START,
    ]
}

fn py(code: u32, line: u32, entry: bool) -> PyFrame {
    PyFrame { code, line, entry }
}

fn symbols() -> Vec<BinarySymbols> {
    let entry = |offset: u64, names: &[&str]| SymbolEntry {
        offset,
        frames: names
            .iter()
            .map(|n| SymbolFrame {
                function: (*n).into(),
                file: None,
                line: None,
            })
            .collect(),
    };
    vec![BinarySymbols {
        path: PYTHON.into(),
        build_id: None,
        entries: vec![
            entry(0x1100, &["zlib_crc32"]),
            entry(0x2200, &["_PyEval_EvalFrameDefault"]),
            entry(0x2210, &["_PyEval_EvalFrameDefault"]),
            entry(0x3300, &["PyObject_Vectorcall"]),
            entry(0x4400, &["main"]),
            entry(0x5500, &["_start"]),
            entry(0x6600, &["_PyEval_EvalFrameDefault.cold"]),
        ],
    }]
}

/// A recording whose stacks are `stacks` (each a Stack record and that many calls), with the
/// fake python's names appended as its symbols section.
fn recording(stacks: &[(Stack, u32)]) -> Vec<u8> {
    let mut records = vec![
        probe(0, "libz:crc32", LIBZ, "crc32", ProbeKind::EntryReturn),
        process(PID, "python3", 1),
        mapping(PID, PY_BASE, PY_BASE + 0x10_0000, 0, PYTHON),
        mapping(PID, Z_BASE, Z_BASE + 0x10_0000, 0, LIBZ),
    ];
    for (id, qualname, first_line) in [(0, "<module>", 1), (1, "outer", 5), (2, "target", 2)] {
        records.push(Record::PyCode(PyCode {
            id,
            qualname: qualname.into(),
            filename: "/srv/app/s.py".into(),
            first_line,
        }));
    }
    let mut t = 2_000_000_000u64;
    for (s, calls) in stacks {
        records.push(Record::Stack(s.clone()));
        for _ in 0..*calls {
            records.push(entry(0, PID, PID, t, Some(s.id)));
            records.push(ret(0, PID, PID, t + 1000, Some(1000)));
            t += 10_000;
        }
    }
    records.push(finish(1_000_000_000, t));
    let mut w = Writer::new(Vec::new(), &header()).unwrap();
    for r in &records {
        w.write(r).unwrap();
    }
    let mut bytes = w.finish().unwrap();
    let footer = Reader::from_bytes(bytes.clone())
        .unwrap()
        .footer()
        .unwrap()
        .clone();
    let base = bytes.len() as u64;
    append_symbols(&mut bytes, base, &footer, &symbols()).unwrap();
    bytes
}

fn stack(id: u32, frames: Vec<u64>, truncated: bool, python: Vec<PyFrame>) -> Stack {
    Stack {
        id,
        frames: frames.into_iter().map(Avma).collect(),
        truncated,
        python,
        python_truncated: false,
    }
}

/// `target` (line 3) ran by the inner eval frame, `outer` (6) and `<module>` (9) by the outer.
fn python_311() -> Vec<PyFrame> {
    vec![py(2, 3, true), py(1, 6, false), py(0, 9, true)]
}

fn opts() -> ReportOptions {
    let mut o = ReportOptions::default();
    o.symbolize.debuginfod = false;
    o
}

fn folded_of(bytes: Vec<u8>, opts: &ReportOptions) -> (String, urec_report::Report) {
    let report = analyze_bytes(bytes, opts).unwrap();
    let mut out = Vec::new();
    folded::write(&report, urec_report::Weight::Calls, &mut out).unwrap();
    (String::from_utf8(out).unwrap(), report)
}

const MERGED: &str = "_start;main;<module> (s.py:9);outer (s.py:6);PyObject_Vectorcall;\
                      target (s.py:3);zlib_crc32;crc32";

#[test]
fn python_frames_replace_the_eval_frames_innermost_last() {
    let bytes = recording(&[(stack(1, native(), false, python_311()), 7)]);
    let (folded, report) = folded_of(bytes, &opts());
    assert_eq!(folded, format!("python3;{MERGED} 7\n"));
    let p = report.recording.python;
    assert_eq!((p.stacks, p.merged, p.unmerged), (7, 7, 0));
    assert!(
        !report.warnings.iter().any(|w| w.contains("Python")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn a_trailing_segment_without_entry_goes_with_the_outermost_eval_frame() {
    // 3.12+: the recorder marks the frame inner of each entry shim; a chain whose outermost
    // frame has no mark (cut short, or no shim below it) still pairs with the outermost eval.
    let python = vec![py(2, 3, true), py(1, 6, false), py(0, 9, false)];
    let mut cold = native();
    cold[4] = EVAL_COLD;
    let bytes = recording(&[
        (stack(1, native(), false, python.clone()), 2),
        (stack(2, cold, false, python), 1),
    ]);
    let (folded, _) = folded_of(bytes, &opts());
    // The `.cold` part is the same eval call: both stacks merge to one.
    assert_eq!(folded, format!("python3;{MERGED} 3\n"));
}

#[test]
fn disagreeing_counts_keep_the_native_stack_and_are_counted() {
    // Three segments for two eval frames on a complete native stack: no guess.
    let three = vec![py(2, 3, true), py(1, 6, true), py(0, 9, true)];
    let bytes = recording(&[
        (stack(1, native(), false, python_311()), 5),
        (stack(2, native(), false, three), 2),
    ]);
    let (folded, report) = folded_of(bytes, &opts());
    let native = "_start;main;_PyEval_EvalFrameDefault;PyObject_Vectorcall;\
                  _PyEval_EvalFrameDefault;zlib_crc32;crc32";
    assert_eq!(folded, format!("python3;{MERGED} 5\npython3;{native} 2\n"));
    let p = report.recording.python;
    assert_eq!((p.stacks, p.merged, p.unmerged), (7, 5, 2));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("2 of 7 calls with Python frames kept their native stack")),
        "{:?}",
        report.warnings
    );
    let mut json = Vec::new();
    urec_report::output::json::write(&report, &mut json).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        doc["recording"]["python"],
        serde_json::json!({"stacks": 7, "merged": 5, "unmerged": 2})
    );
}

#[test]
fn a_truncated_native_stack_merges_its_innermost_pairs() {
    // The unwind stopped after PyObject_Vectorcall: one eval frame for two segments.
    let bytes = recording(&[(stack(1, native()[..4].to_vec(), true, python_311()), 3)]);
    let (folded, report) = folded_of(bytes, &opts());
    assert_eq!(
        folded,
        "python3;[truncated];PyObject_Vectorcall;target (s.py:3);zlib_crc32;crc32 3\n"
    );
    assert_eq!(report.recording.python.merged, 3);
}

#[test]
fn unknown_code_ids_and_no_symbolize_keep_native_frames() {
    let unknown = vec![py(2, 3, true), py(77, 6, false), py(0, 9, true)];
    let bytes = recording(&[(stack(1, native(), false, unknown), 4)]);
    let (folded, report) = folded_of(bytes.clone(), &opts());
    assert!(folded.contains("_PyEval_EvalFrameDefault"), "{folded}");
    assert_eq!(report.recording.python.unmerged, 4);
    // --no-symbolize: no names, no eval frame to replace; said once, counted.
    let bytes = recording(&[(stack(1, native(), false, python_311()), 4)]);
    let no_sym = ReportOptions {
        no_symbolize: true,
        ..opts()
    };
    let (folded, report) = folded_of(bytes, &no_sym);
    assert!(!folded.contains("s.py"), "{folded}");
    assert_eq!(report.recording.python.unmerged, 4);
    assert!(
        report.warnings.iter().any(|w| w.contains("--no-symbolize")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn json_locations_say_which_frames_are_python() {
    let bytes = recording(&[(stack(1, native(), false, python_311()), 2)]);
    let report = analyze_bytes(bytes, &opts()).unwrap();
    let mut json = Vec::new();
    urec_report::output::json::write(&report, &mut json).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    let s = &doc["stacks"][0];
    let frames: Vec<&str> = s["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(frames.join(";"), MERGED);
    let target = &s["locations"][5];
    assert_eq!(
        *target,
        serde_json::json!({"binary": null, "offset": null, "file": "/srv/app/s.py",
                           "line": 3, "inlined": false, "kind": "python"})
    );
    assert_eq!(s["locations"][4]["kind"], "native");
    assert_eq!(s["locations"][4]["binary"], PYTHON);
    assert_eq!(
        doc["recording"]["python"],
        serde_json::json!({"stacks": 2, "merged": 2, "unmerged": 0})
    );
}

#[test]
fn json_has_no_python_counts_without_python_frames() {
    let bytes = recording(&[(stack(1, native(), false, Vec::new()), 2)]);
    let report = analyze_bytes(bytes, &opts()).unwrap();
    let mut json = Vec::new();
    urec_report::output::json::write(&report, &mut json).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert!(doc["recording"].get("python").is_none());
    assert_eq!(doc["stacks"][0]["locations"][0]["kind"], "native");
}

#[test]
fn group_by_caller_sees_the_python_frames() {
    // Probing PyObject_Vectorcall's callee position: crc32's caller is zlib_crc32; make the
    // eval frame crc32's direct caller instead.
    let mut frames = native();
    frames.remove(1);
    let bytes = recording(&[(stack(1, frames, false, python_311()), 3)]);
    let o = ReportOptions {
        group_by: Some(GroupBy::Caller),
        ..opts()
    };
    let report = analyze_bytes(bytes, &o).unwrap();
    let groups = report.groups.expect("groups");
    let callers: Vec<String> = groups
        .rows
        .iter()
        .map(|r| format!("{:?}", r.value))
        .collect();
    assert_eq!(callers.len(), 1);
    assert!(callers[0].contains("target (s.py:3)"), "{callers:?}");
}

#[test]
fn script_and_perfetto_merge_alike() {
    let bytes = recording(&[(stack(1, native(), false, python_311()), 2)]);
    let mut out = Vec::new();
    let script_opts = urec_report::output::script::ScriptOptions {
        symbolize: opts().symbolize,
        ..Default::default()
    };
    urec_report::output::script::script_bytes(bytes.clone(), &script_opts, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    // perf's layout, innermost first; the .py file where the binary goes.
    assert!(
        text.contains("0 target (s.py:3) (/srv/app/s.py)\n"),
        "{text}"
    );
    // inferno's collapse of the script in the layout it reads (`-F`, as tests/questions.rs) is
    // the report's folded output, but for the `(s.py:N)` of Python frames: perf's collapsers
    // take a parenthesis after a name for an argument list and cut it.
    let fields = urec_report::output::script::ScriptOptions {
        fields: Some("comm,pid,tid,cpu,time,event,ip,sym,dso".parse().unwrap()),
        ..script_opts
    };
    let mut out = Vec::new();
    urec_report::output::script::script_bytes(bytes.clone(), &fields, &mut out).unwrap();
    use inferno::collapse::Collapse;
    let mut folder = inferno::collapse::perf::Folder::default();
    let mut collapsed = Vec::new();
    folder.collapse(&out[..], &mut collapsed).unwrap();
    let tidy = format!("python3;{MERGED} 2\n")
        .replace("(s.py:9)", "")
        .replace("(s.py:6)", "")
        .replace("(s.py:3)", "");
    assert_eq!(String::from_utf8(collapsed).unwrap(), tidy);
    // Perfetto: the slice's call stack, decoded with Perfetto's own protos when the venv the
    // workspace's tests use is there (tests/exports.rs), else its bytes.
    let mut trace = Vec::new();
    urec_report::output::perfetto::write_bytes(bytes, &opts(), &mut trace).unwrap();
    let has = |s: &str| trace.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has("target (s.py:3)") && has("/srv/app/s.py"));
    let venv = std::env::var_os("UREC_VENV").map_or_else(
        || {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/urec/venv")
        },
        std::path::PathBuf::from,
    );
    let python = venv.join("bin/python");
    if !python.exists() {
        eprintln!(
            "skipped: no venv with Perfetto's protos at {}",
            venv.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("py.perfetto");
    std::fs::write(&file, &trace).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/perfetto_slices.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stack: Vec<&str> = doc["slices"][0]["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(stack.join(";"), MERGED);
}

#[test]
fn pprof_names_python_functions_with_their_files_and_lines() {
    let bytes = recording(&[(stack(1, native(), false, python_311()), 2)]);
    let report = analyze_bytes(bytes, &opts()).unwrap();
    let mut gz = Vec::new();
    urec_report::output::pprof::write(&report, &mut gz).unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    let has = |s: &str| raw.windows(s.len()).any(|w| w == s.as_bytes());
    assert!(has("[python]") && has("/srv/app/s.py") && has("target"));
    let have_go = std::process::Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_go {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true: go is needed (go tool pprof reads the --pprof output)");
        }
        eprintln!("skipped: no go (go tool pprof reads the --pprof output)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("py.pb.gz");
    std::fs::write(&file, &gz).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("go")
            .args(["tool", "pprof"])
            .args(args)
            .arg(&file)
            .env("PPROF_TMPDIR", dir.path())
            .env("HOME", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // -raw: the Python locations, in the [python] mapping, as function file:line.
    let raw = run(&["-raw"]);
    assert!(raw.contains("target /srv/app/s.py:3"), "{raw}");
    // pprof cuts `<...>` off a name as a C++ template list, showing the full name after it.
    assert!(raw.contains(" /srv/app/s.py:9 s=0(<module>)"), "{raw}");
    assert!(raw.contains("[python]"), "{raw}");
    // -traces: the stack leaf first, Python functions by name between the native frames.
    let traces = run(&["-traces"]);
    let names: Vec<&str> = traces
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("2   crc32"))
        .map(|l| l.trim().trim_start_matches("2   "))
        .take(8)
        .collect();
    assert_eq!(
        names,
        [
            "crc32",
            "zlib_crc32",
            "target",
            "PyObject_Vectorcall",
            "outer",
            // pprof drops `<...>` from a name (a C++ template list to it) and, left with
            // nothing, shows the mapping; -raw above has the name.
            "[[python]]",
            "main",
            "_start"
        ],
        "{traces}"
    );
}

#[test]
fn info_counts_python_functions_and_stacks() {
    let bytes = recording(&[
        (stack(1, native(), false, python_311()), 1),
        (stack(2, native(), false, Vec::new()), 1),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("py.data");
    std::fs::write(&file, bytes).unwrap();
    let d = urec_report::output::info::describe(&file).unwrap();
    assert!(
        d.text
            .contains("python:     3 functions, 1 stack with Python frames\n"),
        "{}",
        d.text
    );
}
