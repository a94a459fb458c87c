//! Reading `_Py_DebugOffsets`, the struct CPython 3.13+ places at the start of `_PyRuntime`
//! for out-of-process debuggers and profilers (py-spy PR #831): a cookie `"xdebugpy"`,
//! `PY_VERSION_HEX`, then groups of `uint64_t` offsets (runtime, interpreter, thread state,
//! interpreter frame, code object, unicode object, ...), initialized with `offsetof` by the
//! interpreter's own build, so they are right for that binary, whatever its configure options.
//!
//! The struct's own layout is not stable: CPython's header says it may change between minor
//! versions, and it did (3.14's groups begin with a `size` word and it gained `free_threaded`
//! after `version`; members were added inside groups during 3.14's development). So the
//! numbers are read through a [`DebugLayout`] per minor version, and a version without one is
//! `Unknown`, never guessed.

use urec_elf::ElfImage;
use urec_format::Svma;

use crate::{CurrentFrame, EntryMarker, FrameOffsets, PyVersion};

/// The cookie CPython writes first (`_Py_Debug_Cookie`).
pub const COOKIE: &[u8; 8] = b"xdebugpy";

/// Where each needed offset sits in a version's `_Py_DebugOffsets`, as an index of 8-byte
/// words from its start (the cookie is word 0, the version word 1).
#[derive(Clone, Copy, Debug)]
pub struct DebugLayout {
    /// `runtime_state.interpreters_head`.
    pub interpreters_head: usize,
    /// `interpreter_state.next`.
    pub interp_next: usize,
    /// `interpreter_state.threads_head`.
    pub threads_head: usize,
    /// `thread_state.next`.
    pub tstate_next: usize,
    /// `thread_state.current_frame`.
    pub current_frame: usize,
    /// `thread_state.thread_id`.
    pub thread_id: usize,
    /// `thread_state.native_thread_id`.
    pub native_thread_id: usize,
    /// `interpreter_frame.previous`.
    pub frame_previous: usize,
    /// `interpreter_frame.executable`.
    pub frame_executable: usize,
    /// `interpreter_frame.instr_ptr`.
    pub frame_instr_ptr: usize,
    /// `interpreter_frame.owner`.
    pub frame_owner: usize,
    /// `code_object.filename`.
    pub code_filename: usize,
    /// `code_object.qualname`.
    pub code_qualname: usize,
    /// `code_object.linetable`.
    pub code_linetable: usize,
    /// `code_object.firstlineno`.
    pub code_firstlineno: usize,
    /// `code_object.co_code_adaptive`.
    pub code_adaptive: usize,
    /// `unicode_object.state`.
    pub unicode_state: usize,
    /// `unicode_object.asciiobject_size`.
    pub unicode_ascii_size: usize,
    /// `unicode_object.length`.
    pub unicode_length: usize,
    /// `unicode_object.size`: `sizeof(PyUnicodeObject)`, which is `PyCompactUnicodeObject`
    /// and one data pointer, so it also gives where compact non-ASCII characters begin (the
    /// struct publishes no `sizeof(PyCompactUnicodeObject)`).
    pub unicode_size: usize,
    /// `bytes_object.ob_size`.
    pub bytes_ob_size: usize,
    /// `bytes_object.ob_sval`.
    pub bytes_ob_sval: usize,
    /// The `size` words (`sizeof` of the struct the group describes) of the thread state,
    /// interpreter frame, code object and bytes object groups, where the layout has them:
    /// every offset of a group must fall inside its struct (the unicode group is checked
    /// against `unicode_size`), a check that catches a wrong layout.
    pub sizes: Option<[usize; 4]>,
    /// `FRAME_OWNED_BY_CSTACK` of this version (a constant, not published in the struct).
    pub cstack: u8,
}

