//! Rebasing + symbolization against real ELF files built here from `tests/fixtures/` with gcc,
//! g++ and rustc: PIE, non-PIE, a shared library, stripped binaries with their debug info found
//! next to them, through `--debug-dir` by debuglink name and by build id, `.symtab`/`.dynsym`
//! fallbacks, an inline chain at -O2, C++ and Rust demangling, `--symfs` (strict: never this
//! host's files), build-id mismatches, an exec replacing a process image, a debug file alone
//! standing in for a deleted binary, files handed over by the recorder, and the precedence of
//! embedded symbols.
//!
//! Ground truth comes from the fixtures themselves, read with `object`: symbol addresses,
//! `PT_LOAD` segments (to build the `Mapping` records a recorder would write, at made-up load
//! bases) and the call instruction inside the inlined helper. Expected names and lines are
//! exact.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use object::{Object, ObjectSegment, ObjectSymbol, SegmentFlags};
use urec_format::{Avma, BuildId, FileOffset, Mapping, ProcessChange, ProcessEvent, Record};
use urec_report::rebase::AddressSpaces;
use urec_report::symbolize::{
    lookup_offset, EmbeddedBinary, EmbeddedFrame, EmbeddedSymbols, Frame, FrameName,
    SymbolizeOptions, Symbolizer, Unnamed,
};

const PIE_BASE: u64 = 0x5555_0000_0000;
const LIB_BASE: u64 = 0x7f00_0000_0000;
const PAGE: u64 = 0x1000;

/// The fixture directory, built once per test process; `None` (test skipped) when a compiler
/// is missing, unless `CI=true`.
fn fixtures() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(build_fixtures).as_deref()
}

