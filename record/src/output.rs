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
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Refuses an output path that exists and is not a regular file (a device, a directory, a
/// FIFO, a symbolic link), naming what it is; nothing is renamed.
pub fn check(path: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => Err(format!(
            "-o {}: exists and is {}; urec only replaces a regular file (kept as {}.old)",
            path.display(),
            urec_untrusted::describe(&meta.file_type()),
            path.display()
        )),
        _ => Ok(()),
    }
}

/// Creates `path` for writing as described in the module docs.
pub fn create(path: &Path) -> Result<File> {
    check(path).map_err(anyhow::Error::msg)?;
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
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            .with_context(|| format!("handing {} to uid {uid} (SUDO_UID)", path.display()))?;
    }
    Ok(file)
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
