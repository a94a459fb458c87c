//! One streaming pass over a recording into a [`Report`].
//!
//! # Definitions (SPEC.md, "What the numbers mean")
//! - `calls`: entry events; for return-only probes, return events.
//! - `returns`: return events.
//! - latency: the recorder's `latency_ns` on the return event when present; otherwise the return
//!   is paired with its entry by [`crate::calls::pairing`]'s rule (the most recent unreturned entry of
//!   the same process, thread and probe whose time fits), and latency is the difference of their
//!   times.
//! - `in_flight`: entries still waiting for their return at the end of the file, in processes
//!   that had not exited (or exec'd) by then; `unmatched`: returns with no entry to pair with,
//!   plus entries left over in processes that ended.
//!
//! # Process incarnations
//! The same addresses mean different code in different processes, and a pid may be reused or
//! exec a new program, so everything per process is keyed by its *incarnation*
//! ([`crate::incarnation`]), the one in force at the event's time (the side-band may be read a
//! little before or after the events around it), and by the command name it had then.
//!
//! # Memory
//! A stack is rebased the first time a (probe, incarnation, comm, stack id) key is seen, with the
//! mappings in force at that event's time. Rebased stacks are (binary, file offset) lists, so
//! equal call paths in different processes merge into one entry at once. Memory is therefore
//! bounded by unique keys and stacks, plus the entries waiting for their return (threads ×
//! nesting depth, within [`crate::calls::pairing`]'s budget), never by the number of events.

use std::collections::HashMap;
use std::path::Path;

use urec_format::hash::FxHashMap;
use urec_format::{
    plural, ArgType, BuildId, Event, EventKind, Finish, Header, LostSource, Probe, ProbeId,
    ProbeKind, Record, StackId,
};

use crate::calls::pairing::{is_goroutine, Pairing, Waiting};
use crate::calls::{began_ns, call_key, CallKey, Calls, ProbeSlot, Process, Verdict};
use crate::model::breakdown::{
    numeric, ArgKey, Group, GroupBy, GroupStats, GroupValue, Groups, Log2, ProbeGroups, RawKey,
    ValueHistogram, MAX_GROUPS,
};
use crate::model::frames::{code_frames, FrameId, FrameKind, FrameTable, Location};
use crate::model::histogram::LatencyHistogram;
use crate::model::{
    sort_functions, sort_metric, Function, ProcessCalls, Recording, Report, StackSummary,
};
use crate::symbolize::{EmbeddedSymbols, SymbolStats, Symbolizer};
use crate::{Error, ReportOptions};

/// Reads the recording at `path` and aggregates it. See the module docs for the definitions.
pub fn analyze(path: &Path, opts: &ReportOptions) -> Result<Report, Error> {
    let mut report = analyze_source(crate::input::Source::File(path), opts)?;
    if let Some(input) = report.inputs.first_mut() {
        input.file = path.display().to_string();
    }
    Ok(report)
}

/// [`analyze`] of a recording held in memory.
pub fn analyze_bytes(bytes: Vec<u8>, opts: &ReportOptions) -> Result<Report, Error> {
    analyze_source(
        crate::input::Source::Bytes(Path::new("(in memory)"), bytes),
        opts,
    )
}

fn analyze_source(source: crate::input::Source<'_>, opts: &ReportOptions) -> Result<Report, Error> {
    let ahead = crate::input::ReadAhead {
        symbols: false,
        attach: opts.filter.time.is_some(),
    };
    let (agg, status) = crate::input::read_ahead(
        source,
        ahead,
        |header, ahead| Aggregator::new(header, opts, ahead.attach_ns),
        |agg, record| {
            agg.push(record);
            Ok(())
        },
    )?;
    agg.finish(status.truncated, status.corrupt_chunks, status.warnings)
}

/// One code address a report would name: a binary, a file offset in it, and whether it is a
/// caller's return address (named by the instruction before it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameAddress {
    /// The binary's recorded path.
    pub binary: String,
    /// Its recorded build id.
    pub build_id: Option<urec_format::BuildId>,
    /// The file offset.
    pub offset: urec_format::FileOffset,
    /// A return address (every frame but the innermost).
    pub return_address: bool,
}

