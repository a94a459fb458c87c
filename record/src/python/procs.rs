//! Which processes run a known CPython, for the BPF Python frame walk (issue 33; SPEC.md,
//! "Interpreter frames (Python)").
//!
//! The programs walk a probed thread's interpreter frames only for a process in their
//! `py_procs` map (tgid → the run-time address of its `_PyRuntime` and a layout index), with
//! the struct offsets of its version in `py_layouts`. This module keeps both current, only when
//! stacks are recorded (the walk runs only for events that capture a stack). It observes the
//! process table's one mapping intake (`ProcessTable::take_mapping`), as
//! [`MappedBinaries`](crate::mapped::MappedBinaries) does, so processes found running at start
//! (`/proc` snapshots) and started later (side-band `mmap`) are seen alike:
//!
//! - every executable file mapping is run through [`urec_python::detect_image`], once per file
//!   (by build id, else device and inode, else path; negatives cached too). Every mapped file,
//!   not only the executable: a shared build's `bin/python3.12` has neither `Py_Version` nor
//!   `_PyRuntime`, its `libpython3.12.so` has both;
//! - a `Known` file gives the process its entry: `_PyRuntime`'s stated address plus the load
//!   bias of the mapping (the executable mapping and the file's load segments; `_PyRuntime`
//!   lives in a data segment of the same image, so the same bias);
//! - a fork child gets its parent's entry (same address space layout); an exec or exit removes
//!   the entry;
//! - an `Unknown` version is named once per version on stderr
//!   (`python3.14: unknown frame layout, native stacks only`) and nothing else changes.
//!
//! Changes are queued and written to the maps by [`PythonProcs::sync`], which the session calls
//! once the programs are loaded and after each release of side-band records.

use std::collections::HashSet;
use std::path::Path;

use urec_bpf::abi::{py_proc_bytes, PyEntry, PyLayout, PY_LAYOUTS};
use urec_elf::ElfImage;
use urec_format::hash::FxHashMap;
use urec_format::{Mapping, Nanos};
use urec_python::{Cpython, CurrentFrame, Detection, EntryMarker, FrameOffsets};

/// Disables the Python walk's map upkeep (so the programs never walk), to measure its cost or
/// to rule it out.
pub const NO_PYTHON_ENV: &str = "UREC_NO_PYTHON";

/// A file's identity for the detection cache.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum FileKey {
    BuildId(Vec<u8>),
    DevInode(u64, u64),
    Path(String),
}

/// What a file is, for the walk: a layout index and `_PyRuntime`'s stated address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Interpreter {
    layout: u32,
    runtime_svma: u64,
}

/// A process's entry in `py_procs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    runtime: u64,
    layout: u32,
    /// Side-band time it is valid from (an exec or exit before it does not remove it).
    since: Nanos,
}

/// One queued change of `py_procs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Update {
    Insert(u32, u64, u32),
    Remove(u32),
}

/// The Python processes and layouts; see the module docs. The default is disabled (tables of
/// recordings without stacks, `urec top`, unit tests).
#[derive(Debug, Default)]
pub struct PythonProcs {
    enabled: bool,
    /// Per file: its interpreter and load segments (for each mapping's bias), or None.
    files: FxHashMap<FileKey, Option<(Interpreter, Vec<urec_format::LoadSegment>)>>,
    /// `py_layouts`, by index.
    layouts: Vec<FrameOffsets>,
    /// The interpreter each layout was first entered for: what naming a frame needs (its
    /// offsets, and its version for the line table and entry markers).
    interpreters: Vec<Cpython>,
    layouts_written: usize,
    /// `py_active` is set (the programs look at `py_procs` from then on).
    active_written: bool,
    procs: FxHashMap<u32, Entry>,
    queue: Vec<Update>,
    /// Minor versions already named as unknown.
    warned: HashSet<(u8, u8)>,
}

impl PythonProcs {
    /// Keeps `py_procs` and `py_layouts` from now on, unless [`NO_PYTHON_ENV`] is set.
    pub fn enabled() -> PythonProcs {
        PythonProcs {
            enabled: std::env::var_os(NO_PYTHON_ENV).is_none(),
            ..PythonProcs::default()
        }
    }

