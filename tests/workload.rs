#![cfg(feature = "record")]
//! `-- COMMAND` as the user sees it: the command runs as it would without urec (foreground
//! process group, default SIGPIPE, its own exit status, no zombies piling up under urec), and
//! when urec fails after starting it, nothing of it is left running. Also the errors that must
//! name their real cause (the open-files limit) and the options refused before attaching.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture::Fixture;
use common::{have_root, poll, record};

/// `busy`: calls `leaf` for ever (a data file grows as fast as urec can write it).
const BUSY_C: &str = r#"
volatile unsigned long sink;
__attribute__((noinline)) unsigned long leaf(unsigned long x) { sink += x; return x * 3; }
int main(void) { for (unsigned long i = 0;; i++) leaf(i); }
"#;

fn busy() -> Fixture {
    Fixture::build("busy", BUSY_C, &["-O1", "-fno-omit-frame-pointer"])
}

/// A small tmpfs, unmounted when dropped (also when an assertion fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("running mount");
        assert!(st.success(), "mount -t tmpfs failed");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_write_error_stops_the_command_and_everything_it_started() {
    if !have_root() {
        return;
    }
    let t = busy();
    let mnt = Tmpfs::mount(&t.data("mnt"), "256k");
    let d = t.data("pids");
    std::fs::create_dir(&d).unwrap();
    let d = d.to_str().unwrap();
    // A session leader of its own, a child ignoring SIGTERM (only SIGKILL ends it), an orphan
    // (reparented to urec, the subreaper), and the command itself busy calling `leaf`.
    // Their output goes elsewhere: a survivor holding urec's stderr pipe would block the read.
    let script = format!(
        "exec >/dev/null 2>&1
         setsid sleep 1000 & echo $! > {d}/setsid
         (trap '' TERM; exec sleep 1001) & echo $! > {d}/stubborn
         (sleep 1002 & echo $! > {d}/orphan)
         echo $$ > {d}/command
         exec {}",
        t.path()
    );
    let out = mnt.0.join("x.data");
    let spec = format!("{}:leaf x=arg1", t.path());
    let started = Instant::now();
    let mut u = record(&[
        "-q",
        "-e",
        &spec,
        "-o",
        out.to_str().unwrap(),
        "-d",
        "60",
        "--",
        "sh",
        "-c",
        &script,
    ])
    .stdin(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let status = poll(Duration::from_secs(90), "urec did not stop", || {
        u.try_wait().unwrap()
    });
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(u.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let names = ["command", "setsid", "stubborn", "orphan"];
    let pids: Vec<(&str, u32)> = names
        .iter()
        .map(|n| (*n, read_pid(&Path::new(d).join(n))))
        .collect();
    let left: Vec<_> = pids.iter().filter(|(_, p)| alive(*p)).collect();
    // Clean up before asserting, so a failure leaves nothing behind either.
    for (_, p) in &left {
        // SAFETY: kill(2) of the processes this test's command started.
        unsafe { libc::kill(*p as libc::pid_t, libc::SIGKILL) };
    }
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "writing {}: No space left on device",
            out.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("stopping the command"), "{stderr}");
    assert!(left.is_empty(), "still running after urec exited: {left:?}");
    // The stubborn one took the 5 s grace; the file filled up in far less than the -d 60.
    assert!(elapsed < Duration::from_secs(45), "{elapsed:?}");
}

#[test]
fn the_command_runs_as_it_would_without_urec() {
    if !have_root() {
        return;
    }
    let t = busy();
    let d = t.data("out");
    std::fs::create_dir(&d).unwrap();
    let d = d.to_str().unwrap();
    let field =
        |pid: &str, n: usize| format!("$(sed 's/.*) //' /proc/{pid}/stat | cut -d' ' -f{n})");
    // Fields after the command name: 1 state, 2 ppid, 3 process group.
    let script = format!(
        "echo {} {} > {d}/pgrp
         yes | head -1 > /dev/null
         for i in 1 2 3 4 5 6 7 8 9 10; do (sleep 0.01 &); done
         (sleep 2 & echo $! > {d}/orphan)
         sleep 1
         echo {} > {d}/orphan_ppid
         for f in /proc/[0-9]*/stat; do sed 's/.*) //' $f; done 2>/dev/null |
             awk -v p=$PPID '$1 == \"Z\" && $2 == p' | wc -l > {d}/zombies
         exit 7",
        field("$$", 3),
        field("$PPID", 3),
        field(&format!("$(cat {d}/orphan)"), 2),
    );
    let spec = format!("{}:leaf", t.path());
    let out = t.data("x.data");
    let u = record(&[
        "-q",
        "-e",
        &spec,
        "-o",
        out.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ])
    .stdin(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let urec_pid = u.id();
    let o = u.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let read = |n: &str| std::fs::read_to_string(Path::new(d).join(n)).unwrap();
    // Its own status, not stolen by urec reaping orphans.
    assert_eq!(o.status.code(), Some(7), "{stderr}");
    // The same process group as urec: the terminal's foreground group when urec is in it.
    let pgrp: Vec<String> = read("pgrp").split_whitespace().map(String::from).collect();
    assert_eq!(pgrp.len(), 2, "{pgrp:?}");
    assert_eq!(pgrp[0], pgrp[1], "the command left urec's process group");
    // SIGPIPE back to its default: `yes` dies quietly instead of complaining.
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    // Orphans go to urec (the subreaper), and urec reaps them while recording.
    assert_eq!(read("orphan_ppid").trim(), urec_pid.to_string());
    assert_eq!(read("zombies").trim(), "0", "zombies under urec");
}

#[test]
fn a_low_open_files_limit_is_named_as_the_cause() {
    if !have_root() {
        return;
    }
    let t = busy();
    let out = t.data("x.data");
    // More binaries, more links: then the limit is met while attaching, where a refused link
    // must not be taken for the kernel refusing an offset.
    let mut many = vec![
        format!("-e {}:leaf", t.path()),
        "-e libc:getpid".to_string(),
    ];
    for copy in ["busy2", "busy3"] {
        let exe = t.data(copy);
        std::fs::copy(&t.exe, &exe).unwrap();
        many.push(format!("-e {}:leaf", exe.display()));
    }
    let message = "too many open files: raise the open-files limit (ulimit -n)";
    // The side-band takes a descriptor per CPU, and each of the BPF object's maps one (the
    // Python frame walk's seven among them; libc's probe gets DWARF stacks walked in the
    // kernel: its six maps and the recorder's handles on them, and the two of stack ids).
    let cpus = std::fs::read_dir("/sys/bus/cpu/devices").map_or(4, |d| d.count());
    let top = 72 + cpus;
    // One binary: a coarse sweep; several: every limit, not to miss the attach window.
    for (specs, step) in [(many[..1].join(" "), 4), (many.join(" "), 1)] {
        // Whatever the limit, urec either records or names the limit: never an old kernel,
        // never a refused function.
        let mut refused = Vec::new();
        for limit in (8..=top).step_by(step) {
            let o = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "ulimit -n {limit}; exec {} record -q {specs} -o {} -- true",
                    common::UREC,
                    out.display()
                ))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&o.stderr);
            if o.status.success() {
                continue;
            }
            let what = format!("ulimit -n {limit}, {specs}: {stderr}");
            assert_eq!(o.status.code(), Some(1), "{what}");
            assert!(stderr.contains(message), "{what}");
            assert!(!stderr.contains("6.12"), "{what}");
            assert!(!stderr.contains("refused"), "{what}");
            refused.push(limit);
        }
        assert!(
            refused.contains(&16),
            "{specs}: ulimit -n 16 not refused: {refused:?}"
        );
        assert!(
            refused.last() < Some(&top),
            "{specs}: never records: {refused:?}"
        );
    }
}

