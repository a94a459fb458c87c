//! One streaming pass over a recording into a [`Report`].
//!
//! # Definitions (SPEC.md, "What the numbers mean")
//! - `calls`: entry events; for return-only probes, return events.
//! - `returns`: return events.
//! - latency: the recorder's `latency_ns` on the return event when present; otherwise the return
//!   is paired with the most recent unreturned entry of the same (process, thread, probe) — a
//!   per-thread stack, so recursion nests properly — and latency is the difference of their
//!   times. A measured return whose expected entry time lies clearly after the top pending entry
//!   (that entry is an outer call and this call's entry was lost) leaves the stack alone.
//! - `in_flight`: entries still waiting for their return at the end of the file, in processes
//!   that had not exited (or exec'd) by then; `unmatched`: returns with no entry to pair with,
//!   plus entries left over in processes that ended.
//!
//! # Process generations
//! The same addresses mean different code in different processes, and a pid may be reused or
//! exec a new program, so everything per process is keyed by a *generation*: a number that
//! changes on each `Process` record and each exec. Each pid keeps a short list of its
//! generations with their start times, and an event belongs to the generation in force at its
//! time (the side-band may be read a little before or after the events around it).
//!
//! # Memory
//! A stack is rebased the first time a (probe, generation, comm, stack id) key is seen, with the
//! mappings in force at that event's time. Rebased stacks are (binary, file offset) lists, so
//! equal call paths in different processes merge into one entry at once. Memory is therefore
//! bounded by unique keys and stacks, plus the per-thread pending entries (threads × nesting
//! depth, the depth capped at [`MAX_PENDING`]), never by the number of events.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;

use urec_format::{
    plural, BuildId, Event, EventKind, Finish, Header, LostSource, Probe, ProbeId, ProbeKind,
    ProcessChange, Record, StackId,
};

use crate::histogram::{LatencyHistogram, LatencyStats};
use crate::interner::Interner;
use crate::rebase::AddressSpaces;
use crate::symbolize::{EmbeddedSymbols, SymbolStats, Symbolizer};
use crate::{Error, ReportOptions, SortKey};

/// The recording as a whole (the `recording` object of `--json`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recording {
    /// urec's own command line, words joined by spaces (quoted where needed).
    pub command: String,
    /// The traced command's argv, when urec ran one.
    pub workload: Option<Vec<String>>,
    /// Host name of the recording machine.
    pub host: String,
    /// Kernel release of the recording machine.
    pub kernel: String,
    /// From attach to stop; without a clean end, from the first to the last event.
    pub duration_ns: u64,
    /// Probe events stored in the file (all of them, whatever the filters).
    pub events: u64,
    /// Events lost in the ring buffer.
    pub lost_ring: u64,
    /// Side-band records lost.
    pub lost_sideband: u64,
    /// Stacks that could not be unwound.
    pub lost_unwind: u64,
    /// The file ends before its clean end; everything up to its last complete chunk was read.
    pub truncated: bool,
    /// Damaged chunks that were skipped.
    pub corrupt_chunks: u64,
    /// Display names of the probes the report covers, in probe-id order.
    pub probes: Vec<String>,
    /// Where the frames' names came from (`recording.symbols` in JSON).
    pub symbols: SymbolStats,
}

impl Recording {
    /// Sum of every lost count.
    pub fn lost(&self) -> u64 {
        self.lost_ring
            .saturating_add(self.lost_sideband)
            .saturating_add(self.lost_unwind)
    }
}

/// Calls of one probe by one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessCalls {
    /// Process id.
    pub pid: u32,
    /// Its command name at the time of its first call.
    pub comm: String,
    /// Calls (as [`Function::calls`] counts them).
    pub calls: u64,
}

/// Everything about one probed function (a row of the table).
#[derive(Clone, Debug)]
pub struct Function {
    /// Display name (`bash:readline`).
    pub probe: String,
    /// Probed binary.
    pub binary: String,
    /// Probed symbol (empty for a raw address).
    pub symbol: String,
    /// Entry, return or both.
    pub kind: ProbeKind,
    /// Entry events (return events for return-only probes).
    pub calls: u64,
    /// Return events.
    pub returns: u64,
    /// Calls still running when recording stopped.
    pub in_flight: u64,
    /// Returns or entries whose partner was lost.
    pub unmatched: u64,
    /// Events of this probe the recorder lost.
    pub lost: u64,
    /// Calls the probe's predicate (`if EXPR`) rejected: not recorded, not lost.
    pub filtered: u64,
    /// Latencies of the matched calls.
    pub latency: LatencyHistogram,
    /// Calls per process, most calls first.
    pub processes: Vec<ProcessCalls>,
}

