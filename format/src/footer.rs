//! The footer: an index written last, so that `urec info` can describe a recording without
//! decompressing its events. It only summarizes what the chunks already say; a file without
//! one (a recorder that was killed) loses nothing but this shortcut.

use crate::codec::{event_kind_code, put_u64, Cursor, Malformed, Res};
use crate::limits::MAX_FOOTER_COUNTS;
use crate::types::{EventKind, ProbeId};

/// Size and content of one section (all chunks of one kind).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SectionStats {
    /// Number of chunks.
    pub chunks: u64,
    /// Bytes in the file, chunk frames included (for the header: the file prefix too).
    pub stored_bytes: u64,
    /// Bytes after decompression.
    pub raw_bytes: u64,
    /// Records (for the events section: events).
    pub records: u64,
}

impl SectionStats {
    pub(crate) fn add(&mut self, stored: usize, raw: u32, records: u32) {
        self.chunks += 1;
        self.stored_bytes += stored as u64;
        self.raw_bytes += u64::from(raw);
        self.records += u64::from(records);
    }
}

/// The sections of a recording.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sections {
    /// The file prefix and the header chunk.
    pub header: SectionStats,
    /// Probes, processes, mappings, stacks, lost counts, finish.
    pub metadata: SectionStats,
    /// Events.
    pub events: SectionStats,
    /// The footer chunk and trailer (zero in the footer's own copy).
    pub footer: SectionStats,
    /// The symbols section (zero without one).
    pub symbols: SectionStats,
}

/// How many events of one probe and kind the recording holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventCount {
    /// The probe.
    pub probe: ProbeId,
    /// Entry or return.
    pub kind: EventKind,
    /// Number of events.
    pub count: u64,
}

/// The footer of a cleanly finished recording.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Footer {
    /// Sections as the writer counted them.
    pub sections: Sections,
    /// Events per probe and kind, ordered by probe then kind.
    pub event_counts: Vec<EventCount>,
}

fn put_stats(buf: &mut Vec<u8>, s: &SectionStats) {
    for v in [s.chunks, s.stored_bytes, s.raw_bytes, s.records] {
        put_u64(buf, v);
    }
}

fn stats(c: &mut Cursor<'_>) -> Res<SectionStats> {
    Ok(SectionStats {
        chunks: c.u64()?,
        stored_bytes: c.u64()?,
        raw_bytes: c.u64()?,
        records: c.u64()?,
    })
}

pub(crate) fn encode_footer(buf: &mut Vec<u8>, f: &Footer) {
    put_stats(buf, &f.sections.header);
    put_stats(buf, &f.sections.metadata);
    put_stats(buf, &f.sections.events);
    put_u64(buf, f.event_counts.len() as u64);
    for c in &f.event_counts {
        put_u64(buf, c.probe.into());
        buf.push(event_kind_code(c.kind));
        put_u64(buf, c.count);
    }
    // Since 1.1, at the end where a 1.0 reader ignores it.
    put_stats(buf, &f.sections.symbols);
}

pub(crate) fn decode_footer(c: &mut Cursor<'_>) -> Res<Footer> {
    let sections = Sections {
        header: stats(c)?,
        metadata: stats(c)?,
        events: stats(c)?,
        footer: SectionStats::default(),
        symbols: SectionStats::default(),
    };
    let n = c.len()?;
    if n > MAX_FOOTER_COUNTS {
        return Err(Malformed("the footer counts more probes than it can"));
    }
    let mut event_counts = Vec::with_capacity(n);
    for _ in 0..n {
        event_counts.push(EventCount {
            probe: c.u32()?,
            kind: match c.u8()? {
                0 => EventKind::Entry,
                1 => EventKind::Return,
                _ => return Err(Malformed("unknown event kind")),
            },
            count: c.u64()?,
        });
    }
    let mut sections = sections;
    if !c.is_empty() {
        sections.symbols = stats(c)?;
    }
    Ok(Footer {
        sections,
        event_counts,
    })
}