impl DebugLayout {
    fn words(&self) -> usize {
        let l = self;
        let sizes = l.sizes.map_or(0, |s| s.into_iter().max().unwrap_or(0));
        [
            l.interpreters_head,
            l.interp_next,
            l.threads_head,
            l.tstate_next,
            l.current_frame,
            l.thread_id,
            l.native_thread_id,
            l.frame_previous,
            l.frame_executable,
            l.frame_instr_ptr,
            l.frame_owner,
            l.code_filename,
            l.code_qualname,
            l.code_linetable,
            l.code_firstlineno,
            l.code_adaptive,
            l.unicode_state,
            l.unicode_ascii_size,
            l.unicode_length,
            l.unicode_size,
            l.bytes_ob_size,
            l.bytes_ob_sval,
            sizes,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
            + 1
    }
}

/// The layouts by minor version, each taken from that release's header.
///
/// 3.14 is left out on purpose: its word indices are known (`docs/python-frames.md`) but its
/// entry frames are not yet pinned down (3.14 renumbered the frame owners,
/// `FRAME_OWNED_BY_INTERPRETER` = 3 and `FRAME_OWNED_BY_CSTACK` = 4, and which of them marks
/// the frame `_PyEval_EvalFrameDefault` pushes is to be checked against its `ceval.c`).
const LAYOUTS: &[(u8, DebugLayout)] = &[(13, PY313)];

/// CPython 3.13: word indices measured with `offset_of!` on py-spy's bindgen output of the
/// v3.13.0 headers (benfred/py-spy `src/python_bindings/v3_13_0.rs`, commit d230d82), the same
/// struct as python/cpython's `Include/internal/pycore_debug_offsets.h` at commit 01d08a8:
/// cookie, version, `free_threaded`, then groups each beginning with the `size` of its struct.
/// Checked on a pyenv 3.13.0 build: the numbers read through it equal `offsetof` against that
/// build's own headers (`lib.rs`'s `pyenv_313_offsets_come_from_the_binary`).
const PY313: DebugLayout = DebugLayout {
    interpreters_head: 5,
    interp_next: 8,
    threads_head: 9,
    tstate_next: 21,
    current_frame: 23,
    thread_id: 24,
    native_thread_id: 25,
    frame_previous: 29,
    frame_executable: 30,
    frame_instr_ptr: 31,
    frame_owner: 33,
    code_filename: 35,
    code_qualname: 37,
    code_linetable: 38,
    code_firstlineno: 39,
    code_adaptive: 43,
    unicode_state: 68,
    unicode_ascii_size: 70,
    unicode_length: 69,
    unicode_size: 67,
    bytes_ob_size: 65,
    bytes_ob_sval: 66,
    // thread_state.size, interpreter_frame.size, code_object.size, bytes_object.size.
    sizes: Some([19, 28, 34, 64]),
    // internal/pycore_frame.h, `enum _frameowner`: FRAME_OWNED_BY_CSTACK = 3 (read in the
    // 3.13.0 header).
    cstack: 3,
};

/// The offsets in the `_Py_DebugOffsets` at `runtime`, read through the layout of `version`'s
/// minor version, or why not.
pub fn read(image: &ElfImage, runtime: Svma, version: PyVersion) -> Result<FrameOffsets, String> {
    let Some((_, layout)) = LAYOUTS.iter().find(|(minor, _)| *minor == version.minor()) else {
        return Err("no _Py_DebugOffsets layout known for this version".to_string());
    };
    let bytes = image
        .read_svma(runtime, layout.words() * 8)
        .ok_or("_PyRuntime is not in the file")?;
    parse(&bytes, version, layout)
}

/// [`read`] on the bytes of `_PyRuntime`'s start.
pub fn parse(
    bytes: &[u8],
    version: PyVersion,
    layout: &DebugLayout,
) -> Result<FrameOffsets, String> {
    let word = |i: usize| -> Result<u64, String> {
        bytes
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| format!("_Py_DebugOffsets cut short at word {i}"))
    };
    if bytes.get(..8) != Some(COOKIE.as_slice()) {
        return Err("no _Py_DebugOffsets cookie at the start of _PyRuntime".to_string());
    }
    let stated = word(1)?;
    if stated != u64::from(version.hex) {
        return Err(format!(
            "_Py_DebugOffsets says version {stated:#x}, Py_Version {:#x}",
            version.hex
        ));
    }
    let l = layout;
    let current_frame = word(l.current_frame)?;
    let offsets = FrameOffsets {
        runtime_interpreters_head: word(l.interpreters_head)?,
        interp_next: word(l.interp_next)?,
        interp_threads_head: word(l.threads_head)?,
        tstate_next: word(l.tstate_next)?,
        tstate_thread_id: word(l.thread_id)?,
        tstate_native_thread_id: word(l.native_thread_id)?,
        current_frame: CurrentFrame::Direct { current_frame },
        frame_previous: word(l.frame_previous)?,
        frame_code: word(l.frame_executable)?,
        frame_instr: word(l.frame_instr_ptr)?,
        frame_owner: word(l.frame_owner)?,
        entry: EntryMarker::Owner { cstack: l.cstack },
        code_qualname: word(l.code_qualname)?,
        code_filename: word(l.code_filename)?,
        code_firstlineno: word(l.code_firstlineno)?,
        code_linetable: word(l.code_linetable)?,
        code_adaptive: word(l.code_adaptive)?,
        unicode_state: word(l.unicode_state)?,
        unicode_ascii_data: word(l.unicode_ascii_size)?,
        unicode_length: word(l.unicode_length)?,
        unicode_compact_data: word(l.unicode_size)?
            .checked_sub(8)
            .ok_or("_Py_DebugOffsets: sizeof(PyUnicodeObject) below one pointer")?,
        bytes_size: word(l.bytes_ob_size)?,
        bytes_data: word(l.bytes_ob_sval)?,
    };
    if let Some([tstate, frame, code, bytes]) = l.sizes {
        let o = &offsets;
        let groups: [(&str, u64, &[u64]); 5] = [
            (
                "thread state",
                word(tstate)?,
                &[
                    o.tstate_next,
                    o.tstate_thread_id,
                    o.tstate_native_thread_id,
                    current_frame,
                ],
            ),
            (
                "interpreter frame",
                word(frame)?,
                &[o.frame_previous, o.frame_code, o.frame_instr, o.frame_owner],
            ),
            (
                "code object",
                word(code)?,
                &[
                    o.code_qualname,
                    o.code_filename,
                    o.code_firstlineno,
                    o.code_linetable,
                    o.code_adaptive,
                ],
            ),
            ("bytes object", word(bytes)?, &[o.bytes_size, o.bytes_data]),
            (
                "unicode object",
                word(l.unicode_size)?,
                &[
                    o.unicode_state,
                    o.unicode_length,
                    o.unicode_ascii_data,
                    o.unicode_compact_data,
                ],
            ),
        ];
        for (name, size, fields) in groups {
            if let Some(bad) = fields.iter().find(|&&f| f >= size) {
                return Err(format!(
                    "_Py_DebugOffsets: {name} offset {bad} outside its size {size}"
                ));
            }
        }
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: DebugLayout = PY313;

    fn snapshot_bytes(version: u64) -> Vec<u8> {
        let mut words = vec![0u64; SNAPSHOT.words()];
        words[1] = version;
        let l = &SNAPSHOT;
        for (i, v) in [
            (l.interpreters_head, 40),
            (l.threads_head, 7000),
            (19, 300), // sizeof(PyThreadState)
            (l.tstate_next, 8),
            (l.current_frame, 72),
            (l.thread_id, 136),
            (l.native_thread_id, 144),
            (28, 80), // sizeof(_PyInterpreterFrame)
            (l.frame_previous, 8),
            (l.frame_instr_ptr, 56),
            (l.frame_owner, 70),
            (34, 200), // sizeof(PyCodeObject)
            (l.code_filename, 112),
            (l.code_qualname, 128),
            (l.code_linetable, 136),
            (l.code_firstlineno, 68),
            (l.code_adaptive, 192),
            (l.unicode_ascii_size, 40),
            (l.unicode_state, 32),
            (l.unicode_length, 16),
            (l.unicode_size, 64), // sizeof(PyUnicodeObject)
            (64, 40),             // sizeof(PyBytesObject)
            (l.bytes_ob_size, 16),
            (l.bytes_ob_sval, 32),
        ] {
            words[i] = v;
        }
        let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        bytes[..8].copy_from_slice(COOKIE);
        bytes
    }

    #[test]
    fn reads_offsets_through_a_layout() {
        let version = PyVersion { hex: 0x030d00f0 };
        let o = parse(&snapshot_bytes(0x030d00f0), version, &SNAPSHOT).expect("parses");
        assert_eq!(o.runtime_interpreters_head, 40);
        assert_eq!(o.interp_threads_head, 7000);
        assert_eq!(o.tstate_thread_id, 136);
        assert_eq!(o.current_frame, CurrentFrame::Direct { current_frame: 72 });
        assert_eq!(o.frame_instr, 56);
        assert_eq!(o.code_qualname, 128);
        assert_eq!(o.unicode_ascii_data, 40);
        assert_eq!((o.unicode_length, o.unicode_compact_data), (16, 56));
        assert_eq!((o.bytes_size, o.bytes_data), (16, 32));
        assert_eq!(o.entry, EntryMarker::Owner { cstack: 3 });
    }

    #[test]
    fn rejects_a_wrong_cookie_version_size_or_short_read() {
        let version = PyVersion { hex: 0x030d00f0 };
        let mut bytes = snapshot_bytes(0x030d00f0);
        bytes[0] = b'X';
        assert!(parse(&bytes, version, &SNAPSHOT)
            .unwrap_err()
            .contains("cookie"));

        let bytes = snapshot_bytes(0x030c00f0);
        assert!(parse(&bytes, version, &SNAPSHOT)
            .unwrap_err()
            .contains("version"));

        let mut bytes = snapshot_bytes(0x030d00f0);
        let at = SNAPSHOT.code_qualname * 8;
        bytes[at..at + 8].copy_from_slice(&5000u64.to_le_bytes());
        assert!(parse(&bytes, version, &SNAPSHOT)
            .unwrap_err()
            .contains("code object"));

        let bytes = snapshot_bytes(0x030d00f0);
        assert!(parse(&bytes[..100], version, &SNAPSHOT)
            .unwrap_err()
            .contains("cut short"));
    }
}
