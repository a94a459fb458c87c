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

use urec_bpf::abi::{RawPython, PY_NO_THREAD, PY_READ_FAILED, PY_TRUNCATED};
use urec_format::hash::FxHashMap;
use urec_format::{PyCode, PyFrame, Record};
use urec_python::{CodeInfo, CodeRef, Cpython, NameError, ProcessMemory};

/// Entries a cache holds before it starts over: each is small, but a long `-a` recording of
/// many short-lived Python processes must not grow without bound.
const CACHE_LIMIT: usize = 1 << 18;

/// The qualname of a frame whose code object could not be read (the process exited, or the
/// object was freed and its memory reused before the recorder read it).
pub const UNNAMED: &str = "[unknown python]";

/// A Python stack as the file stores it: frames innermost first, and whether the chain went
/// on past what the programs read.
pub type NamedStack = (Arc<[PyFrame]>, bool);

/// A block of raw frames in one process: equal bytes are equal frames.
type RawKey = (u32, Box<[u8]>);

/// The named Python stacks and code objects of a recording.
#[derive(Default)]
pub struct PythonNames {
    /// (pid, raw frame bytes) → the stack's frames.
    stacks: FxHashMap<RawKey, Arc<[PyFrame]>>,
    /// (pid, code object and its validation words) → its [`PyCode`] id and line table; None
    /// when it could not be read.
    codes: FxHashMap<(u32, CodeRef), Option<Named>>,
    /// (qualname, filename, first line) → [`PyCode`] id.
    ids: FxHashMap<(Arc<str>, Arc<str>, u32), u32>,
    /// What happened, for `-v`.
    pub stats: PyStats,
}

struct Named {
    id: u32,
    info: CodeInfo,
}

impl PythonNames {
    /// The named frames of `raw`, read from process `pid` running `py`; `emit` gets each
    /// [`PyCode`] record the first time its name is met (before any stack using it). None for
    /// a block without frames (a thread with no Python thread state).
    pub fn stack(
        &mut self,
        pid: u32,
        py: Option<&Cpython>,
        raw: &RawPython<'_>,
        emit: &mut dyn FnMut(Record) -> anyhow::Result<()>,
    ) -> anyhow::Result<Option<NamedStack>> {
        let truncated = raw.status & PY_TRUNCATED != 0;
        if raw.nframes() == 0 {
            return Ok(None);
        }
        if let Some(f) = self.stacks.get(&(pid, Box::from(raw.bytes()))) {
            return Ok(Some((f.clone(), truncated)));
        }
        let Some(py) = py else {
            // The process's entry went (an exec or exit released before this event was
            // read): nothing to name its frames with.
            self.stats.unnamed += raw.nframes() as u64;
            return Ok(None);
        };
        if self.stacks.len() >= CACHE_LIMIT {
            self.stacks.clear();
        }
        if self.codes.len() >= CACHE_LIMIT {
            self.codes.clear();
        }
        let memory = ProcessMemory::new(pid);
        let shims = py.version.minor() >= 12;
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
            let stats = &mut self.stats;
            let named =
                self.codes.entry((pid, code)).or_insert_with(|| {
                    match urec_python::read_code(&memory, py, &code) {
                        Ok(info) => Some(Named { id: u32::MAX, info }),
                        Err(NameError::Stale) => {
                            stats.stale += 1;
                            None
                        }
                        Err(_) => {
                            stats.unreadable += 1;
                            None
                        }
                    }
                });
            let (id, line) = match named {
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
        self.stacks
            .insert((pid, Box::from(raw.bytes())), frames.clone());
        Ok(Some((frames, truncated)))
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
            "python: stack_events={} blocks={} ok3={} frames={} truncated={} read_failed={} no_thread={} stale={} unreadable={} unnamed={}",
            self.stack_events,
            self.blocks,
            self.ok3,
            self.frames,
            self.truncated,
            self.read_failed,
            self.no_thread,
            self.stale,
            self.unreadable,
            self.unnamed
        )
    }
}
