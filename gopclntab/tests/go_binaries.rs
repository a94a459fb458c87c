//! The table of binaries the local Go toolchain builds (plain, `-ldflags='-s -w'`, PIE, and
//! both), checked against the unstripped binary's `.symtab` (functions and bounds) and against
//! `go tool addr2line` (file:line).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use object::{Object, ObjectSection, ObjectSymbol};
use urec_gopclntab::{Pclntab, SECTION_NAMES};

#[path = "../../tests/common/go.rs"]
mod go;

const PROGRAM: &str = r#"package main

import (
	"fmt"
	"os"
)

//go:noinline
func Leaf(x int) int {
	return x*2 + 1
}

type T struct{ n int }

//go:noinline
func (t *T) Method(x int) int {
	return t.n + Leaf(x)
}

func main() {
	t := &T{n: len(os.Args)}
	s := 0
	for i := 0; i < 3; i++ {
		s += t.Method(i)
	}
	fmt.Println(s)
}
"#;

fn table(path: &Path) -> Pclntab {
    let bytes = std::fs::read(path).unwrap();
    let obj = object::File::parse(&*bytes).unwrap();
    let text = obj.section_by_name(".text").map(|s| s.address());
    let section = SECTION_NAMES
        .iter()
        .find_map(|n| obj.section_by_name(n))
        .expect("a .gopclntab section");
    Pclntab::parse(section.data().unwrap().to_vec(), text).unwrap()
}

/// The function symbols of an unstripped binary: (name, address) -> size. A name can be at
/// two addresses (a function and its ABI wrapper).
fn symtab(path: &Path) -> BTreeMap<(String, u64), u64> {
    let bytes = std::fs::read(path).unwrap();
    let obj = object::File::parse(&*bytes).unwrap();
    obj.symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
        .map(|s| ((s.name().unwrap().to_string(), s.address()), s.size()))
        .collect()
}

fn addr2line(bin: &Path, pcs: &[u64]) -> Vec<(String, String)> {
    let input: String = pcs.iter().map(|pc| format!("{pc:#x}\n")).collect();
    let mut child = Command::new("go")
        .args(["tool", "addr2line"])
        .arg(bin)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .env("GOCACHE", std::env::temp_dir().join("urec-test-gocache"))
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|c| (c[0].to_string(), c.get(1).unwrap_or(&"").to_string()))
        .collect()
}

