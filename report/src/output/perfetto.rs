//! `--perfetto`: every call as a slice on a Perfetto timeline (SPEC.md, "urec report"), written
//! as a protobuf `Trace` (a stream of `TracePacket`s) that ui.perfetto.dev and trace_processor
//! open.
//!
//! - A clock snapshot first: `CLOCK_MONOTONIC` (the recording's clock) against `CLOCK_REALTIME`
//!   at the recording's start, MONOTONIC as the primary trace clock; every event packet says
//!   `timestamp_clock_id = 3` (BUILTIN_CLOCK_MONOTONIC).
//! - A process track per process incarnation and a thread track per thread under it, named
//!   from the comm they had at their first event.
//! - A call is a `TYPE_SLICE_BEGIN` at its entry and a `TYPE_SLICE_END` at its return on its
//!   thread's track, named after the probed function; slices nest by time because each thread
//!   keeps a stack of open calls. Entry args are debug annotations of the begin, return args
//!   and `retval` of the end (trace_processor merges both into the slice's args). The entry's
//!   call stack is attached as an interned callstack (`callstack_iid`; frames with function
//!   name, source file and line, outermost first).
//! - A return whose open call is not on its thread's stack (its entry was lost or filtered),
//!   return-only probes and entry-only (USDT) probes give `TYPE_INSTANT` events. Calls left
//!   above a matched one (their returns lost) end with it, marked `return_lost`. Calls still
//!   open at the end close at the recording's stop with `in_flight = true` (`return_lost` in a
//!   process that had ended by then: the report counts those as unmatched).
//! - A `urec` track holds one summary slice from attach to stop whose debug annotations are the
//!   command, the event count and the lost counts per probe, and for a probe that lost events
//!   its calls as the kernel counted them (`calls.PROBE`): the slices cover part of those.
//!
//! # Memory
//! Events are reordered in a bounded window as `urec script` does
//! ([`crate::output::script::REORDER_NS`] of event time, [`crate::output::script::REORDER_BYTES`] bytes) and
//! written at once; what is kept is per thread (its open calls, within [`crate::calls::pairing`]'s
//! bound: a call pushed out stays open in the trace and is counted in the summary's
//! `evicted`) and per distinct stack, frame and name (the interning tables), never per event.
//!
//! Field numbers below are those of Perfetto's protos (protos/perfetto/trace/...:
//! `trace.proto`, `trace_packet.proto`, `track_event/track_event.proto`,
//! `track_event/track_descriptor.proto`, `track_event/process_descriptor.proto`,
//! `track_event/thread_descriptor.proto`, `track_event/debug_annotation.proto`,
//! `interned_data/interned_data.proto`, `profiling/profile_common.proto`, `clock_snapshot.proto`),
//! as perfetto 0.59's `perfetto_trace_pb2` states them.

use std::io::{self, Write};
use std::path::Path;

use urec_format::{plural, Event, EventKind, Probe, ProbeId, ProbeKind, Record, StackId};

use urec_format::hash::FxHashMap;

use crate::calls::pairing::{fits, Pairing, Waiting};
use crate::calls::{Calls, Process, Verdict};
use crate::interner::Interner;
use crate::model::frames::{code_frames, probe_frame_name, probed_frames};
use crate::output::args::format_arg;
use crate::output::proto::Msg;
use crate::output::reorder::Reorder;
use crate::python::{is_eval_frame, merge_python, PyCodes};
use crate::symbolize::{EmbeddedSymbols, Symbolizer};
use crate::{Error, ReportOptions};

