//! Finding the files to symbolize with: the binary itself (through `--symfs`, its recorded
//! path, or by build id) and its separate debug file (by build id, then by `.gnu_debuglink`).
//!
//! `--symfs DIR` stands for the recording host's root, as in perf: with it, recorded paths and
//! the system debug directories (`/usr/lib/debug`, `/lib/debug`, `~/.debug`) are looked up under
//! DIR only, never on this host, so a workstation can be simulated exactly; explicit
//! `--debug-dir`s still apply.
//!
//! This is done here rather than left to blazesym because blazesym only looks for debug files
//! through a `.gnu_debuglink` (its build-id lookup is a step of that search, so a binary
//! stripped without a debuglink finds nothing), knows nothing of `--symfs` or build-id
//! mismatches, and reports a bad debuglink checksum as an error for the whole binary. Owning
//! the search keeps perf's conventions in one readable place and lets every candidate be
//! verified before use: same build id when both files have one, else the debuglink CRC.

use std::fs::File;
use std::path::{Component, Path, PathBuf};

use crate::elf::ElfInfo;
use crate::SymbolizeOptions;

/// The system debug directories, searched after any `--debug-dir`.
const SYSTEM_DEBUG_DIRS: [&str; 2] = ["/usr/lib/debug", "/lib/debug"];

/// Every directory a search may look in, fixed once per report.
#[derive(Clone, Debug)]
pub(crate) struct SearchPaths {
    /// `--symfs DIR`: the recording host's root.
    pub symfs: Option<PathBuf>,
    /// `--debug-dir`s, then the system ones (under `--symfs` when given).
    pub debug_dirs: Vec<PathBuf>,
    /// perf's build-id cache, `~/.debug` (under `--symfs` when given).
    pub perf_cache: Option<PathBuf>,
}

impl SearchPaths {
    pub fn new(opts: &SymbolizeOptions, home: Option<&Path>) -> SearchPaths {
        let under_root = |p: &Path| match &opts.symfs {
            Some(root) => root.join(p.strip_prefix("/").unwrap_or(p)),
            None => p.to_path_buf(),
        };
        let mut debug_dirs = opts.debug_dirs.clone();
        debug_dirs.extend(SYSTEM_DEBUG_DIRS.iter().map(|d| under_root(Path::new(d))));
        SearchPaths {
            symfs: opts.symfs.clone(),
            debug_dirs,
            perf_cache: home.map(|h| under_root(&h.join(".debug"))),
        }
    }
}

/// A file that may be the binary or debug file sought: opened the untrusted way (regular files
/// only, never blocking), its headers read through `pread`, never mapped: a file truncated
/// under the report makes a short read, not `SIGBUS`.
pub(crate) struct Candidate {
    pub path: PathBuf,
    pub file: File,
    pub info: ElfInfo,
}

impl Candidate {
    /// `None` when `path` cannot be opened, is not a regular file, or is not an object file.
    pub fn open(path: &Path) -> Option<Candidate> {
        Candidate::open_or_refused(path).ok().flatten()
    }

    /// [`Candidate::open`], telling a path that holds something other than a regular file
    /// (`Err`: what it is, e.g. "not a regular file (a FIFO)") from one that holds nothing:
    /// a warning that calls a FIFO "not found" sends the user looking for a missing file.
    pub fn open_or_refused(path: &Path) -> Result<Option<Candidate>, String> {
        let file = match urec_untrusted::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return Err(e.to_string()),
            Err(_) => return Ok(None),
        };
        Ok(ElfInfo::read(&file).map(|info| Candidate {
            path: path.to_path_buf(),
            file,
            info,
        }))
    }
}

