//! The ring-buffer consumer: decodes each record the BPF programs wrote (arguments typed as
//! their specs say, stacks interned, `-g dwarf` copies held for unwinding) into a list of
//! pending events, and releases them in time order, interleaved with the side-band records, to
//! the writer (see the `session` module for when).

use std::collections::VecDeque;

use anyhow::Result;
use urec_bpf::abi::{
    record_kind, RawArgValue, RawEvent, RawPyCode, RawPython, F_LATENCY, KIND_ENTRY, KIND_PYCODE,
};
use urec_format::{ArgType, ArgValue, Event, EventKind, Nanos, Record, Writer};

use crate::dwarf::{Capture, DwarfStacks};
use crate::processes::ProcessTable;
use crate::python::names::{NamedStack, Naming};
use crate::python::PythonNames;
use crate::sideband::SidebandRecord;
use crate::stacks::{StackIds, StackTable};
use crate::PlannedProbe;

/// How to decode and type one argument slot of an event.
#[derive(Clone, Copy, Debug)]
struct ArgSlot {
    string: bool,
    /// Mask applied to integer values (the TYPE's width).
    mask: u64,
}

fn arg_slot(ty: ArgType) -> ArgSlot {
    let bits = match ty {
        ArgType::Unsigned(b) | ArgType::Signed(b) | ArgType::Hex(b) => b,
        ArgType::Bitfield { container, .. } => container,
        ArgType::String => 64,
    };
    ArgSlot {
        string: ty == ArgType::String,
        mask: if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        },
    }
}

/// Per probe: the argument slots of entry and return events.
#[derive(Debug, Default)]
pub(crate) struct ProbeDecode {
    entry: Vec<ArgSlot>,
    ret: Vec<ArgSlot>,
    entry_strings: Vec<bool>,
    ret_strings: Vec<bool>,
}

pub(crate) fn decoders(probes: &[PlannedProbe]) -> Vec<ProbeDecode> {
    probes
        .iter()
        .map(|p| {
            let mut d = ProbeDecode::default();
            // The programs fetch each argument where its config says: decode it there too.
            for (a, cfg) in p.probe.args.iter().zip(&p.config.args) {
                let slot = arg_slot(a.ty);
                if cfg.at_return {
                    d.ret.push(slot);
                } else {
                    d.entry.push(slot);
                }
            }
            d.entry_strings = d.entry.iter().map(|s| s.string).collect();
            d.ret_strings = d.ret.iter().map(|s| s.string).collect();
            d
        })
        .collect()
}

/// An event read from the ring and not yet released, with what is still to be done for it
/// before it is written: its stack copy to unwind (boxed: the list is moved around per event,
/// and most events have none), and the Python frames (named already, while the process
/// lived) that go into that stack, or those still to name ([`PyLater`]).
pub(crate) struct Held {
    pub(crate) event: Event,
    pub(crate) capture: Option<Box<Capture>>,
    pub(crate) python: Option<NamedStack>,
    pub(crate) later: Option<Box<PyLater>>,
}

/// The Python frames of an event that could not all be named when it was read (the process
/// had exited, and the programs' snapshot of a code object had not been read yet): named
/// again at the event's release, from the snapshots read by then; then the event's native
/// stack (with `-g fp`, kept here) is interned with them.
pub(crate) struct PyLater {
    py: urec_python::Cpython,
    status: u16,
    frames: Box<[u8]>,
    /// `-g fp`: the native frames and whether they were cut at the depth limit.
    native: Option<(Vec<u64>, bool)>,
}

/// What the consumer accumulates between releases.
pub(crate) struct State<W: std::io::Write> {
    pub(crate) writer: Writer<W>,
    pub(crate) table: ProcessTable,
    pub(crate) stacks: StackTable,
    /// The frames of the stacks the programs sent by id.
    pub(crate) stack_ids: StackIds,
    /// Records read from the ring and their bytes (`-v`).
    pub(crate) ring_records: u64,
    pub(crate) ring_bytes: u64,
    pub(crate) decode: Vec<ProbeDecode>,
    /// `--stack-depth` (0 with `-g none`: then no record carries a stack).
    pub(crate) stack_depth: u32,
    /// Events not yet released ([`Held`]). A deque: a release takes a prefix, and shifting
    /// the rest down each time cost more than the events.
    pub(crate) pending: VecDeque<Held>,
    /// The Python frames of events, named as they are read.
    pub(crate) python: PythonNames,
    /// `pending` is in time order (checked as events arrive, not per release: a release
    /// may come every few thousand events while the list holds hundreds of thousands).
    pub(crate) pending_sorted: bool,
    /// Frames of the record at hand (reused: no allocation or zeroing per event).
    pub(crate) frames: Vec<u64>,
    pub(crate) dwarf: DwarfStacks,
    /// Stack copy bytes held after which the ring consumer returns to the loop.
    pub(crate) yield_bytes: usize,
    /// The consumer returned early ([`YIELD`]); poll again at once.
    pub(crate) yielded: bool,
    /// The latest event time read from the ring.
    pub(crate) latest_ns: Nanos,
    pub(crate) entries: u64,
    pub(crate) returns: u64,
    /// The largest weight of an event read: the programs kept one call in up to this many.
    pub(crate) max_weight: u32,
    /// Events per probe id.
    pub(crate) probe_events: Vec<u64>,
    pub(crate) bad_records: u64,
    pub(crate) error: Option<anyhow::Error>,
}

