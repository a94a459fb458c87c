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

//!
//! # Layout
//! This module holds the pass's state; its work is split by what it does: [`count`] judges and
//! counts calls event by event, [`stacks`] rebases stacks on first sight and names them at the
//! end, [`finish`] turns the counts into the [`Report`].

mod count;
mod finish;
mod stacks;

use std::collections::HashMap;
use std::path::Path;

use urec_format::hash::FxHashMap;
use urec_format::{
    ArgType, BuildId, Event, Finish, Header, LostSource, Probe, ProbeId, ProbeKind, Record, StackId,
};

use crate::calls::paired::Entries;
use crate::calls::pairing::Waiting;
use crate::calls::{Calls, ProbeSlot};
use crate::interner::Interner;
use crate::model::breakdown::{ArgKey, GroupBy, Log2, ProbeGroups, RawKey};
use crate::model::histogram::LatencyHistogram;
use crate::model::Report;
use crate::symbolize::{EmbeddedSymbols, SymbolStats};
use crate::{Error, ReportOptions};

pub use stacks::{frame_addresses, BinaryAddress};

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
    /// The recorded Python frames, innermost first, merged in when the stack is named.
    python: Box<[urec_format::PyFrame]>,
    python_truncated: bool,
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
type DedupKey = (
    ProbeId,
    u32,
    Box<[RFrame]>,
    bool,
    Box<[urec_format::PyFrame]>,
    bool,
);

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
    /// The Python functions the stacks' Python frames name.
    py_codes: crate::python::PyCodes,
    /// What the merge of Python frames made of the stacks.
    python: crate::python::PythonCounts,
    /// The binaries of rebased frames: (path, build id), interned.
    binaries: Interner<(String, Option<BuildId>)>,
    raw: FxHashMap<StackKey, u32>,
    slots: Vec<Slot>,
    agg: Vec<AggStack>,
    dedup: HashMap<DedupKey, u32>,
    /// Entries waiting for their return, per (incarnation, thread or goroutine, probe).
    pending: Entries<Pending>,
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
            py_codes: Default::default(),
            python: Default::default(),
            binaries: Interner::default(),
            raw: FxHashMap::default(),
            slots: Vec::new(),
            agg: Vec::new(),
            dedup: HashMap::new(),
            pending: Entries::default(),
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
            Record::PyCode(c) => self.py_codes.insert(c),
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
}
