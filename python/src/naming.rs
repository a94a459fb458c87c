//! Naming a code object the BPF walk recorded: its qualname, file name, first line and line
//! table, read from the live process (issue 33 item 2).
//!
//! BPF records, per frame, the code object's address and three words read from it at the
//! probe (the `co_qualname` and `co_filename` pointers and `co_firstlineno`): a [`CodeRef`].
//! By the time the recorder reads the process the code object may have been freed and its
//! memory reused by another code object; so [`read_code`] reads those words again, before and
//! after reading the strings, and refuses ([`NameError::Stale`]) when they differ, rather than
//! name a frame after whatever lives at that address now.

use std::fmt;
use std::io;

use crate::linetable;
use crate::memory::Memory;
use crate::{Cpython, FrameOffsets, PyVersion};

/// Longest name kept, in code points: a qualname or path is far shorter; a longer one is cut
/// and ends with [`TRUNCATED`], so one corrupt length cannot make the recorder copy megabytes.
pub const MAX_NAME_CHARS: usize = 4096;

/// What ends a name cut at [`MAX_NAME_CHARS`].
pub const TRUNCATED: char = '…';

/// Longest `co_linetable` read. Real tables take a few bytes per line of source (a 10,000-line
/// function has well under 100 KiB); a longer one is cut, and offsets past the cut have no
/// line.
pub const MAX_LINETABLE_BYTES: usize = 1 << 20;

/// The words BPF read from a frame's code object, to validate a cached or re-read name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CodeRef {
    /// The code object's address (`f_code`, `f_executable` from 3.13).
    pub code: u64,
    /// `code->co_qualname` at the probe.
    pub qualname: u64,
    /// `code->co_filename` at the probe.
    pub filename: u64,
    /// `code->co_firstlineno` at the probe.
    pub first_line: i32,
}

/// A code object as read from the process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeInfo {
    /// `co_qualname` (`Class.method`, `outer.<locals>.inner`, `<lambda>`, `<module>`).
    pub qualname: String,
    /// `co_filename`, as the interpreter was given it (a path, `<string>`, `<stdin>`).
    pub filename: String,
    /// `co_firstlineno`: the line of `def` (or of the first decorator), the base of the line
    /// table's deltas.
    pub first_line: u32,
    /// `co_linetable`'s bytes (cut at [`MAX_LINETABLE_BYTES`]).
    linetable: Vec<u8>,
}

impl CodeInfo {
    /// A code object known by other means (tests compare with CPython's own `co_lines()`
    /// through this; another reader could build one from a core file).
    pub fn from_parts(
        qualname: String,
        filename: String,
        first_line: u32,
        linetable: Vec<u8>,
    ) -> CodeInfo {
        CodeInfo {
            qualname,
            filename,
            first_line,
            linetable,
        }
    }

    /// The raw `co_linetable`, for a caller that stores or decodes it elsewhere.
    pub fn linetable(&self) -> &[u8] {
        &self.linetable
    }

    /// The line a frame of this code is running, from the frame's instruction offset as BPF
    /// records it: the byte distance of `prev_instr` (3.11, 3.12) or `instr_ptr` (3.13) from
    /// `co_code_adaptive`, None when the pointer was below it (a frame that has not run its
    /// first instruction).
    ///
    /// All three versions map the offset the way CPython's own `PyCode_Addr2Line(code,
    /// offset)` does for `frame.f_lineno` (`_PyInterpreterFrame_LASTI` × 2, a byte offset):
    /// the line of the location entry covering that code unit. A frame that called another
    /// Python function points (3.11/3.12) at the last inline cache unit of its `CALL`, or
    /// (3.13) at the `CALL` itself; the caches share the `CALL`'s entry, so both give the
    /// call's line, which is what the user expects (checked live by `tests/naming.rs`).
    /// None offset: the first line, as `PyCode_Addr2Line` answers for a negative offset.
    /// None result: no location for that unit, an offset past the table, or a version whose
    /// pointer semantics were not checked (not guessed).
    pub fn line_at(&self, version: PyVersion, instr_offset: Option<u32>) -> Option<u32> {
        if version.major() != 3 || !(11..=13).contains(&version.minor()) {
            return None;
        }
        match instr_offset {
            None => Some(self.first_line).filter(|&l| l > 0),
            Some(offset) => linetable::line_at_byte(
                &self.linetable,
                i64::from(self.first_line),
                u64::from(offset),
            ),
        }
    }
}

