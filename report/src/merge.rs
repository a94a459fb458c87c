//! Several recordings in one report (`urec report -i A -i B`): each input is analyzed on its
//! own, then the reports are merged — probes matched by spec, stacks by their frames' names,
//! latency histograms added bucket by bucket — and every process keeps the host it ran on
//! ([`StackProcess::input`] indexes [`crate::Report::inputs`]).

use std::collections::HashMap;

use crate::model::frames::FrameTable;
use crate::model::{sort_functions, sort_processes, Recording, StackProcess};
use crate::{Function, ProcessCalls, Report, SortKey, StackSummary};

/// Merges the reports of several recordings (in `-i` order) into one: probes matched by their
/// display name (which their spec gives), stacks by probe, comm and frame names, each process
/// keeping its input (so its host). `recording` is the first input's, with events, lost counts,
/// chunks and probes of all of them; `functions` are sorted by `sort`.
pub fn merge(reports: Vec<Report>, sort: SortKey) -> Report {
    let mut reports = reports.into_iter();
    let Some(mut out) = reports.next() else {
        return Report {
            recording: Recording::default(),
            functions: Vec::new(),
            stacks: Vec::new(),
            frames: FrameTable::new(),
            unknown_frames: 0,
            warnings: Vec::new(),
            inputs: Vec::new(),
            diff: None,
            groups: None,
            histograms: None,
            show_zero: false,
            probe_cost_subtracted: false,
        };
    };
    let mut functions: HashMap<String, usize> = out
        .functions
        .iter()
        .enumerate()
        .map(|(i, f)| (f.probe.clone(), i))
        .collect();
    // (probe, comm, frame names) → index in out.stacks.
    let mut stacks: HashMap<(String, String, Vec<String>), usize> = HashMap::new();
    for (i, s) in out.stacks.iter().enumerate() {
        let names = out.frame_names(s).map(str::to_string).collect();
        stacks.insert((s.probe.clone(), s.comm.clone(), names), i);
    }
    for mut r in reports {
        let offset = out.inputs.len() as u32;
        out.inputs.extend(r.inputs.iter().cloned());
        let rec = &mut out.recording;
        rec.events = rec.events.saturating_add(r.recording.events);
        rec.lost_ring = rec.lost_ring.saturating_add(r.recording.lost_ring);
        rec.lost_sideband = rec.lost_sideband.saturating_add(r.recording.lost_sideband);
        rec.lost_unwind = rec.lost_unwind.saturating_add(r.recording.lost_unwind);
        rec.truncated |= r.recording.truncated;
        rec.python.absorb(&r.recording.python);
        rec.corrupt_chunks = rec
            .corrupt_chunks
            .saturating_add(r.recording.corrupt_chunks);
        for p in &r.recording.probes {
            if !rec.probes.contains(p) {
                rec.probes.push(p.clone());
            }
        }
        let sym = &mut rec.symbols;
        sym.local += r.recording.symbols.local;
        sym.embedded += r.recording.symbols.embedded;
        sym.none += r.recording.symbols.none;
        sym.debuginfod += r.recording.symbols.debuginfod;
        for (k, v) in &r.recording.symbols.unnamed_frames {
            *sym.unnamed_frames.entry(k).or_default() += v;
        }
        out.unknown_frames = out.unknown_frames.saturating_add(r.unknown_frames);
        for w in &r.warnings {
            if !out.warnings.contains(w) {
                out.warnings.push(w.clone());
            }
        }
        out.recording
            .processes
            .extend(std::mem::take(&mut r.recording.processes));
        merge_groups(&mut out.groups, r.groups.take());
        merge_histograms(&mut out.histograms, r.histograms.take());
        for f in std::mem::take(&mut r.functions) {
            match functions.get(&f.probe) {
                Some(&i) => add_function(&mut out.functions[i], f),
                None => {
                    functions.insert(f.probe.clone(), out.functions.len());
                    out.functions.push(f);
                }
            }
        }
        for s in &r.stacks {
            let names: Vec<String> = r.frame_names(s).map(str::to_string).collect();
            let processes = s.processes.iter().map(|p| StackProcess {
                input: p.input + offset,
                ..p.clone()
            });
            match stacks.get(&(s.probe.clone(), s.comm.clone(), names.clone())) {
                Some(&i) => {
                    let t = &mut out.stacks[i];
                    t.calls = t.calls.saturating_add(s.calls);
                    t.total_ns = t.total_ns.saturating_add(s.total_ns);
                    t.processes.extend(processes);
                    sort_processes(&mut t.processes);
                }
                None => {
                    let frames = s
                        .frames
                        .iter()
                        .map(|&id| {
                            let f = r.frames.get(id);
                            out.frames.intern(r.frames.name(id), f.kind.clone())
                        })
                        .collect();
                    stacks.insert((s.probe.clone(), s.comm.clone(), names), out.stacks.len());
                    out.stacks.push(StackSummary {
                        probe: s.probe.clone(),
                        comm: s.comm.clone(),
                        frames,
                        calls: s.calls,
                        total_ns: s.total_ns,
                        processes: processes.collect(),
                    });
                }
            }
        }
    }
    sort_functions(&mut out.functions, sort);
    let frames = &out.frames;
    let names = |s: &StackSummary| {
        s.frames
            .iter()
            .map(|&id| frames.name(id))
            .collect::<Vec<_>>()
    };
    out.stacks.sort_by(|a, b| {
        b.calls
            .cmp(&a.calls)
            .then_with(|| names(a).cmp(&names(b)))
            .then_with(|| a.probe.cmp(&b.probe))
            .then_with(|| a.comm.cmp(&b.comm))
    });
    out
}