#[test]
fn functions_bounds_and_lines_match_the_toolchain() {
    if !go::have_go() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut plain_lines = Vec::new();
    for (name, args, pie) in [
        ("plain", &[][..], false),
        ("pie", &["-buildmode=pie"][..], true),
    ] {
        let full = go::build_go(dir.path(), name, PROGRAM, args, false);
        let mut stripped_args = args.to_vec();
        stripped_args.push("-ldflags=-s -w");
        let stripped = go::build_go(
            dir.path(),
            &format!("{name}-stripped"),
            PROGRAM,
            &stripped_args,
            false,
        );
        let syms = symtab(&full);
        let t = table(&full);
        assert!(t.len() > 500, "{name}: {} functions", t.len());
        let mut checked = 0;
        for f in t.functions() {
            // Every function the table lists is a symbol at the same address, ending at or
            // before the next function's entry (the table counts the padding).
            let Some(&size) = syms.get(&(f.name.to_string(), f.entry)) else {
                continue;
            };
            let addr = f.entry;
            assert!(
                addr + size <= f.end,
                "{name}: {} ends at {:#x}",
                f.name,
                f.end
            );
            assert!(f.end - (addr + size) < 64, "{name}: {} padding", f.name);
            checked += 1;
        }
        assert!(
            checked * 10 >= t.len() * 9,
            "{name}: {checked} of {} in .symtab",
            t.len()
        );
        let leaf = t
            .functions()
            .find(|f| f.name == "main.Leaf")
            .expect("main.Leaf");
        assert!(syms.contains_key(&("main.Leaf".to_string(), leaf.entry)));
        assert!(t.functions().any(|f| f.name == "main.(*T).Method"));
        if pie {
            // Go links a PIE at 0x400000 too; its table is then relocated data.
            let bytes = std::fs::read(&full).unwrap();
            let obj = object::File::parse(&*bytes).unwrap();
            assert_eq!(obj.kind(), object::ObjectKind::Dynamic);
            assert!(obj.section_by_name(".data.rel.ro.gopclntab").is_some());
        }

        // The stripped build lists the same functions at the same addresses.
        assert!(symtab(&stripped).is_empty(), "-s drops .symtab");
        let ts = table(&stripped);
        let a: Vec<_> = t
            .functions()
            .map(|f| (f.name.into_owned(), f.entry, f.end))
            .collect();
        let b: Vec<_> = ts
            .functions()
            .map(|f| (f.name.into_owned(), f.entry, f.end))
            .collect();
        assert_eq!(a, b, "{name}: stripped and unstripped tables differ");

        // file:line of a spread of pcs, as Go's own addr2line reads them.
        let method = t
            .functions()
            .find(|f| f.name == "main.(*T).Method")
            .unwrap();
        let main = t.functions().find(|f| f.name == "main.main").unwrap();
        let mut pcs: Vec<u64> = Vec::new();
        for f in [&leaf, &method, &main] {
            pcs.extend((f.entry..f.end).step_by(3));
        }
        let fmt_fmt = t.functions().find(|f| f.name == "fmt.Fprintln").unwrap();
        pcs.extend((fmt_fmt.entry..fmt_fmt.end).step_by(7));
        let want = if pie {
            // `go tool addr2line` names nothing in a PIE: its lines are the plain build's,
            // function by function.
            plain_lines.clone()
        } else {
            addr2line(&full, &pcs)
        };
        assert_eq!(want.len(), pcs.len());
        for (pc, (func, fileline)) in pcs.iter().zip(&want) {
            let got_func = ts
                .find(*pc)
                .map(|f| f.name.into_owned())
                .unwrap_or_default();
            assert_eq!(&got_func, func, "{name}: function at {pc:#x}");
            let got = ts
                .line(*pc)
                .map(|(f, l)| format!("{f}:{l}"))
                // Go prints the padding after a function's code so.
                .unwrap_or_else(|| ":-1".into());
            assert_eq!(&got, fileline, "{name}: line at {pc:#x} in {func}");
        }
        if !pie {
            plain_lines = want;
        }
        let (file, line) = ts.line(leaf.entry).unwrap();
        assert!(file.ends_with("main.go"), "{file}");
        // A leaf without a stack check starts with its body (line 10).
        assert_eq!(line, 10, "main.Leaf's first instruction");
    }
}

/// Without section headers the table is found by its magic in the read-only segment.
#[test]
fn found_by_magic_without_section_headers() {
    if !go::have_go() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = go::build_go(dir.path(), "stripped", PROGRAM, &["-ldflags=-s -w"], false);
    let bytes = std::fs::read(&bin).unwrap();
    let obj = object::File::parse(&*bytes).unwrap();
    let text = obj.section_by_name(".text").unwrap().address();
    let want = obj
        .section_by_name(".gopclntab")
        .unwrap()
        .file_range()
        .unwrap()
        .0 as usize;
    let (at, t) = Pclntab::scan(&bytes, Some(text)).expect("found by magic");
    assert_eq!(at, want);
    assert!(t.functions().any(|f| f.name == "main.Leaf"));
}

const INLINING: &str = r#"package main

import (
	"fmt"
	"os"
)

func inner(x int) int {
	return x*3 + len(os.Args)
}

func middle(x int) int {
	return inner(x) + inner(x+1)
}

//go:noinline
func Outer(x int) int {
	return middle(x) * 2
}

