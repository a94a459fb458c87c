//! The end of the pass: entries still waiting judged, stacks symbolized, and the counts turned
//! into the [`Report`]: functions (with the kernel's counts where events were lost), groups,
//! histograms, the recording, and the warnings (nothing matched, unknown probes).

use std::collections::HashMap;

use urec_format::plural;

use super::{Aggregator, ProbeState};
use crate::model::breakdown::{
    Group, GroupBy, GroupStats, GroupValue, Groups, RawKey, ValueHistogram, MAX_GROUPS,
};
use crate::model::histogram::LatencyHistogram;
use crate::model::{sort_functions, sort_metric, Function, ProcessCalls, Recording, Report};
use crate::Error;

impl Aggregator<'_> {
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
        let waiting = self.pending.finish(self.calls.spaces.incarnations());
        for (probe, entry, in_flight) in waiting {
            if let Some(pi) = self.probe_index(&probe) {
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

        let filtering = self.calls.filtering();
        let selected: Vec<ProbeState> = std::mem::take(&mut self.probes)
            .into_iter()
            .filter(|p| p.selected)
            .collect();
        let names = selected.iter().map(|p| p.probe.name.clone()).collect();
        let mut functions: Vec<Function> = selected
            .into_iter()
            .map(|p| self.function(p, filtering))
            .collect();
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
            python: self.python,
        };
        warnings.extend(self.py_codes.warning());
        warnings.extend(self.python.note());
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
            probe_cost_subtracted: self.opts.subtract_probe_cost,
        })
    }

    /// A probe's row: its counts (the kernel's where events are missing, unless a filter
    /// asks about events: SPEC.md, "Exact at any rate") and its calls per process.
    fn function(&self, mut p: ProbeState, filtering: bool) -> Function {
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
                    let cost = if self.opts.subtract_probe_cost {
                        crate::model::probe_cost(&p.probe).unwrap_or(0)
                    } else {
                        0
                    };
                    p.latency = LatencyHistogram::from_kernel(l).minus(cost);
                }
                true
            }
            _ => false,
        };
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
        let probe_cost_ns = crate::model::probe_cost(&p.probe);
        Function {
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
            probe_cost_ns,
        }
    }

    /// `--group-by ARG` and `--hist ARG` must name an argument of at least one selected probe.
    pub(super) fn check_arg_names(&self) -> Result<(), Error> {
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
    pub(super) fn groups(&mut self, callers: &[Option<String>]) -> Option<Groups> {
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
    pub(super) fn nothing_matched(&self) -> Option<String> {
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
