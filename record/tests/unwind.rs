//! DWARF unwinding of captured stacks, without BPF: a C fixture built `-O2
//! -fomit-frame-pointer` captures its own registers and stack the way urec's entry program
//! does, and the frames the unwinder returns must symbolize to exactly the call chain.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use object::{Object, ObjectSegment, ObjectSymbol};
use urec_format::{Avma, FileOffset, Mapping};
use urec_record::unwind::{PendingReturn, Regs, Truncation, UnwindOutcome, Unwinder};

/// The trampoline address uretprobes leave in stacks on this kernel (the `[uprobes]` page).
const TRAMPOLINE: u64 = 0x7fff_ffff_e000;
const PID: u32 = 4242;

struct Capture {
    regs: Regs,
    stack: Vec<u8>,
    mappings: Vec<Mapping>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unwind")
}

fn gcc(args: &[&str]) {
    let status = Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-Wall", "-Werror"])
        .args(args)
        .status()
        .expect("gcc must be installed to build the unwind fixture");
    assert!(status.success(), "gcc {args:?} failed");
}

/// Builds the fixture into `dir` and runs it in `mode` ("chain" or "lib").
fn capture(dir: &Path, mode: &str) -> Capture {
    capture_with(dir, mode, false)
}

/// [`capture`], optionally with address space randomization off (`setarch -R`), so that two
/// runs lay out their stacks identically.
fn capture_with(dir: &Path, mode: &str, no_aslr: bool) -> Capture {
    let src = fixtures();
    let lib = dir.join("libfixture.so");
    let exe = dir.join("chain");
    if !exe.exists() {
        gcc(&[
            "-shared",
            "-fPIC",
            "-o",
            lib.to_str().unwrap(),
            src.join("fixture_lib.c").to_str().unwrap(),
        ]);
        gcc(&[
            "-o",
            exe.to_str().unwrap(),
            src.join("chain.c").to_str().unwrap(),
            &format!("-L{}", dir.display()),
            "-lfixture",
            &format!("-Wl,-rpath,{}", dir.display()),
        ]);
    }
    let (stack_out, maps_out) = (
        dir.join(format!("{mode}.stack")),
        dir.join(format!("{mode}.maps")),
    );
    let mut command = if no_aslr {
        let mut c = Command::new("setarch");
        c.args(["x86_64", "-R"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let status = command
        .args([
            mode,
            stack_out.to_str().unwrap(),
            maps_out.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "fixture failed: {status}");

    let raw = std::fs::read(&stack_out).unwrap();
    let word = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap());
    let (ip, sp, bp, len) = (word(0), word(1), word(2), word(3) as usize);
    assert_eq!(raw.len(), 32 + len);
    let maps = std::fs::read_to_string(&maps_out).unwrap();
    Capture {
        regs: Regs { ip, sp, bp },
        stack: raw[32..].to_vec(),
        mappings: parse_maps(&maps),
    }
}

/// The executable file mappings of a `/proc/PID/maps` text, as the recorder's snapshot makes
/// them (no build id: the unwinder then keys files by inode).
fn parse_maps(maps: &str) -> Vec<Mapping> {
    maps.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (range, perms, offset, dev, inode) =
                (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            let path = f.next().unwrap_or("");
            if !perms.contains('x') || path.is_empty() {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let (major, minor) = dev.split_once(':')?;
            let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
            Some(Mapping {
                pid: PID,
                time_ns: 0,
                start: Avma(hex(start)),
                end: Avma(hex(end)),
                offset: FileOffset(hex(offset)),
                path: path.to_string(),
                dev: (hex(major) << 8) | hex(minor),
                inode: inode.parse().unwrap(),
                build_id: None,
            })
        })
        .collect()
}

fn unwinder_for(capture: &Capture) -> Unwinder {
    let mut unwinder = Unwinder::new();
    for m in &capture.mappings {
        unwinder.add_mapping(PID, m);
    }
    assert_eq!(unwinder.take_warnings(), Vec::<String>::new());
    unwinder
}

/// Symbolizes frames with ELF symbols and PT_LOAD math: independent of the unwinder's own
/// bias computation. Files without `.symtab` (Debian's libc) use their build-id debug file
/// when installed (libc6-dbg); without one a frame shows as `file+0xoffset`.
struct Symbols {
    files: HashMap<String, SymbolFile>,
}

/// (start, size, name) of each function symbol.
type SymbolTable = Vec<(u64, u64, String)>;
/// (file offset, file size, virtual address) of each PT_LOAD segment.
type Loads = Vec<(u64, u64, u64)>;
type SymbolFile = (SymbolTable, Loads);

impl Symbols {
    fn new() -> Self {
        Symbols {
            files: HashMap::new(),
        }
    }

    fn load(path: &str) -> SymbolFile {
        let data = std::fs::read(path).unwrap();
        let elf = object::File::parse(&*data).unwrap();
        let loads = elf
            .segments()
            .map(|s| (s.file_range().0, s.file_range().1, s.address()))
            .collect();
        let mut symbols = symbols_of(&elf);
        if symbols.is_empty() {
            if let Some(id) = elf.build_id().ok().flatten() {
                let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
                let debug = format!("/usr/lib/debug/.build-id/{}/{}.debug", &hex[..2], &hex[2..]);
                if let Ok(data) = std::fs::read(&debug) {
                    symbols = symbols_of(&object::File::parse(&*data).unwrap());
                }
            }
        }
        (symbols, loads)
    }

    fn name(&mut self, mappings: &[Mapping], addr: u64, is_return: bool) -> String {
        let lookup = if is_return { addr - 1 } else { addr };
        let Some(m) = mappings
            .iter()
            .find(|m| m.start.0 <= lookup && lookup < m.end.0)
        else {
            return format!("{addr:#x}");
        };
        let (symbols, loads) = self
            .files
            .entry(m.path.clone())
            .or_insert_with(|| Self::load(&m.path));
        let file_offset = lookup - m.start.0 + m.offset.0;
        let svma = loads
            .iter()
            .find(|(off, size, _)| *off <= file_offset && file_offset < off + size)
            .map(|(off, _, vaddr)| file_offset - off + vaddr)
            .unwrap();
        symbols
            .iter()
            .find(|(start, size, _)| *start <= svma && svma < start + size)
            .map(|(_, _, name)| name.clone())
            .unwrap_or_else(|| {
                let file = m.path.rsplit('/').next().unwrap();
                format!("{file}+{file_offset:#x}")
            })
    }

    fn names(&mut self, mappings: &[Mapping], frames: &[u64]) -> Vec<String> {
        frames
            .iter()
            .enumerate()
            .map(|(i, &addr)| self.name(mappings, addr, i > 0))
            .collect()
    }
}

fn symbols_of(elf: &object::File) -> SymbolTable {
    elf.symbols()
        .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
        .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
        .collect()
}

fn has_libc_debug_symbols() -> bool {
    let (symbols, _) = Symbols::load("/lib/x86_64-linux-gnu/libc.so.6");
    symbols
        .iter()
        .any(|(_, _, n)| n == "__libc_start_call_main")
}

/// Checks the outer end of a complete main-thread stack: main's caller and its callers in
/// libc, then `_start` in the executable.
fn assert_outer_frames(names: &[String]) {
    let n = names.len();
    assert_eq!(names[n - 1], "_start", "{names:?}");
    if has_libc_debug_symbols() {
        assert_eq!(names[n - 3], "__libc_start_call_main", "{names:?}");
        assert!(
            names[n - 2] == "__libc_start_main_impl"
                || names[n - 2].starts_with("__libc_start_main"),
            "{names:?}"
        );
    } else {
        eprintln!("note: libc6-dbg not installed; libc frames checked by file only");
        assert!(names[n - 3].starts_with("libc.so.6+"), "{names:?}");
        assert!(names[n - 2].starts_with("libc.so.6+"), "{names:?}");
    }
}

const CHAIN: [&str; 7] = ["f6", "f5", "f4", "f3", "f2", "f1", "main"];

#[test]
fn six_deep_chain_without_frame_pointers_unwinds_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path(), "chain");
    let mut unwinder = unwinder_for(&cap);
    let mut frames = Vec::new();
    let outcome = unwinder.unwind(PID, cap.regs, &cap.stack, None, &[], &mut frames);
    let names = Symbols::new().names(&cap.mappings, &frames);
    assert_eq!(outcome, UnwindOutcome::Complete, "{names:?}");
    assert_eq!(names.len(), 10, "{names:?}");
    assert_eq!(names[..7], CHAIN, "{names:?}");
    assert_outer_frames(&names);
}

/// The memo answers a repeated capture with the frames of its first unwind, also after
/// thousands of other captures (unknown processes here) missed it, and never answers for a
/// different capture.
#[test]
fn memo_answers_repeats_and_survives_filling_up() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path(), "chain");
    let mut unwinder = unwinder_for(&cap);
    let unwind = |u: &mut Unwinder, pid: u32| {
        let mut frames = Vec::new();
        let outcome = u.unwind(pid, cap.regs, &cap.stack, None, &[], &mut frames);
        (outcome, frames)
    };
    let first = unwind(&mut unwinder, PID);
    assert_eq!(first.0, UnwindOutcome::Complete);
    assert_eq!(unwind(&mut unwinder, PID), first);
    assert_eq!(unwinder.memo_hits(), 1);
    for pid in (1..10_000).filter(|&p| p != PID) {
        let (outcome, frames) = unwind(&mut unwinder, pid);
        assert_eq!(
            outcome,
            UnwindOutcome::Truncated(Truncation::UnknownProcess)
        );
        assert_eq!(frames, vec![cap.regs.ip]);
    }
    // Thousands of misses in a row made the memo cold (consulted for one unwind in 32): a
    // capture that repeats from now on warms it again within two samples.
    let before = unwinder.memo_hits();
    for _ in 0..100 {
        assert_eq!(unwind(&mut unwinder, PID), first);
    }
    assert!(
        unwinder.memo_hits() - before >= 30,
        "{} hits",
        unwinder.memo_hits() - before
    );
    // A capture that differs in a word the unwind read is unwound again.
    let mut other = cap.stack.clone();
    let slot = frames_slot(&cap, first.1[1]);
    other[slot..slot + 8].copy_from_slice(&first.1[2].to_le_bytes());
    let mut frames = Vec::new();
    let hits = unwinder.memo_hits();
    unwinder.unwind(PID, cap.regs, &other, None, &[], &mut frames);
    assert_eq!(unwinder.memo_hits(), hits);
    assert_ne!(frames, first.1);
}

