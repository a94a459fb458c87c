//! The streaming reader.

use std::path::Path;

use crate::chunk::*;
use crate::codec::{decode_header, decode_record, Cursor, Malformed};
use crate::events::EventDecoder;
use crate::footer::{decode_footer, Footer, SectionStats, Sections};
use crate::types::{Header, Record};
use crate::FormatError;

/// At most this many warnings are kept; a badly damaged file would otherwise grow the list
/// without bound.
const MAX_WARNINGS: usize = 100;

/// What a pass over the records found besides the records: damage and sizes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadStatus {
    /// The file ends before its footer (the recorder was killed, the disk filled up): the
    /// records up to the last complete chunk were read.
    pub truncated: bool,
    /// Damaged chunks that were skipped.
    pub corrupt_chunks: u64,
    /// What was skipped and why, one sentence each (at most 100, then a final count).
    pub warnings: Vec<String>,
    /// Sizes of the sections, measured over the chunks read (damaged ones not included).
    pub sections: Sections,
}

impl ReadStatus {
    fn warn(&mut self, msg: String) {
        match self.warnings.len() {
            n if n < MAX_WARNINGS => self.warnings.push(msg),
            n if n == MAX_WARNINGS => self.warnings.push("further warnings omitted".into()),
            _ => {}
        }
    }
}

enum Data {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Data {
    fn bytes(&self) -> &[u8] {
        match self {
            Data::Map(m) => m,
            Data::Owned(v) => v,
        }
    }
}

/// Reads a recording. `open` checks the file prefix and the header; [`Reader::records`] then
/// streams the records chunk by chunk, so memory stays bounded by one chunk whatever the size
/// of the file.
///
/// Damage after the header is never an error: damaged chunks are skipped and counted, a cut
/// file reads up to its last complete chunk, and [`Reader::status`] says so after the pass.
pub struct Reader {
    data: Data,
    header: Header,
    footer: Option<Footer>,
    header_stats: SectionStats,
    body: usize,
    version: (u16, u16),
    status: ReadStatus,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("len", &self.data.bytes().len())
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Opens the recording at `path` (memory-mapped).
    ///
    /// The file must not shrink while it is read (as with any memory-mapped file, a shrinking
    /// file would fault); a file that is still growing is fine and reads as truncated. Only a
    /// regular file is opened, and the open never blocks: `urec report FIFO` is an error, not
    /// a hang.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, FormatError> {
        let file = urec_untrusted::open(path.as_ref())?;
        if file.metadata()?.len() == 0 {
            return Err(FormatError::Empty);
        }
        // SAFETY: the map is only read; the documented requirement is that the file is not
        // truncated meanwhile (urec never truncates a recording it is writing).
        let map = unsafe { memmap2::Mmap::map(&file)? };
        Self::new(Data::Map(map))
    }

