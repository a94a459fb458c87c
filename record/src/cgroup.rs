//! `--cgroup PATH`: tracing only the tasks of one cgroup v2 directory and its descendants.
//!
//! The BPF programs check `bpf_current_task_under_cgroup` against a one-slot
//! `BPF_MAP_TYPE_CGROUP_ARRAY` holding the directory's descriptor, first thing in every
//! program (before anything is reserved in the ring). That helper knows only the unified
//! (v2) hierarchy, so a v1 directory is refused up front, naming where cgroup2 is mounted
//! (on hybrid hosts, `/sys/fs/cgroup/unified`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `statfs.f_type` of a cgroup v2 file system.
pub const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Opens `path` as a cgroup v2 directory, or says why it is not one (a usage error).
pub fn open(path: &Path) -> Result<File, String> {
    let shown = path.display();
    if !path.is_absolute() {
        return Err(format!(
            "--cgroup {shown}: give the absolute path of a cgroup v2 directory{}",
            hint()
        ));
    }
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("--cgroup {shown}: {e}"))?;
    if !dir.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(format!("--cgroup {shown}: not a directory{}", hint()));
    }
    // SAFETY: fstatfs writes into the zeroed struct it is given; the descriptor is open.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(dir.as_raw_fd(), &mut st) } != 0 {
        return Err(format!(
            "--cgroup {shown}: {}",
            std::io::Error::last_os_error()
        ));
    }
    if st.f_type as i64 != CGROUP2_SUPER_MAGIC {
        return Err(format!(
            "--cgroup {shown}: not a cgroup v2 directory (cgroup v1 and other file systems \
             cannot be checked by the BPF programs){}",
            hint()
        ));
    }
    Ok(dir)
}

/// Where cgroup2 is mounted, from `/proc/self/mounts`.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, at, ty) = (f.next()?, f.next()?, f.next()?);
        (ty == "cgroup2").then(|| PathBuf::from(urec_probe::unescape_mount_field(at)))
    })
}

fn hint() -> String {
    match cgroup2_mount() {
        Some(at) => format!("; cgroup2 is mounted at {}", at.display()),
        None => "; this system has no cgroup2 mounted".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals() {
        let e = open(Path::new("relative/dir")).unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        let e = open(Path::new("/tmp")).unwrap_err();
        assert!(e.contains("not a cgroup v2 directory"), "{e}");
        let e = open(Path::new("/no/such/cgroup")).unwrap_err();
        assert!(e.contains("/no/such/cgroup"), "{e}");
        assert_eq!(urec_probe::unescape_mount_field(r"/a\040b"), "/a b");
    }
}
