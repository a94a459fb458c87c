//! What a report is: the numbers every output draws from, made by the passes
//! ([`crate::analyze`], [`crate::merge`], [`crate::diff`]) and read by the outputs
//! ([`crate::output`]). Nothing here reads a recording or writes an output.

pub mod breakdown;
pub mod frames;
pub mod histogram;
pub mod processes;

use crate::symbolize::SymbolStats;
use crate::SortKey;
use breakdown::{Groups, ValueHistogram};
use frames::{FrameId, FrameTable};
use histogram::{LatencyHistogram, LatencyStats};
use urec_format::ProbeKind;

/// What outputs built from events (flamegraph, pprof) say when they do not hold every call:
/// "stacks sampled: 1 call in up to N kept, counted N times: ..." when the recorder sampled
/// under ring pressure (the stacks are scaled by their weights), and "stacks cover N of M
/// calls" when some probe's calls came from the kernel's counts and its events cover fewer.
pub fn coverage(report: &Report) -> Option<String> {
    let partial = report
        .functions
        .iter()
        .filter(|f| f.recorded_calls < f.calls || f.max_weight > 1);
    let (recorded, weighted, calls) = partial.fold((0u64, 0u64, 0u64), |(r, w, c), f| {
        (
            r.saturating_add(f.recorded_calls),
            w.saturating_add(f.weighted_calls),
            c.saturating_add(f.calls),
        )
    });
    if calls == 0 {
        return None;
    }
    let max_weight = report
        .functions
        .iter()
        .map(|f| f.max_weight)
        .max()
        .unwrap_or(1);
    Some(if max_weight > 1 {
        format!(
            "stacks sampled under ring pressure (1 call in up to {max_weight} kept, each \
             counted as the calls it stands for): {recorded} recorded calls weigh {weighted} \
             of {calls} calls"
        )
    } else {
        format!("stacks cover {recorded} of {calls} calls (events lost)")
    })
}

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
    /// The processes that had events, where they ran (`recording.processes` in JSON).
    pub processes: Vec<processes::ProcessSummary>,
    /// Calls whose stacks held Python frames, and what the merge made of them.
    pub python: crate::python::PythonCounts,
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
    /// Calls whose events made it into the file (and past the filters): what stacks, args,
    /// group-by and per-process counts cover. Equal to `calls` unless `calls` came from the
    /// kernel's counts.
    pub recorded_calls: u64,
    /// The recorded calls weighted by what each stands for: an estimate of all the calls
    /// when the recorder sampled under ring pressure (what stacks, per-process counts and
    /// groups add up to), else `recorded_calls`.
    pub weighted_calls: u64,
    /// The largest weight of a recorded call: the recorder kept one call in up to this many
    /// (1: nothing sampled).
    pub max_weight: u32,
    /// Calls the recorder sampled out under ring pressure (events not written, counted).
    pub sampled: u64,
    /// `calls`, `returns`, `in_flight` and `latency` are the kernel's exact counts, because
    /// events of this probe were lost or sampled and no event filter was active (SPEC.md,
    /// "Exact at any rate").
    pub from_kernel: bool,
    /// Latencies of the matched calls.
    pub latency: LatencyHistogram,
    /// Calls per process, most calls first.
    pub processes: Vec<ProcessCalls>,
    /// What each latency of this probe includes of the probe's own cost, as the recorder
    /// calibrated it (format 2.3); None when not measured. Already taken off `latency` with
    /// [`crate::ReportOptions::subtract_probe_cost`].
    pub probe_cost_ns: Option<u64>,
}

/// The probe cost the recorder calibrated for `probe`'s calls (format 2.3), when it has
/// latencies.
pub(crate) fn probe_cost(probe: &urec_format::Probe) -> Option<u64> {
    if probe.kind != urec_format::ProbeKind::EntryReturn {
        return None;
    }
    probe.site.and_then(|s| s.cost_ns)
}

impl Function {
    /// Latency statistics, `None` when no call was matched.
    pub fn latency_stats(&self) -> Option<LatencyStats> {
        self.latency.stats()
    }
}

/// One unique symbolized call path of one probe: unique by the names of its frames, which is
/// what every output shows. When paths through different lines of the same functions merge,
/// `frames` (and so the locations JSON shows) are those of the path with the most calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSummary {
    /// Probe display name.
    pub probe: String,
    /// Command name of the calling process.
    pub comm: String,
    /// Frames in [`Report::frames`], outermost first, the probed function last.
    pub frames: Vec<FrameId>,
    /// Calls through this path.
    pub calls: u64,
    /// Summed latency of the matched calls through this path.
    pub total_ns: u64,
    /// The calls and latency per process (of every input), most calls first: one pprof sample
    /// each.
    pub processes: Vec<StackProcess>,
}

