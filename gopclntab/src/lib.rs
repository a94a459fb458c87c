//! Reads Go's function table (`.gopclntab`) from untrusted bytes: functions, their bounds,
//! names and file:line.
//!
//! # Why
//! `go build -ldflags='-s -w'` drops `.symtab` and DWARF, and many Go binaries ship that way;
//! the runtime still needs its own table of functions (for tracebacks, the garbage collector
//! and stack growth), so `.gopclntab` survives every strip. It is the only source of names for
//! such a binary, and in a cgo binary the only way to tell Go code (whose returns must never
//! get a uretprobe) from C code. blazesym reads `.symtab`/`.dynsym` and DWARF, not this.
//!
//! The bytes come from a file someone else controls (a recording names it, a user may craft
//! it): every offset is checked, nothing panics, and nothing is allocated in proportion to a
//! count read from the table; [`Pclntab::functions`] is a lazy iterator.
//!
//! # Layout (little-endian; `P` is the pointer size, 4 or 8)
//! A header: `magic u32`, two zero bytes, the pc quantum (1, 2 or 4), `P`, then `P`-sized
//! words. The magic says the layout:
//!
//! | magic        | Go          | words after the first 8 bytes                                  |
//! |--------------|-------------|----------------------------------------------------------------|
//! | `0xfffffffb` | 1.2 – 1.15  | `nfunc`, then the function table at once                       |
//! | `0xfffffffa` | 1.16, 1.17  | `nfunc nfiles funcname cu file pc func`                        |
//! | `0xfffffff0` | 1.18, 1.19  | `nfunc nfiles textStart funcname cu file pc func`              |
//! | `0xfffffff1` | 1.20 – 1.23 | as 1.18 (the `_func` struct gains `startLine`)                 |
//!
//! `funcname cu file pc func` are offsets from the header's start to five tables: function
//! names (NUL-terminated), the compilation units' file lists (`u32` offsets into the file
//! names, per unit), file names (NUL-terminated), the pc-value tables, and the function table.
//! The function table holds `nfunc + 1` pairs `(pc, funcoff)` sorted by pc, the last pc being
//! the end of the last function: `P`-sized absolute pcs before 1.18, `u32` offsets from
//! `textStart` since. `funcoff` leads (from the function table's start) to a `_func`: its entry
//! (`P`-sized pc before 1.18, `u32` offset from `textStart` since), then `u32` fields `nameoff`
//! (into the names), `args`, `deferreturn`, `pcsp`, `pcfile`, `pcln` (offsets into the pc-value
//! tables), `npcdata`, `cuOffset` (the function's unit), ... A pc-value table is a sequence of
//! (zig-zag varint value delta, varint pc delta × quantum) pairs starting from value −1 at the
//! function's entry, ended by a zero value delta; `pcfile`'s values index the unit's file list.
//! In 1.2 – 1.15 every offset counts from the header, and files are a global `u32` table of
//! offsets whose position follows the function table.
//!
//! `textStart` is written by the linker as an address to relocate: a position-independent
//! binary may hold 0 there in the file. [`Pclntab::parse`] takes the start of `.text` (where Go's
//! linker puts `runtime.text` when it links alone) for that case.
//!
//! # Not read
//! The inline tree (`FUNCDATA_InlTree`, `PCDATA_InlTreeIndex`): since Go 1.18 its bytes live
//! outside `.gopclntab` (`go:func.*`, found through the runtime's `moduledata`), so a pc inside
//! inlined code is named by its real function with the inlined code's file:line (what the pc
//! line table records), not by the inlined function. Big-endian tables are refused (urec
//! probes x86-64).

use std::borrow::Cow;
use std::fmt;

