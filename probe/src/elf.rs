//! Reading what probe resolution needs from an ELF file: the executable PT_LOAD segments,
//! the function symbols of `.symtab` and `.dynsym` (demangled), the build id, and the bytes at
//! each function's start.
//!
//! A stripped binary (Debian's bash, libc) has only `.dynsym`. When a separate debug file for
//! its build id is installed (`/usr/lib/debug/.build-id/xx/rest.debug`, e.g. from `libc6-dbg`),
//! its `.symtab` is read too: its addresses are the same ELF virtual addresses, and it names the
//! local functions (`__strlen_avx2`) that `.dynsym` lacks.
//!
//! The file is read as a [`urec_elf::ElfImage`]: opened with [`urec_untrusted::open`] and never
//! mapped. `urec record` runs as root and the binary it probes may be a user's, who can swap it
//! for a FIFO (a plain open would block for good) or truncate it while we read (a mapping would
//! turn the next read into `SIGBUS`). Reads go through `pread`, where a truncation is a short
//! read: [`Binary::bytes_at`] then returns fewer bytes, and a parse fails with an error.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::fs::File;

use urec_elf::{ElfError, ElfImage, FunctionSymbol};
use urec_format::{BuildId, FileOffset, LoadSegment, Svma};

use crate::insn;
use crate::SpecError;

/// A function symbol.
#[derive(Clone, Debug)]
pub(crate) struct Sym {
    /// The name in the symbol table (mangled for C++/Rust).
    pub raw: String,
    /// Demangled with parameters (C++ `ns::K::m(int)`) or without the hash (Rust); None for C.
    pub demangled: Option<String>,
    /// Demangled without parameters (C++ `ns::K::m`); None when equal to `demangled`.
    pub short: Option<String>,
    pub vaddr: Svma,
    pub size: u64,
    pub ifunc: bool,
    /// Global or weak binding (preferred as a display name among aliases).
    pub global: bool,
}

impl Sym {
    /// The name to show: demangled if mangled.
    pub fn display(&self) -> &str {
        self.demangled.as_deref().unwrap_or(&self.raw)
    }

    /// Every name the symbol answers to.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.raw.as_str())
            .chain(self.demangled.as_deref())
            .chain(self.short.as_deref())
    }
}

/// One opened binary.
pub(crate) struct Binary {
    /// Canonical absolute path, as urec opens it.
    pub path: PathBuf,
    /// The path as the traced processes name it (`path`, unless it was found in another
    /// process's root).
    pub display: PathBuf,
    /// Device and inode (0, 0 until the resolver sets them).
    pub id: (u64, u64),
    pub build_id: Option<BuildId>,
    /// It has a `.symtab` (or a debug file, or Go's function table, provided one).
    pub has_symtab: bool,
    /// It is a Go binary (SPEC.md, "Go programs").
    pub go: Option<crate::go::GoBinary>,
    /// Go's function table, which tells Go code from C code in a cgo binary.
    pub pclntab: Option<urec_gopclntab::Pclntab>,
    /// Function symbols in executable segments, one per (name, vaddr), sorted by vaddr.
    pub functions: Vec<Sym>,
    /// Among functions that set up a frame at all (push registers or reserve stack, see
    /// [`insn::sets_up_a_frame`]), the fraction doing it with `[endbr64] push %rbp;
    /// mov %rsp,%rbp`. Leaf functions are left out: gcc omits the frame pointer in leaves even
    /// with `-fno-omit-frame-pointer` (`-momit-leaf-frame-pointer`), and a frame-pointer walk
    /// from a leaf only misses the immediate caller, which the recorder adds from `[sp]`.
    pub fp_fraction: f32,
    /// The file, read on demand rather than whole: a browser's or a game's binary is hundreds
    /// of MiB and resolution needs its headers, symbol tables, `.eh_frame` and a few bytes at
    /// each probed function. The image's cache keeps every range it read (those are few: the
    /// symbol and string tables, `.eh_frame`, the bytes of functions asked about), so memory
    /// follows what was asked, not the file's size; the scan of every function start for
    /// [`Binary::fp_fraction`] reads the file in chunks instead (see [`Chunks`]).
    image: ElfImage,
}