/// The result of [`crate::analyze`]: what every output draws from.
#[derive(Clone, Debug)]
pub struct Report {
    /// The recording as a whole.
    pub recording: Recording,
    /// One per probe the report covers, in `--sort` order.
    pub functions: Vec<Function>,
    /// Unique call paths, most calls first, then by frame names.
    pub stacks: Vec<StackSummary>,
    /// The frames `stacks` refer to.
    pub frames: FrameTable,
    /// `--group-by`'s rows.
    pub groups: Option<Groups>,
    /// `--hist`'s histograms, one per probe that has the argument.
    pub histograms: Option<Vec<ValueHistogram>>,
    /// The table lists probes without calls too (`--show-zero`).
    pub show_zero: bool,
    /// Stack frames (weighted by calls) that fell in no known mapping and show as `[unknown]`.
    pub unknown_frames: u64,
    /// Things the user should know (truncation, symbolization problems), each once.
    pub warnings: Vec<String>,
    /// Every recording the report was made of, in `-i` order; [`StackSummary::processes`]
    /// refer to them by index.
    pub inputs: Vec<Input>,
    /// The comparison with a base recording (`--diff`), when asked for.
    pub diff: Option<Vec<DiffRow>>,
    /// Latencies have their probe's cost taken off (`--subtract-probe-cost`).
    pub probe_cost_subtracted: bool,
}

impl Report {
    /// The names of a stack's frames, outermost first: what folded stacks and tables show.
    pub fn frame_names<'a>(&'a self, stack: &'a StackSummary) -> impl Iterator<Item = &'a str> {
        stack.frames.iter().map(|&id| self.frames.name(id))
    }
}

/// One recording a report was made of (JSON `recording.inputs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Input {
    /// The file as given with `-i`.
    pub file: String,
    /// Host name of the recording machine.
    pub host: String,
    /// urec's command line that made it.
    pub command: String,
    /// From attach to stop.
    pub duration_ns: u64,
    /// Probe events stored in it.
    pub events: u64,
    /// Events lost while recording it.
    pub lost: u64,
}

impl Input {
    /// What `recording` says of its file (the file name is set by the caller).
    pub(crate) fn of(recording: &Recording) -> Self {
        Self {
            file: String::new(),
            host: recording.host.clone(),
            command: recording.command.clone(),
            duration_ns: recording.duration_ns,
            events: recording.events,
            lost: recording.lost(),
        }
    }
}

/// The calls of one process through one stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackProcess {
    /// Process id.
    pub pid: u32,
    /// Which of [`Report::inputs`] it was recorded in (so, its host).
    pub input: u32,
    /// Calls through the stack.
    pub calls: u64,
    /// Summed latency of its matched calls through the stack.
    pub total_ns: u64,
}

impl StackProcess {
    /// The per-pid counters of one input's stack, most calls first, then by pid.
    pub(crate) fn from_pids(pids: urec_format::hash::FxHashMap<u32, (u64, u64)>) -> Vec<Self> {
        let mut v: Vec<Self> = pids
            .into_iter()
            .map(|(pid, (calls, total_ns))| Self {
                pid,
                input: 0,
                calls,
                total_ns,
            })
            .collect();
        sort_processes(&mut v);
        v
    }
}

pub(crate) fn sort_processes(v: &mut [StackProcess]) {
    v.sort_by(|a, b| {
        b.calls
            .cmp(&a.calls)
            .then(a.input.cmp(&b.input))
            .then(a.pid.cmp(&b.pid))
    });
}

/// One side of a probe's comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Side {
    /// Calls.
    pub calls: u64,
    /// Latency of the matched calls, `None` when none was matched.
    pub latency: Option<LatencyStats>,
}

/// A probe of either side, with what each side says of it (`None`: the side has no such
/// probe).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffRow {
    /// The probe's display name.
    pub probe: String,
    /// BASE's numbers.
    pub base: Option<Side>,
    /// The input's numbers.
    pub new: Option<Side>,
}

/// The number `--sort` orders by, descending.
pub(crate) fn sort_metric(calls: u64, latency: &LatencyHistogram, key: SortKey) -> u64 {
    let s = latency.stats();
    match key {
        SortKey::Calls => calls,
        SortKey::Total => s.map_or(0, |s| s.total),
        SortKey::Mean => s.map_or(0, |s| s.mean),
        SortKey::Min => s.map_or(0, |s| s.min),
        SortKey::P50 => s.map_or(0, |s| s.p50),
        SortKey::P90 => s.map_or(0, |s| s.p90),
        SortKey::P99 => s.map_or(0, |s| s.p99),
        SortKey::Max => s.map_or(0, |s| s.max),
    }
}

pub(crate) fn sort_functions(functions: &mut [Function], key: SortKey) {
    let metric = |f: &Function| sort_metric(f.calls, &f.latency, key);
    functions.sort_by(|a, b| {
        metric(b)
            .cmp(&metric(a))
            .then_with(|| a.probe.cmp(&b.probe))
    });
}