/// Every distinct address that `report` would symbolize in the recording at `path`: the
/// frames of its rebased stacks and the probes' own addresses. What the symbols section of
/// the file must name.
pub fn frame_addresses(path: &Path) -> Result<Vec<FrameAddress>, Error> {
    let opts = ReportOptions {
        no_symbolize: true,
        ..ReportOptions::default()
    };
    let (agg, _) = crate::input::read(
        crate::input::Source::File(path),
        |header| Aggregator::new(header, &opts, None),
        |agg, record| {
            agg.push(record);
            Ok(())
        },
    )?;
    let mut out = std::collections::BTreeSet::new();
    for p in &agg.probes {
        out.insert(FrameAddress {
            binary: p.probe.binary.clone(),
            build_id: p.probe.build_id.clone(),
            offset: p.probe.offset,
            return_address: false,
        });
    }
    for s in &agg.agg {
        for (depth, frame) in s.frames.iter().enumerate() {
            if let RFrame::Mapped { binary, offset } = *frame {
                let (path, build_id) = &agg.binaries[binary as usize];
                out.insert(FrameAddress {
                    binary: path.to_string(),
                    build_id: build_id.clone(),
                    offset: urec_format::FileOffset(offset),
                    return_address: depth > 0,
                });
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// A frame after rebasing: an interned binary and a file offset, or nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RFrame {
    Unknown,
    Mapped { binary: u32, offset: u64 },
}

/// A rebased stack, innermost first, plus its counters.
struct AggStack {
    probe: ProbeId,
    comm: u32,
    frames: Box<[RFrame]>,
    truncated: bool,
    calls: u64,
    total_ns: u64,
    /// pid → (calls, summed latency): bounded by the unique (stack, pid) pairs.
    pids: FxHashMap<u32, (u64, u64)>,
}

struct ProbeState {
    probe: Probe,
    selected: bool,
    calls: u64,
    returns: u64,
    unmatched: u64,
    in_flight: u64,
    lost: u64,
    /// Of `lost`, the events the ring buffer dropped (not the stacks that failed to unwind,
    /// whose events are in the file).
    lost_ring: u64,
    filtered: u64,
    /// The recorded calls' weights summed (`calls` when nothing was sampled).
    weighted_calls: u64,
    /// The largest weight of a recorded call (1: none sampled).
    max_weight: u32,
    /// The last in-kernel snapshot of the probe's counts.
    kernel: Option<urec_format::Aggregate>,
    latency: LatencyHistogram,
    /// (pid, comm) → calls.
    processes: FxHashMap<(u32, u32), u64>,
    /// `--group-by`: the key's argument (its place among the event's args), when it is one.
    group_arg: Option<ArgRef>,
    groups: ProbeGroups,
    /// `--hist`: the argument, and its values.
    hist_arg: Option<ArgRef>,
    hist: Log2,
}

/// Where an argument is found: which event of a call carries it, at which place, and its type.
#[derive(Clone, Copy)]
struct ArgRef {
    at_return: bool,
    index: usize,
    ty: ArgType,
}

impl ArgRef {
    /// The argument NAME of `probe` (`retval`: its `$retval` fetch); `None` if it has none.
    fn find(probe: &Probe, name: &str) -> Option<Self> {
        let spec = probe.args.iter().find(|a| a.name == name).or_else(|| {
            (name == "retval")
                .then(|| probe.args.iter().find(|a| a.fetch == "$retval"))
                .flatten()
        })?;
        let index = probe
            .args
            .iter()
            .filter(|a| a.at_return == spec.at_return)
            .position(|a| std::ptr::eq(a, spec))?;
        Some(ArgRef {
            at_return: spec.at_return,
            index,
            ty: spec.ty,
        })
    }

    fn value<'e>(&self, ev: &'e Event) -> Option<&'e urec_format::ArgValue> {
        ev.args.get(self.index)
    }
}

/// An entry waiting for its return.
struct Pending {
    time_ns: u64,
    pid: u32,
    comm: u32,
    stack: Option<u32>,
    /// The calls it stands for (the entry's weight: sampled under ring pressure).
    weight: u32,
    /// Inside `--time`; the return of an entry outside it is dropped with it.
    kept: bool,
    /// Its call was counted at the entry; otherwise it is counted when it ends (latency
    /// filters, or a key only the return carries).
    counted: bool,
    /// Its `--group-by` key, when the entry gives it (boxed, as the next: waiting entries
    /// are threads × depth, and most reports ask for neither).
    group: Option<Box<RawKey>>,
    /// Its `--hist` value, when the entry carries it and the call is counted at the return.
    hist: Option<Box<Option<i128>>>,
}

impl Waiting for Pending {
    fn time_ns(&self) -> u64 {
        self.time_ns
    }

    fn heap_bytes(&self) -> usize {
        let group = self.group.as_deref().map_or(0, |k| {
            std::mem::size_of::<RawKey>()
                + match k {
                    RawKey::Arg(ArgKey::Str(b)) => b.len(),
                    _ => 0,
                }
        });
        let hist = self
            .hist
            .as_ref()
            .map_or(0, |_| std::mem::size_of::<Option<i128>>());
        group + hist
    }
}

type StackKey = (ProbeId, u32, u32, Option<StackId>);

/// The calls of one (probe, incarnation, comm, stack id): one unique rebased stack's share
/// from one process.
struct Slot {
    /// Its unique rebased stack (in `agg`).
    agg: u32,
    pid: u32,
    calls: u64,
    total_ns: u64,
}
type DedupKey = (ProbeId, u32, Box<[RFrame]>, bool);

pub(crate) struct Aggregator<'o> {
    opts: &'o ReportOptions,
    /// The file's symbols section, handed to the symbolizer once every record is read.
    embedded: EmbeddedSymbols,
    /// Where the names came from, once the stacks are symbolized.
    symbol_stats: SymbolStats,
    header: Header,
    /// The call core: probes selected, processes, address spaces, filters.
    calls: Calls<'o>,
    /// Per probe, by [`ProbeSlot::index`].
    probes: Vec<ProbeState>,
    stacks: FxHashMap<StackId, urec_format::Stack>,
    binaries: Vec<(String, Option<BuildId>)>,
    binary_ids: HashMap<(String, Option<BuildId>), u32>,
    raw: FxHashMap<StackKey, u32>,
    slots: Vec<Slot>,
    agg: Vec<AggStack>,
    dedup: HashMap<DedupKey, u32>,
    /// Entries waiting for their return, per (incarnation, thread or goroutine, probe).
    pending: Pairing<CallKey, Pending>,
    events: u64,
    first_ns: Option<u64>,
    last_ns: u64,
    finish: Option<Finish>,
    lost: [u64; 3],
    unknown_probe_events: u64,
    /// Calls are counted when they end (`--min/max-latency`, or a `--group-by` key of the
    /// return), not at their entry.
    defer: bool,
    /// What the events were, whatever the filters: for the warning when nothing matched.
    seen: Seen,
}

/// What a recording's events hold, to tell a user whose filters matched nothing.
#[derive(Default)]
struct Seen {
    pids: std::collections::BTreeSet<u32>,
    tids: std::collections::BTreeSet<u32>,
    comms: std::collections::BTreeSet<u32>,
}

