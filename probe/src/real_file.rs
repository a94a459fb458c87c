//! The identity of the file a uprobe really lands on.
//!
//! A uprobe is placed on the real inode behind a path (the kernel's `d_real_inode`): for a file
//! of an overlayfs mount, the inode in the upper or lower layer that holds it. `stat` through the
//! overlay gives the overlay mount's own device number instead, one per mount, and
//! `/proc/PID/maps` shows the same on 6.x kernels: two containers of one image would look like
//! two files, be attached twice, and count each call twice. So for a file on overlayfs the
//! layer directories are read from the mount's options (`/proc/PID/mountinfo`, found by the
//! file's mount id) and the file is looked up in the upper layer, then the lower ones in
//! order; the first that has it, with the size, modification time and inode number (its low
//! 32 bits, which `xino` keeps) the overlay shows, is the real file. Anything unexpected falls
//! back to `stat`'s identity.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// `statfs.f_type` of overlayfs.
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

/// Device and inode of the file a uprobe on `open` lands on. `display` is the same file's path
/// as seen by the processes whose mount table is `mountinfo` (`/proc/PID/mountinfo`).
pub fn identity(open: &Path, display: &Path, mountinfo: &Path) -> std::io::Result<(u64, u64)> {
    let meta = std::fs::metadata(open)?;
    let stat_id = (meta.dev(), meta.ino());
    Ok(overlay_layer_file(open, display, mountinfo)
        .and_then(|real| {
            let m = std::fs::metadata(&real).ok()?;
            // The overlay shows the layer file's size and times, and its inode number
            // unless `xino` remaps it. The layer paths come from whoever mounted the overlay
            // (in a user namespace, an unprivileged process): they must name this file.
            let same = m.is_file()
                && m.len() == meta.len()
                && (m.mtime(), m.mtime_nsec()) == (meta.mtime(), meta.mtime_nsec())
                && (m.ino() == meta.ino() || m.ino() & 0xffff_ffff == meta.ino() & 0xffff_ffff);
            same.then_some((m.dev(), m.ino()))
        })
        .unwrap_or(stat_id))
}

/// The path of the layer file behind `open`, when it is on overlayfs.
fn overlay_layer_file(open: &Path, display: &Path, mountinfo: &Path) -> Option<PathBuf> {
    let c = std::ffi::CString::new(open.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs writes into the zeroed struct; the path is NUL-terminated.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut fs) } != 0
        || fs.f_type as i64 != OVERLAYFS_SUPER_MAGIC
    {
        return None;
    }
    // SAFETY: as above, for statx.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_MNT_ID, &mut stx) };
    if rc != 0 || stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return None;
    }
    let text = std::fs::read_to_string(mountinfo).ok()?;
    let mount = text
        .lines()
        .filter_map(parse_mountinfo)
        .find(|m| m.id == stx.stx_mnt_id)?;
    if mount.fstype != "overlay" {
        return None;
    }
    // The file's path inside the overlay: below the mount point, under the mount's root.
    let below = display.strip_prefix(&mount.mount_point).ok()?;
    let inside = Path::new(&mount.root).join(below);
    let inside = inside.strip_prefix("/").unwrap_or(&inside);
    let (upper, lowers) = layers(&mount.options);
    upper
        .into_iter()
        .chain(lowers)
        .map(|layer| PathBuf::from(layer).join(inside))
        .find(|p| std::fs::symlink_metadata(p).is_ok())
}

struct MountInfo {
    id: u64,
    root: String,
    mount_point: PathBuf,
    fstype: String,
    options: String,
}

/// One `/proc/PID/mountinfo` line: `ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTS [TAGS...] - FSTYPE
/// SOURCE SUPER_OPTS`.
fn parse_mountinfo(line: &str) -> Option<MountInfo> {
    let (head, tail) = line.split_once(" - ")?;
    let f: Vec<&str> = head.split(' ').collect();
    let t: Vec<&str> = tail.split(' ').collect();
    Some(MountInfo {
        id: f.first()?.parse().ok()?,
        root: unescape_mount_field(f.get(3)?),
        mount_point: PathBuf::from(unescape_mount_field(f.get(4)?)),
        fstype: t.first()?.to_string(),
        options: unescape_mount_field(t.get(2)?),
    })
}

/// `upperdir` and the `lowerdir` layers (top first) of overlayfs mount options (mountinfo's
/// octal escapes already undone), both the `lowerdir=A:B` and the `lowerdir+=A,lowerdir+=B`
/// spellings.
fn layers(options: &str) -> (Option<String>, Vec<String>) {
    let mut upper = None;
    let mut lowers = Vec::new();
    for opt in split_unescaped(options, ',') {
        if let Some(v) = opt.strip_prefix("upperdir=") {
            upper = Some(v.to_string());
        } else if let Some(v) = opt.strip_prefix("lowerdir+=") {
            lowers.push(v.to_string());
        } else if let Some(v) = opt.strip_prefix("lowerdir=") {
            lowers.extend(
                split_unescaped(v, ':')
                    .into_iter()
                    .filter(|l| !l.is_empty()),
            );
        }
    }
    (upper, lowers)
}

/// Splits at `sep` not preceded by a backslash (overlayfs escapes `,` and `:` in layer paths).
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut escaped = false;
    for ch in s.chars() {
        let last = out.last_mut().expect("never empty");
        if escaped {
            last.push(ch);
            escaped = false;
        } else if ch == '\\' {
            escaped = true;
        } else if ch == sep {
            out.push(String::new());
        } else {
            last.push(ch);
        }
    }
    out
}

/// A field of `/proc/PID/mountinfo` or `/proc/mounts` as the kernel meant it: they write
/// space, tab, newline and backslash as `\ooo`.
pub fn unescape_mount_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options() {
        let line =
            "812 700 0:40 / /var/lib/docker/overlay2/x/merged rw,relatime - overlay overlay \
                    rw,lowerdir=/l/a:/l/b,upperdir=/u,workdir=/w";
        let m = parse_mountinfo(line).unwrap_or_else(|| panic!("parsed"));
        assert_eq!(m.id, 812);
        assert_eq!(m.fstype, "overlay");
        assert_eq!(
            m.mount_point,
            PathBuf::from("/var/lib/docker/overlay2/x/merged")
        );
        assert_eq!(
            layers(&m.options),
            (
                Some("/u".into()),
                vec!["/l/a".to_string(), "/l/b".to_string()]
            )
        );
        assert_eq!(
            layers(&unescape_mount_field(
                "rw,lowerdir+=/a\\,b,lowerdir+=/c,upperdir=/d\\040e"
            )),
            (
                Some("/d e".into()),
                vec!["/a,b".to_string(), "/c".to_string()]
            )
        );
    }
}
