//! Resolution against real binaries: small C, C++ and Rust fixtures built here with gcc, g++
//! and rustc (PIE and non-PIE, a shared library, -O2, frame pointers or not, stripped), plus the
//! system's bash and libc. Ground truth comes from binutils (`objdump -dF` prints each
//! function's file offset; `nm` its address), never from urec-probe itself.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use urec_format::{ArgType, ProbeKind};
use urec_probe::{parse, resolve, Fetch, InsnHandling, Reg, Resolution, ResolveOptions, SpecError};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fixtures, built once per test run.
struct Bins {
    pie_fp: PathBuf,
    nopie_o2: PathBuf,
    stripped: PathBuf,
    lib: PathBuf,
    cxx: PathBuf,
    rust: PathBuf,
    rust_v0: PathBuf,
}

fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("urec-probe-fixtures");
        std::fs::create_dir_all(&dir).expect("create fixture dir");
        let fix = format!("{FIXTURES}/fix.c");
        let b = Bins {
            pie_fp: dir.join("fix-pie-fp"),
            nopie_o2: dir.join("fix-nopie-o2"),
            stripped: dir.join("fix-stripped"),
            lib: dir.join("libfixlib.so"),
            cxx: dir.join("fixcxx"),
            rust: dir.join("fixrs"),
            rust_v0: dir.join("fixrs-v0"),
        };
        run(Command::new("gcc")
            .args(["-O2", "-fPIE", "-pie", "-fno-omit-frame-pointer", "-o"])
            .arg(&b.pie_fp)
            .arg(&fix));
        run(Command::new("gcc")
            .args(["-O2", "-fno-pie", "-no-pie", "-fomit-frame-pointer", "-o"])
            .arg(&b.nopie_o2)
            .arg(&fix));
        // -rdynamic keeps the exported functions in .dynsym once .symtab is stripped.
        run(Command::new("gcc")
            .args(["-O2", "-rdynamic", "-o"])
            .arg(&b.stripped)
            .arg(&fix));
        run(Command::new("strip").arg(&b.stripped));
        run(Command::new("gcc")
            .args(["-O2", "-shared", "-fPIC", "-o"])
            .arg(&b.lib)
            .arg(format!("{FIXTURES}/fixlib.c")));
        run(Command::new("g++")
            .args(["-O2", "-o"])
            .arg(&b.cxx)
            .arg(format!("{FIXTURES}/fixcxx.cpp")));
        // The default (legacy) mangling, with its ::h<hash> suffix, and the v0 scheme.
        run(Command::new("rustc")
            .args(["-O", "--crate-name", "fixrs", "-o"])
            .arg(&b.rust)
            .arg(format!("{FIXTURES}/fixrs.rs")));
        run(Command::new("rustc")
            .args([
                "-O",
                "-C",
                "symbol-mangling-version=v0",
                "--crate-name",
                "fixrs",
                "-o",
            ])
            .arg(&b.rust_v0)
            .arg(format!("{FIXTURES}/fixrs.rs")));
        b
    })
}

/// The file offset binutils gives for a symbol: `objdump -dF --disassemble=SYM` prints
/// `<SYM> (File Offset: 0x...)`.
fn objdump_offset(bin: &Path, raw: &str) -> u64 {
    let out = run(Command::new("objdump")
        .arg("-dF")
        .arg(format!("--disassemble={raw}"))
        .arg(bin));
    let needle = format!("<{raw}> (File Offset: 0x");
    let line = out
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or_else(|| panic!("{raw} not in objdump output of {}", bin.display()));
    let hex = line
        .split(&needle)
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or("");
    u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad offset in {line:?}"))
}

/// A symbol's address per `nm` (or `nm -D`).
fn nm_addr(bin: &Path, raw: &str, dynamic: bool) -> u64 {
    let mut cmd = Command::new("nm");
    if dynamic {
        cmd.arg("-D");
    }
    let out = run(cmd.arg(bin));
    out.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            let (addr, _kind, name) = (it.next()?, it.next()?, it.next()?);
            let name = name.split('@').next()?;
            (name == raw).then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .unwrap_or_else(|| panic!("{raw} not in nm output of {}", bin.display()))
}