impl<'o> Aggregator<'o> {
    pub(crate) fn new(header: &Header, opts: &'o ReportOptions, attach_ns: Option<u64>) -> Self {
        let f = &opts.filter;
        let defer = f.by_latency();
        Self {
            calls: Calls::new(f, attach_ns),
            defer,
            seen: Seen::default(),
            embedded: EmbeddedSymbols::default(),
            symbol_stats: SymbolStats::default(),
            opts,
            header: header.clone(),
            probes: Vec::new(),
            stacks: FxHashMap::default(),
            binaries: Vec::new(),
            binary_ids: HashMap::new(),
            raw: FxHashMap::default(),
            slots: Vec::new(),
            agg: Vec::new(),
            dedup: HashMap::new(),
            pending: Pairing::default(),
            events: 0,
            first_ns: None,
            last_ns: 0,
            finish: None,
            lost: [0; 3],
            unknown_probe_events: 0,
        }
    }

    fn comm_name(&self, comm: u32) -> &str {
        self.calls.spaces.incarnations().comm_name(comm)
    }

    /// The place of probe `id` in `probes`, if the recording defines it.
    fn probe_index(&self, id: &ProbeId) -> Option<usize> {
        self.calls.slot(id).map(|s| s.index)
    }

    pub(crate) fn push(&mut self, record: Record) {
        let slot = self.calls.apply(&record);
        self.embedded.allow_for(&record);
        match record {
            Record::Probe(p) => {
                if let Some(slot) = slot {
                    self.probe(p, slot);
                }
            }
            Record::Process(_) | Record::ProcessEvent(_) => {}
            Record::Mapping(_) => {}
            Record::Stack(s) => {
                self.stacks.insert(s.id, s);
            }
            Record::Event(e) => self.event(&e),
            Record::Lost(l) => {
                let i = match l.source {
                    LostSource::Ring => 0,
                    LostSource::Sideband => 1,
                    LostSource::Unwind => 2,
                };
                self.lost[i] = self.lost[i].saturating_add(l.count);
                if let Some(pi) = l.probe.as_ref().and_then(|p| self.probe_index(p)) {
                    let p = &mut self.probes[pi];
                    p.lost = p.lost.saturating_add(l.count);
                    if l.source == LostSource::Ring {
                        p.lost_ring = p.lost_ring.saturating_add(l.count);
                    }
                }
            }
            Record::Filtered(f) => {
                if let Some(pi) = self.probe_index(&f.probe) {
                    self.probes[pi].filtered = self.probes[pi].filtered.saturating_add(f.count);
                }
            }
            Record::Aggregate(a) => {
                // Snapshots are cumulative: the last one holds.
                if let Some(pi) = self.probe_index(&a.probe) {
                    self.probes[pi].kernel = Some(a);
                }
            }
            Record::Finish(f) => self.finish = Some(f),
            Record::Symbols(s) => self.embedded.push(s),
        }
    }

    fn probe(&mut self, probe: Probe, slot: ProbeSlot) {
        let selected = slot.selected;
        if let Some(p) = self.probes.get_mut(slot.index) {
            // A repeated definition (no writer makes one) replaces the first rather than adding
            // a row: a file of one probe record repeated must not cost a row per copy.
            p.probe = probe;
            p.selected = selected;
            self.bind_args(slot.index);
            return;
        }
        self.probes.push(ProbeState {
            probe,
            selected,
            calls: 0,
            returns: 0,
            unmatched: 0,
            in_flight: 0,
            lost: 0,
            lost_ring: 0,
            filtered: 0,
            weighted_calls: 0,
            max_weight: 1,
            kernel: None,
            latency: LatencyHistogram::new(),
            processes: FxHashMap::default(),
            group_arg: None,
            groups: ProbeGroups::default(),
            hist_arg: None,
            hist: Log2::default(),
        });
        let pi = self.probes.len() - 1;
        self.bind_args(pi);
    }

    /// Finds the `--group-by` and `--hist` arguments in probe `pi`'s specs; a key only the
    /// return carries makes calls count when they end.
    fn bind_args(&mut self, pi: usize) {
        let p = &mut self.probes[pi];
        if let Some(GroupBy::Arg(name)) = &self.opts.group_by {
            p.group_arg = ArgRef::find(&p.probe, name);
            if p.group_arg.is_some_and(|a| a.at_return) && p.probe.kind == ProbeKind::EntryReturn {
                self.defer = true;
            }
        }
        if let Some(name) = &self.opts.hist {
            p.hist_arg = ArgRef::find(&p.probe, name);
        }
    }

    fn event(&mut self, ev: &Event) {
        self.events += 1;
        self.first_ns = Some(self.first_ns.map_or(ev.time_ns, |t| t.min(ev.time_ns)));
        self.last_ns = self.last_ns.max(ev.time_ns);
        let (gen, slot) = match self.calls.event(ev) {
            Verdict::Unknown => {
                self.unknown_probe_events += 1;
                return;
            }
            Verdict::Unselected => return,
            Verdict::Dropped(gen) => {
                self.see(ev, gen);
                return;
            }
            Verdict::Kept(gen, slot) => {
                self.see(ev, gen);
                (gen, slot)
            }
        };
        let pi = slot.index;
        match (ev.kind, slot.kind) {
            (EventKind::Entry, ProbeKind::EntryReturn) => self.entry(pi, ev, gen),
            (EventKind::Entry, _) => {
                // Entry-only: no latency, so latency filters keep none of them.
                if !self.calls.in_window(ev.time_ns) || self.defer {
                    return;
                }
                let stack = self.stack_key(ev, gen);
                let key = self.group_key(pi, ev, gen, Some(stack));
                self.count_call(pi, ev.pid, gen.comm, Some(stack), key.as_ref(), ev.weight);
                self.hist_value(pi, ev);
            }
            (EventKind::Return, ProbeKind::Return) => {
                if !self.calls.in_window(began_ns(ev)) {
                    return;
                }
                if self.calls.by_latency()
                    && !ev.latency_ns.is_some_and(|l| self.calls.keeps_latency(l))
                {
                    return;
                }
                let stack = self.stack_key(ev, gen);
                let key = self.group_key(pi, ev, gen, Some(stack));
                self.count_call(pi, ev.pid, gen.comm, Some(stack), key.as_ref(), ev.weight);
                self.probes[pi].returns += 1;
                if let Some(lat) = ev.latency_ns {
                    self.add_latency(pi, Some(stack), key.as_ref(), lat, ev.weight);
                }
                self.hist_value(pi, ev);
            }
            (EventKind::Return, _) => self.pair_return(pi, ev, gen),
        }
    }

