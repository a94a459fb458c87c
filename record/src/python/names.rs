//! The BPF walk's raw Python frames, named: each frame's code object pointer, instruction
//! offset and the words that identify the code object (`co_qualname`, `co_filename`,
//! `co_firstlineno`) become the data file's [`PyCode`] names and a stack's [`PyFrame`]s. This
//! happens as soon as an event is read from the ring, not when it is released: a short-lived
//! process may be gone by then, and its code objects with it.
//!
//! Two caches keep this off the per-event path. The same Python stack repeats for millions of
//! events, so a block of raw frames (its bytes, per process) maps to its named frames with one
//! lookup. Below that, each code object is read from the process once, keyed by (process,
//! pointer, validation words): a freed and reused address is read again rather than misnamed
//! ([`urec_python::read_code`] checks the words again in the process). Names are interned by
//! content, so a function run by many processes is one `PyCode`.
//!
//! The two versions' entry markers become one meaning here: [`PyFrame::entry`] is the
//! outermost frame of one native `_PyEval_EvalFrameDefault` call. 3.11 marks that frame itself
//! (`is_entry`); 3.12+ pushes a shim frame (owner `FRAME_OWNED_BY_CSTACK`) below it, which is
//! dropped here after marking the frame inner of it.

use std::sync::Arc;

use urec_bpf::abi::{
    py_code_check, py_code_key, py_stack_hash, RawPyCode, RawPython, PY_NO_THREAD, PY_READ_FAILED,
    PY_TRUNCATED,
};
use urec_format::hash::{FxHashMap, FxHasher};
use urec_format::{PyCode, PyFrame, Record};
use urec_python::{CodeInfo, CodeRef, Cpython, NameError, ProcessMemory, Regions};

/// A set with the workspace's fast hasher.
type FxHashSet<K> = std::collections::HashSet<K, std::hash::BuildHasherDefault<FxHasher>>;

/// Entries a cache holds before it starts over: each is small, but a long `-a` recording of
/// many short-lived Python processes must not grow without bound.
const CACHE_LIMIT: usize = 1 << 18;

/// Code snapshots held at most, and their bytes: a snapshot is kept until its code object is
/// named (then dropped), so only code objects whose events are still unread pile up.
const SNAPSHOT_LIMIT: usize = 1 << 16;
const SNAPSHOT_BYTES_LIMIT: usize = 256 << 20;

/// The qualname of a frame whose code object could not be read (the process exited, or the
/// object was freed and its memory reused before the recorder read it).
pub const UNNAMED: &str = "[unknown python]";

/// A Python stack as the file stores it: frames innermost first, and whether the chain went
/// on past what the programs read.
pub type NamedStack = (Arc<[PyFrame]>, bool);

/// A block of raw frames in one process: equal bytes are equal frames.
type RawKey = (u32, Box<[u8]>);

/// What naming a block gave.
pub enum Naming {
    /// No frames (a thread with no Python thread state, or no interpreter known).
    Nothing,
    /// Every frame named (or, at the last attempt, named [`UNNAMED`]).
    Named(NamedStack),
    /// Some code object could not be read from the process and no snapshot of it has come
    /// yet: try again when the event is released (the snapshots the programs sent with it are
    /// read by then).
    Later,
}

/// The named Python stacks and code objects of a recording.
#[derive(Default)]
pub struct PythonNames {
    /// (pid, raw frame bytes) → the stack's frames, for stacks whose frames were all named.
    stacks: FxHashMap<RawKey, Arc<[PyFrame]>>,
    /// (pid, code object and its validation words) → its [`PyCode`] id and line table.
    codes: FxHashMap<(u32, CodeRef), Named>,
    /// Code objects the live process could not give (exited, or freed since the probe): not
    /// read from it again, but still named from a snapshot if one comes.
    live_failed: FxHashSet<(u32, CodeRef)>,
    /// The programs' snapshots of code objects not yet named.
    snapshots: FxHashMap<(u32, CodeRef), Regions>,
    snapshot_bytes: usize,
    /// (qualname, filename, first line) → [`PyCode`] id.
    ids: FxHashMap<(Arc<str>, Arc<str>, u32), u32>,
    /// What the programs' maps are still to be told (`py_named`, `py_stacks_named`).
    map_writes: Vec<MapWrite>,
    /// Stacks already written to `py_stacks_named`.
    stacks_written: FxHashSet<(u32, u64)>,
    /// What happened, for `-v`.
    pub stats: PyStats,
}