macro_rules! fixtures_or_skip {
    () => {
        match fixtures() {
            Some(dir) => dir,
            None => return,
        }
    };
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn build_fixtures() -> Option<PathBuf> {
    let missing: Vec<_> = ["gcc", "g++", "rustc", "objcopy", "strip"]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    if !missing.is_empty() {
        let msg = format!("symbolization fixtures need {missing:?}");
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("skipping: {msg}");
        return None;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // A static is never dropped, so the directory outlives the process: named by pid, and
    // those of processes that are gone are removed here.
    let parent = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("urec-symbolize-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let d = &parent.join(format!("urec-symbolize-{}", std::process::id()));
    let _ = fs::remove_dir_all(d);
    fs::create_dir_all(d).unwrap();
    let s = |f: &str| src.join(f);
    let o = |f: &str| d.join(f);
    for sub in [
        "dl",
        "dl2/bin",
        "dl2/debug",
        "bid",
        "symfs/nonexistent/urec-test",
        "symfs2",
    ] {
        fs::create_dir_all(o(sub)).unwrap();
    }
    let gcc = |args: &[&str], input: &Path, out: &Path| {
        run(Command::new("gcc")
            .args(args)
            .arg("-Wl,--build-id")
            .arg(input)
            .arg("-o")
            .arg(out));
    };
    gcc(&["-O2", "-g", "-fPIE", "-pie"], &s("prog.c"), &o("pie"));
    gcc(
        &["-O2", "-g", "-fno-pie", "-no-pie"],
        &s("prog.c"),
        &o("nopie"),
    );
    gcc(&["-O2", "-fPIE", "-pie"], &s("prog.c"), &o("nodebug"));
    gcc(
        &["-O2", "-g", "-shared", "-fPIC"],
        &s("lib.c"),
        &o("libfix.so"),
    );
    run(Command::new("g++")
        .args(["-O2", "-g", "-Wl,--build-id"])
        .arg(s("klass.cpp"))
        .arg("-o")
        .arg(o("klass")));
    run(Command::new("rustc")
        .args([
            "--edition",
            "2021",
            "-C",
            "opt-level=2",
            "-g",
            "--crate-name",
            "mycrate",
        ])
        .args(["-C", "link-arg=-Wl,--build-id"])
        .arg(s("rust_fn.rs"))
        .arg("-o")
        .arg(o("rustprog")));

    let objcopy = |args: &[&str]| run(Command::new("objcopy").current_dir(d).args(args));
    let strip = |args: &[&str]| run(Command::new("strip").current_dir(d).args(args));
    // Stripped, debug file next to it, found by debuglink.
    objcopy(&["--only-keep-debug", "pie", "dl/pie.debug"]);
    strip(&["--strip-all", "-o", "dl/pie_stripped", "pie"]);
    objcopy(&["--add-gnu-debuglink=dl/pie.debug", "dl/pie_stripped"]);
    // Stripped of debug info only (-g), debug file found by debuglink name in --debug-dir.
    objcopy(&["--only-keep-debug", "pie", "dl2/debug/pie.debug"]);
    strip(&["-g", "-o", "dl2/bin/pie_stripped", "pie"]);
    objcopy(&[
        "--add-gnu-debuglink=dl2/debug/pie.debug",
        "dl2/bin/pie_stripped",
    ]);
    // Stripped without a debuglink: only the build id leads to the debug file.
    strip(&["--strip-all", "-o", "bid/pie_nolink", "pie"]);
    let rel = build_id_rel(&elf(&o("pie")).build_id);
    let bid_debug = o("bid/dbg").join(format!("{rel}.debug"));
    fs::create_dir_all(bid_debug.parent().unwrap()).unwrap();
    fs::copy(o("dl/pie.debug"), &bid_debug).unwrap();
    // Stripped of everything, no debug file anywhere.
    strip(&["--strip-all", "-o", "bare", "pie"]);
    strip(&["--strip-all", "-o", "libstripped.so", "libfix.so"]);
    // --symfs copies.
    fs::copy(o("pie"), o("symfs/nonexistent/urec-test/pie")).unwrap();
    fs::copy(o("pie"), o("symfs2/pie")).unwrap();
    Some(d.clone())
}

/// What the tests need to know about a fixture, read with `object`.
struct ElfFacts {
    path: PathBuf,
    data: Vec<u8>,
    build_id: BuildId,
    /// name → (vaddr, size)
    symbols: HashMap<String, (u64, u64)>,
    /// PT_LOAD: (file offset, vaddr, file size, mem size, executable)
    loads: Vec<(u64, u64, u64, u64, bool)>,
}

fn elf(path: &Path) -> ElfFacts {
    let data = fs::read(path).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    let build_id = BuildId(
        obj.build_id()
            .unwrap()
            .expect("fixture has a build id")
            .to_vec(),
    );
    let symbols = obj
        .symbols()
        .filter_map(|s| Some((s.name().ok()?.to_string(), (s.address(), s.size()))))
        .collect();
    let loads = obj
        .segments()
        .map(|seg| {
            let (off, filesz) = seg.file_range();
            let exec =
                matches!(seg.flags(), SegmentFlags::Elf { p_flags, .. } if p_flags.0 & 1 != 0);
            (off, seg.address(), filesz, seg.size(), exec)
        })
        .collect();
    drop(obj);
    ElfFacts {
        path: path.to_path_buf(),
        data,
        build_id,
        symbols,
        loads,
    }
}

impl ElfFacts {
    fn sym(&self, name: &str) -> (u64, u64) {
        *self
            .symbols
            .get(name)
            .unwrap_or_else(|| panic!("{} has no symbol {name}", self.path.display()))
    }

    fn sym_starting(&self, prefix: &str) -> (u64, u64) {
        let hits: Vec<_> = self
            .symbols
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .collect();
        assert_eq!(hits.len(), 1, "symbols starting with {prefix}: {hits:?}");
        *hits[0].1
    }

    fn offset_of(&self, vaddr: u64) -> u64 {
        let &(off, va, _, _, _) = self
            .loads
            .iter()
            .find(|&&(_, va, fsz, _, _)| vaddr >= va && vaddr < va + fsz)
            .expect("vaddr in a PT_LOAD");
        off + (vaddr - va)
    }

    /// The executable mappings the kernel would create loading this file at `base` (0 for
    /// non-PIE), recorded under `path` with `build_id`.
    fn mappings(
        &self,
        pid: u32,
        time_ns: u64,
        base: u64,
        path: &str,
        build_id: Option<&BuildId>,
    ) -> Vec<Record> {
        self.loads
            .iter()
            .filter(|l| l.4)
            .map(|&(off, va, _, memsz, _)| {
                Record::Mapping(Mapping {
                    pid,
                    time_ns,
                    start: Avma(base + (va & !(PAGE - 1))),
                    end: Avma(base + ((va + memsz + PAGE - 1) & !(PAGE - 1))),
                    offset: FileOffset(off & !(PAGE - 1)),
                    path: path.into(),
                    dev: 0,
                    inode: 0,
                    build_id: build_id.cloned(),
                })
            })
            .collect()
    }

    /// The return address of the `call rel32` to `callee` inside `caller` (exactly one).
    fn return_address_of_call(&self, caller: &str, callee: &str) -> u64 {
        let (start, size) = self.sym(caller);
        let (target, _) = self.sym(callee);
        let off = self.offset_of(start) as usize;
        let code = &self.data[off..off + size as usize];
        let hits: Vec<u64> = (0..code.len().saturating_sub(4))
            .filter(|&i| code[i] == 0xe8)
            .filter_map(|i| {
                let rel = i32::from_le_bytes(code[i + 1..i + 5].try_into().ok()?);
                let next = start + i as u64 + 5;
                (next.wrapping_add(rel as i64 as u64) == target).then_some(next)
            })
            .collect();
        assert_eq!(hits.len(), 1, "calls to {callee} in {caller}: {hits:x?}");
        hits[0]
    }
}

fn build_id_rel(b: &BuildId) -> String {
    let hex = b.to_string();
    format!(".build-id/{}/{}", &hex[..2], &hex[2..])
}

/// 1-based line of the fixture source line containing `marker`.
fn line_of(file: &str, marker: &str) -> u32 {
    let text = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(file),
    )
    .unwrap();
    let hits: Vec<_> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(marker))
        .collect();
    assert_eq!(hits.len(), 1, "marker {marker} in {file}");
    hits[0].0 as u32 + 1
}

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

fn spaces(records: impl IntoIterator<Item = Record>) -> AddressSpaces {
    let mut s = AddressSpaces::new();
    for r in records {
        s.apply(&r);
    }
    s
}

fn names(frames: &[Frame]) -> Vec<&str> {
    frames.iter().map(Frame::display_name).collect()
}

/// Rebase (pid, time, addr) and symbolize it.
fn resolve(
    s: &AddressSpaces,
    sym: &mut Symbolizer,
    pid: u32,
    time: u64,
    addr: u64,
    ret: bool,
) -> Vec<Frame> {
    let m = s
        .lookup(pid, time, Avma(addr))
        .unwrap_or_else(|| panic!("no mapping for {addr:#x}"));
    sym.symbolize(m.path, m.build_id, m.offset, ret).to_vec()
}

fn symbolizer() -> Symbolizer {
    Symbolizer::new(SymbolizeOptions::default())
}

fn symbolizer_with(symfs: Option<PathBuf>, debug_dirs: Vec<PathBuf>) -> Symbolizer {
    Symbolizer::new(SymbolizeOptions {
        symfs,
        debug_dirs,
        debuginfod: false,
    })
}

/// The inline chain at the call to `leaf` inside `outer` of a prog.c build recorded as `path`
/// (with `pie`'s layout at PIE_BASE), checked exactly: names, inline flags and lines.
fn assert_inline_chain(sym: &mut Symbolizer, path: &str, build_id: Option<&BuildId>) {
    let dir = fixtures().unwrap();
    let pie = elf(&dir.join("pie"));
    let s = spaces(pie.mappings(1, 0, PIE_BASE, path, build_id));
    let ret = PIE_BASE + pie.return_address_of_call("outer", "leaf");
    let frames = resolve(&s, sym, 1, 10, ret, true);
    assert_eq!(names(&frames), ["outer", "helper"], "{frames:#?}");
    assert_eq!((frames[0].inline_depth, frames[1].inline_depth), (0, 1));
    assert_eq!(frames[0].line, Some(line_of("prog.c", "LINE:outer-call")));
    assert_eq!(frames[1].line, Some(line_of("prog.c", "LINE:helper-call")));
    for f in &frames {
        assert!(
            f.file.as_deref().is_some_and(|f| f.ends_with("prog.c")),
            "{f:?}"
        );
    }
}

#[test]
fn pie_function_entry_and_offset() {
    let dir = fixtures_or_skip!();
    let pie = elf(&dir.join("pie"));
    let path = p(&pie.path);
    let s = spaces(pie.mappings(1, 0, PIE_BASE, &path, Some(&pie.build_id)));
    let (leaf, _) = pie.sym("leaf");
    let m = s.lookup(1, 5, Avma(PIE_BASE + leaf)).unwrap();
    assert_eq!(
        (m.path, m.offset),
        (path.as_str(), FileOffset(pie.offset_of(leaf)))
    );
    assert_eq!(m.build_id, Some(&pie.build_id));
    let mut sym = symbolizer();
    let frames = resolve(&s, &mut sym, 1, 5, PIE_BASE + leaf, false);
    assert_eq!(
        frames,
        [Frame {
            name: FrameName::Function("leaf".into()),
            file: frames[0].file.clone(),
            // At -O2 the first instruction is the body's first statement.
            line: Some(line_of("prog.c", "LINE:leaf-body")),
            inline_depth: 0,
        }]
    );
    assert!(frames[0]
        .file
        .as_deref()
        .unwrap()
        .ends_with("tests/fixtures/prog.c"));
    assert_eq!(sym.take_warnings(), Vec::<String>::new());
}

#[test]
fn pie_inline_chain() {
    let dir = fixtures_or_skip!();
    let pie = elf(&dir.join("pie"));
    let mut sym = symbolizer();
    assert_inline_chain(&mut sym, &p(&pie.path), Some(&pie.build_id));
    assert_eq!(sym.take_warnings(), Vec::<String>::new());
}

#[test]
fn return_address_at_the_end_of_a_function() {
    let dir = fixtures_or_skip!();
    let pie = elf(&dir.join("pie"));
    let path = p(&pie.path);
    let s = spaces(pie.mappings(1, 0, PIE_BASE, &path, None));
    let (dies, size) = pie.sym("dies");
    // `dies` ends with `call abort`: its return address is one past the function.
    let end = PIE_BASE + dies + size;
    let mut sym = symbolizer();
    assert_eq!(names(&resolve(&s, &mut sym, 1, 5, end, true)), ["dies"]);
    assert_ne!(names(&resolve(&s, &mut sym, 1, 5, end, false)), ["dies"]);
}

#[test]
fn non_pie() {
    let dir = fixtures_or_skip!();
    let nopie = elf(&dir.join("nopie"));
    let path = p(&nopie.path);
    let s = spaces(nopie.mappings(1, 0, 0, &path, Some(&nopie.build_id)));
    let (leaf, _) = nopie.sym("leaf");
    assert!(
        leaf >= 0x400000,
        "non-PIE addresses are absolute: {leaf:#x}"
    );
    let m = s.lookup(1, 5, Avma(leaf)).unwrap();
    assert_eq!(m.offset, FileOffset(nopie.offset_of(leaf)));
    let mut sym = symbolizer();
    assert_eq!(names(&resolve(&s, &mut sym, 1, 5, leaf, false)), ["leaf"]);
    let ret = nopie.return_address_of_call("outer", "leaf");
    assert_eq!(
        names(&resolve(&s, &mut sym, 1, 5, ret, true)),
        ["outer", "helper"]
    );
}

#[test]
fn shared_libraries_dlopened_and_replaced() {
    let dir = fixtures_or_skip!();
    let pie = elf(&dir.join("pie"));
    let lib = elf(&dir.join("libfix.so"));
    let k = elf(&dir.join("klass"));
    let mut recs = pie.mappings(1, 0, PIE_BASE, &p(&pie.path), Some(&pie.build_id));
    // dlopen at t=20; at t=40 the range is reused by another file (dlclose + dlopen).
    recs.extend(lib.mappings(1, 20, LIB_BASE, &p(&lib.path), Some(&lib.build_id)));
    recs.extend(k.mappings(1, 40, LIB_BASE, &p(&k.path), Some(&k.build_id)));
    let s = spaces(recs);
    let (lib_func, _) = lib.sym("lib_func");
    let (leaf, _) = pie.sym("leaf");
    let m = s.lookup(1, 30, Avma(LIB_BASE + lib_func)).unwrap();
    assert_eq!(m.offset, FileOffset(lib.offset_of(lib_func)));
    let mut sym = symbolizer();
    assert_eq!(
        names(&resolve(&s, &mut sym, 1, 30, LIB_BASE + lib_func, false)),
        ["lib_func"]
    );
    assert_eq!(
        names(&resolve(&s, &mut sym, 1, 30, PIE_BASE + leaf, false)),
        ["leaf"]
    );
    let (method, _) = k.sym("_ZN2ns5Klass6methodEi");
    assert_eq!(
        names(&resolve(&s, &mut sym, 1, 50, LIB_BASE + method, false)),
        ["ns::Klass::method(int)"]
    );
    assert_eq!(
        s.lookup(1, 50, Avma(LIB_BASE + lib_func)).unwrap().path,
        p(&k.path)
    );
    // Just before the dlopen's record the earliest later mapping is taken (side-band time
    // stamps may trail the first event in a fresh mapping)...
    assert_eq!(
        s.lookup(1, 10, Avma(LIB_BASE + lib_func)).unwrap().path,
        p(&lib.path)
    );
    // ...but nothing is invented where no mapping ever was.
    assert!(s.lookup(1, 30, Avma(LIB_BASE - 0x1000)).is_none());
}

#[test]
fn stripped_with_debuglink_next_to_it() {
    let dir = fixtures_or_skip!();
    let pie = elf(&dir.join("pie"));
    let mut sym = symbolizer();
    assert_inline_chain(
        &mut sym,
        &p(&dir.join("dl/pie_stripped")),
        Some(&pie.build_id),
    );
    assert_eq!(sym.take_warnings(), Vec::<String>::new());
}

#[test]
fn stripped_with_debuglink_in_debug_dir() {
    let dir = fixtures_or_skip!();
    let pie = elf(&dir.join("pie"));
    let mut sym = symbolizer_with(None, vec![dir.join("dl2/debug")]);
    assert_inline_chain(
        &mut sym,
        &p(&dir.join("dl2/bin/pie_stripped")),
        Some(&pie.build_id),
    );
    // Without --debug-dir only the .symtab `strip -g` left is there: no inline chain, no line.
    let s = spaces(pie.mappings(1, 0, PIE_BASE, &p(&dir.join("dl2/bin/pie_stripped")), None));
    let ret = PIE_BASE + pie.return_address_of_call("outer", "leaf");
    let frames = resolve(&s, &mut symbolizer(), 1, 5, ret, true);
    assert_eq!(
        frames,
        [Frame {
            name: FrameName::Function("outer".into()),
            file: None,
            line: None,
            inline_depth: 0
        }]
    );
}

#[test]
fn stripped_found_by_build_id_in_debug_dir() {
    let dir = fixtures_or_skip!();
    let pie = elf(&dir.join("pie"));
    let path = p(&dir.join("bid/pie_nolink"));
    let mut sym = symbolizer_with(None, vec![dir.join("bid/dbg")]);
    assert_inline_chain(&mut sym, &path, Some(&pie.build_id));
    assert_eq!(sym.take_warnings(), Vec::<String>::new());
    // Without the debug dir, nothing names `leaf` in a --strip-all binary.
    let s = spaces(pie.mappings(1, 0, PIE_BASE, &path, Some(&pie.build_id)));
    let (leaf, _) = pie.sym("leaf");
    let off = pie.offset_of(leaf);
    let frames = resolve(&s, &mut symbolizer(), 1, 5, PIE_BASE + leaf, false);
    assert_eq!(names(&frames), [format!("pie_nolink+{off:#x}")]);
}

#[test]
fn symtab_dynsym_and_unresolved_fallbacks() {
    let dir = fixtures_or_skip!();
    let mut sym = symbolizer();
    // .symtab only (built without -g): the function, no line, no inline chain.
    let nodebug = elf(&dir.join("nodebug"));
    let s = spaces(nodebug.mappings(1, 0, PIE_BASE, &p(&nodebug.path), None));
    let ret = PIE_BASE + nodebug.return_address_of_call("outer", "leaf");
    let frames = resolve(&s, &mut sym, 1, 5, ret, true);
    assert_eq!(
        frames,
        [Frame {
            name: FrameName::Function("outer".into()),
            file: None,
            line: None,
            inline_depth: 0
        }]
    );
    // .dynsym only: an exported function of a --strip-all library.
    let lib = elf(&dir.join("libfix.so"));
    let s = spaces(lib.mappings(1, 0, LIB_BASE, &p(&dir.join("libstripped.so")), None));
    let (lib_func, _) = lib.sym("lib_func");
    assert_eq!(
        names(&resolve(&s, &mut sym, 1, 5, LIB_BASE + lib_func, false)),
        ["lib_func"]
    );
    // Nothing at all: binary+0xOFF with the recorded offset (not offset - 1).
    let pie = elf(&dir.join("pie"));
    let s = spaces(pie.mappings(1, 0, PIE_BASE, &p(&dir.join("bare")), None));
    let ret = pie.return_address_of_call("outer", "leaf");
    let frames = resolve(&s, &mut sym, 1, 5, PIE_BASE + ret, true);
    assert_eq!(names(&frames), [format!("bare+{:#x}", pie.offset_of(ret))]);
    assert_eq!(frames[0].unnamed_reason(), Some(Unnamed::NoSymbols));
    assert_eq!(sym.take_warnings(), Vec::<String>::new());
}

#[test]
fn cpp_method_demangled() {
    let dir = fixtures_or_skip!();
    let k = elf(&dir.join("klass"));
    let s = spaces(k.mappings(1, 0, PIE_BASE, &p(&k.path), Some(&k.build_id)));
    let (method, _) = k.sym("_ZN2ns5Klass6methodEi");
    let mut sym = symbolizer();
    let frames = resolve(&s, &mut sym, 1, 5, PIE_BASE + method, false);
    assert_eq!(names(&frames), ["ns::Klass::method(int)"]);
    assert_eq!(
        frames[0].line,
        Some(line_of("klass.cpp", "LINE:method-body"))
    );
}

#[test]
fn rust_function_demangled_without_hash() {
    let dir = fixtures_or_skip!();
    let r = elf(&dir.join("rustprog"));
    let s = spaces(r.mappings(1, 0, PIE_BASE, &p(&r.path), Some(&r.build_id)));
    let (f, _) = r.sym_starting("_ZN7mycrate6module8function17h");
    let mut sym = symbolizer();
    let frames = resolve(&s, &mut sym, 1, 5, PIE_BASE + f, false);
    assert_eq!(names(&frames), ["mycrate::module::function"]);
    assert!(frames[0].file.as_deref().unwrap().ends_with("rust_fn.rs"));
}

#[test]
fn symfs_full_path_then_basename() {
    let dir = fixtures_or_skip!();
    let pie = elf(&dir.join("pie"));
    let recorded = "/nonexistent/urec-test/pie";
    assert!(!Path::new(recorded).exists());
    let mut sym = symbolizer_with(Some(dir.join("symfs")), vec![]);
    assert_inline_chain(&mut sym, recorded, Some(&pie.build_id));
    let mut sym = symbolizer_with(Some(dir.join("symfs2")), vec![]);
    assert_inline_chain(&mut sym, recorded, Some(&pie.build_id));
    assert_eq!(sym.take_warnings(), Vec::<String>::new());
    // Without --symfs: not found, said once, frames are offsets.
    let s = spaces(pie.mappings(1, 0, PIE_BASE, recorded, Some(&pie.build_id)));
    let (leaf, _) = pie.sym("leaf");
    let mut sym = symbolizer();
    for _ in 0..2 {
        let frames = resolve(&s, &mut sym, 1, 5, PIE_BASE + leaf, false);
        assert_eq!(names(&frames), [format!("pie+{:#x}", pie.offset_of(leaf))]);
        assert_eq!(frames[0].unnamed_reason(), Some(Unnamed::BinaryMissing));
    }
    let w = sym.take_warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains(recorded) && w[0].contains(&pie.build_id.to_string()),
        "{w:?}"
    );
}