#[test]
fn outputs_that_cannot_hold_a_recording_are_refused_before_attaching() {
    // No root needed: refused before anything is attached.
    let t = busy();
    let spec = format!("{}:leaf", t.path());
    let dir = t.data("dir");
    std::fs::create_dir(&dir).unwrap();
    let fifo = t.data("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) on a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let missing = t.data("no/such/dir/x.data");
    let cases = [
        ("-".to_string(), "standard output"),
        (dir.display().to_string(), "a directory"),
        (fifo.display().to_string(), "a FIFO"),
        ("/dev/null".to_string(), "a character device"),
        (missing.display().to_string(), "No such file or directory"),
    ];
    for (o, why) in &cases {
        let out = record(&["-q", "-e", &spec, "-o", o, "--", "true"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "-o {o}: {stderr}");
        assert!(stderr.contains(&format!("-o {o}")), "-o {o}: {stderr}");
        assert!(stderr.contains(why), "-o {o}: {stderr}");
    }
    // Nothing renamed, nothing created.
    assert!(dir.is_dir() && !t.data("dir.old").exists());
    assert!(fifo.exists() && !t.data("fifo.old").exists());
    assert!(Path::new("/dev/null").exists() && !Path::new("/dev/null.old").exists());
    assert!(!Path::new("-").exists());
}

#[test]
fn a_kernel_thread_is_refused_as_a_pid() {
    // No root needed: refused before anything is attached.
    let kthread = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| urec_record::procfs::is_kernel_thread(&s))
        });
    let Some(pid) = kthread else {
        eprintln!("skipped: no kernel thread visible in /proc");
        return;
    };
    let t = busy();
    let spec = format!("{}:leaf", t.path());
    let out = t.data("x.data");
    let o = record(&["-q", "-e", &spec, "-o", out.to_str().unwrap(), "-p"])
        .arg(pid.to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("-p {pid}: a kernel thread")),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn pids_that_cannot_be_traced_are_refused() {
    // No root needed: refused before anything is attached.
    let t = busy();
    let spec = format!("{}:leaf", t.path());
    let out = t.data("x.data");
    // urec's own pid: it never traces itself, so it would wait for its own exit.
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "exec {} record -q -e {spec} -o {} -p $$",
            common::UREC,
            out.display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("that is urec itself"), "{stderr}");
    // A thread of this test: the filter and the exit watch take processes.
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        // SAFETY: gettid(2) has no preconditions.
        tx.send(unsafe { libc::gettid() } as u32).unwrap();
        let _ = done_rx.recv();
    });
    let tid = rx.recv().unwrap();
    let o = record(&["-q", "-e", &spec, "-o", out.to_str().unwrap(), "-p"])
        .arg(tid.to_string())
        .output()
        .unwrap();
    drop(done_tx);
    thread.join().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    let me = std::process::id();
    assert!(
        stderr.contains(&format!("-p {tid}: a thread of process {me}; use -p {me}")),
        "{stderr}"
    );
    assert!(!out.exists());
}

