//! Errors of the format crate.
//!
//! Only what stops a file from being read at all is an error: a missing, empty or foreign file,
//! an unsupported version, a damaged header. Damage further in (a corrupt or cut chunk) is not an
//! error: the reader skips it, counts it and carries on, and [`crate::ReadStatus`] says what was
//! lost. Messages are complete sentences naming what was found, so the binary can print them
//! as they are.

use std::io;

/// Why a recording could not be written or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// Reading or writing the underlying file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The file has no bytes at all (a recorder that died before writing anything).
    #[error("the file is empty (0 bytes), not a urec data file")]
    Empty,
    /// The file does not start with the urec magic; `found` says what it looks like instead.
    #[error("not a urec data file: {found}")]
    NotUrec {
        /// What the file looks like (`an ELF file`, `a perf.data file (PERFILE2)`, ...).
        found: String,
    },
    /// The file is a urec data file of a major version this reader does not know.
    #[error(
        "urec data file version {major}.{minor} is not supported by this urec (it reads versions \
         {oldest}.x to {supported}.x){hint}",
        oldest = crate::OLDEST_MAJOR,
        supported = crate::VERSION_MAJOR,
        hint = if *major > crate::VERSION_MAJOR { "; a newer urec wrote it" } else { "" }
    )]
    UnsupportedVersion {
        /// Major version found in the file.
        major: u16,
        /// Minor version found in the file.
        minor: u16,
    },
    /// The file header (magic, version, recording header) is cut short or damaged, so nothing
    /// after it can be trusted.
    #[error("damaged urec data file header: {0}")]
    BadHeader(String),
    /// A record handed to the writer cannot be stored (e.g. a string over 16 MiB).
    #[error("cannot write record: {0}")]
    InvalidRecord(String),
}
