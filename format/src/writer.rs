//! The streaming writer.

use std::collections::BTreeMap;
use std::io::Write;

use crate::chunk::*;
use crate::codec::{encode_header, encode_record, event_kind_code};
use crate::events::EventEncoder;
use crate::footer::{encode_footer, EventCount, Footer, SectionStats, Sections};
use crate::types::{Event, EventKind, Header, ProbeId, Record};
use crate::FormatError;

/// Tuning of a [`Writer`]. The defaults suit recordings; tests use tiny chunks.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// An event chunk is flushed once it holds this many events.
    pub chunk_events: u32,
    /// A chunk is flushed once its uncompressed payload reaches about this many bytes (this
    /// bounds the writer's memory).
    pub chunk_bytes: usize,
    /// zstd level. Level 1 already finds nearly all the redundancy the columnar layout
    /// exposes, at several hundred MB/s.
    pub zstd_level: i32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            chunk_events: 65536,
            chunk_bytes: 1 << 20,
            zstd_level: 1,
        }
    }
}

/// Writes a recording: `new` writes the header, `write` / `write_event` add records, `finish`
/// writes the footer. A writer dropped without `finish` leaves a file that reads as truncated
/// after its last flushed chunk.
///
/// Records are buffered in two streams, metadata and events, each flushed as chunks. Before an
/// event chunk is written, the pending metadata chunk is, so every probe, stack, process and
/// mapping is in the file before the first event that may refer to it. Probe and stack records
/// may therefore land ahead of events written before them (they are definitions, referred to
/// by id); every other record keeps its exact place relative to events (the writer flushes the
/// pending events first), so process and mapping changes read back in the order written.
pub struct Writer<W: Write> {
    out: W,
    opts: WriterOptions,
    pos: u64,
    meta: Vec<u8>,
    meta_count: u32,
    body: Vec<u8>,
    events: EventEncoder,
    raw: Vec<u8>,
    packed: Vec<u8>,
    compressor: zstd::bulk::Compressor<'static>,
    sections: Sections,
    /// Events per probe, entry and return, for the footer (a vector: probe ids are small).
    counts: Vec<[u64; 2]>,
    big_counts: BTreeMap<(ProbeId, u8), u64>,
}

impl<W: Write> std::fmt::Debug for Writer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("bytes_written", &self.pos)
            .finish_non_exhaustive()
    }
}

const SMALL_PROBE_IDS: u32 = 1 << 16;

impl<W: Write> Writer<W> {
    /// Starts a recording on `out` with default options.
    pub fn new(out: W, header: &Header) -> Result<Self, FormatError> {
        Self::with_options(out, header, WriterOptions::default())
    }

    /// Starts a recording on `out`.
    pub fn with_options(out: W, header: &Header, opts: WriterOptions) -> Result<Self, FormatError> {
        let mut w = Writer {
            out,
            compressor: zstd::bulk::Compressor::new(opts.zstd_level)?,
            opts,
            pos: 0,
            meta: Vec::new(),
            meta_count: 0,
            body: Vec::new(),
            events: EventEncoder::default(),
            raw: Vec::new(),
            packed: Vec::new(),
            sections: Sections::default(),
            counts: Vec::new(),
            big_counts: BTreeMap::new(),
        };
        let mut prefix = [0u8; PREFIX_LEN];
        prefix[0..8].copy_from_slice(&MAGIC);
        prefix[8..10].copy_from_slice(&crate::VERSION_MAJOR.to_le_bytes());
        prefix[10..12].copy_from_slice(&crate::VERSION_MINOR.to_le_bytes());
        w.out.write_all(&prefix)?;
        w.pos += PREFIX_LEN as u64;
        let mut payload = Vec::new();
        encode_header(&mut payload, header);
        check_len(payload.len())?;
        let frame = frame(KIND_HEADER, CODEC_NONE, payload.len() as u32, 1, &payload);
        w.out.write_all(&frame)?;
        w.out.write_all(&payload)?;
        let stored = (FRAME_LEN + payload.len()) as u64;
        w.pos += stored;
        w.sections.header = SectionStats {
            chunks: 1,
            stored_bytes: PREFIX_LEN as u64 + stored,
            raw_bytes: payload.len() as u64,
            records: 1,
        };
        Ok(w)
    }

    /// Adds a record.
    pub fn write(&mut self, record: &Record) -> Result<(), FormatError> {
        match record {
            Record::Event(e) => return self.write_event(e),
            Record::Probe(_) | Record::Stack(_) | Record::PyCode(_) => {}
            // Keep these in place relative to the events written before them; with no event
            // pending they simply join the metadata chunk being filled.
            _ if self.events.len() > 0 => self.flush_events()?,
            _ => {}
        }
        encode_record(&mut self.meta, &mut self.body, record);
        self.meta_count += 1;
        if self.meta.len() >= self.opts.chunk_bytes {
            self.flush_meta()?;
        }
        Ok(())
    }