    /// Whether any process runs a known CPython now (for tests and `-v`).
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Whether no process runs a known CPython now.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// The interpreter process `pid` runs, while it has an entry.
    pub fn cpython(&self, pid: u32) -> Option<&Cpython> {
        let e = self.procs.get(&pid)?;
        self.interpreters.get(e.layout as usize)
    }

    /// A mapping taken in by the process table (snapshot, side-band or survey).
    pub fn mapping(&mut self, m: &Mapping) {
        self.take(m, true);
    }

    /// [`PythonProcs::mapping`] if its file was looked at already; returns whether it was
    /// (else nothing is done).
    pub fn mapping_if_known(&mut self, m: &Mapping) -> bool {
        self.take(m, false)
    }

    fn take(&mut self, m: &Mapping, detect: bool) -> bool {
        if !self.enabled || !m.path.starts_with('/') {
            return true;
        }
        let key = match (&m.build_id, m.dev, m.inode) {
            (Some(id), _, _) => FileKey::BuildId(id.0.clone()),
            (None, dev, inode) if inode != 0 => FileKey::DevInode(dev, inode),
            _ => FileKey::Path(m.path.clone()),
        };
        if !self.files.contains_key(&key) {
            if !detect {
                return false;
            }
            let found = self.detect(m);
            self.files.insert(key.clone(), found);
        }
        let Some(Some((interp, loads))) = self.files.get(&key) else {
            return true;
        };
        let Some(bias) = m.start.load_bias(m.offset, loads) else {
            return true;
        };
        let entry = Entry {
            runtime: interp.runtime_svma.wrapping_add(bias),
            layout: interp.layout,
            since: m.time_ns,
        };
        self.insert(m.pid, entry);
        true
    }

    fn insert(&mut self, pid: u32, entry: Entry) {
        let same = self
            .procs
            .get(&pid)
            .is_some_and(|e| (e.runtime, e.layout) == (entry.runtime, entry.layout));
        self.procs.insert(pid, entry);
        if !same {
            self.queue
                .push(Update::Insert(pid, entry.runtime, entry.layout));
        }
    }

    /// The command urec starts (`-- COMMAND`, held before its exec) will run `program` (a
    /// `#!` script: its interpreter). When that is a known CPython built as a fixed-address
    /// executable (ET_EXEC, as Debian's `python3.11`), `_PyRuntime`'s address is known before
    /// the exec, so the entry goes in now: a short script runs its code within the
    /// milliseconds the side-band takes to say what it mapped. (A PIE or shared build's
    /// address is known only once mapped.)
    pub fn expect_exec(&mut self, pid: u32, program: &Path) {
        if !self.enabled {
            return;
        }
        let program = crate::command::script_interpreter(program).unwrap_or(program.into());
        let Ok(image) = ElfImage::open(&program) else {
            return;
        };
        let fixed = image
            .object()
            .is_some_and(|o| object::Object::kind(&o) == object::ObjectKind::Executable);
        if !exports_py_version(&image) {
            self.prewarm_libpython(&image, &program);
            return;
        }
        if !fixed {
            return;
        }
        if let Some((interp, _)) = self.known(&image) {
            self.insert(
                pid,
                Entry {
                    runtime: interp.runtime_svma,
                    layout: interp.layout,
                    since: 0,
                },
            );
        }
    }