func main() {
	fmt.Println(Outer(len(os.Args)))
}
"#;

/// `len` bytes of the file's image at `vaddr`, through its PT_LOAD segments.
fn reader(bytes: &[u8]) -> impl Fn(u64, usize) -> Option<Vec<u8>> + '_ {
    use object::ObjectSegment;
    let obj = object::File::parse(bytes).unwrap();
    let segs: Vec<(u64, u64, u64)> = obj
        .segments()
        .map(|s| (s.address(), s.file_range().0, s.file_range().1))
        .collect();
    move |vaddr, len| {
        let &(start, off, _) = segs
            .iter()
            .find(|&&(start, _, size)| vaddr >= start && vaddr + len as u64 <= start + size)?;
        let at = (off + vaddr - start) as usize;
        bytes.get(at..at + len).map(<[u8]>::to_vec)
    }
}

/// The inline chain at each pc as LLVM reads it from DWARF (`llvm-symbolizer`; binutils'
/// `addr2line -i` names the innermost frame of Go code by its symbol): (name, line) pairs,
/// outermost first.
fn dwarf_chains(bin: &Path, pcs: &[u64]) -> Vec<Vec<(String, u32)>> {
    let out = Command::new("llvm-symbolizer")
        .arg(format!("--obj={}", bin.display()))
        .args(pcs.iter().map(|pc| format!("{pc:#x}")))
        .output()
        .expect("llvm-symbolizer");
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let lines: Vec<&str> = block.lines().collect();
            let mut chain: Vec<(String, u32)> = lines
                .chunks(2)
                .map(|c| {
                    let line = c[1].rsplit(':').nth(1).and_then(|l| l.parse().ok());
                    (c[0].to_string(), line.unwrap_or(0))
                })
                .collect();
            chain.reverse();
            chain
        })
        .collect()
}

#[test]
fn inlined_frames_match_dwarf() {
    if !go::have_go() {
        return;
    }
    if Command::new("llvm-symbolizer")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no llvm-symbolizer to read DWARF inline chains");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut bins = Vec::new();
    for (name, flags) in [("full", ""), ("stripped", "-s -w")] {
        let ldflags = format!("-ldflags={flags}");
        bins.push(go::build_go(dir.path(), name, INLINING, &[&ldflags], false));
    }
    let full = &bins[0];
    let t = table(full);
    let outer = t.functions().find(|f| f.name == "main.Outer").unwrap();
    let pcs: Vec<u64> = (outer.entry..outer.end).collect();
    let want = dwarf_chains(full, &pcs);
    for bin in &bins {
        let bytes = std::fs::read(bin).unwrap();
        let obj = object::File::parse(&*bytes).unwrap();
        let t = table(bin);
        let pclntab = obj.section_by_name(".gopclntab").unwrap().address();
        let noptrdata = obj.section_by_name(".noptrdata").unwrap();
        let gofunc = t.find_gofunc(noptrdata.data().unwrap(), pclntab);
        assert!(gofunc.is_some(), "{}: moduledata.gofunc", bin.display());
        let read = reader(&bytes);
        let mut inlined = 0;
        for (pc, want) in pcs.iter().zip(&want) {
            if want.iter().any(|(n, _)| n == "??") {
                continue; // padding
            }
            let frames = t.frames(*pc, gofunc, &read).unwrap();
            let got: Vec<(String, u32)> = frames
                .iter()
                .map(|f| (f.name.to_string(), f.line.unwrap_or(0)))
                .collect();
            assert_eq!(&got, want, "{}: at {pc:#x}", bin.display());
            if got.len() == 3 {
                inlined += 1;
            }
        }
        assert!(
            inlined > 0,
            "main.inner inlined into main.middle into main.Outer"
        );
        // Without the image, the real function alone.
        let alone = t.frames(pcs[pcs.len() / 2], None, &|_, _| None).unwrap();
        assert_eq!(alone.len(), 1);
    }
}
