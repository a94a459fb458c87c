//! One ELF image for every reader of binaries: the probe resolver, the planner, the recorder's
//! build ids and unwinder, and the symbolizer each used to parse the same files with `object`
//! on their own and build the `PT_LOAD` table from it in their own way (four copies, one of
//! them without the `PF_X` flag). [`ElfImage`] parses a file once, keeps what every one of them
//! asks for (load segments, build id, section headers, debuglink), and answers the rest (symbol
//! tables, Go's function table, FDE bounds, section bytes) from the same parse.
//!
//! The files are other users' (`urec record` runs as root), so they are opened by
//! [`urec_untrusted::open`] and never mapped: `object` reads headers and symbol tables through
//! a [`ReadCache`] (`read` calls: a file truncated meanwhile is a short read and an error, not
//! `SIGBUS`), and section contents are read by `pread` into buffers of their own, so the cache
//! only ever holds headers, tables and the few code bytes asked for.
//!
//! Addresses and their conversions are `urec-format`'s ([`urec_format::address`]): the image
//! gives the [`LoadSegment`]s, the conversions go through them.

use std::fs::File;
use std::io;
use std::path::Path;

use object::{
    Object, ObjectSection, ObjectSegment, ObjectSymbol, ReadCache, ReadRef, SectionFlags,
    SectionKind, SegmentFlags, SymbolFlags, SymbolKind,
};
use urec_format::{FileOffset, LoadSegment, Svma};

pub use object::Architecture;

const PF_X: u32 = 1;
const STT_GNU_IFUNC: u8 = 10;
const STB_GLOBAL: u8 = 1;
const STB_WEAK: u8 = 2;

/// `object`'s view of an image, parsed from its read cache (no file reads but the ones the
/// cache has not made yet).
pub type ObjectFile<'a> = object::File<'a, &'a ReadCache<File>>;

/// One section header, as the readers use it.
#[derive(Clone, Debug)]
pub struct Section {
    /// The section's name (`.text`); empty when unreadable.
    pub name: String,
    /// `sh_addr`.
    pub address: u64,
    /// `sh_size`.
    pub size: u64,
    /// `(sh_offset, sh_size)` of its bytes in the file; None for `NOBITS`.
    pub file_range: Option<(u64, u64)>,
    /// `SHF_COMPRESSED`: its bytes are not what they mean (urec does not inflate them).
    pub compressed: bool,
    /// `sh_flags`.
    pub flags: u64,
    /// What `object` makes of it (uninitialized data, TLS, ...).
    pub kind: SectionKind,
}

impl Section {
    /// Whether the file holds bytes for it (a stripped `.debug_info` is `NOBITS`).
    pub fn has_contents(&self) -> bool {
        self.file_range.is_some_and(|(_, size)| size > 0)
    }

    /// The stated addresses it covers.
    pub fn svma_range(&self) -> std::ops::Range<u64> {
        self.address..self.address.saturating_add(self.size)
    }
}

/// A function symbol of `.symtab` or `.dynsym`, as the tables state it.
#[derive(Clone, Debug)]
pub struct FunctionSymbol {
    /// The raw (mangled) name; versioned `.dynsym` names come without `@VERSION`.
    pub name: String,
    /// `st_value`: the stated address.
    pub svma: Svma,
    /// `st_size`.
    pub size: u64,
    /// `STT_GNU_IFUNC`: the symbol is a resolver, not the function called.
    pub ifunc: bool,
    /// Global or weak binding.
    pub global: bool,
}

/// Why a file is not an image urec reads.
#[derive(Debug)]
pub enum ElfError {
    /// Opening or reading failed (a FIFO, a device, a permission).
    Io(io::Error),
    /// Not an object file `object` parses; the reason.
    NotElf(String),
}

impl std::error::Error for ElfError {}

impl std::fmt::Display for ElfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ElfError::Io(e) => e.fmt(f),
            ElfError::NotElf(why) => f.write_str(why),
        }
    }
}

/// An ELF file, parsed once.
pub struct ElfImage {
    /// For `pread` (which leaves the shared file position to the cache).
    file: File,
    /// The file's size when opened: reads end there.
    len: u64,
    /// What `object` reads through; it keeps every range read (headers, symbol tables).
    cache: ReadCache<File>,
    architecture: Architecture,
    build_id: Option<Vec<u8>>,
    loads: Vec<LoadSegment>,
    sections: Vec<Section>,
    has_symbol_table: bool,
    debuglink: Option<(String, u32)>,
}