/// Whether a path that a data file names may be opened at all: absolute, and without `..`
/// (which could climb out of `--symfs`). Paths from `/proc/PID/maps` are always like this, so
/// anything else was written by hand.
pub(crate) fn is_clean_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// `xx/rest` for a build id, as `.build-id` directories lay files out.
pub(crate) fn build_id_rel(build_id: &[u8]) -> Option<PathBuf> {
    // Anything shorter than 8 bytes is not a real build id and would collide.
    if build_id.len() < 8 {
        return None;
    }
    let hex: String = build_id.iter().map(|b| format!("{b:02x}")).collect();
    Some(PathBuf::from(".build-id").join(&hex[..2]).join(&hex[2..]))
}

/// Candidate paths for the binary recorded at `recorded`, in search order: under `--symfs`
/// the full path, then the file name alone, and never the host's file; else the recorded path.
pub(crate) fn binary_candidates(recorded: &Path, symfs: Option<&Path>) -> Vec<PathBuf> {
    let Some(symfs) = symfs else {
        return vec![recorded.to_path_buf()];
    };
    let rel = recorded.strip_prefix("/").unwrap_or(recorded);
    let mut out = vec![symfs.join(rel)];
    if let Some(name) = recorded.file_name() {
        out.push(symfs.join(name));
    }
    out
}

/// Where a binary with this build id may be found when the recorded path holds another file or
/// none: gdb's `DIR/.build-id/xx/rest` and perf's `DIR/.build-id/xx/rest/elf` under `--symfs`
/// and each debug dir (Debian's `/usr/lib/debug/.build-id/xx/rest` links to the binary), and
/// perf's build-id cache `~/.debug/.build-id/xx/rest/elf`.
pub(crate) fn binary_by_build_id(build_id: &[u8], paths: &SearchPaths) -> Vec<PathBuf> {
    let Some(rel) = build_id_rel(build_id) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for dir in paths.symfs.iter().chain(&paths.debug_dirs) {
        out.push(dir.join(&rel));
        out.push(dir.join(&rel).join("elf"));
    }
    if let Some(cache) = &paths.perf_cache {
        out.push(cache.join(&rel).join("elf"));
    }
    out
}

/// Debug files for a build id, in search order: gdb's `DIR/.build-id/xx/rest.debug` and perf's
/// `DIR/.build-id/xx/rest/debug` in each debug dir, then perf's cache
/// `~/.debug/.build-id/xx/rest/debug`.
pub(crate) fn debug_by_build_id(build_id: &[u8], paths: &SearchPaths) -> Vec<PathBuf> {
    let Some(rel) = build_id_rel(build_id) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for dir in &paths.debug_dirs {
        out.push(with_suffix(&dir.join(&rel), ".debug"));
        out.push(dir.join(&rel).join("debug"));
    }
    if let Some(cache) = &paths.perf_cache {
        out.push(cache.join(&rel).join("debug"));
    }
    out
}

