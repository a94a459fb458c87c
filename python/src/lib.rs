//! Recognizing a CPython interpreter in an ELF file (an executable such as Debian's
//! `/usr/bin/python3.11`, or a `libpython3.X.so`) and the struct offsets its frame chain is
//! walked with (issue 33: Python frames inside native stacks).
//!
//! The BPF program that will find a probed thread's `PyThreadState` and walk its
//! `_PyInterpreterFrame` chain cannot read headers or debug info: it needs plain numbers, and
//! they change with every minor version of CPython. This crate is where those numbers come from,
//! read once per binary by the recorder:
//! - 3.13 and newer publish them in `_Py_DebugOffsets`, the first member of `_PyRuntime`, so they
//!   are read from the file ([`debug_offsets`]); its own layout still changes between minor
//!   versions, so it is read through a layout per minor version.
//! - 3.11 and 3.12 publish nothing, so they come from a table per minor version ([`tables`]),
//!   taken from that version's headers, and are only used when the binary's own `Py_Version`
//!   says it is that minor version.
//! - Anything else is [`Detection::Unknown`]: its stacks stay native, and the recorder names it
//!   once.
//!
//! The version comes from `Py_Version` (a `const unsigned long` holding `PY_VERSION_HEX`,
//! exported since 3.11), not from the file name: a `python3` symlink, a venv copy or a pyenv
//! build say nothing reliable by name.
//!
//! The recorder also names what the walk recorded through this crate ([`naming`]): a code
//! object's qualname, file name and line table, read from the live process ([`memory`]) and
//! validated against the words BPF read, and the line of a frame's instruction
//! ([`linetable`]).
//!
//! It sits above `urec-elf` (the one ELF reader) and below
//! the recorder; the report never needs it, since names travel in the data file.

pub mod debug_offsets;
pub mod linetable;
pub mod memory;
pub mod naming;
pub mod tables;

pub use memory::{Memory, ProcessMemory, Regions};
pub use naming::{read_code, CodeInfo, CodeRef, NameError};

use std::fmt;
use std::path::Path;

use urec_elf::{ElfError, ElfImage};
use urec_format::Svma;

/// A CPython version as `PY_VERSION_HEX` encodes it (`0x030b02f0` is 3.11.2 final).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PyVersion {
    /// The raw `PY_VERSION_HEX`, kept so a message can show exactly what the binary said.
    pub hex: u32,
}

impl PyVersion {
    /// `PY_MAJOR_VERSION`.
    pub fn major(self) -> u8 {
        (self.hex >> 24) as u8
    }

    /// `PY_MINOR_VERSION`: the key of every layout, which may change with it.
    pub fn minor(self) -> u8 {
        (self.hex >> 16) as u8
    }

    /// `PY_MICRO_VERSION`: layouts are stable within a minor version, so only for messages.
    pub fn micro(self) -> u8 {
        (self.hex >> 8) as u8
    }
}

impl fmt::Display for PyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major(), self.minor(), self.micro())
    }
}

/// What a binary is, for the Python frame walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detection {
    /// No `Py_Version` and `_PyRuntime`: not a CPython 3.11+ interpreter (or one too stripped
    /// to find its runtime state), so nothing to walk.
    NotCpython,
    /// A CPython whose frame layout urec does not know (or whose published offsets failed
    /// their checks): stacks stay native and the recorder says so once, as
    /// `python3.14: unknown frame layout, native stacks only`.
    Unknown {
        /// The version the binary states.
        version: PyVersion,
        /// Why it is not usable, for that one message.
        reason: String,
    },
    /// A known CPython: where its runtime state is and how to walk its frames.
    Known(Box<Cpython>),
}

/// A CPython interpreter the BPF walk can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpython {
    /// The version the binary states in `Py_Version`.
    pub version: PyVersion,
    /// The stated address of `_PyRuntime`, the root of the walk (rebased per process by the
    /// mapping that loads it).
    pub runtime: Svma,
    /// Where the offsets came from, so a wrong number can be traced to its source.
    pub source: OffsetSource,
    /// The offsets themselves.
    pub offsets: FrameOffsets,
}

/// Where a [`FrameOffsets`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSource {
    /// The built-in table for this minor version ([`tables`]).
    Table,
    /// The binary's own `_Py_DebugOffsets` ([`debug_offsets`]).
    DebugOffsets,
}