    /// Reads a recording held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, FormatError> {
        Self::new(Data::Owned(bytes))
    }

    fn new(data: Data) -> Result<Self, FormatError> {
        let bytes = data.bytes();
        let (major, minor) = parse_prefix(bytes)?;
        let chunk = match check(bytes, PREFIX_LEN) {
            Check::Ok(c) if c.kind == KIND_HEADER => c,
            Check::Ok(_) => {
                return Err(FormatError::BadHeader(
                    "the first chunk is not the header".into(),
                ))
            }
            Check::Incomplete(_) => {
                return Err(FormatError::BadHeader(format!(
                    "the file ends inside its header ({} bytes in all)",
                    bytes.len()
                )))
            }
            Check::Bad(why) => return Err(FormatError::BadHeader(format!("header chunk: {why}"))),
        };
        let mut buf = Vec::new();
        load(chunk, &mut buf, &mut None)
            .map_err(|m| FormatError::BadHeader(format!("header chunk: {}", m.0)))?;
        let header = decode_header(&mut Cursor::new(&buf))
            .map_err(|m| FormatError::BadHeader(format!("header chunk: {}", m.0)))?;
        let header_stats = SectionStats {
            chunks: 1,
            stored_bytes: (PREFIX_LEN + chunk.stored_len()) as u64,
            raw_bytes: u64::from(chunk.raw_len),
            records: 1,
        };
        let footer = read_footer(bytes);
        let body = PREFIX_LEN + chunk.stored_len();
        Ok(Reader {
            data,
            header,
            footer,
            header_stats,
            body,
            version: (major, minor),
            status: ReadStatus::default(),
        })
    }

    /// The recording's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file's format version, (major, minor).
    pub fn version(&self) -> (u16, u16) {
        self.version
    }

    /// Size of the file in bytes.
    pub fn len(&self) -> u64 {
        self.data.bytes().len() as u64
    }

    /// Always false: an empty file does not open.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The footer of a cleanly finished recording, found through the trailer without reading
    /// the chunks; `None` when the file has none (truncated) or it is damaged.
    pub fn footer(&self) -> Option<&Footer> {
        self.footer.as_ref()
    }

    /// The length of the recording itself when it is complete: up to the end of the trailer
    /// that follows its (first) footer, without any symbols section appended after it.
    /// `None` for a file without a footer (a truncated recording).
    pub fn complete_len(&self) -> Option<u64> {
        let data = self.data.bytes();
        let mut walker = Walker::new(data, self.body);
        while let Some(step) = walker.next_step() {
            match step {
                Step::Chunk(c) if c.kind == KIND_FOOTER => {
                    let end = c.offset + c.stored_len();
                    return parse_trailer_at(data, end).map(|_| (end + TRAILER_LEN) as u64);
                }
                Step::End { .. } => return None,
                _ => {}
            }
        }
        None
    }

    /// Every record after the header, in file order (see [`crate::Writer`] for how that relates
    /// to the order written). Each call starts a new pass and resets [`Reader::status`].
    ///
    /// Damage yields no error item: it is skipped and shows in [`Reader::status`] once the
    /// pass is over. Events without arguments are decoded without allocating.
    pub fn records(&mut self) -> Records<'_> {
        self.pass(true)
    }

    /// Every record except events, whose chunks are checked and counted but not
    /// decompressed: what `urec info` needs, at a fraction of the cost.
    pub fn metadata(&mut self) -> Records<'_> {
        self.pass(false)
    }

    fn pass(&mut self, events: bool) -> Records<'_> {
        self.status = ReadStatus::default();
        self.status.sections.header = self.header_stats;
        Records {
            walker: Walker::new(self.data.bytes(), self.body),
            status: &mut self.status,
            events,
            buf: Vec::new(),
            decompressor: None,
            state: State::Idle,
            decoder: EventDecoder::default(),
            warned_unknown: false,
        }
    }

    /// What the last pass found: truncation, damaged chunks, warnings, section sizes.
    pub fn status(&self) -> &ReadStatus {
        &self.status
    }
}

/// Whether a file that starts with `prefix` is (the beginning of) a urec recording, for the
/// recorder's `-o`: an existing recording may be moved aside as `.old`, any other file never (a
/// mistyped `-o` must not move a program or a document out of the way). Empty counts as not a
/// recording; the caller decides what an empty file may become.
pub fn is_recording(prefix: &[u8]) -> bool {
    prefix.len() >= MAGIC.len() && prefix[..MAGIC.len()] == MAGIC
}

fn parse_prefix(bytes: &[u8]) -> Result<(u16, u16), FormatError> {
    if bytes.is_empty() {
        return Err(FormatError::Empty);
    }
    let n = bytes.len().min(MAGIC.len());
    if bytes[..n] != MAGIC[..n] {
        return Err(FormatError::NotUrec {
            found: describe(bytes),
        });
    }
    if bytes.len() < PREFIX_LEN {
        return Err(FormatError::BadHeader(format!(
            "the file ends inside its header ({} bytes in all)",
            bytes.len()
        )));
    }
    let major = u16::from_le_bytes([bytes[8], bytes[9]]);
    let minor = u16::from_le_bytes([bytes[10], bytes[11]]);
    if !(crate::OLDEST_MAJOR..=crate::VERSION_MAJOR).contains(&major) {
        return Err(FormatError::UnsupportedVersion { major, minor });
    }
    Ok((major, minor))
}