impl Function {
    /// Latency statistics, `None` when no call was matched.
    pub fn latency_stats(&self) -> Option<LatencyStats> {
        self.latency.stats()
    }
}

/// One unique symbolized call path of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSummary {
    /// Probe display name.
    pub probe: String,
    /// Command name of the calling process.
    pub comm: String,
    /// Function names, outermost first, the probed function last.
    pub frames: Vec<String>,
    /// Calls through this path.
    pub calls: u64,
    /// Summed latency of the matched calls through this path.
    pub total_ns: u64,
}

/// The result of [`analyze`]: what every output draws from.
#[derive(Clone, Debug)]
pub struct Report {
    /// The recording as a whole.
    pub recording: Recording,
    /// One per probe the report covers, in `--sort` order.
    pub functions: Vec<Function>,
    /// Unique call paths, most calls first, then by frames.
    pub stacks: Vec<StackSummary>,
    /// Stack frames (weighted by calls) that fell in no known mapping and show as `[unknown]`.
    pub unknown_frames: u64,
    /// Things the user should know (truncation, symbolization problems), each once.
    pub warnings: Vec<String>,
}

/// Reads the recording at `path` and aggregates it. See the module docs for the definitions.
pub fn analyze(path: &Path, opts: &ReportOptions) -> Result<Report, Error> {
    analyze_source(crate::input::Source::File(path), opts)
}

/// [`analyze`] of a recording held in memory.
pub fn analyze_bytes(bytes: Vec<u8>, opts: &ReportOptions) -> Result<Report, Error> {
    analyze_source(
        crate::input::Source::Bytes(Path::new("(in memory)"), bytes),
        opts,
    )
}

fn analyze_source(source: crate::input::Source<'_>, opts: &ReportOptions) -> Result<Report, Error> {
    let (agg, status) = crate::input::read(
        source,
        |header| Aggregator::new(header, opts),
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
        |header| Aggregator::new(header, &opts),
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
}

struct ProbeState {
    probe: Probe,
    selected: bool,
    calls: u64,
    returns: u64,
    unmatched: u64,
    in_flight: u64,
    lost: u64,
    filtered: u64,
    latency: LatencyHistogram,
    /// (pid, comm) → calls.
    processes: FxMap<(u32, u32), u64>,
}

#[derive(Clone, Copy)]
struct Generation {
    since_ns: u64,
    id: u32,
    comm: u32,
}

#[derive(Clone, Copy)]
struct Pending {
    time_ns: u64,
    stack: Option<u32>,
}

/// Entries kept waiting for their return per (process generation, thread, probe). The kernel
/// installs no return probe beyond 64 nested calls of a thread (`MAX_URETPROBE_DEPTH`), so an
/// entry this deep under newer ones can no longer be paired: a crafted file of entries without
/// returns would otherwise hold all of them. When a thread passes the cap, its oldest entry is
/// dropped and counted as unmatched (its return was lost, or never comes).
pub(crate) const MAX_PENDING: usize = 1024;

type RawKey = (ProbeId, u32, u32, Option<StackId>);
type DedupKey = (ProbeId, u32, Box<[RFrame]>, bool);

pub(crate) struct Aggregator<'o> {
    opts: &'o ReportOptions,
    /// The file's symbols section, handed to the symbolizer once every record is read.
    embedded: EmbeddedSymbols,
    /// Where the names came from, once the stacks are symbolized.
    symbol_stats: SymbolStats,
    header: Header,
    spaces: AddressSpaces,
    probes: Vec<ProbeState>,
    probe_index: FxMap<ProbeId, usize>,
    stacks: FxMap<StackId, urec_format::Stack>,
    pids: FxMap<u32, Vec<Generation>>,
    ended: HashSet<u32>,
    next_gen: u32,
    comms: Interner,
    binaries: Vec<(String, Option<BuildId>)>,
    binary_ids: HashMap<(String, Option<BuildId>), u32>,
    raw: FxMap<RawKey, u32>,
    agg: Vec<AggStack>,
    dedup: HashMap<DedupKey, u32>,
    pending: FxMap<(u32, u32, ProbeId), VecDeque<Pending>>,
    events: u64,
    first_ns: Option<u64>,
    last_ns: u64,
    finish: Option<Finish>,
    lost: [u64; 3],
    unknown_probe_events: u64,
}