impl Binary {
    /// Opens and indexes an ELF file.
    pub fn open(path: &Path) -> Result<Binary, SpecError> {
        let io = |e: std::io::Error| SpecError::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let file = urec_untrusted::open(path).map_err(io)?;
        let not_elf = |why: String| SpecError::NotElf {
            path: path.to_path_buf(),
            why,
        };
        let mut magic = [0u8; 4];
        if urec_untrusted::read_at(&file, &mut magic, 0).map_err(io)? < 4 || magic != *b"\x7fELF" {
            return Err(not_elf("no ELF magic".into()));
        }
        let image = ElfImage::read(file).map_err(|e| match e {
            ElfError::Io(e) => io(e),
            ElfError::NotElf(why) => not_elf(why),
        })?;
        if image.architecture() != urec_elf::Architecture::X86_64 {
            return Err(not_elf(format!(
                "architecture {:?}; urec probes x86-64 code",
                image.architecture()
            )));
        }
        let build_id = image.build_id().map(|b| BuildId(b.to_vec()));
        let mut go = image.object().and_then(|obj| crate::go::detect(&obj));
        let mut has_symtab = image.has_symbol_table();
        let mut raw_syms: Vec<FunctionSymbol> = image.function_symbols();
        let pclntab = image.go_table().map(|found| found.table);
        if let Some(table) = &pclntab {
            // Without section headers nothing else says Go.
            go.get_or_insert(crate::go::GoBinary { version: None });
            // Go's table names every Go function, stripped or not: those the symbol tables
            // lack (`-ldflags='-s -w'`) come from it, with its bounds (which count the `int3`
            // padding up to the next function).
            let named: std::collections::HashSet<Svma> = raw_syms.iter().map(|r| r.svma).collect();
            for f in table.functions() {
                if f.end > f.entry && !named.contains(&Svma(f.entry)) {
                    raw_syms.push(FunctionSymbol {
                        name: f.name.into_owned(),
                        svma: Svma(f.entry),
                        size: f.end - f.entry,
                        ifunc: false,
                        global: true,
                    });
                }
            }
            has_symtab = true;
        }
        if !has_symtab {
            if let Some(debug) = build_id.as_ref().and_then(debug_file_for) {
                if let Ok(debug) = ElfImage::open(&debug) {
                    if debug.has_symbol_table() {
                        raw_syms.extend(debug.symtab_functions());
                        has_symtab = true;
                    }
                }
            }
        }
        let mut bin = Binary {
            path: path.to_path_buf(),
            display: path.to_path_buf(),
            id: (0, 0),
            build_id,
            has_symtab,
            go,
            pclntab,
            functions: Vec::new(),
            fp_fraction: 0.0,
            image,
        };
        bin.functions = bin.index(raw_syms);
        bin.fp_fraction = bin.frame_pointer_fraction();
        Ok(bin)
    }

    fn index(&self, raw: Vec<FunctionSymbol>) -> Vec<Sym> {
        let mut seen: HashMap<(String, Svma), usize> = HashMap::new();
        let mut out: Vec<Sym> = Vec::new();
        for r in raw {
            if self.exec_segment(r.svma).is_none() {
                continue;
            }
            match seen.entry((r.name.clone(), r.svma)) {
                Entry::Occupied(e) => {
                    // Same symbol in .symtab and .dynsym: keep the larger size (some .dynsym
                    // entries of versioned aliases have size 0).
                    let i = *e.get();
                    out[i].size = out[i].size.max(r.size);
                    continue;
                }
                Entry::Vacant(e) => {
                    e.insert(out.len());
                }
            }
            let (demangled, short) = demangle(&r.name);
            out.push(Sym {
                raw: r.name,
                demangled,
                short,
                vaddr: r.svma,
                size: r.size,
                ifunc: r.ifunc,
                global: r.global,
            });
        }
        out.sort_by(|a, b| a.vaddr.cmp(&b.vaddr).then_with(|| a.raw.cmp(&b.raw)));
        out
    }