#[test]
fn build_id_mismatch_is_warned_and_not_used() {
    let dir = fixtures_or_skip!();
    let pie = elf(&dir.join("pie"));
    let nopie = elf(&dir.join("nopie"));
    // The recording was of `nopie`, but the file now at its recorded path is `pie`.
    let recorded = p(&pie.path);
    let s = spaces(nopie.mappings(1, 0, 0, &recorded, Some(&nopie.build_id)));
    let (leaf, _) = nopie.sym("leaf");
    let mut sym = symbolizer();
    let frames = resolve(&s, &mut sym, 1, 5, leaf, false);
    assert_eq!(
        names(&frames),
        [format!("pie+{:#x}", nopie.offset_of(leaf))]
    );
    assert_eq!(frames[0].unnamed_reason(), Some(Unnamed::BuildIdMismatch));
    let w = sym.take_warnings();
    let mismatch: Vec<_> = w.iter().filter(|w| w.contains("mismatch")).collect();
    assert_eq!(mismatch.len(), 1, "{w:?}");
    assert_eq!(w.len(), 1, "one warning per binary: {w:?}");
    assert!(
        mismatch[0].contains(&format!("the file at {recorded} is another version")),
        "{w:?}"
    );
    for needle in [
        recorded.clone(),
        pie.build_id.to_string(),
        nopie.build_id.to_string(),
    ] {
        assert!(mismatch[0].contains(&needle), "{needle} not in {w:?}");
    }
    // The right file, found by build id in a --debug-dir's .build-id tree, is used.
    let dbg = dir.join("mismatch-dbg");
    let target = dbg.join(build_id_rel(&nopie.build_id));
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    fs::copy(&nopie.path, &target).unwrap();
    let mut sym = symbolizer_with(None, vec![dbg]);
    assert_eq!(names(&resolve(&s, &mut sym, 1, 5, leaf, false)), ["leaf"]);
    let w = sym.take_warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("mismatch"), "{w:?}");
}

