//! The Rust side of `urec.h`: the per-probe configuration the programs read, and a decoder for
//! the records they write to the ring buffer.
//!
//! The layouts are `#[repr(C)]` copies of the C structs, checked by size at compile time, and the
//! configuration is written to the `probes` map as raw bytes. Decoding never trusts the kernel's
//! bytes blindly: a record shorter than what its header announces is an error, not a panic.

use std::mem::size_of;

/// Fetched arguments per probe (`UREC_MAX_ARGS`).
pub const MAX_ARGS: usize = 8;
/// Fetch operations per argument (`UREC_MAX_OPS`).
pub const MAX_OPS: usize = 8;
/// String bytes kept per argument (`UREC_STR_MAX`).
pub const STR_MAX: usize = 256;
/// Largest `--stack-depth` (`UREC_MAX_DEPTH`).
pub const MAX_DEPTH: u32 = 127;
/// Largest `--stack-size` (bytes of stack copied per `-g dwarf` event; a multiple of 8 below
/// `UREC_MAX_STACK_SIZE`).
pub const MAX_STACK_SIZE: u32 = 65528;
/// Pending uretprobe return addresses sent per stack copy (`UREC_MAX_PENDING`).
pub const MAX_PENDING: usize = 16;
/// Under ring pressure the programs keep one call in at most `2^MAX_SHIFT`
/// (`UREC_MAX_SHIFT`): an event's [`RawEvent::weight_shift`] is at most this.
pub const MAX_SHIFT: u8 = 10;
/// Steps of a predicate program (`UREC_MAX_PRED_OPS`).
pub const MAX_PRED_OPS: usize = 16;
/// Operands of a predicate (`UREC_MAX_PRED_ARGS`).
pub const MAX_PRED_ARGS: usize = 4;
/// String constants of a predicate (`UREC_MAX_PRED_STRS`).
pub const MAX_PRED_STRS: usize = 4;
/// Bytes of a predicate's string constant, its NUL included (`UREC_PRED_STR`).
pub const PRED_STR: usize = 64;
/// Cookie bit marking an entry-only or return-only probe on the single-uprobe fallback programs.
pub const COOKIE_ONE_SIDED: u64 = 1 << 31;

/// Event kind of an entry record.
pub const KIND_ENTRY: u8 = 0;
/// Event kind of a return record.
pub const KIND_RETURN: u8 = 1;
/// `UREC_KIND_PYCODE`: not an event but a Python code object's snapshot ([`RawPyCode`]).
pub const KIND_PYCODE: u8 = 2;
/// `UREC_PY_CODE_PROBE`: the probe id of a [`KIND_PYCODE`] record (no probe's).
pub const PY_CODE_PROBE: u32 = u32::MAX;

/// `latency_ns` is valid.
pub const F_LATENCY: u8 = 1;
/// `frames[1]` is the return address read at `[sp]`.
pub const F_CALLER_ADDED: u8 = 4;
/// `frames[0]` is the probed function's address (return-only probes).
pub const F_FUNC_ADDED: u8 = 8;
/// The record carries registers and a stack copy ([`RawDwarf`]) instead of frames.
pub const F_DWARF: u8 = 16;
/// `UREC_F_GOROUTINE`: a Go event; its goroutine (the runtime's `g`) follows the header.
pub const F_GOROUTINE: u8 = 32;
/// `UREC_F_PYTHON`: a Python block ([`RawPython`]) follows the args.
pub const F_PYTHON: u8 = 64;
/// `UREC_F_STACK_ID`: an 8-byte stack id ([`RawEvent::stack_id`]) stands for the frames, which
/// the `stacks` map holds ([`StoredStack`]).
pub const F_STACK_ID: u8 = 128;

/// Frames a stored stack holds at most (`UREC_STACK_SLOTS`).
pub const STACK_SLOTS: usize = MAX_DEPTH as usize + 2;
/// Stacks the `stacks` map holds at most (`UREC_STACK_STORE`).
pub const STACK_STORE: u32 = 4096;
/// Ids the `stacks_known` map holds at most (`UREC_STACKS_KNOWN`).
pub const STACKS_KNOWN: u32 = 262_144;
const _: () = assert!(size_of::<StoredStack>() == 8 * STACK_SLOTS + 8);

/// `struct urec_stack`: a value of the `stacks` map.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StoredStack {
    /// Innermost first; `n` are valid, the rest is whatever the buffer held.
    pub frames: [u64; STACK_SLOTS],
    /// The frames.
    pub n: u64,
}

impl StoredStack {
    /// The frames of a `stacks` value; `None` for a value of another size or a bad count.
    pub fn frames_of(value: &[u8]) -> Option<Vec<u64>> {
        if value.len() != size_of::<StoredStack>() {
            return None;
        }
        let n = u64_at(value, STACK_SLOTS * 8) as usize;
        if n == 0 || n > STACK_SLOTS {
            return None;
        }
        Some((0..n).map(|i| u64_at(value, i * 8)).collect())
    }
}

/// Python frames per event at most (`UREC_PY_MAX_FRAMES`).
pub const PY_MAX_FRAMES: usize = 64;
/// `py_layouts` entries (`UREC_PY_LAYOUTS`): distinct CPython layouts of one recording.
pub const PY_LAYOUTS: u32 = 16;
/// Bytes of a frame, and of a code object, the walk reads at once (`UREC_PY_WINDOW`): every
/// field of a [`PyLayout`] must lie in them.
pub const PY_WINDOW: u64 = 128;
/// `UREC_PY_TRUNCATED`: the chain went on past [`PY_MAX_FRAMES`].
pub const PY_TRUNCATED: u16 = 1;
/// `UREC_PY_READ_FAILED`: a read failed mid-walk; the frames so far are kept.
pub const PY_READ_FAILED: u16 = 2;
/// `UREC_PY_NO_THREAD`: a Python process, but no `PyThreadState` matched the thread.
pub const PY_NO_THREAD: u16 = 4;
/// Size of `struct urec_py_head`.
pub const PY_HEAD_SIZE: usize = 8;
/// Size of `struct urec_py_frame`.
pub const PY_FRAME_SIZE: usize = 32;
const PY_INSTR_NONE: u32 = 0x3fff_ffff;
const PY_ENTRY: u32 = 1 << 31;

/// Some pages of the copy could not be read (`UREC_D_HOLES`): see [`RawDwarf::holes`].
pub const D_HOLES: u16 = 1;
/// No stack bytes could be read (`UREC_D_READ_FAILED`).
pub const D_READ_FAILED: u16 = 2;
/// Size of `struct urec_dwarf`.
pub const DWARF_HEADER_SIZE: usize = 56;

const OP_REG: u8 = 1;
const OP_SPREL: u8 = 2;
const OP_IMM: u8 = 3;
const OP_FUNCREL: u8 = 4;
const OP_DEREF: u8 = 5;
const OP_ADD: u8 = 6;
const OP_COMM: u8 = 7;
const OP_ADDREG: u8 = 8;

/// `UREC_P_ADD_CALLER`.
const P_ADD_CALLER: u8 = 1;
/// `UREC_P_DWARF`.
const P_DWARF: u8 = 2;
/// `UREC_P_KERNEL_CALLER`.
const P_KERNEL_CALLER: u8 = 4;
/// `UREC_P_GO`.
const P_GO: u8 = 8;

/// x86-64 registers in `struct pt_regs` order: the index is what `%REG` fetches use.
pub const PT_REGS: [&str; 21] = [
    "r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di",
    "orig_ax", "ip", "cs", "flags", "sp", "ss",
];

/// Index of `%sp` in [`PT_REGS`].
pub const REG_SP: usize = 19;
/// Index of `%ax` (the return value) in [`PT_REGS`].
pub const REG_AX: usize = 10;

