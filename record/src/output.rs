//! The output file: `-o FILE` (default `urec.data`).
//!
//! An existing file is kept as `FILE.old` (perf's habit: a second run must not destroy the
//! first). The new file is created with mode 0600, because it may hold arguments and command
//! lines; under `sudo` it is handed to the invoking user (`SUDO_UID`/`SUDO_GID`) so that user
//! can run `urec report` on it without root. The file is only created once everything that can
//! be refused (specs, privileges, the kernel's verdict on the programs) has passed: a bad spec
//! never clobbers an earlier recording.
//!
//! Only a regular file is ever moved aside: `sudo urec record -o /dev/null` must not rename the
//! device, nor `-o DIR` a directory ([`check`] refuses them up front, [`create`] again at the
//! moment of creation). Ownership is handed over through the new file's own descriptor
//! (`fchown`): a `chown` by path would follow a symbolic link that someone planted at that
//! path after the exclusive create, in a world-writable directory.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Refuses, before anything is attached, an `-o` that can never hold a recording: `-` (the
/// footer is written by seeking back, which a pipe cannot do), an existing path that is not a
/// regular file (a device, a directory, a FIFO, a symbolic link: [`create`] would rename it to
/// `.old`, and `-o /dev/null` would move the device away), and a file in a directory that does
/// not exist or where nothing can be created (a read-only file system). Nothing is renamed.
pub fn check(path: &Path) -> std::result::Result<(), String> {
    let shown = path.display();
    if path.as_os_str() == "-" {
        return Err(
            "-o -: the data file cannot be standard output (its footer is written by \
             seeking back); give a file name, e.g. -o urec.data, and run urec report on it"
                .to_string(),
        );
    }
    // Not following a symbolic link: it is the link that would be moved aside, and a link
    // planted in a shared directory is exactly what must not be trusted.
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_file() {
            return Err(format!(
                "-o {shown}: exists and is {}; the data file must be a regular file (an \
                 existing one is kept as {shown}.old; nothing was renamed)",
                urec_untrusted::describe(&m.file_type())
            ));
        }
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::metadata(parent) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "-o {shown}: {} is not a directory",
                parent.display()
            ))
        }
        Err(e) => return Err(format!("-o {shown}: {}: {e}", parent.display())),
    }
    writable(parent).map_err(|e| match e.raw_os_error() {
        Some(libc::EROFS) => format!(
            "-o {shown}: {} is on a read-only file system; give a path where the data file \
             can be created",
            parent.display()
        ),
        _ => format!(
            "-o {shown}: cannot create files in {}: {e}",
            parent.display()
        ),
    })
}

/// Refuses an existing `-o` that is not a recording, and a `FILE.old` that is not one either:
/// only a recording (or an empty file) is ever moved aside, and only onto nothing or an older
/// recording. `-o /usr/bin/bash`, or an `-o` naming the program a `-p` process runs, would
/// otherwise rename the program away and put the recording in its place (seen: two such runs
/// lost bash itself, the second moving the first recording over bash.old). Separate from
/// [`check`] so that the request can first say the more precise "that is a probed binary".
pub fn check_kept(path: &Path) -> std::result::Result<(), String> {
    check_replaceable(path, "")?;
    check_replaceable(&old_path(path), ".old")
}

/// `FILE.old`, where an existing recording at `FILE` is kept.
fn old_path(path: &Path) -> PathBuf {
    let mut old = path.as_os_str().to_owned();
    old.push(".old");
    PathBuf::from(old)
}

/// Refuses `path` when it exists and holds something other than a urec recording: `create`
/// would move it (or, for `.old`, overwrite it). An empty file holds nothing to lose.
fn check_replaceable(path: &Path, role: &str) -> std::result::Result<(), String> {
    use std::io::Read;
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let shown = path.display();
    if !m.file_type().is_file() {
        return Err(format!(
            "-o: {shown} exists and is {}; urec keeps an earlier recording as FILE.old and \
             never moves anything else aside (nothing was renamed)",
            urec_untrusted::describe(&m.file_type())
        ));
    }
    if m.len() == 0 {
        return Ok(());
    }
    let mut prefix = [0u8; 8];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut prefix))
        .map_err(|e| format!("-o: reading {shown} to see whether it is a recording: {e}"))?;
    if urec_format::is_recording(&prefix[..n]) {
        return Ok(());
    }
    let what = if m.permissions().mode() & 0o111 != 0 {
        "an executable"
    } else {
        "a file"
    };
    let fate = if role.is_empty() {
        format!("would be renamed to {shown}.old")
    } else {
        "would be overwritten by the earlier recording".to_string()
    };
    Err(format!(
        "-o: {shown} exists and is {what}, not a urec recording; it {fate}: remove it or choose \
         another -o (nothing was renamed)"
    ))
}