#[test]
fn same_address_before_and_after_exec() {
    let dir = fixtures_or_skip!();
    let pie = elf(&dir.join("pie"));
    let k = elf(&dir.join("klass"));
    let mut recs = pie.mappings(7, 0, PIE_BASE, &p(&pie.path), Some(&pie.build_id));
    recs.push(Record::ProcessEvent(ProcessEvent {
        pid: 7,
        time_ns: 100,
        change: ProcessChange::Exec {
            comm: "klass".into(),
            exe: p(&k.path),
        },
    }));
    recs.extend(k.mappings(7, 100, PIE_BASE, &p(&k.path), Some(&k.build_id)));
    // File order is not time order: the new image's mappings first.
    recs.reverse();
    let s = spaces(recs);
    let (method, _) = k.sym("_ZN2ns5Klass6methodEi");
    let addr = PIE_BASE + method;
    let before = s.lookup(7, 50, Avma(addr)).unwrap();
    let after = s.lookup(7, 150, Avma(addr)).unwrap();
    assert_eq!(before.path, p(&pie.path));
    assert_eq!(after.path, p(&k.path));
    assert_eq!(after.offset, FileOffset(k.offset_of(method)));
    let mut sym = symbolizer();
    assert_eq!(
        names(&resolve(&s, &mut sym, 7, 150, addr, false)),
        ["ns::Klass::method(int)"]
    );
    assert_ne!(
        names(&resolve(&s, &mut sym, 7, 50, addr, false)),
        ["ns::Klass::method(int)"]
    );
}