impl<W: std::io::Write> State<W> {
    /// Decodes one ring-buffer record into the pending list (writing its stack if new).
    pub(crate) fn on_ring_record(&mut self, bytes: &[u8]) -> Result<()> {
        self.ring_records += 1;
        self.ring_bytes += bytes.len() as u64;
        if record_kind(bytes) == Some(KIND_PYCODE) {
            match RawPyCode::parse(bytes) {
                Ok(c) => self.python.snapshot(&c, bytes.len()),
                Err(_) => self.bad_records += 1,
            }
            return Ok(());
        }
        let raw = match RawEvent::parse(bytes) {
            Ok(raw) => raw,
            Err(_) => {
                self.bad_records += 1;
                return Ok(());
            }
        };
        let Some(decode) = self.decode.get(raw.probe as usize) else {
            // Ids past the recording's probes are the probe-cost calibration's
            // (`crate::calibrate`): its helper's events are not the recording's.
            return Ok(());
        };
        let (slots, strings) = if raw.kind == KIND_ENTRY {
            (&decode.entry, &decode.entry_strings)
        } else {
            (&decode.ret, &decode.ret_strings)
        };
        let mut values = Vec::with_capacity(slots.len());
        let mut args = Vec::with_capacity(slots.len());
        if raw.args(strings, &mut values).is_err() {
            self.bad_records += 1;
            return Ok(());
        }
        for (v, slot) in values.iter().zip(slots) {
            args.push(match v {
                RawArgValue::Int(x) => ArgValue::Int(x & slot.mask),
                RawArgValue::Str(b, truncated) => ArgValue::Str {
                    bytes: b.to_vec(),
                    truncated: *truncated,
                },
                RawArgValue::Fault => ArgValue::Fault,
            });
        }

        let kind = if raw.kind == KIND_ENTRY {
            EventKind::Entry
        } else {
            EventKind::Return
        };
        self.python.stats.count(
            raw.nframes() > 0 || raw.stack_id.is_some() || raw.dwarf.is_some(),
            raw.python.as_ref(),
        );
        let mut later = None;
        let python = match &raw.python {
            Some(p) => {
                let State {
                    writer,
                    table,
                    python,
                    ..
                } = self;
                let py = table.python().cpython(raw.pid);
                match python.stack(raw.pid, py, p, false, &mut |r| Ok(writer.write(&r)?))? {
                    Naming::Nothing => None,
                    Naming::Named(s) => Some(s),
                    Naming::Later => {
                        python.stats.later += 1;
                        later = py.map(|py| {
                            Box::new(PyLater {
                                py: py.clone(),
                                status: p.status,
                                frames: p.bytes().into(),
                                native: None,
                            })
                        });
                        None
                    }
                }
            }
            None => None,
        };
        if raw.dwarf.is_some() {
            self.dwarf.early(raw.pid);
        }
        let capture = raw
            .dwarf
            .as_ref()
            .and_then(|d| self.dwarf.capture(d, raw.probe, kind))
            .map(Box::new);
        // A stack sent by id and interned before: one lookup (the common case).
        let known = match raw.stack_id {
            Some((sid, _)) if python.is_none() && later.is_none() => self.stack_ids.plain(sid),
            _ => None,
        };
        if known.is_none() {
            self.frames.clear();
            match raw.stack_id {
                Some((sid, _)) => self.stack_ids.frames(sid, &mut self.frames),
                None => self.frames.extend(raw.frames().take(130)),
            }
        }
        let stack = if known.is_some() {
            known
        } else if !self.frames.is_empty() {
            // The walk stopped at the depth limit, not at the end of the chain.
            let truncated = self.frames.len() as u32 >= self.stack_depth;
            if let Some(l) = later.as_mut() {
                // Interned at release, with the Python frames named then.
                l.native = Some((self.frames.clone(), truncated));
                None
            } else {
                let (id, new) = self.stacks.intern(&self.frames, truncated, python.as_ref());
                if let Some(s) = new {
                    self.writer.write(&Record::Stack(s))?;
                }
                if let (Some((sid, _)), None) = (raw.stack_id, &python) {
                    self.stack_ids.set_plain(sid, id);
                }
                Some(id)
            }
        } else {
            None
        };
        let weight = 1u32 << raw.weight_shift.min(urec_bpf::abi::MAX_SHIFT);
        self.max_weight = self.max_weight.max(weight);
        if kind == EventKind::Entry {
            self.entries += 1;
        } else {
            self.returns += 1;
        }
        if let Some(n) = self.probe_events.get_mut(raw.probe as usize) {
            *n += 1;
        }
        let event = Event {
            goroutine: raw.goroutine,
            weight,
            probe: raw.probe,
            kind,
            pid: raw.pid,
            tid: raw.tid,
            cpu: raw.cpu,
            time_ns: raw.time_ns,
            stack,
            latency_ns: (raw.flags & F_LATENCY != 0).then_some(raw.latency_ns),
            args,
        };
        self.latest_ns = self.latest_ns.max(event.time_ns);
        if self
            .pending
            .back()
            .is_some_and(|last| last.event.time_ns > event.time_ns)
        {
            self.pending_sorted = false;
        }
        self.pending.push_back(Held {
            event,
            capture,
            python,
            later,
        });
        Ok(())
    }