struct Named {
    id: u32,
    info: CodeInfo,
}

/// An insert into one of the maps the programs consult before sending a snapshot.
enum MapWrite {
    /// `py_named`: {pid, code} → the check words hashed.
    Code { pid: u32, code: u64, check: u64 },
    /// `py_stacks_named`: {pid, stack hash}.
    Stack { pid: u32, hash: u64 },
}

impl PythonNames {
    /// Keeps a code snapshot the programs sent (the code object's memory at the probe), for
    /// the events that follow it. One already named only refreshes its `py_named` entry: the
    /// programs sent it because they did not find it there (not written yet, or evicted).
    /// `record_len`: the ring record's size, for the statistics.
    pub fn snapshot(&mut self, c: &RawPyCode<'_>, record_len: usize) {
        let code = CodeRef {
            code: c.code,
            qualname: c.qualname,
            filename: c.filename,
            first_line: c.first_line,
        };
        self.stats.snapshots += 1;
        self.stats.snapshot_bytes += record_len as u64;
        let key = (c.pid, code);
        if self.codes.contains_key(&key) {
            self.map_writes.push(MapWrite::Code {
                pid: c.pid,
                code: c.code,
                check: py_code_check(c.qualname, c.filename, c.first_line),
            });
            return;
        }
        if self.snapshots.len() >= SNAPSHOT_LIMIT || self.snapshot_bytes >= SNAPSHOT_BYTES_LIMIT {
            self.snapshots.clear();
            self.snapshot_bytes = 0;
        }
        let mut r = Regions::new();
        for (addr, b) in &c.regions {
            r.add(*addr, b);
        }
        self.snapshot_bytes += r.len_bytes();
        if let Some(old) = self.snapshots.insert(key, r) {
            self.snapshot_bytes = self.snapshot_bytes.saturating_sub(old.len_bytes());
        }
    }

    /// Names the frames of `raw`, from process `pid` running `py`: from the live process, else
    /// from a snapshot. `last`: the last attempt (the event's release), where a code object
    /// still unnamed is named [`UNNAMED`]; before it such a block is [`Naming::Later`]. `emit`
    /// gets each [`PyCode`] record the first time its name is met (before any stack using it).
    pub fn stack(
        &mut self,
        pid: u32,
        py: Option<&Cpython>,
        raw: &RawPython<'_>,
        last: bool,
        emit: &mut dyn FnMut(Record) -> anyhow::Result<()>,
    ) -> anyhow::Result<Naming> {
        let truncated = raw.status & PY_TRUNCATED != 0;
        if raw.nframes() == 0 {
            return Ok(Naming::Nothing);
        }
        if let Some(f) = self.stacks.get(&(pid, Box::from(raw.bytes()))) {
            return Ok(Naming::Named((f.clone(), truncated)));
        }
        let Some(py) = py else {
            // The process's entry went (an exec or exit released before this event was
            // read): nothing to name its frames with.
            self.stats.unnamed += raw.nframes() as u64;
            return Ok(Naming::Nothing);
        };
        if self.stacks.len() >= CACHE_LIMIT {
            self.stacks.clear();
        }
        if self.codes.len() >= CACHE_LIMIT {
            self.codes.clear();
        }
        if self.live_failed.len() >= CACHE_LIMIT {
            self.live_failed.clear();
        }
        let shims = py.version.minor() >= 12;
        // First pass: is every code object named (or nameable now)?
        let mut missing = 0u64;
        for f in raw.frames() {
            if f.entry_marker && shims {
                continue;
            }
            let code = CodeRef {
                code: f.code,
                qualname: f.qualname,
                filename: f.filename,
                first_line: f.first_line,
            };
            if !self.name_code(pid, py, code) {
                missing += 1;
            }
        }
        if missing > 0 && !last {
            return Ok(Naming::Later);
        }
        let mut frames: Vec<PyFrame> = Vec::with_capacity(raw.nframes());
        for f in raw.frames() {
            if f.entry_marker && shims {
                // The shim below the first frame of one eval call: that frame is the call's
                // outermost.
                if let Some(inner) = frames.last_mut() {
                    inner.entry = true;
                }
                continue;
            }
            let code = CodeRef {
                code: f.code,
                qualname: f.qualname,
                filename: f.filename,
                first_line: f.first_line,
            };
            let (id, line) = match self.codes.get_mut(&(pid, code)) {
                Some(n) => {
                    if n.id == u32::MAX {
                        n.id = intern(
                            &mut self.ids,
                            &n.info.qualname,
                            &n.info.filename,
                            n.info.first_line,
                            emit,
                        )?;
                    }
                    let line = n.info.line_at(py.version, f.instr_offset).unwrap_or(0);
                    (n.id, line)
                }
                None => {
                    self.stats.unnamed += 1;
                    (intern(&mut self.ids, UNNAMED, "", 0, emit)?, 0)
                }
            };
            frames.push(PyFrame {
                code: id,
                line,
                entry: f.entry_marker,
            });
        }
        let frames: Arc<[PyFrame]> = frames.into();
        // Only a stack whose every frame was named is kept (and told to the programs): one
        // with an unknown frame is named again should a snapshot come for the next event.
        if missing == 0 {
            self.stacks
                .insert((pid, Box::from(raw.bytes())), frames.clone());
            let hash = py_stack_hash(raw);
            if self.stacks_written.len() >= CACHE_LIMIT {
                self.stacks_written.clear();
            }
            if self.stacks_written.insert((pid, hash)) {
                self.map_writes.push(MapWrite::Stack { pid, hash });
            }
        }
        Ok(Naming::Named((frames, truncated)))
    }