impl<'o> Aggregator<'o> {
    pub(crate) fn new(header: &Header, opts: &'o ReportOptions) -> Self {
        Self {
            embedded: EmbeddedSymbols::default(),
            symbol_stats: SymbolStats::default(),
            opts,
            header: header.clone(),
            spaces: AddressSpaces::new(),
            probes: Vec::new(),
            probe_index: FxMap::default(),
            stacks: FxMap::default(),
            pids: FxMap::default(),
            ended: HashSet::new(),
            next_gen: 0,
            comms: Interner::default(),
            binaries: Vec::new(),
            binary_ids: HashMap::new(),
            raw: FxMap::default(),
            agg: Vec::new(),
            dedup: HashMap::new(),
            pending: FxMap::default(),
            events: 0,
            first_ns: None,
            last_ns: 0,
            finish: None,
            lost: [0; 3],
            unknown_probe_events: 0,
        }
    }

    fn comm_id(&mut self, comm: &str) -> u32 {
        self.comms.id(comm)
    }

    fn new_generation(&mut self, pid: u32, since_ns: u64, comm: &str) {
        let comm = self.comm_id(comm);
        let id = self.next_gen;
        self.next_gen += 1;
        let gens = self.pids.entry(pid).or_default();
        if let Some(prev) = gens.last() {
            self.ended.insert(prev.id);
        }
        gens.push(Generation { since_ns, id, comm });
    }

    /// The generation of `pid` in force at `time_ns` (and its comm then).
    fn generation(&mut self, pid: u32, time_ns: u64) -> Generation {
        if !self.pids.contains_key(&pid) {
            // Events of a process the side-band never described: one anonymous generation.
            self.new_generation(pid, 0, "[unknown]");
        }
        let gens = &self.pids[&pid];
        gens.iter()
            .rev()
            .find(|g| g.since_ns <= time_ns)
            .or_else(|| gens.first())
            .copied()
            .unwrap_or(Generation {
                since_ns: 0,
                id: u32::MAX,
                comm: 0,
            })
    }