/// How the walk gets from a `PyThreadState` to its innermost `_PyInterpreterFrame`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CurrentFrame {
    /// 3.11 and 3.12: `tstate->cframe` points to a `_PyCFrame` whose `current_frame` is the
    /// frame (two reads).
    ViaCframe {
        /// `offsetof(PyThreadState, cframe)`.
        cframe: u64,
        /// `offsetof(_PyCFrame, current_frame)`.
        current_frame: u64,
    },
    /// 3.13+: `tstate->current_frame` (cpython PR #108036 removed `_PyCFrame`).
    Direct {
        /// `offsetof(PyThreadState, current_frame)`.
        current_frame: u64,
    },
}

/// How an entry frame (the first frame a native `_PyEval_EvalFrameDefault` call pushed) is
/// told apart: the report replaces each native eval frame by the Python frames down to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryMarker {
    /// 3.11: a `bool is_entry` byte of the frame.
    IsEntry {
        /// `offsetof(_PyInterpreterFrame, is_entry)`.
        offset: u64,
    },
    /// 3.12+: the `char owner` byte equals `FRAME_OWNED_BY_CSTACK`.
    Owner {
        /// The value of `FRAME_OWNED_BY_CSTACK` in this version.
        cstack: u8,
    },
}

/// The byte offsets of every field the frame walk and the recorder's naming read. All are
/// offsets within the struct named, for x86-64 builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameOffsets {
    /// `offsetof(_PyRuntimeState, interpreters.head)`: the first `PyInterpreterState`.
    pub runtime_interpreters_head: u64,
    /// `offsetof(PyInterpreterState, next)`: subinterpreters.
    pub interp_next: u64,
    /// `offsetof(PyInterpreterState, threads.head)`: the first `PyThreadState`.
    pub interp_threads_head: u64,
    /// `offsetof(PyThreadState, next)`: the thread list the walk searches, bounded.
    pub tstate_next: u64,
    /// `offsetof(PyThreadState, thread_id)`: `pthread_self()`, which on x86-64 glibc is the
    /// thread's `fsbase`, so the walk finds the probed thread's state rather than the GIL
    /// holder's.
    pub tstate_thread_id: u64,
    /// `offsetof(PyThreadState, native_thread_id)`: the kernel tid, a cross-check.
    pub tstate_native_thread_id: u64,
    /// From the thread state to its innermost frame.
    pub current_frame: CurrentFrame,
    /// `offsetof(_PyInterpreterFrame, previous)`: the next outer frame.
    pub frame_previous: u64,
    /// `offsetof(_PyInterpreterFrame, f_code)` (`f_executable` from 3.13): the code object.
    pub frame_code: u64,
    /// `offsetof(_PyInterpreterFrame, prev_instr)` (`instr_ptr` from 3.13): the instruction,
    /// whose distance from `co_code_adaptive` gives the line.
    pub frame_instr: u64,
    /// `offsetof(_PyInterpreterFrame, owner)`: who owns the frame (thread, generator, frame
    /// object, C stack).
    pub frame_owner: u64,
    /// How entry frames are marked.
    pub entry: EntryMarker,
    /// `offsetof(PyCodeObject, co_qualname)`: the function's name as Python shows it.
    pub code_qualname: u64,
    /// `offsetof(PyCodeObject, co_filename)`.
    pub code_filename: u64,
    /// `offsetof(PyCodeObject, co_firstlineno)` (an `int`): names the function, and is one of
    /// the words that validate a cached code object.
    pub code_firstlineno: u64,
    /// `offsetof(PyCodeObject, co_linetable)`: the bytes object mapping instructions to lines.
    pub code_linetable: u64,
    /// `offsetof(PyCodeObject, co_code_adaptive)`: the first instruction, the base of
    /// `frame_instr`.
    pub code_adaptive: u64,
    /// `offsetof(PyASCIIObject, state)`: the bit field saying compact / ASCII / kind.
    pub unicode_state: u64,
    /// `sizeof(PyASCIIObject)`: where a compact ASCII string's characters begin (qualnames
    /// and file names nearly always are).
    pub unicode_ascii_data: u64,
    /// `offsetof(PyASCIIObject, length)`: the string's length in code points, which bounds
    /// the read of its characters.
    pub unicode_length: u64,
    /// `sizeof(PyCompactUnicodeObject)`: where a compact non-ASCII string's characters begin
    /// (a `def grüße()` or a file under a non-ASCII directory).
    pub unicode_compact_data: u64,
    /// `offsetof(PyBytesObject, ob_base.ob_size)`: the length of `co_linetable`.
    pub bytes_size: u64,
    /// `offsetof(PyBytesObject, ob_sval)`: where `co_linetable`'s bytes begin.
    pub bytes_data: u64,
}