/// One step of an argument's fetch program (a tiny accumulator machine `v`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchOp {
    /// `v = regs[i]`, `i` an index in [`PT_REGS`].
    Reg(usize),
    /// `v = *(u64 *)(sp + off)`: `$stackN`, and `argN` beyond the sixth at function entry.
    SpRel(i64),
    /// `v = imm`.
    Imm(i64),
    /// `v = address of the probe + delta`: a global at a known place of the probed binary.
    ProbeRel(i64),
    /// `v = *(uN *)(v + off)`, reading `size` bytes (1, 2, 4 or 8) of user memory.
    Deref {
        /// Added to `v` before reading.
        off: i64,
        /// Bytes read, zero-extended.
        size: u8,
    },
    /// `v = v + off` (the last step of a string's address: `+8(%di):string` reads at di+8).
    Add(i64),
    /// The task's command name (a string argument with this as its only op).
    Comm,
    /// `v = v + regs[reg] * scale`: the index of an indexed address (USDT's
    /// `-8@(%rax,%rdi,8)`, an array element), the one form the other ops cannot build.
    AddReg {
        /// Index in [`PT_REGS`].
        reg: usize,
        /// 1, 2, 4 or 8.
        scale: u8,
    },
}

/// One argument's fetch program.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ArgProgram {
    /// Fetched on return events (else on entry events).
    pub at_return: bool,
    /// The result is the address of a NUL-terminated string to copy.
    pub is_string: bool,
    /// At most [`MAX_OPS`] steps.
    pub ops: Vec<FetchOp>,
}

/// What the programs need to know about one probe.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ProbeConfig {
    /// The probe is at a function's first instruction and the kernel will not add the caller
    /// to entry stacks by itself (the instruction is neither `push %rbp` nor `endbr64`), so
    /// the program inserts the return address at `[sp]`.
    pub add_caller: bool,
    /// The probed instruction is one for which the kernel's own user callchain
    /// (`bpf_get_stack`, perf) inserts the return address at `[sp]` into entry stacks
    /// (`push %rbp` on Linux 6.10+). The program walks the frame pointers itself and mirrors
    /// that, so stacks stay what `bpf_get_stack` gave.
    pub kernel_caller: bool,
    /// Capture registers and a copy of the stack (`-g dwarf`) instead of walking frame
    /// pointers.
    pub dwarf: bool,
    /// Go code: the events carry the goroutine (`r14` in Go's register ABI).
    pub go: bool,
    /// With `add_caller` or `kernel_caller`: the return address is at `[sp + 8 * caller_slot]`
    /// at the probed instruction (instructions skipped before a moved entry site pushed or
    /// reserved that many words; `urec_probe::site`).
    pub caller_slot: u8,
    /// With `dwarf`: the most bytes of stack to copy per event, from sp to the end of the
    /// stack's mapping (a multiple of 8, at most [`MAX_STACK_SIZE`]; 0 copies nothing).
    pub stack_size: u32,
    /// At most [`MAX_ARGS`] arguments.
    pub args: Vec<ArgProgram>,
    /// The `if EXPR` the programs evaluate before recording anything (`struct urec_pred`).
    pub predicate: Option<PredProgram>,
}

/// A comparison operator of a predicate step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum PredCmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// One step of a predicate: a postfix program over a stack of booleans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PredOp {
    /// Pushes `value(operand) OP constant`.
    Cmp {
        /// Index in [`PredProgram::operands`].
        operand: usize,
        /// The comparison.
        cmp: PredCmp,
        /// The value is `(v << shl) >> shr`, both below 64: the operand's type.
        shl: u8,
        /// See `shl`.
        shr: u8,
        /// Arithmetic shift and signed comparison.
        signed: bool,
        /// The constant.
        constant: PredConst,
    },
    /// Pops two, pushes both.
    And,
    /// Pops two, pushes either.
    Or,
}

/// The constant of a comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PredConst {
    /// An integer in the operand's type (signed ones sign-extended).
    Int(u64),
    /// String bytes, fewer than [`PRED_STR`], without NUL (`==` / `!=` only).
    Str(Vec<u8>),
}

/// A predicate, compiled: at most [`MAX_PRED_OPS`] steps over at most [`MAX_PRED_ARGS`]
/// operands and [`MAX_PRED_STRS`] string constants.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PredProgram {
    /// The steps, in postfix order.
    pub ops: Vec<PredOp>,
    /// The fetch programs of the operands (their `at_return` is ignored).
    pub operands: Vec<ArgProgram>,
}

/// A [`ProbeConfig`] that does not fit the fixed-size map value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A stack copy size above [`MAX_STACK_SIZE`] or not a multiple of 8.
    #[error("a stack copy size must be a multiple of 8 of at most {MAX_STACK_SIZE}, got {0}")]
    BadStackSize(u32),
    /// More than [`MAX_ARGS`] arguments.
    #[error("at most {MAX_ARGS} arguments per probe are supported, got {0}")]
    TooManyArgs(usize),
    /// A fetch expression needs more than [`MAX_OPS`] steps.
    #[error("a fetch expression may nest at most {MAX_OPS} steps deep, got {0}")]
    TooDeep(usize),
    /// A predicate beyond the programs' limits, or one that does not end with one value.
    #[error("predicate: {0}")]
    BadPredicate(String),
    /// A register index out of range.
    #[error("no register with index {0}")]
    BadRegister(usize),
    /// An index scale other than 1, 2, 4 or 8.
    #[error("an index scale must be 1, 2, 4 or 8, got {0}")]
    BadScale(u8),
}

/// How an entry frame is marked, for [`PyLayout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PyEntry {
    /// 3.11: a `bool is_entry` at this offset of the frame.
    IsEntry(u64),
    /// 3.12+: the `char owner` at `offset` equals `cstack` (`FRAME_OWNED_BY_CSTACK`).
    Owner {
        /// `offsetof(_PyInterpreterFrame, owner)`.
        offset: u64,
        /// `FRAME_OWNED_BY_CSTACK`.
        cstack: u8,
    },
}

/// The struct offsets the BPF Python walk reads (`struct urec_py_layout`, a `py_layouts`
/// value): `urec_python::FrameOffsets` flattened, without what only the recorder reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyLayout {
    /// `_PyRuntimeState.interpreters.head`.
    pub interpreters_head: u64,
    /// `PyInterpreterState.threads.head`.
    pub threads_head: u64,
    /// `PyThreadState.next`.
    pub tstate_next: u64,
    /// `PyThreadState.thread_id`.
    pub thread_id: u64,
    /// `Some(PyThreadState.cframe)` for 3.11/3.12, whose current frame is in the `_PyCFrame`.
    pub cframe: Option<u64>,
    /// `_PyCFrame.current_frame` (with `cframe`) or `PyThreadState.current_frame`.
    pub current_frame: u64,
    /// `_PyInterpreterFrame.previous`.
    pub frame_previous: u64,
    /// `_PyInterpreterFrame.f_code` / `f_executable`.
    pub frame_code: u64,
    /// `_PyInterpreterFrame.prev_instr` / `instr_ptr`.
    pub frame_instr: u64,
    /// The entry marker.
    pub entry: PyEntry,
    /// `PyCodeObject.co_qualname`.
    pub code_qualname: u64,
    /// `PyCodeObject.co_filename`.
    pub code_filename: u64,
    /// `PyCodeObject.co_firstlineno` (an `int`).
    pub code_firstlineno: u64,
    /// `PyCodeObject.co_code_adaptive`.
    pub code_adaptive: u64,
    /// `PyCodeObject.co_linetable` (a code snapshot reads the line table through it).
    pub code_linetable: u64,
    /// `PyASCIIObject.length`.
    pub unicode_length: u64,
    /// `sizeof(PyCompactUnicodeObject)`: where a non-ASCII compact str's data starts (the
    /// furthest of the two starts), to size a str snapshot.
    pub unicode_compact_data: u64,
    /// `PyBytesObject.ob_size`.
    pub bytes_size: u64,
    /// `PyBytesObject.ob_sval`.
    pub bytes_data: u64,
}

/// `struct urec_py_layout`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RawPyLayout {
    interpreters_head: u64,
    threads_head: u64,
    tstate_next: u64,
    thread_id: u64,
    cframe: u64,
    current_frame: u64,
    frame_previous: u64,
    frame_code: u64,
    frame_instr: u64,
    entry_offset: u64,
    frame_size: u64,
    code_lo: u64,
    code_size: u64,
    code_qualname: u64,
    code_filename: u64,
    code_firstlineno: u64,
    code_adaptive: u64,
    ts_lo: u64,
    ts_size: u64,
    via_cframe: u8,
    entry_kind: u8,
    entry_value: u8,
    _pad: [u8; 5],
    code_linetable: u64,
    snap_lo: u64,
    snap_size: u64,
    unicode_length: u64,
    unicode_data: u64,
    bytes_size: u64,
    bytes_data: u64,
}