/// The offset in the copy of the slot holding return address `ret`.
fn frames_slot(cap: &Capture, ret: u64) -> usize {
    (slot_of(cap, ret) - cap.regs.sp) as usize
}

/// Finds the one stack slot holding `value` (a return address), as an address.
fn slot_of(cap: &Capture, value: u64) -> u64 {
    let slots: Vec<u64> = (0..cap.stack.len() / 8)
        .filter(|i| u64::from_le_bytes(cap.stack[i * 8..i * 8 + 8].try_into().unwrap()) == value)
        .map(|i| cap.regs.sp + 8 * i as u64)
        .collect();
    assert_eq!(
        slots.len(),
        1,
        "return address {value:#x} found in {} slots",
        slots.len()
    );
    slots[0]
}

#[test]
fn uretprobe_trampoline_is_replaced_by_the_pending_return() {
    let dir = tempfile::tempdir().unwrap();
    let mut cap = capture(dir.path(), "chain");
    let mut unwinder = unwinder_for(&cap);
    let mut full = Vec::new();
    assert_eq!(
        unwinder.unwind(PID, cap.regs, &cap.stack, None, &[], &mut full),
        UnwindOutcome::Complete
    );
    // A uretprobe on f3 replaced f3's return address (into f2, frame 4) by the trampoline.
    let ret = full[4];
    let slot = slot_of(&cap, ret);
    let at = (slot - cap.regs.sp) as usize;
    cap.stack[at..at + 8].copy_from_slice(&TRAMPOLINE.to_le_bytes());

    let mut frames = Vec::new();
    let by_slot = [PendingReturn { slot, ret }];
    let outcome = unwinder.unwind(
        PID,
        cap.regs,
        &cap.stack,
        Some(TRAMPOLINE),
        &by_slot,
        &mut frames,
    );
    assert_eq!((outcome, &frames), (UnwindOutcome::Complete, &full));

    // A source that knows only the order of the pending returns (slot 0) works too; an entry
    // for a slot that is not in this stack (an outer frame's) is not consumed by mistake.
    let by_order = [
        PendingReturn { slot: 0, ret },
        PendingReturn {
            slot: cap.regs.sp + 0x10_0000,
            ret: 0x1234,
        },
    ];
    let outcome = unwinder.unwind(
        PID,
        cap.regs,
        &cap.stack,
        Some(TRAMPOLINE),
        &by_order,
        &mut frames,
    );
    assert_eq!((outcome, &frames), (UnwindOutcome::Complete, &full));

    // Without it the unwind stops at the trampoline, and says so.
    let outcome = unwinder.unwind(
        PID,
        cap.regs,
        &cap.stack,
        Some(TRAMPOLINE),
        &[],
        &mut frames,
    );
    assert_eq!(outcome, UnwindOutcome::Truncated(Truncation::Trampoline));
    assert_eq!(frames, full[..4]);

    // The trampoline address can also come from the process's `[uprobes]` mapping.
    unwinder.add_mapping(
        PID,
        &Mapping {
            pid: PID,
            time_ns: 0,
            start: Avma(TRAMPOLINE),
            end: Avma(TRAMPOLINE + 0x1000),
            offset: FileOffset(0),
            path: "[uprobes]".to_string(),
            dev: 0,
            inode: 0,
            build_id: None,
        },
    );
    let outcome = unwinder.unwind(PID, cap.regs, &cap.stack, None, &by_slot, &mut frames);
    assert_eq!((outcome, &frames), (UnwindOutcome::Complete, &full));
    let outcome = unwinder.unwind(PID, cap.regs, &cap.stack, None, &[], &mut frames);
    assert_eq!(outcome, UnwindOutcome::Truncated(Truncation::Trampoline));
}

