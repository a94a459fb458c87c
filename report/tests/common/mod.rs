//! Test helpers: synthetic recordings written with the format's Writer, and small C fixtures
//! built with the system compiler whose symbol addresses tests turn into stack addresses.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::{Object, ObjectSegment, ObjectSymbol};
use urec_format::*;

pub fn header() -> Header {
    Header {
        host: "testhost".into(),
        kernel: "6.18.0-test".into(),
        arch: "x86_64".into(),
        command: vec![
            "urec".into(),
            "record".into(),
            "-e".into(),
            "app:work".into(),
            "-a".into(),
        ],
        workload: None,
        start_unix_ns: 1_700_000_000_000_000_000,
        start_monotonic_ns: 1_000_000_000,
    }
}

/// Writes `records` after `header` into `path`, with small chunks so that tests exercise many.
pub fn write(path: &Path, header: &Header, records: &[Record]) {
    let file = BufWriter::new(File::create(path).expect("create recording"));
    let opts = WriterOptions {
        chunk_events: 64,
        ..WriterOptions::default()
    };
    let mut w = Writer::with_options(file, header, opts).expect("writer");
    for r in records {
        w.write(r).expect("write record");
    }
    w.finish().expect("finish");
}

pub fn probe(id: ProbeId, name: &str, binary: &str, symbol: &str, kind: ProbeKind) -> Record {
    Record::Probe(Probe {
        id,
        name: name.into(),
        specs: vec![name.into()],
        binary: binary.into(),
        build_id: None,
        symbol: symbol.into(),
        vaddr: Svma(0x1000),
        offset: FileOffset(0x1000),
        kind,
        stack_mode: StackMode::FramePointer,
        args: Vec::new(),
        site: None,
    })
}

pub fn process(pid: u32, comm: &str, start_ns: u64) -> Record {
    Record::Process(Process {
        pid,
        ppid: 1,
        comm: comm.into(),
        exe: format!("/bin/{comm}"),
        start_ns: Some(start_ns),
        ..Default::default()
    })
}

pub fn mapping(pid: u32, start: u64, end: u64, offset: u64, path: &str) -> Record {
    Record::Mapping(Mapping {
        pid,
        time_ns: 0,
        start: Avma(start),
        end: Avma(end),
        offset: FileOffset(offset),
        path: path.into(),
        dev: 0,
        inode: 0,
        build_id: None,
    })
}

pub fn stack(id: StackId, frames: &[u64], truncated: bool) -> Record {
    Record::Stack(Stack {
        id,
        frames: frames.iter().map(|&a| Avma(a)).collect(),
        truncated,
        python: Vec::new(),
        python_truncated: false,
    })
}

pub fn entry(probe: ProbeId, pid: u32, tid: u32, time_ns: u64, stack: Option<StackId>) -> Record {
    Record::Event(Event {
        goroutine: None,
        weight: 1,
        probe,
        kind: EventKind::Entry,
        pid,
        tid,
        cpu: 1,
        time_ns,
        stack,
        latency_ns: None,
        args: Vec::new(),
    })
}

pub fn ret(probe: ProbeId, pid: u32, tid: u32, time_ns: u64, latency_ns: Option<u64>) -> Record {
    Record::Event(Event {
        goroutine: None,
        weight: 1,
        probe,
        kind: EventKind::Return,
        pid,
        tid,
        cpu: 1,
        time_ns,
        stack: None,
        latency_ns,
        args: Vec::new(),
    })
}

pub fn lost(source: LostSource, probe: Option<ProbeId>, count: u64) -> Record {
    Record::Lost(Lost {
        source,
        probe,
        kind: None,
        count,
    })
}

pub fn finish(attach_ns: u64, stop_ns: u64) -> Record {
    Record::Finish(Finish {
        attach_ns,
        stop_ns,
        workload_status: None,
    })
}

/// Compiles C `source` into `dir/name` with `flags`; `None` (and a note) without a compiler.
pub fn build_c(dir: &Path, name: &str, source: &str, flags: &[&str]) -> Option<PathBuf> {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).expect("write C source");
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status();
    match status {
        Ok(s) if s.success() => Some(out),
        other => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("gcc failed: {other:?}");
            }
            eprintln!("skipping: gcc unavailable or failed: {other:?}");
            None
        }
    }
}

/// A binary's function symbols: name → (address, size).
pub fn symbols(path: &Path) -> HashMap<String, (u64, u64)> {
    let data = std::fs::read(path).expect("read ELF");
    let file = object::File::parse(&*data).expect("parse ELF");
    file.symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text)
        .filter_map(|s| Some((s.name().ok()?.to_string(), (s.address(), s.size()))))
        .collect()
}

/// The executable PT_LOAD of a binary: (page-aligned vaddr, page-aligned file offset, end vaddr).
pub fn text_segment(path: &Path) -> (u64, u64, u64) {
    let data = std::fs::read(path).expect("read ELF");
    let file = object::File::parse(&*data).expect("parse ELF");
    for seg in file.segments() {
        if let object::SegmentFlags::Elf { p_flags, .. } = seg.flags() {
            if p_flags & object::elf::PF_X != object::elf::ProgramFlags(0) {
                let (off, _) = seg.file_range();
                let vaddr = seg.address();
                let end = vaddr + seg.size();
                return (vaddr & !0xfff, off & !0xfff, (end + 0xfff) & !0xfff);
            }
        }
    }
    panic!("no executable segment in {}", path.display());
}