    /// Notes what the selected probes' events hold, whatever the filters: for the warning when
    /// none matched.
    fn see(&mut self, ev: &Event, gen: Process) {
        if self.calls.filtering() {
            self.seen.pids.insert(ev.pid);
            self.seen.tids.insert(ev.tid);
            self.seen.comms.insert(gen.comm);
        }
    }

    fn entry(&mut self, pi: usize, ev: &Event, gen: Process) {
        let kept = self.calls.in_window(ev.time_ns);
        let mut pending = Pending {
            time_ns: ev.time_ns,
            pid: ev.pid,
            comm: gen.comm,
            stack: None,
            weight: ev.weight,
            kept,
            counted: false,
            group: None,
            hist: None,
        };
        if kept {
            let stack = self.stack_key(ev, gen);
            pending.stack = Some(stack);
            pending.group = self.group_key(pi, ev, gen, Some(stack)).map(Box::new);
            if self.defer {
                let p = &self.probes[pi];
                pending.hist = p
                    .hist_arg
                    .filter(|a| !a.at_return)
                    .map(|a| Box::new(a.value(ev).and_then(|v| numeric(v, a.ty))));
            } else {
                pending.counted = true;
                self.count_call(
                    pi,
                    ev.pid,
                    gen.comm,
                    Some(stack),
                    pending.group.as_deref(),
                    ev.weight,
                );
                self.hist_value(pi, ev);
            }
        }
        // What the bound pushes out is unmatched: its return was lost, or never comes.
        let mut evicted = Vec::new();
        self.pending
            .push(call_key(ev, gen), pending, |(_, _, probe), old| {
                evicted.push((probe, old))
            });
        for (probe, old) in evicted {
            if let Some(pi) = self.probe_index(&probe) {
                self.abandon(pi, old, false);
            }
        }
    }

    /// An entry whose return will never be paired: in flight at the end of the file, or
    /// unmatched (its process ended, or it was pushed out). A call not counted yet counts now,
    /// unless latency filters are on (its latency is unknown).
    fn abandon(&mut self, pi: usize, entry: Pending, in_flight: bool) {
        if !entry.kept {
            return;
        }
        if !entry.counted {
            if self.calls.by_latency() {
                return;
            }
            let key = match (&entry.group, &self.opts.group_by) {
                (Some(k), _) => Some((**k).clone()),
                (None, Some(_)) => Some(RawKey::Arg(ArgKey::Missing)),
                (None, None) => None,
            };
            self.count_call(
                pi,
                entry.pid,
                entry.comm,
                entry.stack,
                key.as_ref(),
                entry.weight,
            );
            if let Some(v) = entry.hist {
                self.probes[pi].hist.record(*v);
            }
        }
        let p = &mut self.probes[pi];
        if in_flight {
            p.in_flight += 1;
        } else {
            p.unmatched += 1;
        }
    }

    /// The `--group-by` key of a call, from the event that carries it (`None` when there is
    /// no grouping, or the key is an argument of the other event of the call).
    fn group_key(&self, pi: usize, ev: &Event, gen: Process, stack: Option<u32>) -> Option<RawKey> {
        let by = self.opts.group_by.as_ref()?;
        Some(match by {
            GroupBy::Pid => RawKey::Pid(ev.pid),
            GroupBy::Tid => RawKey::Tid(ev.tid),
            GroupBy::Comm => RawKey::Comm(gen.comm),
            GroupBy::Caller => RawKey::Stack(stack?),
            GroupBy::Arg(_) => {
                let p = &self.probes[pi];
                match p.group_arg {
                    Some(a) if a.at_return == (ev.kind == EventKind::Return) => {
                        RawKey::Arg(ArgKey::of(a.value(ev)))
                    }
                    Some(_) => return None,
                    None => RawKey::Arg(ArgKey::Missing),
                }
            }
        })
    }

    /// Counts a recorded call that stands for `weight` calls (1, or 2^k when the recorder
    /// sampled under ring pressure): `calls` counts it once (the recorded calls); the
    /// per-process counts, groups and stacks count its weight, estimates of all the calls.
    fn count_call(
        &mut self,
        pi: usize,
        pid: u32,
        comm: u32,
        stack: Option<u32>,
        key: Option<&RawKey>,
        weight: u32,
    ) {
        let w = u64::from(weight);
        let p = &mut self.probes[pi];
        p.calls += 1;
        p.weighted_calls = p.weighted_calls.saturating_add(w);
        p.max_weight = p.max_weight.max(weight);
        let n = p.processes.entry((pid, comm)).or_default();
        *n = n.saturating_add(w);
        if let Some(k) = key {
            let g = p.groups.slot(k);
            g.calls = g.calls.saturating_add(w);
        }
        if let Some(s) = stack {
            // Per (stack, incarnation) slot: the per-process counts of pprof and the stack's
            // own come from these at the end, with no lookup per call.
            let s = &mut self.slots[s as usize];
            s.calls = s.calls.saturating_add(w);
        }
    }