    /// A shared build (`bin/python3.12` needing `libpython3.12.so.1.0`): its `_PyRuntime`
    /// address is known only once the library is mapped, but the detection (seconds' worth of
    /// symbol reading in a debug build, milliseconds in a release one) is done now, so that
    /// the mapping only computes its bias. Where the library is looked for: the program's
    /// RUNPATH / RPATH (`$ORIGIN` substituted) and the usual library directories. A guess that
    /// misses costs nothing but that time.
    fn prewarm_libpython(&mut self, image: &ElfImage, program: &Path) {
        let Some(dynstr) = image
            .section(".dynstr")
            .and_then(|s| image.section_bytes(s))
        else {
            return;
        };
        let names: Vec<&[u8]> = dynstr.split(|&c| c == 0).collect();
        let libs: Vec<&str> = names
            .iter()
            .filter(|n| n.starts_with(b"libpython"))
            .filter_map(|n| std::str::from_utf8(n).ok())
            .collect();
        if libs.is_empty() {
            return;
        }
        let origin = program.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut dirs: Vec<std::path::PathBuf> = names
            .iter()
            .filter(|n| n.starts_with(b"/") || n.starts_with(b"$ORIGIN"))
            .filter_map(|n| std::str::from_utf8(n).ok())
            .flat_map(|n| n.split(':'))
            .map(|d| d.replace("$ORIGIN", &origin.to_string_lossy()).into())
            .collect();
        dirs.extend(
            [
                "/usr/local/lib",
                "/usr/lib/x86_64-linux-gnu",
                "/usr/lib",
                "/lib",
            ]
            .iter()
            .map(Into::into),
        );
        for lib in libs {
            let Some(path) = dirs.iter().map(|d| d.join(lib)).find(|p| p.is_file()) else {
                continue;
            };
            let Ok(lib_image) = ElfImage::open(&path) else {
                continue;
            };
            if !exports_py_version(&lib_image) {
                continue;
            }
            let found = self.known(&lib_image);
            if let Some(id) = lib_image.build_id() {
                self.files
                    .insert(FileKey::BuildId(id.to_vec()), found.clone());
            }
            if let Ok(meta) = std::fs::metadata(&path) {
                use std::os::unix::fs::MetadataExt;
                self.files
                    .insert(FileKey::DevInode(meta.dev(), meta.ino()), found);
            }
        }
    }

    /// A fork: the child runs the parent's interpreter at the same addresses. A parent
    /// without an entry changes nothing: the child's pid had none (its previous holder's exit
    /// removed it), unless the command's was entered before its exec ([`expect_exec`]), which
    /// must stay.
    ///
    /// [`expect_exec`]: PythonProcs::expect_exec
    pub fn fork(&mut self, parent: u32, child: u32, time_ns: Nanos) {
        if let Some(&e) = self.procs.get(&parent) {
            self.insert(
                child,
                Entry {
                    since: time_ns,
                    ..e
                },
            );
        }
    }

    /// An exec or an exit of `pid` at `time_ns`: its entry, if older, goes.
    pub fn forget(&mut self, pid: u32, time_ns: Nanos) {
        if self.procs.get(&pid).is_some_and(|e| e.since <= time_ns) {
            self.procs.remove(&pid);
            self.queue.push(Update::Remove(pid));
        }
    }

    /// Writes the queued changes to the programs' maps.
    pub fn sync(&mut self, skel: &urec_bpf::UrecSkel<'_>) {
        use libbpf_rs::{MapCore, MapFlags};
        if self.queue.is_empty() && self.layouts_written == self.layouts.len() {
            return;
        }
        while self.layouts_written < self.layouts.len() {
            let i = self.layouts_written as u32;
            if let Some(bytes) = layout_bytes(&self.layouts[i as usize]) {
                let _ = skel
                    .maps
                    .py_layouts
                    .update(&i.to_ne_bytes(), &bytes, MapFlags::ANY);
            }
            self.layouts_written += 1;
        }
        if !self.active_written && self.queue.iter().any(|u| matches!(u, Update::Insert(..))) {
            let on = 1u32.to_ne_bytes();
            self.active_written = skel
                .maps
                .py_active
                .update(&0u32.to_ne_bytes(), &on, MapFlags::ANY)
                .is_ok();
        }
        for u in self.queue.drain(..) {
            // A full map or a gone entry only costs Python frames: never the recording.
            let _ = match u {
                Update::Insert(pid, runtime, layout) => skel.maps.py_procs.update(
                    &pid.to_ne_bytes(),
                    &py_proc_bytes(runtime, layout),
                    MapFlags::ANY,
                ),
                Update::Remove(pid) => skel.maps.py_procs.delete(&pid.to_ne_bytes()),
            };
        }
    }

    /// Runs the detection on a mapped file; None for anything not a known CPython.
    fn detect(&mut self, m: &Mapping) -> Option<(Interpreter, Vec<urec_format::LoadSegment>)> {
        // Through map_files first: the path is the process's to replace once mapped (and may
        // be inside a container); the path itself when the process is gone.
        let via = format!("/proc/{}/map_files/{:x}-{:x}", m.pid, m.start.0, m.end.0);
        let image = ElfImage::open(Path::new(&via))
            .or_else(|_| ElfImage::open(Path::new(&m.path)))
            .ok()?;
        if !exports_py_version(&image) {
            if exports(&image, b"_PyRuntime") {
                // A CPython before 3.11: no layout to walk, but named once like any unknown.
                self.known_at(&image, Path::new(&m.path));
            }
            return None;
        }
        self.known(&image)
    }