// trace.proto: Trace.packet.
const TRACE_PACKET: u32 = 1;
// trace_packet.proto: TracePacket.
const PACKET_TIMESTAMP: u32 = 8;
const PACKET_CLOCK_SNAPSHOT: u32 = 6;
const PACKET_SEQUENCE_ID: u32 = 10; // trusted_packet_sequence_id
const PACKET_TRACK_EVENT: u32 = 11;
const PACKET_INTERNED_DATA: u32 = 12;
const PACKET_SEQUENCE_FLAGS: u32 = 13;
const PACKET_TIMESTAMP_CLOCK_ID: u32 = 58;
const PACKET_TRACK_DESCRIPTOR: u32 = 60;
const SEQ_INCREMENTAL_STATE_CLEARED: u64 = 1;
const SEQ_NEEDS_INCREMENTAL_STATE: u64 = 2;
// clock_snapshot.proto.
const SNAPSHOT_CLOCKS: u32 = 1;
const SNAPSHOT_PRIMARY_TRACE_CLOCK: u32 = 2;
const CLOCK_ID: u32 = 1;
const CLOCK_TIMESTAMP: u32 = 2;
const BUILTIN_CLOCK_REALTIME: u64 = 1;
const BUILTIN_CLOCK_MONOTONIC: u64 = 3;
// track_descriptor.proto: TrackDescriptor; process_/thread_descriptor.proto.
const TRACK_UUID: u32 = 1;
const TRACK_NAME: u32 = 2;
const TRACK_PROCESS: u32 = 3;
const TRACK_THREAD: u32 = 4;
const TRACK_PARENT_UUID: u32 = 5;
const PROCESS_PID: u32 = 1;
const PROCESS_NAME: u32 = 6;
const THREAD_PID: u32 = 1;
const THREAD_TID: u32 = 2;
const THREAD_NAME: u32 = 5;
// track_event.proto: TrackEvent.
const EVENT_DEBUG_ANNOTATIONS: u32 = 4;
const EVENT_TYPE: u32 = 9;
const EVENT_NAME_IID: u32 = 10;
const EVENT_TRACK_UUID: u32 = 11;
const EVENT_NAME: u32 = 23;
const EVENT_CALLSTACK_IID: u32 = 56;
const TYPE_SLICE_BEGIN: u64 = 1;
const TYPE_SLICE_END: u64 = 2;
const TYPE_INSTANT: u64 = 3;
// debug_annotation.proto: DebugAnnotation.
const ANNOTATION_BOOL: u32 = 2;
const ANNOTATION_UINT: u32 = 3;
const ANNOTATION_STRING: u32 = 6;
const ANNOTATION_NAME: u32 = 10;
// interned_data.proto: InternedData; EventName; InternedString; profile_common.proto.
const INTERNED_EVENT_NAMES: u32 = 2;
const INTERNED_FUNCTION_NAMES: u32 = 5;
const INTERNED_FRAMES: u32 = 6;
const INTERNED_CALLSTACKS: u32 = 7;
const INTERNED_SOURCE_PATHS: u32 = 18;
const EVENT_NAME_IID_FIELD: u32 = 1;
const EVENT_NAME_NAME: u32 = 2;
const STRING_IID: u32 = 1;
const STRING_STR: u32 = 2;
const FRAME_IID: u32 = 1;
const FRAME_FUNCTION_NAME_ID: u32 = 2;
const FRAME_SOURCE_PATH_IID: u32 = 5;
const FRAME_LINE_NUMBER: u32 = 6;
const CALLSTACK_IID: u32 = 1;
/// `Callstack.frame_ids`: "Frames of this callstack. Bottom frame first." (outermost first);
/// a plain (unpacked) repeated field in the proto.
const CALLSTACK_FRAME_IDS: u32 = 2;

/// The one packet sequence this writer uses.
const SEQUENCE: u64 = 1;
/// The summary track's uuid; process and thread tracks get theirs from [`track_uuid`].
const SUMMARY_TRACK: u64 = 1;

/// What [`write`] saw, for the caller to report on stderr.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerfettoSummary {
    /// Slices (calls from entry to return, or to the recording's stop).
    pub slices: u64,
    /// Instant events.
    pub instants: u64,
    /// Calls still running at the stop.
    pub in_flight: u64,
    /// Calls left open in the trace because more waited for their returns at once than the
    /// bound allows (only crafted files get there: [`crate::calls::pairing`]).
    pub evicted: u64,
    /// Warnings (truncation, symbolization problems), each once.
    pub warnings: Vec<String>,
}

/// Writes the recording at `path` as a Perfetto trace into `out`, with the filters of `opts`
/// (pid, tid, comm, probe; not yet the time window or latency filters, which the CLI refuses
/// with `--perfetto`).
pub fn write(
    path: &Path,
    opts: &ReportOptions,
    out: &mut dyn Write,
) -> Result<PerfettoSummary, Error> {
    write_source(crate::input::Source::File(path), opts, out)
}