    /// A matched call's latency: once into the latency distributions (a sample of them when
    /// weighted), `weight` times into its stack's total.
    fn add_latency(
        &mut self,
        pi: usize,
        stack: Option<u32>,
        key: Option<&RawKey>,
        lat: u64,
        weight: u32,
    ) {
        let p = &mut self.probes[pi];
        p.latency.record(lat);
        if let Some(k) = key {
            p.groups.slot(k).latency.record(lat);
        }
        if let Some(s) = stack {
            let s = &mut self.slots[s as usize];
            s.total_ns = s
                .total_ns
                .saturating_add(lat.saturating_mul(u64::from(weight)));
        }
    }

    /// Records the `--hist` value `ev` carries, if it is the event that carries it.
    fn hist_value(&mut self, pi: usize, ev: &Event) {
        let p = &mut self.probes[pi];
        if let Some(a) = p.hist_arg {
            if a.at_return == (ev.kind == EventKind::Return) {
                p.hist.record(a.value(ev).and_then(|v| numeric(v, a.ty)));
            }
        }
    }

    fn pair_return(&mut self, pi: usize, ev: &Event, gen: Process) {
        let key = call_key(ev, gen);
        // A goroutine's calls nest: entries above the one this return takes were skipped by
        // a panic (recovered further up) and are unmatched.
        let mut abandoned = Vec::new();
        let popped = self.pending.pop_for_return_unwinding(
            &key,
            ev.time_ns,
            ev.latency_ns,
            is_goroutine(key.1),
            |e| abandoned.push(e),
        );
        for e in abandoned {
            self.abandon(pi, e, false);
        }
        let latency = match (ev.latency_ns, &popped) {
            (Some(lat), _) => Some(lat),
            (None, Some(entry)) => Some(ev.time_ns.saturating_sub(entry.time_ns)),
            (None, None) => None,
        };
        let Some(entry) = popped else {
            // A return without its entry: judged by when the call began, if that is known.
            let began = ev.time_ns.saturating_sub(latency.unwrap_or(0));
            if !self.calls.in_window(began) {
                return;
            }
            if self.calls.by_latency() {
                // Latency known and in range: a call, even without its entry (no stack).
                if let Some(lat) = latency.filter(|&l| self.calls.keeps_latency(l)) {
                    let key = self.group_key(pi, ev, gen, None);
                    self.count_call(pi, ev.pid, gen.comm, None, key.as_ref(), ev.weight);
                    self.probes[pi].returns += 1;
                    self.add_latency(pi, None, key.as_ref(), lat, ev.weight);
                    self.hist_value(pi, ev);
                }
                return;
            }
            let p = &mut self.probes[pi];
            p.returns += 1;
            p.unmatched += 1;
            if let Some(lat) = latency {
                p.latency.record(lat);
            }
            self.hist_value(pi, ev);
            return;
        };
        if !entry.kept {
            return; // its call is outside --time
        }
        if self.calls.by_latency() && !latency.is_some_and(|l| self.calls.keeps_latency(l)) {
            return;
        }
        self.probes[pi].returns += 1;
        let key = match entry.group {
            Some(k) => Some(*k),
            None => self.group_key(pi, ev, gen, entry.stack),
        };
        if !entry.counted {
            self.count_call(
                pi,
                ev.pid,
                entry.comm,
                entry.stack,
                key.as_ref(),
                entry.weight,
            );
            if let Some(v) = entry.hist {
                self.probes[pi].hist.record(*v);
            }
        }
        if let Some(lat) = latency {
            self.add_latency(pi, entry.stack, key.as_ref(), lat, entry.weight);
        }
        self.hist_value(pi, ev);
    }

    /// The aggregation slot of this event's stack, rebasing it on first sight.
    fn stack_key(&mut self, ev: &Event, gen: Process) -> u32 {
        let raw: StackKey = (ev.probe, gen.incarnation, gen.comm, ev.stack);
        if let Some(&i) = self.raw.get(&raw) {
            return i;
        }
        let agg = self.agg_slot(ev, gen);
        let slot = self.slots.len() as u32;
        self.slots.push(Slot {
            agg,
            pid: ev.pid,
            calls: 0,
            total_ns: 0,
        });
        self.raw.insert(raw, slot);
        slot
    }

    /// The unique rebased stack of this event's stack, rebasing it on first sight.
    fn agg_slot(&mut self, ev: &Event, gen: Process) -> u32 {
        let (frames, truncated) = match ev.stack.and_then(|id| self.stacks.get(&id)) {
            None => (Box::default(), false),
            Some(stack) => {
                let mut out = Vec::with_capacity(stack.frames.len());
                for &addr in &stack.frames {
                    out.push(match self.calls.spaces.lookup(ev.pid, ev.time_ns, addr) {
                        None => RFrame::Unknown,
                        Some(m) => {
                            let key = (m.path.to_string(), m.build_id.cloned());
                            let binary = match self.binary_ids.get(&key) {
                                Some(&b) => b,
                                None => {
                                    let b = self.binaries.len() as u32;
                                    self.binaries.push(key.clone());
                                    self.binary_ids.insert(key, b);
                                    b
                                }
                            };
                            RFrame::Mapped {
                                binary,
                                offset: m.offset.0,
                            }
                        }
                    });
                }
                (out.into_boxed_slice(), stack.truncated)
            }
        };
        let dedup: DedupKey = (ev.probe, gen.comm, frames, truncated);
        let idx = match self.dedup.get(&dedup) {
            Some(&i) => i,
            None => {
                let i = self.agg.len() as u32;
                self.agg.push(AggStack {
                    probe: ev.probe,
                    comm: gen.comm,
                    frames: dedup.2.clone(),
                    truncated,
                    calls: 0,
                    total_ns: 0,
                    pids: FxHashMap::default(),
                });
                self.dedup.insert(dedup, i);
                i
            }
        };
        idx
    }