impl ElfImage {
    /// Opens `path` with [`urec_untrusted::open`] and parses it.
    pub fn open(path: &Path) -> Result<ElfImage, ElfError> {
        ElfImage::read(urec_untrusted::open(path).map_err(ElfError::Io)?)
    }

    /// Parses an open file (opened by the caller, who chose the path, e.g.
    /// `/proc/PID/map_files/…`, and checked its identity).
    pub fn read(file: File) -> Result<ElfImage, ElfError> {
        let len = file.metadata().map_err(ElfError::Io)?.len();
        let cache = ReadCache::new(file.try_clone().map_err(ElfError::Io)?);
        let mut image = ElfImage {
            file,
            len,
            cache,
            architecture: Architecture::Unknown,
            build_id: None,
            loads: Vec::new(),
            sections: Vec::new(),
            has_symbol_table: false,
            debuglink: None,
        };
        let obj = parse(&image.cache).map_err(|e| ElfError::NotElf(e.to_string()))?;
        let architecture = obj.architecture();
        let build_id = obj.build_id().ok().flatten().map(<[u8]>::to_vec);
        let loads = obj
            .segments()
            .map(|s| {
                let (offset, file_size) = s.file_range();
                LoadSegment {
                    offset,
                    file_size,
                    vaddr: s.address(),
                    mem_size: s.size(),
                    align: s.align(),
                    exec: matches!(
                        s.flags(),
                        SegmentFlags::Elf { p_flags, .. } if p_flags.0 & PF_X != 0
                    ),
                }
            })
            .collect();
        let sections = obj
            .sections()
            .map(|s| Section {
                name: s.name().unwrap_or("").to_string(),
                address: s.address(),
                size: s.size(),
                file_range: s.file_range(),
                compressed: s
                    .compressed_file_range()
                    .map_or(true, |r| r.format != object::CompressionFormat::None),
                flags: match s.flags() {
                    SectionFlags::Elf { sh_flags, .. } => sh_flags.0,
                    _ => 0,
                },
                kind: s.kind(),
            })
            .collect();
        let has_symbol_table = obj.symbol_table().is_some();
        let debuglink = obj
            .gnu_debuglink()
            .ok()
            .flatten()
            .map(|(name, crc)| (String::from_utf8_lossy(name).into_owned(), crc));
        drop(obj);
        image.architecture = architecture;
        image.build_id = build_id;
        image.loads = loads;
        image.sections = sections;
        image.has_symbol_table = has_symbol_table;
        image.debuglink = debuglink;
        Ok(image)
    }

    /// What a dynamically linked program starts with: its loader (`PT_INTERP`'s path) and the
    /// libraries it names (`DT_NEEDED`), as the file states them; nothing for a static or
    /// malformed one.
    pub fn dependencies(&self) -> (Option<String>, Vec<String>) {
        use object::read::elf::{ElfFile64, ProgramHeader};
        let Ok(elf) = ElfFile64::<object::Endianness, _>::parse(&self.cache) else {
            return (None, Vec::new());
        };
        let (endian, data) = (elf.endian(), elf.data());
        let text = |b: &[u8]| {
            let b = b.split(|&c| c == 0).next().unwrap_or_default();
            String::from_utf8_lossy(b).into_owned()
        };
        let interpreter = elf
            .elf_program_headers()
            .iter()
            .find_map(|p| p.interpreter(endian, data).ok().flatten())
            .map(text);
        let mut needed = Vec::new();
        if let Ok(table) = elf.elf_section_table().dynamic_table(endian, data) {
            for d in table.iter() {
                if d.tag == object::elf::DT_NEEDED {
                    if let Ok(name) = table.string(d) {
                        needed.push(text(name));
                    }
                }
            }
        }
        (interpreter, needed)
    }

