//! Reading a recording: one place that opens the file, streams its records and turns the
//! reader's end status (truncation, skipped chunks) into warnings, for [`crate::analyze`] and
//! [`crate::output::script::script`] alike.

use std::path::Path;

use urec_format::{Header, Reader, Record};

use crate::symbolize::EmbeddedSymbols;
use crate::Error;

/// Where a recording comes from: a file (memory-mapped), or bytes already in memory (the fuzz
/// target's input), named by `path` in messages.
pub(crate) enum Source<'a> {
    File(&'a Path),
    Bytes(&'a Path, Vec<u8>),
}

impl Source<'_> {
    fn path(&self) -> &Path {
        match self {
            Source::File(p) | Source::Bytes(p, _) => p,
        }
    }
}

/// How the file ended.
pub(crate) struct InputStatus {
    pub(crate) truncated: bool,
    pub(crate) corrupt_chunks: u64,
    pub(crate) warnings: Vec<String>,
}

/// Streams the records of `path` into `each`, after giving the header to `start` to build the
/// state `each` works on. A record the reader cannot decode is a [`Error::Corrupt`]; an error
/// `each` returns (an output that cannot be written) stops the read.
pub(crate) fn read<S>(
    source: Source<'_>,
    start: impl FnOnce(&Header) -> S,
    each: impl FnMut(&mut S, Record) -> Result<(), Error>,
) -> Result<(S, InputStatus), Error> {
    read_with_symbols(source, |h, _| start(h), each)
}

/// What a streaming consumer needs before the records that come late in the file.
#[derive(Default)]
pub(crate) struct Ahead {
    /// The symbols section (it comes last, and `script` names frames before it gets there).
    pub(crate) embedded: EmbeddedSymbols,
    /// When the probes were attached (the finish record, also at the end): the origin of
    /// `--time` and `--reltime`. Without a finish record, the header's start time, if any.
    pub(crate) attach_ns: Option<u64>,
}

/// What to read ahead, in a metadata pass before the records: only what is asked for, and only
/// when the footer says the file has it.
#[derive(Clone, Copy, Default)]
pub(crate) struct ReadAhead {
    pub(crate) symbols: bool,
    pub(crate) attach: bool,
}

/// [`read`], giving `start` the file's symbols section as well (see [`Ahead`]).
pub(crate) fn read_with_symbols<S>(
    source: Source<'_>,
    start: impl FnOnce(&Header, EmbeddedSymbols) -> S,
    each: impl FnMut(&mut S, Record) -> Result<(), Error>,
) -> Result<(S, InputStatus), Error> {
    read_ahead(
        source,
        ReadAhead {
            symbols: true,
            attach: false,
        },
        |h, ahead| start(h, ahead.embedded),
        each,
    )
}

/// [`read`], with what `ahead` asks for read first (see [`Ahead`]).
pub(crate) fn read_ahead<S>(
    source: Source<'_>,
    ahead: ReadAhead,
    start: impl FnOnce(&Header, Ahead) -> S,
    mut each: impl FnMut(&mut S, Record) -> Result<(), Error>,
) -> Result<(S, InputStatus), Error> {
    let path = source.path().to_path_buf();
    let path = path.as_path();
    let opened = match source {
        Source::File(p) => Reader::open(p),
        Source::Bytes(_, bytes) => Reader::from_bytes(bytes),
    };
    let mut reader = opened.map_err(|source| Error::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut got = Ahead::default();
    let symbols = ahead.symbols
        && reader
            .footer()
            .is_some_and(|f| f.sections.symbols.records > 0);
    let attach = ahead.attach && reader.footer().is_some();
    if symbols || attach {
        for record in reader.metadata().flatten() {
            if symbols {
                got.embedded.allow_for(&record);
            }
            match record {
                Record::Symbols(s) if symbols => got.embedded.push(s),
                Record::Finish(f) if attach => got.attach_ns = Some(f.attach_ns),
                _ => {}
            }
        }
    }
    if ahead.attach && got.attach_ns.is_none() {
        let start = reader.header().start_monotonic_ns;
        got.attach_ns = (start > 0).then_some(start);
    }
    let mut state = start(reader.header(), got);
    for record in reader.records() {
        let record = record.map_err(|source| Error::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
        each(&mut state, record)?;
    }
    let status = reader.status();
    // The reader already says what it met, where (truncation, each damaged chunk); a summary
    // of the same here would only repeat it.
    let warnings = status
        .warnings
        .iter()
        .map(|w| format!("{}: {w}", path.display()))
        .collect();
    Ok((
        state,
        InputStatus {
            truncated: status.truncated,
            corrupt_chunks: status.corrupt_chunks,
            warnings,
        },
    ))
}
