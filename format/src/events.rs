//! The columnar encoding of events inside an event chunk (docs/format.md, "Event chunks").
//!
//! Why columns: events are small and alike, and a general-purpose compressor finds far more
//! repetition in "all timestamps, then all thread indexes, then all stack ids" than in rows
//! that interleave them. Each column is a stream of LEB128 varints:
//! - `tag`: `probe << 4 | flags` (entry/return, has stack, has latency, has args), one byte
//!   for the first eight probes;
//! - `time`: zigzag delta from the previous event of the chunk (the first from the chunk's
//!   base time), so out-of-order timestamps from several CPUs still cost a byte or two;
//! - `ctx`: an index into the chunk's dictionary of (pid, tid, cpu) triples;
//! - `stack`, `latency`, `args`: only for the events whose flags say they have one;
//! - `goroutine` (since 1.4): one per event, in chunks where some event has one.
//! - `weight` (since 2.1, split layout, 10th): one per event, in chunks where some event stands for more than one
//!   call (sampled under ring pressure); such a chunk has the goroutine column too, maybe empty.
//!
//! Since the split layout (9 columns; chunks with 6 or 7 are read as before), `time` and
//! `latency` hold one byte per value, the value's low byte, and two more columns the rest of
//! each value (`>> 8`) as varints; and an event with a latency stores its time less that
//! latency. Why: these two columns are nearly all of a chunk once compressed (the rest
//! repeats), and both are noise in their low bits (a probed call's jitter). A return's delta
//! from its own entry *is* its latency, so storing it again cost a second copy of that noise;
//! and interleaving a noisy low byte with a near-constant high byte, as a varint does, hid
//! the high byte's redundancy from zstd's entropy coder. On `bench/run`'s hammer the two
//! changes took the event section from 1.57 to about 0.9 bytes per event.
//!
//! Delta bases and the dictionary start afresh in every chunk, so each chunk decodes alone.

use crate::codec::{put_bytes, put_u64, unzigzag, zigzag, Cursor, Malformed, Res};
use crate::hash::FxHashMap;
use crate::limits::{MAX_ARGS, MAX_ARG_STRING, MAX_CHUNK_THREADS};
use crate::types::{ArgValue, Event, EventKind};

const COL_TAG: usize = 0;
const COL_TIME: usize = 1;
const COL_CTX: usize = 2;
const COL_STACK: usize = 3;
const COL_LATENCY: usize = 4;
const COL_ARGS: usize = 5;
/// Since 1.4: a varint per event, its goroutine or 0; written only in chunks where some event
/// has one, so recordings of other code pay nothing.
const COL_GOROUTINE: usize = 6;
/// Split layout: the high parts (`>> 8`, varints) of the time and latency values, whose low
/// bytes are then alone in [`COL_TIME`] and [`COL_LATENCY`].
const COL_TIME_HI: usize = 7;
const COL_LATENCY_HI: usize = 8;
/// Since 2.1 (split layout): a varint per event, the calls it stands for (1, or 2^k when the
/// recorder kept one call in 2^k); written only in chunks where some event's is not 1.
const COL_WEIGHT: usize = 9;
/// Columns every chunk has.
const BASE_COLS: usize = 6;
/// Columns of the split layout; a chunk with fewer has the varint layout.
const SPLIT_COLS: usize = 9;
/// Columns this version reads and writes; a reader ignores any further columns (a later
/// minor version).
pub(crate) const NCOLS: usize = 10;

const F_RETURN: u64 = 1;
const F_STACK: u64 = 2;
const F_LATENCY: u64 = 4;
const F_ARGS: u64 = 8;
const FLAG_BITS: u32 = 4;

const ARG_INT: u8 = 0;
const ARG_STR: u8 = 1;
const ARG_STR_TRUNCATED: u8 = 2;
const ARG_FAULT: u8 = 3;

type Ctx = (u32, u32, u32);

/// Accumulates the events of one chunk.
#[derive(Default)]
pub(crate) struct EventEncoder {
    n: u32,
    base_time: u64,
    prev_time: u64,
    ctx: Vec<Ctx>,
    /// The keys come from the kernel; SipHash would cost a noticeable share of write time.
    ctx_map: FxHashMap<Ctx, u32>,
    cols: [Vec<u8>; NCOLS],
    /// Some event of the chunk has a goroutine: the chunk gets its column.
    goroutines: bool,
    /// Some event of the chunk has a weight other than 1: the chunk gets its column.
    weights: bool,
    /// Writes the varint layout of versions before the split one (tests of old files).
    #[cfg(test)]
    legacy: bool,
}

