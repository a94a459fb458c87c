//! Hard limits a reader applies to what a file may claim, so that a crafted file cannot make
//! `report`, `script` or `info` allocate more than a few times the bytes it really holds
//! (docs/format.md, "Limits"). Each limit is well above what the recorder writes; the
//! recorder's own maximum is named beside it, so the two are kept apart on purpose: a reader
//! that refused a little more than today's recorder writes would turn a deeper `--stack-depth`
//! of a later minor version into damage.

/// Frames kept per stack. The recorder writes at most 130 (`--stack-depth` ≤ 127, plus the
/// probed function and the caller it inserts); a longer stack is cut to this many frames, its
/// innermost ones, and marked truncated, as if the unwind had stopped there: that keeps the
/// call counted and the metadata chunk around it readable, where refusing the record would
/// drop every probe, mapping and stack after it in the chunk.
pub const MAX_STACK_FRAMES: usize = 256;

/// Fetched values per event and argument specs per probe. The recorder fetches at most 8
/// (`UREC_MAX_ARGS`); more is damage (there is no "truncated" for an argument list).
pub const MAX_ARGS: usize = 64;

/// Bytes kept of one string argument. The recorder keeps at most 256 (`UREC_STR_MAX`); a
/// longer string is cut and marked truncated, as a string cut at fetch already is.
pub const MAX_ARG_STRING: usize = 4096;

/// Words in a list of strings (urec's command line, the workload's, a probe's specs). Far
/// above what `execve` lets a command line hold in practice; more is damage.
pub const MAX_STRINGS: usize = 1 << 16;

/// Distinct (pid, tid, cpu) triples in one event chunk. The writer ends a chunk before its
/// dictionary grows past this (with default options a chunk holds at most 65,536 events, so
/// every file urec wrote stays within it); more is damage.
pub const MAX_CHUNK_THREADS: usize = 1 << 16;

/// Entries of the footer's per-probe event counts (two per probe). More makes the footer
/// unusable, which only costs `urec info` a pass over the events.
pub const MAX_FOOTER_COUNTS: usize = 1 << 17;

/// Functions per named address in the symbols section: the function and those inlined into it
/// at that address. Real inline chains are a few deep (a dozen in heavily templated C++); more
/// is damage.
pub const MAX_INLINE_FRAMES: usize = 256;

/// Named addresses in one record of the symbols section. The recorder writes at most 16,384
/// (a binary with more is split over several records); more is damage.
pub const MAX_SYMBOL_ENTRIES: usize = 1 << 16;

/// Frames (functions and those inlined into them) in one record of the symbols section: an
/// average inline depth of 16 over the most addresses the recorder puts in a record. With
/// [`MAX_SYMBOL_ENTRIES`] this keeps one decoded record to a few megabytes whatever its names
/// repeat; more is damage.
pub const MAX_SYMBOL_FRAMES: usize = 1 << 18;

/// Python frames kept per stack. The recorder writes at most 64 (`UREC_PY_MAX_FRAMES`); a
/// longer chain is cut to its innermost frames and marked `python_truncated`, by the same
/// reasoning as [`MAX_STACK_FRAMES`].
pub const MAX_PY_FRAMES: usize = 256;