    pub(crate) fn finish(
        mut self,
        truncated: bool,
        corrupt_chunks: u64,
        mut warnings: Vec<String>,
    ) -> Result<Report, Error> {
        self.calls.check_probes()?;
        if self.unknown_probe_events > 0 {
            warnings.push(format!(
                "{} a probe the recording does not define; ignored",
                plural(self.unknown_probe_events, "event names", "events name")
            ));
        }
        self.check_arg_names()?;
        // Entries still waiting: in flight if their process lived on, unmatched otherwise.
        let mut waiting = self.pending.drain();
        // In a fixed order: counting a call may add a group, and the cap must fall alike.
        // (Stable: each key's entries stay oldest first.)
        waiting.sort_by_key(|(key, _)| *key);
        for ((gen, _tid, probe), entry) in waiting {
            if let Some(pi) = self.probe_index(&probe) {
                let in_flight = !self.calls.spaces.incarnations().ended(gen);
                self.abandon(pi, entry, in_flight);
            }
        }

        for slot in &self.slots {
            let a = &mut self.agg[slot.agg as usize];
            a.calls = a.calls.saturating_add(slot.calls);
            a.total_ns = a.total_ns.saturating_add(slot.total_ns);
            if slot.calls > 0 || slot.total_ns > 0 {
                let p = a.pids.entry(slot.pid).or_default();
                p.0 = p.0.saturating_add(slot.calls);
                p.1 = p.1.saturating_add(slot.total_ns);
            }
        }
        let (stacks, frames, unknown_frames, callers) = self.symbolize_stacks(&mut warnings);
        let groups = self.groups(&callers);
        let histograms = self.opts.hist.as_ref().map(|arg| {
            self.probes
                .iter()
                .filter(|p| p.selected && p.hist_arg.is_some())
                .map(|p| ValueHistogram {
                    probe: p.probe.name.clone(),
                    arg: arg.clone(),
                    buckets: p.hist.buckets(),
                    faults: p.hist.faults,
                })
                .collect()
        });
        if let Some(w) = self.nothing_matched() {
            warnings.push(w);
        }

        let mut functions: Vec<Function> = Vec::new();
        let mut names = Vec::new();
        let filtering = self.calls.filtering();
        for mut p in std::mem::take(&mut self.probes) {
            if !p.selected {
                continue;
            }
            let recorded_calls = p.calls;
            let sampled = p.kernel.as_ref().map_or(0, |k| k.sampled);
            // The kernel's counts stand in for the events' where events are missing, unless a
            // filter asks about events (SPEC.md, "Exact at any rate").
            let from_kernel = match &p.kernel {
                Some(k) if !filtering && (p.lost_ring > 0 || k.sampled > 0) => {
                    p.calls = k.calls;
                    p.returns = k.returns;
                    p.in_flight = k.in_flight;
                    // Entries and returns unmatched for want of their lost partner are no
                    // calls the kernel missed.
                    p.unmatched = 0;
                    if let Some(l) = &k.latency {
                        p.latency = LatencyHistogram::from_kernel(l);
                    }
                    true
                }
                _ => false,
            };
            names.push(p.probe.name.clone());
            let mut processes: Vec<ProcessCalls> = p
                .processes
                .iter()
                .map(|(&(pid, comm), &calls)| ProcessCalls {
                    pid,
                    comm: self.comm_name(comm).to_string(),
                    calls,
                })
                .collect();
            processes.sort_by(|a, b| {
                b.calls
                    .cmp(&a.calls)
                    .then(a.pid.cmp(&b.pid))
                    .then(a.comm.cmp(&b.comm))
            });
            functions.push(Function {
                probe: p.probe.name,
                binary: p.probe.binary,
                symbol: p.probe.symbol,
                kind: p.probe.kind,
                calls: p.calls,
                returns: p.returns,
                in_flight: p.in_flight,
                unmatched: p.unmatched,
                lost: p.lost,
                filtered: p.filtered,
                recorded_calls,
                weighted_calls: p.weighted_calls,
                max_weight: p.max_weight,
                sampled,
                from_kernel,
                latency: p.latency,
                processes,
            });
        }
        sort_functions(&mut functions, self.opts.sort);

        let duration_ns = match &self.finish {
            Some(f) if f.stop_ns >= f.attach_ns => f.stop_ns - f.attach_ns,
            _ => self
                .first_ns
                .map_or(0, |first| self.last_ns.saturating_sub(first)),
        };
        let recording = Recording {
            command: urec_format::shell_words(&self.header.command),
            workload: self.header.workload.clone(),
            host: self.header.host.clone(),
            kernel: self.header.kernel.clone(),
            duration_ns,
            events: self.events,
            lost_ring: self.lost[0],
            lost_sideband: self.lost[1],
            lost_unwind: self.lost[2],
            truncated,
            corrupt_chunks,
            probes: names,
            symbols: std::mem::take(&mut self.symbol_stats),
            processes: crate::model::processes::summaries(
                self.calls.spaces.incarnations(),
                &self.header.host,
            ),
        };
        if unknown_frames > 0 {
            warnings.push(format!(
                "{} in no recorded mapping and show as [unknown]",
                plural(unknown_frames, "stack frame fell", "stack frames fell")
            ));
        }
        let inputs = vec![crate::model::Input::of(&recording)];
        Ok(Report {
            recording,
            functions,
            stacks,
            frames,
            groups,
            histograms,
            show_zero: self.opts.show_zero,
            unknown_frames,
            warnings,
            inputs,
            diff: None,
        })
    }

