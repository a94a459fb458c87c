//! The offsets checked against running interpreters: the walk the BPF program will do, done
//! from user space through `/proc/PID/mem`, on Debian's `/usr/bin/python3.11` and, where
//! present, the pyenv 3.12.1 and 3.13.0 builds of the project's VM. A wrong offset shows up here
//! as a wrong or missing function name, not as empty stacks in a recording much later.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use urec_elf::ElfImage;

mod common;
use common::avma;
use urec_python::{CurrentFrame, Detection, EntryMarker};

const SCRIPT: &str = "
import threading, time
def target():
    print(threading.get_ident(), flush=True)
    time.sleep(60)
def outer():
    target()
outer()
";

/// Kills the child when the test ends, also on a failed assertion.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Mem(File);

impl Mem {
    fn bytes(&self, at: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.0
            .read_exact_at(&mut buf, at)
            .expect("read /proc/PID/mem");
        buf
    }

    fn u64(&self, at: u64) -> u64 {
        u64::from_le_bytes(self.bytes(at, 8).try_into().expect("8 bytes"))
    }

    /// A compact ASCII string's characters (length at 16 on x86-64).
    fn ascii(&self, obj: u64, data: u64) -> String {
        let len = self.u64(obj + 16).min(256) as usize;
        String::from_utf8(self.bytes(obj + data, len)).expect("ASCII")
    }
}

/// One frame as the walk sees it: (qualname, filename, first line) of a Python frame, or None
/// for a 3.12+ entry shim (owner `FRAME_OWNED_BY_CSTACK`, no code to name); and whether the
/// frame marks an entry.
type Walked = (Option<(String, String, i32)>, bool);

/// Runs `exe` on [`SCRIPT`] and walks its frames with the offsets `detect` gives for `lib`
/// (the file holding `_PyRuntime`: the executable itself, or its libpython).
fn walk(exe: &str, lib: &str) -> Option<Vec<Walked>> {
    if !Path::new(exe).exists() || !Path::new(lib).exists() {
        eprintln!("skipped: no {exe} or {lib}");
        return None;
    }
    let image = ElfImage::open(Path::new(lib)).expect("open");
    let Detection::Known(py) = urec_python::detect_image(&image) else {
        panic!("{lib} not recognized");
    };
    let o = py.offsets;
    let mut child = Reaped(
        Command::new(exe)
            .args(["-c", SCRIPT])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python"),
    );
    let mut line = String::new();
    let stdout = child.0.stdout.take().expect("piped stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("python prints its thread id");
    let ident: u64 = line.trim().parse().expect("a thread id");
    let pid = child.0.id();
    let mem = Mem(File::open(format!("/proc/{pid}/mem")).expect("open mem"));

    let runtime_offset = py
        .runtime
        .to_file_offset(image.loads())
        .expect("in the file");
    let runtime = avma(pid, Path::new(lib), runtime_offset.0);
    let interp = mem.u64(runtime + o.runtime_interpreters_head);
    let tstate = mem.u64(interp + o.interp_threads_head);
    assert_eq!(
        mem.u64(tstate + o.tstate_thread_id),
        ident,
        "thread_id is pthread_self"
    );
    assert_eq!(mem.u64(tstate + o.tstate_native_thread_id), u64::from(pid));
    assert_eq!(mem.u64(tstate + o.tstate_next), 0, "one thread");

    let mut frame = match o.current_frame {
        CurrentFrame::ViaCframe {
            cframe,
            current_frame,
        } => mem.u64(mem.u64(tstate + cframe) + current_frame),
        CurrentFrame::Direct { current_frame } => mem.u64(tstate + current_frame),
    };
    let mut walked = Vec::new();
    while frame != 0 && walked.len() < 16 {
        let owner = mem.bytes(frame + o.frame_owner, 1)[0];
        let entry = match o.entry {
            EntryMarker::IsEntry { offset } => mem.bytes(frame + offset, 1)[0] != 0,
            EntryMarker::Owner { cstack } => owner == cstack,
        };
        let shim = matches!(o.entry, EntryMarker::Owner { .. }) && entry;
        let named = (!shim).then(|| {
            let code = mem.u64(frame + o.frame_code);
            let qualname = mem.ascii(mem.u64(code + o.code_qualname), o.unicode_ascii_data);
            let filename = mem.ascii(mem.u64(code + o.code_filename), o.unicode_ascii_data);
            let first = mem.bytes(code + o.code_firstlineno, 4);
            let first = i32::from_le_bytes(first.try_into().expect("4 bytes"));
            let instr = mem.u64(frame + o.frame_instr);
            assert!(
                instr >= code + o.code_adaptive,
                "instruction inside the code"
            );
            (qualname, filename, first)
        });
        walked.push((named, entry));
        frame = mem.u64(frame + o.frame_previous);
    }
    Some(walked)
}

fn py(q: &str, line: i32, entry: bool) -> Walked {
    (Some((q.to_string(), "<string>".to_string(), line)), entry)
}

#[test]
fn debian_311_walk() {
    let Some(walked) = walk("/usr/bin/python3.11", "/usr/bin/python3.11") else {
        return;
    };
    // 3.11 marks the first frame of an eval call itself (`is_entry`).
    assert_eq!(
        walked,
        [
            py("target", 3, false),
            py("outer", 6, false),
            py("<module>", 1, true)
        ]
    );
}

/// 3.12 and 3.13 push an entry shim frame (owner `FRAME_OWNED_BY_CSTACK`) below the first
/// Python frame of each `_PyEval_EvalFrameDefault` call.
fn shim_walk(exe: &str, lib: &str) {
    let Some(walked) = walk(exe, lib) else {
        return;
    };
    assert_eq!(
        walked,
        [
            py("target", 3, false),
            py("outer", 6, false),
            py("<module>", 1, false),
            (None, true)
        ]
    );
}

#[test]
fn pyenv_312_walk() {
    shim_walk(
        "/root/.pyenv/versions/3.12.1/bin/python3.12",
        "/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0",
    );
}

#[test]
fn pyenv_313_walk() {
    shim_walk(
        "/root/.pyenv/versions/3.13.0/bin/python3.13",
        "/root/.pyenv/versions/3.13.0/lib/libpython3.13.so.1.0",
    );
}