/// Whether files can be created (and an existing one renamed) in `dir`, asked of the kernel
/// with urec's effective ids: a read-only file system says `EROFS` even to root, which
/// otherwise would only learn it from the create, after the probes were attached.
fn writable(dir: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
    // SAFETY: faccessat(2) of a NUL-terminated path; it writes nothing.
    let r = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates `path` for writing as described in the module docs.
pub fn create(path: &Path) -> Result<File> {
    check(path).map_err(anyhow::Error::msg)?;
    check_kept(path).map_err(anyhow::Error::msg)?;
    if std::fs::symlink_metadata(path).is_ok() {
        let old = old_path(path);
        std::fs::rename(path, &old).with_context(|| {
            format!(
                "keeping the existing {} as {}",
                path.display(),
                old.display()
            )
        })?;
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    if let Some((uid, gid)) = sudo_owner() {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            .with_context(|| format!("handing {} to uid {uid} (SUDO_UID)", path.display()))?;
    }
    Ok(file)
}

/// The data file as the recording writes it: an error names the file, because "No space left
/// on device" alone does not say which device (the file is written from deep inside the
/// recording, where nothing else knows its name).
#[derive(Debug)]
pub struct Output {
    file: File,
    path: PathBuf,
}

impl Output {
    /// `file`, created at `path`.
    pub fn new(file: File, path: &Path) -> Output {
        Output {
            file,
            path: path.to_path_buf(),
        }
    }

    /// The file, to sync once it is complete.
    pub fn into_file(self) -> File {
        self.file
    }

    fn named(&self, err: io::Error) -> io::Error {
        io::Error::new(
            err.kind(),
            format!("writing {}: {err}", self.path.display()),
        )
    }
}

impl io::Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf).map_err(|e| self.named(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush().map_err(|e| self.named(e))
    }
}

fn sudo_owner() -> Option<(u32, u32)> {
    let uid = std::env::var("SUDO_UID").ok()?.parse().ok()?;
    let gid = std::env::var("SUDO_GID").ok()?.parse().ok()?;
    Some((uid, gid))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The first bytes of a recording: what makes a file one that may be moved aside.
    const RECORDING: &[u8] = b"\x89UREC\r\n\x1a\x02\x00\x02\x00";

    #[test]
    fn never_moves_a_file_that_is_not_a_recording() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("bash");
        std::fs::write(&program, b"\x7fELF\x02\x01\x01").unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = create(&program).unwrap_err().to_string();
        assert!(
            err.contains("is an executable, not a urec recording"),
            "{err}"
        );
        assert_eq!(std::fs::read(&program).unwrap(), b"\x7fELF\x02\x01\x01");
        assert!(!dir.path().join("bash.old").exists());

        let notes = dir.path().join("notes.txt");
        std::fs::write(&notes, b"keep me").unwrap();
        let err = check_kept(&notes).unwrap_err();
        assert!(err.contains("is a file, not a urec recording"), "{err}");

        // A recording whose .old is someone else's file: that file would be overwritten.
        let data = dir.path().join("run.data");
        std::fs::write(&data, RECORDING).unwrap();
        std::fs::write(dir.path().join("run.data.old"), b"keep me too").unwrap();
        let err = create(&data).unwrap_err().to_string();
        assert!(err.contains("run.data.old exists"), "{err}");
        assert!(err.contains("overwritten"), "{err}");
        assert_eq!(
            std::fs::read(dir.path().join("run.data.old")).unwrap(),
            b"keep me too"
        );
        // An older recording there is replaced as before.
        std::fs::write(dir.path().join("run.data.old"), RECORDING).unwrap();
        drop(create(&data).unwrap());
        assert_eq!(std::fs::metadata(&data).unwrap().len(), 0);
    }

    #[test]
    fn refuses_what_cannot_hold_a_recording() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check(Path::new("-"))
            .unwrap_err()
            .contains("standard output"));
        assert!(check(dir.path()).unwrap_err().contains("a directory"));
        assert!(check(&dir.path().join("no/such.data"))
            .unwrap_err()
            .contains("No such file"));
        assert_eq!(check(&dir.path().join("new.data")), Ok(()));
        std::fs::write(dir.path().join("old.data"), RECORDING).unwrap();
        assert_eq!(check(&dir.path().join("old.data")), Ok(()));
        std::fs::write(dir.path().join("empty.data"), b"").unwrap();
        assert_eq!(check(&dir.path().join("empty.data")), Ok(()));
        assert_eq!(check(Path::new("urec-test-not-there.data")), Ok(()));
    }

    #[test]
    fn keeps_old_and_uses_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("urec.data");
        std::fs::write(&path, RECORDING).unwrap();
        drop(create(&path).unwrap());
        assert_eq!(
            std::fs::read(dir.path().join("urec.data.old")).unwrap(),
            RECORDING
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        let err = check(Path::new("/dev/null")).unwrap_err();
        assert!(err.contains("a character device"), "{err}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        assert!(check(&link).unwrap_err().contains("a symbolic link"));
        assert!(!dir.path().join("link.old").exists());
    }
}
