//! Reading what the unwinder needs from an ELF file: the CFI sections, the addresses framehop
//! resolves CFI pointer encodings against, and the `PT_LOAD` table that turns a mapping into a
//! load bias.
//!
//! The file is never mapped: it belongs to a traced process, which may truncate it while we
//! read, and a read of a mapping past the new end is `SIGBUS` — the recorder's death, its data
//! file left without a footer. `object` parses it through a [`ReadCache`] instead (`read`
//! calls: a truncation is a short read, hence an error), and the sections are copied into
//! reference-counted buffers. The copies are small — `.eh_frame` + `.eh_frame_hdr` of libc are
//! ≈180 KiB — and `.text` is never read, because framehop only analyses instructions for
//! Mach-O; on ELF it needs the `.text` *address* only.

use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use object::{Object, ObjectSection, ObjectSegment, ReadCache, SegmentFlags};
use urec_format::{Avma, FileOffset, LoadSegment};

/// Section bytes as framehop's modules hold them: shared between every mapping of the file,
/// in every process.
pub(crate) type Bytes = Arc<[u8]>;

/// The unwind-relevant contents of one ELF file, parsed once and shared.
pub(crate) struct ElfUnwindInfo {
    pub(crate) build_id: Option<Vec<u8>>,
    /// `PT_LOAD` segments.
    loads: Vec<LoadSegment>,
    pub(crate) text_svma: Option<Range<u64>>,
    pub(crate) got_svma: Option<Range<u64>>,
    pub(crate) eh_frame_svma: Option<Range<u64>>,
    pub(crate) eh_frame: Option<Bytes>,
    pub(crate) eh_frame_hdr_svma: Option<Range<u64>>,
    pub(crate) eh_frame_hdr: Option<Bytes>,
    pub(crate) debug_frame: Option<Bytes>,
}

const PF_X: u32 = 1;

impl ElfUnwindInfo {
    /// Parses `file` (opened by the caller, which chose the right path for the process).
    pub(crate) fn read(file: &File) -> Result<Self, String> {
        let cache = ReadCache::new(file);
        let elf = object::File::parse(&cache).map_err(|e| format!("not an ELF file: {e}"))?;
        if elf.architecture() != object::Architecture::X86_64 {
            return Err(format!("unsupported architecture {:?}", elf.architecture()));
        }
        let build_id = elf.build_id().ok().flatten().map(<[u8]>::to_vec);
        let loads = elf
            .segments()
            .map(|seg| {
                let (offset, filesz) = seg.file_range();
                let exec = matches!(seg.flags(), SegmentFlags::Elf { p_flags, .. } if p_flags.0 & PF_X != 0);
                LoadSegment {
                    offset,
                    file_size: filesz,
                    vaddr: seg.address(),
                    mem_size: seg.size(),
                    align: seg.align(),
                    exec,
                }
            })
            .collect();
        let range = |name: &str| {
            elf.section_by_name(name)
                .map(|s| s.address()..s.address().saturating_add(s.size()))
        };
        // Compressed sections (`SHF_COMPRESSED`, seen on `.debug_frame` only) would need the
        // `compression` feature of `object`; without it `data()` returns the compressed bytes,
        // so such sections are skipped rather than misparsed.
        let data = |name: &str| -> Option<Bytes> {
            let section = elf.section_by_name(name)?;
            let range = section.compressed_file_range().ok()?;
            if range.format != object::CompressionFormat::None {
                return None;
            }
            let bytes = section.data().ok()?;
            (!bytes.is_empty()).then(|| Arc::from(bytes))
        };
        Ok(ElfUnwindInfo {
            build_id,
            loads,
            text_svma: range(".text"),
            got_svma: range(".got"),
            eh_frame_svma: range(".eh_frame"),
            eh_frame: data(".eh_frame"),
            eh_frame_hdr_svma: range(".eh_frame_hdr"),
            eh_frame_hdr: data(".eh_frame_hdr"),
            debug_frame: data(".debug_frame"),
        })
    }

    /// Whether there is any CFI at all (without it framehop can only walk frame pointers).
    pub(crate) fn has_cfi(&self) -> bool {
        self.eh_frame.is_some() || self.debug_frame.is_some()
    }

    /// The load bias (actual minus stated address) of a mapping of this file that starts at
    /// `start` and maps file offset `offset` (see [`Avma::load_bias`]).
    pub(crate) fn load_bias(&self, start: u64, offset: u64) -> Option<u64> {
        Avma(start).load_bias(FileOffset(offset), &self.loads)
    }
}