    /// Names every unique rebased stack, outermost first, and merges stacks that end up with
    /// the same names.
    fn symbolize_stacks(
        &mut self,
        warnings: &mut Vec<String>,
    ) -> (Vec<StackSummary>, FrameTable, u64, Vec<Option<String>>) {
        let mut symbolizer = Symbolizer::new(self.opts.symbolize.clone());
        if !self.embedded.is_empty() {
            symbolizer.set_embedded(std::mem::take(&mut self.embedded));
        }
        if !self.opts.no_symbolize {
            // Every frame once first, so that debuginfod fetches for all binaries at once.
            symbolizer.begin_batch();
            for s in self.agg.iter().filter(|s| s.calls > 0 || s.total_ns > 0) {
                for (depth, frame) in s.frames.iter().enumerate() {
                    if let RFrame::Mapped { binary, offset } = *frame {
                        let (path, build_id) = &self.binaries[binary as usize];
                        symbolizer.symbolize(
                            path,
                            build_id.as_ref(),
                            urec_format::FileOffset(offset),
                            depth > 0,
                        );
                    }
                }
            }
            symbolizer.end_batch();
        }
        let mut table = FrameTable::new();
        // The frames of each (binary, offset, return address) once.
        let mut named: FxHashMap<(u32, u64, bool), Box<[FrameId]>> = FxHashMap::default();
        struct Merged {
            calls: u64,
            total_ns: u64,
            /// The frames of the contributing path with the most calls, and its calls.
            frames: Vec<FrameId>,
            best: u64,
            pids: FxHashMap<u32, (u64, u64)>,
        }
        let mut merged: HashMap<(ProbeId, u32, Vec<u32>), Merged> = HashMap::new();
        let mut unknown = 0u64;
        let by_caller = self.opts.group_by == Some(GroupBy::Caller);
        let mut callers = Vec::new();
        for s in &self.agg {
            if by_caller {
                callers.push(None);
            }
            if s.calls == 0 && s.total_ns == 0 {
                continue; // the stack of calls that filters dropped
            }
            let Some(pi) = self.probe_index(&s.probe) else {
                continue;
            };
            let probe = &self.probes[pi].probe;
            let mut ids = Vec::with_capacity(s.frames.len() + 1);
            if s.truncated {
                ids.push(table.intern("[truncated]", FrameKind::Truncated));
            }
            if s.frames.is_empty() {
                let name = if probe.symbol.is_empty() {
                    &probe.name
                } else {
                    &probe.symbol
                };
                let location = Location {
                    binary: probe.binary.clone(),
                    offset: probe.offset.0,
                    file: None,
                    line: None,
                    inline_depth: 0,
                    unnamed: None,
                    build_id: probe.build_id.clone(),
                };
                ids.push(table.intern(name, FrameKind::Code(location)));
            }
            for (depth, frame) in s.frames.iter().enumerate().rev() {
                match *frame {
                    RFrame::Unknown => {
                        unknown = unknown.saturating_add(s.calls);
                        ids.push(table.intern("[unknown]", FrameKind::Unmapped));
                    }
                    RFrame::Mapped { binary, offset } => {
                        let key = (binary, offset, depth > 0);
                        let frames = named.entry(key).or_insert_with(|| {
                            let (path, build_id) = &self.binaries[binary as usize];
                            code_frames(
                                (!self.opts.no_symbolize).then_some(&mut symbolizer),
                                path,
                                build_id.as_ref(),
                                offset,
                                depth > 0,
                            )
                            .into_iter()
                            .map(|(name, location)| table.intern(&name, FrameKind::Code(location)))
                            .collect()
                        });
                        ids.extend_from_slice(frames);
                    }
                }
            }
            if by_caller {
                // The frame below the probed function: the last but one, outermost first.
                let caller = ids
                    .len()
                    .checked_sub(2)
                    .map(|i| ids[i])
                    .filter(|&id| !matches!(table.get(id).kind, FrameKind::Truncated))
                    .map(|id| table.name(id).to_string());
                if let Some(slot) = callers.last_mut() {
                    *slot = caller;
                }
            }
            let names: Vec<u32> = ids.iter().map(|&id| table.name_key(id)).collect();
            let e = merged
                .entry((s.probe, s.comm, names))
                .or_insert_with(|| Merged {
                    calls: 0,
                    total_ns: 0,
                    frames: Vec::new(),
                    best: 0,
                    pids: FxHashMap::default(),
                });
            e.calls = e.calls.saturating_add(s.calls);
            e.total_ns = e.total_ns.saturating_add(s.total_ns);
            for (&pid, &(calls, total)) in &s.pids {
                let p = e.pids.entry(pid).or_default();
                p.0 = p.0.saturating_add(calls);
                p.1 = p.1.saturating_add(total);
            }
            if e.frames.is_empty() || s.calls > e.best {
                e.frames = ids;
                e.best = s.calls;
            }
        }
        warnings.extend(symbolizer.take_warnings());
        self.symbol_stats = symbolizer.stats();
        let mut stacks: Vec<StackSummary> = merged
            .into_iter()
            .map(|((probe, comm, _), m)| StackSummary {
                probe: self
                    .probe_index(&probe)
                    .map(|pi| self.probes[pi].probe.name.clone())
                    .unwrap_or_default(),
                comm: self.comm_name(comm).to_string(),
                frames: m.frames,
                calls: m.calls,
                total_ns: m.total_ns,
                processes: crate::model::StackProcess::from_pids(m.pids),
            })
            .collect();
        let names = |s: &StackSummary| {
            s.frames
                .iter()
                .map(|&id| table.name(id))
                .collect::<Vec<_>>()
        };
        stacks.sort_by(|a, b| {
            b.calls
                .cmp(&a.calls)
                .then_with(|| names(a).cmp(&names(b)))
                .then_with(|| a.probe.cmp(&b.probe))
                .then_with(|| a.comm.cmp(&b.comm))
        });
        (stacks, table, unknown, callers)
    }