/// Why bytes are not a function table urec can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No known magic, or a header no Go linker writes.
    NotPclntab,
    /// A header offset or count points outside the bytes.
    Truncated(&'static str),
    /// A Go 1.18+ table without a text start (0 in the file, none given).
    NoTextStart,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotPclntab => f.write_str("not a Go function table (.gopclntab)"),
            Error::Truncated(what) => write!(f, "the Go function table's {what} is cut short"),
            Error::NoTextStart => f.write_str(
                "the Go function table's text start is not relocated in the file and no .text \
                 section gives it",
            ),
        }
    }
}

impl std::error::Error for Error {}

/// The table layouts, by the Go release that introduced them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// Magic `0xfffffffb`: Go 1.2 to 1.15.
    Go12,
    /// Magic `0xfffffffa`: Go 1.16 and 1.17.
    Go116,
    /// Magic `0xfffffff0`: Go 1.18 and 1.19.
    Go118,
    /// Magic `0xfffffff1`: Go 1.20 and later.
    Go120,
}

impl Version {
    /// The magic that starts a table of this layout.
    pub fn magic(self) -> u32 {
        match self {
            Version::Go12 => 0xffff_fffb,
            Version::Go116 => 0xffff_fffa,
            Version::Go118 => 0xffff_fff0,
            Version::Go120 => 0xffff_fff1,
        }
    }

    fn from_magic(magic: u32) -> Option<Version> {
        [
            Version::Go12,
            Version::Go116,
            Version::Go118,
            Version::Go120,
        ]
        .into_iter()
        .find(|v| v.magic() == magic)
    }
}

/// One Go function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Func<'a> {
    /// As Go spells it: `main.Leaf`, `net/http.(*conn).serve`, `main.main.func1`.
    pub name: Cow<'a, str>,
    /// Its first instruction's virtual address.
    pub entry: u64,
    /// Where the next function starts (Go pads functions with `int3`, which this includes).
    pub end: u64,
    /// Its index in the function table.
    pub index: usize,
}

/// A parsed function table, owning its bytes.
#[derive(Clone)]
pub struct Pclntab {
    data: Box<[u8]>,
    version: Version,
    quantum: u8,
    ptr_size: u8,
    nfunc: usize,
    nfiles: usize,
    text_start: u64,
    funcnametab: usize,
    cutab: usize,
    filetab: usize,
    pctab: usize,
    functab: usize,
    /// The base that `funcoff` counts from.
    funcdata: usize,
}

impl fmt::Debug for Pclntab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pclntab")
            .field("version", &self.version)
            .field("functions", &self.nfunc)
            .field("text_start", &format_args!("{:#x}", self.text_start))
            .finish_non_exhaustive()
    }
}

/// Section names the table is found under: `.gopclntab`, or in position-independent binaries
/// `.data.rel.ro.gopclntab` (Go's own `objfile` tries the same two).
pub const SECTION_NAMES: [&str; 2] = [".gopclntab", ".data.rel.ro.gopclntab"];

