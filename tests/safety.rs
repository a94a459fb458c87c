//! Probe safety end to end: urec never places a probe inside an instruction or on one the
//! kernel refuses or would emulate wrongly; a glob skips such functions and records the rest;
//! local functions sharing a name are distinct probes; IFUNC messages name what the resolver
//! can select. Ground truth: `tests/fixtures/safety/` (instruction lengths in `insns.S`'s
//! comments, call counts in `main.c`'s header).
#![cfg(feature = "record")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{have_root, urec, urec_ok};

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/safety");

/// The fixture, built once per test binary.
fn fixture() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("urec-safety");
        std::fs::create_dir_all(&dir).expect("fixture dir");
        let bin = dir.join("safety");
        let sources = ["main.c", "one.c", "two.c", "insns.S"].map(|f| Path::new(SRC).join(f));
        common::gcc(&bin, &sources, &["-O2", "-fno-omit-frame-pointer"]);
        bin
    })
}

/// One `urec record -e FIXTURE:SPEC -o DIR/urec.data -- FIXTURE N`.
struct Run {
    /// Holds the data file.
    _dir: tempfile::TempDir,
    data: PathBuf,
    status: Option<i32>,
    stderr: String,
}

fn record_fixture(spec: &str, n: &str) -> Run {
    let bin = fixture().to_str().unwrap_or_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("urec.data");
    let out = urec(&[
        "record",
        "-e",
        &format!("{bin}:{spec}"),
        "-o",
        data.to_str().unwrap_or_default(),
        "--",
        bin,
        n,
    ]);
    Run {
        _dir: dir,
        data,
        status: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A refused spec fails before anything starts, and writes no file.
fn refused(spec: &str) -> String {
    let run = record_fixture(spec, "1");
    assert_eq!(run.status, Some(2), "{spec}: {}", run.stderr);
    assert!(!run.data.exists(), "{spec}: a refused spec wrote a file");
    run.stderr
}

#[test]
fn an_offset_inside_an_instruction_is_refused_naming_the_boundaries() {
    let e = refused("xchg_mid+0x4");
    assert!(
        e.contains("xchg_mid+0x4 lies inside the 6-byte instruction `mov $1,%r8d` at xchg_mid+0x3")
            && e.contains("the nearest instruction boundaries are xchg_mid+0x3 and xchg_mid+0x9"),
        "{e}"
    );
    let e = refused("vpcmp_mid+0x2");
    assert!(e.contains("inside the 4-byte instruction"), "{e}");
}

#[test]
fn instructions_the_kernel_would_skip_are_refused() {
    // Both were seen to change the function's result under a 6.18 uprobe.
    for spec in ["xchg_mid+0x9", "vpcmp_mid+0x5"] {
        let e = refused(spec);
        assert!(
            e.contains("skip it, changing what the program computes"),
            "{e}"
        );
    }
}

#[test]
fn a_function_the_kernel_refuses_is_refused_by_name() {
    let e = refused("work_vec");
    assert!(
        e.contains("the first instruction of work_vec (`vmovd %edi,%xmm0`) cannot be probed")
            && e.contains("opcode byte 0x6e (ENOTSUPP)"),
        "{e}"
    );
}

#[test]
fn ifunc_message_names_what_the_resolver_returns() {
    let e = refused("compute");
    assert!(
        e.contains("Its resolver selects one of: impl_fast, impl_slow."),
        "{e}"
    );
}

#[test]
fn libc_ifunc_messages_list_that_symbols_implementations() {
    // Debian strips libc's local symbols; libc6-dbg (installed by the test command) has them.
    let out = urec(&["record", "-e", "libc:strchr", "--", "/bin/true"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("strchr in") && e.contains("__strchr_sse2") && !e.contains("nametoindex"),
        "{e}"
    );
    // urec runs with this very libc, so it says what this CPU selects.
    assert!(e.contains("On this CPU it selects __strchr_"), "{e}");
    let out = urec(&["record", "-e", "libc:strrchr", "--", "/bin/true"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("__strrchr_sse2"), "{e}");
}

#[test]
fn list_marks_what_cannot_be_probed() {
    let out = urec_ok(&["list", fixture().to_str().unwrap_or_default(), "work_*"]);
    let vec = out
        .lines()
        .find(|l| l.starts_with("work_vec "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        vec.ends_with("[not-probeable: VEX/EVEX opcode 0x6e]"),
        "{vec}"
    );
}

/// Calls per probe name from `urec report --json`.
fn calls(data: &Path) -> Vec<(String, u64)> {
    let v: serde_json::Value = serde_json::from_str(&urec_ok(&[
        "report",
        "-i",
        data.to_str().unwrap_or_default(),
        "--json",
        "-",
    ]))
    .expect("JSON");
    let mut out: Vec<(String, u64)> = v["functions"]
        .as_array()
        .expect("functions")
        .iter()
        .map(|f| {
            (
                f["probe"].as_str().unwrap_or_default().to_string(),
                f["calls"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_glob_skips_what_cannot_be_probed_and_records_the_rest() {
    if !have_root() {
        return;
    }
    let run = record_fixture("work_*", "1000");
    let e = &run.stderr;
    // urec exits with the fixture's status, which is its checksum's low bit.
    assert!(matches!(run.status, Some(0 | 1)), "{e}");
    assert!(
        e.contains("skipped 1 function the kernel cannot probe: work_vec"),
        "{e}"
    );
    let names: Vec<(String, u64)> = calls(&run.data)
        .into_iter()
        .map(|(p, c)| (p.rsplit(':').next().unwrap_or_default().to_string(), c))
        .collect();
    assert_eq!(
        names,
        vec![("work_a".to_string(), 1000), ("work_b".to_string(), 2000)]
    );
}

#[test]
fn local_functions_sharing_a_name_are_distinct_probes() {
    if !have_root() {
        return;
    }
    let run = record_fixture("helper", "100");
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    let (bin, data) = (fixture().to_str().unwrap_or_default(), &run.data);
    let data_s = data.to_str().unwrap_or_default();
    // nm: the two `helper`s, one.c's first (link order).
    let nm = Command::new("nm").arg(bin).output().expect("run nm");
    let mut helpers: Vec<u64> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter(|l| l.ends_with(" t helper"))
        .filter_map(|l| u64::from_str_radix(l.split(' ').next()?, 16).ok())
        .collect();
    helpers.sort_unstable();
    assert_eq!(helpers.len(), 2, "{}", String::from_utf8_lossy(&nm.stdout));
    let want = vec![
        (format!("{bin}:helper@{:#x}", helpers[0]), 100),
        (format!("{bin}:helper@{:#x}", helpers[1]), 300),
    ];
    assert_eq!(calls(data), want);
    // `report --probe NAME@0xVADDR` selects one of them.
    let table = urec_ok(&[
        "report",
        "-i",
        data_s,
        "--probe",
        &format!("helper@{:#x}", helpers[1]),
    ]);
    assert!(
        table.contains(&format!("helper@{:#x}", helpers[1]))
            && !table.contains(&format!("helper@{:#x}", helpers[0])),
        "{table}"
    );
}

#[test]
fn the_ifunc_suggestion_counts_every_call() {
    if !have_root() {
        return;
    }
    let out = urec(&["record", "-e", "libc:strchr", "--", "/bin/true"]);
    let e = String::from_utf8_lossy(&out.stderr);
    // `-e 'libc:__strchr_avx2+0x4'` or `-e 'libc:__strchr_sse2'`, whichever this CPU gets.
    let spec = e
        .split("-e '")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .unwrap_or_else(|| panic!("no suggestion in: {e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    // Through a volatile pointer, so gcc cannot fold or inline the calls.
    let bin = common::build_c(
        dir.path(),
        "strchr1000",
        "#include <string.h>\n\
         char *(*volatile f)(const char *, int) = strchr;\n\
         int main(void) { long s = 0; for (int i = 0; i < 1000; i++) \
         s += (long)f(\"hello world\", 'w'); return s == 0; }\n",
        &["-O2"],
    );
    let data = dir.path().join("strchr.data");
    let data_s = data.to_str().unwrap_or_default();
    urec_ok(&[
        "record",
        "-q",
        "-e",
        spec,
        "-o",
        data_s,
        "--",
        bin.to_str().unwrap_or_default(),
    ]);
    assert_eq!(calls(&data), vec![(spec.to_string(), 1000)]);
}

/// `f` jumps over a data byte: `jmp 1f; .byte 0xb8; 1: mov $0x11223344,%ecx`. Decoded
/// linearly from `f`, +0x2 is `mov $0x223344b9,%eax` and +0x7 starts an instruction; the
/// program runs the `mov` at +0x3, which covers +0x7 (a probe there once made it print
/// `cc223344`). Calls `f` argv[1] times and prints what it returned.
const JUMP_OVER_DATA_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
unsigned f(void);
__asm__(".text\n.globl f\n.type f,@function\nf:\n"
        "  jmp 1f\n"
        "  .byte 0xb8\n"
        "1: mov $0x11223344,%ecx\n"
        "  mov %ecx,%eax\n"
        "  ret\n"
        ".size f, .-f\n");
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1;
    unsigned v = 0;
    for (int i = 0; i < n; i++)
        v = f();
    printf("%x\n", v);
    return 0;
}
"#;

#[test]
fn boundaries_follow_control_flow_over_data_in_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = common::build_c(dir.path(), "jump_over_data", JUMP_OVER_DATA_C, &["-O2"]);
    let bin_s = bin.to_str().unwrap_or_default();
    let data = dir.path().join("urec.data");
    let data_s = data.to_str().unwrap_or_default();
    let run = |spec: &str| {
        urec(&[
            "record",
            "-q",
            "-e",
            &format!("{bin_s}:{spec}"),
            "-o",
            data_s,
            "--",
            bin_s,
            "1000",
        ])
    };
    let direct = Command::new(&bin)
        .arg("1000")
        .output()
        .expect("run fixture");
    assert_eq!(String::from_utf8_lossy(&direct.stdout), "11223344\n");

    // Inside the executed `mov`, though a linear decoding starts an instruction there.
    let out = run("f+0x7");
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains(
            "f+0x7 lies inside the 5-byte instruction `mov $0x11223344,%ecx` at f+0x3, which the \
             jump at f reaches"
        ) && e.contains("overlaps the instruction the code executes")
            && e.contains("the nearest instruction boundaries are f+0x3 and f+0x8"),
        "{e}"
    );
    assert!(!data.exists(), "a refused spec wrote a file");
    // The skipped byte is data, not an instruction.
    let out = run("f+0x2");
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(
        e.contains("f+0x2 lies in bytes no path from f's entry reaches")
            && e.contains("data a jump skips"),
        "{e}"
    );

    if !have_root() {
        return;
    }
    // The real start of the executed `mov`: counted exactly, the program's output unchanged.
    let out = run("f+0x3");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "11223344\n");
    assert_eq!(calls(&data), vec![(format!("{bin_s}:f+0x3"), 1000)]);
}