    /// `--group-by ARG` and `--hist ARG` must name an argument of at least one selected probe.
    fn check_arg_names(&self) -> Result<(), Error> {
        let selected = || self.probes.iter().filter(|p| p.selected);
        let mut wanted = Vec::new();
        if let Some(GroupBy::Arg(name)) = &self.opts.group_by {
            if !selected().any(|p| p.group_arg.is_some()) {
                wanted.push(("--group-by", name));
            }
        }
        if let Some(name) = &self.opts.hist {
            if !selected().any(|p| p.hist_arg.is_some()) {
                wanted.push(("--hist", name));
            }
        }
        let Some((flag, name)) = wanted.first() else {
            return Ok(());
        };
        let mut names: Vec<&str> = selected()
            .flat_map(|p| p.probe.args.iter().map(|a| a.name.as_str()))
            .collect();
        names.sort_unstable();
        names.dedup();
        let available = if names.is_empty() {
            "it fetches no arguments".to_string()
        } else {
            format!("its arguments are: {}", names.join(", "))
        };
        Err(Error::NoSuchArg {
            flag,
            name: (*name).clone(),
            available,
        })
    }

    /// The `--group-by` rows: keys named, equal names merged (callers), the cap applied, and
    /// sorted per probe by `--sort`.
    fn groups(&mut self, callers: &[Option<String>]) -> Option<Groups> {
        let by = self.opts.group_by.clone()?;
        let mut rows = Vec::new();
        let mut capped = Vec::new();
        for p in self.probes.iter_mut().filter(|p| p.selected) {
            let mut merged: HashMap<GroupValue, GroupStats> = HashMap::new();
            for (key, stats) in std::mem::take(&mut p.groups.keys) {
                let value = match key {
                    RawKey::Pid(v) | RawKey::Tid(v) => GroupValue::Number(i128::from(v)),
                    RawKey::Comm(c) => {
                        GroupValue::Text(self.calls.spaces.incarnations().comm_name(c).to_string())
                    }
                    RawKey::Stack(i) => callers
                        .get(
                            self.slots
                                .get(i as usize)
                                .map_or(usize::MAX, |s| s.agg as usize),
                        )
                        .cloned()
                        .flatten()
                        .map_or(GroupValue::Null, GroupValue::Text),
                    RawKey::Arg(a) => match p.group_arg {
                        Some(arg) => GroupValue::of_arg(&a, arg.ty),
                        None => GroupValue::Null,
                    },
                };
                let e = merged.entry(value).or_default();
                e.calls = e.calls.saturating_add(stats.calls);
                e.latency.merge(&stats.latency);
            }
            let mut list: Vec<(GroupValue, GroupStats)> = merged.into_iter().collect();
            let metric = |g: &GroupStats| sort_metric(g.calls, &g.latency, self.opts.sort);
            list.sort_by(|a, b| metric(&b.1).cmp(&metric(&a.1)).then_with(|| a.0.cmp(&b.0)));
            let mut other = std::mem::take(&mut p.groups.other);
            if list.len() > MAX_GROUPS {
                for (_, g) in list.drain(MAX_GROUPS..) {
                    other.calls = other.calls.saturating_add(g.calls);
                    other.latency.merge(&g.latency);
                }
                p.groups.overflowed = true;
            }
            for (value, stats) in list {
                rows.push(Group {
                    probe: p.probe.name.clone(),
                    value,
                    stats,
                });
            }
            if p.groups.overflowed {
                capped.push(p.probe.name.clone());
                rows.push(Group {
                    probe: p.probe.name.clone(),
                    value: GroupValue::Other,
                    stats: other,
                });
            }
        }
        Some(Groups {
            key: by.name().to_string(),
            rows,
            capped,
        })
    }

    /// The warning when filters kept no call: what the recording does hold.
    fn nothing_matched(&self) -> Option<String> {
        if !self.calls.filtering() || self.events == 0 {
            return None;
        }
        if self.probes.iter().any(|p| p.selected && p.calls > 0) {
            return None;
        }
        let f = &self.opts.filter;
        let mut holds = Vec::new();
        let list = |v: Vec<String>| urec_format::name_list(&v, 10);
        if !f.comms.is_empty() {
            let comms = self
                .seen
                .comms
                .iter()
                .map(|&c| self.comm_name(c).to_string())
                .collect();
            holds.push(format!("comms {}", list(comms)));
        }
        if !f.pids.is_empty() {
            holds.push(format!(
                "pids {}",
                list(self.seen.pids.iter().map(u32::to_string).collect())
            ));
        }
        if !f.tids.is_empty() {
            holds.push(format!(
                "tids {}",
                list(self.seen.tids.iter().map(u32::to_string).collect())
            ));
        }
        if f.time.is_some() {
            let origin = self.calls.attach_ns().or(self.first_ns).unwrap_or(0);
            let secs = |t: u64| t.saturating_sub(origin) as f64 / 1e9;
            holds.push(format!(
                "events from {:.3} s to {:.3} s after the attach",
                secs(self.first_ns.unwrap_or(0)),
                secs(self.last_ns)
            ));
        }
        if self.calls.by_latency() {
            let all = self
                .probes
                .iter()
                .filter(|p| p.selected)
                .filter_map(|p| p.latency.stats())
                .fold(None, |acc: Option<(u64, u64)>, s| {
                    Some(acc.map_or((s.min, s.max), |(lo, hi)| (lo.min(s.min), hi.max(s.max))))
                });
            holds.push(match all {
                Some((lo, hi)) => format!(
                    "latencies from {} to {}",
                    crate::human_ns(lo),
                    crate::human_ns(hi)
                ),
                None => "no measured latency".to_string(),
            });
        }
        Some(format!(
            "no call matched the filters; the recording holds {}",
            holds.join("; ")
        ))
    }
}