    /// [`urec_python::detect_image`], with its layout entered in `py_layouts` when known, and
    /// an unknown version named once.
    fn known(&mut self, image: &ElfImage) -> Option<(Interpreter, Vec<urec_format::LoadSegment>)> {
        self.known_at(image, Path::new(""))
    }

    /// [`PythonProcs::known`] for the file mapped at `path`, whose name tells the version of a
    /// CPython before 3.11 ([`urec_python::detect_named`]).
    fn known_at(
        &mut self,
        image: &ElfImage,
        path: &Path,
    ) -> Option<(Interpreter, Vec<urec_format::LoadSegment>)> {
        match urec_python::detect_named(image, path) {
            Detection::NotCpython => None,
            Detection::Unknown { version, .. } => {
                if self.warned.insert((version.major(), version.minor())) {
                    eprintln!(
                        "python{}.{}: unknown frame layout, native stacks only",
                        version.major(),
                        version.minor()
                    );
                }
                None
            }
            Detection::Known(py) => {
                if layout_bytes(&py.offsets).is_none() {
                    if self.warned.insert((py.version.major(), py.version.minor())) {
                        eprintln!(
                            "python{}.{}: unknown frame layout, native stacks only",
                            py.version.major(),
                            py.version.minor()
                        );
                    }
                    return None;
                }
                let layout = match self.layouts.iter().position(|l| *l == py.offsets) {
                    Some(i) => i,
                    None if self.layouts.len() < PY_LAYOUTS as usize => {
                        self.layouts.push(py.offsets);
                        self.interpreters.push((*py).clone());
                        self.layouts.len() - 1
                    }
                    None => return None,
                };
                Some((
                    Interpreter {
                        layout: layout as u32,
                        runtime_svma: py.runtime.0,
                    },
                    image.loads().to_vec(),
                ))
            }
        }
    }
}

/// Whether the file's dynamic string table names `Py_Version`: every CPython 3.11+ exports
/// it (and `_PyRuntime`) for its extension modules, the executable of a static build as well as
/// a `libpython`. A look at one section, so that the libraries and programs of every process
/// met (thousands of symbols each, a debug build's hundreds of thousands) are not searched
/// symbol by symbol.
fn exports_py_version(image: &ElfImage) -> bool {
    exports(image, b"Py_Version")
}

/// Whether the file's dynamic string table holds `symbol`.
fn exports(image: &ElfImage, symbol: &[u8]) -> bool {
    image
        .section(".dynstr")
        .and_then(|s| image.section_bytes(s))
        .is_some_and(|b| b.split(|&c| c == 0).any(|name| name == symbol))
}

