//! The files traced processes mapped, kept open until the recording's symbols step.
//!
//! The symbols step runs after the probes are detached, when many traced processes have
//! exited, files have been deleted or replaced (a package upgrade, a rebuild) and some lived in
//! another mount namespace. Only a descriptor taken while the process lived still reaches the
//! exact file it mapped, so one is taken when a mapping is first seen — through
//! `/proc/PID/map_files/START-END` (the mapped file itself, whatever its path names now), else
//! through the process's root or the path, checked against the mapping's build id or inode.
//!
//! One descriptor per distinct file (by build id, else device and inode). The soft open-files
//! limit is raised to the hard one for this, and a reserve stays free for everything else the
//! recorder opens: a file that cannot be kept is looked up by path and build id later, as a
//! report would.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use urec_format::{Avma, BuildId};
use urec_untrusted::Identity;

/// Descriptors left for the recorder's own needs (links, side-band, the data file, reads).
const RESERVE: u64 = 256;

/// One kept file: what the recording calls it, and the open file.
#[derive(Debug)]
pub struct KeptFile {
    /// The mapped path as recorded.
    pub path: String,
    /// Its build id, when known.
    pub build_id: Option<BuildId>,
    /// The file the process mapped.
    pub file: File,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    BuildId(BuildId),
    DevInode(u64, u64),
}

/// The kept files of one recording.
#[derive(Debug, Default)]
pub struct KeptFiles {
    files: HashMap<Key, KeptFile>,
    tried: HashSet<Key>,
    budget: u64,
}

/// One executable mapping, as much of it as keeping its file needs.
pub struct MappedFile<'a> {
    /// The process that maps it.
    pub pid: u32,
    /// Start of the mapping (names `/proc/PID/map_files/START-END`).
    pub start: Avma,
    /// End of the mapping.
    pub end: Avma,
    /// The mapped file's path in the process.
    pub path: &'a str,
    /// Device of the mapped file, as the maps line says.
    pub dev: u64,
    /// Inode of the mapped file, as the maps line says.
    pub inode: u64,
    /// Its build id, when read.
    pub build_id: Option<&'a BuildId>,
}

impl KeptFiles {
    /// Keeps nothing (`--no-symbols`).
    pub fn disabled() -> KeptFiles {
        KeptFiles::default()
    }

    /// Ready to keep files: raises the soft open-files limit to the hard one and takes what is
    /// free beyond [`RESERVE`] as the budget.
    pub fn new() -> KeptFiles {
        crate::fds::raise_soft_limit();
        let budget = crate::fds::headroom()
            .map_or(4096, |(_, free)| free)
            .saturating_sub(RESERVE);
        KeptFiles {
            budget,
            ..KeptFiles::default()
        }
    }

    /// Takes a descriptor for the file behind `m`, once per distinct file.
    pub fn keep(&mut self, m: &MappedFile<'_>) {
        if self.budget == 0 || !m.path.starts_with('/') {
            return;
        }
        let key = match m.build_id {
            Some(id) => Key::BuildId(id.clone()),
            None if m.inode != 0 => Key::DevInode(m.dev, m.inode),
            None => return,
        };
        if !self.tried.insert(key.clone()) {
            return;
        }
        if let Some(file) = open_mapped(m) {
            self.budget -= 1;
            self.files.insert(
                key,
                KeptFile {
                    path: m.path.to_string(),
                    build_id: m.build_id.cloned(),
                    file,
                },
            );
        }
    }

    /// How many files are kept.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is kept.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The kept files, for the symbols step.
    pub fn into_files(self) -> Vec<KeptFile> {
        self.files.into_values().collect()
    }
}

/// The exact mapped file: `map_files` needs no check (it is the mapping's own file); a path is
/// accepted only if its build id, else its inode, is the mapping's.
fn open_mapped(m: &MappedFile<'_>) -> Option<File> {
    let map_file = PathBuf::from(format!(
        "/proc/{}/map_files/{:x}-{:x}",
        m.pid, m.start, m.end
    ));
    if let Ok(file) = urec_untrusted::open(&map_file) {
        return Some(file);
    }
    let rooted = Path::new(&format!("/proc/{}/root", m.pid)).join(m.path.trim_start_matches('/'));
    for path in [rooted.as_path(), Path::new(m.path)] {
        let Ok(file) = urec_untrusted::open(path) else {
            continue;
        };
        let same = match m.build_id {
            Some(id) => crate::procfs::read_build_id(&file).as_ref() == Some(id),
            // The side-band's device number is not always `st_dev` (btrfs subvolumes): the
            // inode decides, as in the unwinder.
            None => Identity::of(&file).is_ok_and(|i| i.inode == m.inode),
        };
        if same {
            return Some(file);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_mapped_file_once() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let m = crate::procfs::parse_maps(&maps)
            .into_iter()
            .find(|m| Path::new(&m.path) == exe)
            .unwrap();
        let mut kept = KeptFiles::new();
        let mapped = MappedFile {
            pid: std::process::id(),
            start: m.start,
            end: m.end,
            path: &m.path,
            dev: m.dev,
            inode: m.inode,
            build_id: None,
        };
        kept.keep(&mapped);
        kept.keep(&mapped);
        assert_eq!(kept.len(), 1);
        let files = kept.into_files();
        assert_eq!(files[0].path, m.path);
    }
}