    /// Adds an event (the same as `write(&Record::Event(..))`, without building a `Record`).
    #[inline]
    pub fn write_event(&mut self, event: &Event) -> Result<(), FormatError> {
        self.events.push(event);
        let k = usize::from(event.kind == EventKind::Return);
        if event.probe < SMALL_PROBE_IDS {
            let p = event.probe as usize;
            if p >= self.counts.len() {
                self.counts.resize(p + 1, [0; 2]);
            }
            self.counts[p][k] += 1;
        } else {
            *self
                .big_counts
                .entry((event.probe, event_kind_code(event.kind)))
                .or_default() += 1;
        }
        if self.events.len() >= self.opts.chunk_events
            || self.events.raw_len() >= self.opts.chunk_bytes
            || self.events.threads() >= crate::limits::MAX_CHUNK_THREADS
        {
            self.flush_events()?;
        }
        Ok(())
    }

    /// Writes out everything buffered as complete chunks and flushes `out`, so that a reader
    /// (or a crash) sees every record written so far. Call it now and then in a long recording;
    /// each call ends the current chunks early, which costs a little compression.
    pub fn flush(&mut self) -> Result<(), FormatError> {
        self.flush_events()?;
        self.out.flush()?;
        Ok(())
    }

    /// Bytes written to `out` so far (buffered records not included).
    pub fn bytes_written(&self) -> u64 {
        self.pos
    }

    /// Writes the buffered records, the footer and the trailer; returns `out`, flushed.
    pub fn finish(mut self) -> Result<W, FormatError> {
        self.flush_events()?;
        let mut event_counts = Vec::new();
        for (probe, c) in self.counts.iter().enumerate() {
            for (k, kind) in [EventKind::Entry, EventKind::Return]
                .into_iter()
                .enumerate()
            {
                if c[k] > 0 {
                    event_counts.push(EventCount {
                        probe: probe as ProbeId,
                        kind,
                        count: c[k],
                    });
                }
            }
        }
        for (&(probe, k), &count) in &self.big_counts {
            let kind = if k == 0 {
                EventKind::Entry
            } else {
                EventKind::Return
            };
            event_counts.push(EventCount { probe, kind, count });
        }
        let footer = Footer {
            sections: self.sections.clone(),
            event_counts,
        };
        let mut payload = Vec::new();
        encode_footer(&mut payload, &footer);
        check_len(payload.len())?;
        let offset = self.pos;
        let frame = frame(KIND_FOOTER, CODEC_NONE, payload.len() as u32, 1, &payload);
        self.out.write_all(&frame)?;
        self.out.write_all(&payload)?;
        self.out.write_all(&trailer(offset))?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn flush_events(&mut self) -> Result<(), FormatError> {
        self.flush_meta()?;
        if self.events.len() == 0 {
            return Ok(());
        }
        let mut raw = std::mem::take(&mut self.raw);
        raw.clear();
        let n = self.events.take(&mut raw);
        let result = self.write_chunk(KIND_EVENTS, n, &raw);
        self.raw = raw;
        result
    }

    fn flush_meta(&mut self) -> Result<(), FormatError> {
        if self.meta_count == 0 {
            return Ok(());
        }
        let meta = std::mem::take(&mut self.meta);
        let result = self.write_chunk(KIND_META, self.meta_count, &meta);
        self.meta = meta;
        self.meta.clear();
        self.meta_count = 0;
        result
    }

    fn write_chunk(&mut self, kind: u8, count: u32, raw: &[u8]) -> Result<(), FormatError> {
        check_len(raw.len())?;
        self.packed.clear();
        self.packed
            .reserve(zstd::zstd_safe::compress_bound(raw.len()));
        self.compressor.compress_to_buffer(raw, &mut self.packed)?;
        // Store incompressible payloads as they are.
        let (codec, payload) = if self.packed.len() < raw.len() {
            (CODEC_ZSTD, &self.packed[..])
        } else {
            (CODEC_NONE, raw)
        };
        let frame = frame(kind, codec, raw.len() as u32, count, payload);
        self.out.write_all(&frame)?;
        self.out.write_all(payload)?;
        let stored = FRAME_LEN + payload.len();
        self.pos += stored as u64;
        let s = if kind == KIND_EVENTS {
            &mut self.sections.events
        } else {
            &mut self.sections.metadata
        };
        s.add(stored, raw.len() as u32, count);
        Ok(())
    }
}

fn check_len(len: usize) -> Result<(), FormatError> {
    if len > MAX_CHUNK_LEN as usize {
        return Err(FormatError::InvalidRecord(format!(
            "a chunk of {len} bytes exceeds the format's limit of {MAX_CHUNK_LEN} bytes"
        )));
    }
    Ok(())
}