/// [`write`] of a recording held in memory.
pub fn write_bytes(
    bytes: Vec<u8>,
    opts: &ReportOptions,
    out: &mut dyn Write,
) -> Result<PerfettoSummary, Error> {
    write_source(
        crate::input::Source::Bytes(Path::new("(in memory)"), bytes),
        opts,
        out,
    )
}

fn write_source(
    source: crate::input::Source<'_>,
    opts: &ReportOptions,
    out: &mut dyn Write,
) -> Result<PerfettoSummary, Error> {
    let mut window = Reorder::new();
    let (mut w, status) = crate::input::read_with_symbols(
        source,
        |header, embedded| Writer::new(header, opts, embedded),
        |w, record| {
            if let Record::Event(event) = record {
                w.calls.spaces.incarnations_mut().advance(event.time_ns);
                window.push(event, |e| w.event(&e, out))?;
            } else {
                w.metadata(record, out)?;
            }
            Ok(())
        },
    )?;
    window.finish(|e| w.event(&e, out))?;
    w.finish(out)?;
    let mut warnings = status.warnings;
    warnings.extend(w.symbolizer.take_warnings());
    if w.summary.evicted > 0 {
        warnings.push(format!(
            "{} left open in the trace: more calls waited for their returns at once than \
             a report keeps",
            plural(w.summary.evicted, "call", "calls")
        ));
    }
    w.calls.check_probes()?;
    Ok(PerfettoSummary {
        warnings,
        ..w.summary
    })
}

struct ProbeInfo {
    probe: Probe,
    /// The slice name's interned id.
    name_iid: u64,
}

/// A call waiting for its return on a thread.
struct Open {
    probe: ProbeId,
    time_ns: u64,
}

impl Waiting for Open {
    fn time_ns(&self) -> u64 {
        self.time_ns
    }
}

struct Writer<'o> {
    opts: &'o ReportOptions,
    header: urec_format::Header,
    /// The call core: probes selected, processes, address spaces, filters.
    calls: Calls<'o>,
    symbolizer: Symbolizer,
    probes: FxHashMap<ProbeId, ProbeInfo>,
    stacks: FxHashMap<StackId, urec_format::Stack>,
    /// The Python functions the stacks' Python frames name.
    py_codes: PyCodes,
    /// Tracks described so far: process incarnation → uuid.
    processes: FxHashMap<u32, u64>,
    /// (incarnation, tid) → the thread's track uuid.
    threads: FxHashMap<(u32, u32), u64>,
    /// (incarnation, tid) → its open calls, innermost on top: one stack per thread, across
    /// probes, as slices on a track must nest.
    open: Pairing<(u32, u32), Open>,
    /// Interning tables (ids start at 1: 0 means "none").
    /// (An iid is the interner's id + 1.)
    event_names: Interner<String>,
    strings: Interner<String>,
    sources: Interner<String>,
    frames: Interner<(u64, u64, u32)>,
    callstacks: Interner<Vec<u64>>,
    /// (incarnation, stack id) → callstack iid.
    stack_iids: FxHashMap<(u32, StackId), u64>,
    /// Interned data to send with the next packet.
    interned: Msg,
    lost: FxHashMap<ProbeId, u64>,
    lost_total: u64,
    /// Calls per probe as the kernel counted them (the last Aggregate snapshot): what the
    /// slices, built from the recorded events, cover part of when events were lost.
    kernel_calls: FxHashMap<ProbeId, u64>,
    finish: Option<urec_format::Finish>,
    first_ns: Option<u64>,
    last_ns: u64,
    events: u64,
    summary: PerfettoSummary,
    started: bool,
    // Scratch messages.
    packet: Msg,
    body: Msg,
    scratch: Msg,
    text: String,
}

/// A track uuid for process incarnation `incarnation` (`tid` 0) or one of its threads: disjoint
/// from [`SUMMARY_TRACK`], unique per (incarnation, tid) (Linux tids are below 2^22,
/// `PID_MAX_LIMIT`; a larger one is folded in and may share a track), and small: every event
/// carries it as a varint.
fn track_uuid(incarnation: u32, tid: u32) -> u64 {
    ((u64::from(incarnation) + 1) << 22) | u64::from(tid & ((1 << 22) - 1))
}

