//! Offsets of the CPython versions that do not publish `_Py_DebugOffsets` (3.11, 3.12), one
//! table per minor version, for x86-64 builds of the default (GIL) configuration.
//!
//! CPython keeps these layouts stable within a minor version (the structs are internal, but
//! debuggers and profilers such as py-spy rely on it), so a table is keyed by the minor
//! version the binary states in `Py_Version`, never by file name. Each number was measured by a
//! compiler from that version's headers, never counted by hand, and the header and struct are
//! named next to it; `docs/python-frames.md` has the programs.

use crate::{CurrentFrame, EntryMarker, FrameOffsets};

/// The offsets of a minor version of Python 3, or None where there is no table (yet).
pub fn for_minor(minor: u8) -> Option<FrameOffsets> {
    match minor {
        11 => Some(PY311),
        12 => Some(PY312),
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
    // `PyASCIIObject`: `length`; sizeof(PyCompactUnicodeObject) = 72 (`utf8_length`, `utf8`,
    // `wstr_length` after the 48 bytes of `PyASCIIObject`).
    unicode_length: 16,
    unicode_compact_data: 72,
    // cpython/bytesobject.h, `PyBytesObject`: `ob_base.ob_size`, `ob_sval` (after `ob_shash`).
    bytes_size: 16,
    bytes_data: 32,
};

/// CPython 3.12, measured twice with the same result: Rust's `offset_of!`/`size_of` on py-spy's
/// bindgen output of the v3.12.0 headers (benfred/py-spy `src/python_bindings/v3_12_0.rs`,
/// commit d230d82), and C's `offsetof` against the headers a pyenv 3.12.1 build installed
/// (`/root/.pyenv/versions/3.12.1/include/python3.12` on the project's VM).
const PY312: FrameOffsets = FrameOffsets {
    // internal/pycore_runtime.h, `struct pyruntimestate`: `interpreters.head`.
    runtime_interpreters_head: 40,
    // internal/pycore_interp.h, `struct _is`: `next`, `threads.head` (3.12 added members
    // before `threads`).
    interp_next: 0,
    interp_threads_head: 72,
    // cpython/pystate.h, `struct _ts`: `next`, `thread_id`, `native_thread_id`, `cframe`.
    tstate_next: 8,
    tstate_thread_id: 136,
    tstate_native_thread_id: 144,
    current_frame: CurrentFrame::ViaCframe {
        cframe: 56,
        // cpython/pystate.h, `struct _PyCFrame`: `current_frame` (`use_tracing` is gone).
        current_frame: 0,
    },
    // internal/pycore_frame.h, `struct _PyInterpreterFrame` (sizeof 80): `f_code`,
    // `previous`, `prev_instr`, `owner` (char).
    frame_code: 0,
    frame_previous: 8,
    frame_instr: 56,
    frame_owner: 70,
    // internal/pycore_frame.h, `enum _frameowner`: FRAME_OWNED_BY_CSTACK = 3 (read in the
    // 3.12.1 header).
    entry: EntryMarker::Owner { cstack: 3 },
    // cpython/code.h, `_PyCode_DEF`: as 3.11 but `co_firstlineno` and `co_code_adaptive`.
    code_firstlineno: 68,
    code_filename: 112,
    code_qualname: 128,
    code_linetable: 136,
    code_adaptive: 192,
    // cpython/unicodeobject.h, `PyASCIIObject`: `state`; sizeof(PyASCIIObject) = 40 (`wstr`
    // is gone).
    unicode_state: 32,
    unicode_ascii_data: 40,
    // `PyASCIIObject`: `length`; sizeof(PyCompactUnicodeObject) = 56 (`utf8_length`, `utf8`).
    unicode_length: 16,
    unicode_compact_data: 56,
    // cpython/bytesobject.h, `PyBytesObject`: `ob_base.ob_size`, `ob_sval`.
    bytes_size: 16,
    bytes_data: 32,
};