#[test]
fn special_mappings() {
    let mut sym = symbolizer();
    assert_eq!(
        names(sym.symbolize("[vdso]", None, FileOffset(0x123), true)),
        ["[vdso]"]
    );
    assert_eq!(
        sym.symbolize("[vdso]", None, FileOffset(0x123), true)[0].unnamed_reason(),
        Some(Unnamed::Special)
    );
    assert_eq!(
        names(sym.symbolize("", None, FileOffset(0x123), false)),
        ["[unknown]"]
    );
    assert_eq!(
        names(sym.symbolize("//anon", None, FileOffset(0), false)),
        ["[unknown]"]
    );
    assert_eq!(sym.take_warnings(), Vec::<String>::new());
}

/// Not a test: the numbers in docs/architecture.md ("Symbolization"). Run with
/// `cargo test --release -p urec-report --test symbolize -- --ignored --nocapture measure`;
/// `UREC_MEASURE_BINARIES` (colon-separated) overrides the binaries measured.
#[test]
#[ignore]
fn measure_symbolization_and_lookup_costs() {
    use object::SymbolKind;
    use std::time::Instant;
    let binaries = std::env::var("UREC_MEASURE_BINARIES")
        .unwrap_or_else(|_| "/lib/x86_64-linux-gnu/libc.so.6:/usr/bin/bash".into());
    for path in binaries.split(':').filter(|p| Path::new(p).exists()) {
        let data = fs::read(path).unwrap();
        let obj = object::File::parse(&*data).unwrap();
        let segs: Vec<_> = obj
            .segments()
            .map(|s| (s.file_range().0, s.address(), s.size()))
            .collect();
        // One address in the middle of each function.
        let mut offs: Vec<u64> = obj
            .symbols()
            .chain(obj.dynamic_symbols())
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 4)
            .filter_map(|s| {
                let a = s.address() + s.size() / 2;
                let seg = segs.iter().find(|x| a >= x.1 && a < x.1 + x.2)?;
                Some(seg.0 + a - seg.1)
            })
            .collect();
        offs.sort_unstable();
        offs.dedup();
        let mut sym = symbolizer();
        let t = Instant::now();
        let mut frames = 0;
        for &o in &offs {
            frames += sym.symbolize(path, None, FileOffset(o), true).len();
        }
        let first = t.elapsed();
        let t = Instant::now();
        for &o in &offs {
            sym.symbolize(path, None, FileOffset(o), true);
        }
        let cached = t.elapsed();
        let n = offs.len() as f64;
        println!(
            "{path}: {} addresses, {frames} frames; first {first:?} ({:.1} µs each), cached {cached:?} ({:.0} ns each)",
            offs.len(),
            first.as_secs_f64() * 1e6 / n,
            cached.as_secs_f64() * 1e9 / n
        );
    }
    let mut s = AddressSpaces::new();
    for pid in 0..2000u32 {
        for m in 0..60u64 {
            s.apply(&Record::Mapping(Mapping {
                pid,
                time_ns: m,
                start: Avma(LIB_BASE + m * 0x10_0000),
                end: Avma(LIB_BASE + m * 0x10_0000 + 0x8_0000),
                offset: FileOffset(0x1000),
                path: format!("/lib/l{m}.so"),
                dev: 0,
                inode: 0,
                build_id: None,
            }));
        }
    }
    let t = Instant::now();
    let mut hits = 0u64;
    for i in 0..1_000_000u64 {
        let addr = LIB_BASE + (i * 7 % 60) * 0x10_0000 + 0x1234;
        hits += u64::from(s.lookup((i % 2000) as u32, 1000, Avma(addr)).is_some());
    }
    let e = t.elapsed();
    assert_eq!(hits, 1_000_000);
    println!(
        "AddressSpaces: 120000 mappings, 1M lookups in {e:?} ({:.0} ns each)",
        e.as_secs_f64() * 1e9 / 1e6
    );
}