#[test]
fn chain_through_a_shared_library() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path(), "lib");
    assert!(cap
        .mappings
        .iter()
        .any(|m| m.path.ends_with("/libfixture.so")));
    let mut unwinder = unwinder_for(&cap);
    let mut frames = Vec::new();
    let outcome = unwinder.unwind(PID, cap.regs, &cap.stack, None, &[], &mut frames);
    let names = Symbols::new().names(&cap.mappings, &frames);
    assert_eq!(outcome, UnwindOutcome::Complete, "{names:?}");
    assert_eq!(names.len(), 8, "{names:?}");
    assert_eq!(
        names[..5],
        ["g2", "lib_inner", "lib_outer", "g1", "main"],
        "{names:?}"
    );
    assert_outer_frames(&names);
}

#[test]
fn short_copies_unknown_processes_and_exec_truncate() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path(), "chain");
    let mut unwinder = unwinder_for(&cap);
    let mut frames = Vec::new();

    // f6's frame is 16 bytes (push %rbx, return address): 16 bytes of copy unwind one frame.
    let outcome = unwinder.unwind(PID, cap.regs, &cap.stack[..16], None, &[], &mut frames);
    assert_eq!(outcome, UnwindOutcome::Truncated(Truncation::StackCopyEnd));
    assert_eq!(frames.len(), 2);
    let outcome = unwinder.unwind(PID, cap.regs, &[], None, &[], &mut frames);
    assert_eq!(outcome, UnwindOutcome::Truncated(Truncation::StackCopyEnd));
    assert_eq!(frames, [cap.regs.ip]);

    let outcome = unwinder.unwind(PID + 1, cap.regs, &cap.stack, None, &[], &mut frames);
    assert_eq!(
        outcome,
        UnwindOutcome::Truncated(Truncation::UnknownProcess)
    );
    assert_eq!(frames, [cap.regs.ip]);

    // A return address outside every module (a corrupt stack) ends the unwind before it.
    let mut corrupt = cap.stack.clone();
    let mut full = Vec::new();
    unwinder.unwind(PID, cap.regs, &cap.stack, None, &[], &mut full);
    let at = (slot_of(&cap, full[2]) - cap.regs.sp) as usize;
    corrupt[at..at + 8].copy_from_slice(&0x1000u64.to_le_bytes());
    let outcome = unwinder.unwind(PID, cap.regs, &corrupt, None, &[], &mut frames);
    assert_eq!(
        outcome,
        UnwindOutcome::Truncated(Truncation::UnknownAddress)
    );
    assert_eq!(frames, full[..2]);

    unwinder.exec(PID);
    let outcome = unwinder.unwind(PID, cap.regs, &cap.stack, None, &[], &mut frames);
    assert_eq!(
        outcome,
        UnwindOutcome::Truncated(Truncation::UnknownProcess)
    );
}

