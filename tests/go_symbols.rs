//! A stripped Go binary (`-ldflags='-s -w'`: no `.symtab`, no DWARF) reports like an unstripped
//! one: its frames are named from Go's function table, by `report` reading the binary, and by
//! the symbols step (`archive`), whose names then stand in for the binary (`--symfs EMPTY`).
//! The recording is crafted (no root needed): a stack inside the binary's mapping, whose
//! caller frame is code inlined into its function (named from Go's inline tree).

mod common;

use std::path::Path;

use common::{urec, urec_ok};

const PROGRAM: &str = r#"package main

import (
	"fmt"
	"os"
)

//go:noinline
func Leaf(x int) int {
	return x*2 + 1
}

// Inlined into Method: the call of Leaf is in its code.
func middle(x int) int {
	return Leaf(x) + 1
}

type T struct{ n int }

//go:noinline
func (t *T) Method(x int) int {
	return t.n + middle(x)
}

func main() {
	t := &T{n: len(os.Args)}
	fmt.Println(t.Method(2))
}
"#;

/// A recording of three calls of `main.Leaf` from `main.(*T).Method` in `bin`, mapped as the
/// kernel maps a non-PIE Go binary (its text segment at its link address).
fn recording(path: &Path, bin: &Path) {
    use urec_format::*;
    let target = bin.to_str().unwrap();
    let funcs = urec_probe::list(target, Some("main.*")).unwrap();
    let leaf = funcs.iter().find(|f| f.name == "main.Leaf").unwrap();
    let method = funcs.iter().find(|f| f.name == "main.(*T).Method").unwrap();
    let bytes = std::fs::read(bin).unwrap();
    let header = Header {
        host: "h".into(),
        kernel: "6.18.0".into(),
        arch: "x86_64".into(),
        command: vec!["urec".into(), "record".into()],
        workload: Some(vec![target.into()]),
        start_unix_ns: 0,
        start_monotonic_ns: 0,
    };
    let file = std::fs::File::create(path).unwrap();
    let mut w = Writer::with_options(file, &header, WriterOptions::default()).unwrap();
    w.write(&Record::Probe(Probe {
        id: 0,
        name: format!("{target}:main.Leaf"),
        specs: vec![format!("{target}:main.Leaf")],
        binary: target.into(),
        build_id: None,
        symbol: "main.Leaf".into(),
        vaddr: leaf.vaddr,
        offset: leaf.offset,
        kind: ProbeKind::EntryReturn,
        stack_mode: StackMode::FramePointer,
        args: Vec::new(),
        site: None,
    }))
    .unwrap();
    w.write(&Record::Process(Process {
        pid: 7,
        ppid: 1,
        comm: "gostripped".into(),
        exe: target.into(),
        start_ns: Some(0),
        ..Default::default()
    }))
    .unwrap();
    // The text segment: file offset 0 at its link address (leaf.vaddr - leaf.offset).
    let base = leaf.vaddr.0 - leaf.offset.0;
    w.write(&Record::Mapping(Mapping {
        pid: 7,
        time_ns: 0,
        start: Avma(base),
        end: Avma(base + bytes.len() as u64),
        offset: FileOffset(0),
        path: target.into(),
        dev: 0,
        inode: 0,
        build_id: None,
    }))
    .unwrap();
    // The return address of Method's call of Leaf (a `call rel32` to it), in inlined code.
    let code = &bytes[method.offset.0 as usize..(method.offset.0 + method.size) as usize];
    let ret = (0..code.len().saturating_sub(4))
        .find(|&i| {
            code[i] == 0xe8 && {
                let rel = i32::from_le_bytes(code[i + 1..i + 5].try_into().unwrap());
                let next = method.vaddr.0 + i as u64 + 5;
                next.wrapping_add(rel as i64 as u64) == leaf.vaddr.0
            }
        })
        .map(|i| method.vaddr.0 + i as u64 + 5)
        .expect("a call of main.Leaf in main.(*T).Method");
    w.write(&Record::Stack(Stack {
        id: 0,
        frames: vec![Avma(leaf.vaddr.0), Avma(ret)],
        truncated: false,
        python: Vec::new(),
        python_truncated: false,
    }))
    .unwrap();
    common::recording::write_three_calls_and_finish(w);
}

fn folded(data: &Path, extra: &[&str]) -> String {
    let mut args = vec!["report", "--folded", "-", "-i", data.to_str().unwrap()];
    args.extend(extra);
    urec_ok(&args)
}

#[test]
fn a_stripped_go_binary_reports_its_function_names() {
    if !common::go::have_go() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = common::go::build_go(
        dir.path(),
        "gostripped",
        PROGRAM,
        &["-ldflags=-s -w"],
        false,
    );
    let data = dir.path().join("go.data");
    recording(&data, &bin);
    let out = folded(&data, &[]);
    assert!(
        out.contains("main.(*T).Method;main.middle;main.Leaf 3"),
        "names from .gopclntab:\n{out}"
    );

    // The same binary with its section headers cut off (as `sstrip` does): found by magic.
    let mut bytes = std::fs::read(&bin).unwrap();
    bytes[0x28..0x30].fill(0); // e_shoff
    bytes[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
    let cut = dir.path().join("gonosections");
    std::fs::write(&cut, &bytes).unwrap();
    let cut_data = dir.path().join("cut.data");
    recording(&cut_data, &cut);
    let out = folded(&cut_data, &[]);
    assert!(
        out.contains("main.(*T).Method;main.middle;main.Leaf 3"),
        "names from a table found by its magic:\n{out}"
    );

    // The symbols step embeds them, file:line included: reported without the binary.
    let o = urec(&["archive", "-i", data.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("with file:line"), "{stderr}");
    let empty = tempfile::tempdir().unwrap();
    let out = folded(&data, &["--symfs", empty.path().to_str().unwrap()]);
    assert!(
        out.contains("main.(*T).Method;main.middle;main.Leaf 3"),
        "embedded names:\n{out}"
    );
}
