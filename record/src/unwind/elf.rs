//! Reading what the unwinder needs from an ELF file: the CFI sections, the addresses framehop
//! resolves CFI pointer encodings against, and the `PT_LOAD` table that turns a mapping into a
//! load bias.
//!
//! The file is never mapped: it belongs to a traced process, which may truncate it while we
//! read, and a read of a mapping past the new end is `SIGBUS` — the recorder's death, its data
//! file left without a footer. It is read as a [`urec_elf::ElfImage`] instead (`pread`: a
//! truncation is a short read, hence an error), and the sections are copied into
//! reference-counted buffers. The copies are small — `.eh_frame` + `.eh_frame_hdr` of libc are
//! ≈180 KiB — and `.text` is never read, because framehop only analyses instructions for
//! Mach-O; on ELF it needs the `.text` *address* only.

use std::fs::File;
use std::ops::Range;
use std::sync::Arc;

use urec_elf::ElfImage;
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
    /// Stated ranges of its signal trampolines, found at the first mapping that asks.
    signal_trampolines: std::sync::OnceLock<Vec<Range<u64>>>,
}

impl ElfUnwindInfo {
    /// Parses `file` (opened by the caller, which chose the right path for the process).
    pub(crate) fn read(file: &File) -> Result<Self, String> {
        let file = file.try_clone().map_err(|e| e.to_string())?;
        let image = ElfImage::read(file).map_err(|e| match e {
            urec_elf::ElfError::NotElf(e) => format!("not an ELF file: {e}"),
            urec_elf::ElfError::Io(e) => e.to_string(),
        })?;
        if image.architecture() != urec_elf::Architecture::X86_64 {
            return Err(format!(
                "unsupported architecture {:?}",
                image.architecture()
            ));
        }
        let range = |name: &str| image.section(name).map(|s| s.svma_range());
        // Compressed sections (`SHF_COMPRESSED`, seen on `.debug_frame` only) would need
        // inflating; such sections are skipped rather than misparsed.
        let data = |name: &str| -> Option<Bytes> {
            let bytes = image.section_bytes(image.section(name)?)?;
            (!bytes.is_empty()).then(|| Arc::from(bytes))
        };
        Ok(ElfUnwindInfo {
            build_id: image.build_id().map(<[u8]>::to_vec),
            loads: image.loads().to_vec(),
            text_svma: range(".text"),
            got_svma: range(".got"),
            eh_frame_svma: range(".eh_frame"),
            eh_frame: data(".eh_frame"),
            eh_frame_hdr_svma: range(".eh_frame_hdr"),
            eh_frame_hdr: data(".eh_frame_hdr"),
            debug_frame: data(".debug_frame"),
            signal_trampolines: std::sync::OnceLock::new(),
        })
    }

    /// The CFI sections as the unwind-table crate reads them.
    pub(crate) fn sections(&self) -> urec_unwind_table::Sections<'_> {
        urec_unwind_table::Sections {
            eh_frame: self.eh_frame.as_deref(),
            eh_frame_svma: self.eh_frame_svma.as_ref().map_or(0, |r| r.start),
            eh_frame_hdr_svma: self.eh_frame_hdr_svma.as_ref().map_or(0, |r| r.start),
            debug_frame: self.debug_frame.as_deref(),
            text_svma: self.text_svma.as_ref().map_or(0, |r| r.start),
            got_svma: self.got_svma.as_ref().map_or(0, |r| r.start),
        }
    }

    /// Stated ranges of the file's signal trampolines (`__restore_rt`), which framehop cannot
    /// step through: the unwinder steps them itself (see `Unwinder::unwind_with_holes`).
    pub(crate) fn signal_trampolines(&self) -> &[Range<u64>] {
        self.signal_trampolines
            .get_or_init(|| urec_unwind_table::signal_trampolines(&self.sections()))
    }

    /// Whether there is any CFI at all (without it framehop can only walk frame pointers).
    pub(crate) fn has_cfi(&self) -> bool {
        self.eh_frame.is_some() || self.debug_frame.is_some()
    }

    /// The load bias (actual minus stated address) of a mapping of this file that starts at
    /// `start` and maps file offset `offset` (see [`Avma::load_bias`]).
    pub(crate) fn load_bias(&self, start: Avma, offset: FileOffset) -> Option<u64> {
        start.load_bias(offset, &self.loads)
    }
}