/// Says what a file that is not a recording looks like.
fn describe(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(64)];
    if head.starts_with(b"\x7fELF") {
        return "it is an ELF file (a program or library), not a recording".into();
    }
    if head.starts_with(b"PERFILE2") || head.starts_with(b"PERFFILE") {
        let magic = String::from_utf8_lossy(&head[..8]);
        return format!("it is a perf.data file ({magic}); read it with `perf report`");
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return "it is zstd-compressed data; decompress it first".into();
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return "it is gzip-compressed data; decompress it first".into();
    }
    let text = match std::str::from_utf8(head) {
        Ok(s) => Some(s),
        // A multi-byte character cut at byte 64.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok(),
        Err(_) => None,
    };
    if let Some(text) = text.filter(|t| t.chars().all(|c| !c.is_control() || c.is_whitespace())) {
        let first = text.lines().next().unwrap_or("");
        let shown: String = first.chars().take(40).collect();
        return format!("it looks like text, starting with {shown:?}");
    }
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("it starts with the bytes {}", hex.join(" "))
}

fn read_footer(bytes: &[u8]) -> Option<Footer> {
    let offset = parse_trailer(bytes)?;
    let Check::Ok(chunk) = check(bytes, offset) else {
        return None;
    };
    if chunk.kind != KIND_FOOTER || offset + chunk.stored_len() + TRAILER_LEN != bytes.len() {
        return None;
    }
    let mut buf = Vec::new();
    load(chunk, &mut buf, &mut None).ok()?;
    let mut footer = decode_footer(&mut Cursor::new(&buf)).ok()?;
    footer.sections.footer = SectionStats {
        chunks: 1,
        stored_bytes: (chunk.stored_len() + TRAILER_LEN) as u64,
        raw_bytes: u64::from(chunk.raw_len),
        records: 1,
    };
    Some(footer)
}

/// Puts the decompressed payload of `chunk` in `buf`.
fn load(
    chunk: RawChunk<'_>,
    buf: &mut Vec<u8>,
    decompressor: &mut Option<zstd::bulk::Decompressor<'static>>,
) -> Result<(), Malformed> {
    buf.clear();
    match chunk.codec {
        CODEC_NONE => buf.extend_from_slice(chunk.payload),
        CODEC_ZSTD => {
            if decompressor.is_none() {
                *decompressor = Some(
                    zstd::bulk::Decompressor::new()
                        .map_err(|_| Malformed("cannot set up zstd decompression"))?,
                );
            }
            let Some(d) = decompressor.as_mut() else {
                return Err(Malformed("cannot set up zstd decompression"));
            };
            buf.reserve(chunk.raw_len as usize);
            d.decompress_to_buffer(chunk.payload, buf)
                .map_err(|_| Malformed("zstd data does not decompress"))?;
        }
        _ => return Err(Malformed("unknown compression codec")),
    }
    if buf.len() != chunk.raw_len as usize {
        return Err(Malformed("payload size differs from the chunk header's"));
    }
    Ok(())
}

enum State {
    Idle,
    Meta { chunk: usize, pos: usize, left: u32 },
    Events { chunk: usize },
}

/// The records of a recording, in file order; see [`Reader::records`].
pub struct Records<'a> {
    walker: Walker<'a>,
    status: &'a mut ReadStatus,
    events: bool,
    buf: Vec<u8>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    state: State,
    decoder: EventDecoder,
    warned_unknown: bool,
}

impl std::fmt::Debug for Records<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").finish_non_exhaustive()
    }
}