/// Why a code object could not be named.
#[derive(Debug)]
pub enum NameError {
    /// The code object's qualname, filename or first-line words are no longer those BPF read:
    /// it was freed (and maybe reused) since the probe.
    Stale,
    /// A read of the process failed (it exited, or the address is no longer mapped).
    Read {
        /// What was being read.
        what: &'static str,
        /// Where.
        addr: u64,
        /// The system's answer.
        error: io::Error,
    },
    /// The memory was read but does not hold what a CPython code object points to (a freed
    /// object's remains, or a layout urec got wrong).
    Malformed {
        /// What was being read.
        what: &'static str,
        /// What was wrong with it.
        why: String,
    },
}

impl std::error::Error for NameError {}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Stale => f.write_str("the code object changed since the probe"),
            NameError::Read { what, addr, error } => {
                write!(f, "reading the {what} at {addr:#x}: {error}")
            }
            NameError::Malformed { what, why } => write!(f, "the {what}: {why}"),
        }
    }
}

/// Reads the names and line table of the code object `code` names, validated against the
/// words BPF read (see the module docs).
pub fn read_code(mem: &impl Memory, py: &Cpython, code: &CodeRef) -> Result<CodeInfo, NameError> {
    let o = &py.offsets;
    let words = read_words(mem, o, code.code)?;
    if !words.matches(code) {
        return Err(NameError::Stale);
    }
    let qualname = read_str(mem, o, code.qualname, "qualname")?;
    let filename = read_str(mem, o, code.filename, "filename")?;
    let linetable = read_bytes(mem, o, words.linetable, "line table")?;
    // Again after the reads: a code object freed while they ran may have left its strings
    // readable but no longer its own.
    let after = read_words(mem, o, code.code)?;
    if !after.matches(code) || after.linetable != words.linetable {
        return Err(NameError::Stale);
    }
    let first_line = u32::try_from(code.first_line).map_err(|_| NameError::Malformed {
        what: "code object",
        why: format!("first line {}", code.first_line),
    })?;
    Ok(CodeInfo {
        qualname,
        filename,
        first_line,
        linetable,
    })
}

/// The code object's words [`read_code`] checks, and its line table pointer.
#[derive(Clone, Copy, PartialEq, Eq)]
struct CodeWords {
    qualname: u64,
    filename: u64,
    first_line: i32,
    linetable: u64,
}

impl CodeWords {
    fn matches(&self, code: &CodeRef) -> bool {
        (self.qualname, self.filename, self.first_line)
            == (code.qualname, code.filename, code.first_line)
    }
}

/// One read over the span of the four fields (they sit within 80 bytes of each other in every
/// known layout), not four system calls.
fn read_words(mem: &impl Memory, o: &FrameOffsets, code: u64) -> Result<CodeWords, NameError> {
    let fields = [
        (o.code_qualname, 8),
        (o.code_filename, 8),
        (o.code_firstlineno, 4),
        (o.code_linetable, 8),
    ];
    let lo = fields.iter().map(|f| f.0).min().unwrap_or(0);
    let hi = fields.iter().map(|f| f.0 + f.1).max().unwrap_or(0);
    let malformed = |why: &str| NameError::Malformed {
        what: "code object",
        why: why.to_string(),
    };
    if hi - lo > 256 {
        return Err(malformed("its fields are implausibly far apart"));
    }
    let at = code
        .checked_add(lo)
        .ok_or_else(|| malformed("address overflow"))?;
    let mut buf = vec![0u8; (hi - lo) as usize];
    read(mem, at, &mut buf, "code object")?;
    let field = |off: u64, len: usize| &buf[(off - lo) as usize..(off - lo) as usize + len];
    Ok(CodeWords {
        qualname: le_u64(field(o.code_qualname, 8)),
        filename: le_u64(field(o.code_filename, 8)),
        first_line: le_i32(field(o.code_firstlineno, 4)),
        linetable: le_u64(field(o.code_linetable, 8)),
    })
}