    /// Whether code object `code` of `pid` is named, reading it (live, else from its snapshot)
    /// if it was not yet.
    fn name_code(&mut self, pid: u32, py: &Cpython, code: CodeRef) -> bool {
        let key = (pid, code);
        if self.codes.contains_key(&key) {
            return true;
        }
        let mut info = None;
        if !self.live_failed.contains(&key) {
            match urec_python::read_code(&ProcessMemory::new(pid), py, &code) {
                Ok(i) => info = Some(i),
                Err(NameError::Stale) => {
                    self.stats.stale += 1;
                    self.live_failed.insert(key);
                }
                Err(_) => {
                    self.stats.unreadable += 1;
                    self.live_failed.insert(key);
                }
            }
        }
        if info.is_none() {
            if let Some(r) = self.snapshots.get(&key) {
                match urec_python::read_code(r, py, &code) {
                    Ok(i) => {
                        self.stats.from_snapshot += 1;
                        info = Some(i);
                    }
                    Err(_) => self.stats.snapshot_failed += 1,
                }
            }
        }
        if let Some(r) = self.snapshots.remove(&key) {
            self.snapshot_bytes = self.snapshot_bytes.saturating_sub(r.len_bytes());
            if info.is_none() {
                // Unreadable now, unreadable later: not kept.
                return false;
            }
        }
        let Some(info) = info else { return false };
        self.codes.insert(key, Named { id: u32::MAX, info });
        self.map_writes.push(MapWrite::Code {
            pid,
            code: code.code,
            check: py_code_check(code.qualname, code.filename, code.first_line),
        });
        true
    }

    /// Writes the queued `py_named` / `py_stacks_named` inserts (once per poll). A failed
    /// write only costs a snapshot sent again: never the recording.
    pub fn sync_maps(&mut self, skel: &urec_bpf::UrecSkel<'_>) {
        use libbpf_rs::{MapCore, MapFlags};
        for w in self.map_writes.drain(..) {
            let _ = match w {
                MapWrite::Code { pid, code, check } => skel.maps.py_named.update(
                    &py_code_key(pid, code),
                    &check.to_ne_bytes(),
                    MapFlags::ANY,
                ),
                MapWrite::Stack { pid, hash } => {
                    skel.maps
                        .py_stacks_named
                        .update(&py_code_key(pid, hash), &[1u8], MapFlags::ANY)
                }
            };
        }
    }
}