impl<'o> Writer<'o> {
    fn new(
        header: &urec_format::Header,
        opts: &'o ReportOptions,
        embedded: EmbeddedSymbols,
    ) -> Self {
        let mut symbolizer = Symbolizer::new(opts.symbolize.clone());
        if !embedded.is_empty() {
            symbolizer.set_embedded(embedded);
        }
        Self {
            opts,
            header: header.clone(),
            calls: Calls::new(&opts.filter, None),
            symbolizer,
            probes: FxHashMap::default(),
            stacks: FxHashMap::default(),
            py_codes: PyCodes::default(),
            processes: FxHashMap::default(),
            threads: FxHashMap::default(),
            open: Pairing::default(),
            event_names: Interner::default(),
            strings: Interner::default(),
            sources: Interner::default(),
            frames: Interner::default(),
            callstacks: Interner::default(),
            stack_iids: FxHashMap::default(),
            interned: Msg::new(),
            lost: FxHashMap::default(),
            lost_total: 0,
            kernel_calls: FxHashMap::default(),
            finish: None,
            first_ns: None,
            last_ns: 0,
            events: 0,
            summary: PerfettoSummary::default(),
            started: false,
            packet: Msg::new(),
            body: Msg::new(),
            scratch: Msg::new(),
            text: String::new(),
        }
    }

    /// Writes `self.packet` (a TracePacket's fields) as one `Trace.packet`.
    fn emit(&mut self, out: &mut dyn Write) -> io::Result<()> {
        self.packet.uint(PACKET_SEQUENCE_ID, SEQUENCE);
        self.scratch.clear();
        self.scratch.msg(TRACE_PACKET, &self.packet);
        self.packet.clear();
        out.write_all(self.scratch.bytes())
    }