/// Says what `path` is, for the Python frame walk. Errors are only for a file that cannot be
/// opened or is not ELF; a binary that is not CPython is [`Detection::NotCpython`].
pub fn detect(path: &Path) -> Result<Detection, ElfError> {
    Ok(detect_named(&ElfImage::open(path)?, path))
}

/// [`detect_image`], and for a CPython older than 3.11 (it has `_PyRuntime` but publishes no
/// `Py_Version`) the minor version its file name states (`libpython3.10.so.1.0`,
/// `python3.10`), so that the recorder can name it once as an unknown layout rather than stay
/// silent about a Python it cannot walk.
pub fn detect_named(image: &ElfImage, path: &Path) -> Detection {
    match detect_image(image) {
        Detection::NotCpython if image.symbol_svma("_PyRuntime").is_some() => {
            match minor_from_name(path) {
                Some(minor) => unknown(
                    PyVersion {
                        hex: 0x0300_0000 | (u32::from(minor) << 16),
                    },
                    "before 3.11 (no Py_Version, no _PyInterpreterFrame)",
                ),
                None => Detection::NotCpython,
            }
        }
        found => found,
    }
}

/// `10` of `libpython3.10.so.1.0`, `python3.10` or `python3.10d`: only names of 3.x before 3.11.
fn minor_from_name(path: &Path) -> Option<u8> {
    let name = path.file_name()?.to_str()?;
    let rest = name
        .strip_prefix("libpython3.")
        .or_else(|| name.strip_prefix("python3."))?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let minor: u8 = digits.parse().ok()?;
    (minor < 11).then_some(minor)
}

/// [`detect`] on an image already open (the recorder opens mapped files through
/// `/proc/PID/map_files`).
pub fn detect_image(image: &ElfImage) -> Detection {
    let (Some(version_at), Some(runtime)) = (
        image.symbol_svma("Py_Version"),
        image.symbol_svma("_PyRuntime"),
    ) else {
        return Detection::NotCpython;
    };
    let Some(version) = read_u64(image, version_at).and_then(|v| u32::try_from(v).ok()) else {
        return Detection::NotCpython;
    };
    let version = PyVersion { hex: version };
    if version.major() != 3 {
        return unknown(version, "not a Python 3");
    }
    let found = match version.minor() {
        0..=10 => return unknown(version, "before 3.11 (no _PyInterpreterFrame)"),
        11 | 12 => match tables::for_minor(version.minor()) {
            Some(offsets) => Ok((OffsetSource::Table, offsets)),
            None => Err("no offsets table for this version yet".to_string()),
        },
        _ => debug_offsets::read(image, runtime, version)
            .map(|offsets| (OffsetSource::DebugOffsets, offsets)),
    };
    match found {
        Ok((source, offsets)) => Detection::Known(Box::new(Cpython {
            version,
            runtime,
            source,
            offsets,
        })),
        Err(reason) => Detection::Unknown { version, reason },
    }
}

fn unknown(version: PyVersion, reason: &str) -> Detection {
    Detection::Unknown {
        version,
        reason: reason.to_string(),
    }
}

