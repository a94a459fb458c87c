//! The symbols section: names of the code addresses a recording's stacks and probes hold,
//! written after the recording is otherwise complete (docs/format.md, "Symbols section").
//!
//! Appended rather than written with the events because naming needs every stack first, and
//! because the step may be interrupted (a second Ctrl-C, a crash) or skipped (`--no-symbols`):
//! the recording before it stays exactly as it was, footer and trailer included, and a reader
//! that meets an unfinished section only loses names. `urec archive` rewrites the section on
//! a copy of the recording's own bytes.

use std::io::Write;
use std::sync::Arc;

use crate::chunk::{frame, trailer, CODEC_NONE, CODEC_ZSTD, FRAME_LEN, KIND_FOOTER, KIND_SYMBOLS};
use crate::codec::{encode_record, put_build_id, put_str, put_u64, Cursor, Malformed, Res};
use crate::footer::{encode_footer, Footer, SectionStats};
use crate::limits::{MAX_INLINE_FRAMES, MAX_SYMBOL_ENTRIES, MAX_SYMBOL_FRAMES};
use crate::types::{BinarySymbols, Record, SymbolEntry, SymbolFrame};
use crate::FormatError;

/// Raw bytes gathered before a chunk is written: small enough for a reader's buffer, large
/// enough for zstd to find the repeated names.
const CHUNK_RAW: usize = 4 << 20;

/// Entries per record: a binary with more is split over several records.
const ENTRIES_PER_RECORD: usize = 16 << 10;

/// Body of a `Symbols` record: the path and build id, a table of the names and files used,
/// then the entries by increasing offset, each offset stored as the distance from the previous.
pub(crate) fn encode(body: &mut Vec<u8>, s: &BinarySymbols) {
    put_str(body, &s.path);
    put_build_id(body, &s.build_id);
    let mut table: Vec<&str> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for e in &s.entries {
        for f in &e.frames {
            for text in std::iter::once(&*f.function).chain(f.file.as_deref()) {
                index.entry(text).or_insert_with(|| {
                    table.push(text);
                    table.len() as u64 - 1
                });
            }
        }
    }
    put_u64(body, table.len() as u64);
    for text in &table {
        put_str(body, text);
    }
    put_u64(body, s.entries.len() as u64);
    let mut prev = 0u64;
    for e in &s.entries {
        put_u64(body, e.offset.wrapping_sub(prev));
        prev = e.offset;
        put_u64(body, e.frames.len() as u64);
        for f in &e.frames {
            put_u64(body, index[&*f.function]);
            put_u64(body, f.file.as_deref().map_or(0, |t| index[t] + 1));
            put_u64(body, f.line.map_or(0, |l| u64::from(l) + 1));
        }
    }
}