#[test]
fn an_output_that_is_a_needed_file_is_refused() {
    // No root needed: refused before anything is attached.
    let t = busy();
    let spec = format!("{}:leaf", t.path());
    for (o, what) in [
        (t.path().to_string(), "a probed binary"),
        (
            urec_record::command::find_program("true")
                .unwrap()
                .display()
                .to_string(),
            "the command",
        ),
    ] {
        let out = record(&["-q", "-e", &spec, "-o", &o, "--", "true"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "-o {o}: {stderr}");
        assert!(
            stderr.contains(&format!("-o {o}: that is {what}")),
            "{stderr}"
        );
        assert!(Path::new(&o).exists());
    }
}

#[test]
fn a_4k_ring_with_dwarf_stacks_is_refused_naming_the_minimum() {
    // No root needed: refused before anything is attached. Every record with a DWARF stack
    // copy would be larger than the ring, so every entry would be lost.
    let t = busy();
    let spec = format!("{}:leaf", t.path());
    let out = t.data("x.data");
    let o = record(&[
        "-q",
        "-e",
        &spec,
        "-g",
        "dwarf",
        "--buffer-size",
        "4K",
        "-o",
        out.to_str().unwrap(),
        "--",
        "true",
    ])
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("use --buffer-size 128K or more"),
        "{stderr}"
    );
    assert!(!out.exists());
}