/// `FrameOffsets` as the programs read them; None when the walk cannot read them (fields
/// too far apart for its one read per frame and per code object).
fn layout_bytes(o: &FrameOffsets) -> Option<Vec<u8>> {
    let (cframe, current_frame) = match o.current_frame {
        CurrentFrame::ViaCframe {
            cframe,
            current_frame,
        } => (Some(cframe), current_frame),
        CurrentFrame::Direct { current_frame } => (None, current_frame),
    };
    PyLayout {
        interpreters_head: o.runtime_interpreters_head,
        threads_head: o.interp_threads_head,
        tstate_next: o.tstate_next,
        thread_id: o.tstate_thread_id,
        cframe,
        current_frame,
        frame_previous: o.frame_previous,
        frame_code: o.frame_code,
        frame_instr: o.frame_instr,
        entry: match o.entry {
            EntryMarker::IsEntry { offset } => PyEntry::IsEntry(offset),
            EntryMarker::Owner { cstack } => PyEntry::Owner {
                offset: o.frame_owner,
                cstack,
            },
        },
        code_qualname: o.code_qualname,
        code_filename: o.code_filename,
        code_firstlineno: o.code_firstlineno,
        code_adaptive: o.code_adaptive,
        code_linetable: o.code_linetable,
        unicode_length: o.unicode_length,
        unicode_compact_data: o.unicode_compact_data.max(o.unicode_ascii_data),
        bytes_size: o.bytes_size,
        bytes_data: o.bytes_data,
    }
    .to_bytes()
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use urec_format::{Avma, FileOffset};

    const PYTHON311: &str = "/usr/bin/python3.11";
    const LIBPYTHON312: &str = "/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0";

    /// A mapping of `path`'s code in a process that does not exist (detection then reads the
    /// path itself).
    fn code_mapping(pid: u32, path: &str, start: u64, offset: u64, time_ns: Nanos) -> Mapping {
        Mapping {
            pid,
            time_ns,
            start: Avma(start),
            end: Avma(start + 0x1000),
            offset: FileOffset(offset),
            path: path.to_string(),
            dev: 0,
            inode: 0,
            build_id: None,
        }
    }

    fn table() -> PythonProcs {
        PythonProcs {
            enabled: true,
            ..PythonProcs::default()
        }
    }

    const NO_PID: u32 = 0x3fff_fff0;

    #[test]
    fn fixed_address_python_fork_exec_exit() {
        if !Path::new(PYTHON311).exists() {
            eprintln!("skipped: no {PYTHON311}");
            return;
        }
        let mut t = table();
        // Debian's python3.11: non-PIE, code at 0x41f000 from offset 0x1f000, _PyRuntime at
        // its stated address 0xa5b740.
        t.mapping(&code_mapping(NO_PID, PYTHON311, 0x41f000, 0x1f000, 100));
        assert_eq!(t.queue, vec![Update::Insert(NO_PID, 0xa5b740, 0)]);
        assert_eq!(t.layouts.len(), 1);
        // The same mapping again (snapshot, then side-band): nothing new to write.
        t.queue.clear();
        t.mapping(&code_mapping(NO_PID, PYTHON311, 0x41f000, 0x1f000, 100));
        assert!(t.queue.is_empty());
        // A fork: the child has the parent's entry.
        t.fork(NO_PID, NO_PID + 1, 200);
        assert_eq!(t.queue, vec![Update::Insert(NO_PID + 1, 0xa5b740, 0)]);
        t.queue.clear();
        // An exec older than the entry (the side-band's exec applied after its new image's
        // mapping was taken as read) keeps it; a later one removes it.
        t.forget(NO_PID + 1, 150);
        assert!(t.queue.is_empty());
        t.forget(NO_PID + 1, 300);
        assert_eq!(t.queue, vec![Update::Remove(NO_PID + 1)]);
        // A fork of a process without an entry gives none.
        t.queue.clear();
        t.fork(NO_PID + 5, NO_PID + 6, 400);
        assert!(t.queue.is_empty());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn not_python_is_cached_and_costs_nothing_more() {
        let mut t = table();
        let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
        if !Path::new(libc).exists() {
            return;
        }
        t.mapping(&code_mapping(NO_PID, libc, 0x7f00_0002_8000, 0x28000, 1));
        assert!(t.queue.is_empty() && t.is_empty());
        assert_eq!(t.files.len(), 1);
        assert_eq!(t.files.values().next(), Some(&None));
    }

    /// A shared build: the entry comes from the libpython mapping, rebased by its bias.
    #[test]
    fn shared_build_rebased_by_its_mapping() {
        if !Path::new(LIBPYTHON312).exists() {
            eprintln!("skipped: no {LIBPYTHON312}");
            return;
        }
        let image = ElfImage::open(Path::new(LIBPYTHON312)).unwrap();
        let code = *image.loads().iter().find(|l| l.exec).unwrap();
        let runtime = image.symbol_svma("_PyRuntime").unwrap().0;
        let base = 0x7f12_3400_0000u64;
        let start = base + (code.vaddr & !0xfff);
        let mut t = table();
        t.mapping(&code_mapping(
            NO_PID,
            LIBPYTHON312,
            start,
            code.offset & !0xfff,
            1,
        ));
        let bias = start - (code.offset & !0xfff) + code.offset - code.vaddr;
        assert_eq!(t.queue, vec![Update::Insert(NO_PID, runtime + bias, 0)]);
    }

    #[test]
    fn disabled_does_nothing() {
        let mut t = PythonProcs::default();
        t.mapping(&code_mapping(NO_PID, PYTHON311, 0x41f000, 0x1f000, 1));
        assert!(t.queue.is_empty() && t.files.is_empty());
    }
}