pub(crate) fn decode(c: &mut Cursor<'_>) -> Res<BinarySymbols> {
    let path = c.string()?;
    let build_id = c.build_id()?;
    // The string table is only stepped over here: its strings are made once the frames say
    // which of them are used (a crafted table of millions of empty strings costs one byte
    // each in the file and a heap allocation each in memory).
    let n_strings = c.len()?;
    let table_at = c.pos();
    for _ in 0..n_strings {
        let n = c.len()?;
        c.bytes(n)?;
    }
    // Counts are claims: nothing is reserved for them, and each is held to a limit well
    // above what a writer puts in one record (docs/format.md, "Limits").
    let n = c.len()?;
    if n > MAX_SYMBOL_ENTRIES {
        return Err(Malformed(
            "a symbols record names more addresses than any urec writes in one record",
        ));
    }
    let mut entries: Vec<(u64, usize)> = Vec::new();
    // (function, file + 1 or 0, line + 1 or 0) of every frame, entries' frames in order.
    let mut frames: Vec<(u32, u32, u32)> = Vec::new();
    let mut offset = 0u64;
    let index = |i: u64| -> Res<u32> {
        u32::try_from(i)
            .ok()
            .filter(|&i| (i as usize) < n_strings)
            .ok_or(Malformed(
                "a symbol names a string the record does not hold",
            ))
    };
    for i in 0..n {
        let delta = c.u64()?;
        // Strictly increasing: an address named twice is a repeat that costs a reader time
        // and memory for nothing (the writer names each address once).
        if i > 0 && delta == 0 {
            return Err(Malformed(
                "a symbols record names an address twice or out of order",
            ));
        }
        offset = offset
            .checked_add(delta)
            .ok_or(Malformed("a symbol's offset is out of range"))?;
        let k = c.len()?;
        if k > MAX_INLINE_FRAMES {
            return Err(Malformed(
                "an address has more inlined functions than any urec writes",
            ));
        }
        if frames.len() + k > MAX_SYMBOL_FRAMES {
            return Err(Malformed(
                "a symbols record holds more frames than any urec writes in one record",
            ));
        }
        for _ in 0..k {
            let function = index(c.u64()?)?;
            let file = match c.u64()? {
                0 => 0,
                i => index(i - 1)? + 1,
            };
            let line = match c.u64()? {
                0 => 0,
                l => u32::try_from(l)
                    .ok()
                    .filter(|&l| l < u32::MAX)
                    .ok_or(Malformed("a source line out of range"))?,
            };
            frames.push((function, file, line));
        }
        entries.push((offset, k));
    }
    // The strings that frames use, each made once and shared by every frame naming it.
    let mut used = vec![false; n_strings];
    for &(function, file, _) in &frames {
        used[function as usize] = true;
        if file > 0 {
            used[file as usize - 1] = true;
        }
    }
    let mut strings: Vec<Option<Arc<str>>> = Vec::with_capacity(n_strings);
    let mut t = Cursor::at(c.buf(), table_at);
    for used in used {
        let n = t.len()?;
        let bytes = t.bytes(n)?;
        strings.push(used.then(|| Arc::from(String::from_utf8_lossy(bytes))));
    }
    let name = |i: u32| strings[i as usize].clone().unwrap_or_else(|| Arc::from(""));
    let mut all = frames.into_iter();
    let entries = entries
        .into_iter()
        .map(|(offset, k)| SymbolEntry {
            offset,
            frames: all
                .by_ref()
                .take(k)
                .map(|(function, file, line)| SymbolFrame {
                    function: name(function),
                    file: (file > 0).then(|| name(file - 1)),
                    line: (line > 0).then(|| line - 1),
                })
                .collect(),
        })
        .collect();
    Ok(BinarySymbols {
        path,
        build_id,
        entries,
    })
}

/// Appends a symbols section to a complete recording: `out` is positioned at `base_len`, the
/// end of the recording's trailer, and `footer` is the recording's footer. Writes the section's
/// chunks, then a copy of the footer that also counts them and a trailer pointing at it.
/// Returns the section's size.
pub fn append_symbols<W: Write>(
    out: &mut W,
    base_len: u64,
    footer: &Footer,
    symbols: &[BinarySymbols],
) -> Result<SectionStats, FormatError> {
    let mut compressor = zstd::bulk::Compressor::new(3)?;
    let mut stats = SectionStats::default();
    let mut pos = base_len;
    let mut raw = Vec::new();
    let mut body = Vec::new();
    let mut count = 0u32;
    let mut flush =
        |raw: &mut Vec<u8>, count: &mut u32, stats: &mut SectionStats, pos: &mut u64| {
            if *count == 0 {
                return Ok::<(), FormatError>(());
            }
            let packed = compressor.compress(raw)?;
            let (codec, payload) = if packed.len() < raw.len() {
                (CODEC_ZSTD, &packed[..])
            } else {
                (CODEC_NONE, &raw[..])
            };
            out.write_all(&frame(
                KIND_SYMBOLS,
                codec,
                raw.len() as u32,
                *count,
                payload,
            ))?;
            out.write_all(payload)?;
            let stored = FRAME_LEN + payload.len();
            stats.add(stored, raw.len() as u32, *count);
            *pos += stored as u64;
            raw.clear();
            *count = 0;
            Ok(())
        };
    for binary in symbols {
        for part in binary.entries.chunks(ENTRIES_PER_RECORD) {
            let record = Record::Symbols(BinarySymbols {
                path: binary.path.clone(),
                build_id: binary.build_id.clone(),
                entries: part.to_vec(),
            });
            encode_record(&mut raw, &mut body, &record);
            count += 1;
            if raw.len() >= CHUNK_RAW {
                flush(&mut raw, &mut count, &mut stats, &mut pos)?;
            }
        }
    }
    flush(&mut raw, &mut count, &mut stats, &mut pos)?;
    let mut footer = footer.clone();
    footer.sections.symbols = stats;
    let mut payload = Vec::new();
    encode_footer(&mut payload, &footer);
    out.write_all(&frame(
        KIND_FOOTER,
        CODEC_NONE,
        payload.len() as u32,
        1,
        &payload,
    ))?;
    out.write_all(&payload)?;
    out.write_all(&trailer(pos))?;
    out.flush()?;
    Ok(stats)
}