/// A recorded binary that is nowhere, with its debug file alone at `DIR/.build-id/xx/rest.debug`
/// (objcopy --only-keep-debug: no file layout), PIE and non-PIE.
#[test]
fn debug_file_alone_names_frames() {
    let dir = fixtures_or_skip!();
    let pie = elf(&dir.join("pie"));
    let recorded = "/nonexistent/urec-test/gone/pie";
    let mut sym = symbolizer_with(None, vec![dir.join("bid/dbg")]);
    assert_inline_chain(&mut sym, recorded, Some(&pie.build_id));
    assert_eq!(sym.take_warnings(), Vec::<String>::new());

    let nopie = elf(&dir.join("nopie"));
    let dbg = dir.join("nopie-dbg");
    let target = dbg.join(format!("{}.debug", build_id_rel(&nopie.build_id)));
    fs::create_dir_all(target.parent().unwrap()).unwrap();
    run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&nopie.path)
        .arg(&target));
    let recorded = "/nonexistent/urec-test/gone/nopie";
    let s = spaces(nopie.mappings(1, 0, 0, recorded, Some(&nopie.build_id)));
    let mut sym = symbolizer_with(None, vec![dbg]);
    for f in ["leaf", "outer", "main"] {
        let (addr, _) = nopie.sym(f);
        assert_eq!(names(&resolve(&s, &mut sym, 1, 5, addr, false))[0], f);
    }
    assert_eq!(sym.take_warnings(), Vec::<String>::new());
}

