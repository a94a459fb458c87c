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

use std::cmp::Ordering;

use crate::types::{Avma, FileOffset, Mapping, Svma};

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

    /// The stated address of a byte of code, through the executable segment that loads it:
    /// the inverse of [`Svma::to_code_offset`] (a file whose segments share file pages may
    /// load the byte twice, as code and as data).
    pub fn to_code_svma(self, loads: &[LoadSegment]) -> Option<Svma> {
        loads
            .iter()
            .find(|l| l.exec && l.has_offset(self))
            .map(|l| Svma(l.vaddr.wrapping_add(self.0 - l.offset)))
    }
}

impl Svma {
    /// The same byte once the part of the image stated at `stated` is known to be at `actual`
    /// instead (a USDT note's `.stapsdt.base` after prelink moved the file).
    #[inline]
    pub fn moved(self, stated: Svma, actual: Svma) -> Svma {
        Svma(self.0.wrapping_add(actual.0.wrapping_sub(stated.0)))
    }

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
    /// The file offset of this address in a mapping that starts at `start` and maps the file
    /// from `offset` (`offset + (avma - start)`), for a caller that knows the mapping covers it
    /// ([`Mapping::file_offset`] checks). Inline and without a check: the report rebases every
    /// frame of every stack through it.
    #[inline]
    pub fn file_offset_in(self, start: Avma, offset: FileOffset) -> FileOffset {
        FileOffset(offset.0.wrapping_add(self.0.wrapping_sub(start.0)))
    }

    /// The stated address of this address in an image loaded with `bias` (actual minus stated
    /// address, as [`Avma::load_bias`] or the dynamic loader's `dli_fbase` give it); `None`
    /// below the bias.
    #[inline]
    pub fn to_svma(self, bias: u64) -> Option<Svma> {
        self.0.checked_sub(bias).map(Svma)
    }

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

impl Mapping {
    /// The file offset of `addr`, when this mapping covers it.
    #[inline]
    pub fn file_offset(&self, addr: Avma) -> Option<FileOffset> {
        (self.start <= addr && addr < self.end)
            .then(|| addr.file_offset_in(self.start, self.offset))
    }
}

/// Stepping through code and measuring it: an address plus a length is an address of the same
/// kind, and two addresses of one kind are a length apart. Lengths stay `u64` (they are not
/// addresses), so arithmetic never mixes kinds; plain (not wrapping) arithmetic, as the `u64`
/// code it replaces had.
macro_rules! address_arithmetic {
    ($($t:ident),*) => {$(
        impl std::ops::Add<u64> for $t {
            type Output = $t;
            #[inline]
            fn add(self, len: u64) -> $t {
                $t(self.0 + len)
            }
        }
        impl std::ops::Sub<u64> for $t {
            type Output = $t;
            #[inline]
            fn sub(self, len: u64) -> $t {
                $t(self.0 - len)
            }
        }
        impl $t {
            /// How far past `base` this is; `None` below it (a site before its function).
            #[inline]
            pub fn distance_from(self, base: $t) -> Option<u64> {
                self.0.checked_sub(base.0)
            }

            /// `len` further on; `None` past the end of the address space (a spec's
            /// `SYMBOL+OFFSET` is user input).
            #[inline]
            pub fn checked_add(self, len: u64) -> Option<$t> {
                self.0.checked_add(len).map($t)
            }

            /// `len` further on, stopping at the end of the address space (a mapping's end
            /// from a record's start and length, which the kernel wrote but urec checks).
            #[inline]
            pub fn saturating_add(self, len: u64) -> $t {
                $t(self.0.saturating_add(len))
            }
        }
        impl std::ops::Sub for $t {
            type Output = u64;
            #[inline]
            fn sub(self, from: $t) -> u64 {
                self.0 - from.0
            }
        }
    )*};
}
address_arithmetic!(Avma, Svma, FileOffset);

/// A code address of a stack, in its file: the instruction pointer itself (the innermost
/// frame, a probe's own address) or a caller's return address. A return address points after
/// its call, and the call may be the last instruction of its function, so it is named by the
/// byte before it ([`FrameAddress::lookup`]); the recorded offset stays what is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameAddress {
    /// The instruction pointer: named as it is.
    Ip(FileOffset),
    /// A caller's return address: named by the byte before it.
    Return(FileOffset),
}