/// Appends `v` in the split layout: its low byte to `lo`, the rest as a varint to `hi`.
#[inline]
fn put_split(lo: &mut Vec<u8>, hi: &mut Vec<u8>, v: u64) {
    lo.push(v as u8);
    put_u64(hi, v >> 8);
}

impl EventEncoder {
    pub(crate) fn len(&self) -> u32 {
        self.n
    }

    /// Bytes the chunk would take before compression (close enough for flushing decisions).
    /// Distinct threads in the chunk so far: the writer ends the chunk at
    /// [`MAX_CHUNK_THREADS`], which readers hold it to.
    pub(crate) fn threads(&self) -> usize {
        self.ctx.len()
    }

    pub(crate) fn raw_len(&self) -> usize {
        self.cols.iter().map(Vec::len).sum::<usize>() + self.ctx.len() * 12
    }

    #[inline]
    pub(crate) fn push(&mut self, e: &Event) {
        if self.n == 0 {
            self.base_time = e.time_ns;
            self.prev_time = e.time_ns;
        }
        let key = (e.pid, e.tid, e.cpu);
        let idx = match self.ctx_map.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.ctx.len() as u32;
                self.ctx.push(key);
                self.ctx_map.insert(key, i);
                i
            }
        };
        let mut tag = u64::from(e.probe) << FLAG_BITS;
        if e.kind == EventKind::Return {
            tag |= F_RETURN;
        }
        if let Some(stack) = e.stack {
            tag |= F_STACK;
            put_u64(&mut self.cols[COL_STACK], stack.into());
        }
        if let Some(latency) = e.latency_ns {
            tag |= F_LATENCY;
            self.put_value(COL_LATENCY, COL_LATENCY_HI, latency);
        }
        if !e.args.is_empty() {
            tag |= F_ARGS;
            let col = &mut self.cols[COL_ARGS];
            put_u64(col, e.args.len() as u64);
            for a in &e.args {
                match a {
                    ArgValue::Int(v) => {
                        col.push(ARG_INT);
                        put_u64(col, *v);
                    }
                    ArgValue::Str { bytes, truncated } => {
                        col.push(if *truncated {
                            ARG_STR_TRUNCATED
                        } else {
                            ARG_STR
                        });
                        put_bytes(col, bytes);
                    }
                    ArgValue::Fault => col.push(ARG_FAULT),
                }
            }
        }
        put_u64(&mut self.cols[COL_TAG], tag);
        let mut delta = e.time_ns.wrapping_sub(self.prev_time);
        if !self.is_legacy() {
            delta = delta.wrapping_sub(e.latency_ns.unwrap_or(0));
        }
        self.put_value(COL_TIME, COL_TIME_HI, zigzag(delta as i64));
        self.prev_time = e.time_ns;
        put_u64(&mut self.cols[COL_CTX], idx.into());
        put_u64(&mut self.cols[COL_GOROUTINE], e.goroutine.unwrap_or(0));
        self.goroutines |= e.goroutine.is_some();
        put_u64(&mut self.cols[COL_WEIGHT], e.weight.into());
        self.weights |= e.weight != 1;
        self.n += 1;
    }

    #[inline]
    fn is_legacy(&self) -> bool {
        #[cfg(test)]
        return self.legacy;
        #[cfg(not(test))]
        false
    }

    #[inline]
    fn put_value(&mut self, lo: usize, hi: usize, v: u64) {
        if self.is_legacy() {
            put_u64(&mut self.cols[lo], v);
        } else {
            let [lo, hi] = self
                .cols
                .get_disjoint_mut([lo, hi])
                .expect("distinct columns in range");
            put_split(lo, hi, v);
        }
    }

    /// Appends the chunk's uncompressed payload to `out`, returns its event count and starts a
    /// new chunk.
    pub(crate) fn take(&mut self, out: &mut Vec<u8>) -> u32 {
        put_u64(out, self.base_time);
        put_u64(out, self.n.into());
        put_u64(out, self.ctx.len() as u64);
        for &(pid, tid, cpu) in &self.ctx {
            put_u64(out, pid.into());
            put_u64(out, tid.into());
            put_u64(out, cpu.into());
        }
        // The goroutine column is empty (read as none) in chunks without goroutines.
        if !self.goroutines {
            self.cols[COL_GOROUTINE].clear();
        }
        let ncols = match (self.is_legacy(), self.goroutines) {
            (false, _) if self.weights => COL_WEIGHT + 1,
            (false, _) => SPLIT_COLS,
            (true, true) => COL_GOROUTINE + 1,
            (true, false) => BASE_COLS,
        };
        put_u64(out, ncols as u64);
        for col in &self.cols[..ncols] {
            put_u64(out, col.len() as u64);
        }
        for col in &mut self.cols[..ncols] {
            out.extend_from_slice(col);
        }
        for col in &mut self.cols {
            col.clear();
        }
        self.goroutines = false;
        self.weights = false;
        let n = self.n;
        self.n = 0;
        self.ctx.clear();
        self.ctx_map.clear();
        n
    }
}