    /// `object`'s view, for what the image does not keep (symbol tables, relocations, program
    /// headers of other types). Parsed again from the cache: the headers are not read twice.
    pub fn object(&self) -> Option<ObjectFile<'_>> {
        parse(&self.cache).ok()
    }

    /// The machine the code is for.
    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    /// The GNU build id note's bytes (possibly empty, as the note says).
    pub fn build_id(&self) -> Option<&[u8]> {
        self.build_id.as_deref()
    }

    /// The `PT_LOAD` segments, in header order: what every address conversion goes through.
    pub fn loads(&self) -> &[LoadSegment] {
        &self.loads
    }

    /// The section headers.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// The first section called `name`, or for a `.debug_*` name its GNU-compressed
    /// `.zdebug_*` form (as `object`'s `section_by_name` answers).
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name).or_else(|| {
            let rest = name.strip_prefix(".debug_")?;
            self.sections
                .iter()
                .find(|s| s.name.strip_prefix(".zdebug_") == Some(rest))
        })
    }

    /// It has a `.symtab` (`object`'s answer: any `SHT_SYMTAB`, even an empty one).
    pub fn has_symbol_table(&self) -> bool {
        self.has_symbol_table
    }

    /// `.gnu_debuglink`: file name and CRC32 of the debug file.
    pub fn debuglink(&self) -> Option<&(String, u32)> {
        self.debuglink.as_ref()
    }

    /// The open file (for scans that read it in chunks of their own).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file's size when opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file was empty when opened.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A section's bytes, read by `pread` (empty for `NOBITS`); None when compressed or cut
    /// short (a file truncated since it was opened).
    pub fn section_bytes(&self, section: &Section) -> Option<Vec<u8>> {
        if section.compressed {
            return None;
        }
        let Some((off, size)) = section.file_range else {
            return Some(Vec::new());
        };
        let mut buf = vec![0u8; usize::try_from(size).ok()?];
        let n = urec_untrusted::read_at(&self.file, &mut buf, off).ok()?;
        (n == buf.len()).then_some(buf)
    }

    /// Up to `size` bytes from file offset `off`, fewer at the end of the file (by `pread`).
    pub fn read_at(&self, off: u64, size: u64) -> Option<Vec<u8>> {
        let size = size.min(self.len.checked_sub(off)?);
        let mut buf = vec![0u8; usize::try_from(size).ok()?];
        let n = urec_untrusted::read_at(&self.file, &mut buf, off).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// Exactly `len` bytes at stated address `svma`, in any segment's file-backed part.
    pub fn read_svma(&self, svma: Svma, len: usize) -> Option<Vec<u8>> {
        let off = svma.to_file_offset(&self.loads)?;
        let mut buf = vec![0u8; len];
        let n = urec_untrusted::read_at(&self.file, &mut buf, off.0).ok()?;
        (n == buf.len()).then_some(buf)
    }

    /// Up to `len` bytes of code at `svma`, within its executable segment and the file, kept
    /// in the cache (for the few functions a resolution looks at); empty if not in the file.
    pub fn code_at(&self, svma: Svma, len: usize) -> &[u8] {
        let Some((off, end)) = self.code_range(svma, len) else {
            return &[];
        };
        (&self.cache)
            .read_bytes_at(off.0, end - off.0)
            .unwrap_or(&[])
    }

    /// The file range `[off, end)` of up to `len` bytes of code at `svma`, within its
    /// executable segment and the file.
    pub fn code_range(&self, svma: Svma, len: usize) -> Option<(FileOffset, u64)> {
        let seg = self.loads.iter().find(|s| s.exec && s.has_svma(svma))?;
        let off = svma.to_code_offset(std::slice::from_ref(seg))?;
        let seg_end = seg.offset.saturating_add(seg.file_size.min(seg.mem_size));
        let end = off.0.saturating_add(len as u64).min(seg_end).min(self.len);
        (end > off.0).then_some((off, end))
    }

    /// The function symbols of `.symtab` and `.dynsym` (defined, non-zero, named), in table
    /// order, `.symtab` first.
    pub fn function_symbols(&self) -> Vec<FunctionSymbol> {
        let mut out = Vec::new();
        if let Some(obj) = self.object() {
            collect(obj.symbols(), &mut out);
            collect(obj.dynamic_symbols(), &mut out);
        }
        out
    }

    /// The function symbols of `.symtab` alone (a separate debug file's, whose `.dynsym` is
    /// the binary's).
    pub fn symtab_functions(&self) -> Vec<FunctionSymbol> {
        let mut out = Vec::new();
        if let Some(obj) = self.object() {
            collect(obj.symbols(), &mut out);
        }
        out
    }

    /// Whether `.dynsym` defines a function (exported functions of a stripped library; a
    /// stripped executable's `.dynsym` holds only its imports).
    pub fn defines_dynamic_function(&self) -> bool {
        self.object().is_some_and(|obj| {
            obj.dynamic_symbols()
                .any(|s| s.is_definition() && s.kind() == SymbolKind::Text)
        })
    }

    /// The stated address of a defined symbol of any kind (a variable too), from `.symtab` or
    /// `.dynsym`.
    pub fn symbol_svma(&self, name: &str) -> Option<Svma> {
        let obj = self.object()?;
        let found = obj
            .symbols()
            .chain(obj.dynamic_symbols())
            .find(|s| !s.is_undefined() && s.name() == Ok(name))
            .map(|s| Svma(s.address()));
        found
    }

    /// Go's function table ([`urec_gopclntab::elf::find`]), read by `pread`; None for other
    /// files.
    pub fn go_table(&self) -> Option<urec_gopclntab::elf::Found> {
        let obj = self.object()?;
        urec_gopclntab::elf::find(&obj, |off, size| self.read_at(off, size))
    }

    /// The `.eh_frame` FDE covering `svma`, as (start, length): the bounds of a function that
    /// has no symbol (a stripped binary's static functions).
    pub fn fde_range(&self, svma: Svma) -> Option<(Svma, u64)> {
        self.fdes()
            .into_iter()
            .find(|&(start, len)| svma >= start && svma - start < len)
    }

    /// Every `.eh_frame` FDE as (start, length), in the section's order: the function bounds
    /// the unwinder knows, which survive `strip --strip-all`. Empty without `.eh_frame`.
    pub fn fdes(&self) -> Vec<(Svma, u64)> {
        use gimli::{BaseAddresses, CieOrFde, EhFrame, LittleEndian, UnwindSection};
        let mut out = Vec::new();
        let Some(obj) = self.object() else {
            return out;
        };
        let Some(section) = obj.section_by_name(".eh_frame") else {
            return out;
        };
        let Ok(data) = section.data() else {
            return out;
        };
        let eh = EhFrame::new(data, LittleEndian);
        let mut bases = BaseAddresses::default().set_eh_frame(section.address());
        if let Some(text) = self.section(".text") {
            bases = bases.set_text(text.address);
        }
        if let Some(got) = self.section(".got") {
            bases = bases.set_got(got.address);
        }
        let mut entries = eh.entries(&bases);
        while let Ok(Some(entry)) = entries.next() {
            let CieOrFde::Fde(partial) = entry else {
                continue;
            };
            let Ok(fde) = partial.parse(EhFrame::cie_from_offset) else {
                continue;
            };
            out.push((Svma(fde.initial_address()), fde.len()));
        }
        out
    }
}