/// `--symfs DIR` stands for the recording host's root: a binary that exists on this host at
/// its recorded path is not used when DIR lacks it.
#[test]
fn strict_symfs_never_looks_on_the_host() {
    let dir = fixtures_or_skip!();
    let pie = elf(&dir.join("pie"));
    let empty = dir.join("emptyfs");
    fs::create_dir_all(&empty).unwrap();
    let recorded = p(&pie.path);
    let s = spaces(pie.mappings(1, 0, PIE_BASE, &recorded, Some(&pie.build_id)));
    let (leaf, _) = pie.sym("leaf");
    let mut sym = symbolizer_with(Some(empty), vec![]);
    let frames = resolve(&s, &mut sym, 1, 5, PIE_BASE + leaf, false);
    assert_eq!(names(&frames), [format!("pie+{:#x}", pie.offset_of(leaf))]);
    assert_eq!(frames[0].unnamed_reason(), Some(Unnamed::BinaryMissing));
    let w = sym.take_warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    for needle in [
        "searched --symfs, build-id directories",
        "--symfs DIR (a copy of the recording host's root)",
        &format!(
            "--debug-dir DIR holding DIR/{}.debug",
            build_id_rel(&pie.build_id)
        ),
        "`urec archive FILE` on the recording host",
        "-dbgsym package",
    ] {
        assert!(w[0].contains(needle), "{needle:?} not in {w:?}");
    }
    // An explicit --debug-dir still applies under --symfs.
    let mut sym = symbolizer_with(Some(dir.join("emptyfs")), vec![dir.join("bid/dbg")]);
    assert_inline_chain(&mut sym, &recorded, Some(&pie.build_id));
}

