//! `-g kernel-dwarf` in the recorder: the unwind tables and process mappings the BPF walk
//! (`bpf/src/unwind.bpf.h`) reads, loaded on demand and evicted when unused.
//!
//! # What is loaded, and when
//!
//! Nothing up front: under `-a` every table of every process would be hundreds of MB. An event
//! the kernel cannot walk takes today's `-g dwarf` path (a stack copy, unwound here by
//! framehop); that event is the request. When it is unwound ([`KernelUnwind::on_fallback`]):
//!
//! - its process's executable mappings (start, end, load bias, table id), from the process
//!   table, go to `kd_procs` if the process was not there;
//! - the table of every binary its frames pass through is compiled
//!   ([`UnwindTable::compile`], the tables issue 30 proved against framehop) and written to
//!   `kd_words`, and its place to `kd_tables`.
//!
//! Waiting for that release costs a process's first tens of milliseconds (the event waits for
//! the side-band's horizon, then for the copies before it to be unwound): at sqlite3's malloc
//! rate, thousands of copies of kilobytes each, enough to fill the ring. So the first copy of a
//! process without an entry is also acted on as soon as it is read ([`KernelUnwind::early`]):
//! its mappings come from `/proc` then, as of that moment, and the tables of every binary it
//! maps are loaded (a handful; its first copy is often from start-up code, and the program's
//! own comes next).
//!
//! From then on the process's mapping changes (side-band `mmap` records, exec, exit) keep its
//! `kd_procs` entry current ([`KernelUnwind::added`], [`KernelUnwind::forget`]), and the next
//! events through the same code are walked in the kernel. A mapping of a binary whose table is
//! not loaded yet still gets a table id: the walk then falls back (rather than taking the pc
//! for unknown code and ending the stack), and that fallback loads it.
//!
//! Every `kd_procs` entry carries the `CLOCK_MONOTONIC` time of the view it reflects (the
//! event or mapping being released when it was written); the walk ignores an entry older than
//! the process's last exec (`kd_execs`, stamped by a `sched_process_exec` program) or its
//! start, so a pid reused or exec'd before the recorder caught up never has its stack walked
//! through the previous image's mappings.
//!
//! # Memory, stated and bounded
//!
//! - `kd_words`: [`WORDS`] u32 words (16 MiB), created with the map (mmapable array). libc's
//!   table is 28,700 words, python3.11's 65,100: about 140 such binaries at once. A table that
//!   does not fit is not loaded (counted, its events keep falling back).
//! - `kd_tables`: 4,096 ids × 32 bytes (128 KiB); binaries mapped by known processes at once.
//! - `kd_procs`: up to 2,048 processes × 8,208 bytes (16.8 MiB at most; allocated per process
//!   present, `BPF_F_NO_PREALLOC`), 256 executable mappings each (more are left out: their
//!   pcs fall back).
//! - `kd_execs`: an LRU of 65,536 × 12 bytes.
//! - `kd_cache`: per CPU, 4,096 cached rule words × 16 bytes (64 KiB per CPU).
//!
//! A table is evicted (its words freed, its id unused) as soon as no known process maps its
//! binary any more; a process is dropped at its exec or exit, and re-learnt on its next
//! fallback. The compiled tables are not kept here: reloading costs a compile (5 ms for libc).

use std::collections::HashMap;
use std::ops::Range;
use std::os::fd::AsFd;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use libbpf_rs::{Link, MapCore, MapFlags, MapHandle};
use urec_format::Mapping;
use urec_unwind_table::UnwindTable;

use crate::processes::ProcessTable;
use crate::unwind::{ElfUnwindInfo, FileKey, Unwinder};