/// The [`PyCode`] id of a name, writing its record the first time.
fn intern(
    ids: &mut FxHashMap<(Arc<str>, Arc<str>, u32), u32>,
    qualname: &str,
    filename: &str,
    first_line: u32,
    emit: &mut dyn FnMut(Record) -> anyhow::Result<()>,
) -> anyhow::Result<u32> {
    let key: (Arc<str>, Arc<str>, u32) = (qualname.into(), filename.into(), first_line);
    if let Some(&id) = ids.get(&key) {
        return Ok(id);
    }
    let id = ids.len() as u32;
    emit(Record::PyCode(PyCode {
        id,
        qualname: key.0.clone(),
        filename: key.1.clone(),
        first_line,
    }))?;
    ids.insert(key, id);
    Ok(id)
}

/// Counts of the Python blocks read and named, for `-v` and the tests (`UREC_DEBUG_PYTHON`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PyStats {
    /// Events that captured a stack.
    pub stack_events: u64,
    /// Blocks with status 0 and at least 3 frames (a test's measure of a whole walk).
    pub ok3: u64,
    /// Events with a Python block.
    pub blocks: u64,
    /// Frames in all blocks.
    pub frames: u64,
    /// Blocks whose chain went on past the walk's bound.
    pub truncated: u64,
    /// Blocks whose walk stopped at a failed read (the frames before it are kept).
    pub read_failed: u64,
    /// Blocks of threads with no Python thread state (a C library's own thread).
    pub no_thread: u64,
    /// Code objects whose validation words no longer matched when read (freed and reused).
    pub stale: u64,
    /// Code objects that could not be read (the process was gone).
    pub unreadable: u64,
    /// Frames named [`UNNAMED`] for either reason.
    pub unnamed: u64,
    /// Code snapshots the programs sent.
    pub snapshots: u64,
    /// Their ring records' bytes.
    pub snapshot_bytes: u64,
    /// Code objects named from a snapshot (the live process could not give them).
    pub from_snapshot: u64,
    /// Snapshots that did not name their code object (a region missing or cut short).
    pub snapshot_failed: u64,
    /// Events whose naming waited for their release.
    pub later: u64,
}

impl PyStats {
    /// Counts one event read from the ring: whether it captured a stack, and its Python block.
    pub fn count(&mut self, had_stack: bool, py: Option<&RawPython<'_>>) {
        self.stack_events += u64::from(had_stack);
        let Some(py) = py else { return };
        self.blocks += 1;
        self.frames += py.nframes() as u64;
        if py.status == 0 && py.nframes() >= 3 {
            self.ok3 += 1;
        }
        self.truncated += u64::from(py.status & PY_TRUNCATED != 0);
        self.read_failed += u64::from(py.status & PY_READ_FAILED != 0);
        self.no_thread += u64::from(py.status & PY_NO_THREAD != 0);
    }