/// `PyASCIIObject.state` bits, the same in 3.11, 3.12 and 3.13 (`interned:2`, `kind:3`,
/// `compact:1`, `ascii:1`, then `ready` (3.11) or `statically_allocated` (3.12+)), measured by
/// setting each bit field of the headers' struct and printing the word
/// (docs/python-frames.md).
const STATE_KIND_SHIFT: u32 = 2;
const STATE_KIND_MASK: u32 = 7;
const STATE_COMPACT: u32 = 1 << 5;
const STATE_ASCII: u32 = 1 << 6;

/// A `str` object's characters as UTF-8. Only compact strings (characters right after the
/// header) are read: the compiler and `marshal` create every name and file name that way;
/// a legacy (3.11, non-compact) string is reported, not chased through its data pointer.
fn read_str(
    mem: &impl Memory,
    o: &FrameOffsets,
    obj: u64,
    what: &'static str,
) -> Result<String, NameError> {
    let malformed = |why: String| NameError::Malformed { what, why };
    let header_len = (o.unicode_length + 8).max(o.unicode_state + 4);
    let mut header = vec![0u8; header_len as usize];
    read(mem, obj, &mut header, what)?;
    let o_len = o.unicode_length as usize;
    let o_state = o.unicode_state as usize;
    let length = le_u64(&header[o_len..o_len + 8]) as i64;
    let state = le_u32(&header[o_state..o_state + 4]);
    let length = usize::try_from(length).map_err(|_| malformed(format!("length {length}")))?;
    if state & STATE_COMPACT == 0 {
        return Err(malformed(format!("not a compact str (state {state:#x})")));
    }
    let kind = (state >> STATE_KIND_SHIFT) & STATE_KIND_MASK;
    let ascii = state & STATE_ASCII != 0;
    let (data, width) = match (ascii, kind) {
        (true, 1) => (o.unicode_ascii_data, 1),
        (false, 1 | 2 | 4) => (o.unicode_compact_data, kind as usize),
        _ => return Err(malformed(format!("str kind {kind}, ascii {ascii}"))),
    };
    let at = obj
        .checked_add(data)
        .ok_or_else(|| malformed("address overflow".to_string()))?;
    // A snapshot may hold only the start of a long name: cut there.
    let kept = length
        .min(MAX_NAME_CHARS)
        .min(mem.available(at, length.saturating_mul(width)) / width);
    let mut bytes = vec![0u8; kept * width];
    read(mem, at, &mut bytes, what)?;
    let mut out = String::with_capacity(kept + 3);
    match width {
        1 if ascii => {
            if let Some(b) = bytes.iter().find(|b| !b.is_ascii()) {
                return Err(malformed(format!("byte {b:#x} in an ASCII str")));
            }
            out.extend(bytes.iter().map(|&b| char::from(b)));
        }
        1 => out.extend(bytes.iter().map(|&b| char::from(b))),
        // Python strings may hold lone surrogates (`"\udc80"` from `surrogateescape` file
        // names), which UTF-8 cannot: they become U+FFFD.
        2 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                .map(|u| char::from_u32(u).unwrap_or(char::REPLACEMENT_CHARACTER)),
        ),
        _ => out.extend(
            bytes
                .chunks_exact(4)
                .map(le_u32)
                .map(|u| char::from_u32(u).unwrap_or(char::REPLACEMENT_CHARACTER)),
        ),
    }
    if kept < length {
        out.push(TRUNCATED);
    }
    Ok(out)
}

/// A `bytes` object's contents, cut at [`MAX_LINETABLE_BYTES`].
fn read_bytes(
    mem: &impl Memory,
    o: &FrameOffsets,
    obj: u64,
    what: &'static str,
) -> Result<Vec<u8>, NameError> {
    let malformed = |why: String| NameError::Malformed { what, why };
    let mut size = [0u8; 8];
    let size_at = obj
        .checked_add(o.bytes_size)
        .ok_or_else(|| malformed("address overflow".to_string()))?;
    read(mem, size_at, &mut size, what)?;
    let size = i64::from_le_bytes(size);
    let size = usize::try_from(size).map_err(|_| malformed(format!("size {size}")))?;
    let at = obj
        .checked_add(o.bytes_data)
        .ok_or_else(|| malformed("address overflow".to_string()))?;
    // A snapshot may hold only the start of a long table: offsets past the cut get no line.
    let kept = size.min(MAX_LINETABLE_BYTES);
    let mut data = vec![0u8; mem.available(at, kept)];
    read(mem, at, &mut data, what)?;
    Ok(data)
}