/// The one place the workspace's readers parse an object file.
fn parse(cache: &ReadCache<File>) -> object::Result<ObjectFile<'_>> {
    object::File::parse(cache)
}

fn collect<'data, S: ObjectSymbol<'data>>(
    syms: impl Iterator<Item = S>,
    out: &mut Vec<FunctionSymbol>,
) {
    for s in syms {
        if s.kind() != SymbolKind::Text || s.is_undefined() || s.address() == 0 {
            continue;
        }
        let Ok(name) = s.name() else { continue };
        if name.is_empty() {
            continue;
        }
        let (ifunc, global) = match s.flags() {
            SymbolFlags::Elf { st_info, .. } => (
                st_info.st_type().0 == STT_GNU_IFUNC,
                matches!(st_info.st_bind().0, STB_GLOBAL | STB_WEAK),
            ),
            _ => (false, s.is_global()),
        };
        out.push(FunctionSymbol {
            name: name.to_string(),
            svma: Svma(s.address()),
            size: s.size(),
            ifunc,
            global,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binary itself: an x86-64 ELF with segments, sections and symbols.
    #[test]
    fn reads_itself() {
        let exe = std::env::current_exe().unwrap();
        let image = ElfImage::open(&exe).unwrap();
        assert!(image.loads().iter().any(|l| l.exec));
        assert!(image.section(".text").is_some());
        let f = image
            .function_symbols()
            .into_iter()
            .find(|s| s.size > 0)
            .expect("a function");
        let off = f.svma.to_code_offset(image.loads()).unwrap();
        assert_eq!(off.to_svma(image.loads()), Some(f.svma));
        assert!(!image.code_at(f.svma, 4).is_empty());
    }

    /// The test binary links libc dynamically: its loader and libc, as `readelf -d` says.
    #[test]
    fn dependencies_of_a_dynamic_program() {
        let image = ElfImage::open(&std::env::current_exe().unwrap()).unwrap();
        let (interpreter, needed) = image.dependencies();
        assert_eq!(interpreter.as_deref(), Some("/lib64/ld-linux-x86-64.so.2"));
        assert!(needed.iter().any(|n| n == "libc.so.6"), "{needed:?}");
    }

    #[test]
    fn not_elf_and_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text");
        std::fs::write(&text, b"hello").unwrap();
        assert!(matches!(ElfImage::open(&text), Err(ElfError::NotElf(_))));
        assert!(matches!(
            ElfImage::open(&dir.path().join("missing")),
            Err(ElfError::Io(_))
        ));
    }
}