#[test]
fn files_are_parsed_once_and_shared_between_processes() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path(), "chain");
    let mut unwinder = unwinder_for(&cap);
    // A second process mapping the same files at other addresses (as ASLR would).
    let shift = 0x1000_0000u64;
    for m in &cap.mappings {
        let mut m = m.clone();
        m.pid = PID + 1;
        m.start = Avma(m.start.0 - shift);
        m.end = Avma(m.end.0 - shift);
        unwinder.add_mapping(PID + 1, &m);
    }
    assert_eq!(unwinder.take_warnings(), Vec::<String>::new());
    let distinct: std::collections::HashSet<_> = (cap.mappings.iter())
        .filter(|m| !m.path.starts_with('['))
        .map(|m| &m.path)
        .collect();
    assert_eq!(unwinder.files(), distinct.len());
    // The second process's stack: every word that points into a mapping moves by `shift`.
    let moved = |v: u64| {
        if cap.mappings.iter().any(|m| m.start.0 <= v && v < m.end.0) {
            v - shift
        } else {
            v
        }
    };
    let stack: Vec<u8> = cap
        .stack
        .chunks(8)
        .flat_map(|w| {
            let v = u64::from_le_bytes(w.try_into().unwrap());
            moved(v).to_le_bytes()
        })
        .collect();
    let regs = Regs {
        ip: moved(cap.regs.ip),
        ..cap.regs
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    assert_eq!(
        unwinder.unwind(PID, cap.regs, &cap.stack, None, &[], &mut a),
        UnwindOutcome::Complete
    );
    assert_eq!(
        unwinder.unwind(PID + 1, regs, &stack, None, &[], &mut b),
        UnwindOutcome::Complete
    );
    assert_eq!(b, a.iter().map(|&v| v - shift).collect::<Vec<_>>());
}