fn read(mem: &impl Memory, addr: u64, buf: &mut [u8], what: &'static str) -> Result<(), NameError> {
    mem.read(addr, buf)
        .map_err(|error| NameError::Read { what, addr, error })
}

/// Little-endian words of a slice the caller sized (x86-64 is the only target).
fn le_u64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u32::from_le_bytes(w)
}

fn le_i32(b: &[u8]) -> i32 {
    le_u32(b) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{tables, OffsetSource};
    use std::collections::BTreeMap;
    use urec_format::Svma;

    /// A process's memory as a few buffers at addresses.
    #[derive(Default)]
    struct Fake(BTreeMap<u64, Vec<u8>>);

    impl Memory for Fake {
        fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
            let (start, bytes) = self
                .0
                .range(..=addr)
                .next_back()
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
            let from = (addr - start) as usize;
            let src = bytes
                .get(from..from + buf.len())
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    fn py312() -> Cpython {
        Cpython {
            version: PyVersion { hex: 0x030c01f0 },
            runtime: Svma(0),
            source: OffsetSource::Table,
            offsets: tables::for_minor(12).expect("3.12 table"),
        }
    }

    /// A compact str as 3.12 lays it out.
    fn str312(s: &str) -> Vec<u8> {
        let chars: Vec<u32> = s.chars().map(u32::from).collect();
        let max = chars.iter().copied().max().unwrap_or(0);
        let (kind, ascii) = match max {
            0..=0x7f => (1, true),
            0x80..=0xff => (1, false),
            0x100..=0xffff => (2, false),
            _ => (4, false),
        };
        let mut obj = vec![0u8; if ascii { 40 } else { 56 }];
        obj[16..24].copy_from_slice(&(chars.len() as u64).to_le_bytes());
        let state = (kind << 2) | STATE_COMPACT | if ascii { STATE_ASCII } else { 0 };
        obj[32..36].copy_from_slice(&state.to_le_bytes());
        for c in chars {
            obj.extend_from_slice(&c.to_le_bytes()[..kind as usize]);
        }
        obj
    }

    fn code312(qualname: u64, filename: u64, first: i32, linetable: u64) -> Vec<u8> {
        let mut obj = vec![0u8; 200];
        obj[68..72].copy_from_slice(&first.to_le_bytes());
        obj[112..120].copy_from_slice(&filename.to_le_bytes());
        obj[128..136].copy_from_slice(&qualname.to_le_bytes());
        obj[136..144].copy_from_slice(&linetable.to_le_bytes());
        obj
    }

    fn bytes312(data: &[u8]) -> Vec<u8> {
        let mut obj = vec![0u8; 32];
        obj[16..24].copy_from_slice(&(data.len() as u64).to_le_bytes());
        obj.extend_from_slice(data);
        obj
    }

    fn process(qualname: &str, filename: &str) -> Fake {
        let mut mem = Fake::default();
        mem.0.insert(0x1000, code312(0x2000, 0x3000, 7, 0x4000));
        mem.0.insert(0x2000, str312(qualname));
        mem.0.insert(0x3000, str312(filename));
        // Short form, 2 units, line 7; one-line form +1, 1 unit.
        mem.0.insert(0x4000, bytes312(&[0x81, 0, 0xd8, 0, 0]));
        mem
    }

    const REF: CodeRef = CodeRef {
        code: 0x1000,
        qualname: 0x2000,
        filename: 0x3000,
        first_line: 7,
    };

    #[test]
    fn names_and_lines_of_each_string_kind() {
        let py = py312();
        for (q, f) in [
            ("K.grüße", "/tmp/a.py"),
            ("関数", "/tmp/😀/b.py"),
            ("outer.<locals>.<lambda>", "<string>"),
        ] {
            let info = read_code(&process(q, f), &py, &REF).expect("named");
            assert_eq!((info.qualname.as_str(), info.filename.as_str()), (q, f));
            assert_eq!(info.first_line, 7);
            assert_eq!(info.line_at(py.version, None), Some(7));
            assert_eq!(info.line_at(py.version, Some(2)), Some(7));
            assert_eq!(info.line_at(py.version, Some(4)), Some(8));
            assert_eq!(info.line_at(py.version, Some(6)), None);
            let v310 = PyVersion { hex: 0x030a00f0 };
            assert_eq!(info.line_at(v310, Some(2)), None, "unchecked version");
        }
    }

    /// A snapshot (the BPF programs' copy of the ranges naming reads) names as the process
    /// did; a name or line table copied only in part is cut there, not refused; a missing
    /// range is a read error.
    #[test]
    fn snapshots_name_as_the_process_did_and_cut_what_they_cut() {
        use crate::memory::Regions;
        let py = py312();
        let mem = process("K.grüße", "/tmp/a.py");
        let mut whole = Regions::new();
        // The code object's span read_code reads (first line at 68 to the table at 144).
        whole.add(0x1000 + 64, &mem.0[&0x1000][64..144]);
        for at in [0x2000, 0x3000, 0x4000] {
            whole.add(at, &mem.0[&at]);
        }
        let live = read_code(&mem, &py, &REF).expect("live");
        assert_eq!(read_code(&whole, &py, &REF).expect("snapshot"), live);

        let mut cut = Regions::new();
        cut.add(0x1000 + 64, &mem.0[&0x1000][64..144]);
        cut.add(0x2000, &mem.0[&0x2000][..56 + 3]); // "K.g" of a kind-1 str
        cut.add(0x3000, &mem.0[&0x3000]);
        cut.add(0x4000, &mem.0[&0x4000][..32 + 2]); // the first entry only
        let info = read_code(&cut, &py, &REF).expect("cut snapshot");
        assert_eq!(info.qualname, format!("K.g{TRUNCATED}"));
        assert_eq!(info.line_at(py.version, Some(2)), Some(7));
        assert_eq!(info.line_at(py.version, Some(4)), None, "past the cut");

        let mut no_table = Regions::new();
        no_table.add(0x1000 + 64, &mem.0[&0x1000][64..144]);
        no_table.add(0x2000, &mem.0[&0x2000]);
        no_table.add(0x3000, &mem.0[&0x3000]);
        assert!(matches!(
            read_code(&no_table, &py, &REF),
            Err(NameError::Read { .. })
        ));
    }

    #[test]
    fn a_changed_word_is_stale() {
        let py = py312();
        let mem = process("f", "f.py");
        for stale in [
            CodeRef {
                qualname: 0x2008,
                ..REF
            },
            CodeRef {
                filename: 0x3008,
                ..REF
            },
            CodeRef {
                first_line: 8,
                ..REF
            },
        ] {
            assert!(matches!(
                read_code(&mem, &py, &stale),
                Err(NameError::Stale)
            ));
        }
    }

    #[test]
    fn long_names_are_cut_and_bad_ones_refused() {
        let py = py312();
        let long = "x".repeat(MAX_NAME_CHARS + 10);
        let info = read_code(&process(&long, "f.py"), &py, &REF).expect("named");
        assert_eq!(info.qualname.chars().count(), MAX_NAME_CHARS + 1);
        assert!(info.qualname.ends_with(TRUNCATED));

        let mut mem = process("f", "f.py");
        // Not compact.
        let q = mem.0.get_mut(&0x2000).expect("qualname");
        q[32] &= !(STATE_COMPACT as u8);
        assert!(matches!(
            read_code(&mem, &py, &REF),
            Err(NameError::Malformed {
                what: "qualname",
                ..
            })
        ));
        // Unmapped line table.
        let mut mem = process("f", "f.py");
        mem.0.remove(&0x4000);
        assert!(matches!(
            read_code(&mem, &py, &REF),
            Err(NameError::Read {
                what: "line table",
                ..
            })
        ));
    }
}
