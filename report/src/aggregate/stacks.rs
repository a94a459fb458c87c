//! Stacks: each (probe, incarnation, comm, stack id) rebased once, on first sight, into
//! (binary, file offset) frames so equal call paths of different processes merge at once;
//! at the end, each unique rebased stack symbolized once and merged by frame names.

use std::collections::HashMap;
use std::path::Path;

use urec_format::hash::FxHashMap;
use urec_format::{BuildId, Event, FileOffset, FrameAddress, Probe, ProbeId};

use super::{AggStack, Aggregator, DedupKey, RFrame, Slot, StackKey};
use crate::calls::Process;
use crate::interner::Interner;
use crate::model::breakdown::GroupBy;
use crate::model::frames::{
    code_frames, probed_location, probed_name, FrameId, FrameKind, FrameTable, Location,
};
use crate::model::StackSummary;
use crate::python::{is_eval_frame, merge_python, Merge, PyCodes};
use crate::symbolize::Symbolizer;
use crate::{Error, ReportOptions};

/// One code address a report would name: a binary and an address in it (a caller's return
/// address is named by the instruction before it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BinaryAddress {
    /// The binary's recorded path.
    pub binary: String,
    /// Its recorded build id.
    pub build_id: Option<urec_format::BuildId>,
    /// The file offset, and whether it is a return address (every frame but the innermost).
    pub address: FrameAddress,
}

/// Every distinct address that `report` would symbolize in the recording at `path`: the
/// frames of its rebased stacks and the probes' own addresses. What the symbols section of
/// the file must name.
pub fn frame_addresses(path: &Path) -> Result<Vec<BinaryAddress>, Error> {
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
        out.insert(BinaryAddress {
            binary: p.probe.binary.clone(),
            build_id: p.probe.build_id.clone(),
            address: FrameAddress::Ip(p.probe.offset),
        });
    }
    for s in &agg.agg {
        for (depth, frame) in s.frames.iter().enumerate() {
            if let RFrame::Mapped { binary, offset } = *frame {
                let (path, build_id) = &agg.binaries[binary as usize];
                out.insert(BinaryAddress {
                    binary: path.to_string(),
                    build_id: build_id.clone(),
                    address: FrameAddress::at_depth(FileOffset(offset), depth),
                });
            }
        }
    }
    Ok(out.into_iter().collect())
}

