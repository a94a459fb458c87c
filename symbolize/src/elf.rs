//! What symbolization needs from an ELF file's headers, and the one conversion it owns: a
//! recorded file offset to the virtual address that symbol tables and DWARF speak.
//!
//! A debug file made by `objcopy --only-keep-debug` (or `strip --only-keep-debug`) keeps every
//! `PT_LOAD`'s `p_vaddr`, `p_memsz` and `p_align` but not its file layout: `p_filesz` is 0 for the
//! segments whose sections all became `NOBITS`, their `p_offset` is 0 or wherever objcopy put
//! the headers, and the `NOBITS` sections' `sh_offset` say nothing about the binary either
//! (checked with binutils 2.4x on a gcc-built PIE: `.text` at 0x1040 in a segment at offset
//! 0x1000 becomes a segment at offset 0 with size 0, `.text` at offset 0x1000). So when only
//! such a file is at hand, [`ElfInfo::with_inferred_offsets`] redoes the linker's layout: the
//! segments in address order, each at the first file offset after the previous one's end that
//! is congruent to its address modulo its alignment (the rule the ELF spec demands and that
//! ld.bfd, gold, lld and mold follow without gaps). A binary laid out otherwise (a linker
//! script with padding between segments) would get wrong names; this is documented.

use std::fs::File;

use urec_elf::ElfImage;
use urec_format::{FileOffset, LoadSegment, Svma};

/// What symbolization needs to know about one ELF file, read once from its headers.
#[derive(Debug)]
pub(crate) struct ElfInfo {
    pub build_id: Option<Vec<u8>>,
    pub loads: Vec<LoadSegment>,
    /// The file carries DWARF (a `.debug_info` with contents, not a stripped `NOBITS` one).
    pub has_dwarf: bool,
    /// The file has a `.symtab` with contents.
    pub has_symtab: bool,
    /// The file's `.dynsym` defines a function (exported functions of a stripped library; a
    /// stripped executable's `.dynsym` holds only its imports, which name nothing in it).
    pub has_dynsym: bool,
    /// `.gnu_debuglink`: file name and CRC32 of the debug file.
    pub debuglink: Option<(String, u32)>,
}

/// Go's function table of a binary, with what its inline trees need: where `go:func.*` is,
/// and the image to read them from.
pub(crate) struct GoTable {
    pub table: urec_gopclntab::Pclntab,
    gofunc: Option<u64>,
    image: ElfImage,
}

impl GoTable {
    /// The frames of the Go code at `vaddr`: the function, then those inlined into it.
    pub fn frames(&self, vaddr: Svma) -> Option<Vec<urec_gopclntab::Frame<'_>>> {
        // Go's table speaks plain `u64` addresses, in and out.
        let read = |at: u64, len: usize| self.image.read_svma(Svma(at), len.min(64));
        self.table.frames(vaddr.0, self.gofunc, &read)
    }
}

/// Go's function table in an open ELF file ([`ElfImage::go_table`]), with `go:func.*` from the
/// data the runtime's `moduledata` is in; None for other files.
pub(crate) fn read_pclntab(file: &File) -> Option<GoTable> {
    let image = ElfImage::read(file.try_clone().ok()?).ok()?;
    let found = image.go_table()?;
    let gofunc = found.data.iter().find_map(|&(off, size)| {
        let data = image.read_at(off, size.min(urec_gopclntab::elf::READ_LIMIT))?;
        found.table.find_gofunc(&data, found.vaddr)
    });
    Some(GoTable {
        table: found.table,
        gofunc,
        image,
    })
}

impl ElfInfo {
    /// Reads the headers of an open file as an [`ElfImage`] (never mapped: a file truncated
    /// meanwhile makes a short read, not `SIGBUS`); `None` if it is not an object file.
    pub fn read(file: &File) -> Option<ElfInfo> {
        let image = ElfImage::read(file.try_clone().ok()?).ok()?;
        let has_contents = |name: &str| image.section(name).is_some_and(|s| s.has_contents());
        Some(ElfInfo {
            build_id: image.build_id().map(<[u8]>::to_vec),
            loads: image.loads().to_vec(),
            has_dwarf: has_contents(".debug_info"),
            has_symtab: has_contents(".symtab"),
            has_dynsym: image.defines_dynamic_function(),
            debuglink: image.debuglink().cloned(),
        })
    }

    /// Worth using as a separate debug file: it has DWARF or at least a symbol table.
    pub fn has_dwarf_or_symbols(&self) -> bool {
        self.has_dwarf || self.has_symtab
    }

    /// Anything at all that can name an address.
    pub fn has_any_symbols(&self) -> bool {
        self.has_dwarf || self.has_symtab || self.has_dynsym
    }