/// The mangled name of the first symbol whose name contains all `parts`.
fn mangled(bin: &Path, parts: &[&str]) -> String {
    run(Command::new("nm").arg(bin))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .find(|n| parts.iter().all(|p| n.contains(p)))
        .unwrap_or_else(|| panic!("no symbol with {parts:?} in {}", bin.display()))
        .to_string()
}

fn resolve_all(specs: &[&str]) -> Result<Resolution, SpecError> {
    let parsed: Result<Vec<_>, _> = specs.iter().map(|s| parse(s)).collect();
    resolve(&parsed?, &ResolveOptions::default())
}

fn one(spec: &str) -> urec_probe::ResolvedProbe {
    let mut r = resolve_all(&[spec]).unwrap_or_else(|e| panic!("{spec}: {e}"));
    assert_eq!(r.probes.len(), 1, "{spec}: {:?}", r.probes);
    r.probes.remove(0)
}

fn error(spec: &str) -> String {
    match resolve_all(&[spec]) {
        Ok(r) => panic!("{spec} should fail, got {:?}", r.probes),
        Err(e) => e.to_string(),
    }
}

fn spec(bin: &Path, func: &str) -> String {
    format!("{}:{func}", bin.display())
}

#[test]
fn pie_offsets_match_objdump() {
    let b = bins();
    for f in [
        "fix_add",
        "fix_sub",
        "fix_call1",
        "fix_call4",
        "fix_static_helper",
        "main",
    ] {
        let p = one(&spec(&b.pie_fp, f));
        assert_eq!(p.probe.offset.0, objdump_offset(&b.pie_fp, f), "{f}");
        assert_eq!(p.probe.vaddr.0, nm_addr(&b.pie_fp, f, false), "{f}");
        assert_eq!(p.probe.symbol, f);
        assert_eq!(p.probe.kind, ProbeKind::EntryReturn);
        assert_eq!(p.probe.id, 0);
        assert_eq!(p.probe.name, spec(&b.pie_fp, f));
        assert_eq!(
            Path::new(&p.probe.binary),
            std::fs::canonicalize(&b.pie_fp).unwrap_or_default()
        );
    }
}

#[test]
fn non_pie_offset_is_not_the_address() {
    // Non-PIE text is linked at 0x401000 from file offset 0x1000: vaddr != offset.
    let b = bins();
    let p = one(&spec(&b.nopie_o2, "fix_call2"));
    let vaddr = nm_addr(&b.nopie_o2, "fix_call2", false);
    assert_eq!(p.probe.vaddr.0, vaddr);
    assert_eq!(p.probe.offset.0, objdump_offset(&b.nopie_o2, "fix_call2"));
    assert_eq!(p.probe.offset.0, vaddr - 0x400000);
    // A raw address is an ELF virtual address, and gives the same probe.
    let q = one(&spec(&b.nopie_o2, &format!("{vaddr:#x}")));
    assert_eq!(q.probe.offset, p.probe.offset);
    assert_eq!(q.probe.symbol, "fix_call2");
    assert_eq!(q.probe.kind, ProbeKind::EntryReturn);
    // ... and the file offset used as an address is refused, not silently misused.
    let e = error(&spec(&b.nopie_o2, &format!("{:#x}", p.probe.offset.0)));
    assert!(e.contains("not in an executable segment"), "{e}");
}

#[test]
fn shared_library() {
    let b = bins();
    for f in ["fixlib_work", "fixlib_twice"] {
        let p = one(&spec(&b.lib, f));
        assert_eq!(p.probe.offset.0, objdump_offset(&b.lib, f), "{f}");
    }
}

#[test]
fn stripped_binary_uses_dynsym() {
    let b = bins();
    let p = one(&spec(&b.stripped, "fix_call3"));
    assert_eq!(p.probe.vaddr.0, nm_addr(&b.stripped, "fix_call3", true));
    assert_eq!(
        p.probe.offset.0,
        objdump_offset(&b.pie_fp, "fix_call3") - nm_addr(&b.pie_fp, "fix_call3", false)
            + p.probe.vaddr.0
    );
    // The static helper is gone with .symtab; the message says why.
    let e = error(&spec(&b.stripped, "fix_static_helper"));
    assert!(e.contains("no function \"fix_static_helper\""), "{e}");
    assert!(e.contains("stripped of .symtab"), "{e}");
}