/// Whether this test may use the kernel's uprobes: root, or else skip (fail under `CI=true`).
fn can_probe(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: needs root (CI=true)"
    );
    eprintln!("{test}: skipped, needs root for uprobes");
    false
}

/// The file offset of function `name` in the ELF file at `path`.
fn function_offset(path: &Path, name: &str) -> u64 {
    let data = std::fs::read(path).unwrap();
    let elf = object::File::parse(&*data).unwrap();
    let svma = elf
        .symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap()
        .address();
    elf.segments()
        .find(|s| s.address() <= svma && svma < s.address() + s.size())
        .map(|s| svma - s.address() + s.file_range().0)
        .unwrap()
}

/// A uretprobe on `path`:`offset` in every process, through the perf uprobe PMU (no BPF
/// program needed: the kernel installs the trampoline all the same). Closed on drop.
struct Uretprobe(Vec<libc::c_int>);

impl Uretprobe {
    fn attach(path: &Path, offset: u64) -> Self {
        use perf_event_open_sys::bindings::perf_event_attr;
        let pmu = std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/type").unwrap();
        let format =
            std::fs::read_to_string("/sys/bus/event_source/devices/uprobe/format/retprobe")
                .unwrap();
        let retprobe_bit: u32 = format
            .trim()
            .strip_prefix("config:")
            .unwrap()
            .parse()
            .unwrap();
        let path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
        let mut cpus = Vec::new();
        for part in online.trim().split(',') {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            cpus.extend(a.parse::<i32>().unwrap()..=b.parse::<i32>().unwrap());
        }
        let mut fds = Vec::new();
        for cpu in cpus {
            let mut attr = perf_event_attr {
                type_: pmu.trim().parse().unwrap(),
                size: std::mem::size_of::<perf_event_attr>() as u32,
                config: 1 << retprobe_bit,
                ..Default::default()
            };
            attr.__bindgen_anon_3.uprobe_path = path.as_ptr() as u64;
            attr.__bindgen_anon_4.config2 = offset;
            // SAFETY: attr is a valid, fully initialised perf_event_attr; path outlives the call.
            let fd = unsafe {
                perf_event_open_sys::perf_event_open(
                    &mut attr,
                    -1,
                    cpu,
                    -1,
                    perf_event_open_sys::bindings::PERF_FLAG_FD_CLOEXEC as _,
                )
            };
            assert!(
                fd >= 0,
                "perf_event_open(uretprobe): {}",
                std::io::Error::last_os_error()
            );
            fds.push(fd);
        }
        Uretprobe(fds)
    }
}