    /// The virtual address (as symbols and DWARF state it) that a file offset is loaded at,
    /// through the `PT_LOAD` segment containing it.
    pub fn offset_to_vaddr(&self, offset: FileOffset) -> Option<Svma> {
        offset.to_svma(&self.loads)
    }

    /// This file's segments lost their file layout (a `--only-keep-debug` file): a segment
    /// with memory but no file contents before the last one can only be that.
    fn lost_layout(&self) -> bool {
        let n = self.loads.len();
        self.loads
            .iter()
            .take(n.saturating_sub(1))
            .any(|l| l.mem_size > 0 && l.file_size == 0)
    }

    /// The same file with the binary's segment layout restored (see the module doc) when its
    /// own was lost; `None` when it cannot be (no segments, overflowing values).
    pub fn with_inferred_offsets(mut self) -> Option<ElfInfo> {
        if self.loads.is_empty() {
            return None;
        }
        if !self.lost_layout() {
            return Some(self);
        }
        self.loads.sort_by_key(|l| l.vaddr);
        let mut end = 0u64;
        for l in &mut self.loads {
            let align = if l.align.is_power_of_two() {
                l.align
            } else {
                1
            };
            let offset = end.checked_add(l.vaddr.wrapping_sub(end) & (align - 1))?;
            l.offset = offset;
            // Every segment but the last has its memory image in the file (no .bss).
            l.file_size = l.mem_size;
            end = offset.checked_add(l.mem_size)?;
        }
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(offset: u64, file_size: u64, vaddr: u64, mem_size: u64) -> LoadSegment {
        LoadSegment {
            offset,
            file_size,
            vaddr,
            mem_size,
            align: 0x1000,
            exec: false,
        }
    }

    fn info(loads: Vec<LoadSegment>) -> ElfInfo {
        ElfInfo {
            build_id: None,
            loads,
            has_dwarf: true,
            has_symtab: true,
            has_dynsym: false,
            debuglink: None,
        }
    }

    /// The program headers of a gcc/ld.bfd PIE and of its `objcopy --only-keep-debug` file,
    /// as `readelf -lW` showed them.
    #[test]
    fn only_keep_debug_layout_is_restored() {
        let binary = info(vec![
            load(0, 0x5e0, 0, 0x5e0),
            load(0x1000, 0x13d, 0x1000, 0x13d),
            load(0x2000, 0xec, 0x2000, 0xec),
            load(0x2e00, 0x210, 0x3e00, 0x218),
        ]);
        let debug = info(vec![
            load(0, 0x39c, 0, 0x5e0),
            load(0, 0, 0x1000, 0x13d),
            load(0, 0, 0x2000, 0xec),
            load(0xe00, 0, 0x3e00, 0x218),
        ])
        .with_inferred_offsets()
        .unwrap();
        for off in [0x0, 0x1040, 0x1100, 0x2010, 0x2e10] {
            assert_eq!(
                debug.offset_to_vaddr(FileOffset(off)),
                binary.offset_to_vaddr(FileOffset(off)),
                "{off:#x}"
            );
        }
    }

    /// lld packs segments without page padding in the file: text at 0x5e0 runs at 0x15e0.
    #[test]
    fn packed_layout_is_restored() {
        let debug = info(vec![load(0, 0, 0, 0x5e0), load(0, 0, 0x15e0, 0x200)])
            .with_inferred_offsets()
            .unwrap();
        assert_eq!(debug.offset_to_vaddr(FileOffset(0x600)), Some(Svma(0x1600)));
        // Non-PIE: the first segment runs at 0x400000 from offset 0.
        let debug = info(vec![
            load(0, 0, 0x400000, 0x5e0),
            load(0, 0, 0x401000, 0x100),
        ])
        .with_inferred_offsets()
        .unwrap();
        assert_eq!(
            debug.offset_to_vaddr(FileOffset(0x1010)),
            Some(Svma(0x401010))
        );
    }

    #[test]
    fn a_real_layout_is_kept_and_nonsense_refused() {
        let real = info(vec![
            load(0, 0x5e0, 0, 0x5e0),
            load(0x5e0, 0x100, 0x15e0, 0x100),
        ]);
        let kept = info(real.loads.clone()).with_inferred_offsets().unwrap();
        assert_eq!(kept.loads, real.loads);
        assert!(info(vec![]).with_inferred_offsets().is_none());
        let huge = info(vec![load(0, 0, 0, u64::MAX), load(0, 0, 0x1000, 1)]);
        assert!(huge.with_inferred_offsets().is_none());
    }
}
