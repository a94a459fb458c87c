//! The 3.11 table checked against a running interpreter: the walk the BPF program will do,
//! done from user space through `/proc/PID/mem` on Debian's `/usr/bin/python3.11`. A wrong
//! offset shows up here as a wrong or missing function name, not as empty stacks in a
//! recording much later.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use urec_python::{CurrentFrame, Detection, EntryMarker};

const PYTHON311: &str = "/usr/bin/python3.11";

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

#[test]
fn the_311_table_walks_a_running_interpreter() {
    if !Path::new(PYTHON311).exists() || !Path::new("/proc/self/mem").exists() {
        eprintln!("skipped: no {PYTHON311} or /proc");
        return;
    }
    let Detection::Known(py) = urec_python::detect(Path::new(PYTHON311)).expect("open") else {
        panic!("{PYTHON311} not recognized");
    };
    let o = py.offsets;
    let mut child = Reaped(
        Command::new(PYTHON311)
            .args(["-c", SCRIPT])
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3.11"),
    );
    let mut line = String::new();
    let stdout = child.0.stdout.take().expect("piped stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("python prints its thread id");
    let ident: u64 = line.trim().parse().expect("a thread id");
    let mem = Mem(File::open(format!("/proc/{}/mem", child.0.id())).expect("open mem"));

    // Debian's python3.11 is not position-independent: its stated addresses are its run-time
    // addresses (the recorder will rebase them by the mapping instead).
    let interp = mem.u64(py.runtime.0 + o.runtime_interpreters_head);
    let tstate = mem.u64(interp + o.interp_threads_head);
    assert_eq!(
        mem.u64(tstate + o.tstate_thread_id),
        ident,
        "thread_id is pthread_self"
    );
    assert_eq!(
        mem.u64(tstate + o.tstate_native_thread_id),
        u64::from(child.0.id())
    );
    assert_eq!(mem.u64(tstate + o.tstate_next), 0, "one thread");

    let CurrentFrame::ViaCframe {
        cframe,
        current_frame,
    } = o.current_frame
    else {
        panic!("3.11 reads the frame through _PyCFrame");
    };
    let EntryMarker::IsEntry { offset: is_entry } = o.entry else {
        panic!("3.11 marks entry frames with is_entry");
    };
    let mut frame = mem.u64(mem.u64(tstate + cframe) + current_frame);
    let mut walked = Vec::new();
    while frame != 0 && walked.len() < 16 {
        let code = mem.u64(frame + o.frame_code);
        let qualname = mem.ascii(mem.u64(code + o.code_qualname), o.unicode_ascii_data);
        let filename = mem.ascii(mem.u64(code + o.code_filename), o.unicode_ascii_data);
        let first = i32::from_le_bytes(
            mem.bytes(code + o.code_firstlineno, 4)
                .try_into()
                .expect("4 bytes"),
        );
        let instr = mem.u64(frame + o.frame_instr);
        assert!(
            instr >= code + o.code_adaptive,
            "prev_instr inside the code"
        );
        let entry = mem.bytes(frame + is_entry, 1)[0];
        walked.push((qualname, filename, first, entry));
        frame = mem.u64(frame + o.frame_previous);
    }
    let s = |q: &str, l: i32, e: u8| (q.to_string(), "<string>".to_string(), l, e);
    assert_eq!(
        walked,
        [s("target", 3, 0), s("outer", 6, 0), s("<module>", 1, 1)],
        "innermost first; only the module frame is an entry frame"
    );
}