/// Decodes the events of one chunk, one at a time, from the chunk's decompressed payload
/// (passed to each call, so that the decoder holds positions rather than borrows).
#[derive(Debug, Default)]
pub(crate) struct EventDecoder {
    left: u32,
    prev_time: u64,
    ctx: Vec<Ctx>,
    /// (position, end) of each column in the payload.
    cols: [(usize, usize); NCOLS],
    /// The chunk has the split layout.
    split: bool,
}

#[inline]
fn col_u64(buf: &[u8], col: &mut (usize, usize)) -> Res<u64> {
    let mut c = Cursor::at(&buf[..col.1], col.0);
    let v = c.u64()?;
    col.0 = c.pos();
    Ok(v)
}

impl EventDecoder {
    /// Starts decoding `payload`, which the chunk frame says holds `count` events.
    pub(crate) fn start(&mut self, payload: &[u8], count: u32) -> Res<()> {
        let mut c = Cursor::new(payload);
        self.prev_time = c.u64()?;
        let n = c.u32()?;
        if n != count {
            return Err(Malformed("event count differs from the chunk header's"));
        }
        let nctx = c.len()?;
        if nctx > MAX_CHUNK_THREADS {
            return Err(Malformed(
                "an event chunk names more threads than a writer puts in one",
            ));
        }
        self.ctx.clear();
        for _ in 0..nctx {
            self.ctx.push((c.u32()?, c.u32()?, c.u32()?));
        }
        let ncols = c.len()?;
        if ncols < BASE_COLS {
            return Err(Malformed("too few event columns"));
        }
        self.split = ncols >= SPLIT_COLS;
        let mut lens = [0usize; NCOLS];
        for (i, len) in (0..ncols).map(|i| (i, c.u64())) {
            let len = usize::try_from(len?).map_err(|_| Malformed("column too long"))?;
            if i < NCOLS {
                lens[i] = len;
            }
        }
        let mut pos = c.pos();
        for (col, len) in self.cols.iter_mut().zip(lens) {
            let end = pos
                .checked_add(len)
                .filter(|&e| e <= payload.len())
                .ok_or(Malformed("an event column runs past the end of the chunk"))?;
            *col = (pos, end);
            pos = end;
        }
        self.left = n;
        Ok(())
    }