impl Drop for Uretprobe {
    fn drop(&mut self) {
        for &fd in &self.0 {
            // SAFETY: fd was returned by perf_event_open and is closed once.
            unsafe { libc::close(fd) };
        }
    }
}

/// The real thing: a uretprobe on f3 makes the kernel put its trampoline into the stack that
/// f6 copies. The unwinder learns the trampoline from the `[uprobes]` mapping (it is not at a
/// fixed address: 0x7fffffffe000 only when that page is free), stops there without help, and
/// unwinds the whole chain once the pending return (what the BPF side reads from the kernel's
/// `return_instances`) supplies the original.
#[test]
fn real_uretprobe_trampoline_in_the_copy() {
    if !can_probe("real_uretprobe_trampoline_in_the_copy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let plain = capture_with(dir.path(), "chain", true);
    let exe = dir.path().join("chain");
    let probed = {
        let _probe = Uretprobe::attach(&exe, function_offset(&exe, "f3"));
        capture_with(dir.path(), "chain", true)
    };
    // Same layout in both runs (no ASLR, same argv and environment).
    assert_eq!(plain.regs, probed.regs);
    let uprobes = probed
        .mappings
        .iter()
        .find(|m| m.path == "[uprobes]")
        .unwrap();
    let trampoline = uprobes.start.0;
    let slot = slot_of(&probed, trampoline);
    let at = (slot - probed.regs.sp) as usize;
    let ret = u64::from_le_bytes(plain.stack[at..at + 8].try_into().unwrap());

    let mut unwinder = unwinder_for(&plain);
    let mut full = Vec::new();
    assert_eq!(
        unwinder.unwind(PID, plain.regs, &plain.stack, None, &[], &mut full),
        UnwindOutcome::Complete
    );
    assert_eq!(full[4], ret, "the hidden slot is f3's return address");

    let mut unwinder = unwinder_for(&probed);
    let mut frames = Vec::new();
    let outcome = unwinder.unwind(PID, probed.regs, &probed.stack, None, &[], &mut frames);
    assert_eq!(outcome, UnwindOutcome::Truncated(Truncation::Trampoline));
    let names = Symbols::new().names(&probed.mappings, &frames);
    assert_eq!(names, ["f6", "f5", "f4", "f3"]);

    // What the session passes: the kernel's return instance of f3 (slot and original).
    let pending = [PendingReturn { slot, ret }];
    let outcome = unwinder.unwind(PID, probed.regs, &probed.stack, None, &pending, &mut frames);
    assert_eq!((outcome, &frames), (UnwindOutcome::Complete, &full));
}

/// Mean cost of a warm unwind. Run with
/// `cargo test --release -p urec-record --test unwind -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run in release with --ignored --nocapture"]
fn unwind_speed() {
    let dir = tempfile::tempdir().unwrap();
    for mode in ["chain", "lib"] {
        let cap = capture(dir.path(), mode);
        let mut unwinder = unwinder_for(&cap);
        let mut frames = Vec::new();
        for _ in 0..1000 {
            unwinder.unwind(PID, cap.regs, &cap.stack, None, &[], &mut frames);
        }
        let n = 200_000u32;
        let t = Instant::now();
        for _ in 0..n {
            unwinder.unwind(PID, cap.regs, &cap.stack, None, &[], &mut frames);
        }
        let per = t.elapsed() / n;
        // Cold: a fresh unwinder, first unwind (rule cache empty, files parsed on add).
        let t = Instant::now();
        let mut cold = unwinder_for(&cap);
        let add = t.elapsed();
        let t = Instant::now();
        cold.unwind(PID, cap.regs, &cap.stack, None, &[], &mut frames);
        let first = t.elapsed();
        println!(
            "{mode}: {} frames, warm {} ns/unwind, cold first unwind {} ns, add {} mappings {} µs",
            frames.len(),
            per.as_nanos(),
            first.as_nanos(),
            cap.mappings.len(),
            add.as_micros()
        );
    }
}