/// Candidate separate debug files for a binary, in search order (perf's and gdb's
/// conventions): by build id ([`debug_by_build_id`]), then for a `.gnu_debuglink` name:
/// `DIR/name`, `DIR/<binary's dir>/name`, next to the binary, and in `.debug/` next to it.
pub(crate) fn debug_candidates(
    binary: &Path,
    recorded: &Path,
    info: &ElfInfo,
    paths: &SearchPaths,
) -> Vec<PathBuf> {
    let mut out = info
        .build_id
        .as_deref()
        .map_or_else(Vec::new, |id| debug_by_build_id(id, paths));
    let debug_dirs = &paths.debug_dirs;
    if let Some((name, _)) = &info.debuglink {
        let name = Path::new(name);
        // A debuglink is a bare file name; anything else (`..` included) is not to be
        // followed around the file system.
        if matches!(
            name.components().collect::<Vec<_>>()[..],
            [Component::Normal(_)]
        ) {
            let mut dirs_of_binary: Vec<&Path> = Vec::new();
            for p in [recorded, binary] {
                if let Some(dir) = p.parent() {
                    if !dirs_of_binary.contains(&dir) {
                        dirs_of_binary.push(dir);
                    }
                }
            }
            for dir in debug_dirs {
                out.push(dir.join(name));
                for bdir in &dirs_of_binary {
                    out.push(dir.join(bdir.strip_prefix("/").unwrap_or(bdir)).join(name));
                }
            }
            if let Some(dir) = binary.parent() {
                out.push(dir.join(name));
                out.push(dir.join(".debug").join(name));
            }
        }
    }
    // The binary itself is never its own debug file.
    out.retain(|p| p != binary);
    out.dedup();
    out
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Whether `candidate` is the debug file of the binary described by `binary`: the same build
/// id when both have one, else (a debuglink without build ids) the debuglink's CRC32 of the
/// whole file.
pub(crate) fn debug_file_matches(binary: &ElfInfo, candidate: &Candidate) -> bool {
    match (&binary.build_id, &candidate.info.build_id) {
        (Some(a), Some(b)) => a == b,
        _ => match &binary.debuglink {
            Some((_, crc)) => file_crc32(&candidate.file) == Some(*crc),
            None => false,
        },
    }
}

/// CRC-32 (IEEE, as zlib and `.gnu_debuglink` use it) of the whole file, read in pieces with
/// `pread` (a file truncated meanwhile just ends early).
fn file_crc32(file: &File) -> Option<u32> {
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut offset = 0u64;
    loop {
        let n = urec_untrusted::read_at(file, &mut buf, offset).ok()?;
        if n == 0 {
            return Some(crc.finalize());
        }
        crc.update(&buf[..n]);
        offset += n as u64;
    }
}

#[cfg(test)]
fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn only_clean_absolute_paths() {
        assert!(is_clean_absolute(Path::new("/usr/lib/x.so")));
        assert!(!is_clean_absolute(Path::new("/usr/../etc/shadow")));
        assert!(!is_clean_absolute(Path::new("lib/x.so")));
    }

    #[test]
    fn symfs_candidates_stay_under_symfs() {
        let c = binary_candidates(Path::new("/usr/bin/x"), Some(Path::new("/s")));
        assert_eq!(c, [PathBuf::from("/s/usr/bin/x"), PathBuf::from("/s/x")]);
        let c = binary_candidates(Path::new("/usr/bin/x"), None);
        assert_eq!(c, [PathBuf::from("/usr/bin/x")]);
    }

    #[test]
    fn symfs_moves_the_system_debug_dirs_not_the_explicit_ones() {
        let opts = SymbolizeOptions {
            symfs: Some("/s".into()),
            debug_dirs: vec!["/d".into()],
            debuginfod: false,
        };
        let paths = SearchPaths::new(&opts, Some(Path::new("/home/u")));
        assert_eq!(
            paths.debug_dirs,
            [
                PathBuf::from("/d"),
                PathBuf::from("/s/usr/lib/debug"),
                PathBuf::from("/s/lib/debug")
            ]
        );
        assert_eq!(paths.perf_cache, Some(PathBuf::from("/s/home/u/.debug")));
        let id = [0xab, 0xcd, 1, 2, 3, 4, 5, 6];
        let debug = debug_by_build_id(&id, &paths);
        assert_eq!(
            debug[0],
            PathBuf::from("/d/.build-id/ab/cd010203040506.debug")
        );
        assert_eq!(
            debug[1],
            PathBuf::from("/d/.build-id/ab/cd010203040506/debug")
        );
        assert!(debug
            .iter()
            .all(|p| p.starts_with("/d") || p.starts_with("/s")));
        let bins = binary_by_build_id(&id, &paths);
        assert!(bins
            .iter()
            .all(|p| p.starts_with("/d") || p.starts_with("/s")));
        assert!(bins.contains(&PathBuf::from("/d/.build-id/ab/cd010203040506/elf")));
    }

    #[test]
    fn build_id_layout() {
        assert_eq!(
            build_id_rel(&[0xab, 0xcd, 1, 2, 3, 4, 5, 6]),
            Some(PathBuf::from(".build-id/ab/cd010203040506"))
        );
        assert_eq!(build_id_rel(&[1, 2]), None);
    }
}