    /// The clock snapshot and the cleared incremental state, once, before anything else.
    fn start(&mut self, out: &mut dyn Write) -> io::Result<()> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        let mut snapshot = Msg::new();
        let mut clock = Msg::new();
        clock.uint(CLOCK_ID, BUILTIN_CLOCK_MONOTONIC);
        clock.uint(CLOCK_TIMESTAMP, self.header.start_monotonic_ns);
        snapshot.msg(SNAPSHOT_CLOCKS, &clock);
        if self.header.start_unix_ns != 0 {
            clock.clear();
            clock.uint(CLOCK_ID, BUILTIN_CLOCK_REALTIME);
            clock.uint(CLOCK_TIMESTAMP, self.header.start_unix_ns);
            snapshot.msg(SNAPSHOT_CLOCKS, &clock);
        }
        snapshot.uint(SNAPSHOT_PRIMARY_TRACE_CLOCK, BUILTIN_CLOCK_MONOTONIC);
        self.packet
            .uint(PACKET_TIMESTAMP, self.header.start_monotonic_ns);
        self.packet
            .uint(PACKET_TIMESTAMP_CLOCK_ID, BUILTIN_CLOCK_MONOTONIC);
        self.packet.msg(PACKET_CLOCK_SNAPSHOT, &snapshot);
        self.packet
            .uint(PACKET_SEQUENCE_FLAGS, SEQ_INCREMENTAL_STATE_CLEARED);
        self.emit(out)?;
        // The summary track.
        let mut track = Msg::new();
        track.uint(TRACK_UUID, SUMMARY_TRACK);
        track.str(TRACK_NAME, "urec");
        self.packet.msg(PACKET_TRACK_DESCRIPTOR, &track);
        self.emit(out)
    }

    fn metadata(&mut self, record: Record, out: &mut dyn Write) -> Result<(), Error> {
        self.start(out)?;
        self.calls.apply(&record);
        match record {
            Record::Probe(p) => {
                // The slice is named as the probe's frame is in every output.
                let name = probe_frame_name(&p).unwrap_or(&p.name).to_string();
                let name_iid = self.event_name(&name);
                self.probes.insert(p.id, ProbeInfo { probe: p, name_iid });
            }
            Record::Stack(s) => {
                self.stacks.insert(s.id, s);
            }
            Record::PyCode(c) => self.py_codes.insert(c),
            Record::Lost(l) => {
                self.lost_total = self.lost_total.saturating_add(l.count);
                if let Some(p) = l.probe {
                    let n = self.lost.entry(p).or_default();
                    *n = n.saturating_add(l.count);
                }
            }
            Record::Aggregate(a) => {
                self.kernel_calls.insert(a.probe, a.calls);
            }
            Record::Finish(f) => self.finish = Some(f),
            _ => {}
        }
        Ok(())
    }

    fn event_name(&mut self, name: &str) -> u64 {
        let (id, new) = self.event_names.intern(name);
        let iid = u64::from(id) + 1;
        if !new {
            return iid;
        }
        let mut m = Msg::new();
        m.uint(EVENT_NAME_IID_FIELD, iid);
        m.str(EVENT_NAME_NAME, name);
        self.interned.msg(INTERNED_EVENT_NAMES, &m);
        iid
    }

    fn string_iid(&mut self, s: &str, source: bool) -> u64 {
        let (table, field) = if source {
            (&mut self.sources, INTERNED_SOURCE_PATHS)
        } else {
            (&mut self.strings, INTERNED_FUNCTION_NAMES)
        };
        let (id, new) = table.intern(s);
        let iid = u64::from(id) + 1;
        if !new {
            return iid;
        }
        let mut m = Msg::new();
        m.uint(STRING_IID, iid);
        m.str(STRING_STR, s);
        self.interned.msg(field, &m);
        iid
    }

    fn frame_iid(&mut self, name: &str, file: Option<&str>, line: Option<u32>) -> u64 {
        let name = self.string_iid(name, false);
        let file = file.map_or(0, |f| self.string_iid(f, true));
        let key = (name, file, line.unwrap_or(0));
        let (id, new) = self.frames.intern(&key);
        let iid = u64::from(id) + 1;
        if !new {
            return iid;
        }
        let mut m = Msg::new();
        m.uint(FRAME_IID, iid);
        m.uint(FRAME_FUNCTION_NAME_ID, name);
        m.uint(FRAME_SOURCE_PATH_IID, file);
        m.uint(FRAME_LINE_NUMBER, u64::from(key.2));
        self.interned.msg(INTERNED_FRAMES, &m);
        iid
    }

    /// The interned callstack of `ev`'s stack, outermost frame first.
    fn callstack_iid(&mut self, ev: &Event, incarnation: u32) -> Option<u64> {
        let id = ev.stack?;
        if let Some(&iid) = self.stack_iids.get(&(incarnation, id)) {
            return Some(iid);
        }
        let stack = self.stacks.get(&id)?.clone();
        // (frame iid, whether it is an eval frame that Python frames may replace).
        let mut frame_ids = Vec::with_capacity(stack.frames.len() + 1);
        if stack.truncated {
            frame_ids.push((self.frame_iid("[truncated]", None, None), false));
        }
        // Without symbolization every frame stays `binary+0xOFF`, the probe's too.
        let symbolized = !self.opts.no_symbolize;
        for (depth, &addr) in stack.frames.iter().enumerate().rev() {
            match self.calls.spaces.lookup(ev.pid, ev.time_ns, addr) {
                None => frame_ids.push((self.frame_iid("[unknown]", None, None), false)),
                Some(m) => {
                    let (path, build_id) = (m.path.to_string(), m.build_id.cloned());
                    let mut named = code_frames(
                        (!self.opts.no_symbolize).then_some(&mut self.symbolizer),
                        &path,
                        build_id.as_ref(),
                        urec_format::FrameAddress::at_depth(m.offset, depth),
                    );
                    if let Some(info) = self.probes.get(&ev.probe).filter(|_| symbolized) {
                        named = probed_frames(&info.probe, depth, named);
                    }
                    for (name, l) in named {
                        let eval = symbolized && is_eval_frame(&name);
                        frame_ids.push((self.frame_iid(&name, l.file.as_deref(), l.line), eval));
                    }
                }
            }
        }
        // Python frames in place of the eval frames, as every output puts them; without
        // names (`--no-symbolize`) no frame is an eval frame and the stack stays native.
        let codes = std::mem::take(&mut self.py_codes);
        let (frame_ids, _) = merge_python(
            frame_ids,
            stack.truncated,
            &stack.python,
            stack.python_truncated,
            |&(_, eval)| eval,
            |p| {
                let f = codes.frame(p)?;
                let line = (f.line > 0).then_some(f.line);
                Some((self.frame_iid(&f.name(), Some(&f.filename), line), false))
            },
        );
        self.py_codes = codes;
        let frame_ids: Vec<u64> = frame_ids.into_iter().map(|(id, _)| id).collect();
        let (id, new) = self.callstacks.intern(&frame_ids[..]);
        let iid = u64::from(id) + 1;
        if new {
            let mut m = Msg::new();
            m.uint(CALLSTACK_IID, iid);
            for f in &frame_ids {
                m.uint_always(CALLSTACK_FRAME_IDS, *f);
            }
            self.interned.msg(INTERNED_CALLSTACKS, &m);
        }
        self.stack_iids.insert((incarnation, id), iid);
        Some(iid)
    }

    /// The thread's track (describing it and its process first when new).
    fn thread(
        &mut self,
        ev: &Event,
        process: Process,
        out: &mut dyn Write,
    ) -> io::Result<(u32, u64)> {
        let inc = process.incarnation;
        if let Some(&uuid) = self.threads.get(&(inc, ev.tid)) {
            return Ok((inc, uuid));
        }
        let comm = self
            .calls
            .spaces
            .incarnations()
            .comm_name(process.comm)
            .to_string();
        let process = track_uuid(inc, 0);
        if self.processes.insert(inc, process).is_none() {
            let mut p = Msg::new();
            p.int(PROCESS_PID, i64::from(ev.pid));
            p.str(PROCESS_NAME, &comm);
            let mut track = Msg::new();
            track.uint(TRACK_UUID, process);
            track.msg(TRACK_PROCESS, &p);
            self.packet.msg(PACKET_TRACK_DESCRIPTOR, &track);
            self.emit(out)?;
        }
        // The tid 0 slot is the process's own track; a thread never has tid 0 on Linux.
        let uuid = track_uuid(inc, ev.tid.max(1));
        let mut t = Msg::new();
        t.int(THREAD_PID, i64::from(ev.pid));
        t.int(THREAD_TID, i64::from(ev.tid));
        t.str(THREAD_NAME, &comm);
        let mut track = Msg::new();
        track.uint(TRACK_UUID, uuid);
        track.uint(TRACK_PARENT_UUID, process);
        track.msg(TRACK_THREAD, &t);
        self.packet.msg(PACKET_TRACK_DESCRIPTOR, &track);
        self.emit(out)?;
        self.threads.insert((inc, ev.tid), uuid);
        Ok((inc, uuid))
    }

    fn event(&mut self, ev: &Event, out: &mut dyn Write) -> Result<(), Error> {
        self.start(out)?;
        self.events += 1;
        self.first_ns = Some(self.first_ns.map_or(ev.time_ns, |t| t.min(ev.time_ns)));
        self.last_ns = self.last_ns.max(ev.time_ns);
        let Verdict::Kept(process, slot) = self.calls.event(ev) else {
            return Ok(());
        };
        let Some(info) = self.probes.get(&ev.probe) else {
            return Ok(());
        };
        let (kind, name_iid) = (slot.kind, info.name_iid);
        let (inc, track) = self.thread(ev, process, out)?;
        match (ev.kind, kind) {
            (EventKind::Entry, ProbeKind::EntryReturn) => {
                let callstack = self.callstack_iid(ev, inc);
                // A call the bound pushes out will never be matched: it stays open in the
                // trace, and is counted.
                let evicted = &mut self.summary.evicted;
                self.open.push(
                    (inc, ev.tid),
                    Open {
                        probe: ev.probe,
                        time_ns: ev.time_ns,
                    },
                    |_, _| *evicted += 1,
                );
                // A Go call says which goroutine made it (the thread track is where it began).
                let goroutine = ev.goroutine.map(|g| ("goroutine", Value::Uint(g)));
                self.track_event(
                    ev,
                    track,
                    TYPE_SLICE_BEGIN,
                    name_iid,
                    callstack,
                    goroutine.as_slice(),
                    out,
                )?;
                self.summary.slices += 1;
            }
            (EventKind::Return, ProbeKind::EntryReturn) => {
                // The innermost open call of this probe whose entry time fits (an older one
                // is an outer call: this call's entry was lost).
                let key = (inc, ev.tid);
                let found = self.open.iter_from_top(&key).position(|o| {
                    o.probe == ev.probe && fits(o.time_ns, ev.time_ns, ev.latency_ns)
                });
                match found {
                    Some(above) => {
                        for _ in 0..=above {
                            self.open.pop(&key);
                        }
                        for _ in 0..above {
                            self.end(
                                ev.time_ns,
                                track,
                                &[("return_lost", Value::Bool(true))],
                                out,
                            )?;
                        }
                        self.track_event(ev, track, TYPE_SLICE_END, 0, None, &[], out)?;
                    }
                    None => {
                        let callstack = self.callstack_iid(ev, inc);
                        self.track_event(
                            ev,
                            track,
                            TYPE_INSTANT,
                            name_iid,
                            callstack,
                            &[("unmatched_return", Value::Bool(true))],
                            out,
                        )?;
                        self.summary.instants += 1;
                    }
                }
            }
            _ => {
                let callstack = self.callstack_iid(ev, inc);
                self.track_event(ev, track, TYPE_INSTANT, name_iid, callstack, &[], out)?;
                self.summary.instants += 1;
            }
        }
        Ok(())
    }

    /// A slice end with only `extra` annotations (a call whose return was lost, or in flight).
    fn end(
        &mut self,
        time_ns: u64,
        track: u64,
        extra: &[(&str, Value)],
        out: &mut dyn Write,
    ) -> io::Result<()> {
        self.body.clear();
        self.body.uint(EVENT_TYPE, TYPE_SLICE_END);
        self.body.uint(EVENT_TRACK_UUID, track);
        for (name, value) in extra {
            annotation(&mut self.body, name, value);
        }
        self.packet.uint(PACKET_TIMESTAMP, time_ns);
        self.packet
            .uint(PACKET_TIMESTAMP_CLOCK_ID, BUILTIN_CLOCK_MONOTONIC);
        self.packet.msg(PACKET_TRACK_EVENT, &self.body);
        self.emit(out)
    }

    /// One TrackEvent of `ev`, its args (and latency) as debug annotations.
    #[allow(clippy::too_many_arguments)]
    fn track_event(
        &mut self,
        ev: &Event,
        track: u64,
        ty: u64,
        name_iid: u64,
        callstack: Option<u64>,
        extra: &[(&str, Value)],
        out: &mut dyn Write,
    ) -> io::Result<()> {
        self.body.clear();
        self.body.uint(EVENT_TYPE, ty);
        self.body.uint(EVENT_TRACK_UUID, track);
        self.body.uint(EVENT_NAME_IID, name_iid);
        if let Some(cs) = callstack {
            self.body.uint(EVENT_CALLSTACK_IID, cs);
        }
        let is_return = ev.kind == EventKind::Return;
        if let Some(info) = self.probes.get(&ev.probe) {
            let mut specs = info.probe.args.iter().filter(|a| a.at_return == is_return);
            for (i, value) in ev.args.iter().enumerate() {
                self.text.clear();
                let name = match specs.next() {
                    Some(spec) => {
                        format_arg(&mut self.text, spec.ty, value);
                        spec.name.clone()
                    }
                    None => {
                        format_arg(&mut self.text, urec_format::ArgType::Hex(64), value);
                        format!("arg{}", i + 1)
                    }
                };
                let text = std::mem::take(&mut self.text);
                annotation(&mut self.body, &name, &Value::Str(&text));
                self.text = text;
            }
        }
        if ty == TYPE_INSTANT {
            if let Some(lat) = ev.latency_ns {
                // Slices keep the real times (they must nest on their track); the latency
                // shown as a number loses the probe cost with --subtract-probe-cost.
                let cost = match self.probes.get(&ev.probe) {
                    Some(info) if self.opts.subtract_probe_cost => {
                        info.probe.site.and_then(|s| s.cost_ns).unwrap_or(0)
                    }
                    _ => 0,
                };
                annotation(
                    &mut self.body,
                    "latency_ns",
                    &Value::Uint(lat.saturating_sub(cost)),
                );
            }
        }
        for (name, value) in extra {
            annotation(&mut self.body, name, value);
        }
        self.packet.uint(PACKET_TIMESTAMP, ev.time_ns);
        self.packet
            .uint(PACKET_TIMESTAMP_CLOCK_ID, BUILTIN_CLOCK_MONOTONIC);
        if !self.interned.bytes().is_empty() {
            self.packet.msg(PACKET_INTERNED_DATA, &self.interned);
            self.interned.clear();
        }
        self.packet.msg(PACKET_TRACK_EVENT, &self.body);
        self.packet
            .uint(PACKET_SEQUENCE_FLAGS, SEQ_NEEDS_INCREMENTAL_STATE);
        self.emit(out)
    }

    /// Closes the calls still open (at the stop, `in_flight`) and writes the summary slice.
    fn finish(&mut self, out: &mut dyn Write) -> io::Result<()> {
        self.start(out)?;
        let (attach, stop) = match &self.finish {
            Some(f) if f.stop_ns >= f.attach_ns => (f.attach_ns, f.stop_ns.max(self.last_ns)),
            _ => (self.first_ns.unwrap_or(0), self.last_ns),
        };
        // In flight if the process lived on; in one that ended, the returns were lost (as the
        // report counts them: unmatched).
        let mut open: FxHashMap<(u32, u32), usize> = FxHashMap::default();
        for (key, _) in self.open.drain() {
            *open.entry(key).or_default() += 1;
        }
        let mut threads: Vec<(u64, usize, bool)> = open
            .into_iter()
            .filter_map(|(key, n)| {
                let uuid = *self.threads.get(&key)?;
                Some((uuid, n, self.calls.spaces.incarnations().ended(key.0)))
            })
            .collect();
        threads.sort_unstable();
        for (uuid, open, ended) in threads {
            for _ in 0..open {
                if ended {
                    self.end(stop, uuid, &[("return_lost", Value::Bool(true))], out)?;
                } else {
                    self.end(stop, uuid, &[("in_flight", Value::Bool(true))], out)?;
                    self.summary.in_flight += 1;
                }
            }
        }
        // The summary slice: the command, events and lost counts per probe.
        self.body.clear();
        self.body.uint(EVENT_TYPE, TYPE_SLICE_BEGIN);
        self.body.uint(EVENT_TRACK_UUID, SUMMARY_TRACK);
        self.body.str(EVENT_NAME, "urec");
        let command = urec_format::shell_words(&self.header.command);
        annotation(&mut self.body, "command", &Value::Str(&command));
        annotation(&mut self.body, "host", &Value::Str(&self.header.host));
        annotation(&mut self.body, "events", &Value::Uint(self.events));
        annotation(&mut self.body, "lost", &Value::Uint(self.lost_total));
        let mut lost: Vec<(String, u64)> = self
            .lost
            .iter()
            .filter_map(|(p, &n)| self.probes.get(p).map(|i| (i.probe.name.clone(), n)))
            .collect();
        lost.sort();
        for (probe, n) in lost {
            annotation(&mut self.body, &format!("lost.{probe}"), &Value::Uint(n));
        }
        // Where events were lost, the slices cover part of the calls: say how many there were.
        let mut calls: Vec<(String, u64)> = self
            .kernel_calls
            .iter()
            .filter(|(p, _)| self.lost.contains_key(p))
            .filter_map(|(p, &n)| self.probes.get(p).map(|i| (i.probe.name.clone(), n)))
            .collect();
        calls.sort();
        for (probe, n) in calls {
            annotation(&mut self.body, &format!("calls.{probe}"), &Value::Uint(n));
        }
        self.packet.uint(PACKET_TIMESTAMP, attach);
        self.packet
            .uint(PACKET_TIMESTAMP_CLOCK_ID, BUILTIN_CLOCK_MONOTONIC);
        self.packet.msg(PACKET_TRACK_EVENT, &self.body);
        self.emit(out)?;
        self.end(stop, SUMMARY_TRACK, &[], out)?;
        out.flush()
    }
}

/// A debug annotation's value.
enum Value<'a> {
    Bool(bool),
    Uint(u64),
    Str(&'a str),
}

/// Appends a `DebugAnnotation` named `name` to the TrackEvent being built in `body`.
fn annotation(body: &mut Msg, name: &str, value: &Value<'_>) {
    let mut a = Msg::new();
    a.str(ANNOTATION_NAME, name);
    match value {
        Value::Bool(b) => a.uint_always(ANNOTATION_BOOL, u64::from(*b)),
        Value::Uint(v) => a.uint_always(ANNOTATION_UINT, *v),
        Value::Str(s) => a.str(ANNOTATION_STRING, s),
    }
    body.msg(EVENT_DEBUG_ANNOTATIONS, &a);
}
