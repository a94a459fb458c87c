//! The security model's promises about files (SPEC "Security model"): `-o` never moves
//! anything but a regular file aside, and the output is handed to the sudo user through its
//! own descriptor; file-derived text reaches terminals escaped.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
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
        let out = record(&["-o", path.to_str().unwrap(), "-e", "libc:malloc", "--", "true"])
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
        .args(["-f", "-qq", "-e", "trace=chown,fchown,lchown,fchownat", "-o"])
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
