//! Offsets of the CPython versions that do not publish `_Py_DebugOffsets` (3.11, 3.12), one
//! table per minor version, for x86-64 builds of the default (GIL) configuration.
//!
//! CPython keeps these layouts stable within a minor version (the structs are internal, but
//! debuggers and profilers such as py-spy rely on it), so a table is keyed by the minor
//! version the binary states in `Py_Version`, never by file name. Each number below was taken
//! from the headers of that version by compiling `offsetof`/`sizeof` against them (the program
//! is in `docs/python-frames.md`), and the header and struct are named next to it.

use crate::{CurrentFrame, EntryMarker, FrameOffsets};

/// The offsets of a minor version of Python 3, or None where there is no table (yet).
pub fn for_minor(minor: u8) -> Option<FrameOffsets> {
    match minor {
        11 => Some(PY311),
        // 3.12 needs its own table (its `PyThreadState` and `_PyInterpreterFrame` differ from
        // 3.11's: `is_entry` is gone, `FRAME_OWNED_BY_CSTACK` marks entry frames). No 3.12
        // headers were on the machine the 3.11 table was measured on, and a number not
        // measured from them is not written here; until it is, 3.12 is `Unknown`.
        _ => None,
    }
}

/// CPython 3.11, measured with `offsetof` against Debian 12's `libpython3.11-dev`
/// 3.11.2-6+deb12u6 headers (`/usr/include/python3.11`, `Py_BUILD_CORE` defined,
/// `PY_VERSION_HEX` 0x030b02f0).
const PY311: FrameOffsets = FrameOffsets {
    // internal/pycore_runtime.h, `struct pyruntimestate`: `interpreters.head`.
    runtime_interpreters_head: 40,
    // internal/pycore_interp.h, `struct _is`: `next`, `threads.head`.
    interp_next: 0,
    interp_threads_head: 16,
    // cpython/pystate.h, `struct _ts`: `next`, `thread_id`, `native_thread_id`, `cframe`.
    tstate_next: 8,
    tstate_thread_id: 152,
    tstate_native_thread_id: 160,
    current_frame: CurrentFrame::ViaCframe {
        cframe: 56,
        // cpython/pystate.h, `struct _PyCFrame`: `current_frame` (after `use_tracing` and
        // its padding).
        current_frame: 8,
    },
    // internal/pycore_frame.h, `struct _PyInterpreterFrame` (sizeof 80): `f_code`,
    // `previous`, `prev_instr`, `is_entry` (bool), `owner` (char).
    frame_code: 32,
    frame_previous: 48,
    frame_instr: 56,
    frame_owner: 69,
    entry: EntryMarker::IsEntry { offset: 68 },
    // cpython/code.h, `_PyCode_DEF`: `co_firstlineno` (int), `co_filename`, `co_qualname`,
    // `co_linetable`, `co_code_adaptive`.
    code_firstlineno: 72,
    code_filename: 112,
    code_qualname: 128,
    code_linetable: 136,
    code_adaptive: 184,
    // cpython/unicodeobject.h, `PyASCIIObject`: `state`; sizeof(PyASCIIObject) = 48.
    unicode_state: 32,
    unicode_ascii_data: 48,
};