/// A little-endian `u64` of the file at a stated address (x86-64 is the only target).
fn read_u64(image: &ElfImage, at: Svma) -> Option<u64> {
    let bytes = image.read_svma(at, 8)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYTHON311: &str = "/usr/bin/python3.11";

    #[test]
    fn old_pythons_are_named_by_their_file() {
        assert_eq!(
            minor_from_name(Path::new("/x/libpython3.10.so.1.0")),
            Some(10)
        );
        assert_eq!(minor_from_name(Path::new("/x/python3.9")), Some(9));
        assert_eq!(minor_from_name(Path::new("/x/python3.12")), None);
        assert_eq!(minor_from_name(Path::new("/x/python3")), None);
        assert_eq!(minor_from_name(Path::new("/x/bash")), None);
        let lib = Path::new("/root/.pyenv/versions/3.10.13/lib/libpython3.10.so.1.0");
        if lib.exists() {
            let found = detect(lib).unwrap();
            let Detection::Unknown { version, .. } = found else {
                panic!("{found:?}");
            };
            assert_eq!((version.major(), version.minor()), (3, 10));
        }
    }

    #[test]
    fn version_fields() {
        let v = PyVersion { hex: 0x030b02f0 };
        assert_eq!((v.major(), v.minor(), v.micro()), (3, 11, 2));
        assert_eq!(v.to_string(), "3.11.2");
    }

    #[test]
    fn debian_python311_is_known_from_the_table() {
        if !Path::new(PYTHON311).exists() {
            eprintln!("skipped: no {PYTHON311}");
            return;
        }
        let image = ElfImage::open(Path::new(PYTHON311)).expect("open python3.11");
        let Detection::Known(py) = detect_image(&image) else {
            panic!("{PYTHON311} not recognized: {:?}", detect_image(&image));
        };
        assert_eq!((py.version.major(), py.version.minor()), (3, 11));
        assert_eq!(py.source, OffsetSource::Table);
        assert_eq!(Some(py.runtime), image.symbol_svma("_PyRuntime"));
        // `_PyRuntime` is in its own initialized section (`.PyRuntime` in Debian's build):
        // the walk rebases this address by the mapping that loads it.
        assert!(py.runtime.0 != 0);
        assert_eq!(Some(py.offsets), tables::for_minor(11));
    }

    /// pyenv's builds on the project's VM (`--enable-shared`: `_PyRuntime` is in libpython,
    /// the executable has neither symbol).
    const PYENV_312: &str = "/root/.pyenv/versions/3.12.1/lib/libpython3.12.so.1.0";
    const PYENV_313: &str = "/root/.pyenv/versions/3.13.0/lib/libpython3.13.so.1.0";

    fn known(path: &str) -> Option<Cpython> {
        if !Path::new(path).exists() {
            eprintln!("skipped: no {path}");
            return None;
        }
        match detect(Path::new(path)).expect("open") {
            Detection::Known(py) => Some(*py),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn pyenv_312_is_known_from_the_table() {
        let Some(py) = known(PYENV_312) else { return };
        assert_eq!(py.version.to_string(), "3.12.1");
        assert_eq!(py.source, OffsetSource::Table);
        assert_eq!(Some(py.offsets), tables::for_minor(12));
    }

    /// The binary's own `_Py_DebugOffsets`, read through the 3.13 layout, against `offsetof`
    /// on the same build's installed headers (`include/python3.13`, docs/python-frames.md).
    #[test]
    fn pyenv_313_offsets_come_from_the_binary() {
        let Some(py) = known(PYENV_313) else { return };
        assert_eq!(py.version.to_string(), "3.13.0");
        assert_eq!(py.source, OffsetSource::DebugOffsets);
        let o = py.offsets;
        assert_eq!(
            (
                o.runtime_interpreters_head,
                o.interp_next,
                o.interp_threads_head
            ),
            (632, 7264, 7344)
        );
        assert_eq!(
            (o.tstate_next, o.tstate_thread_id, o.tstate_native_thread_id),
            (8, 152, 160)
        );
        assert_eq!(o.current_frame, CurrentFrame::Direct { current_frame: 72 });
        assert_eq!(
            (o.frame_code, o.frame_previous, o.frame_instr, o.frame_owner),
            (0, 8, 56, 70)
        );
        assert_eq!(o.entry, EntryMarker::Owner { cstack: 3 });
        assert_eq!(
            (
                o.code_filename,
                o.code_qualname,
                o.code_linetable,
                o.code_firstlineno
            ),
            (112, 128, 136, 68)
        );
        assert_eq!(o.code_adaptive, 200);
        assert_eq!((o.unicode_state, o.unicode_ascii_data), (32, 40));
        // `offsetof`/`sizeof` against the same build's headers (docs/python-frames.md).
        assert_eq!((o.unicode_length, o.unicode_compact_data), (16, 56));
        assert_eq!((o.bytes_size, o.bytes_data), (16, 32));
    }

    #[test]
    fn a_shared_build_executable_is_not_cpython_itself() {
        let exe = "/root/.pyenv/versions/3.13.0/bin/python3.13";
        if Path::new(exe).exists() {
            assert_eq!(detect(Path::new(exe)).expect("open"), Detection::NotCpython);
        }
    }

    #[test]
    fn a_native_binary_is_not_cpython() {
        let detection = detect(Path::new("/usr/bin/true")).expect("open /usr/bin/true");
        assert_eq!(detection, Detection::NotCpython);
    }

    #[test]
    fn a_file_that_is_not_elf_is_an_error() {
        assert!(detect(Path::new("/etc/hostname")).is_err());
    }
}