impl Pclntab {
    /// Parses a table from its bytes (a `.gopclntab` section, or everything from a magic to the
    /// end of its segment). `text_start`: the address of `.text`, used when a Go 1.18+ table
    /// holds no text start (an unrelocated position-independent file).
    pub fn parse(data: Vec<u8>, text_start: Option<u64>) -> Result<Pclntab, Error> {
        let data = data.into_boxed_slice();
        let head = data.get(..8).ok_or(Error::NotPclntab)?;
        let magic = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let version = Version::from_magic(magic).ok_or(Error::NotPclntab)?;
        let (quantum, ptr_size) = (head[6], head[7]);
        if head[4] != 0 || head[5] != 0 || !matches!(quantum, 1 | 2 | 4) || ptr_size != 8 {
            // 4-byte pointers are 32-bit code, which urec does not probe.
            return Err(Error::NotPclntab);
        }
        let word = |i: usize| -> Result<u64, Error> {
            read_u64(&data, 8 + 8 * i).ok_or(Error::Truncated("header"))
        };
        let offset = |i: usize, what: &'static str| -> Result<usize, Error> {
            let off = usize::try_from(word(i)?).map_err(|_| Error::Truncated(what))?;
            if off > data.len() {
                return Err(Error::Truncated(what));
            }
            Ok(off)
        };
        let nfunc = usize::try_from(word(0)?).map_err(|_| Error::Truncated("function table"))?;
        let mut t = Pclntab {
            data: Box::default(),
            version,
            quantum,
            ptr_size,
            nfunc,
            nfiles: 0,
            text_start: 0,
            funcnametab: 0,
            cutab: 0,
            filetab: 0,
            pctab: 0,
            functab: 0,
            funcdata: 0,
        };
        match version {
            Version::Go12 => {
                t.functab = 16;
                let end =
                    functab_end(t.functab, nfunc, 8).ok_or(Error::Truncated("function table"))?;
                let fileoff = read_u32(&data, end).ok_or(Error::Truncated("file table"))?;
                t.filetab = fileoff as usize;
                t.nfiles =
                    read_u32(&data, t.filetab).ok_or(Error::Truncated("file table"))? as usize;
            }
            Version::Go116 => {
                t.nfiles = usize::try_from(word(1)?).map_err(|_| Error::Truncated("file table"))?;
                t.funcnametab = offset(2, "name table")?;
                t.cutab = offset(3, "unit table")?;
                t.filetab = offset(4, "file table")?;
                t.pctab = offset(5, "pc-value tables")?;
                t.functab = offset(6, "function table")?;
                t.funcdata = t.functab;
            }
            Version::Go118 | Version::Go120 => {
                t.nfiles = usize::try_from(word(1)?).map_err(|_| Error::Truncated("file table"))?;
                t.text_start = match (word(2)?, text_start) {
                    (0, Some(text)) => text,
                    (0, None) => return Err(Error::NoTextStart),
                    (header, _) => header,
                };
                t.funcnametab = offset(3, "name table")?;
                t.cutab = offset(4, "unit table")?;
                t.filetab = offset(5, "file table")?;
                t.pctab = offset(6, "pc-value tables")?;
                t.functab = offset(7, "function table")?;
                t.funcdata = t.functab;
            }
        }
        let end = functab_end(t.functab, nfunc, t.functab_field())
            .ok_or(Error::Truncated("function table"))?;
        if end > data.len() || nfunc == 0 {
            return Err(Error::Truncated("function table"));
        }
        t.data = data;
        Ok(t)
    }

    /// Finds a table in a segment's bytes without section headers (`sstrip`, or headers cut
    /// off): the first offset whose bytes parse as a table whose first function starts at or
    /// after `text_start` and whose functions are in order. Returns the table's offset in
    /// `bytes` and the table (which takes the rest of `bytes`).
    pub fn scan(bytes: &[u8], text_start: Option<u64>) -> Option<(usize, Pclntab)> {
        let magics = [
            Version::Go116,
            Version::Go118,
            Version::Go120,
            Version::Go12,
        ]
        .map(|v| v.magic().to_le_bytes());
        // Go's linker aligns the table to 32 bytes; steps of 4 keep `bytes` that start at a
        // segment's (page-aligned) start safe with any linker.
        let mut at = 0;
        while at + 8 <= bytes.len() {
            let window = &bytes[at..at + 4];
            if magics.iter().any(|m| m == window) && bytes[at + 4] == 0 && bytes[at + 5] == 0 {
                if let Ok(t) = Pclntab::parse(bytes[at..].to_vec(), text_start) {
                    if t.plausible(text_start) {
                        return Some((at, t));
                    }
                }
            }
            at += 4;
        }
        None
    }

    /// A table found by its magic alone could be a coincidence: its first functions must be
    /// in increasing order, start at or after the text, and have names.
    fn plausible(&self, text_start: Option<u64>) -> bool {
        let n = self.nfunc.min(16);
        let pcs: Vec<Option<u64>> = (0..=n).map(|i| self.pc(i)).collect();
        let ordered = pcs.windows(2).all(|w| match (w[0], w[1]) {
            (Some(a), Some(b)) => a <= b,
            _ => false,
        });
        let after_text = match (text_start, pcs.first().copied().flatten()) {
            (Some(text), Some(first)) => first >= text,
            _ => true,
        };
        ordered && after_text && (0..n).all(|i| self.func(i).is_some_and(|f| !f.name.is_empty()))
    }

    /// The layout the magic says.
    pub fn version(&self) -> Version {
        self.version
    }

    /// How many functions the table lists.
    pub fn len(&self) -> usize {
        self.nfunc
    }

    /// Whether the table lists no function (never true of a parsed table).
    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    /// Where `runtime.text` is: the base of 1.18+ offsets.
    pub fn text_start(&self) -> u64 {
        self.text_start
    }

    /// Every function, in address order; entries the table cannot name are left out.
    pub fn functions(&self) -> impl Iterator<Item = Func<'_>> + '_ {
        (0..self.nfunc).filter_map(|i| self.func(i))
    }

    /// The bounds `[first entry, end of the last function)` the table covers.
    pub fn range(&self) -> Option<(u64, u64)> {
        Some((self.pc(0)?, self.pc(self.nfunc)?))
    }

    /// The function whose `[entry, end)` holds `pc`.
    pub fn find(&self, pc: u64) -> Option<Func<'_>> {
        let i = self.index_of(pc)?;
        self.func(i).filter(|f| f.entry <= pc && pc < f.end)
    }

    /// The source file and line of the instruction at `pc` (for inlined code, the inlined
    /// code's position: the line table records the innermost).
    pub fn line(&self, pc: u64) -> Option<(Cow<'_, str>, u32)> {
        let i = self.index_of(pc)?;
        let f = self.func_data(i)?;
        let entry = self.entry_of(f)?;
        if pc < entry {
            return None;
        }
        let line = self.pcvalue(self.field(f, 6)?, entry, pc)?;
        let fno = self.pcvalue(self.field(f, 5)?, entry, pc)?;
        let file = self.file_name(f, fno)?;
        Some((file, u32::try_from(line).ok().filter(|&l| l > 0)?))
    }

    fn functab_field(&self) -> usize {
        match self.version {
            Version::Go118 | Version::Go120 => 4,
            _ => usize::from(self.ptr_size),
        }
    }

    /// The i-th pc of the function table (i = nfunc: the end of the last function).
    fn pc(&self, i: usize) -> Option<u64> {
        let sz = self.functab_field();
        let at = self.functab.checked_add(i.checked_mul(2 * sz)?)?;
        match self.version {
            Version::Go118 | Version::Go120 => self
                .text_start
                .checked_add(u64::from(read_u32(&self.data, at)?)),
            _ => read_u64(&self.data, at),
        }
    }

    /// The index of the function table entry whose range holds `pc`: the last entry whose pc
    /// is at most `pc`, by binary search (on a crafted table out of order, some entry or none;
    /// callers check the bounds they get).
    fn index_of(&self, pc: u64) -> Option<usize> {
        let (first, last) = self.range()?;
        if pc < first || pc >= last {
            return None;
        }
        let (mut lo, mut hi) = (0usize, self.nfunc);
        // Invariant: pc(lo) <= pc < pc(hi).
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.pc(mid)? <= pc {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// The offset of the i-th `_func`, checked to hold its fixed fields.
    fn func_data(&self, i: usize) -> Option<usize> {
        let sz = self.functab_field();
        let at = self
            .functab
            .checked_add(i.checked_mul(2 * sz)?)?
            .checked_add(sz)?;
        let off = match sz {
            4 => u64::from(read_u32(&self.data, at)?),
            _ => read_u64(&self.data, at)?,
        };
        let start = self.funcdata.checked_add(usize::try_from(off).ok()?)?;
        // entry + 8 u32 fields
        let fixed = self.entry_size() + 8 * 4;
        (start.checked_add(fixed)? <= self.data.len()).then_some(start)
    }

    fn entry_size(&self) -> usize {
        match self.version {
            Version::Go118 | Version::Go120 => 4,
            _ => usize::from(self.ptr_size),
        }
    }

    fn entry_of(&self, f: usize) -> Option<u64> {
        match self.version {
            Version::Go118 | Version::Go120 => self
                .text_start
                .checked_add(u64::from(read_u32(&self.data, f)?)),
            _ => read_u64(&self.data, f),
        }
    }

    /// Field `n` (1 = nameoff, 5 = pcfile, 6 = pcln, 8 = cuOffset) of the `_func` at `f`.
    fn field(&self, f: usize, n: usize) -> Option<u32> {
        read_u32(&self.data, f + self.entry_size() + (n - 1) * 4)
    }

    fn func(&self, i: usize) -> Option<Func<'_>> {
        let entry = self.pc(i)?;
        let end = self.pc(i + 1)?;
        let f = self.func_data(i)?;
        let nameoff = usize::try_from(self.field(f, 1)?).ok()?;
        let name = self.cstr(self.funcnametab.checked_add(nameoff)?)?;
        Some(Func {
            name,
            entry,
            end,
            index: i,
        })
    }

    /// The NUL-terminated string at `at` (to the end of the bytes if unterminated).
    fn cstr(&self, at: usize) -> Option<Cow<'_, str>> {
        let rest = self.data.get(at..)?;
        let len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        Some(String::from_utf8_lossy(&rest[..len]))
    }

    fn file_name(&self, f: usize, fno: i32) -> Option<Cow<'_, str>> {
        let fno = usize::try_from(fno).ok()?;
        match self.version {
            Version::Go12 => {
                if fno == 0 || fno >= self.nfiles {
                    return None;
                }
                let off = read_u32(&self.data, self.filetab.checked_add(4 * fno)?)?;
                self.cstr(off as usize)
            }
            _ => {
                let cu = usize::try_from(self.field(f, 8)?).ok()?;
                let at = self
                    .cutab
                    .checked_add(cu.checked_add(fno)?.checked_mul(4)?)?;
                let off = read_u32(&self.data, at)?;
                if off == u32::MAX {
                    return None;
                }
                self.cstr(self.filetab.checked_add(off as usize)?)
            }
        }
    }

    /// The value a pc-value table (at `off` in the pc-value tables) gives `target`. Each step
    /// consumes at least two bytes, so a crafted table ends at the end of the bytes.
    fn pcvalue(&self, off: u32, entry: u64, target: u64) -> Option<i32> {
        if off == 0 {
            return None;
        }
        let mut p = self.data.get(self.pctab.checked_add(off as usize)?..)?;
        let mut val: i32 = -1;
        let mut pc = entry;
        let mut first = true;
        loop {
            let uvdelta = read_varint(&mut p)?;
            if uvdelta == 0 && !first {
                return None;
            }
            first = false;
            let vdelta = if uvdelta & 1 != 0 {
                !(uvdelta >> 1) as i32
            } else {
                (uvdelta >> 1) as i32
            };
            let pcdelta = u64::from(read_varint(&mut p)?) * u64::from(self.quantum);
            pc = pc.checked_add(pcdelta)?;
            val = val.wrapping_add(vdelta);
            if target < pc {
                return Some(val);
            }
        }
    }
}

fn functab_end(start: usize, nfunc: usize, field: usize) -> Option<usize> {
    start.checked_add(nfunc.checked_mul(2)?.checked_add(1)?.checked_mul(field)?)
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u64(data: &[u8], at: usize) -> Option<u64> {
    let b = data.get(at..at.checked_add(8)?)?;
    let mut w = [0u8; 8];
    w.copy_from_slice(b);
    Some(u64::from_le_bytes(w))
}

/// A Go varint (at most 5 bytes for a `u32`), consumed from `p`.
fn read_varint(p: &mut &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for (i, &b) in p.iter().take(5).enumerate() {
        v |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *p = &p[i + 1..];
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests;