    /// The `PT_LOAD` segments (the image's).
    pub fn segments(&self) -> &[LoadSegment] {
        self.image.loads()
    }

    /// The executable PT_LOAD containing `vaddr` in its file-backed part.
    fn exec_segment(&self, vaddr: Svma) -> Option<&LoadSegment> {
        self.segments().iter().find(|s| s.exec && s.has_svma(vaddr))
    }

    /// Converts an ELF virtual address of code to the file offset the kernel attaches to.
    ///
    /// uprobes are attached by (inode, file offset), not by virtual address. The two are equal
    /// only when the containing PT_LOAD has `p_vaddr == p_offset`, which happens to hold for
    /// many binaries (Debian's bash, most PIE executables with the default linker script) and
    /// not for others (non-PIE executables based at 0x400000, libraries linked with
    /// `-z separate-code` variants, prelinked or custom-scripted files). Tools that use the
    /// symbol value directly, or subtract a guessed base, attach to the wrong instruction —
    /// silently, and possibly in the middle of one, corrupting the traced program. The only
    /// correct mapping is through the program header of the executable segment that contains
    /// the address: `offset = vaddr - p_vaddr + p_offset`.
    pub fn vaddr_to_offset(&self, vaddr: Svma) -> Option<FileOffset> {
        vaddr.to_code_offset(self.segments())
    }

    /// Up to `n` bytes of code at `vaddr` (empty if not in the file, or if the file was
    /// truncated since it was opened).
    pub fn bytes_at(&self, vaddr: Svma, n: usize) -> &[u8] {
        self.image.code_at(vaddr, n)
    }

    /// Whether `vaddr` is in a function Go's table lists: Go code, whose returns must never get
    /// a uretprobe. In a cgo binary the C functions are not listed. A Go binary whose table
    /// cannot be read counts as Go throughout: a uretprobe in Go code crashes the program, a
    /// C function without one only loses the cheaper return probe.
    pub fn is_go_function(&self, vaddr: Svma) -> bool {
        match &self.pclntab {
            Some(table) => table.find(vaddr.0).is_some(),
            None => self.go.is_some(),
        }
    }

    /// The IFUNC symbol at `vaddr`, if any. Other names at that address (`strlen_ifunc`) are
    /// the same resolver.
    pub fn ifunc_at(&self, vaddr: Svma) -> Option<&Sym> {
        self.functions.iter().find(|s| s.ifunc && s.vaddr == vaddr)
    }

    /// The function whose `[vaddr, vaddr + size)` contains `addr` (a start wins over a body).
    pub fn function_at(&self, addr: Svma) -> Option<&Sym> {
        if let Some(s) = self.functions.iter().find(|s| s.vaddr == addr) {
            return Some(s);
        }
        self.functions
            .iter()
            .filter(|s| s.vaddr < addr && addr - s.vaddr < s.size)
            .max_by_key(|s| s.vaddr)
    }

    /// The range `(start, len)` of the `.eh_frame` FDE covering `vaddr`: the bounds of a
    /// function that has no symbol (a stripped binary's static functions), for decoding its
    /// instructions from its start.
    pub fn unwind_range(&self, vaddr: Svma) -> Option<(Svma, u64)> {
        self.image.fde_range(vaddr)
    }

    /// The `(start, len)` of every `.eh_frame` FDE with code, by start, one per start: the
    /// function bounds the unwinder knows, which survive `strip --strip-all`.
    pub fn fde_ranges(&self) -> Vec<(Svma, u64)> {
        let mut out: Vec<(Svma, u64)> = self
            .image
            .fdes()
            .into_iter()
            .filter(|&(_, len)| len > 0)
            .collect();
        out.sort_unstable();
        out.dedup_by_key(|r| r.0);
        out
    }

    /// A section's address and bytes (`.note.stapsdt`, `.stapsdt.base`); None when absent or
    /// unreadable (a file truncated since it was opened).
    pub fn section(&self, name: &str) -> Option<(Svma, Vec<u8>)> {
        let section = self.image.section(name)?;
        let bytes = self.image.section_bytes(section)?;
        Some((Svma(section.address), bytes))
    }

