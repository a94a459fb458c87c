//! The security model's promises about files (SPEC "Security model"): `-o` never moves
//! anything but a regular file aside, nor attaches anything when it cannot be created, and the
//! output is handed to the sudo user through its own descriptor; what is not a regular file is
//! named as what it is; file-derived text reaches terminals escaped.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo on a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A device, a directory, a FIFO and a symbolic link as `-o`: each refused with exit 2 before
/// anything is attached, and left exactly where and what it was (no `.old`).
#[test]
fn output_that_is_not_a_regular_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let subdir = dir.path().join("adir");
    std::fs::create_dir(&subdir).unwrap();
    let fifo = dir.path().join("afifo");
    mkfifo(&fifo);
    let link = dir.path().join("alink");
    std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
    let cases: [(&Path, &str); 4] = [
        (Path::new("/dev/null"), "a character device"),
        (&subdir, "a directory"),
        (&fifo, "a FIFO"),
        (&link, "a symbolic link"),
    ];
    for (path, what) in cases {
        let out = record(&[
            "-o",
            path.to_str().unwrap(),
            "-e",
            "libc:malloc",
            "--",
            "true",
        ])
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path:?}: {stderr}");
        assert!(stderr.contains(what), "{path:?}: {stderr}");
        let mut old = path.as_os_str().to_owned();
        old.push(".old");
        assert!(!Path::new(&old).exists(), "{path:?} was moved aside");
    }
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
    assert!(subdir.is_dir());
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

/// `-o` naming a program (here a copy of `true`, standing for `-o /usr/bin/bash` or the
/// executable of a `-p` process) or any file that is not a recording: exit 2 before anything is
/// attached, the file untouched and nothing moved to `.old`. urec used to rename it away and
/// write the recording in its place; two such runs lost a machine's bash.
#[test]
fn output_that_is_not_a_recording_is_never_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("true");
    std::fs::copy("/usr/bin/true", &program).unwrap();
    let before = std::fs::read(&program).unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, b"keep me").unwrap();
    for (path, what) in [(&program, "an executable"), (&notes, "a file")] {
        let shown = path.to_str().unwrap();
        let out = record(&["-o", shown, "-e", "libc:malloc", "--", "true"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "-o {shown}: {stderr}");
        assert!(
            stderr.contains(&format!("is {what}, not a urec recording")),
            "{stderr}"
        );
        assert!(!dir.path().join(format!("{shown}.old")).exists());
    }
    assert_eq!(std::fs::read(&program).unwrap(), before);
    assert_eq!(std::fs::read(&notes).unwrap(), b"keep me");
}

/// Unmounts on drop, so that a failed assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `-o` on a read-only file system, for a new file and for an existing one (which could not be
/// moved aside either): exit 2 with a message before anything is attached, the existing file
/// left as it was. urec used to learn it from the create, after attaching, and exit 1.
#[test]
fn output_on_a_read_only_file_system_is_refused_before_attaching() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    let mount = |args: &[&str]| {
        let status = Command::new("mount").args(args).arg(&ro).status().unwrap();
        assert!(status.success(), "mount {args:?}");
    };
    mount(&["-t", "tmpfs", "-o", "size=1m", "tmpfs"]);
    let _mounted = Mounted(ro.clone());
    let old = ro.join("old.data");
    // The first bytes of a recording: a file urec would move aside were it writable.
    let first: &[u8] = b"\x89UREC\r\n\x1a\x02\x00\x02\x00";
    std::fs::write(&old, first).unwrap();
    mount(&["-o", "remount,ro"]);
    for path in [ro.join("new.data"), old.clone()] {
        let shown = path.to_str().unwrap();
        let out = record(&["-v", "-o", shown, "-e", "libc:getpid", "--", "true"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "-o {shown}: {stderr}");
        assert!(stderr.contains(&format!("-o {shown}")), "{stderr}");
        assert!(stderr.contains("read-only file system"), "{stderr}");
        assert!(!stderr.contains("attached"), "attached first: {stderr}");
    }
    assert_eq!(std::fs::read(&old).unwrap(), first);
    assert!(!ro.join("old.data.old").exists());
    assert!(!ro.join("new.data").exists());
}