/// `--group-by` rows of another input: equal (probe, value) rows add up.
fn merge_groups(
    into: &mut Option<crate::model::breakdown::Groups>,
    other: Option<crate::model::breakdown::Groups>,
) {
    let (Some(into), Some(other)) = (into.as_mut(), other) else {
        return;
    };
    for row in other.rows {
        match into
            .rows
            .iter_mut()
            .find(|r| r.probe == row.probe && r.value == row.value)
        {
            Some(r) => {
                r.stats.calls = r.stats.calls.saturating_add(row.stats.calls);
                r.stats.latency.merge(&row.stats.latency);
            }
            None => into.rows.push(row),
        }
    }
    for p in other.capped {
        if !into.capped.contains(&p) {
            into.capped.push(p);
        }
    }
}

/// `--hist` buckets of another input: equal (probe, bucket) counts add up.
fn merge_histograms(
    into: &mut Option<Vec<crate::ValueHistogram>>,
    other: Option<Vec<crate::ValueHistogram>>,
) {
    let (Some(into), Some(other)) = (into.as_mut(), other) else {
        return;
    };
    for h in other {
        match into.iter_mut().find(|x| x.probe == h.probe) {
            Some(x) => {
                x.faults = x.faults.saturating_add(h.faults);
                for b in h.buckets {
                    match x.buckets.iter_mut().find(|y| (y.0, y.1) == (b.0, b.1)) {
                        Some(y) => y.2 = y.2.saturating_add(b.2),
                        None => x.buckets.push(b),
                    }
                }
                x.buckets.sort_unstable();
            }
            None => into.push(h),
        }
    }
}

fn add_function(into: &mut Function, f: Function) {
    into.calls = into.calls.saturating_add(f.calls);
    into.filtered = into.filtered.saturating_add(f.filtered);
    into.returns = into.returns.saturating_add(f.returns);
    into.in_flight = into.in_flight.saturating_add(f.in_flight);
    into.unmatched = into.unmatched.saturating_add(f.unmatched);
    into.lost = into.lost.saturating_add(f.lost);
    into.recorded_calls = into.recorded_calls.saturating_add(f.recorded_calls);
    into.weighted_calls = into.weighted_calls.saturating_add(f.weighted_calls);
    into.max_weight = into.max_weight.max(f.max_weight);
    into.sampled = into.sampled.saturating_add(f.sampled);
    into.from_kernel |= f.from_kernel;
    into.probe_cost_ns = into.probe_cost_ns.max(f.probe_cost_ns);
    into.latency.merge(&f.latency);
    into.processes.extend(f.processes);
    into.processes.sort_by(|a: &ProcessCalls, b| {
        b.calls
            .cmp(&a.calls)
            .then(a.pid.cmp(&b.pid))
            .then(a.comm.cmp(&b.comm))
    });
}