/// Words of `kd_words`: 16 MiB. Keep a multiple of [`BLOCK_WORDS`].
pub const WORDS: u32 = 4 << 20;
/// u32 words per `kd_words` value (`KD_BLOCK_WORDS`).
const BLOCK_WORDS: u32 = 1024;
/// `KD_MAX_TABLES`.
const MAX_TABLES: u32 = 4096;
/// `KD_MAX_MAPPINGS`.
const MAX_MAPPINGS: usize = 256;
/// Bytes of a `struct kd_proc`.
const PROC_BYTES: usize = 16 + MAX_MAPPINGS * 32;

/// `kd_stats` indexes (`KD_S_*`), in order, with what each counts.
pub const KERNEL_COUNTS: [&str; 12] = [
    "walks",
    "complete",
    "too deep",
    "no process",
    "stale mappings",
    "unknown pc",
    "table not loaded",
    "fallback row",
    "read failed",
    "bad stack",
    "exact depth",
    "frames",
];

/// Before load: the walk on or off, its maps sized (`kd_words` to one block when off).
pub(crate) fn prepare(open: &mut urec_bpf::OpenUrecSkel<'_>, on: bool) -> Result<()> {
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("urec's BPF object has no .rodata")?;
    rodata.kernel_dwarf = u8::from(on);
    open.maps
        .kd_words
        .set_max_entries(if on { WORDS / BLOCK_WORDS } else { 1 })
        .context("sizing the unwind tables' map")?;
    open.progs.urec_kd_exec.set_autoload(on);
    // Off, the maps are not created at all: a recording without the walk takes no descriptor
    // (nor memory) for them. libbpf poisons the instructions that name them, which the
    // verifier never reaches: `kernel_dwarf` 0 prunes every path to them.
    let maps = &mut open.maps;
    for map in [
        &mut maps.kd_words,
        &mut maps.kd_tables,
        &mut maps.kd_procs,
        &mut maps.kd_execs,
        &mut maps.kd_stats,
        &mut maps.kd_cache,
    ] {
        map.set_autocreate(on)
            .context("leaving the unwind tables' maps out")?;
    }
    Ok(())
}

/// `kd_words`, mapped into the recorder: tables are written with a copy, not a syscall per
/// word.
struct Words {
    ptr: *mut u32,
    len: usize,
}

impl Words {
    fn write(&mut self, at: u32, words: &[u32]) {
        let at = at as usize;
        if at.checked_add(words.len()).is_none_or(|end| end > self.len) {
            return; // the allocator never gives such a range
        }
        // SAFETY: at..at + len lies within the mapping (checked above), which is ours and
        // writable; BPF readers see either the old or the new words of a range that no
        // loaded table refers to yet (the descriptor is published after the copy).
        unsafe { std::ptr::copy_nonoverlapping(words.as_ptr(), self.ptr.add(at), words.len()) };
    }
}