/// Size of `struct urec_py_layout`.
pub const PY_LAYOUT_SIZE: usize = size_of::<RawPyLayout>();
const _: () = assert!(PY_LAYOUT_SIZE == 19 * 8 + 8 + 7 * 8);
/// Size of `struct urec_py_proc`, a `py_procs` value.
pub const PY_PROC_SIZE: usize = 16;

impl PyLayout {
    /// The bytes of `struct urec_py_layout` for `py_layouts`, or why this layout cannot be
    /// walked: the program reads each frame and each code object's validation words in one
    /// read of at most [`PY_WINDOW`] bytes, and the fields must be aligned as it reads them.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let entry_offset = match self.entry {
            PyEntry::IsEntry(o) | PyEntry::Owner { offset: o, .. } => o,
        };
        let words = [self.frame_code, self.frame_previous, self.frame_instr];
        if words.iter().any(|w| !w.is_multiple_of(8)) {
            return Err("frame fields not 8-aligned".into());
        }
        let frame_size = words
            .iter()
            .map(|w| w + 8)
            .chain([entry_offset + 1])
            .max()
            .unwrap_or(8);
        if frame_size > PY_WINDOW {
            return Err(format!("frame fields past {PY_WINDOW} bytes"));
        }
        let lo = self
            .code_qualname
            .min(self.code_filename)
            .min(self.code_firstlineno)
            & !7;
        let hi = (self.code_qualname + 8)
            .max(self.code_filename + 8)
            .max(self.code_firstlineno + 4);
        if hi - lo > PY_WINDOW
            || !self.code_qualname.is_multiple_of(8)
            || !self.code_filename.is_multiple_of(8)
            || !self.code_firstlineno.is_multiple_of(4)
        {
            return Err("code object fields too far apart or not aligned".into());
        }
        // A code snapshot's first region: the span `urec_python::read_code` reads (its
        // validation words and the line table pointer), one read of at most PY_WINDOW.
        let snap_lo = lo.min(self.code_linetable) & !7;
        let snap_hi = hi.max(self.code_linetable + 8);
        if snap_hi - snap_lo > PY_WINDOW || !self.code_linetable.is_multiple_of(8) {
            return Err("code object's line table pointer too far from its names".into());
        }
        if self.bytes_data > 255 || self.unicode_compact_data > 255 {
            return Err("str or bytes header implausibly large".into());
        }
        // The thread state: thread_id and what leads to the current frame, one read.
        let link = self.cframe.unwrap_or(self.current_frame);
        if !self.thread_id.is_multiple_of(8) || !link.is_multiple_of(8) {
            return Err("thread state fields not 8-aligned".into());
        }
        let ts_lo = self.thread_id.min(link);
        let ts_size = self.thread_id.max(link) + 8 - ts_lo;
        if ts_size > PY_WINDOW {
            return Err(format!(
                "thread state fields more than {PY_WINDOW} bytes apart"
            ));
        }
        let raw = RawPyLayout {
            interpreters_head: self.interpreters_head,
            threads_head: self.threads_head,
            tstate_next: self.tstate_next,
            thread_id: self.thread_id,
            cframe: self.cframe.unwrap_or(0),
            current_frame: self.current_frame,
            frame_previous: self.frame_previous,
            frame_code: self.frame_code,
            frame_instr: self.frame_instr,
            entry_offset,
            frame_size,
            code_lo: lo,
            code_size: hi - lo,
            code_qualname: self.code_qualname,
            code_filename: self.code_filename,
            code_firstlineno: self.code_firstlineno,
            code_adaptive: self.code_adaptive,
            ts_lo,
            ts_size,
            via_cframe: u8::from(self.cframe.is_some()),
            entry_kind: u8::from(matches!(self.entry, PyEntry::Owner { .. })),
            entry_value: match self.entry {
                PyEntry::Owner { cstack, .. } => cstack,
                PyEntry::IsEntry(_) => 0,
            },
            _pad: [0; 5],
            code_linetable: self.code_linetable,
            snap_lo,
            snap_size: snap_hi - snap_lo,
            unicode_length: self.unicode_length,
            unicode_data: self.unicode_compact_data,
            bytes_size: self.bytes_size,
            bytes_data: self.bytes_data,
        };
        // SAFETY: RawPyLayout is repr(C), made only of integers and arrays of them, with its
        // one padding run an explicit zeroed field; viewing it as bytes is sound.
        let bytes = unsafe {
            std::slice::from_raw_parts(&raw as *const RawPyLayout as *const u8, PY_LAYOUT_SIZE)
        };
        Ok(bytes.to_vec())
    }
}