/// A probe target that is a FIFO or a device: exit 2 saying what is there, not "cannot find"
/// a file that exists; the FIFO is not opened (no hang).
#[test]
fn a_probe_target_that_is_a_fifo_or_a_device_says_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("prog");
    mkfifo(&fifo);
    let out_path = dir.path().join("out.data");
    for (target, what) in [
        (fifo.to_str().unwrap(), "a FIFO"),
        ("/dev/null", "a character device"),
    ] {
        let spec = format!("{target}:main");
        let out = urec_bounded(&[
            "record",
            "-q",
            "-o",
            out_path.to_str().unwrap(),
            "-e",
            &spec,
            "--",
            "true",
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {stderr}");
        assert!(
            stderr.contains(&format!("is not a regular file ({what})")),
            "{spec}: {stderr}"
        );
        assert!(!stderr.contains("cannot find"), "{spec}: {stderr}");
    }
    assert!(!out_path.exists());
}

/// Under sudo the output goes to SUDO_UID:SUDO_GID through `fchown` on the file's descriptor:
/// strace sees no chown by path, which a symbolic link swapped in after the create would turn
/// against another file.
#[test]
fn the_output_is_handed_over_by_descriptor() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.data");
    let trace = dir.path().join("strace.txt");
    let out = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=chown,fchown,lchown,fchownat",
            "-o",
        ])
        .arg(&trace)
        .arg(UREC)
        .args(["record", "-q", "-o"])
        .arg(&out_path)
        .args(["-e", "libc:getpid", "--", "true"])
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .output()
        .expect("running strace (apt-get install strace)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = std::fs::read_to_string(&trace).unwrap();
    assert!(calls.contains("fchown("), "no fchown: {calls}");
    for by_path in ["chown(\"", "lchown(", "fchownat("] {
        assert!(!calls.contains(by_path), "a chown by path: {calls}");
    }
    let meta = std::fs::metadata(&out_path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(meta.mode() & 0o777, 0o600);
}

/// A recording from elsewhere whose text holds terminal escapes and whose mappings name a
/// FIFO, a directory, a device and a path through `..`.
fn hostile_recording(path: &Path, fifo: &Path, dir: &Path) {
    use urec_format::*;
    let header = Header {
        host: "h\r\x1b[1Aspoofed".into(),
        kernel: "6.18.0".into(),
        arch: "x86_64".into(),
        command: vec!["urec".into(), "record".into(), "\x1b]0;title\x07".into()],
        workload: Some(vec!["./app\u{202e}txt.exe".into()]),
        start_unix_ns: 0,
        start_monotonic_ns: 0,
    };
    let file = std::fs::File::create(path).unwrap();
    let mut w = Writer::with_options(file, &header, WriterOptions::default()).unwrap();
    w.write(&Record::Probe(Probe {
        id: 0,
        name: "app:work\x1b[31m".into(),
        specs: vec!["app:work".into()],
        binary: "/usr/bin/../bin/true".into(),
        build_id: None,
        symbol: "work".into(),
        vaddr: Svma(0x1100),
        offset: FileOffset(0x1100),
        kind: ProbeKind::EntryReturn,
        stack_mode: StackMode::FramePointer,
        args: Vec::new(),
        site: None,
    }))
    .unwrap();
    w.write(&Record::Process(Process {
        pid: 7,
        ppid: 1,
        comm: "evil\x1b[2J\x1b[H\n".into(),
        exe: "/usr/bin/../bin/true".into(),
        start_ns: Some(0),
        ..Default::default()
    }))
    .unwrap();
    let paths = [
        fifo.to_str().unwrap().to_string(),
        dir.to_str().unwrap().to_string(),
        "/dev/zero".to_string(),
        "/usr/bin/../bin/true".to_string(),
    ];
    for (i, p) in paths.iter().enumerate() {
        let start = 0x10000 * (i as u64 + 1);
        w.write(&Record::Mapping(Mapping {
            pid: 7,
            time_ns: 0,
            start: Avma(start),
            end: Avma(start + 0x1000),
            offset: FileOffset(0),
            path: p.clone(),
            dev: 0,
            inode: 0,
            build_id: None,
        }))
        .unwrap();
    }
    w.write(&Record::Stack(Stack {
        id: 0,
        frames: vec![Avma(0x10010), Avma(0x20010), Avma(0x30010), Avma(0x40010)],
        truncated: false,
        python: Vec::new(),
        python_truncated: false,
    }))
    .unwrap();
    common::recording::write_three_calls_and_finish(w);
}

/// Runs `urec ARGS` and fails the test if it has not finished after 30 s (a blocking open of
/// a FIFO would hang it).
fn urec_bounded(args: &[&str]) -> std::process::Output {
    let child = Command::new(UREC)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("urec {args:?} still running after 30 s");
        }
    }
}