    /// The next event, `None` at the end of the chunk.
    #[inline]
    pub(crate) fn next(&mut self, buf: &[u8]) -> Option<Res<Event>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let event = self.decode(buf);
        if event.is_ok() && self.left == 0 && self.cols.iter().any(|c| c.0 != c.1) {
            return Some(Err(Malformed(
                "event columns hold more data than their events",
            )));
        }
        Some(event)
    }

    #[inline]
    fn decode(&mut self, buf: &[u8]) -> Res<Event> {
        let tag = col_u64(buf, &mut self.cols[COL_TAG])?;
        let probe = u32::try_from(tag >> FLAG_BITS).map_err(|_| Malformed("probe id too large"))?;
        let latency_ns = if tag & F_LATENCY != 0 {
            Some(self.value(buf, COL_LATENCY, COL_LATENCY_HI)?)
        } else {
            None
        };
        let mut delta = unzigzag(self.value(buf, COL_TIME, COL_TIME_HI)?) as u64;
        if self.split {
            delta = delta.wrapping_add(latency_ns.unwrap_or(0));
        }
        self.prev_time = self.prev_time.wrapping_add(delta);
        let idx = col_u64(buf, &mut self.cols[COL_CTX])?;
        let &(pid, tid, cpu) = usize::try_from(idx)
            .ok()
            .and_then(|i| self.ctx.get(i))
            .ok_or(Malformed("thread index out of range"))?;
        let stack = if tag & F_STACK != 0 {
            let s = col_u64(buf, &mut self.cols[COL_STACK])?;
            Some(u32::try_from(s).map_err(|_| Malformed("stack id too large"))?)
        } else {
            None
        };
        // A chunk without the goroutine column has an empty one here.
        let goroutine = {
            let col = &mut self.cols[COL_GOROUTINE];
            if col.0 < col.1 {
                Some(col_u64(buf, col)?).filter(|&g| g != 0)
            } else {
                None
            }
        };
        // A chunk without the weight column has an empty one here: every event weighs 1.
        let weight = {
            let col = &mut self.cols[COL_WEIGHT];
            if col.0 < col.1 {
                let w = col_u64(buf, col)?;
                u32::try_from(w)
                    .ok()
                    .filter(|&w| w > 0)
                    .ok_or(Malformed("an event's weight is 0 or too large"))?
            } else {
                1
            }
        };
        let args = if tag & F_ARGS != 0 {
            self.args(buf)?
        } else {
            Vec::new()
        };
        Ok(Event {
            probe,
            kind: if tag & F_RETURN != 0 {
                EventKind::Return
            } else {
                EventKind::Entry
            },
            pid,
            tid,
            cpu,
            time_ns: self.prev_time,
            stack,
            latency_ns,
            args,
            goroutine,
            weight,
        })
    }

    /// A time or latency value: a varint in `lo`, or in the split layout `lo`'s next byte
    /// and `hi`'s next varint.
    #[inline]
    fn value(&mut self, buf: &[u8], lo: usize, hi: usize) -> Res<u64> {
        if !self.split {
            return col_u64(buf, &mut self.cols[lo]);
        }
        let col = &mut self.cols[lo];
        if col.0 >= col.1 {
            return Err(Malformed("an event column ends before its events"));
        }
        let low = *buf
            .get(col.0)
            .ok_or(Malformed("an event column runs past the end of the chunk"))?;
        col.0 += 1;
        let high = col_u64(buf, &mut self.cols[hi])?;
        if high > u64::MAX >> 8 {
            return Err(Malformed("a time or latency beyond 64 bits"));
        }
        Ok(high << 8 | u64::from(low))
    }

    fn args(&mut self, buf: &[u8]) -> Res<Vec<ArgValue>> {
        let col = &mut self.cols[COL_ARGS];
        let mut c = Cursor::at(&buf[..col.1], col.0);
        let n = c.len()?;
        if n > MAX_ARGS {
            return Err(Malformed(
                "an event has more arguments than any urec fetches",
            ));
        }
        let mut args = Vec::with_capacity(n);
        for _ in 0..n {
            args.push(match c.u8()? {
                ARG_INT => ArgValue::Int(c.u64()?),
                t @ (ARG_STR | ARG_STR_TRUNCATED) => {
                    let len = c.len()?;
                    let bytes = c.bytes(len)?;
                    let kept = &bytes[..len.min(MAX_ARG_STRING)];
                    ArgValue::Str {
                        bytes: kept.to_vec(),
                        truncated: t == ARG_STR_TRUNCATED || kept.len() < len,
                    }
                }
                ARG_FAULT => ArgValue::Fault,
                _ => return Err(Malformed("unknown argument value kind")),
            });
        }
        col.0 = c.pos();
        Ok(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(goroutine: Option<u64>) -> Event {
        Event {
            probe: 1,
            kind: EventKind::Entry,
            pid: 7,
            tid: 8,
            cpu: 0,
            time_ns: 100,
            stack: None,
            latency_ns: None,
            args: Vec::new(),
            goroutine,
            weight: 1,
        }
    }

    /// Encodes `events` as one chunk (in the layout of versions before the split one when
    /// `legacy`); returns its payload and how many columns it declares.
    fn chunk_as(events: &[Event], legacy: bool) -> (Vec<u8>, u64) {
        let mut enc = EventEncoder {
            legacy,
            ..EventEncoder::default()
        };
        for e in events {
            enc.push(e);
        }
        let mut out = Vec::new();
        enc.take(&mut out);
        let mut c = Cursor::new(&out);
        let (_base, _n, nctx) = (c.u64().unwrap(), c.u64().unwrap(), c.u64().unwrap());
        for _ in 0..nctx * 3 {
            c.u64().unwrap();
        }
        let ncols = c.u64().unwrap();
        (out, ncols)
    }

    fn chunk(events: &[Event]) -> (Vec<u8>, u64) {
        chunk_as(events, false)
    }

    fn decode(payload: &[u8], n: u32) -> Vec<Event> {
        let mut dec = EventDecoder::default();
        dec.start(payload, n).unwrap();
        std::iter::from_fn(|| dec.next(payload))
            .collect::<Res<_>>()
            .unwrap()
    }

    /// Entry/return pairs as a hot probe writes them: each return `latency` after its entry,
    /// plus a few events out of time order and with extreme values.
    fn pairs() -> Vec<Event> {
        let mut events = Vec::new();
        let mut t = 1_000_000u64;
        for i in 0..1000u64 {
            let latency = 500 + (i * 7919) % 97;
            events.push(Event {
                time_ns: t,
                ..event(None)
            });
            events.push(Event {
                kind: EventKind::Return,
                time_ns: t + latency,
                latency_ns: Some(latency),
                ..event(None)
            });
            t += latency + 550 + (i * 104_729) % 89;
        }
        events.push(Event {
            time_ns: 5,
            ..event(None)
        });
        events.push(Event {
            kind: EventKind::Return,
            time_ns: u64::MAX,
            latency_ns: Some(u64::MAX - 3),
            ..event(Some(9))
        });
        events.push(Event {
            kind: EventKind::Return,
            time_ns: 0,
            latency_ns: Some(u64::MAX),
            ..event(None)
        });
        events
    }

    #[test]
    fn split_layout_round_trips_and_old_chunks_still_read() {
        let events = pairs();
        let n = events.len() as u32;
        let (split, ncols) = chunk(&events);
        assert_eq!(ncols, SPLIT_COLS as u64);
        assert_eq!(decode(&split, n), events);
        let (legacy, ncols) = chunk_as(&events, true);
        assert_eq!(ncols, (COL_GOROUTINE + 1) as u64);
        assert_eq!(decode(&legacy, n), events);
        let (legacy, ncols) = chunk_as(&events[..10], true);
        assert_eq!(ncols, BASE_COLS as u64);
        assert_eq!(decode(&legacy, 10), events[..10]);
    }

    /// What the split layout is for: a return's time is its latency after its entry, stored
    /// once; the compressed chunk is smaller (zstd level 1, as the writer's default).
    #[test]
    fn split_layout_compresses_entry_return_pairs_better() {
        let events: Vec<Event> = pairs().into_iter().take(2000).collect();
        let size = |legacy| {
            let (payload, _) = chunk_as(&events, legacy);
            zstd::bulk::compress(&payload, 1).unwrap().len()
        };
        let (split, legacy) = (size(false), size(true));
        assert!(
            split * 10 < legacy * 8,
            "split {split} bytes, varint {legacy} bytes"
        );
    }

    #[test]
    fn truncated_split_columns_are_malformed() {
        let events = pairs();
        let (payload, _) = chunk(&events[..4]);
        // Claim one more event than the columns hold.
        let mut dec = EventDecoder::default();
        assert!(dec.start(&payload, 5).is_err());
        // Cut the payload: every read past a column's end is an error, never a panic.
        for cut in 0..payload.len() {
            let mut dec = EventDecoder::default();
            if dec.start(&payload[..cut], 4).is_ok() {
                let got: Vec<Res<Event>> =
                    std::iter::from_fn(|| dec.next(&payload[..cut])).collect();
                assert!(got.iter().any(|e| e.is_err()), "cut at {cut}");
            }
        }
    }

    #[test]
    fn only_chunks_with_goroutines_fill_their_column() {
        let (payload, _) = chunk(&[event(None), event(None)]);
        let mut dec = EventDecoder::default();
        dec.start(&payload, 2).unwrap();
        assert_eq!(
            dec.cols[COL_GOROUTINE].0, dec.cols[COL_GOROUTINE].1,
            "other code pays nothing"
        );
        let (_, ncols) = chunk_as(&[event(None), event(None)], true);
        assert_eq!(ncols, BASE_COLS as u64, "nor did it in the varint layout");
        let events = [event(None), event(Some(0x00c0_0008_2000))];
        let (payload, ncols) = chunk(&events);
        assert_eq!(ncols, SPLIT_COLS as u64, "no weight column without weights");
        assert_eq!(decode(&payload, 2), events);
    }

    #[test]
    fn only_chunks_with_weights_carry_their_column() {
        let (_, ncols) = chunk(&[event(Some(0x00c0_0008_2000)), event(None)]);
        assert_eq!(ncols, SPLIT_COLS as u64, "weights of 1 cost nothing");
        let weighed = |g, weight| Event { weight, ..event(g) };
        for events in [
            vec![event(None), weighed(None, 64)],
            vec![weighed(Some(0x00c0_0008_2000), 2), event(None)],
        ] {
            let (payload, ncols) = chunk(&events);
            assert_eq!(ncols, NCOLS as u64);
            let mut dec = EventDecoder::default();
            dec.start(&payload, 2).unwrap();
            let got: Vec<Event> = std::iter::from_fn(|| dec.next(&payload))
                .collect::<Res<_>>()
                .unwrap();
            assert_eq!(got, events);
        }
    }
}