    /// The address of a symbol of any kind (a global variable as well as a function), from
    /// `.symtab` or `.dynsym`: what a USDT operand like `8@counter(%rip)` names.
    pub fn symbol_address(&self, name: &str) -> Option<Svma> {
        self.image.symbol_svma(name)
    }

    /// The file offset of `vaddr` in any PT_LOAD (data too), within its file-backed part: a
    /// USDT semaphore lives in `.probes`, a writable data segment, and the kernel finds it by
    /// file offset in the mapping of the probed file.
    pub fn mapped_vaddr_to_offset(&self, vaddr: Svma) -> Option<FileOffset> {
        vaddr.to_file_offset(self.segments())
    }

    /// Why the kernel must not count a USDT semaphore at `vaddr` (a `u16`), or None when it
    /// lies in writable data nothing else writes. The kernel adds 1 to those two bytes of every
    /// process mapping the file while the probe is attached, whatever they hold: a semaphore
    /// address that points into the GOT (a corrupt or crafted note) turns a function pointer
    /// into a wild one, and the program dies of SIGSEGV at its next call through it. So the
    /// bytes must be in a writable, file-backed, allocated section that is not filled in by the
    /// dynamic linker (no GOT, `.dynamic`, constructor array or RELRO data, and no dynamic
    /// relocation writing them), and in a writable PT_LOAD.
    pub fn semaphore_problem(&self, vaddr: Svma) -> Option<String> {
        // Compared with the program and section headers' own raw fields.
        let vaddr = vaddr.0;
        use object::read::elf::ProgramHeader;
        use object::{Object, ObjectSection, SectionFlags, SectionKind};
        const SHF_WRITE: u64 = 1;
        const SHF_ALLOC: u64 = 2;
        const SHF_EXECINSTR: u64 = 4;
        const SHF_TLS: u64 = 0x400;
        const PT_LOAD: u32 = 1;
        const PF_W: u32 = 2;
        const PT_GNU_RELRO: u32 = 0x6474_e552;
        let end = vaddr.checked_add(2)?;
        let within = |start: u64, size: u64| vaddr >= start && end <= start.saturating_add(size);
        let Some(object::File::Elf64(elf)) = self.image.object() else {
            return Some("urec cannot read the file's program headers to check it".into());
        };
        let endian = elf.endian();
        let headers = elf.elf_program_headers();
        let load = headers.iter().find(|h| {
            h.p_type(endian).0 == PT_LOAD
                && within(h.p_vaddr(endian), h.p_filesz(endian).min(h.p_memsz(endian)))
        });
        match load {
            None => {
                return Some(
                    "it is not in the file-backed part of a segment, so the kernel cannot count \
                     it"
                    .into(),
                )
            }
            Some(h) if h.p_flags(endian).0 & PF_W == 0 => {
                return Some("it is in a read-only segment".into())
            }
            Some(_) => {}
        }
        // Without section headers (stripped by sstrip) the segment is all there is to check.
        let allocated: Vec<_> = elf
            .sections()
            .filter(|s| matches!(s.flags(), SectionFlags::Elf { sh_flags, .. } if sh_flags.0 & SHF_ALLOC != 0))
            .collect();
        if !allocated.is_empty() {
            let Some(section) = allocated.iter().find(|s| within(s.address(), s.size())) else {
                return Some("it lies in no section of the file".into());
            };
            let name = section.name().unwrap_or("?");
            let flags = match section.flags() {
                SectionFlags::Elf { sh_flags, .. } => sh_flags.0,
                _ => 0,
            };
            const FILLED_BY_LD_SO: [&str; 10] = [
                ".got",
                ".got.plt",
                ".plt.got",
                ".dynamic",
                ".init_array",
                ".fini_array",
                ".preinit_array",
                ".ctors",
                ".dtors",
                ".tm_clone_table",
            ];
            if FILLED_BY_LD_SO.contains(&name) || name.starts_with(".data.rel.ro") {
                return Some(format!(
                    "it lies in {name}, which holds addresses the dynamic linker fills in, not \
                     a program's data: the kernel's increment would corrupt one"
                ));
            }
            if flags & SHF_WRITE == 0 || flags & SHF_EXECINSTR != 0 {
                return Some(format!("it lies in {name}, which is not writable data"));
            }
            if flags & SHF_TLS != 0
                || matches!(
                    section.kind(),
                    SectionKind::UninitializedData | SectionKind::UninitializedTls
                )
            {
                return Some(format!(
                    "it lies in {name}, which is thread-local or not in the file"
                ));
            }
        }
        if headers.iter().any(|h| {
            let start = h.p_vaddr(endian);
            h.p_type(endian).0 == PT_GNU_RELRO
                && vaddr < start.saturating_add(h.p_memsz(endian))
                && end > start
        }) {
            return Some(
                "it lies in the part the dynamic linker makes read-only after relocating it \
                 (PT_GNU_RELRO)"
                    .into(),
            );
        }
        if let Some(relocs) = elf.dynamic_relocations() {
            for (at, _) in relocs {
                // A relocation writes up to 8 bytes at `at`.
                if at < end && vaddr < at.saturating_add(8) {
                    return Some(format!(
                        "the dynamic linker writes an address at {at:#x}, over it (a dynamic \
                         relocation): the kernel's increment would corrupt it"
                    ));
                }
            }
        }
        None
    }