impl FrameAddress {
    /// `Return` when `is_return`, else `Ip`.
    #[inline]
    pub fn new(offset: FileOffset, is_return: bool) -> FrameAddress {
        if is_return {
            FrameAddress::Return(offset)
        } else {
            FrameAddress::Ip(offset)
        }
    }

    /// The frame at `depth` of a stack, innermost (0) first: only the innermost is the
    /// instruction pointer, every other frame is where its callee returns to.
    #[inline]
    pub fn at_depth(offset: FileOffset, depth: usize) -> FrameAddress {
        FrameAddress::new(offset, depth > 0)
    }

    /// The recorded offset.
    #[inline]
    pub fn offset(self) -> FileOffset {
        match self {
            FrameAddress::Ip(o) | FrameAddress::Return(o) => o,
        }
    }

    /// Whether this is a caller's return address.
    #[inline]
    pub fn is_return(self) -> bool {
        matches!(self, FrameAddress::Return(_))
    }

    /// The offset that is named: the recorded one, or for a return address the byte before
    /// (inside the call).
    #[inline]
    pub fn lookup(self) -> FileOffset {
        match self {
            FrameAddress::Ip(o) => o,
            FrameAddress::Return(o) => FileOffset(o.0.saturating_sub(1)),
        }
    }
}

/// By offset, then an instruction pointer before a return address at the same offset.
impl Ord for FrameAddress {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.offset(), self.is_return()).cmp(&(other.offset(), other.is_return()))
    }
}

impl PartialOrd for FrameAddress {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
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
        assert_eq!(FileOffset(0x1136).to_code_svma(&l), Some(Svma(0x401136)));
        assert_eq!(
            FileOffset(0x3e20).to_code_svma(&l),
            None,
            "data is not code"
        );
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
        assert_eq!(
            Avma(0x7f00_0000_1136).to_svma(0x7f00_0000_1000 - 0x401000),
            Some(Svma(0x401136))
        );
        assert_eq!(Avma(0x10).to_svma(0x20), None);
        assert_eq!(Svma(0x1010).moved(Svma(0x1000), Svma(0x3000)), Svma(0x3010));
        // Mapped at 0x7f0000001000 from page offset 0x1000: bias 0x7f0000001000 - 0x401000.
        assert_eq!(
            Avma(0x7f00_0000_1000).load_bias(FileOffset(0x1000), &l),
            Some(0x7f00_0000_1000 - 0x401000)
        );
    }

    #[test]
    fn mappings_and_frames() {
        let m = Mapping {
            pid: 1,
            time_ns: 0,
            start: Avma(0x7000),
            end: Avma(0x9000),
            offset: FileOffset(0x1000),
            path: "/bin/x".into(),
            dev: 0,
            inode: 0,
            build_id: None,
        };
        assert_eq!(m.file_offset(Avma(0x7010)), Some(FileOffset(0x1010)));
        assert_eq!(m.file_offset(Avma(0x9000)), None);
        assert_eq!(m.file_offset(Avma(0x6fff)), None);
        assert_eq!(
            FrameAddress::at_depth(FileOffset(0x10), 0).lookup(),
            FileOffset(0x10)
        );
        assert_eq!(
            FrameAddress::at_depth(FileOffset(0x10), 1).lookup(),
            FileOffset(0xf)
        );
        assert_eq!(FrameAddress::Return(FileOffset(0)).lookup(), FileOffset(0));
        assert!(FrameAddress::Ip(FileOffset(2)) < FrameAddress::Return(FileOffset(2)));
        assert!(FrameAddress::Return(FileOffset(1)) < FrameAddress::Ip(FileOffset(2)));
    }
}
