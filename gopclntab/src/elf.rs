//! Where Go's function table is in an ELF file, for every reader of Go binaries (the probe
//! resolver and the symbolizer): one rule for "is this Go", one way to find the table with or
//! without section headers, one bound on what is read.

use object::{Object, ObjectSection, ObjectSegment, SegmentFlags};

use crate::{Pclntab, SECTION_NAMES};

/// Sections only Go's toolchain writes: a file with any of them is a Go binary. `-ldflags='-s
/// -w'` drops the symbol and DWARF tables, never these.
pub const GO_SECTIONS: [&str; 4] = [
    ".note.go.buildid",
    ".go.buildinfo",
    ".gopclntab",
    ".data.rel.ro.gopclntab",
];

/// The most bytes of Go function table read: Kubernetes' largest binaries have about 40 MiB.
pub const READ_LIMIT: u64 = 256 << 20;

const PF_X: u32 = 1;
const PF_W: u32 = 2;

/// Go's function table found in a file.
pub struct Found {
    /// The table.
    pub table: Pclntab,
    /// The table's own address (what `go:func.*` lookups measure from).
    pub vaddr: u64,
    /// File ranges (offset, size) where the runtime's `moduledata`, and so `go:func.*`, may
    /// be: `.noptrdata`, or without section headers the writable segments. Read only by
    /// callers that want inlined frames ([`Pclntab::find_gofunc`]).
    pub data: Vec<(u64, u64)>,
}

/// Whether `obj` has a section only Go's toolchain writes.
pub fn has_go_sections<'data, R: object::ReadRef<'data>>(obj: &object::File<'data, R>) -> bool {
    GO_SECTIONS
        .iter()
        .any(|name| obj.section_by_name(name).is_some())
}

/// Go's function table in `obj`: its section in a Go binary, or, in a file without section
/// headers, the first table found by its magic in a non-executable segment (Go puts it in
/// `.rodata` or `.data.rel.ro`). `read(offset, size)` reads file bytes (by `pread`: the file
/// may be someone else's); at most [`READ_LIMIT`] bytes of a range are asked for. None for
/// other files, or when the table does not parse.
pub fn find<'data, R: object::ReadRef<'data>>(
    obj: &object::File<'data, R>,
    read: impl Fn(u64, u64) -> Option<Vec<u8>>,
) -> Option<Found> {
    let read = |off: u64, size: u64| read(off, size.min(READ_LIMIT));
    let flags = |s: &object::Segment<'data, '_, R>| match s.flags() {
        SegmentFlags::Elf { p_flags, .. } => p_flags.0,
        _ => 0,
    };
    if obj.sections().next().is_some() {
        if !has_go_sections(obj) {
            return None;
        }
        let text = obj.section_by_name(".text").map(|s| s.address());
        let section = SECTION_NAMES.iter().find_map(|n| obj.section_by_name(n))?;
        let (off, size) = section.file_range()?;
        let table = Pclntab::parse(read(off, size)?, text).ok()?;
        let data = obj
            .section_by_name(".noptrdata")
            .and_then(|s| s.file_range())
            .into_iter()
            .collect();
        return Some(Found {
            table,
            vaddr: section.address(),
            data,
        });
    }
    let (vaddr, table) = obj
        .segments()
        .filter(|s| flags(s) & PF_X == 0)
        .find_map(|s| {
            let (off, size) = s.file_range();
            let (at, table) = Pclntab::scan(&read(off, size)?, None)?;
            Some((s.address().checked_add(at as u64)?, table))
        })?;
    let data = obj
        .segments()
        .filter(|s| flags(s) & PF_W != 0)
        .map(|s| s.file_range())
        .collect();
    Some(Found { table, vaddr, data })
}
