//! `urec list`: end to end through the binary, against a fixture built here and the system's
//! bash and libc. Ground truth from binutils (`nm`, `objdump -dF`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn urec() -> Command {
    Command::new(env!("CARGO_BIN_EXE_urec"))
}

fn fixture() -> PathBuf {
    fixture_named("fix")
}

/// The fixture built as `name`: tests run in parallel, and one rebuilding a file another
/// is reading would fail it.
fn fixture_named(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("urec-list-fixture");
    std::fs::create_dir_all(&dir).expect("create fixture dir");
    let bin = dir.join(name);
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/probe/tests/fixtures/fix.c");
    let out = Command::new("gcc")
        .args(["-O2", "-no-pie", "-o"])
        .arg(&bin)
        .arg(src)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bin
}

fn stdout_of(cmd: &mut Command) -> (String, i32) {
    let out = cmd.output().expect("run urec");
    (
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        out.status.code().unwrap_or(-1),
    )
}

fn line_for<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not listed in:\n{out}"))
}

/// `objdump -dF` gives the file offset binutils computes for a function.
fn objdump_offset(bin: &Path, name: &str) -> u64 {
    let out = Command::new("objdump")
        .arg("-dF")
        .arg(format!("--disassemble={name}"))
        .arg(bin)
        .output()
        .expect("run objdump");
    let text = String::from_utf8_lossy(&out.stdout);
    let needle = format!("<{name}> (File Offset: 0x");
    let hex = text
        .lines()
        .find_map(|l| l.split(&needle).nth(1))
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("{name} not in objdump output"));
    u64::from_str_radix(hex, 16).expect("hex offset")
}

#[test]
fn lists_fixture_functions_sorted_with_offsets() {
    let bin = fixture();
    let (out, code) = stdout_of(urec().arg("list").arg(&bin).arg("fix_*"));
    assert_eq!(code, 0, "{out}");
    let names: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        vec![
            "fix_add",
            "fix_alias",
            "fix_call1",
            "fix_call2",
            "fix_call3",
            "fix_call4",
            "fix_ifunc",
            "fix_ifunc_resolver",
            "fix_mul",
            "fix_static_helper",
            "fix_sub",
            "fix_sum",
        ]
    );
    for f in ["fix_add", "fix_call3", "fix_static_helper"] {
        let line = line_for(&out, f);
        let off = objdump_offset(&bin, f);
        assert!(line.contains(&format!("offset {off:#010x}")), "{line}");
        // Non-PIE: the address is 0x400000 above the offset.
        assert!(
            line.contains(&format!("vaddr {:#010x}", off + 0x400000)),
            "{line}"
        );
    }
    assert!(line_for(&out, "fix_ifunc").ends_with("[ifunc]"));
    assert!(line_for(&out, "fix_ifunc_resolver").ends_with("[ifunc]"));
    // `fix_add` starts with `lea`: single-stepped by the kernel.
    assert!(
        line_for(&out, "fix_add").ends_with("[single-step]"),
        "{out}"
    );
}

#[test]
fn bash_readline_as_nm_sees_it() {
    let (out, code) = stdout_of(urec().args(["list", "bash", "readline"]));
    assert_eq!(code, 0, "{out}");
    let nm = Command::new("nm")
        .args(["-D", "/usr/bin/bash"])
        .output()
        .expect("run nm");
    let nm = String::from_utf8_lossy(&nm.stdout);
    let addr = nm
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[2] == "readline").then(|| u64::from_str_radix(f[0], 16).ok())?
        })
        .expect("readline in nm -D");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains(&format!("vaddr {addr:#010x}  offset {addr:#010x}")),
        "{out}"
    );
}

#[test]
fn libc_marks_ifuncs() {
    let (out, code) = stdout_of(urec().args(["list", "c", "strlen"]));
    assert_eq!(code, 0, "{out}");
    assert!(line_for(&out, "strlen").ends_with("[ifunc]"), "{out}");
}

#[test]
fn bad_targets_exit_2() {
    let (out, code) = stdout_of(urec().args(["list", "/no/such/file"]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("no such file"), "{out}");
    let (out, code) = stdout_of(urec().args(["list", "/etc/passwd"]));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not an x86-64 ELF file"), "{out}");
    let (out, code) = stdout_of(urec().args(["list", "no-such-lib-or-program-xyz"]));
    assert_eq!(code, 2, "{out}");
}

#[test]
fn glob_matching_nothing_exits_1() {
    let (out, code) = stdout_of(urec().args(["list", "bash", "zzz_no_such_*"]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no function matches"), "{out}");
}

/// A binary without symbol tables (`strip --strip-all`) still has the `.eh_frame` FDEs that
/// bound its functions: `urec list` lists those as `FILE+0xADDR`, at the addresses, offsets and
/// sizes the symbols gave before stripping, instead of "no functions".
#[test]
fn stripped_binary_lists_fde_bounded_functions() {
    let bin = fixture_named("fix-unstripped");
    let stripped = bin.with_file_name("fix-stripped");
    let out = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&stripped)
        .arg(&bin)
        .output()
        .expect("run strip");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (symbols, code) = stdout_of(urec().arg("list").arg(&bin).arg("fix_*"));
    assert_eq!(code, 0, "{symbols}");
    let (listed, code) = stdout_of(urec().arg("list").arg(&stripped));
    assert_eq!(code, 0, "{listed}");
    assert!(!listed.contains("no functions"), "{listed}");
    for f in ["fix_add", "fix_call3", "fix_static_helper", "fix_sum"] {
        // `vaddr 0x00401190  offset 0x00001190  size      4`, as the symbol said.
        let line = line_for(&symbols, f);
        let at = line.find("vaddr").expect("a vaddr column");
        let columns = line[at..].split(" [").next().unwrap_or_default().trim_end();
        let vaddr = u64::from_str_radix(
            columns
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.strip_prefix("0x"))
                .expect("a hex vaddr"),
            16,
        )
        .expect("hex vaddr");
        let name = format!("fix-stripped+{vaddr:#x}");
        let line = line_for(&listed, &name);
        assert!(line.contains(columns), "{f}: {columns:?} in {line:?}");
    }
    // The PLT's FDE bounds stubs, not a function of the binary.
    let sections = Command::new("readelf")
        .arg("-SW")
        .arg(&stripped)
        .output()
        .expect("run readelf");
    let sections = String::from_utf8_lossy(&sections.stdout);
    let plt = sections
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let at = f.iter().position(|w| *w == ".plt")?;
            u64::from_str_radix(f.get(at + 2)?, 16).ok()
        })
        .expect("a .plt section");
    assert!(
        !listed.contains(&format!("fix-stripped+{plt:#x} ")),
        "{plt:#x} in {listed}"
    );
    // The glob matches the names as listed.
    let (one, code) = stdout_of(urec().arg("list").arg(&stripped).arg("*+0x4011*"));
    assert_eq!(code, 0, "{one}");
    assert!(
        one.lines().all(|l| l.starts_with("fix-stripped+0x4011")),
        "{one}"
    );
}