impl Drop for Words {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `KernelUnwind::new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len * 4) };
    }
}

/// First-fit allocation of word ranges in `kd_words`; freed ranges merge with neighbours.
#[derive(Debug)]
struct Alloc {
    free: Vec<Range<u32>>,
}

impl Alloc {
    fn new(words: u32) -> Self {
        Alloc {
            free: std::iter::once(0..words).collect(),
        }
    }

    fn take(&mut self, n: u32) -> Option<Range<u32>> {
        let i = self.free.iter().position(|r| r.end - r.start >= n)?;
        let start = self.free[i].start;
        self.free[i].start += n;
        if self.free[i].is_empty() {
            self.free.remove(i);
        }
        Some(start..start + n)
    }

    fn give(&mut self, r: Range<u32>) {
        let i = self.free.partition_point(|f| f.start < r.start);
        self.free.insert(i, r);
        if i + 1 < self.free.len() && self.free[i].end == self.free[i + 1].start {
            self.free[i].end = self.free[i + 1].end;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].end == self.free[i].start {
            self.free[i - 1].end = self.free[i].end;
            self.free.remove(i);
        }
    }

    fn free_words(&self) -> u32 {
        self.free.iter().map(|r| r.end - r.start).sum()
    }
}

/// One binary mapped by known processes.
struct File {
    id: u32,
    /// Mappings of known processes that refer to it.
    refs: u32,
    info: Arc<ElfUnwindInfo>,
    /// Where its table lies in `kd_words`, once loaded.
    loaded: Option<Range<u32>>,
    /// Could not be loaded (no room): not tried again while mapped.
    refused: bool,
}

/// One executable mapping of a known process.
#[derive(Clone)]
struct Map {
    range: Range<u64>,
    bias: u64,
    key: FileKey,
    id: u32,
}

/// What the recorder did for the in-kernel walk.
#[derive(Clone, Debug, Default)]
pub struct KernelUnwindStats {
    /// Tables compiled and written to `kd_words`.
    pub tables_loaded: u64,
    /// Tables evicted (no known process maps the binary any more).
    pub tables_evicted: u64,
    /// Tables that did not fit into `kd_words`.
    pub tables_refused: u64,
    /// The most words in use at once.
    pub peak_words: u32,
    /// `kd_procs` entries written.
    pub proc_writes: u64,
    /// Executable mappings left out (a process with more than 256).
    pub mappings_left_out: u64,
    /// `kd_procs` writes the kernel refused (more than 2,048 processes).
    pub proc_write_failures: u64,
    /// Nanoseconds spent here (compiles, map writes).
    pub ns: u64,
    /// Entries written from `/proc` when a process's first copy was read ([`KernelUnwind::early`]).
    pub early_entries: u64,
}

/// The recorder's side of `-g kernel-dwarf`; see the module docs.
pub struct KernelUnwind {
    words: Words,
    alloc: Alloc,
    tables: MapHandle,
    procs: MapHandle,
    stats_map: MapHandle,
    _exec_link: Link,
    files: HashMap<FileKey, File>,
    free_ids: Vec<u32>,
    next_id: u32,
    /// Known processes: their mappings as in `kd_procs`, sorted by start.
    known: HashMap<u32, Vec<Map>>,
    /// The latest time released (event or mapping): what a `kd_procs` entry is as of.
    now: u64,
    /// The last load's generation (`kd_table.loaded`; never 0).
    generation: u32,
    /// Processes whose entry was written from `/proc` ([`KernelUnwind::early`]): the time it
    /// is as of, later than the releases until they catch up.
    early: HashMap<u32, u64>,
    /// Processes [`KernelUnwind::early`] looked at (once each, until forgotten).
    early_tried: std::collections::HashSet<u32>,
    /// Tables compiled before the workload started ([`KernelUnwind::precompile`]), by build id.
    compiled: HashMap<FileKey, Arc<UnwindTable>>,
    build_ids: crate::procfs::BuildIdCache,
    stats: KernelUnwindStats,
}

impl KernelUnwind {
    /// Maps `kd_words` and attaches the exec stamp (`urec_kd_exec`); the programs were loaded
    /// with [`prepare`]`(.., true)`.
    pub fn new(skel: &urec_bpf::UrecSkel<'_>) -> Result<Self> {
        let link = skel
            .progs
            .urec_kd_exec
            .attach()
            .context("attaching the exec stamp (tp_btf/sched_process_exec)")?;
        let len = WORDS as usize;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&skel.maps.kd_words.as_fd());
        // SAFETY: a fresh shared read-write mapping of the map's fd; a BPF_F_MMAPABLE array
        // maps its values from offset 0, max_entries * 4096 bytes (what `prepare` sized).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len * 4,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!(
                "mapping the unwind tables' map: {}",
                std::io::Error::last_os_error()
            );
        }
        let words = Words {
            ptr: ptr.cast(),
            len,
        };
        Ok(KernelUnwind {
            words,
            alloc: Alloc::new(WORDS),
            tables: MapHandle::try_from(&skel.maps.kd_tables)?,
            procs: MapHandle::try_from(&skel.maps.kd_procs)?,
            stats_map: MapHandle::try_from(&skel.maps.kd_stats)?,
            _exec_link: link,
            files: HashMap::new(),
            free_ids: Vec::new(),
            next_id: 0,
            known: HashMap::new(),
            now: 0,
            generation: 0,
            early: HashMap::new(),
            early_tried: Default::default(),
            compiled: HashMap::new(),
            build_ids: crate::procfs::BuildIdCache::new(),
            stats: KernelUnwindStats::default(),
        })
    }

    /// An event of `pid` at `time_ns` took the copy-and-unwind path and `frames` (innermost
    /// first, return addresses as read) is what framehop made of it: makes sure the process's
    /// mappings and the tables of these frames' binaries are in the maps.
    pub fn on_fallback(
        &mut self,
        unwinder: &mut Unwinder,
        table: &mut ProcessTable,
        pid: u32,
        time_ns: u64,
        frames: &[u64],
    ) {
        let started = std::time::Instant::now();
        self.now = self.now.max(time_ns);
        let mut dirty = false;
        if let std::collections::hash_map::Entry::Vacant(e) = self.known.entry(pid) {
            e.insert(Vec::new());
            for m in table.mappings(pid).to_vec() {
                self.insert(unwinder, &m);
            }
            dirty = true;
        }
        for (i, &frame) in frames.iter().enumerate() {
            let pc = if i == 0 { frame } else { frame.wrapping_sub(1) };
            let key = self.known.get(&pid).and_then(|maps| {
                let i = maps.partition_point(|m| m.range.start <= pc);
                let m = maps.get(i.checked_sub(1)?)?;
                (pc < m.range.end).then(|| m.key.clone())
            });
            if let Some(key) = key {
                self.load(&key);
            }
        }
        if dirty {
            self.write_proc(pid);
        }
        self.stats.ns += started.elapsed().as_nanos() as u64;
    }

    /// Compiles, before the workload starts, the tables of binaries the recording surely walks
    /// through (the probed ones, the command's program and its libraries): a process's first
    /// moments then wait for no compile (libc's takes 9 ms, in which sqlite3 makes about 1,000
    /// probed calls).
    /// Files without a build id are left to be compiled when loaded.
    /// The files' unwind info goes into `unwinder`'s cache too: a process's first copy then
    /// reads no file either ([`KernelUnwind::early`]).
    pub fn precompile(&mut self, unwinder: &mut Unwinder, paths: &[std::path::PathBuf]) {
        let started = std::time::Instant::now();
        for path in paths {
            let Ok(file) = urec_untrusted::open(path) else {
                continue;
            };
            let Ok(info) = ElfUnwindInfo::read(&file) else {
                continue;
            };
            let Some(id) = info.build_id.clone().filter(|id| !id.is_empty()) else {
                continue;
            };
            let key = FileKey::BuildId(id);
            if self.compiled.contains_key(&key) || !info.has_cfi() {
                continue;
            }
            if let Ok(table) = compile(&info) {
                self.compiled.insert(key.clone(), Arc::new(table));
                unwinder.seed_file(key, Arc::new(info));
            }
        }
        self.stats.ns += started.elapsed().as_nanos() as u64;
    }

    /// What [`KernelUnwind::precompile`] should compile for a recording: the probed binaries
    /// and, for `-- PROGRAM`, what [`KernelUnwind::program_files`] names.
    pub fn startup_files(opts: &crate::RecordOptions) -> Vec<std::path::PathBuf> {
        let mut paths: Vec<std::path::PathBuf> =
            opts.probes.iter().map(|p| p.open_path.clone()).collect();
        if let crate::Target::Command { program, .. } = &opts.target {
            // A script's frames are its interpreter's.
            let program = crate::command::script_interpreter(program).unwrap_or(program.clone());
            paths.extend(KernelUnwind::program_files(&program));
        }
        paths.sort();
        paths.dedup();
        paths
    }

    /// What [`KernelUnwind::precompile`] should compile for `-- PROGRAM`: the program, its
    /// interpreter (`PT_INTERP`'s path) and the libraries it names
    /// (`DT_NEEDED`), found as `-e LIB:FUNC` finds a library (the ld.so cache, then the
    /// standard directories; not through `RUNPATH`: what is not found is compiled when first
    /// needed, as before).
    fn program_files(program: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = vec![program.to_path_buf()];
        let Ok(image) = urec_elf::ElfImage::open(program) else {
            return out;
        };
        let (interpreter, needed) = image.dependencies();
        out.extend(interpreter.map(std::path::PathBuf::from));
        out.extend(
            needed
                .iter()
                .filter(|n| !n.contains('/'))
                .filter_map(|n| urec_probe::find_library(n)),
        );
        out
    }

    /// A copy of `pid`'s stack was just read from the ring, not released yet: if the walk has
    /// no entry for the process, writes one from `/proc` now, and loads the tables of the
    /// binaries it maps.
    pub fn early(&mut self, unwinder: &mut Unwinder, pid: u32) {
        if self.known.contains_key(&pid) || !self.early_tried.insert(pid) {
            return;
        }
        let started = std::time::Instant::now();
        // Taken before /proc is read: an exec after it makes the entry stale, never wrong.
        let Ok(as_of) = crate::sideband::monotonic_now() else {
            return;
        };
        // The mappings and their build ids only (what a table is keyed by), not a whole
        // snapshot: the process is making probed calls meanwhile, each a copy.
        let Some(mut mappings) = crate::procfs::maps(pid) else {
            return;
        };
        self.known.insert(pid, Vec::new());
        for mut m in mappings.drain(..) {
            if m.inode != 0 {
                m.build_id = self.build_ids.lookup_mapped(pid, &m);
            }
            self.insert(unwinder, &m.mapping(pid));
        }
        // Every binary the process maps, not only those of this stack: its first copy is often
        // taken during start-up (libc's init under ld.so), and the program's own code comes
        // next. A process maps a handful; under -a only processes that hit a probe count.
        let keys: Vec<FileKey> = self
            .known
            .get(&pid)
            .map(|maps| maps.iter().map(|m| m.key.clone()).collect())
            .unwrap_or_default();
        for key in &keys {
            self.load(key);
        }
        self.early.insert(pid, as_of);
        self.write_proc(pid);
        self.stats.early_entries += 1;
        self.stats.ns += started.elapsed().as_nanos() as u64;
    }

    /// A new executable mapping (in event order): applied to a known process's entry.
    pub fn added(&mut self, unwinder: &mut Unwinder, mapping: &Mapping) {
        if !self.known.contains_key(&mapping.pid) {
            return;
        }
        let started = std::time::Instant::now();
        self.now = self.now.max(mapping.time_ns);
        self.insert(unwinder, mapping);
        self.write_proc(mapping.pid);
        self.stats.ns += started.elapsed().as_nanos() as u64;
    }

    /// `pid` exec'd or exited at `time_ns`: its entry goes, and the tables no other process
    /// maps; unless the entry was written from `/proc` after that ([`KernelUnwind::early`]).
    pub fn forget(&mut self, pid: u32, time_ns: u64) {
        if self.early.get(&pid).is_some_and(|&as_of| as_of > time_ns) {
            return;
        }
        self.early.remove(&pid);
        self.early_tried.remove(&pid);
        let Some(maps) = self.known.remove(&pid) else {
            return;
        };
        let _ = self.procs.delete(&pid.to_ne_bytes());
        for m in maps {
            self.release(&m.key);
        }
    }

    /// Adds `mapping` to its (known) process, replacing what it overlaps.
    fn insert(&mut self, unwinder: &mut Unwinder, mapping: &Mapping) {
        let range = mapping.start.0..mapping.end.0;
        let Some(maps) = self.known.get_mut(&mapping.pid) else {
            return;
        };
        // Already there (read from /proc by `early`, then released from the side-band): not
        // replaced, which would evict a table only this process maps and load it again.
        let key = crate::unwind::file_key(mapping);
        if maps.iter().any(|m| m.range == range && m.key == key) {
            return;
        }
        let mut gone = Vec::new();
        maps.retain(|m| {
            let overlaps = m.range.start < range.end && range.start < m.range.end;
            if overlaps {
                gone.push(m.key.clone());
            }
            !overlaps
        });
        for key in gone {
            self.release(&key);
        }
        // Special mappings ([vdso], [uprobes]) have no table: the walk falls back in them
        // (the trampoline's returns are substituted before any lookup).
        if range.is_empty() || mapping.path.starts_with('[') {
            return;
        }
        let Some(info) = unwinder.file_info(mapping.pid, mapping) else {
            return; // framehop has no module there either
        };
        let Some(bias) = info.load_bias(mapping.start, mapping.offset) else {
            return;
        };
        let Some(id) = self.acquire(&key, info) else {
            return;
        };
        let Some(maps) = self.known.get_mut(&mapping.pid) else {
            return;
        };
        if maps.len() >= MAX_MAPPINGS {
            self.stats.mappings_left_out += 1;
            self.release(&key);
            return;
        }
        let at = maps.partition_point(|m| m.range.start < range.start);
        maps.insert(
            at,
            Map {
                range,
                bias,
                key,
                id,
            },
        );
    }

    /// A reference to the file's table id, allocating one.
    fn acquire(&mut self, key: &FileKey, info: Arc<ElfUnwindInfo>) -> Option<u32> {
        if let Some(f) = self.files.get_mut(key) {
            f.refs += 1;
            return Some(f.id);
        }
        let id = match self.free_ids.pop() {
            Some(id) => id,
            None if self.next_id < MAX_TABLES => {
                self.next_id += 1;
                self.next_id - 1
            }
            None => return None,
        };
        self.files.insert(
            key.clone(),
            File {
                id,
                refs: 1,
                info,
                loaded: None,
                refused: false,
            },
        );
        Some(id)
    }

    /// Drops a reference; the last one evicts the table and frees the id.
    fn release(&mut self, key: &FileKey) {
        let Some(f) = self.files.get_mut(key) else {
            return;
        };
        f.refs = f.refs.saturating_sub(1);
        if f.refs > 0 {
            return;
        }
        let Some(f) = self.files.remove(key) else {
            return;
        };
        // Unpublished before its words are reused.
        let _ = self
            .tables
            .update(&f.id.to_ne_bytes(), &[0u8; 32], MapFlags::ANY);
        if let Some(r) = f.loaded {
            self.alloc.give(r);
            self.stats.tables_evicted += 1;
        }
        self.free_ids.push(f.id);
    }

    /// Compiles and writes the table of `key` unless it is loaded (or did not fit).
    fn load(&mut self, key: &FileKey) {
        let Some(f) = self.files.get(key) else {
            return;
        };
        if f.loaded.is_some() || f.refused {
            return;
        }
        let (id, info) = (f.id, f.info.clone());
        // What framehop has a module for but the table cannot hold (beyond 4 GiB, too many
        // rules) falls back everywhere rather than being taken for unknown code.
        let table = match self.compiled.get(key) {
            Some(t) => t.clone(),
            None => Arc::new(compile(&info).unwrap_or_else(|_| UnwindTable::fallback_only())),
        };
        let (pages, rows, rules) = (table.pages(), table.packed_rows(), table.rules());
        let n = (pages.len() + rows.len() + rules.len()) as u32;
        let Some(range) = self.alloc.take(n) else {
            self.stats.tables_refused += 1;
            if let Some(f) = self.files.get_mut(key) {
                f.refused = true;
            }
            return;
        };
        // The BPF side's per-CPU rule cache is tagged with it: a reused id never hits the
        // rules of the binary it had before.
        self.generation = self.generation.checked_add(1).unwrap_or(1);
        let at = range.start;
        self.words.write(at, pages);
        self.words.write(at + pages.len() as u32, rows);
        self.words
            .write(at + (pages.len() + rows.len()) as u32, rules);
        let desc = [
            at,
            pages.len() as u32 - 1,
            at + pages.len() as u32,
            rows.len() as u32,
            at + (pages.len() + rows.len()) as u32,
            rules.len() as u32,
            self.generation,
            0,
        ];
        let bytes: Vec<u8> = desc.iter().flat_map(|w| w.to_ne_bytes()).collect();
        if self
            .tables
            .update(&id.to_ne_bytes(), &bytes, MapFlags::ANY)
            .is_err()
        {
            self.alloc.give(range);
            return;
        }
        self.stats.tables_loaded += 1;
        self.stats.peak_words = self.stats.peak_words.max(WORDS - self.alloc.free_words());
        if let Some(f) = self.files.get_mut(key) {
            f.loaded = Some(range);
        }
    }

    /// Writes `pid`'s `kd_procs` entry, as of `now`.
    fn write_proc(&mut self, pid: u32) {
        let Some(maps) = self.known.get(&pid) else {
            return;
        };
        let mut value = vec![0u8; PROC_BYTES];
        // Never older than a view read from /proc: the releases may be behind it.
        let as_of = self.now.max(self.early.get(&pid).copied().unwrap_or(0));
        value[0..8].copy_from_slice(&as_of.to_ne_bytes());
        value[8..12].copy_from_slice(&(maps.len() as u32).to_ne_bytes());
        for (i, m) in maps.iter().take(MAX_MAPPINGS).enumerate() {
            let at = 16 + i * 32;
            value[at..at + 8].copy_from_slice(&m.range.start.to_ne_bytes());
            value[at + 8..at + 16].copy_from_slice(&m.range.end.to_ne_bytes());
            value[at + 16..at + 24].copy_from_slice(&m.bias.to_ne_bytes());
            value[at + 24..at + 28].copy_from_slice(&m.id.to_ne_bytes());
        }
        self.stats.proc_writes += 1;
        if self
            .procs
            .update(&pid.to_ne_bytes(), &value, MapFlags::ANY)
            .is_err()
        {
            self.stats.proc_write_failures += 1;
        }
    }

    /// The kernel's counts (`kd_stats`, summed over CPUs), as [`KERNEL_COUNTS`] names them.
    pub fn kernel_counts(&self) -> [u64; 12] {
        let mut out = [0u64; 12];
        for (i, slot) in out.iter_mut().enumerate() {
            let key = (i as u32).to_ne_bytes();
            if let Ok(Some(per_cpu)) = self.stats_map.lookup_percpu(&key, MapFlags::ANY) {
                *slot = per_cpu
                    .iter()
                    .filter_map(|v| v.get(..8).and_then(|b| b.try_into().ok()))
                    .map(u64::from_ne_bytes)
                    .sum();
            }
        }
        out
    }

    /// One line for `-v`: how the walks ended and what was loaded.
    pub fn summary(&self) -> String {
        let c = self.kernel_counts();
        let walked = c[1] + c[2];
        let ends: Vec<String> = KERNEL_COUNTS
            .iter()
            .zip(c)
            .skip(3)
            .take(8)
            .filter(|(_, n)| *n > 0)
            .map(|(name, n)| format!("{n} {name}"))
            .collect();
        let s = &self.stats;
        format!(
            "kernel-dwarf: {walked} of {} stacks walked in the kernel ({} frames), fell back: {}; \
             {} tables loaded ({} evicted, {} refused), peak {} KiB of {} KiB, {} process \
             entries written ({} from /proc at a first copy), {:.1} ms in the recorder",
            c[0],
            c[11],
            if ends.is_empty() {
                "none".to_string()
            } else {
                ends.join(", ")
            },
            s.tables_loaded,
            s.tables_evicted,
            s.tables_refused,
            u64::from(s.peak_words) * 4 / 1024,
            u64::from(WORDS) * 4 / 1024,
            s.proc_writes,
            s.early_entries,
            s.ns as f64 / 1e6,
        )
    }
}

/// The table of a file, as the table cross-check compiles it (`crate::unwind::check`).
fn compile(info: &ElfUnwindInfo) -> Result<UnwindTable, urec_unwind_table::Error> {
    UnwindTable::compile(&info.sections())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes written here are the BPF side's structs (unwind.bpf.h).
    #[test]
    fn layouts_match_the_bpf_structs() {
        use urec_bpf::types::{kd_block, kd_mapping, kd_proc, kd_table};
        assert_eq!(std::mem::size_of::<kd_proc>(), PROC_BYTES);
        assert_eq!(std::mem::size_of::<kd_mapping>(), 32);
        assert_eq!(std::mem::size_of::<kd_table>(), 32);
        assert_eq!(std::mem::size_of::<kd_block>(), BLOCK_WORDS as usize * 4);
        assert_eq!(std::mem::offset_of!(kd_proc, m), 16);
        assert_eq!(std::mem::offset_of!(kd_mapping, table), 24);
        assert_eq!(KERNEL_COUNTS.len(), 12);
    }

    /// The rule word as unwind.bpf.h's kd_apply decodes it: kind in bits 3..0, aux in 11..4,
    /// the signed CFA offset / 8 above; a plain frame pointer is kind 3, CFA 16, aux 0xfe.
    #[test]
    fn rule_words_decode_as_the_bpf_walk_reads_them() {
        use urec_unwind_table::{Rule, RuleKind};
        let fp = Rule {
            kind: RuleKind::CfaRbp,
            cfa_offset: 16,
            bp_offset: Some(-16),
            plt_threshold: 0,
        }
        .to_word();
        assert_eq!(
            (fp & 0xf, (fp >> 4) & 0xff, ((fp as i32) >> 12) * 8),
            (3, 0xfe, 16)
        );
        let rsp = Rule {
            kind: RuleKind::CfaRsp,
            cfa_offset: 40,
            bp_offset: Some(-24),
            plt_threshold: 0,
        }
        .to_word();
        let aux = (rsp >> 4) & 0xff;
        assert_eq!((rsp & 0xf, i64::from(aux as u8 as i8) * 8), (2, -24));
        let plt = Rule {
            kind: RuleKind::Plt,
            cfa_offset: 8,
            bp_offset: None,
            plt_threshold: 11,
        }
        .to_word();
        assert_eq!(
            (plt & 0xf, (plt >> 4) & 0xff, ((plt as i32) >> 12) * 8),
            (4, 11, 8)
        );
        for (kind, k) in [
            (RuleKind::Fallback, 0),
            (RuleKind::EndOfStack, 1),
            (RuleKind::NoCfi, 5),
        ] {
            assert_eq!(Rule::simple(kind).to_word() & 0xf, k);
        }
    }

    #[test]
    fn freed_ranges_merge_and_are_reused_first_fit() {
        let mut a = Alloc::new(100);
        let x = a.take(10).unwrap();
        let y = a.take(20).unwrap();
        let z = a.take(30).unwrap();
        assert_eq!((x.clone(), y.clone(), z.clone()), (0..10, 10..30, 30..60));
        assert!(a.take(41).is_none());
        a.give(y);
        assert_eq!(a.take(15), Some(10..25));
        a.give(x);
        a.give(10..25);
        a.give(z);
        assert_eq!(a.free, vec![0..100]);
        assert_eq!(a.free_words(), 100);
    }
}
