//! The three kinds of address urec handles, and the one way to convert between them: through
//! the `PT_LOAD` program header that loads the byte in question.
//!
//! - [`FileOffset`]: a byte of the ELF file. uprobes attach by (inode, file offset); recorded
//!   mappings and symbolized frames are (file, offset) pairs.
//! - [`Svma`]: a virtual address as the file states it (symbol values, DWARF, CFI).
//! - [`Avma`]: an address in a running process.
//!
//! `svma = p_vaddr + (offset - p_offset)` within a segment's file-backed part, and a mapping of
//! the file at `start` from page offset `pgoff` has `avma = start + (offset - pgoff)`. Assuming
//! `svma == offset`, or a fixed base, is what makes other tools attach to the wrong instruction
//! or name the wrong function; probe resolution, the unwinder and the symbolizer all convert
//! here instead of each keeping its own copy.

use crate::types::{Avma, FileOffset, Svma};

/// One `PT_LOAD` program header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadSegment {
    /// `p_offset`.
    pub offset: u64,
    /// `p_filesz`: the bytes loaded from the file (the rest of `mem_size` is zeroed).
    pub file_size: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_memsz`.
    pub mem_size: u64,
    /// `p_align`.
    pub align: u64,
    /// `PF_X`: the segment holds code.
    pub exec: bool,
}

const PAGE: u64 = 4096;

impl LoadSegment {
    /// Whether the segment loads this byte of the file.
    pub fn has_offset(&self, offset: FileOffset) -> bool {
        offset.0 >= self.offset && offset.0 - self.offset < self.file_size
    }

    /// Whether `svma` lies in the part of the segment that comes from the file.
    pub fn has_svma(&self, svma: Svma) -> bool {
        svma.0 >= self.vaddr && svma.0 - self.vaddr < self.file_size.min(self.mem_size)
    }
}

impl FileOffset {
    /// The stated address this byte is loaded at, through the segment that loads it.
    pub fn to_svma(self, loads: &[LoadSegment]) -> Option<Svma> {
        loads
            .iter()
            .find(|l| l.has_offset(self))
            .map(|l| Svma(l.vaddr.wrapping_add(self.0 - l.offset)))
    }
}

impl Svma {
    /// The file offset of the byte at this stated address, in any segment's file-backed part
    /// (data too: a USDT semaphore is found by the kernel by its file offset).
    pub fn to_file_offset(self, loads: &[LoadSegment]) -> Option<FileOffset> {
        loads
            .iter()
            .find(|l| l.has_svma(self))
            .map(|l| FileOffset(self.0 - l.vaddr + l.offset))
    }

    /// The file offset of a byte of code at this stated address: only an executable segment's
    /// file-backed part counts (that is where uprobes and return addresses can be).
    pub fn to_code_offset(self, loads: &[LoadSegment]) -> Option<FileOffset> {
        loads
            .iter()
            .find(|l| l.exec && l.has_svma(self))
            .map(|l| FileOffset(self.0 - l.vaddr + l.offset))
    }
}

impl Avma {
    /// The load bias (actual minus stated address) of a mapping that starts here and maps the
    /// file from `pgoff`, through the segment containing that offset.
    ///
    /// The kernel maps each segment from its page-aligned file offset, so a segment matches
    /// when `pgoff` lies within `[p_offset rounded down to a page, p_offset + p_filesz)`.
    /// Executable segments are preferred: only code mappings are asked about.
    pub fn load_bias(self, pgoff: FileOffset, loads: &[LoadSegment]) -> Option<u64> {
        let contains = |l: &&LoadSegment| {
            pgoff.0 >= l.offset & !(PAGE - 1) && pgoff.0 < l.offset + l.file_size
        };
        let l = loads
            .iter()
            .filter(|l| l.exec)
            .find(contains)
            .or_else(|| loads.iter().find(contains))?;
        // avma(x) = start + (x - pgoff); svma(x) = p_vaddr + (x - p_offset).
        Some(
            self.0
                .wrapping_sub(pgoff.0)
                .wrapping_add(l.offset)
                .wrapping_sub(l.vaddr),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A non-PIE layout where stated addresses and offsets differ (text at 0x401000 from
    /// offset 0x1000), plus a data segment.
    fn loads() -> Vec<LoadSegment> {
        vec![
            LoadSegment {
                offset: 0x1000,
                file_size: 0x2000,
                vaddr: 0x401000,
                mem_size: 0x2000,
                align: 0x1000,
                exec: true,
            },
            LoadSegment {
                offset: 0x3e10,
                file_size: 0x200,
                vaddr: 0x403e10,
                mem_size: 0x400,
                align: 0x1000,
                exec: false,
            },
        ]
    }

    #[test]
    fn conversions_go_through_the_segment() {
        let l = loads();
        assert_eq!(FileOffset(0x1136).to_svma(&l), Some(Svma(0x401136)));
        assert_eq!(Svma(0x401136).to_code_offset(&l), Some(FileOffset(0x1136)));
        assert_eq!(FileOffset(0x3e20).to_svma(&l), Some(Svma(0x403e20)));
        assert_eq!(Svma(0x403e20).to_code_offset(&l), None, "data is not code");
        assert_eq!(Svma(0x403e20).to_file_offset(&l), Some(FileOffset(0x3e20)));
        assert_eq!(
            Svma(0x404100).to_file_offset(&l),
            None,
            ".bss is not in the file"
        );
        assert_eq!(
            FileOffset(0x10).to_svma(&l),
            None,
            "headers are in no segment here"
        );
        // Mapped at 0x7f0000001000 from page offset 0x1000: bias 0x7f0000001000 - 0x401000.
        assert_eq!(
            Avma(0x7f00_0000_1000).load_bias(FileOffset(0x1000), &l),
            Some(0x7f00_0000_1000 - 0x401000)
        );
    }
}
