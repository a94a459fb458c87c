//! Naming code objects, checked against CPython itself rather than against a second parser of
//! ours:
//! - the line decoder against `co_lines()` and `co_positions()` of every code object of a
//!   corpus (`py/corpus.py`, dumped by `py/dump_lines.py`), for every code unit;
//! - `read_code` and `line_at` through `ProcessMemory` on a live interpreter blocked in a known
//!   line, with the frames' own `f_lasti` as the interpreter reports them.
//!
//! On Debian's `/usr/bin/python3.11` and, where present, pyenv's 3.11.7, 3.12.1 and 3.13.0.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use urec_elf::ElfImage;

mod common;
use common::avma;
use urec_python::{
    read_code, CodeInfo, CodeRef, CurrentFrame, Detection, EntryMarker, Memory, NameError,
    ProcessMemory, PyVersion,
};

/// (executable, the file holding `_PyRuntime`).
const PYTHONS: [(&str, &str); 4] = [
    ("/usr/bin/python3.11", "/usr/bin/python3.11"),
    (
        "/root/.pyenv/versions/3.11.7/bin/python3.11",
        "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0",
    ),
    (
        "/root/.pyenv/versions/3.12.1/bin/python3.12",
        "/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0",
    ),
    (
        "/root/.pyenv/versions/3.13.0/bin/python3.13",
        "/root/.pyenv/versions/3.13.0/lib/libpython3.13.so.1.0",
    ),
];

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether `exe` can be used; Debian's python3.11 is required in CI (the machine image
/// installs it), a pyenv build may be absent anywhere.
fn present(exe: &str, lib: &str) -> bool {
    if Path::new(exe).exists() && Path::new(lib).exists() {
        return true;
    }
    if in_ci() && exe == PYTHONS[0].0 {
        panic!("CI=true but {exe} is missing");
    }
    eprintln!("skipped: no {exe} or {lib}");
    false
}

fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py")
}