fn assert_no_raw_controls(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let bad: Vec<char> = text
        .chars()
        .filter(|&c| (c.is_control() && c != '\n' && c != '\t') || c == '\u{202e}')
        .collect();
    assert!(bad.is_empty(), "{what} has raw {bad:?}:\n{text}");
}

/// Every command on the hostile recording: finishes (no FIFO opened), opens no directory,
/// device or `..` path (warnings say so), exits 0, and prints no control character raw; the
/// flamegraph is well-formed XML (checked by Python's XML parser).
#[test]
fn a_hostile_recording_neither_hangs_nor_reaches_the_terminal_raw() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("lib.so");
    mkfifo(&fifo);
    let subdir = dir.path().join("adir");
    std::fs::create_dir(&subdir).unwrap();
    let data = dir.path().join("hostile.data");
    hostile_recording(&data, &fifo, &subdir);
    let data = data.to_str().unwrap();
    let svg = dir.path().join("out.svg");
    let folded = dir.path().join("out.folded");
    let runs: [Vec<&str>; 5] = [
        vec!["report", "-i", data],
        vec![
            "report",
            "-i",
            data,
            "--flamegraph",
            svg.to_str().unwrap(),
            "--folded",
            folded.to_str().unwrap(),
        ],
        vec!["report", "-i", data, "--json", "-"],
        vec!["script", "-i", data],
        vec!["info", "-i", data],
    ];
    for args in &runs {
        let out = urec_bounded(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        // JSON is for programs: serde escapes control characters (`\u001b`) and leaves
        // other text exact, bidirectional controls included.
        if args.contains(&"--json") {
            assert!(!out.stdout.iter().any(|&b| b < 0x20 && b != b'\n'));
        } else {
            assert_no_raw_controls(&format!("{args:?} stdout"), &out.stdout);
        }
        assert_no_raw_controls(&format!("{args:?} stderr"), &out.stderr);
        if args[0] == "report" && args.len() == 3 {
            assert!(stderr.contains("without `..`"), "{stderr}");
            // What is at a recorded path is named, not called missing.
            for (path, what) in [
                (fifo.to_str().unwrap(), "a FIFO"),
                (subdir.to_str().unwrap(), "a directory"),
                ("/dev/zero", "a character device"),
            ] {
                let said = format!("{path}: not a regular file ({what}), not opened");
                assert!(stderr.contains(&said), "{said}: {stderr}");
            }
            assert!(!stderr.contains("not found"), "{stderr}");
            assert!(stdout_has(&out, "\\x1b[31m"), "the probe name, escaped");
        }
    }
    let json = String::from_utf8_lossy(&urec_bounded(&runs[2]).stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["recording"]["workload"][0], "./app\u{202e}txt.exe",
        "JSON keeps the exact text"
    );
    assert_no_raw_controls("folded", &std::fs::read(&folded).unwrap());
    let parsed = Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E; E.parse(sys.argv[1])",
        ])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        parsed.status.success(),
        "the SVG is not well-formed XML: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    assert!(fifo.exists() && subdir.is_dir());
}

fn stdout_has(out: &std::process::Output, needle: &str) -> bool {
    String::from_utf8_lossy(&out.stdout).contains(needle)
}
