//! The urec data file: the data model shared by the recorder and the report, a streaming
//! [`Writer`] and a streaming [`Reader`].
//!
//! A recording is a sequence of [`Record`]s after a [`Header`]. Records are grouped in chunks,
//! each compressed, length-prefixed and checksummed, so that a file cut anywhere reads back up to
//! its last complete chunk, and a damaged chunk is skipped and counted while the rest of the file
//! stays usable. The byte-level layout is specified in `docs/format.md`.
//!
//! This crate has no Linux-only dependency: the report side reads recordings on any workstation.

#![deny(missing_docs)]

mod types;

pub use types::*;