impl Aggregator<'_> {
    /// The aggregation slot of this event's stack, rebasing it on first sight.
    pub(super) fn stack_key(&mut self, ev: &Event, gen: Process) -> u32 {
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
    pub(super) fn agg_slot(&mut self, ev: &Event, gen: Process) -> u32 {
        let (frames, truncated, python, python_truncated) =
            match ev.stack.and_then(|id| self.stacks.get(&id)) {
                None => (Box::default(), false, Box::default(), false),
                Some(stack) => {
                    let mut out = Vec::with_capacity(stack.frames.len());
                    for &addr in &stack.frames {
                        out.push(match self.calls.spaces.lookup(ev.pid, ev.time_ns, addr) {
                            None => RFrame::Unknown,
                            Some(m) => {
                                let key = (m.path.to_string(), m.build_id.cloned());
                                let binary = self.binaries.id(&key);
                                RFrame::Mapped {
                                    binary,
                                    offset: m.offset.0,
                                }
                            }
                        });
                    }
                    (
                        out.into_boxed_slice(),
                        stack.truncated,
                        stack.python.clone().into_boxed_slice(),
                        stack.python_truncated,
                    )
                }
            };
        let dedup: DedupKey = (
            ev.probe,
            gen.comm,
            frames,
            truncated,
            python,
            python_truncated,
        );
        let idx = match self.dedup.get(&dedup) {
            Some(&i) => i,
            None => {
                let i = self.agg.len() as u32;
                self.agg.push(AggStack {
                    probe: ev.probe,
                    comm: gen.comm,
                    frames: dedup.2.clone(),
                    truncated,
                    python: dedup.4.clone(),
                    python_truncated,
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

    /// Names every unique rebased stack, outermost first, and merges stacks that end up with
    /// the same names.
    pub(super) fn symbolize_stacks(
        &mut self,
        warnings: &mut Vec<String>,
    ) -> (Vec<StackSummary>, FrameTable, u64, Vec<Option<String>>) {
        let mut symbolizer = Symbolizer::new(self.opts.symbolize.clone());
        if !self.embedded.is_empty() {
            symbolizer.set_embedded(std::mem::take(&mut self.embedded));
        }
        if !self.opts.no_symbolize {
            self.prefetch(&mut symbolizer);
        }
        let mut namer = Namer {
            symbolizer: (!self.opts.no_symbolize).then_some(&mut symbolizer),
            binaries: &self.binaries,
            table: FrameTable::new(),
            named: FxHashMap::default(),
            unknown: 0,
        };
        let mut merged: HashMap<(ProbeId, u32, Vec<u32>), Merged> = HashMap::new();
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
            let ids = namer.stack(s, &self.probes[pi].probe);
            let ids = if self.opts.no_symbolize {
                // No names, so no eval frame to replace: native frames only (and counted).
                let merge = if s.python.is_empty() {
                    Merge::Native
                } else {
                    Merge::Unmerged
                };
                self.python.no_symbolize = true;
                self.python.add(merge, s.calls);
                ids
            } else {
                let (ids, merge) = merge_frames(&mut namer.table, &self.py_codes, s, ids);
                self.python.add(merge, s.calls);
                ids
            };
            let table = &namer.table;
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
            merged
                .entry((s.probe, s.comm, names))
                .or_default()
                .add(s, ids);
        }
        let (table, unknown) = (namer.table, namer.unknown);
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

    /// Looks every frame of the stacks that count up once, so that debuginfod fetches for all
    /// binaries at once.
    fn prefetch(&self, symbolizer: &mut Symbolizer) {
        symbolizer.begin_batch();
        for s in self.agg.iter().filter(|s| s.calls > 0 || s.total_ns > 0) {
            for (depth, frame) in s.frames.iter().enumerate() {
                if let RFrame::Mapped { binary, offset } = *frame {
                    let (path, build_id) = &self.binaries[binary as usize];
                    symbolizer.symbolize_at(
                        path,
                        build_id.as_ref(),
                        FrameAddress::at_depth(FileOffset(offset), depth),
                    );
                }
            }
        }
        symbolizer.end_batch();
    }
}

/// [`merge_python`] of rebased stack `s`, named `ids`, into frames of `table`.
fn merge_frames(
    table: &mut FrameTable,
    codes: &PyCodes,
    s: &AggStack,
    ids: Vec<FrameId>,
) -> (Vec<FrameId>, Merge) {
    if s.python.is_empty() {
        return (ids, Merge::Native);
    }
    let native: Vec<(FrameId, bool)> = ids
        .into_iter()
        .map(|id| (id, is_eval_frame(table.name(id))))
        .collect();
    let (merged, merge) = merge_python(
        native,
        s.truncated,
        &s.python,
        s.python_truncated,
        |&(_, eval)| eval,
        |p| {
            let f = codes.frame(p)?;
            let kind = FrameKind::Python {
                qualname: f.qualname.clone(),
                file: f.filename.clone(),
                line: f.line,
            };
            Some((table.intern(&f.name(), kind), false))
        },
    );
    (merged.into_iter().map(|(id, _)| id).collect(), merge)
}

/// Names rebased frames into one [`FrameTable`], each (binary, offset, return address) once.
struct Namer<'a> {
    /// `None`: frames stay `binary+0xOFF`.
    symbolizer: Option<&'a mut Symbolizer>,
    binaries: &'a Interner<(String, Option<BuildId>)>,
    table: FrameTable,
    named: FxHashMap<(u32, FrameAddress), Box<[FrameId]>>,
    /// Frames (weighted by calls) in no recorded mapping.
    unknown: u64,
}

impl Namer<'_> {
    /// The frames of unique rebased stack `s` of `probe`, outermost first.
    fn stack(&mut self, s: &AggStack, probe: &Probe) -> Vec<FrameId> {
        let table = &mut self.table;
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
                    self.unknown = self.unknown.saturating_add(s.calls);
                    ids.push(table.intern("[unknown]", FrameKind::Unmapped));
                }
                RFrame::Mapped { binary, offset } => {
                    let address = FrameAddress::at_depth(FileOffset(offset), depth);
                    let frames = self.named.entry((binary, address)).or_insert_with(|| {
                        let (path, build_id) = &self.binaries[binary as usize];
                        code_frames(
                            self.symbolizer.as_deref_mut(),
                            path,
                            build_id.as_ref(),
                            address,
                        )
                        .into_iter()
                        .map(|(name, location)| table.intern(&name, FrameKind::Code(location)))
                        .collect()
                    });
                    let symbolized = self.symbolizer.is_some();
                    let build_id = self.binaries[binary as usize].1.as_ref();
                    let probed = probed_name(probe, depth, build_id, offset).filter(|_| symbolized);
                    // The probe's own frame, named as every output names it.
                    let location = probed.and(frames.first()).map(|&id| &table.get(id).kind);
                    match (probed, location) {
                        (Some(name), Some(FrameKind::Code(location))) => {
                            let location = probed_location(location.clone());
                            ids.push(table.intern(name, FrameKind::Code(location)));
                        }
                        _ => ids.extend_from_slice(frames),
                    }
                }
            }
        }
        ids
    }
}

/// Unique rebased stacks whose frames got the same names, merged.
#[derive(Default)]
struct Merged {
    calls: u64,
    total_ns: u64,
    /// The frames of the contributing path with the most calls, and its calls.
    frames: Vec<FrameId>,
    best: u64,
    pids: FxHashMap<u32, (u64, u64)>,
}

impl Merged {
    /// Adds rebased stack `s`, named `ids`.
    fn add(&mut self, s: &AggStack, ids: Vec<FrameId>) {
        self.calls = self.calls.saturating_add(s.calls);
        self.total_ns = self.total_ns.saturating_add(s.total_ns);
        for (&pid, &(calls, total)) in &s.pids {
            let p = self.pids.entry(pid).or_default();
            p.0 = p.0.saturating_add(calls);
            p.1 = p.1.saturating_add(total);
        }
        if self.frames.is_empty() || s.calls > self.best {
            self.frames = ids;
            self.best = s.calls;
        }
    }
}
