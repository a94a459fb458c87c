//! The output file: `-o FILE` (default `urec.data`).
//!
//! An existing file is kept as `FILE.old` (perf's habit: a second run must not destroy the
//! first). The new file is created with mode 0600, because it may hold arguments and command
//! lines; under `sudo` it is handed to the invoking user (`SUDO_UID`/`SUDO_GID`) so that user
//! can run `urec report` on it without root. The file is only created once everything that can
//! be refused (specs, privileges, the kernel's verdict on the programs) has passed: a bad spec
//! never clobbers an earlier recording.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Creates `path` for writing as described in the module docs.
pub fn create(path: &Path) -> Result<File> {
    if std::fs::symlink_metadata(path).is_ok() {
        let mut old = path.as_os_str().to_owned();
        old.push(".old");
        let old = PathBuf::from(old);
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
        chown(path, uid, gid)
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

fn chown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn keeps_old_and_uses_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("urec.data");
        std::fs::write(&path, b"first").unwrap();
        drop(create(&path).unwrap());
        assert_eq!(
            std::fs::read(dir.path().join("urec.data.old")).unwrap(),
            b"first"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