#[test]
fn aliases_merge_into_one_probe() {
    let b = bins();
    let add = spec(&b.pie_fp, "fix_add");
    let alias = spec(&b.pie_fp, "fix_alias");
    let ret = format!("{add}%return r=$retval:s32");
    let r = resolve_all(&[&add, &alias, &ret]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.probes.len(), 1);
    let p = &r.probes[0].probe;
    assert_eq!(p.name, add);
    assert_eq!(p.specs, vec![add.clone(), alias.clone(), ret.clone()]);
    assert_eq!(p.kind, ProbeKind::EntryReturn);
    assert_eq!(p.args.len(), 1);
    assert!(p.args[0].at_return);
    // A glob matching both names makes one probe, named by the plainer alias.
    let r = resolve_all(&[&spec(&b.pie_fp, "fix_a*")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.probes.len(), 1);
    assert_eq!(r.probes[0].probe.symbol, "fix_add");
}

#[test]
fn libc_malloc_aliases_merge() {
    let r = resolve_all(&["libc:malloc", "libc:__libc_malloc", "c:malloc"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.probes.len(), 1);
    let p = &r.probes[0].probe;
    assert_eq!(p.name, "libc:malloc");
    assert_eq!(
        p.specs,
        vec!["libc:malloc", "libc:__libc_malloc", "c:malloc"]
    );
    let libc = std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").unwrap_or_default();
    assert_eq!(Path::new(&p.binary), libc);
    assert_eq!(p.vaddr.0, nm_addr(&libc, "malloc", true));
    assert!(p.build_id.as_ref().is_some_and(|b| b.0.len() == 20));
}

#[test]
fn ifunc_refused_with_implementations() {
    let b = bins();
    let e = error(&spec(&b.pie_fp, "fix_ifunc"));
    assert!(e.contains("fix_ifunc"), "{e}");
    assert!(e.contains("is an IFUNC"), "{e}");
    assert!(e.contains("__fix_ifunc_fast, __fix_ifunc_slow"), "{e}");
    // The resolver's own name is the same address: refused too.
    let e = error(&spec(&b.pie_fp, "fix_ifunc_resolver"));
    assert!(e.contains("is an IFUNC"), "{e}");
    // Stripped: the implementations are gone, and the message says so.
    let e = error(&spec(&b.stripped, "fix_ifunc"));
    assert!(e.contains("stripped of .symtab"), "{e}");
    // Globs skip IFUNCs with a warning.
    let r = resolve_all(&[&spec(&b.pie_fp, "*fix_ifunc*")]).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = r.probes.iter().map(|p| p.probe.symbol.as_str()).collect();
    assert_eq!(names, vec!["__fix_ifunc_fast", "__fix_ifunc_slow"]);
    assert_eq!(r.warnings.len(), 1);
    assert!(
        r.warnings[0].contains("skipped 1 IFUNC symbol (fix_ifunc)"),
        "{}",
        r.warnings[0]
    );
}

#[test]
fn libc_strlen_names_implementations() {
    let e = error("libc:strlen");
    assert!(e.contains("strlen"), "{e}");
    assert!(e.contains("IFUNC"), "{e}");
    // Debian's libc has no .symtab; with libc6-dbg installed the debug file names the
    // implementations, without it the message says the binary is stripped.
    assert!(
        e.contains("__strlen_avx2") || e.contains("stripped of .symtab"),
        "{e}"
    );
}

#[test]
fn bash_readline_matches_nm_dynamic() {
    let p = one("bash:readline");
    let bash = std::fs::canonicalize("/usr/bin/bash").unwrap_or_default();
    assert_eq!(Path::new(&p.probe.binary), bash);
    let vaddr = nm_addr(&bash, "readline", true);
    assert_eq!(p.probe.vaddr.0, vaddr);
    // Debian's bash maps its text identically (offset == vaddr).
    assert_eq!(p.probe.offset.0, vaddr);
    assert!(p.size > 0);
}

#[test]
fn cxx_names() {
    let b = bins();
    let m_int = mangled(&b.cxx, &["Klass", "method", "Ei"]);
    let p = one(&spec(&b.cxx, "ns::Klass::method(int)"));
    assert_eq!(p.probe.offset.0, objdump_offset(&b.cxx, &m_int));
    assert_eq!(p.probe.symbol, "ns::Klass::method(int)");
    // Quoted with a space, and mangled, give the same place.
    let q = one(&spec(&b.cxx, "'ns::Klass::method( int )'"));
    assert_eq!(q.probe.offset, p.probe.offset);
    let q = one(&spec(&b.cxx, &m_int));
    assert_eq!(q.probe.offset, p.probe.offset);
    // Without parameters: fine when unique, ambiguous for overloads.
    let single = mangled(&b.cxx, &["Klass", "single"]);
    let s = one(&spec(&b.cxx, "ns::Klass::single"));
    assert_eq!(s.probe.offset.0, objdump_offset(&b.cxx, &single));
    let e = error(&spec(&b.cxx, "ns::Klass::method"));
    assert!(e.contains("ambiguous"), "{e}");
    assert!(e.contains("ns::Klass::method(int)"), "{e}");
    assert!(e.contains("ns::Klass::method(double)"), "{e}");
    // Templates, and globs over demangled names.
    let t = one(&spec(&b.cxx, "ns::twice<int>(int)"));
    assert_eq!(
        t.probe.offset.0,
        objdump_offset(&b.cxx, &mangled(&b.cxx, &["twice"]))
    );
    let u = one(&spec(&b.cxx, "ns::twice<int>"));
    assert_eq!(u.probe.offset, t.probe.offset);
    let r = resolve_all(&[&spec(&b.cxx, "ns::Klass::*")]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.probes.len(), 3);
}

#[test]
fn rust_paths_without_hash() {
    let b = bins();
    let raw = mangled(&b.rust, &["5fixrs", "6module", "8function"]);
    assert!(
        raw.contains("17h"),
        "legacy mangling with hash expected: {raw}"
    );
    let p = one(&spec(&b.rust, "fixrs::module::function"));
    assert_eq!(p.probe.offset.0, objdump_offset(&b.rust, &raw));
    assert_eq!(p.probe.symbol, "fixrs::module::function");
    let q = one(&spec(&b.rust, &raw));
    assert_eq!(q.probe.offset, p.probe.offset);
    // v0 mangling (`_R...`).
    let raw = mangled(&b.rust_v0, &["_R", "5fixrs", "6module", "8function"]);
    let p = one(&spec(&b.rust_v0, "fixrs::module::function"));
    assert_eq!(p.probe.offset.0, objdump_offset(&b.rust_v0, &raw));
    assert_eq!(p.probe.symbol, "fixrs::module::function");
}

#[test]
fn offsets_inside_functions_are_entry_only() {
    let b = bins();
    let base = objdump_offset(&b.pie_fp, "fix_call1");
    let p = one(&spec(&b.pie_fp, "fix_call1+0x1 %ax"));
    assert_eq!(p.probe.offset.0, base + 1);
    assert_eq!(p.probe.kind, ProbeKind::Entry);
    assert_eq!(p.probe.name, spec(&b.pie_fp, "fix_call1+0x1"));
    assert!(!p.starts_with_push_rbp);
    assert!(!p.probe.args[0].at_return);
    let p = one(&spec(&b.pie_fp, "fix_call1+0"));
    assert_eq!(p.probe.kind, ProbeKind::EntryReturn);
    for (suffix, why) in [
        ("%return", "%return needs a function's first instruction"),
        (" $retval", "$retval needs a return probe"),
        (" +0($retval)", "$retval needs a return probe"),
        (" arg1", "ABI arguments are only where"),
    ] {
        let e = error(&spec(&b.pie_fp, &format!("fix_call1+0x1{suffix}")));
        assert!(e.contains(why), "{suffix}: {e}");
    }
    let e = error(&spec(&b.pie_fp, "fix_call1+0x10000"));
    assert!(e.contains("beyond fix_call1"), "{e}");
    // A raw address inside a function: entry-only too.
    let vaddr = nm_addr(&b.pie_fp, "fix_call1", false);
    let p = one(&spec(&b.pie_fp, &format!("{:#x}", vaddr + 1)));
    assert_eq!(p.probe.kind, ProbeKind::Entry);
    assert_eq!(p.probe.symbol, "fix_call1");
}

#[test]
fn args_when_fetched() {
    let b = bins();
    let p = one(&spec(
        &b.pie_fp,
        "fix_add a=arg1:s32 b=%si:u32 r=$retval:s32 c=$comm",
    ));
    let at: Vec<(&str, bool)> = p
        .probe
        .args
        .iter()
        .map(|a| (a.name.as_str(), a.at_return))
        .collect();
    assert_eq!(
        at,
        vec![("a", false), ("b", false), ("r", true), ("c", false)]
    );
    assert_eq!(p.fetches[0].lowered(), Fetch::Reg(Reg::Di));
    assert_eq!(p.fetches[2], Fetch::Retval);
    assert_eq!(p.probe.args[3].ty, ArgType::String);
    let p = one(&spec(&b.pie_fp, "fix_add%return r=$retval:s32 sp=%sp"));
    assert_eq!(p.probe.kind, ProbeKind::Return);
    assert!(p.probe.args.iter().all(|a| a.at_return));
    let e = error(&spec(&b.pie_fp, "fix_add%return arg1"));
    assert!(e.contains("ABI arguments are gone"), "{e}");
}

#[test]
fn first_instruction_and_frame_pointers() {
    let b = bins();
    let p = one(&spec(&b.pie_fp, "fix_call1"));
    assert!(p.binary_keeps_frame_pointers);
    // With frame pointers every non-leaf function opens with push %rbp (after endbr64 when
    // the compiler emits CET markers).
    assert!(p.starts_with_push_rbp);
    let bytes = run(Command::new("objdump")
        .arg("-d")
        .arg("--disassemble=fix_call1")
        .arg(&b.pie_fp));
    let first = bytes.lines().find(|l| l.contains("\t")).unwrap_or("");
    let expected = if first.contains("endbr64") {
        InsnHandling::SingleStepped
    } else {
        InsnHandling::Emulated
    };
    assert_eq!(p.first_insn, expected, "{first}");
    let q = one(&spec(&b.nopie_o2, "fix_call1"));
    assert!(!q.binary_keeps_frame_pointers);
    assert!(!q.starts_with_push_rbp);
}

#[test]
fn bpftrace_prefixes_resolve_like_urec_specs() {
    // `uprobe:` is the default entry + return probe and merges with the plain spec.
    let r = resolve_all(&["uprobe:libc:malloc", "libc:malloc"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.probes.len(), 1);
    let p = &r.probes[0].probe;
    assert_eq!(p.name, "libc:malloc");
    assert_eq!(p.kind, ProbeKind::EntryReturn);
    assert_eq!(p.specs, vec!["uprobe:libc:malloc", "libc:malloc"]);
    let b = bins();
    let p = one(&format!("uretprobe:{}", spec(&b.pie_fp, "fix_add")));
    assert_eq!(p.probe.kind, ProbeKind::Return);
    assert_eq!(p.probe.offset.0, objdump_offset(&b.pie_fp, "fix_add"));
    // `uretprobe:` is `%return`: refused where a return probe would be.
    let e = error(&format!("uretprobe:{}", spec(&b.pie_fp, "fix_call1+0x1")));
    assert!(e.contains("needs a function's first instruction"), "{e}");
}

#[test]
fn library_short_names() {
    let libc = std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").unwrap_or_default();
    for t in ["c", "libc", "libc.so.6"] {
        let p = one(&format!("{t}:free"));
        assert_eq!(Path::new(&p.probe.binary), libc, "{t}");
        assert_eq!(p.probe.name, format!("{t}:free"));
    }
}

#[test]
fn errors() {
    let b = bins();
    let e = error("/no/such/binary:main");
    assert!(
        e.contains("cannot find \"/no/such/binary\": no such file"),
        "{e}"
    );
    let e = error("no-such-program-or-lib:main");
    assert!(e.contains("not a path, not a program on PATH"), "{e}");
    let e = error("/etc/passwd:main");
    assert!(e.contains("/etc/passwd is not an x86-64 ELF file"), "{e}");
    let e = error(&spec(&b.pie_fp, "fix_cal1"));
    assert!(e.contains("close names: fix_call1, "), "{e}");
    let e = error(&spec(&b.pie_fp, "fix_nothing*"));
    assert!(e.contains("no function in"), "{e}");
    assert!(e.contains("matches \"fix_nothing*\""), "{e}");
    // Parse errors come out of resolve_all's parse step unchanged.
    let e = error(&spec(&b.pie_fp, "fix_add arg0"));
    assert!(e.contains("count from 1"), "{e}");
}

#[test]
fn huge_globs_need_force() {
    let e = error("libc:*");
    assert!(e.contains("more than 1000"), "{e}");
    assert!(e.contains("--force"), "{e}");
    let parsed = parse("libc:*").unwrap_or_else(|e| panic!("{e}"));
    let r = resolve(
        &[parsed],
        &ResolveOptions {
            force: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.probes.len() > 1000, "{}", r.probes.len());
    // Ids are dense, in order.
    assert!(r
        .probes
        .iter()
        .enumerate()
        .all(|(i, p)| p.probe.id == i as u32));
}

/// Hand-written USDT notes (laid out as sys/sdt.h writes them) in a shared library, one per
/// place a semaphore can point to: only `.probes`-like writable data nothing else writes is
/// counted. The kernel adds 1 to the semaphore of every process mapping the file, so one in
/// the dynamic linker's tables or in read-only data would corrupt the program or fail.
const SEMAPHORES_S: &str = r#"
	.text
	.globl f
	.type f,@function
f:
980:	nop
981:	nop
982:	nop
983:	nop
984:	nop
	ret
	.size f, .-f

	.section .probes,"aw",@progbits
sem_ok:	.2byte 0
	.section .data.rel.ro,"aw",@progbits
sem_relro:	.2byte 0
	.section .rodata
sem_ro:	.2byte 0
	.data
	.balign 8
sem_reloc:	.8byte f
	.bss
sem_bss:	.2byte 0

.macro note pc, sema, name
	.pushsection .note.stapsdt,"?","note"
	.balign 4
	.4byte 992f-991f, 994f-993f, 3
991:	.asciz "stapsdt"
992:	.balign 4
993:	.8byte \pc
	.8byte 0
	.8byte \sema
	.asciz "t"
	.asciz "\name"
	.asciz ""
994:	.balign 4
	.popsection
.endm
	note 980b, sem_ok, ok
	note 981b, sem_relro, relro
	note 982b, sem_ro, ro
	note 983b, sem_reloc, reloc
	note 984b, sem_bss, bss
	.section .note.GNU-stack,"",@progbits
"#;

#[test]
fn usdt_semaphores_only_in_writable_data_nothing_else_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("sem.S");
    std::fs::write(&src, SEMAPHORES_S).expect("write sem.S");
    let lib = dir.path().join("libsem.so");
    run(Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src));
    let usdt = |name: &str| format!("usdt:{}:t:{name}", lib.display());
    assert!(one(&usdt("ok")).ref_ctr_offset.is_some());
    for (name, why) in [
        (
            "relro",
            "it lies in .data.rel.ro, which holds addresses the dynamic linker fills in",
        ),
        ("ro", "it is in a read-only segment"),
        ("reloc", "the dynamic linker writes an address at"),
        ("bss", "not in the file-backed part of a segment"),
    ] {
        let e = error(&usdt(name));
        assert!(
            e.contains(&format!("usdt:t:{name}: its semaphore")) && e.contains(why),
            "{name}: {e}"
        );
    }
    // A glob keeps the good site and says which it skipped.
    let r = resolve_all(&[&usdt("*")]).expect("glob");
    assert_eq!(r.probes.len(), 1);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("skipped 4 USDT sites that cannot be probed")),
        "{:?}",
        r.warnings
    );
}
