//! Counting calls, event by event: an entry + return probe's call is counted at its entry and
//! its latency added at its return, unless it can only be judged at its end (latency filters,
//! a `--group-by` key only the return carries), then at the return; entries pushed out or left
//! at the end count as in flight or unmatched ([`Aggregator::abandon`]).

use urec_format::{Event, EventKind, ProbeKind};

use super::{Aggregator, Pending};
use crate::calls::{began_ns, call_key, Process, Verdict};
use crate::model::breakdown::{numeric, ArgKey, GroupBy, RawKey};

impl Aggregator<'_> {
    pub(super) fn event(&mut self, ev: &Event) {
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
                if !self.calls.keeps_call(ev.latency_ns) {
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
    pub(super) fn see(&mut self, ev: &Event, gen: Process) {
        if self.calls.filtering() {
            self.seen.pids.insert(ev.pid);
            self.seen.tids.insert(ev.tid);
            self.seen.comms.insert(gen.comm);
        }
    }

    pub(super) fn entry(&mut self, pi: usize, ev: &Event, gen: Process) {
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
            .enter(call_key(ev, gen), pending, |probe, old| {
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
    pub(super) fn abandon(&mut self, pi: usize, entry: Pending, in_flight: bool) {
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
            self.count_entry(pi, entry.pid, &entry, key.as_ref());
        }
        let p = &mut self.probes[pi];
        if in_flight {
            p.in_flight += 1;
        } else {
            p.unmatched += 1;
        }
    }

    /// Counts the call that `entry` began, when its entry event did not count it yet (latency
    /// filters wait for the return): the call itself, and its `--hist` value.
    fn count_entry(&mut self, pi: usize, pid: u32, entry: &Pending, key: Option<&RawKey>) {
        self.count_call(pi, pid, entry.comm, entry.stack, key, entry.weight);
        if let Some(v) = &entry.hist {
            self.probes[pi].hist.record(**v);
        }
    }

    /// The `--group-by` key of a call, from the event that carries it (`None` when there is
    /// no grouping, or the key is an argument of the other event of the call).
    pub(super) fn group_key(
        &self,
        pi: usize,
        ev: &Event,
        gen: Process,
        stack: Option<u32>,
    ) -> Option<RawKey> {
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
    pub(super) fn count_call(
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
    pub(super) fn add_latency(
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
    pub(super) fn hist_value(&mut self, pi: usize, ev: &Event) {
        let p = &mut self.probes[pi];
        if let Some(a) = p.hist_arg {
            if a.at_return == (ev.kind == EventKind::Return) {
                p.hist.record(a.value(ev).and_then(|v| numeric(v, a.ty)));
            }
        }
    }

    /// What `--subtract-probe-cost` takes off probe `pi`'s latencies (0 without it).
    fn subtracted(&self, pi: usize) -> u64 {
        if !self.opts.subtract_probe_cost {
            return 0;
        }
        crate::model::probe_cost(&self.probes[pi].probe).unwrap_or(0)
    }

    pub(super) fn pair_return(&mut self, pi: usize, ev: &Event, gen: Process) {
        let mut abandoned = Vec::new();
        let ended = self.pending.end(ev, gen, |e| abandoned.push(e));
        for e in abandoned {
            self.abandon(pi, e, false);
        }
        let began = ended.began_ns(ev);
        // What the report shows (and the latency filters judge): the probe cost taken off
        // with --subtract-probe-cost.
        let latency = ended
            .measured
            .map(|l| l.saturating_sub(self.subtracted(pi)));
        let Some(mut entry) = ended.entry else {
            // A return without its entry: judged by when the call began, if that is known.
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
        if !self.calls.keeps_call(latency) {
            return;
        }
        self.probes[pi].returns += 1;
        let key = match entry.group.take() {
            Some(k) => Some(*k),
            None => self.group_key(pi, ev, gen, entry.stack),
        };
        if !entry.counted {
            self.count_entry(pi, ev.pid, &entry, key.as_ref());
        }
        if let Some(lat) = latency {
            self.add_latency(pi, entry.stack, key.as_ref(), lat, entry.weight);
        }
        self.hist_value(pi, ev);
    }
}