/// A file handed over by the recorder is used instead of any search, and still verified.
#[test]
fn provided_file_is_used_and_verified() {
    let dir = fixtures_or_skip!();
    let pie = elf(&dir.join("pie"));
    let recorded = "/nonexistent/urec-test/provided/pie (deleted)";
    let mut sym = symbolizer();
    sym.provide_file(
        recorded,
        Some(&pie.build_id),
        fs::File::open(&pie.path).unwrap(),
    );
    assert_inline_chain(&mut sym, recorded, Some(&pie.build_id));
    assert_eq!(sym.take_warnings(), Vec::<String>::new());
    // Another version handed over: not used, said.
    let mut sym = symbolizer();
    sym.provide_file(
        recorded,
        Some(&pie.build_id),
        fs::File::open(dir.join("nopie")).unwrap(),
    );
    let s = spaces(pie.mappings(1, 0, PIE_BASE, recorded, Some(&pie.build_id)));
    let (leaf, _) = pie.sym("leaf");
    let frames = resolve(&s, &mut sym, 1, 5, PIE_BASE + leaf, false);
    assert_eq!(frames[0].unnamed_reason(), Some(Unnamed::BuildIdMismatch));
    let w = sym.take_warnings();
    assert!(w.len() == 1 && w[0].contains("another version"), "{w:?}");
}

/// Embedded symbols name what local files cannot, and lose to local files that say more.
#[test]
fn embedded_symbols_precedence() {
    let dir = fixtures_or_skip!();
    let pie = elf(&dir.join("pie"));
    let (leaf, _) = pie.sym("leaf");
    let off = pie.offset_of(leaf);
    let ret = pie.return_address_of_call("outer", "leaf");
    let frame = |function: &str, line: Option<u32>| EmbeddedFrame {
        function: function.into(),
        file: line.map(|_| "host.c".into()),
        line,
    };
    let embedded = |path: &str| {
        EmbeddedSymbols::from_binaries(vec![EmbeddedBinary {
            path: path.into(),
            build_id: Some(pie.build_id.clone()),
            frames: [
                (off, vec![frame("leaf_on_host", Some(7))]),
                (
                    lookup_offset(FileOffset(pie.offset_of(ret)), true),
                    vec![frame("outer_on_host", None), frame("inlined_on_host", None)],
                ),
            ]
            .into(),
        }])
    };
    // No local file: the embedded frames, inline depths from their order, and no warning.
    let gone = "/nonexistent/urec-test/embedded/pie";
    let mut sym = symbolizer();
    sym.set_embedded(embedded(gone));
    let s = spaces(pie.mappings(1, 0, PIE_BASE, gone, Some(&pie.build_id)));
    let frames = resolve(&s, &mut sym, 1, 5, PIE_BASE + leaf, false);
    assert_eq!(names(&frames), ["leaf_on_host"]);
    assert_eq!(frames[0].line, Some(7));
    let frames = resolve(&s, &mut sym, 1, 5, PIE_BASE + ret, true);
    assert_eq!(names(&frames), ["outer_on_host", "inlined_on_host"]);
    assert_eq!(frames[1].inline_depth, 1);
    assert_eq!(sym.take_warnings(), Vec::<String>::new());
    // The local file has DWARF: it names both with lines, and wins.
    let here = p(&pie.path);
    let mut sym = symbolizer();
    sym.set_embedded(embedded(&here));
    let s = spaces(pie.mappings(1, 0, PIE_BASE, &here, Some(&pie.build_id)));
    assert_eq!(
        names(&resolve(&s, &mut sym, 1, 5, PIE_BASE + leaf, false)),
        ["leaf"]
    );
    // A local file with symbols but no lines (nodebug stands in at the recorded path with
    // pie's build id missing): the embedded frame with a line wins over a name without.
    let nodebug = elf(&dir.join("nodebug"));
    let (nleaf, _) = nodebug.sym("leaf");
    let path = p(&nodebug.path);
    let mut sym = symbolizer();
    sym.set_embedded(EmbeddedSymbols::from_binaries(vec![EmbeddedBinary {
        path: path.clone(),
        build_id: None,
        frames: [(nodebug.offset_of(nleaf), vec![frame("leaf", Some(3))])].into(),
    }]));
    let s = spaces(nodebug.mappings(1, 0, PIE_BASE, &path, None));
    let frames = resolve(&s, &mut sym, 1, 5, PIE_BASE + nleaf, false);
    assert_eq!((names(&frames), frames[0].line), (vec!["leaf"], Some(3)));
    // Without the embedded line, the local name stands.
    let (nouter, _) = nodebug.sym("outer");
    let frames = resolve(&s, &mut sym, 1, 5, PIE_BASE + nouter, false);
    assert_eq!((names(&frames), frames[0].line), (vec!["outer"], None));
}
