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
//! # Inlined frames
//! A function's `_func` is followed by `npcdata` `u32` offsets of pc-value tables and
//! `nfuncdata` references to data. Table `PCDATA_InlTreeIndex` (2) gives, per pc, the index of
//! the inlined call it belongs to (−1: the function's own code) in the array that data
//! `FUNCDATA_InlTree` (3) points to. Each entry names the inlined function (`nameoff`) and
//! `parentPc`, an instruction (offset from the entry) at the call site, whose own index leads
//! one level out. Entries are 20 bytes before Go 1.20 (`parent i16, funcID u8, _, file i32,
//! line i32, nameoff i32, parentPc i32`) and 16 since (`funcID u8, _ [3], nameOff i32,
//! parentPc i32, startLine i32`). The array is not in `.gopclntab`: before 1.18 the data
//! references are `P`-sized addresses (8-aligned); since, `u32` offsets from `go:func.*`,
//! whose address only the runtime's `moduledata` records ([`Pclntab::find_gofunc`] finds it:
//! the data word that points at the table, checked against the next one). So
//! [`Pclntab::frames`] reads the image through a callback. Before 1.16 (magic `0xfffffffb`)
//! inlined frames are not read.
//!
//! Big-endian tables are refused (urec probes x86-64).

pub mod elf;

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

/// One frame of the chain at a pc: the function, or a function inlined into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The function's name.
    pub name: Cow<'a, str>,
    /// The source file of the pc within this frame (for an outer frame: of its call site).
    pub file: Option<Cow<'a, str>>,
    /// The line there.
    pub line: Option<u32>,
}

/// Deeper inline chains than this are cut (Go's inliner stops far earlier).
const MAX_INLINE_DEPTH: usize = 64;

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

    /// The frames of the code at `pc`, the real function first and the functions inlined into
    /// it after, innermost last, each with its file:line. `gofunc`: the address of
    /// `go:func.*` (Go 1.18+, see [`Pclntab::find_gofunc`]); `read(vaddr, len)`: `len` bytes of
    /// the image at `vaddr`, where the inline tree is. Without either, or for code not
    /// inlined, one frame.
    pub fn frames(
        &self,
        pc: u64,
        gofunc: Option<u64>,
        read: &dyn Fn(u64, usize) -> Option<Vec<u8>>,
    ) -> Option<Vec<Frame<'_>>> {
        let func = self.find(pc)?;
        let position = |pc: u64| match self.line(pc) {
            Some((file, line)) => (Some(file), Some(line)),
            None => (None, None),
        };
        let mut inner = Vec::new();
        let mut at = pc;
        if let Some((f, entry, tree)) = self.inline_tree(func.index, gofunc) {
            let index_table = self.pcdata(f, 2);
            for _ in 0..MAX_INLINE_DEPTH {
                let Some(ix) = index_table.and_then(|t| self.pcvalue(t, entry, at)) else {
                    break;
                };
                let Ok(ix) = u64::try_from(ix) else { break };
                let Some((nameoff, parent_pc)) = self.inlined_call(tree, ix, read) else {
                    break;
                };
                let (file, line) = position(at);
                let name = self.cstr(self.funcnametab.checked_add(nameoff)?)?;
                inner.push(Frame { name, file, line });
                at = entry.checked_add(u64::from(parent_pc))?;
            }
        }
        let (file, line) = position(at);
        let mut frames = vec![Frame {
            name: func.name,
            file,
            line,
        }];
        frames.extend(inner.into_iter().rev());
        Some(frames)
    }

    /// The address of `go:func.*` (Go 1.18+), from the runtime's `moduledata` in `data`, a
    /// writable segment's bytes (`.noptrdata`): the 8-aligned word holding `table_vaddr` (where
    /// this table is loaded), followed by the address of the name table and, 22 words in, the
    /// text start; `gofunc` is 38 words in (1.18, 1.19) or 40 (1.20+, after `covctrs`,
    /// `ecovctrs`). None for older layouts, which need no base.
    pub fn find_gofunc(&self, data: &[u8], table_vaddr: u64) -> Option<u64> {
        let index = match self.version {
            Version::Go118 => 38,
            Version::Go120 => 40,
            _ => return None,
        };
        let names = table_vaddr.checked_add(self.funcnametab as u64)?;
        (0..data.len() / 8).find_map(|w| {
            let word = |i: usize| read_u64(data, (w + i).checked_mul(8)?);
            (word(0)? == table_vaddr && word(1)? == names && word(22)? == self.text_start)
                .then(|| word(index))
                .flatten()
        })
    }

    /// The `_func` at `f`'s fixed part's size (the pc-data offsets follow).
    fn func_fixed_size(&self) -> usize {
        match self.version {
            Version::Go12 | Version::Go118 => 40,
            Version::Go116 | Version::Go120 => 44,
        }
    }

    /// The offset of pc-value table `i` of the `_func` at `f`, if it has one.
    fn pcdata(&self, f: usize, i: u32) -> Option<u32> {
        let npcdata = self.field(f, 7)?;
        if i >= npcdata {
            return None;
        }
        let at = f
            .checked_add(self.func_fixed_size())?
            .checked_add(4 * i as usize)?;
        read_u32(&self.data, at).filter(|&off| off != 0)
    }

    /// The `_func` of function `i`, its entry and the address of its inline tree.
    fn inline_tree(&self, i: usize, gofunc: Option<u64>) -> Option<(usize, u64, u64)> {
        const FUNCDATA_INL_TREE: usize = 3;
        let f = self.func_data(i)?;
        let entry = self.entry_of(f)?;
        let fixed = self.func_fixed_size();
        let nfuncdata = usize::from(*self.data.get(f.checked_add(fixed - 1)?)?);
        if FUNCDATA_INL_TREE >= nfuncdata {
            return None;
        }
        let npcdata = usize::try_from(self.field(f, 7)?).ok()?;
        let after_pcdata = f.checked_add(fixed)?.checked_add(npcdata.checked_mul(4)?)?;
        let tree = match self.version {
            Version::Go12 => return None,
            Version::Go116 => {
                // P-sized pointers, 8-aligned (the table itself is).
                let at = after_pcdata.next_multiple_of(8);
                let ptr = read_u64(&self.data, at.checked_add(8 * FUNCDATA_INL_TREE)?)?;
                (ptr != 0).then_some(ptr)?
            }
            Version::Go118 | Version::Go120 => {
                let at = after_pcdata.checked_add(4 * FUNCDATA_INL_TREE)?;
                let off = read_u32(&self.data, at)?;
                if off == u32::MAX {
                    return None;
                }
                gofunc?.checked_add(u64::from(off))?
            }
        };
        Some((f, entry, tree))
    }

    /// Entry `ix` of the inline tree at `tree`: the inlined function's name offset and its call
    /// site's pc offset.
    fn inlined_call(
        &self,
        tree: u64,
        ix: u64,
        read: &dyn Fn(u64, usize) -> Option<Vec<u8>>,
    ) -> Option<(usize, u32)> {
        let (size, name_at, parent_at) = match self.version {
            Version::Go120 => (16u64, 4, 8),
            _ => (20, 12, 16),
        };
        let bytes = read(tree.checked_add(ix.checked_mul(size)?)?, size as usize)?;
        let nameoff = usize::try_from(read_u32(&bytes, name_at)?).ok()?;
        Some((nameoff, read_u32(&bytes, parent_at)?))
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