/// One code object as `dump_lines.py` printed it.
struct Dumped {
    qualname: String,
    first_line: u32,
    linetable: Vec<u8>,
    bytes: u32,
    by_lines: Vec<Option<u32>>,
    by_positions: Vec<Option<u32>>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// CPython's line of a unit; `None` and 0 (no line) both read as None, as `line_at` gives.
fn lines(s: &str) -> Vec<Option<u32>> {
    s.split(',')
        .map(|l| match l {
            "-" => None,
            l => Some(l.parse::<u32>().expect("a line")).filter(|&l| l > 0),
        })
        .collect()
}

fn dump(exe: &str) -> (PyVersion, Vec<Dumped>) {
    let out = Command::new(exe)
        .arg(py_dir().join("dump_lines.py"))
        .arg(py_dir().join("corpus.py"))
        .output()
        .expect("run dump_lines.py");
    assert!(
        out.status.success(),
        "{exe}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let mut rows = text.lines();
    let hex_version = rows.next().expect("sys.hexversion").parse().expect("int");
    let dumped = rows
        .map(|row| {
            let f: Vec<&str> = row.split('\t').collect();
            assert_eq!(f.len(), 6, "{row}");
            Dumped {
                qualname: f[0].to_string(),
                first_line: f[1].parse().expect("first line"),
                linetable: hex(f[2]),
                bytes: f[3].parse().expect("length"),
                by_lines: lines(f[4]),
                by_positions: lines(f[5]),
            }
        })
        .collect();
    (PyVersion { hex: hex_version }, dumped)
}

/// The entry codes a table uses (bit 7 marks an entry's first byte), to show the corpus
/// exercises every form; a statistic, not the oracle.
fn codes(table: &[u8]) -> impl Iterator<Item = u8> + '_ {
    table
        .iter()
        .filter(|&&b| b & 0x80 != 0)
        .map(|b| (b >> 3) & 15)
}

#[test]
fn line_tables_agree_with_cpython() {
    for (exe, lib) in PYTHONS {
        if !present(exe, lib) {
            continue;
        }
        let (version, dumped) = dump(exe);
        let mut seen = BTreeSet::new();
        let mut units = 0;
        for d in &dumped {
            let info = CodeInfo::from_parts(
                d.qualname.clone(),
                "corpus.py".into(),
                d.first_line,
                d.linetable.clone(),
            );
            seen.extend(codes(&d.linetable));
            assert_eq!(d.by_lines.len() as u32 * 2, d.bytes);
            for (unit, (&by_lines, &by_positions)) in
                d.by_lines.iter().zip(&d.by_positions).enumerate()
            {
                let offset = unit as u32 * 2;
                let ours = info.line_at(version, Some(offset));
                assert_eq!(
                    ours, by_lines,
                    "{exe} {} offset {offset}: co_lines()",
                    d.qualname
                );
                assert_eq!(
                    ours, by_positions,
                    "{exe} {} offset {offset}: co_positions()",
                    d.qualname
                );
                assert_eq!(info.line_at(version, Some(offset + 1)), ours, "odd byte");
                units += 1;
            }
            assert_eq!(info.line_at(version, None), Some(d.first_line));
            assert_eq!(info.line_at(version, Some(d.bytes)), None, "past the code");
        }
        let names: Vec<&str> = dumped.iter().map(|d| d.qualname.as_str()).collect();
        for expected in [
            "grüße",
            "関数",
            "Outer.Inner.method",
            "Outer.deco.<locals>.<lambda>",
            "gen",
            "long_function",
        ] {
            assert!(
                names.contains(&expected),
                "{exe}: no {expected} in {names:?}"
            );
        }
        eprintln!(
            "{exe} ({version}): {} code objects, {units} code units agree; entry codes {seen:?}",
            dumped.len()
        );
        // Short forms, all one-line forms, the no-column and long forms (the long function
        // and the gaps) and no-location entries appear on every version.
        for code in [0, 10, 11, 12, 13, 14, 15] {
            assert!(seen.contains(&code), "{exe}: entry code {code} never seen");
        }
    }
}

/// `target` prints, for each caller, `f_lasti:A:B:C`: the unit's opname (`dis.opname` of the
/// deoptimized `co_code`), the instruction it belongs to (the nearest non-`CACHE` at or
/// before it), and whether it is that instruction's last unit.
const LIVE_SCRIPT: &str = "import dis, sys, time
def target():
    f, lasti = sys._getframe(1), []
    while f is not None:
        c, i = f.f_code.co_code, f.f_lasti
        j = i
        while dis.opname[c[j]] == 'CACHE': j -= 2
        last = i + 2 >= len(c) or dis.opname[c[i + 2]] != 'CACHE'
        lasti.append(f'{i}:{dis.opname[c[i]]}:{dis.opname[c[j]]}:{last}')
        f = f.f_back
    print(*lasti, flush=True)
    time.sleep(60)
class K:
    def grüße(self):
        target()
def 関数():
    yield K().grüße()
def outer():
    next(関数())
outer()
";

/// (qualname, first line, line being run), innermost first.
const LIVE_FRAMES: [(&str, u32, u32); 5] = [
    ("target", 2, 12),
    ("K.grüße", 14, 15),
    ("関数", 16, 17),
    ("outer", 18, 19),
    ("<module>", 1, 20),
];

/// Kills the child and removes its directory when the test ends, also on a failed assertion.
struct Live {
    child: Child,
    dir: PathBuf,
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn word(mem: &ProcessMemory, at: u64) -> u64 {
    let mut b = [0u8; 8];
    mem.read(at, &mut b).expect("read the process");
    u64::from_le_bytes(b)
}

fn byte(mem: &ProcessMemory, at: u64) -> u8 {
    let mut b = [0u8; 1];
    mem.read(at, &mut b).expect("read the process");
    b[0]
}

/// Waits until `pid` sleeps in `time.sleep` (clock_nanosleep, or nanosleep / select on other
/// libcs), so its innermost frame is at the sleep's line, not at the `print` before it.
fn wait_for_sleep(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let syscall = fs::read_to_string(format!("/proc/{pid}/syscall"))
            .expect("/proc/PID/syscall (ptrace access, as process_vm_readv needs)");
        let nr = syscall.split_whitespace().next().unwrap_or("");
        if ["230", "35", "23", "270"].contains(&nr) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("process {pid} never slept");
}

/// A frame as walked: its code's words, the instruction offset BPF would record.
struct Frame {
    code: CodeRef,
    instr_offset: Option<u32>,
}

#[test]
fn live_frames_are_named_with_their_lines() {
    for (exe, lib) in PYTHONS {
        if !present(exe, lib) {
            continue;
        }
        live(exe, lib);
    }
}

fn live(exe: &str, lib: &str) {
    let image = ElfImage::open(Path::new(lib)).expect("open");
    let Detection::Known(py) = urec_python::detect_image(&image) else {
        panic!("{lib} not recognized");
    };
    let o = py.offsets;
    // A directory with a 4-byte character, so the file name is a kind-4 str; the qualnames
    // cover ASCII, kind 1 (grüße) and kind 2 (関数).
    let dir = std::env::temp_dir().join(format!(
        "urec-naming-😀-{}-{}",
        std::process::id(),
        py.version
    ));
    fs::create_dir_all(&dir).expect("temp dir");
    let script = dir.join("live.py");
    fs::write(&script, LIVE_SCRIPT).expect("write the script");
    let child = Command::new(exe)
        .arg(&script)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python");
    let mut live = Live { child, dir };
    let mut line = String::new();
    let stdout = live.child.stdout.take().expect("piped stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("python prints its frames' f_lasti");
    // The callers of `target`, innermost first.
    let lasti: Vec<(u32, String)> = line
        .split_whitespace()
        .map(|f| {
            let (at, rest) = f.split_once(':').expect("lasti:...");
            (at.parse().expect("f_lasti"), rest.to_string())
        })
        .collect();
    let pid = live.child.id();
    let mem = ProcessMemory::new(pid);

    let runtime_offset = py
        .runtime
        .to_file_offset(image.loads())
        .expect("in the file");
    let runtime = avma(pid, Path::new(lib), runtime_offset.0);
    let mut probe = [0u8; 8];
    if let Err(e) = mem.read(runtime, &mut probe) {
        if in_ci() {
            panic!("process_vm_readv on a child: {e}");
        }
        eprintln!("skipped: process_vm_readv on a child: {e} (needs ptrace access)");
        return;
    }
    wait_for_sleep(pid);
    let interp = word(&mem, runtime + o.runtime_interpreters_head);
    let tstate = word(&mem, interp + o.interp_threads_head);
    let mut frame = match o.current_frame {
        CurrentFrame::ViaCframe {
            cframe,
            current_frame,
        } => word(&mem, word(&mem, tstate + cframe) + current_frame),
        CurrentFrame::Direct { current_frame } => word(&mem, tstate + current_frame),
    };
    // The walk BPF does, in user space: code words and instruction offset per frame, 3.12+
    // entry shims (owner FRAME_OWNED_BY_CSTACK) left out.
    let mut frames = Vec::new();
    while frame != 0 && frames.len() < 16 {
        let shim = match o.entry {
            EntryMarker::IsEntry { .. } => false,
            EntryMarker::Owner { cstack } => byte(&mem, frame + o.frame_owner) == cstack,
        };
        if !shim {
            let code = word(&mem, frame + o.frame_code);
            let mut first = [0u8; 4];
            mem.read(code + o.code_firstlineno, &mut first)
                .expect("co_firstlineno");
            let instr = word(&mem, frame + o.frame_instr);
            let base = code + o.code_adaptive;
            frames.push(Frame {
                code: CodeRef {
                    code,
                    qualname: word(&mem, code + o.code_qualname),
                    filename: word(&mem, code + o.code_filename),
                    first_line: i32::from_le_bytes(first),
                },
                instr_offset: instr
                    .checked_sub(base)
                    .and_then(|d| u32::try_from(d).ok())
                    .filter(|&d| d < 0x3fff_ffff),
            });
        }
        frame = word(&mem, frame + o.frame_previous);
    }

    let filename = script.to_str().expect("UTF-8 path");
    let mut named = Vec::new();
    for f in &frames {
        let info = read_code(&mem, &py, &f.code).expect("read_code");
        let line = info.line_at(py.version, f.instr_offset);
        named.push((info.qualname.clone(), info.first_line, line));
        assert_eq!(info.filename, filename, "{exe}");
    }
    let expected: Vec<(String, u32, Option<u32>)> = LIVE_FRAMES
        .iter()
        .map(|&(q, first, line)| (q.to_string(), first, Some(line)))
        .collect();
    assert_eq!(named, expected, "{exe}");

    // The callers' offsets are the interpreter's own f_lasti (a byte offset from the first
    // instruction); what they point at is the evidence for line_at's docs.
    let offsets: Vec<(u32, String)> = frames[1..]
        .iter()
        .zip(&lasti)
        .map(|(f, (_, op))| (f.instr_offset.expect("a caller has run"), op.clone()))
        .collect();
    assert_eq!(offsets, lasti, "{exe}: our offsets vs f_lasti");
    // Each caller is inside its CALL: 3.11/3.12 at the CALL's last inline cache unit when
    // the callee is a Python function run in the same eval loop (K.grüße, 関数, <module>),
    // at the CALL itself when a C function runs (outer, inside `next`); 3.13 always at the
    // CALL.
    let cache = if py.version.minor() < 13 {
        "CACHE:CALL:True"
    } else {
        "CALL:CALL:False"
    };
    let expected_ops = [cache, cache, "CALL:CALL:False", cache];
    let ops: Vec<&str> = lasti.iter().map(|(_, op)| op.as_str()).collect();
    assert_eq!(ops, expected_ops, "{exe}");
    eprintln!(
        "{exe} ({}): frames {named:?}; callers' f_lasti {lasti:?}",
        py.version
    );

    // A code object whose qualname word is not the one recorded: refused, not misnamed.
    let stale = CodeRef {
        qualname: frames[0].code.filename,
        ..frames[0].code
    };
    assert!(
        matches!(read_code(&mem, &py, &stale), Err(NameError::Stale)),
        "{exe}"
    );
    let stale = CodeRef {
        first_line: frames[0].code.first_line + 1,
        ..frames[0].code
    };
    assert!(
        matches!(read_code(&mem, &py, &stale), Err(NameError::Stale)),
        "{exe}"
    );

    // Once the process is gone, reads fail with an error, not a panic.
    let _ = live.child.kill();
    let _ = live.child.wait();
    assert!(matches!(
        read_code(&mem, &py, &frames[0].code),
        Err(NameError::Read { .. })
    ));
}