    /// One line, as `-v` and `UREC_DEBUG_PYTHON=1` print it.
    pub fn line(&self) -> String {
        format!(
            "python: stack_events={} blocks={} ok3={} frames={} truncated={} read_failed={} no_thread={} stale={} unreadable={} unnamed={} snapshots={} snapshot_bytes={} from_snapshot={} snapshot_failed={} later={}",
            self.stack_events,
            self.blocks,
            self.ok3,
            self.frames,
            self.truncated,
            self.read_failed,
            self.no_thread,
            self.stale,
            self.unreadable,
            self.unnamed,
            self.snapshots,
            self.snapshot_bytes,
            self.from_snapshot,
            self.snapshot_failed,
            self.later
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use urec_python::Detection;

    /// A compact ASCII `str` object's bytes (header then characters).
    fn ascii_str(py: &Cpython, s: &str) -> Vec<u8> {
        let o = &py.offsets;
        let mut b = vec![0u8; o.unicode_ascii_data as usize];
        let len = o.unicode_length as usize;
        b[len..len + 8].copy_from_slice(&(s.len() as u64).to_le_bytes());
        let st = o.unicode_state as usize;
        // kind 1, compact, ascii (naming.rs's STATE_* bits).
        let state: u32 = (1 << 2) | (1 << 5) | (1 << 6);
        b[st..st + 4].copy_from_slice(&state.to_le_bytes());
        b.extend_from_slice(s.as_bytes());
        b.push(0);
        b
    }

    /// A frame's 32 bytes as the walk writes them.
    fn frame(code: &CodeRef, instr: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&code.code.to_ne_bytes());
        b.extend_from_slice(&code.qualname.to_ne_bytes());
        b.extend_from_slice(&code.filename.to_ne_bytes());
        b.extend_from_slice(&code.first_line.to_ne_bytes());
        b.extend_from_slice(&instr.to_ne_bytes());
        b
    }

    /// A process that is gone when its event is read: the frame waits for its release, is
    /// named there from the programs' snapshot, and the maps are told (code, then stack).
    #[test]
    fn named_from_a_snapshot_once_the_process_is_gone() {
        let Ok(Detection::Known(py)) =
            urec_python::detect(std::path::Path::new("/usr/bin/python3.11"))
        else {
            eprintln!("skipped: no /usr/bin/python3.11");
            return;
        };
        let o = py.offsets;
        // A reaped child: its pid has no memory to read.
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();

        let (code_at, qual_at, file_at, lines_at) =
            (0x10000u64, 0x20000u64, 0x30000u64, 0x40000u64);
        let code = CodeRef {
            code: code_at,
            qualname: qual_at,
            filename: file_at,
            first_line: 10,
        };
        let mut words = vec![0u8; 256];
        words[o.code_qualname as usize..][..8].copy_from_slice(&qual_at.to_le_bytes());
        words[o.code_filename as usize..][..8].copy_from_slice(&file_at.to_le_bytes());
        words[o.code_firstlineno as usize..][..4].copy_from_slice(&10i32.to_le_bytes());
        words[o.code_linetable as usize..][..8].copy_from_slice(&lines_at.to_le_bytes());
        // A line table of one entry: 8 code units, one-line form 11 (line + 1).
        let mut lines = vec![0u8; o.bytes_data as usize];
        lines[o.bytes_size as usize..][..8].copy_from_slice(&1u64.to_le_bytes());
        lines.push(0x80 | (11 << 3) | 7);
        let qual = ascii_str(&py, "Outer.run");
        let file = ascii_str(&py, "/srv/app.py");
        let snap = RawPyCode {
            pid,
            code: code.code,
            qualname: code.qualname,
            filename: code.filename,
            first_line: code.first_line,
            regions: vec![
                (code_at, &words[..]),
                (qual_at, &qual[..]),
                (file_at, &file[..]),
                (lines_at, &lines[..]),
            ],
        };
        let bytes = frame(&code, 2);
        let raw = RawPython::from_parts(0, &bytes);
        let mut names = PythonNames::default();
        let mut records = Vec::new();
        let mut emit = |r: Record| -> anyhow::Result<()> {
            records.push(r);
            Ok(())
        };
        // Read: the live process cannot name it, no snapshot yet.
        assert!(matches!(
            names.stack(pid, Some(&py), &raw, false, &mut emit).unwrap(),
            Naming::Later
        ));
        assert_eq!(names.stats.unreadable, 1);
        // The snapshot (sent before the event, read by its release).
        names.snapshot(&snap, 0);
        let Naming::Named((frames, false)) =
            names.stack(pid, Some(&py), &raw, true, &mut emit).unwrap()
        else {
            panic!("not named");
        };
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].line, 11);
        assert_eq!(names.stats.from_snapshot, 1);
        assert_eq!(names.stats.unnamed, 0);
        assert_eq!(names.stats.unreadable, 1, "the process is not read again");
        assert!(matches!(
            names.map_writes[..],
            [MapWrite::Code { code: 0x10000, .. }, MapWrite::Stack { .. }]
        ));
        if let MapWrite::Stack { hash, .. } = names.map_writes[1] {
            assert_eq!(hash, py_stack_hash(&raw));
        }
        // Another code object with neither live memory nor a snapshot: unknown at release.
        let other = CodeRef {
            code: 0x50000,
            ..code
        };
        let bytes = frame(&other, 2);
        let raw = RawPython::from_parts(0, &bytes);
        let Naming::Named((frames, _)) =
            names.stack(pid, Some(&py), &raw, true, &mut emit).unwrap()
        else {
            panic!("not named");
        };
        assert_eq!(frames[0].line, 0);
        assert_eq!(names.stats.unnamed, 1);
        assert_eq!(
            names.map_writes.len(),
            2,
            "an unknown stack is not told to the maps"
        );
        let Some(Record::PyCode(c)) = records.first() else {
            panic!("no PyCode record: {}", records.len());
        };
        assert_eq!(
            (&*c.qualname, &*c.filename, c.first_line),
            ("Outer.run", "/srv/app.py", 10)
        );
    }
}