    fn frame_pointer_fraction(&self) -> f32 {
        let mut starts: Vec<Svma> = self
            .functions
            .iter()
            .filter(|s| s.size > 0 && !s.ifunc)
            .map(|s| s.vaddr)
            .collect();
        starts.dedup();
        let mut chunks = Chunks::new(self.image.file());
        let (mut framed, mut with_fp) = (0usize, 0usize);
        for &v in &starts {
            let Some((off, end)) = self.image.code_range(v, 24) else {
                continue;
            };
            let bytes = chunks.get(off.0, end);
            if insn::sets_up_a_frame(bytes) {
                framed += 1;
                if insn::has_frame_pointer_prologue(bytes) {
                    with_fp += 1;
                }
            }
        }
        if framed == 0 {
            return 0.0;
        }
        with_fp as f32 / framed as f32
    }
}

/// Reads a file in 1 MiB chunks for a scan in (mostly) increasing file order: one `pread` per
/// chunk rather than one per function, and one chunk in memory at a time.
struct Chunks<'a> {
    file: &'a File,
    buf: Vec<u8>,
    start: u64,
}

impl<'a> Chunks<'a> {
    const SIZE: usize = 1 << 20;

    fn new(file: &'a File) -> Self {
        Chunks {
            file,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// The bytes of `[off, end)`, fewer at the end of the file (or none on a read error).
    fn get(&mut self, off: u64, end: u64) -> &[u8] {
        let inside = off >= self.start && end <= self.start + self.buf.len() as u64;
        if !inside {
            let want = Self::SIZE.max((end - off) as usize);
            self.buf.resize(want, 0);
            let n = urec_untrusted::read_at(self.file, &mut self.buf, off).unwrap_or(0);
            self.buf.truncate(n);
            self.start = off;
        }
        let from = (off - self.start) as usize;
        let to = ((end - self.start) as usize).min(self.buf.len());
        self.buf.get(from..to).unwrap_or(&[])
    }
}

/// `/usr/lib/debug/.build-id/xx/rest.debug`, if it exists.
fn debug_file_for(build_id: &BuildId) -> Option<PathBuf> {
    let hex = build_id.to_string();
    if hex.len() < 3 {
        return None;
    }
    let p = PathBuf::from(format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &hex[..2],
        &hex[2..]
    ));
    p.is_file().then_some(p)
}

/// Demangles a symbol name: (full, without parameters). Rust names lose their `::h<hash>`
/// suffix (matching how users write them); C++ names keep their parameter list in the full
/// form, which is how overloads are told apart.
pub(crate) fn demangle(raw: &str) -> (Option<String>, Option<String>) {
    let is_rust_legacy = raw.starts_with("_ZN") && has_rust_hash(raw);
    if raw.starts_with("_R") || is_rust_legacy {
        if let Ok(d) = rustc_demangle::try_demangle(raw) {
            return (Some(format!("{d:#}")), None);
        }
    }
    if raw.starts_with("_Z") {
        if let Ok(sym) = cpp_demangle::Symbol::new(raw.as_bytes()) {
            let full = sym.demangle().ok().map(strip_return_type);
            let short = sym
                .demangle_with_options(&cpp_demangle::DemangleOptions::new().no_params())
                .ok()
                .map(strip_return_type);
            let short = match (&full, short) {
                (Some(f), Some(s)) if *f != s => Some(s),
                _ => None,
            };
            return (full, short);
        }
    }
    (None, None)
}

/// Template function instances demangle with their return type first
/// (`int ns::twice<int>(int)`); users name them without it, and a space would end FUNCTION in
/// a spec. Drops everything up to the last space outside `<>`/`()` before the name's `(`.
fn strip_return_type(name: String) -> String {
    let mut depth = 0i32;
    let mut cut = None;
    for (i, c) in name.char_indices() {
        match c {
            '(' if depth == 0 => break,
            '<' | '(' => depth += 1,
            '>' | ')' => depth -= 1,
            ' ' if depth == 0 => cut = Some(i + 1),
            _ => {}
        }
    }
    match cut {
        // `operator new`, `operator delete[]`: the space belongs to the name.
        Some(i) if !name[..i].trim_end().ends_with("operator") => name[i..].to_string(),
        _ => name,
    }
}

/// A Rust legacy mangled name ends in `17h<16 hex digits>E`.
fn has_rust_hash(raw: &str) -> bool {
    let Some(body) = raw.strip_suffix('E') else {
        return false;
    };
    body.len() > 19
        && body.is_char_boundary(body.len() - 19)
        && body[body.len() - 19..].starts_with("17h")
        && body[body.len() - 16..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary is read, not mapped: once truncated under us it gives no bytes (a mapping
    /// would give `SIGBUS`), and a FIFO in its place is refused at once (a plain open would
    /// wait for a writer).
    #[test]
    fn truncated_or_fifo_binaries() {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("libc.so.6");
        let libc = crate::target::find_library("c").expect("libc");
        std::fs::copy(libc, &copy).unwrap();
        let bin = Binary::open(&copy).unwrap();
        let f = bin
            .functions
            .iter()
            .find(|s| s.size > 0)
            .expect("a function");
        assert!(!bin.bytes_at(f.vaddr, 16).is_empty());
        let other = bin.functions.iter().rfind(|s| s.size > 0).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&copy)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert!(bin.bytes_at(other.vaddr + 1, 16).is_empty());
        assert!(Binary::open(&copy).is_err());

        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        match Binary::open(&fifo).err() {
            Some(SpecError::Io { source, .. }) => {
                assert!(source.to_string().contains("a FIFO"), "{source}")
            }
            other => panic!("a FIFO must be refused as such: {other:?}"),
        }
    }

    #[test]
    fn demangling() {
        assert_eq!(
            demangle("_ZN2ns5Klass6methodEi"),
            (
                Some("ns::Klass::method(int)".into()),
                Some("ns::Klass::method".into())
            )
        );
        assert_eq!(
            demangle("_ZN7mycrate6module8function17h0123456789abcdefE"),
            (Some("mycrate::module::function".into()), None)
        );
        assert_eq!(demangle("readline"), (None, None));
        assert_eq!(
            demangle("_ZN2ns5twiceIiEET_S1_"),
            (
                Some("ns::twice<int>(int)".into()),
                Some("ns::twice<int>".into())
            )
        );
        assert_eq!(
            strip_return_type("ns::operator new(unsigned long)".into()),
            "ns::operator new(unsigned long)"
        );
        assert_eq!(demangle("_Zgarbage"), (None, None));
    }
}
