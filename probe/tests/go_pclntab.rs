//! Go binaries whose symbol table is gone (`-ldflags='-s -w'`): `urec list` and specs by name
//! find their functions through Go's own table, at the addresses the unstripped build's
//! `.symtab` gives; and in a cgo binary only the Go functions get Go's placement (C functions
//! keep their uretprobe). Built here with the local Go toolchain.

use std::path::Path;
use std::process::Command;

use urec_format::ProbeKind;
use urec_probe::{list, parse, resolve, Fetch, Reg, ResolveOptions};

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
	fmt.Println(t.Method(2))
}
"#;

const CGO_PROGRAM: &str = r#"package main

/*
int c_leaf(int x) { return x + 1; }
*/
import "C"
import "fmt"

//go:noinline
func Leaf(x int) int {
	return x*2 + 1
}

func main() {
	fmt.Println(Leaf(1) + int(C.c_leaf(2)))
}
"#;

/// A function's address in `nm`'s output for the unstripped build.
fn nm(bin: &Path, name: &str) -> u64 {
    let out = Command::new("nm").arg(bin).output().expect("nm");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            let addr = w.next()?;
            let _kind = w.next()?;
            (w.next()? == name).then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .unwrap_or_else(|| panic!("{name} not in nm {}", bin.display()))
}

#[test]
fn stripped_go_binaries_list_and_resolve_by_name() {
    if !go::have_go() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [("plain", None), ("pie", Some("-buildmode=pie"))] {
        let mut args: Vec<&str> = extra.into_iter().collect();
        let full = go::build_go(dir.path(), name, PROGRAM, &args, false);
        args.push("-ldflags=-s -w");
        let stripped = go::build_go(dir.path(), &format!("{name}-s-w"), PROGRAM, &args, false);
        let target = stripped.to_str().unwrap();

        let listed = list(target, Some("main.*")).unwrap();
        let names: Vec<&str> = listed.iter().map(|f| f.name.as_str()).collect();
        assert!(names.contains(&"main.Leaf"), "{name}: {names:?}");
        assert!(names.contains(&"main.(*T).Method"), "{name}: {names:?}");
        let leaf = listed.iter().find(|f| f.name == "main.Leaf").unwrap();
        assert_eq!(leaf.vaddr.0, nm(&full, "main.Leaf"), "{name}");
        assert!(leaf.size > 0);
        assert!(
            list(target, None).unwrap().len() > 500,
            "{name}: the runtime too"
        );

        for func in ["main.Leaf", "main.(*T).Method"] {
            let spec = parse(&format!("{target}:{func}")).unwrap();
            let r = resolve(&[spec], &ResolveOptions::default())
                .unwrap_or_else(|e| panic!("{name}: {func}: {e}"));
            let p = &r.probes[0];
            assert_eq!(p.probe.vaddr.0, nm(&full, func), "{name}: {func}");
            assert_eq!(p.probe.symbol, func);
            let go = p.go.as_ref().expect("Go's placement");
            let rets = go.returns.as_ref().expect("its rets");
            assert!(!rets.is_empty());
            assert_eq!(p.probe.kind, ProbeKind::EntryReturn);
        }
    }
}

/// With its section headers cut off (as `sstrip` does), the table is found by its magic, and
/// the binary still counts as Go.
#[test]
fn without_section_headers_the_table_is_found_by_its_magic() {
    if !go::have_go() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let full = go::build_go(dir.path(), "full", PROGRAM, &[], false);
    let stripped = go::build_go(dir.path(), "s-w", PROGRAM, &["-ldflags=-s -w"], false);
    let mut bytes = std::fs::read(&stripped).unwrap();
    // e_shoff, e_shnum, e_shstrndx of an ELF64 header.
    bytes[0x28..0x30].fill(0);
    bytes[0x3c..0x40].fill(0);
    let cut = dir.path().join("no-sections");
    std::fs::write(&cut, &bytes).unwrap();
    let target = cut.to_str().unwrap();
    let listed = list(target, Some("main.Leaf")).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].vaddr.0, nm(&full, "main.Leaf"));
    let spec = parse(&format!("{target}:main.Leaf")).unwrap();
    let r = resolve(&[spec], &ResolveOptions::default()).unwrap();
    assert!(
        r.probes[0].go.is_some(),
        "Go's placement without section headers"
    );
}

#[test]
fn cgo_c_functions_keep_uretprobes() {
    if !go::have_go() {
        return;
    }
    if Command::new("gcc").arg("--version").output().is_err() {
        eprintln!("skipped: no gcc for cgo");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = go::build_go(dir.path(), "cgo", CGO_PROGRAM, &[], true);
    let target = bin.to_str().unwrap();
    let resolve_one = |func: &str| {
        let spec = parse(&format!("{target}:{func}")).unwrap();
        resolve(&[spec], &ResolveOptions::default())
            .unwrap_or_else(|e| panic!("{func}: {e}"))
            .probes
            .remove(0)
    };
    let go = resolve_one("main.Leaf x=arg1");
    assert!(go.go.is_some(), "main.Leaf is Go code");
    assert_eq!(go.fetches, [Fetch::Reg(Reg::Ax)], "Go's register ABI");
    let c = resolve_one("c_leaf x=arg1");
    assert!(c.go.is_none(), "c_leaf is C code: a plain uretprobe");
    assert_eq!(c.probe.kind, ProbeKind::EntryReturn);
    assert_eq!(
        c.fetches,
        [Fetch::Arg(1)],
        "the C ABI, lowered to %di later"
    );
}