impl Records<'_> {
    /// What the pass has found so far.
    pub fn status(&self) -> &ReadStatus {
        self.status
    }

    fn corrupt(&mut self, offset: usize, why: &str) {
        self.status.corrupt_chunks += 1;
        self.status.warn(format!(
            "skipped a damaged chunk at byte offset {offset}: {why}"
        ));
        self.state = State::Idle;
    }

    /// Takes the next chunk; false at the end of the file.
    fn next_chunk(&mut self) -> bool {
        let Some(step) = self.walker.next_step() else {
            return false;
        };
        match step {
            Step::Chunk(chunk) => self.start_chunk(chunk),
            Step::Skipped {
                offset,
                len,
                reason,
            } => {
                self.status.corrupt_chunks += 1;
                self.status.warn(format!(
                    "skipped {len} damaged bytes at byte offset {offset}: {reason}"
                ));
            }
            Step::End {
                truncated,
                trailing,
                unfinished,
            } => {
                if let Some(offset) = unfinished {
                    self.status.warn(format!(
                        "the symbols section at byte offset {offset} is unfinished (the step \
                         writing it was interrupted): the recording is complete, some names \
                         are missing"
                    ));
                }
                if let Some((offset, why)) = truncated {
                    self.status.truncated = true;
                    self.status.warn(format!(
                        "the recording is truncated at byte offset {offset} ({why}): \
                         it was read up to its last complete chunk"
                    ));
                }
                if trailing > 0 {
                    self.status.warn(format!(
                        "ignored {trailing} unexpected bytes after the footer"
                    ));
                }
            }
        }
        true
    }

    fn start_chunk(&mut self, chunk: RawChunk<'_>) {
        let (stored, raw, count) = (chunk.stored_len(), chunk.raw_len, chunk.count);
        match chunk.kind {
            KIND_META | KIND_SYMBOLS => {
                if let Err(m) = load(chunk, &mut self.buf, &mut self.decompressor) {
                    return self.corrupt(chunk.offset, m.0);
                }
                let section = if chunk.kind == KIND_META {
                    &mut self.status.sections.metadata
                } else {
                    &mut self.status.sections.symbols
                };
                section.add(stored, raw, count);
                self.state = State::Meta {
                    chunk: chunk.offset,
                    pos: 0,
                    left: count,
                };
            }
            KIND_EVENTS if self.events => {
                if let Err(m) = load(chunk, &mut self.buf, &mut self.decompressor) {
                    return self.corrupt(chunk.offset, m.0);
                }
                if let Err(m) = self.decoder.start(&self.buf, count) {
                    return self.corrupt(chunk.offset, m.0);
                }
                self.status.sections.events.add(stored, raw, count);
                self.state = State::Events {
                    chunk: chunk.offset,
                };
            }
            KIND_EVENTS => self.status.sections.events.add(stored, raw, count),
            KIND_FOOTER => self
                .status
                .sections
                .footer
                .add(stored + TRAILER_LEN, raw, count),
            KIND_HEADER => self.status.warn(format!(
                "ignored a second header chunk at byte offset {}",
                chunk.offset
            )),
            // A chunk kind of a later minor version: skipped by design.
            _ => {}
        }
    }

    fn next_meta(&mut self, chunk: usize, pos: usize, left: u32) -> Option<Record> {
        if left == 0 {
            if pos != self.buf.len() {
                self.corrupt(chunk, "metadata chunk holds more bytes than its records");
            }
            self.state = State::Idle;
            return None;
        }
        let mut c = Cursor::at(&self.buf, pos);
        let parsed = c.u8().and_then(|tag| {
            let n = c.len()?;
            Ok((tag, c.bytes(n)?))
        });
        let (tag, body) = match parsed {
            Ok(x) => x,
            Err(m) => {
                self.corrupt(chunk, m.0);
                return None;
            }
        };
        self.state = State::Meta {
            chunk,
            pos: c.pos(),
            left: left - 1,
        };
        match decode_record(tag, &mut Cursor::new(body)) {
            Ok(Some(r)) => Some(r),
            Ok(None) => {
                if !self.warned_unknown {
                    self.warned_unknown = true;
                    self.status.warn(format!(
                        "skipped records of unknown type {tag} (written by a newer urec?)"
                    ));
                }
                None
            }
            Err(m) => {
                self.corrupt(chunk, m.0);
                None
            }
        }
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Record, FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.state {
                State::Idle => {
                    if !self.next_chunk() {
                        return None;
                    }
                }
                State::Meta { chunk, pos, left } => {
                    if let Some(r) = self.next_meta(chunk, pos, left) {
                        return Some(Ok(r));
                    }
                }
                State::Events { chunk } => match self.decoder.next(&self.buf) {
                    Some(Ok(e)) => return Some(Ok(Record::Event(e))),
                    Some(Err(m)) => self.corrupt(chunk, m.0),
                    None => self.state = State::Idle,
                },
            }
        }
    }
}