    pub(crate) fn push(&mut self, record: Record) {
        match &record {
            Record::Process(_) | Record::ProcessEvent(_) | Record::Mapping(_) => {
                self.spaces.apply(&record)
            }
            _ => {}
        }
        match record {
            Record::Probe(p) => self.probe(p),
            Record::Process(p) => {
                let since = match (p.start_ns, self.pids.contains_key(&p.pid)) {
                    (Some(t), _) => t,
                    (None, false) => 0,
                    (None, true) => self.last_ns,
                };
                // The same process described again (no writer does it) is not a new
                // generation: a file of one Process record repeated must not cost one apiece.
                let comm = self.comm_id(&p.comm);
                let same = self
                    .pids
                    .get(&p.pid)
                    .and_then(|g| g.last())
                    .is_some_and(|g| g.since_ns == since && g.comm == comm);
                if !same {
                    self.new_generation(p.pid, since, &p.comm);
                }
            }
            Record::ProcessEvent(e) => match e.change {
                ProcessChange::Exec { comm, .. } => self.new_generation(e.pid, e.time_ns, &comm),
                ProcessChange::Comm(comm) => {
                    let comm = self.comm_id(&comm);
                    let cur = self.generation(e.pid, e.time_ns);
                    if let Some(gens) = self.pids.get_mut(&e.pid) {
                        gens.push(Generation {
                            since_ns: e.time_ns,
                            id: cur.id,
                            comm,
                        });
                    }
                }
                ProcessChange::Exit => {
                    let cur = self.generation(e.pid, e.time_ns);
                    self.ended.insert(cur.id);
                }
            },
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
                if let Some(&pi) = l.probe.as_ref().and_then(|p| self.probe_index.get(p)) {
                    self.probes[pi].lost = self.probes[pi].lost.saturating_add(l.count);
                }
            }
            Record::Filtered(f) => {
                if let Some(&pi) = self.probe_index.get(&f.probe) {
                    self.probes[pi].filtered = self.probes[pi].filtered.saturating_add(f.count);
                }
            }
            Record::Finish(f) => self.finish = Some(f),
            Record::Symbols(s) => self.embedded.push(s),
        }
    }

    fn probe(&mut self, probe: Probe) {
        let wanted = &self.opts.filter.probes;
        let selected = wanted.is_empty() || wanted.iter().any(|w| answers_to(&probe, w));
        if let Some(&pi) = self.probe_index.get(&probe.id) {
            // A repeated definition (no writer makes one) replaces the first rather than adding
            // a row: a file of one probe record repeated must not cost a row per copy.
            let p = &mut self.probes[pi];
            p.probe = probe;
            p.selected = selected;
            return;
        }
        self.probe_index.insert(probe.id, self.probes.len());
        self.probes.push(ProbeState {
            probe,
            selected,
            calls: 0,
            returns: 0,
            unmatched: 0,
            in_flight: 0,
            lost: 0,
            filtered: 0,
            latency: LatencyHistogram::new(),
            processes: FxMap::default(),
        });
    }

    fn event(&mut self, ev: &Event) {
        self.events += 1;
        self.first_ns = Some(self.first_ns.map_or(ev.time_ns, |t| t.min(ev.time_ns)));
        self.last_ns = self.last_ns.max(ev.time_ns);
        let Some(&pi) = self.probe_index.get(&ev.probe) else {
            self.unknown_probe_events += 1;
            return;
        };
        if !self.probes[pi].selected {
            return;
        }
        let filter = &self.opts.filter;
        if !filter.pids.is_empty() && !filter.pids.contains(&ev.pid) {
            return;
        }
        let gen = self.generation(ev.pid, ev.time_ns);
        if !filter.comms.is_empty() && !filter.comms.iter().any(|c| c == self.comms.name(gen.comm))
        {
            return;
        }
        let kind = self.probes[pi].probe.kind;
        let counts_call = match ev.kind {
            EventKind::Entry => true,
            EventKind::Return => kind == ProbeKind::Return,
        };
        let mut stack_idx = None;
        if counts_call {
            let p = &mut self.probes[pi];
            p.calls += 1;
            *p.processes.entry((ev.pid, gen.comm)).or_default() += 1;
            let idx = self.stack_key(ev, gen);
            self.agg[idx as usize].calls += 1;
            stack_idx = Some(idx);
        }
        match (ev.kind, kind) {
            (EventKind::Entry, ProbeKind::EntryReturn) => {
                let pending = self.pending.entry((gen.id, ev.tid, ev.probe)).or_default();
                if pending.len() >= MAX_PENDING {
                    pending.pop_front();
                    self.probes[pi].unmatched += 1;
                }
                pending.push_back(Pending {
                    time_ns: ev.time_ns,
                    stack: stack_idx,
                });
            }
            (EventKind::Entry, _) => {}
            (EventKind::Return, ProbeKind::Return) => {
                let p = &mut self.probes[pi];
                p.returns += 1;
                if let Some(lat) = ev.latency_ns {
                    p.latency.record(lat);
                    if let Some(i) = stack_idx {
                        let s = &mut self.agg[i as usize];
                        s.total_ns = s.total_ns.saturating_add(lat);
                    }
                }
            }
            (EventKind::Return, _) => {
                self.probes[pi].returns += 1;
                self.pair_return(pi, ev, gen);
            }
        }
    }

    fn pair_return(&mut self, pi: usize, ev: &Event, gen: Generation) {
        let key = (gen.id, ev.tid, ev.probe);
        let popped = match self.pending.get_mut(&key) {
            Some(stack) => match (stack.back(), ev.latency_ns) {
                (None, _) => None,
                (Some(top), Some(lat)) => {
                    // The call began at `expected`; an entry well before it is an outer call.
                    let expected = ev.time_ns.saturating_sub(lat);
                    let slack = 1_000 + lat / 100;
                    if top.time_ns.saturating_add(slack) < expected {
                        None
                    } else {
                        stack.pop_back()
                    }
                }
                (Some(_), None) => stack.pop_back(),
            },
            None => None,
        };
        // Empty stacks stay: a thread's next call reuses them (threads × probes at most).
        let latency = match (ev.latency_ns, popped) {
            (Some(lat), _) => Some(lat),
            (None, Some(entry)) => Some(ev.time_ns.saturating_sub(entry.time_ns)),
            (None, None) => None,
        };
        let p = &mut self.probes[pi];
        if popped.is_none() {
            p.unmatched += 1;
        }
        if let Some(lat) = latency {
            p.latency.record(lat);
            if let Some(i) = popped.and_then(|e| e.stack) {
                let s = &mut self.agg[i as usize];
                s.total_ns = s.total_ns.saturating_add(lat);
            }
        }
    }

    /// The aggregation slot of this event's stack, rebasing it on first sight.
    fn stack_key(&mut self, ev: &Event, gen: Generation) -> u32 {
        let raw: RawKey = (ev.probe, gen.id, gen.comm, ev.stack);
        if let Some(&i) = self.raw.get(&raw) {
            return i;
        }
        let (frames, truncated) = match ev.stack.and_then(|id| self.stacks.get(&id)) {
            None => (Box::default(), false),
            Some(stack) => {
                let mut out = Vec::with_capacity(stack.frames.len());
                for &addr in &stack.frames {
                    out.push(match self.spaces.lookup(ev.pid, ev.time_ns, addr) {
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
                });
                self.dedup.insert(dedup, i);
                i
            }
        };
        self.raw.insert(raw, idx);
        idx
    }

    pub(crate) fn finish(
        mut self,
        truncated: bool,
        corrupt_chunks: u64,
        mut warnings: Vec<String>,
    ) -> Result<Report, Error> {
        for name in &self.opts.filter.probes {
            if !self.probes.iter().any(|p| answers_to(&p.probe, name)) {
                let available = self
                    .probes
                    .iter()
                    .map(|p| p.probe.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Error::NoSuchProbe {
                    name: name.clone(),
                    available,
                });
            }
        }
        if self.unknown_probe_events > 0 {
            warnings.push(format!(
                "{} a probe the recording does not define; ignored",
                plural(self.unknown_probe_events, "event names", "events name")
            ));
        }
        // Entries still waiting: in flight if their process lived on, unmatched otherwise.
        for ((gen, _tid, probe), pending) in &self.pending {
            if let Some(&pi) = self.probe_index.get(probe) {
                let p = &mut self.probes[pi];
                if self.ended.contains(gen) {
                    p.unmatched += pending.len() as u64;
                } else {
                    p.in_flight += pending.len() as u64;
                }
            }
        }

        let (stacks, unknown_frames) = self.symbolize_stacks(&mut warnings);

        let mut functions: Vec<Function> = Vec::new();
        let mut names = Vec::new();
        for p in std::mem::take(&mut self.probes) {
            if !p.selected {
                continue;
            }
            names.push(p.probe.name.clone());
            let mut processes: Vec<ProcessCalls> = p
                .processes
                .iter()
                .map(|(&(pid, comm), &calls)| ProcessCalls {
                    pid,
                    comm: self.comms.name(comm).to_string(),
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
            command: shell_join(&self.header.command),
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
        };
        if unknown_frames > 0 {
            warnings.push(format!(
                "{} in no recorded mapping and show as [unknown]",
                plural(unknown_frames, "stack frame fell", "stack frames fell")
            ));
        }
        Ok(Report {
            recording,
            functions,
            stacks,
            unknown_frames,
            warnings,
        })
    }

    /// Names every unique rebased stack, outermost first, and merges stacks that end up with
    /// the same names.
    fn symbolize_stacks(&mut self, warnings: &mut Vec<String>) -> (Vec<StackSummary>, u64) {
        let mut symbolizer = Symbolizer::new(self.opts.symbolize.clone());
        if !self.embedded.is_empty() {
            symbolizer.set_embedded(std::mem::take(&mut self.embedded));
        }
        if !self.opts.no_symbolize {
            // Every frame once first, so that debuginfod fetches for all binaries at once.
            symbolizer.begin_batch();
            for s in &self.agg {
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
        let mut merged: HashMap<(ProbeId, u32, Vec<String>), (u64, u64)> = HashMap::new();
        let mut unknown = 0u64;
        for s in &self.agg {
            let Some(&pi) = self.probe_index.get(&s.probe) else {
                continue;
            };
            let probe = &self.probes[pi].probe;
            let mut names = Vec::with_capacity(s.frames.len() + 1);
            if s.truncated {
                names.push("[truncated]".to_string());
            }
            if s.frames.is_empty() {
                names.push(if probe.symbol.is_empty() {
                    probe.name.clone()
                } else {
                    probe.symbol.clone()
                });
            }
            for (depth, frame) in s.frames.iter().enumerate().rev() {
                match *frame {
                    RFrame::Unknown => {
                        unknown = unknown.saturating_add(s.calls);
                        names.push("[unknown]".to_string());
                    }
                    RFrame::Mapped { binary, offset } => {
                        let (path, build_id) = &self.binaries[binary as usize];
                        names.extend(frame_names(
                            (!self.opts.no_symbolize).then_some(&mut symbolizer),
                            path,
                            build_id.as_ref(),
                            offset,
                            depth > 0,
                        ));
                    }
                }
            }
            let e = merged.entry((s.probe, s.comm, names)).or_default();
            e.0 = e.0.saturating_add(s.calls);
            e.1 = e.1.saturating_add(s.total_ns);
        }
        warnings.extend(symbolizer.take_warnings());
        self.symbol_stats = symbolizer.stats();
        let mut stacks: Vec<StackSummary> = merged
            .into_iter()
            .map(|((probe, comm, frames), (calls, total_ns))| StackSummary {
                probe: self
                    .probe_index
                    .get(&probe)
                    .map(|&pi| self.probes[pi].probe.name.clone())
                    .unwrap_or_default(),
                comm: self.comms.name(comm).to_string(),
                frames,
                calls,
                total_ns,
            })
            .collect();
        stacks.sort_by(|a, b| {
            b.calls
                .cmp(&a.calls)
                .then_with(|| a.frames.cmp(&b.frames))
                .then_with(|| a.probe.cmp(&b.probe))
                .then_with(|| a.comm.cmp(&b.comm))
        });
        (stacks, unknown)
    }
}

/// A fast non-cryptographic hasher for the per-event maps, whose keys are small integers that
/// users do not choose adversarially (the Fx hash of rustc). SipHash took a third of the
/// report's time on 10M events.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut buf = [0u8; 8];
            buf[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(buf));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

/// `--probe NAME` selects `probe`: NAME is its display name, one of its specs, or its symbol,
/// alone or as `SYMBOL@0xVADDR` (how probes on local functions sharing a name are told apart).
/// A display name without its `@0xVADDR` selects every such probe: `usdt:demo:mark` names all
/// the sites of that USDT probe, `usdt:demo:mark@0x1234` one of them.
fn answers_to(probe: &Probe, name: &str) -> bool {
    probe.name == name
        || probe
            .name
            .rsplit_once("@0x")
            .is_some_and(|(base, _)| base == name)
        || probe.specs.iter().any(|s| s == name)
        || probe.symbol == name
        || name
            .strip_prefix(probe.symbol.as_str())
            .is_some_and(|rest| {
                rest.strip_prefix("@0x")
                    .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                    == Some(probe.vaddr.0)
            })
}

/// `bash+0x1234`: the name of a frame in a binary without a usable symbol.
fn offset_name(path: &str, offset: u64) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    format!("{base}+{offset:#x}")
}

/// The function names of the code at `offset` in `path`, outermost first (a function, then
/// those inlined into it; see [`Symbolizer::symbolize`]), or one `binary+0xOFF` when there is
/// no symbolizer (`no_symbolize`) or it finds nothing. Shared by `analyze` and `script` so
/// both name a frame alike.
pub(crate) fn frame_names(
    symbolizer: Option<&mut Symbolizer>,
    path: &str,
    build_id: Option<&BuildId>,
    offset: u64,
    return_address: bool,
) -> Vec<String> {
    let frames = symbolizer.map_or(&[][..], |s| {
        s.symbolize(
            path,
            build_id,
            urec_format::FileOffset(offset),
            return_address,
        )
    });
    if frames.is_empty() {
        return vec![offset_name(path, offset)];
    }
    frames
        .iter()
        .map(|f| f.display_name().to_string())
        .collect()
}

fn sort_functions(functions: &mut [Function], key: SortKey) {
    let metric = |f: &Function| -> u64 {
        let s = f.latency_stats();
        match key {
            SortKey::Calls => f.calls,
            SortKey::Total => s.map_or(0, |s| s.total),
            SortKey::Mean => s.map_or(0, |s| s.mean),
            SortKey::P99 => s.map_or(0, |s| s.p99),
            SortKey::Max => s.map_or(0, |s| s.max),
        }
    };
    functions.sort_by(|a, b| {
        metric(b)
            .cmp(&metric(a))
            .then_with(|| a.probe.cmp(&b.probe))
    });
}

/// Joins argv into one line a shell would split back the same way.
pub(crate) fn shell_join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,+%@^".contains(&b));
            if plain {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