    /// Writes, in time order, the side-band records of `sb` and the pending events stamped at
    /// or before `horizon`; later side-band records stay in `sb`.
    pub(crate) fn release(&mut self, sb: &mut Vec<SidebandRecord>, horizon: Nanos) -> Result<()> {
        // Records come off the ring in nearly time order: usually nothing to sort.
        if !self.pending_sorted {
            self.pending
                .make_contiguous()
                .sort_by_key(|e| e.event.time_ns);
            self.pending_sorted = true;
        }
        let cut = self.pending.partition_point(|e| e.event.time_ns <= horizon);
        let State {
            writer,
            table,
            stacks,
            dwarf,
            pending,
            python,
            ..
        } = self;
        let mut emit = |r: Record| -> Result<()> { Ok(writer.write(&r)?) };
        let mut events = pending.drain(..cut).peekable();
        // Side-band records past the horizon wait with the events of their time.
        let sb_cut = sb.partition_point(|r| r.time_ns() <= horizon);
        for record in sb.drain(..sb_cut) {
            while let Some(e) = events.next_if(|e| e.event.time_ns < record.time_ns()) {
                release_one(e, table, dwarf, stacks, python, &mut emit)?;
            }
            table.apply(&record, &mut emit)?;
            dwarf.follow(table, record.time_ns());
        }
        for e in events {
            release_one(e, table, dwarf, stacks, python, &mut emit)?;
        }
        Ok(())
    }
}

/// Writes one released event, unwinding its stack copy first when it has one (with the
/// event's Python frames, which go into the same stack), naming its Python frames first when
/// that had to wait ([`PyLater`]).
fn release_one(
    Held {
        event: mut e,
        capture,
        mut python,
        later,
    }: Held,
    table: &mut ProcessTable,
    dwarf: &mut DwarfStacks,
    stacks: &mut StackTable,
    names: &mut PythonNames,
    emit: &mut dyn FnMut(Record) -> Result<()>,
) -> Result<()> {
    table.ensure_emitted(e.pid, e.time_ns, emit)?;
    let mut native = None;
    if let Some(l) = later {
        let raw = RawPython::from_parts(l.status, &l.frames);
        python = match names.stack(e.pid, Some(&l.py), &raw, true, emit)? {
            Naming::Named(s) => Some(s),
            Naming::Nothing | Naming::Later => None,
        };
        native = l.native;
    }
    if let Some((frames, truncated)) = native {
        let (id, new) = stacks.intern(&frames, truncated, python.as_ref());
        if let Some(s) = new {
            emit(Record::Stack(s))?;
        }
        e.stack = Some(id);
    }
    if let Some(capture) = capture {
        let (frames, truncated) =
            dwarf.unwind(table, e.pid, e.time_ns, (e.probe, e.kind), *capture);
        let (id, new) = stacks.intern(frames, truncated, python.as_ref());
        if let Some(s) = new {
            emit(Record::Stack(s))?;
        }
        e.stack = Some(id);
    }
    emit(Record::Event(e))
}
