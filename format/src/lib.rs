//! The urec data file: the data model shared by the recorder and the report, a streaming
//! [`Writer`] and a streaming [`Reader`].
//!
//! A recording is a [`Header`] followed by [`Record`]s. Records are grouped in chunks, each
//! zstd-compressed, length-prefixed and checksummed, so that a file cut anywhere reads back up
//! to its last complete chunk, and a damaged chunk is skipped and counted while the rest of the
//! file stays usable. The byte-level layout is specified in `docs/format.md`.
//!
//! Design decisions, and why:
//! - **Two chunk streams.** Metadata (probes, processes, mappings, stacks) and events go into
//!   separate chunks, and pending metadata is always flushed before an event chunk. Every chunk
//!   decodes on its own (delta bases and dictionaries restart per chunk), so losing an event
//!   chunk loses only its events, never the stacks or mappings later events need.
//! - **Columnar events.** An event chunk stores each field as its own varint stream, then zstd
//!   at a low level compresses it: a few bytes per event at hundreds of MB/s (numbers in
//!   `docs/performance.md`).
//! - **Damage is counted, not fatal.** Only what makes the file unreadable as a whole (foreign
//!   file, newer major version, damaged header) is a [`FormatError`]; everything else shows in
//!   [`ReadStatus`].
//! - **Forward compatible within a major version.** Readers skip chunk kinds, record types,
//!   event columns and trailing record fields they do not know, so a minor version can add
//!   them.
//!
//! This crate has no Linux-only dependency: the report side reads recordings on any workstation.

#![deny(missing_docs)]

pub mod address;
mod chunk;
mod codec;
mod error;
mod events;
mod footer;
pub mod hash;
pub mod hostile;
pub mod limits;
pub mod log_linear;
mod printable;
mod reader;
mod symbols;
pub mod synth;
mod types;
mod words;
mod writer;

pub use address::{FrameAddress, LoadSegment};
pub use error::FormatError;
pub use footer::{EventCount, Footer, SectionStats, Sections};
pub use printable::{printable, Printable};
pub use reader::{is_recording, ReadStatus, Reader, Records};
pub use symbols::append_symbols;
pub use types::*;
pub use words::{name_list, plural, shell_word, shell_words};
pub use writer::{Writer, WriterOptions};

/// Major version of the format this crate writes. 2 stores the time and latency columns of
/// event chunks differently (the split layout, docs/format.md), which a 1.x reader would
/// misread: a new major, so that it refuses the file instead.
pub const VERSION_MAJOR: u16 = 2;
/// Minor version this crate writes. Minor versions only add what older readers can skip.
pub const VERSION_MINOR: u16 = 4;
/// The oldest major version this crate reads: 1.x files read completely (their event chunks
/// have the varint layout).
pub const OLDEST_MAJOR: u16 = 1;