/// The bytes of `struct urec_py_proc` (a `py_procs` value): the run-time address of the
/// process's `_PyRuntime` and its layout's index in `py_layouts`.
pub fn py_proc_bytes(runtime: u64, layout: u32) -> [u8; PY_PROC_SIZE] {
    let mut b = [0u8; PY_PROC_SIZE];
    b[..8].copy_from_slice(&runtime.to_ne_bytes());
    b[8..12].copy_from_slice(&layout.to_ne_bytes());
    b
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RawOp {
    op: u8,
    size: u8,
    _pad: [u8; 6],
    imm: i64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RawArg {
    nops: u8,
    at_return: u8,
    is_string: u8,
    _pad: [u8; 5],
    ops: [RawOp; MAX_OPS],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RawPredOp {
    op: u8,
    arg: u8,
    shl: u8,
    shr: u8,
    is_signed: u8,
    str_: u8,
    str_len: u8,
    _pad: u8,
    imm: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawPred {
    _pad: [u8; 8],
    ops: [RawPredOp; MAX_PRED_OPS],
    args: [RawArg; MAX_PRED_ARGS],
    strs: [[u8; PRED_STR]; MAX_PRED_STRS],
}

impl Default for RawPred {
    fn default() -> Self {
        RawPred {
            _pad: [0; 8],
            ops: [RawPredOp::default(); MAX_PRED_OPS],
            args: [RawArg::default(); MAX_PRED_ARGS],
            strs: [[0; PRED_STR]; MAX_PRED_STRS],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RawProbeCfg {
    flags: u8,
    nargs: u8,
    npred: u8,
    caller_slot: u8,
    stack_size: u32,
    args: [RawArg; MAX_ARGS],
    pred: RawPred,
}

const PR_EQ: u8 = 1;
const PR_AND: u8 = 7;
const PR_OR: u8 = 8;

/// Size of `struct urec_probe_cfg`, the `probes` map's value.
pub const PROBE_CFG_SIZE: usize = size_of::<RawProbeCfg>();
const _: () = assert!(size_of::<RawOp>() == 16);
const _: () = assert!(size_of::<RawArg>() == 8 + 16 * MAX_OPS);
const PRED_SIZE: usize =
    8 + 16 * MAX_PRED_OPS + (8 + 16 * MAX_OPS) * MAX_PRED_ARGS + PRED_STR * MAX_PRED_STRS;
const _: () = assert!(size_of::<RawPred>() == PRED_SIZE);
const _: () = assert!(PROBE_CFG_SIZE == 8 + (8 + 16 * MAX_OPS) * MAX_ARGS + PRED_SIZE);
const _: () = assert!(std::mem::offset_of!(RawProbeCfg, stack_size) == 4);
const _: () = assert!(std::mem::offset_of!(RawProbeCfg, args) == 8);

impl ProbeConfig {
    /// The bytes of `struct urec_probe_cfg` for the `probes` map.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ConfigError> {
        if self.args.len() > MAX_ARGS {
            return Err(ConfigError::TooManyArgs(self.args.len()));
        }
        if self.stack_size > MAX_STACK_SIZE || !self.stack_size.is_multiple_of(8) {
            return Err(ConfigError::BadStackSize(self.stack_size));
        }
        let mut cfg = RawProbeCfg {
            flags: if self.add_caller { P_ADD_CALLER } else { 0 }
                | if self.kernel_caller {
                    P_KERNEL_CALLER
                } else {
                    0
                }
                | if self.dwarf { P_DWARF } else { 0 }
                | if self.go { P_GO } else { 0 },
            nargs: self.args.len() as u8,
            caller_slot: self.caller_slot,
            stack_size: self.stack_size,
            ..Default::default()
        };
        for (raw, arg) in cfg.args.iter_mut().zip(&self.args) {
            *raw = raw_arg(arg)?;
        }
        if let Some(pred) = &self.predicate {
            cfg.pred = raw_pred(pred)?;
            cfg.npred = pred.ops.len() as u8;
        }
        // SAFETY: RawProbeCfg is repr(C), made only of integers and arrays of them, with every
        // padding byte an explicit zeroed field; viewing it as bytes is sound.
        let bytes = unsafe {
            std::slice::from_raw_parts(&cfg as *const RawProbeCfg as *const u8, PROBE_CFG_SIZE)
        };
        Ok(bytes.to_vec())
    }
}

/// Checks a predicate against the programs' limits and lays it out.
fn raw_pred(pred: &PredProgram) -> Result<RawPred, ConfigError> {
    let bad = |why: String| Err(ConfigError::BadPredicate(why));
    if pred.ops.is_empty() || pred.ops.len() > MAX_PRED_OPS {
        return bad(format!(
            "{} steps, expected 1 to {MAX_PRED_OPS}",
            pred.ops.len()
        ));
    }
    if pred.operands.len() > MAX_PRED_ARGS {
        return bad(format!(
            "{} operands, at most {MAX_PRED_ARGS}",
            pred.operands.len()
        ));
    }
    let mut raw = RawPred::default();
    for (r, a) in raw.args.iter_mut().zip(&pred.operands) {
        *r = raw_arg(a)?;
    }
    // The programs keep the stack in the bits of a u32: check it never under- or overflows.
    let mut depth = 0usize;
    let mut nstrs = 0usize;
    for (r, op) in raw.ops.iter_mut().zip(&pred.ops) {
        *r = match op {
            PredOp::And | PredOp::Or => {
                if depth < 2 {
                    return bad("&& or || with fewer than two values".into());
                }
                depth -= 1;
                RawPredOp {
                    op: if *op == PredOp::And { PR_AND } else { PR_OR },
                    ..RawPredOp::default()
                }
            }
            PredOp::Cmp {
                operand,
                cmp,
                shl,
                shr,
                signed,
                constant,
            } => {
                depth += 1;
                if *operand >= pred.operands.len() || *shl > 63 || *shr > 63 {
                    return bad(format!("bad comparison {op:?}"));
                }
                let code = PR_EQ
                    + match cmp {
                        PredCmp::Eq => 0,
                        PredCmp::Ne => 1,
                        PredCmp::Lt => 2,
                        PredCmp::Le => 3,
                        PredCmp::Gt => 4,
                        PredCmp::Ge => 5,
                    };
                let mut r = RawPredOp {
                    op: code,
                    arg: *operand as u8,
                    shl: *shl,
                    shr: *shr,
                    is_signed: u8::from(*signed),
                    ..RawPredOp::default()
                };
                match constant {
                    PredConst::Int(v) => r.imm = *v,
                    PredConst::Str(bytes) => {
                        if !matches!(cmp, PredCmp::Eq | PredCmp::Ne) {
                            return bad("strings compare with == and != only".into());
                        }
                        if !pred.operands[*operand].is_string {
                            return bad("a string constant for an integer operand".into());
                        }
                        if bytes.len() >= PRED_STR || bytes.contains(&0) {
                            return bad(format!(
                                "a string constant has fewer than {PRED_STR} bytes and no NUL"
                            ));
                        }
                        if nstrs == MAX_PRED_STRS {
                            return bad(format!("at most {MAX_PRED_STRS} string constants"));
                        }
                        raw.strs[nstrs][..bytes.len()].copy_from_slice(bytes);
                        nstrs += 1;
                        r.str_ = nstrs as u8;
                        r.str_len = bytes.len() as u8;
                    }
                }
                r
            }
        };
        if depth > 31 {
            return bad("nests too deep".into());
        }
    }
    if depth != 1 {
        return bad("does not end with one value".into());
    }
    Ok(raw)
}

/// Lays out one fetch program.
fn raw_arg(arg: &ArgProgram) -> Result<RawArg, ConfigError> {
    let mut raw = RawArg::default();
    {
        {
            if arg.ops.len() > MAX_OPS {
                return Err(ConfigError::TooDeep(arg.ops.len()));
            }
            raw.nops = arg.ops.len() as u8;
            raw.at_return = arg.at_return as u8;
            raw.is_string = arg.is_string as u8;
            for (rop, op) in raw.ops.iter_mut().zip(&arg.ops) {
                *rop = match *op {
                    FetchOp::Reg(i) if i < PT_REGS.len() => RawOp {
                        op: OP_REG,
                        imm: i as i64,
                        ..Default::default()
                    },
                    FetchOp::Reg(i) => return Err(ConfigError::BadRegister(i)),
                    FetchOp::SpRel(off) => RawOp {
                        op: OP_SPREL,
                        imm: off,
                        ..Default::default()
                    },
                    FetchOp::Imm(v) => RawOp {
                        op: OP_IMM,
                        imm: v,
                        ..Default::default()
                    },
                    FetchOp::ProbeRel(d) => RawOp {
                        op: OP_FUNCREL,
                        imm: d,
                        ..Default::default()
                    },
                    FetchOp::Deref { off, size } => RawOp {
                        op: OP_DEREF,
                        size: match size {
                            1 | 2 | 4 | 8 => size,
                            _ => 8,
                        },
                        imm: off,
                        ..Default::default()
                    },
                    FetchOp::Add(off) => RawOp {
                        op: OP_ADD,
                        imm: off,
                        ..Default::default()
                    },
                    FetchOp::Comm => RawOp {
                        op: OP_COMM,
                        ..Default::default()
                    },
                    FetchOp::AddReg { reg, scale } => {
                        if reg >= PT_REGS.len() {
                            return Err(ConfigError::BadRegister(reg));
                        }
                        if ![1, 2, 4, 8].contains(&scale) {
                            return Err(ConfigError::BadScale(scale));
                        }
                        RawOp {
                            op: OP_ADDREG,
                            size: scale,
                            imm: reg as i64,
                            ..Default::default()
                        }
                    }
                };
            }
        }
    }
    Ok(raw)
}

/// Size of `struct urec_event`, the fixed head of every ring-buffer record.
pub const EVENT_HEADER_SIZE: usize = 40;

/// A ring-buffer record, borrowed from the ring.
#[derive(Clone, Copy, Debug)]
pub struct RawEvent<'a> {
    /// Probe id (the attach cookie).
    pub probe: u32,
    /// [`KIND_ENTRY`] or [`KIND_RETURN`].
    pub kind: u8,
    /// `F_*` bits.
    pub flags: u8,
    /// The call's events were kept as one in `2^weight_shift` calls (ring pressure): they
    /// stand for that many calls. At most [`MAX_SHIFT`].
    pub weight_shift: u8,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// CPU.
    pub cpu: u32,
    /// Bit i: argument i (of this event's kind) faulted.
    pub fault_mask: u16,
    /// `CLOCK_MONOTONIC` ns.
    pub time_ns: u64,
    /// Entry-to-return ns, valid when `flags & F_LATENCY`.
    pub latency_ns: u64,
    /// A Go event's goroutine (its `g`), with [`F_GOROUTINE`].
    pub goroutine: Option<u64>,
    args: &'a [u8],
    frames: &'a [u8],
    /// With [`F_DWARF`]: what the CFI unwind needs.
    pub dwarf: Option<RawDwarf<'a>>,
    /// With [`F_PYTHON`]: the probed thread's Python frames.
    pub python: Option<RawPython<'a>>,
    /// With [`F_STACK_ID`]: the key of the event's frames in the `stacks` map, and how many
    /// of them there are; [`RawEvent::frames`] is then empty.
    pub stack_id: Option<(u64, usize)>,
}

/// The Python block of a record: the interpreter frames the probed thread was running.
#[derive(Clone, Copy, Debug)]
pub struct RawPython<'a> {
    /// `PY_*` bits ([`PY_TRUNCATED`], [`PY_READ_FAILED`], [`PY_NO_THREAD`]).
    pub status: u16,
    frames: &'a [u8],
}

/// One Python frame as the BPF walk read it: the code object and the words that validate it
/// later (a freed and reused code object is not misnamed), and where in its code it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawPyFrame {
    /// The code object's address.
    pub code: u64,
    /// `co_qualname` (a pointer), 0 for a shim frame.
    pub qualname: u64,
    /// `co_filename` (a pointer), 0 for a shim frame.
    pub filename: u64,
    /// `co_firstlineno`, 0 for a shim frame.
    pub first_line: i32,
    /// Bytes from `co_code_adaptive` to the frame's instruction pointer field, when it lay
    /// inside the code.
    pub instr_offset: Option<u32>,
    /// 3.11: `is_entry`; 3.12+: the frame is a C-stack shim (owner `FRAME_OWNED_BY_CSTACK`).
    pub entry_marker: bool,
}

impl<'a> RawPython<'a> {
    /// A block from its parts: the frames' bytes as [`RawPython::bytes`] gave them (kept by a
    /// recorder that names the frames later). A trailing partial frame is ignored.
    pub fn from_parts(status: u16, frames: &'a [u8]) -> RawPython<'a> {
        let whole = frames.len() / PY_FRAME_SIZE * PY_FRAME_SIZE;
        RawPython {
            status,
            frames: &frames[..whole],
        }
    }

    /// The frames' bytes as the programs wrote them: equal bytes are equal frames, so the
    /// recorder names a repeated Python stack by one lookup.
    pub fn bytes(&self) -> &'a [u8] {
        self.frames
    }

    /// The frames, innermost first.
    pub fn frames(&self) -> impl Iterator<Item = RawPyFrame> + 'a {
        self.frames.chunks_exact(PY_FRAME_SIZE).map(|c| {
            let instr = u32_at(c, 28);
            let off = instr & PY_INSTR_NONE;
            RawPyFrame {
                code: u64_at(c, 0),
                qualname: u64_at(c, 8),
                filename: u64_at(c, 16),
                first_line: u32_at(c, 24) as i32,
                instr_offset: (off != PY_INSTR_NONE).then_some(off),
                entry_marker: instr & PY_ENTRY != 0,
            }
        })
    }

    /// Number of frames.
    pub fn nframes(&self) -> usize {
        self.frames.len() / PY_FRAME_SIZE
    }
}

/// The `-g dwarf` part of a record: registers at the probe, what pending uretprobes hid, and
/// the stack copy.
#[derive(Clone, Copy, Debug)]
pub struct RawDwarf<'a> {
    /// Instruction pointer.
    pub ip: u64,
    /// Stack pointer: `stack` starts here.
    pub sp: u64,
    /// Frame pointer register.
    pub bp: u64,
    /// The uretprobe trampoline address of the process (0: none).
    pub trampoline: u64,
    /// Return-only probes: the probed function's address, to put before the unwound stack
    /// (which starts in the caller); 0 otherwise.
    pub leaf: u64,
    /// `D_*` bits.
    pub status: u16,
    /// Bit i: chunk i of the copy could not be read (it holds zeros). Chunk 0 runs from `sp`
    /// to the next 4 KiB boundary, chunk i > 0 is the i-th page after it.
    pub holes: u32,
    pending: &'a [u8],
    /// The bytes copied from `sp` upward.
    pub stack: &'a [u8],
}

impl<'a> RawDwarf<'a> {
    /// The kernel's pending return instances, innermost first: (slot address, original
    /// return address).
    pub fn pending(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        self.pending
            .chunks_exact(16)
            .map(|c| (u64_at(c, 0), u64_at(c, 8)))
    }
}

/// Size of `struct urec_py_code`, after a [`KIND_PYCODE`] record's header.
pub const PY_CODE_SIZE: usize = 32;
/// Size of `struct urec_py_region`, before each region's bytes.
pub const PY_REGION_SIZE: usize = 16;
/// Regions a snapshot has at most (`UREC_PY_SNAP_REGIONS`).
pub const PY_SNAP_REGIONS: usize = 4;
/// The largest region the programs copy (`PY_SNAP_REGION_MAX`).
pub const PY_SNAP_REGION_MAX: usize = 4224;

/// A [`KIND_PYCODE`] record: one code object's memory as the programs copied it when an event
/// first met it, so the recorder can name it after the process is gone (`urec.h`, "Python
/// code snapshots").
#[derive(Clone, Debug)]
pub struct RawPyCode<'a> {
    /// The process (tgid).
    pub pid: u32,
    /// The code object's address.
    pub code: u64,
    /// `co_qualname` at the probe (the frame's validation word).
    pub qualname: u64,
    /// `co_filename` at the probe.
    pub filename: u64,
    /// `co_firstlineno` at the probe.
    pub first_line: i32,
    /// (address, bytes read there), as many as the reads that succeeded.
    pub regions: Vec<(u64, &'a [u8])>,
}

impl<'a> RawPyCode<'a> {
    /// Decodes a [`KIND_PYCODE`] record (its kind checked by the caller through
    /// [`record_kind`]); a malformed one is an error, never a panic.
    pub fn parse(b: &'a [u8]) -> Result<Self, DecodeError> {
        let err = |why| DecodeError { len: b.len(), why };
        if b.len() < EVENT_HEADER_SIZE + PY_CODE_SIZE {
            return Err(err("shorter than a code snapshot's header"));
        }
        if b[4] != KIND_PYCODE {
            return Err(err("not a code snapshot"));
        }
        let c = &b[EVENT_HEADER_SIZE..EVENT_HEADER_SIZE + PY_CODE_SIZE];
        let nregions = usize::from(u16_at(c, 28));
        if nregions > PY_SNAP_REGIONS {
            return Err(err("more snapshot regions than the programs write"));
        }
        let mut at = EVENT_HEADER_SIZE + PY_CODE_SIZE;
        let mut regions = Vec::with_capacity(nregions);
        for _ in 0..nregions {
            let h = b
                .get(at..at + PY_REGION_SIZE)
                .ok_or_else(|| err("shorter than its snapshot region header"))?;
            let addr = u64_at(h, 0);
            let len = u32_at(h, 8) as usize;
            if len > PY_SNAP_REGION_MAX {
                return Err(err("a snapshot region larger than the programs copy"));
            }
            let data_at = at + PY_REGION_SIZE;
            let data = b
                .get(data_at..data_at + len)
                .ok_or_else(|| err("shorter than its snapshot region"))?;
            if addr.checked_add(len as u64).is_none() {
                return Err(err("a snapshot region past the address space"));
            }
            regions.push((addr, data));
            at = data_at + len.div_ceil(8) * 8;
        }
        Ok(RawPyCode {
            pid: u32_at(b, 8),
            code: u64_at(c, 0),
            qualname: u64_at(c, 8),
            filename: u64_at(c, 16),
            first_line: u32_at(c, 24) as i32,
            regions,
        })
    }
}

/// The kind byte of a ring record ([`KIND_ENTRY`], [`KIND_RETURN`], [`KIND_PYCODE`]), so the
/// consumer dispatches before decoding; None for a record shorter than its header.
pub fn record_kind(b: &[u8]) -> Option<u8> {
    (b.len() >= EVENT_HEADER_SIZE).then(|| b[4])
}

/// The mixing step of the hashes the programs and the recorder both compute (`urec.h`, "The
/// hashes both sides compute"; `py_mix` in `urec.bpf.c`): equal inputs must give equal keys
/// on both sides, so change both together.
pub fn py_mix(h: u64, v: u64) -> u64 {
    let h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

/// `UREC_PY_HASH_SEED`.
pub const PY_HASH_SEED: u64 = 0x7572_6563_7079_0001;

/// A code object's check words hashed: the `py_named` value the programs compare with.
pub fn py_code_check(qualname: u64, filename: u64, first_line: i32) -> u64 {
    py_mix(
        py_mix(py_mix(PY_HASH_SEED, qualname), filename),
        u64::from(first_line as u32),
    )
}

/// A Python block's frames hashed as the walk folds them (code, qualname, filename, first
/// line of each frame as written, innermost first): the `py_stacks_named` key.
pub fn py_stack_hash(py: &RawPython<'_>) -> u64 {
    py.frames().fold(PY_HASH_SEED, |h, f| {
        let h = py_mix(py_mix(py_mix(h, f.code), f.qualname), f.filename);
        py_mix(h, u64::from(f.first_line as u32))
    })
}

/// The bytes of a `struct urec_py_code_key` (`py_named`, `py_sent`, `py_stacks_named`).
pub fn py_code_key(tgid: u32, code: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..4].copy_from_slice(&tgid.to_ne_bytes());
    k[8..].copy_from_slice(&code.to_ne_bytes());
    k
}

/// A ring-buffer record that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("malformed ring-buffer record ({len} bytes): {why}")]
pub struct DecodeError {
    len: usize,
    why: &'static str,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(x)
}

/// One decoded argument value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RawArgValue<'a> {
    /// Raw bits of an integer fetch.
    Int(u64),
    /// String bytes (up to the first NUL) and whether the string went on past [`STR_MAX`].
    Str(&'a [u8], bool),
    /// The read faulted.
    Fault,
}

impl<'a> RawEvent<'a> {
    /// Decodes a record as the BPF programs wrote it.
    pub fn parse(b: &'a [u8]) -> Result<Self, DecodeError> {
        let err = |why| DecodeError { len: b.len(), why };
        if b.len() < EVENT_HEADER_SIZE {
            return Err(err("shorter than its header"));
        }
        let nframes = usize::from(b[6]);
        let args_len = u16_at(b, 20) as usize;
        let flags = b[5];
        let args_at = EVENT_HEADER_SIZE + if flags & F_GOROUTINE != 0 { 8 } else { 0 };
        let python_at = args_at + args_len;
        let python = if flags & F_PYTHON != 0 {
            let h = b
                .get(python_at..python_at + PY_HEAD_SIZE)
                .ok_or_else(|| err("shorter than its Python block header"))?;
            let n = usize::from(u16_at(h, 0));
            if n > PY_MAX_FRAMES {
                return Err(err("more Python frames than the programs write"));
            }
            let at = python_at + PY_HEAD_SIZE;
            let frames = b
                .get(at..at + n * PY_FRAME_SIZE)
                .ok_or_else(|| err("shorter than its Python frames"))?;
            Some(RawPython {
                status: u16_at(h, 2),
                frames,
            })
        } else {
            None
        };
        let frames_at = python_at + python.map_or(0, |p| PY_HEAD_SIZE + p.frames.len());
        let stack_id = flags & F_STACK_ID != 0;
        if stack_id && (flags & F_DWARF != 0 || nframes == 0 || nframes > STACK_SLOTS) {
            return Err(err("a stack id with a stack copy or a wrong frame count"));
        }
        let end = frames_at + if stack_id { 8 } else { nframes * 8 };
        if end > b.len() {
            return Err(err("shorter than its header says"));
        }
        let dwarf = if flags & F_DWARF != 0 {
            let d = b
                .get(frames_at..frames_at + DWARF_HEADER_SIZE)
                .ok_or_else(|| err("shorter than its stack copy header"))?;
            let stack_len = u32_at(d, 40) as usize;
            let npending = u16_at(d, 44) as usize;
            let pending_at = frames_at + DWARF_HEADER_SIZE;
            let stack_at = pending_at + npending * 16;
            let pending = b
                .get(pending_at..stack_at)
                .ok_or_else(|| err("shorter than its pending returns"))?;
            let stack = b
                .get(stack_at..stack_at + stack_len)
                .ok_or_else(|| err("shorter than its stack copy"))?;
            Some(RawDwarf {
                ip: u64_at(d, 0),
                sp: u64_at(d, 8),
                bp: u64_at(d, 16),
                trampoline: u64_at(d, 24),
                leaf: u64_at(d, 32),
                status: u16_at(d, 46),
                holes: u32_at(d, 48),
                pending,
                stack,
            })
        } else {
            None
        };
        Ok(RawEvent {
            dwarf,
            probe: u32_at(b, 0),
            kind: b[4],
            flags,
            weight_shift: b[7],
            pid: u32_at(b, 8),
            tid: u32_at(b, 12),
            cpu: u32_at(b, 16),
            fault_mask: u16_at(b, 22),
            time_ns: u64_at(b, 24),
            latency_ns: u64_at(b, 32),
            goroutine: (flags & F_GOROUTINE != 0).then(|| u64_at(b, EVENT_HEADER_SIZE)),
            args: &b[args_at..python_at],
            python,
            frames: if stack_id { &[] } else { &b[frames_at..end] },
            stack_id: stack_id.then(|| (u64_at(b, frames_at), nframes)),
        })
    }

    /// The user stack, innermost first.
    pub fn frames(&self) -> impl Iterator<Item = u64> + 'a {
        self.frames.chunks_exact(8).map(|c| u64_at(c, 0))
    }

    /// Number of stack frames.
    pub fn nframes(&self) -> usize {
        self.frames.len() / 8
    }

    /// Decodes the arguments; `is_string[i]` says whether argument i of this event's kind is a
    /// string (the record itself does not say).
    pub fn args(
        &self,
        is_string: &[bool],
        out: &mut Vec<RawArgValue<'a>>,
    ) -> Result<(), DecodeError> {
        let b = self.args;
        let err = |why| DecodeError { len: b.len(), why };
        let mut at = 0;
        out.clear();
        for (i, &string) in is_string.iter().enumerate() {
            if at + 8 > b.len() {
                return Err(err("fewer arguments than the probe has"));
            }
            let word = u64_at(b, at);
            at += 8;
            let faulted = i < 16 && self.fault_mask & (1 << i) != 0;
            if faulted {
                out.push(RawArgValue::Fault);
                continue;
            }
            if !string {
                out.push(RawArgValue::Int(word));
                continue;
            }
            let len = (word & 0xffff_ffff) as usize;
            let truncated = word >> 32 & 1 == 1;
            if len > STR_MAX || at + len > b.len() {
                return Err(err("string longer than the record"));
            }
            let bytes = &b[at..at + len];
            let bytes = match bytes.iter().position(|&c| c == 0) {
                Some(nul) => &bytes[..nul],
                None => bytes,
            };
            out.push(RawArgValue::Str(bytes, truncated));
            at += (len + 7) & !7;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_indexes() {
        assert_eq!(PT_REGS[14], "di");
        assert_eq!(PT_REGS[REG_SP], "sp");
        assert_eq!(PT_REGS[REG_AX], "ax");
        assert_eq!(PT_REGS[9], "r8");
    }

    #[test]
    fn config_layout() {
        let cfg = ProbeConfig {
            add_caller: true,
            kernel_caller: false,
            dwarf: false,
            go: false,
            caller_slot: 3,
            stack_size: 16384,
            args: vec![ArgProgram {
                at_return: true,
                is_string: false,
                ops: vec![FetchOp::Reg(REG_AX), FetchOp::Deref { off: -8, size: 4 }],
            }],
            predicate: None,
        };
        let b = cfg.to_bytes().unwrap();
        assert_eq!(b.len(), PROBE_CFG_SIZE);
        assert_eq!(&b[..2], &[1, 1]);
        // caller_slot: the return address 3 words above sp at a moved entry site.
        assert_eq!(b[3], 3);
        assert_eq!(u32_at(&b, 4), 16384);
        assert_eq!(&b[8..11], &[2, 1, 0]);
        assert_eq!(b[16], OP_REG);
        assert_eq!(u64_at(&b, 24), REG_AX as u64);
        assert_eq!(&b[32..34], &[OP_DEREF, 4]);
        assert_eq!(u64_at(&b, 40) as i64, -8);
        for bad in [MAX_STACK_SIZE + 8, 12] {
            let cfg = ProbeConfig {
                stack_size: bad,
                ..cfg.clone()
            };
            assert!(matches!(cfg.to_bytes(), Err(ConfigError::BadStackSize(_))));
        }
        let indexed = |reg, scale| ProbeConfig {
            args: vec![ArgProgram {
                ops: vec![FetchOp::Reg(REG_AX), FetchOp::AddReg { reg, scale }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let b = indexed(14, 8).to_bytes().unwrap();
        assert_eq!(&b[32..34], &[OP_ADDREG, 8]);
        assert_eq!(u64_at(&b, 40), 14);
        assert!(matches!(
            indexed(14, 3).to_bytes(),
            Err(ConfigError::BadScale(3))
        ));
        assert!(matches!(
            indexed(21, 8).to_bytes(),
            Err(ConfigError::BadRegister(21))
        ));
    }

    #[test]
    fn decode_stack_id() {
        let mut b = vec![0u8; EVENT_HEADER_SIZE];
        b[5] = F_STACK_ID;
        b[6] = 104; // nframes: stored in `stacks`
        b.extend_from_slice(&0xfeed_beefu64.to_ne_bytes());
        let e = RawEvent::parse(&b).unwrap();
        assert_eq!(e.stack_id, Some((0xfeed_beef, 104)));
        assert_eq!(e.nframes(), 0);
        assert!(RawEvent::parse(&b[..b.len() - 1]).is_err());
        // An id stands for frames: never with a copy, never for none or too many.
        for (flags, n) in [
            (F_STACK_ID | F_DWARF, 3),
            (F_STACK_ID, 0),
            (F_STACK_ID, 130),
        ] {
            b[5] = flags;
            b[6] = n;
            assert!(RawEvent::parse(&b).is_err(), "{flags} {n}");
        }
    }

    #[test]
    fn decode_event() {
        let mut b = vec![0u8; EVENT_HEADER_SIZE];
        b[0] = 3; // probe
        b[4] = KIND_RETURN;
        b[6] = 2; // nframes
        b[7] = 4; // weight_shift
        b[20] = 8 + 8 + 8; // args_len: int + string "hi"
        b[22] = 0;
        b.extend_from_slice(&42u64.to_ne_bytes());
        b.extend_from_slice(&2u64.to_ne_bytes());
        b.extend_from_slice(b"hi\0\0\0\0\0\0");
        b.extend_from_slice(&0x1000u64.to_ne_bytes());
        b.extend_from_slice(&0x2000u64.to_ne_bytes());
        let e = RawEvent::parse(&b).unwrap();
        assert_eq!(e.probe, 3);
        assert_eq!(e.weight_shift, 4);
        assert_eq!(e.frames().collect::<Vec<_>>(), vec![0x1000, 0x2000]);
        let mut args = Vec::new();
        e.args(&[false, true], &mut args).unwrap();
        assert_eq!(
            args,
            vec![RawArgValue::Int(42), RawArgValue::Str(b"hi", false)]
        );
        assert!(RawEvent::parse(&b[..b.len() - 1]).is_err());
        assert!(e.args(&[false, true, false], &mut args).is_err());
    }

    #[test]
    fn decode_dwarf_event() {
        let mut b = vec![0u8; EVENT_HEADER_SIZE];
        b[5] = F_DWARF;
        b[20] = 8; // one int arg
        b.extend_from_slice(&7u64.to_ne_bytes());
        for v in [0x401000u64, 0x7ffd_0000, 0x7ffd_0100, 0x7fff_f000, 0] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&12u32.to_ne_bytes()); // stack_len
        b.extend_from_slice(&1u16.to_ne_bytes()); // npending
        b.extend_from_slice(&D_HOLES.to_ne_bytes());
        b.extend_from_slice(&2u32.to_ne_bytes()); // holes
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&0x7ffd_0040u64.to_ne_bytes());
        b.extend_from_slice(&0x401234u64.to_ne_bytes());
        b.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let e = RawEvent::parse(&b).unwrap();
        let d = e.dwarf.unwrap();
        assert_eq!(
            (d.ip, d.sp, d.bp, d.trampoline, d.leaf),
            (0x401000, 0x7ffd_0000, 0x7ffd_0100, 0x7fff_f000, 0)
        );
        assert_eq!((d.status, d.holes), (D_HOLES, 2));
        assert_eq!(
            d.pending().collect::<Vec<_>>(),
            vec![(0x7ffd_0040, 0x401234)]
        );
        assert_eq!(d.stack.len(), 12);
        assert_eq!(e.nframes(), 0);
        assert!(RawEvent::parse(&b[..b.len() - 1]).is_err());
    }

    fn py_frame(b: &mut Vec<u8>, code: u64, first_line: i32, instr: u32) {
        b.extend_from_slice(&code.to_ne_bytes());
        b.extend_from_slice(&(code + 0x100).to_ne_bytes());
        b.extend_from_slice(&(code + 0x200).to_ne_bytes());
        b.extend_from_slice(&first_line.to_ne_bytes());
        b.extend_from_slice(&instr.to_ne_bytes());
    }

    /// A record with args, a Python block and fp frames: each part where the header says.
    #[test]
    fn decode_python_event() {
        let mut b = vec![0u8; EVENT_HEADER_SIZE];
        b[5] = F_PYTHON;
        b[6] = 1; // nframes
        b[20] = 8; // one int arg
        b.extend_from_slice(&7u64.to_ne_bytes());
        b.extend_from_slice(&2u16.to_ne_bytes()); // nframes
        b.extend_from_slice(&PY_TRUNCATED.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        py_frame(&mut b, 0x7f00_0000, 3, 42);
        py_frame(&mut b, 0x7f00_1000, -1, PY_ENTRY | PY_INSTR_NONE);
        b.extend_from_slice(&0x401000u64.to_ne_bytes());
        let e = RawEvent::parse(&b).unwrap();
        let py = e.python.unwrap();
        assert_eq!(py.status, PY_TRUNCATED);
        assert_eq!(py.nframes(), 2);
        let frames: Vec<_> = py.frames().collect();
        assert_eq!(
            frames[0],
            RawPyFrame {
                code: 0x7f00_0000,
                qualname: 0x7f00_0100,
                filename: 0x7f00_0200,
                first_line: 3,
                instr_offset: Some(42),
                entry_marker: false,
            }
        );
        assert_eq!(frames[1].first_line, -1);
        assert_eq!(frames[1].instr_offset, None);
        assert!(frames[1].entry_marker);
        assert_eq!(e.frames().collect::<Vec<_>>(), vec![0x401000]);
        let mut args = Vec::new();
        e.args(&[false], &mut args).unwrap();
        assert_eq!(args, vec![RawArgValue::Int(7)]);
        // Every shorter record is an error, never a panic.
        for len in 0..b.len() {
            assert!(RawEvent::parse(&b[..len]).is_err(), "{len} bytes decoded");
        }
        // A frame count beyond what the programs write.
        let mut bad = b.clone();
        bad[EVENT_HEADER_SIZE + 8] = 65;
        assert!(RawEvent::parse(&bad).is_err());
        // Without the flag the same bytes are args and frames only.
        let mut plain = b.clone();
        plain[5] = 0;
        let e = RawEvent::parse(&plain).unwrap();
        assert!(e.python.is_none());
    }

    /// An empty Python block (no thread matched) before a DWARF part.
    #[test]
    fn decode_python_dwarf_event() {
        let mut b = vec![0u8; EVENT_HEADER_SIZE];
        b[5] = F_PYTHON | F_DWARF;
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&PY_NO_THREAD.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        for v in [0x401000u64, 0x7ffd_0000, 0, 0, 0] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&8u32.to_ne_bytes()); // stack_len
        b.extend_from_slice(&[0u8; 12]);
        b.extend_from_slice(&[9u8; 8]);
        let e = RawEvent::parse(&b).unwrap();
        let py = e.python.unwrap();
        assert_eq!((py.status, py.nframes()), (PY_NO_THREAD, 0));
        let d = e.dwarf.unwrap();
        assert_eq!((d.ip, d.sp), (0x401000, 0x7ffd_0000));
        assert_eq!(d.stack, &[9u8; 8]);
        assert!(RawEvent::parse(&b[..EVENT_HEADER_SIZE + 4]).is_err());
    }

    #[test]
    fn python_layout_bytes() {
        let layout = PyLayout {
            interpreters_head: 40,
            threads_head: 16,
            tstate_next: 8,
            thread_id: 152,
            cframe: Some(56),
            current_frame: 8,
            frame_previous: 48,
            frame_code: 32,
            frame_instr: 56,
            entry: PyEntry::IsEntry(68),
            code_qualname: 128,
            code_filename: 112,
            code_firstlineno: 72,
            code_adaptive: 184,
            code_linetable: 136,
            unicode_length: 16,
            unicode_compact_data: 72,
            bytes_size: 16,
            bytes_data: 32,
        };
        let b = layout.to_bytes().unwrap();
        assert_eq!(b.len(), PY_LAYOUT_SIZE);
        // The snapshot's code span: first line (72) to past the line table pointer (144).
        assert_eq!((u64_at(&b, 168), u64_at(&b, 176)), (72, 72));
        assert_eq!((u64_at(&b, 160), u64_at(&b, 192)), (136, 72));
        let lines_far = PyLayout {
            code_linetable: 600,
            ..layout
        };
        assert!(lines_far.to_bytes().is_err());
        assert_eq!(u64_at(&b, 32), 56); // cframe
        assert_eq!(u64_at(&b, 72), 68); // entry offset
        assert_eq!(u64_at(&b, 80), 69); // frame_size: past is_entry
        assert_eq!((u64_at(&b, 88), u64_at(&b, 96)), (72, 64)); // code window
        assert_eq!((u64_at(&b, 136), u64_at(&b, 144)), (56, 104)); // thread state window
        assert_eq!(&b[152..155], &[1, 0, 0]);
        let far = PyLayout {
            code_qualname: 400,
            ..layout
        };
        assert!(far.to_bytes().is_err());
        let owner = PyLayout {
            cframe: None,
            current_frame: 72,
            entry: PyEntry::Owner {
                offset: 70,
                cstack: 3,
            },
            ..layout
        };
        let b = owner.to_bytes().unwrap();
        assert_eq!(&b[152..155], &[0, 1, 3]);
        // A direct current_frame (3.13: 72) is read with thread_id.
        assert_eq!((u64_at(&b, 136), u64_at(&b, 144)), (72, 88));
        let apart = PyLayout {
            current_frame: 8,
            ..owner
        };
        assert!(apart.to_bytes().is_err());
        assert_eq!(py_proc_bytes(0xa5b740, 2)[8], 2);
    }

    /// A code snapshot: header, code words, regions padded to 8.
    fn py_code_record(regions: &[(u64, &[u8])]) -> Vec<u8> {
        let mut b = vec![0u8; EVENT_HEADER_SIZE];
        b[..4].copy_from_slice(&PY_CODE_PROBE.to_ne_bytes());
        b[4] = KIND_PYCODE;
        b[8..12].copy_from_slice(&4321u32.to_ne_bytes());
        for v in [0x7f00_0000u64, 0x7f00_0100, 0x7f00_0200] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&(-3i32).to_ne_bytes());
        b.extend_from_slice(&(regions.len() as u16).to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        for (addr, data) in regions {
            b.extend_from_slice(&addr.to_ne_bytes());
            b.extend_from_slice(&(data.len() as u32).to_ne_bytes());
            b.extend_from_slice(&0u32.to_ne_bytes());
            b.extend_from_slice(data);
            b.resize(b.len().div_ceil(8) * 8, 0);
        }
        b
    }

    #[test]
    fn decode_python_code_snapshot() {
        let b = py_code_record(&[(0x7f00_0048, &[1, 2, 3]), (0x7f00_0100, &[9; 16])]);
        assert_eq!(record_kind(&b), Some(KIND_PYCODE));
        assert_eq!(record_kind(&b[..39]), None);
        let c = RawPyCode::parse(&b).unwrap();
        assert_eq!(c.pid, 4321);
        assert_eq!(
            (c.code, c.qualname, c.filename, c.first_line),
            (0x7f00_0000, 0x7f00_0100, 0x7f00_0200, -3)
        );
        assert_eq!(
            c.regions,
            vec![
                (0x7f00_0048, &[1u8, 2, 3][..]),
                (0x7f00_0100, &[9u8; 16][..])
            ]
        );
        // Every shorter record (the last region ends the record): an error, never a panic.
        for len in 0..b.len() {
            assert!(RawPyCode::parse(&b[..len]).is_err(), "{len} bytes decoded");
        }
        // No regions at all (every read faulted) is a valid, empty snapshot.
        assert!(RawPyCode::parse(&py_code_record(&[]))
            .unwrap()
            .regions
            .is_empty());
        // Too many regions, a region longer than the programs copy, an address overflow.
        let mut bad = b.clone();
        bad[EVENT_HEADER_SIZE + 28] = 5;
        assert!(RawPyCode::parse(&bad).is_err());
        let mut bad = b.clone();
        let len_at = EVENT_HEADER_SIZE + PY_CODE_SIZE + 8;
        bad[len_at..len_at + 4].copy_from_slice(&(PY_SNAP_REGION_MAX as u32 + 1).to_ne_bytes());
        assert!(RawPyCode::parse(&bad).is_err());
        let bad = py_code_record(&[(u64::MAX - 1, &[1, 2, 3])]);
        assert!(RawPyCode::parse(&bad).is_err());
        // An event is not a snapshot.
        let mut ev = b.clone();
        ev[4] = KIND_ENTRY;
        assert!(RawPyCode::parse(&ev).is_err());
    }

    /// The stack hash folds each frame's four words in order (the same fold as the
    /// programs'), so frames in another order or another first line are another stack.
    #[test]
    fn python_stack_hash() {
        let mut b = Vec::new();
        py_frame(&mut b, 0x7f00_0000, 3, 42);
        py_frame(&mut b, 0x7f00_1000, 7, PY_ENTRY | 8);
        let h = py_stack_hash(&RawPython::from_parts(0, &b));
        let mut by_hand = PY_HASH_SEED;
        for (code, line) in [(0x7f00_0000u64, 3u64), (0x7f00_1000, 7)] {
            for v in [code, code + 0x100, code + 0x200, line] {
                by_hand = py_mix(by_hand, v);
            }
        }
        assert_eq!(h, by_hand);
        // The instruction offsets are not part of it: the same code objects, named once.
        let mut other_instr = Vec::new();
        py_frame(&mut other_instr, 0x7f00_0000, 3, 50);
        py_frame(&mut other_instr, 0x7f00_1000, 7, 8);
        assert_eq!(py_stack_hash(&RawPython::from_parts(0, &other_instr)), h);
        let mut swapped = Vec::new();
        py_frame(&mut swapped, 0x7f00_1000, 7, 8);
        py_frame(&mut swapped, 0x7f00_0000, 3, 42);
        assert_ne!(py_stack_hash(&RawPython::from_parts(0, &swapped)), h);
        assert_ne!(py_code_check(1, 2, 3), py_code_check(1, 2, 4));
        assert_eq!(py_code_key(5, 6)[..4], 5u32.to_ne_bytes());
    }

    #[test]
    fn predicate_layout() {
        let cmp = |operand, constant| PredOp::Cmp {
            operand,
            cmp: PredCmp::Ne,
            shl: 32,
            shr: 32,
            signed: true,
            constant,
        };
        let pred = PredProgram {
            ops: vec![
                cmp(0, PredConst::Int(u64::MAX)),
                cmp(1, PredConst::Str(b"sh".to_vec())),
                PredOp::Or,
            ],
            operands: vec![
                ArgProgram {
                    ops: vec![FetchOp::Reg(REG_AX)],
                    ..Default::default()
                },
                ArgProgram {
                    is_string: true,
                    ops: vec![FetchOp::Comm],
                    ..Default::default()
                },
            ],
        };
        let cfg = ProbeConfig {
            predicate: Some(pred.clone()),
            ..Default::default()
        };
        let b = cfg.to_bytes().unwrap();
        assert_eq!(b.len(), PROBE_CFG_SIZE);
        let p = 8 + (8 + 16 * MAX_OPS) * MAX_ARGS;
        assert_eq!(b[2], 3); // npred
        assert_eq!(&b[p + 8..p + 16], &[2, 0, 32, 32, 1, 0, 0, 0]);
        assert_eq!(u64_at(&b, p + 16), u64::MAX);
        assert_eq!(&b[p + 24..p + 32], &[2, 1, 32, 32, 1, 1, 2, 0]);
        assert_eq!(b[p + 40], PR_OR);
        let args = p + 8 + 16 * MAX_PRED_OPS;
        assert_eq!(b[args], 1); // operand 0: one op
        assert_eq!(b[args + 8], OP_REG);
        let strs = args + (8 + 16 * MAX_OPS) * MAX_PRED_ARGS;
        assert_eq!(&b[strs..strs + 3], b"sh\0");
        // Programs that would leave the stack wrong, or break the limits, are refused.
        for ops in [
            vec![PredOp::And],
            vec![cmp(0, PredConst::Int(1)), cmp(0, PredConst::Int(1))],
            vec![cmp(2, PredConst::Int(1))],
            vec![cmp(0, PredConst::Str(b"x".to_vec()))],
            vec![],
        ] {
            let cfg = ProbeConfig {
                predicate: Some(PredProgram {
                    ops,
                    ..pred.clone()
                }),
                ..Default::default()
            };
            assert!(matches!(cfg.to_bytes(), Err(ConfigError::BadPredicate(_))));
        }
    }
}
