//! Finding the files to symbolize with: the binary itself (through `--symfs`, its recorded
//! path, or by build id) and its separate debug file (by build id, then by `.gnu_debuglink`).
//!
//! This is done here rather than left to blazesym because blazesym only looks for debug files
//! through a `.gnu_debuglink` (its build-id lookup is a step of that search, so a binary
//! stripped without a debuglink finds nothing), knows nothing of `--symfs` or build-id
//! mismatches, and reports a bad debuglink checksum as an error for the whole binary. Owning
//! the search keeps perf's conventions in one readable place and lets every candidate be
//! verified before use: same build id when both files have one, else the debuglink CRC.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use object::{Object, ObjectSection, ObjectSegment};

/// What symbolization needs to know about one ELF file, read once from its headers.
#[derive(Debug)]
pub(crate) struct ElfInfo {
    pub build_id: Option<Vec<u8>>,
    /// `PT_LOAD` segments as (file offset, file size, virtual address).
    pub loads: Vec<(u64, u64, u64)>,
    /// The file carries DWARF (a `.debug_info` with contents, not a stripped `NOBITS` one).
    pub has_dwarf: bool,
    /// The file has a `.symtab` with contents.
    pub has_symtab: bool,
    /// `.gnu_debuglink`: file name and CRC32 of the debug file.
    pub debuglink: Option<(String, u32)>,
}

impl ElfInfo {
    /// Reads the headers of `path`; `None` if it cannot be opened or is not an object file.
    pub fn read(path: &Path) -> Option<ElfInfo> {
        let file = File::open(path).ok()?;
        // SAFETY: the mapping is read-only and dropped before returning; a file truncated
        // under us could fault, as with any mmap-based reader (blazesym maps it as well).
        let map = unsafe { Mmap::map(&file) }.ok()?;
        let obj = object::File::parse(&*map).ok()?;
        let build_id = obj.build_id().ok().flatten().map(<[u8]>::to_vec);
        let loads = obj
            .segments()
            .map(|s| {
                let (off, size) = s.file_range();
                (off, size, s.address())
            })
            .collect();
        let has_dwarf = obj
            .section_by_name(".debug_info")
            .and_then(|s| s.file_range())
            .is_some_and(|(_, size)| size > 0);
        let has_symtab = obj
            .section_by_name(".symtab")
            .and_then(|s| s.file_range())
            .is_some_and(|(_, size)| size > 0);
        let debuglink = obj
            .gnu_debuglink()
            .ok()
            .flatten()
            .map(|(name, crc)| (String::from_utf8_lossy(name).into_owned(), crc));
        Some(ElfInfo {
            build_id,
            loads,
            has_dwarf,
            has_symtab,
            debuglink,
        })
    }

    /// Worth using as a separate debug file: it has DWARF or at least a symbol table.
    pub fn has_dwarf_or_symbols(&self) -> bool {
        self.has_dwarf || self.has_symtab
    }

    /// The virtual address (as symbols and DWARF state it) that a file offset is loaded at,
    /// through the `PT_LOAD` segment containing it.
    pub fn offset_to_vaddr(&self, offset: u64) -> Option<u64> {
        self.loads
            .iter()
            .find(|&&(off, size, _)| offset >= off && offset - off < size)
            .map(|&(off, _, vaddr)| vaddr.wrapping_add(offset - off))
    }
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
/// (the full path, then the file name alone), then the recorded path itself.
pub(crate) fn binary_candidates(recorded: &Path, symfs: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(symfs) = symfs {
        let rel = recorded.strip_prefix("/").unwrap_or(recorded);
        out.push(symfs.join(rel));
        if let Some(name) = recorded.file_name() {
            out.push(symfs.join(name));
        }
    }
    out.push(recorded.to_path_buf());
    out
}

/// Where a binary with this build id may be found when the recorded path holds another file:
/// `DIR/.build-id/xx/rest` (and perf's `DIR/.build-id/xx/rest/elf`) under `--symfs` and each
/// debug dir (Debian's `/usr/lib/debug/.build-id/xx/rest` links to the binary), and perf's
/// build-id cache `~/.debug/.build-id/xx/rest/elf`.
///
/// A `rest.debug` file is deliberately not a substitute: `objcopy --only-keep-debug` keeps the
/// program headers' addresses but zeroes their file offsets, so file offsets could only be
/// guessed, and rebasing is exact or not at all.
pub(crate) fn binary_by_build_id(
    build_id: &[u8],
    symfs: Option<&Path>,
    debug_dirs: &[PathBuf],
    home: Option<&Path>,
) -> Vec<PathBuf> {
    let Some(rel) = build_id_rel(build_id) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for dir in symfs
        .into_iter()
        .chain(debug_dirs.iter().map(PathBuf::as_path))
    {
        out.push(dir.join(&rel));
        out.push(dir.join(&rel).join("elf"));
    }
    if let Some(home) = home {
        out.push(home.join(".debug").join(&rel).join("elf"));
    }
    out
}

/// Candidate separate debug files for a binary, in search order (perf's and gdb's
/// conventions): `DIR/.build-id/xx/rest.debug` for each debug dir, perf's cache
/// `~/.debug/.build-id/xx/rest/debug`, then for a `.gnu_debuglink` name: `DIR/name`,
/// `DIR/<binary's dir>/name`, next to the binary, and in `.debug/` next to it.
pub(crate) fn debug_candidates(
    binary: &Path,
    recorded: &Path,
    info: &ElfInfo,
    debug_dirs: &[PathBuf],
    home: Option<&Path>,
) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(rel) = info.build_id.as_deref().and_then(build_id_rel) {
        for dir in debug_dirs {
            out.push(with_suffix(&dir.join(&rel), ".debug"));
        }
        if let Some(home) = home {
            out.push(home.join(".debug").join(&rel).join("debug"));
        }
    }
    if let Some((name, _)) = &info.debuglink {
        let name = Path::new(name);
        // A debuglink is a bare file name; anything else is not to be followed around the
        // file system.
        if name.components().count() == 1 {
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
pub(crate) fn debug_file_matches(binary: &ElfInfo, candidate: &Path, cand: &ElfInfo) -> bool {
    match (&binary.build_id, &cand.build_id) {
        (Some(a), Some(b)) => a == b,
        _ => match &binary.debuglink {
            Some((_, crc)) => file_crc32(candidate) == Some(*crc),
            None => false,
        },
    }
}

fn file_crc32(path: &Path) -> Option<u32> {
    let file = File::open(path).ok()?;
    // SAFETY: read-only mapping, dropped before returning.
    let map = unsafe { Mmap::map(&file) }.ok()?;
    Some(crc32(&map))
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and `.gnu_debuglink` use it).
fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn symfs_candidates() {
        let c = binary_candidates(Path::new("/usr/bin/x"), Some(Path::new("/s")));
        assert_eq!(
            c,
            vec![
                PathBuf::from("/s/usr/bin/x"),
                PathBuf::from("/s/x"),
                PathBuf::from("/usr/bin/x")
            ]
        );
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
