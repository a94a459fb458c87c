//! `urec top` (SPEC.md, "`urec top`"): the probes of a recording, loaded to count only, and
//! their in-kernel aggregates read every interval. No ring buffer traffic, no side-band, no
//! data file. With `--top-stacks` the programs also write frame-pointer stacks to the ring
//! (as `urec record -g fp`), counted per interval into the hottest call paths.
//!
//! The programs are `urec record`'s, loaded with `count_only` (see `urec.bpf.c`): each call
//! updates the per-probe counts and the latency histogram and returns before any ring record is
//! built, so the per-call cost is the counting alone.
//!
//! # Interval figures
//!
//! Every interval the recorder reads the cumulative counts and histograms of every probe and
//! subtracts the previous reading ([`interval`]). Counts and histogram buckets only grow, so the
//! interval's calls and its histogram are exact (up to the moment each counter is read: a call
//! counted between two reads of one snapshot lands in the next interval), and so are its
//! percentiles, within the histogram's bucket error (≤ 0.8%). The kernel keeps no per-interval
//! maximum: the interval's `max` is the upper bound of the interval histogram's highest bucket,
//! clamped to the run's exact maximum, so it is within the same error (and exact whenever the
//! run's maximum fell in this interval's highest bucket). This costs no epoch flip in the BPF
//! programs.
//!
//! # Ending
//!
//! On the view's quit (`q`), SIGINT/SIGTERM, `-d`, the command's exit, or the exit of every
//! `-p` process. The links are dropped first (they live on file descriptors: a `kill -9` drops
//! them too), then the counts are read once more for the final, exact figures.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::OpenObject;
use urec_format::{log_linear, Aggregate, LatencyAggregate, ProbeId, ProbeKind};

use crate::attach;
use crate::command::Workload;
use crate::session::{
    attach_probes, check_privileges, load_programs, say_attached, stop_after_failure, time_to_stop,
    Load, STOP_GRACE,
};
use crate::stacks::StackIds;
use crate::{PlannedProbe, Target, Verbosity, WorkloadEnd};

/// How often stop conditions are looked at between intervals (and the view asked for keys).
const POLL: Duration = Duration::from_millis(50);
/// How often the ring is drained with `--top-stacks`: a process's mappings are read at its
/// first event, which must come while it still runs.
const STACK_POLL: Duration = Duration::from_millis(10);
/// Frames per `--top-stacks` stack.
const STACK_DEPTH: u32 = 64;
/// The ring buffer of `--top-stacks` (drained every [`POLL`] at most).
const STACK_RING: u32 = 16 << 20;

/// Calls per (probe, process, stack) of the current interval, from ring-buffer events.
type StackCounts = HashMap<(ProbeId, u32, Vec<u64>), u64>;

/// Counts one ring-buffer record's stack (entries; returns of return-only probes, whose
/// events carry the stack); reads the mappings of a process at its first event.
fn count_stack(
    counts: &mut StackCounts,
    maps: &mut HashMap<u32, Maps>,
    ids: &mut StackIds,
    bytes: &[u8],
) {
    let Ok(e) = urec_bpf::abi::RawEvent::parse(bytes) else {
        return;
    };
    let mut frames = Vec::new();
    match e.stack_id {
        Some((id, _)) => ids.frames(id, &mut frames),
        None => frames.extend(e.frames()),
    }
    if frames.is_empty() {
        return;
    }
    maps.entry(e.pid).or_insert_with(|| maps_of(e.pid));
    *counts.entry((e.probe, e.pid, frames)).or_default() += 1;
}

/// The `n` hottest stacks of `probe` in `counts`, their frames located in `maps`.
fn hottest(
    counts: &StackCounts,
    maps: &mut HashMap<u32, Maps>,
    probe: ProbeId,
    n: u32,
) -> Vec<HotStack> {
    let mut v: Vec<HotStack> = counts
        .iter()
        .filter(|((p, _, _), _)| *p == probe)
        .map(|((_, pid, frames), &calls)| HotStack {
            calls,
            pid: *pid,
            frames: frames.clone(),
            files: Vec::new(),
        })
        .collect();
    v.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.frames.cmp(&b.frames)));
    v.truncate(n as usize);
    for st in &mut v {
        let m = maps.entry(st.pid).or_default();
        // A library mapped since the process's first event: read its mappings again.
        if st.frames.iter().any(|&a| locate(m, a).is_none()) {
            let fresh = maps_of(st.pid);
            if !fresh.is_empty() {
                *m = fresh;
            }
        }
        st.files = st.frames.iter().map(|&a| locate(m, a)).collect();
    }
    v
}

/// Everything one `urec top` needs.
#[derive(Clone, Debug)]
pub struct TopOptions {
    /// The probes, ids 0..n in order (stacks and arguments are not used).
    pub probes: Vec<PlannedProbe>,
    /// Whom to trace.
    pub target: Target,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// How often figures are shown.
    pub interval: Duration,
    /// `--cgroup`: only tasks under this cgroup v2 directory.
    pub cgroup: Option<PathBuf>,
    /// What to print on stderr (`-v`: what was attached).
    pub verbosity: Verbosity,
    /// `--top-stacks N`: the N hottest call paths of each probe in each interval, from
    /// frame-pointer stacks on ring-buffer events (then every call costs what `urec record
    /// -g fp` costs); 0 for none (count only).
    pub top_stacks: u32,
}

/// One call path of an interval: its calls, and the process and stack (innermost first, the
/// probed function's address, then return addresses) of those calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HotStack {
    /// Calls with this stack in the interval (among the events the ring buffer delivered).
    pub calls: u64,
    /// The process.
    pub pid: u32,
    /// Addresses in that process, innermost first.
    pub frames: Vec<u64>,
    /// Per frame: the mapped file and the file offset of the address, through the process's
    /// mappings as read when its first event arrived (again when an address fell outside
    /// them); `None` where no file maps it (or `[vdso]`'s path, with the offset in it).
    pub files: Vec<Option<(std::sync::Arc<str>, u64)>>,
}

/// A process's file mappings: (start, end, file offset at start, path).
type Maps = Vec<(u64, u64, u64, std::sync::Arc<str>)>;

/// The file mappings of `pid` (and `[vdso]`) from `/proc/PID/maps`; empty once it is gone.
fn maps_of(pid: u32) -> Maps {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.splitn(6, ' ');
            let (range, _perms, off) = (f.next()?, f.next()?, f.next()?);
            let path = f.nth(2)?.trim_start();
            if !(path.starts_with('/') || path == "[vdso]") {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                u64::from_str_radix(off, 16).ok()?,
                std::sync::Arc::from(path),
            ))
        })
        .collect()
}

/// Where `addr` is mapped in `maps`: (file, offset).
fn locate(maps: &Maps, addr: u64) -> Option<(std::sync::Arc<str>, u64)> {
    maps.iter()
        .find(|(s, e, _, _)| (*s..*e).contains(&addr))
        .map(|(s, _, off, path)| (path.clone(), addr - s + off))
}

/// One probe's figures at the end of an interval.
#[derive(Clone, Debug)]
pub struct Row {
    /// The probe's id.
    pub id: ProbeId,
    /// Its display name (`bash:readline`).
    pub name: String,
    /// The symbol it is in (empty for a raw address).
    pub symbol: String,
    /// Entry, return or both.
    pub kind: ProbeKind,
    /// Cumulative counts since attaching (latency for entry+return probes with returns).
    pub total: Aggregate,
    /// Calls in this interval.
    pub interval_calls: u64,
    /// Latencies of the calls that returned in this interval ([`interval`]); `None` for
    /// one-sided probes and intervals without returns.
    pub interval_latency: Option<LatencyAggregate>,
    /// With [`TopOptions::top_stacks`]: the interval's hottest stacks per process, hottest
    /// first, up to 4 × `top_stacks` of them (the view merges the processes' equal paths).
    pub stacks: Vec<HotStack>,
}

/// The figures of one interval.
#[derive(Clone, Debug)]
pub struct Tick {
    /// From attaching to the end of this interval.
    pub time: Duration,
    /// This interval's length.
    pub span: Duration,
    /// The last interval, read after detaching: its totals are final and exact.
    pub last: bool,
    /// Per probe, in id order.
    pub rows: Vec<Row>,
    /// Calls lost so far (none are expected: counting needs no ring buffer).
    pub lost: u64,
    /// The probes' BPF programs' own run time per run in this interval, in ns, when the
    /// kernel measures it (`sysctl kernel.bpf_stats_enabled=1`; urec does not turn it on, it
    /// costs every BPF program on the host): what a call costs besides the uprobe trap.
    pub bpf_ns_per_run: Option<f64>,
}

/// (run time ns, runs) of urec's uprobe programs so far, as the kernel counts them while
/// `kernel.bpf_stats_enabled` is 1 (zeros otherwise).
fn bpf_stats(skel: &urec_bpf::UrecSkel<'_>) -> (u64, u64) {
    use std::os::fd::{AsFd, AsRawFd};
    let p = &skel.progs;
    let fds = [
        p.urec_session.as_fd(),
        p.urec_entry.as_fd(),
        p.urec_return.as_fd(),
        p.urec_go_entry.as_fd(),
        p.urec_go_return.as_fd(),
        p.urec_entry_single.as_fd(),
        p.urec_return_single.as_fd(),
    ];
    let mut out = (0u64, 0u64);
    for fd in fds {
        let mut info = libbpf_rs::libbpf_sys::bpf_prog_info::default();
        let mut len = std::mem::size_of_val(&info) as u32;
        // SAFETY: the kernel fills at most `len` bytes of `info`, a plain C struct.
        let r = unsafe {
            libbpf_rs::libbpf_sys::bpf_obj_get_info_by_fd(
                fd.as_raw_fd(),
                (&mut info as *mut libbpf_rs::libbpf_sys::bpf_prog_info).cast(),
                &mut len,
            )
        };
        if r == 0 {
            out.0 += info.run_time_ns;
            out.1 += info.run_cnt;
        }
    }
    out
}

/// ns per run between two [`bpf_stats`] readings; `None` without runs measured.
fn per_run(before: (u64, u64), after: (u64, u64)) -> Option<f64> {
    let runs = after.1.checked_sub(before.1).filter(|&n| n > 0)?;
    Some(after.0.saturating_sub(before.0) as f64 / runs as f64)
}

/// What to show the figures on: the JSON lines, or the full-screen table.
pub trait TopView {
    /// Waits up to `timeout` (for keys, say); returns true when the user asked to quit.
    fn wait(&mut self, timeout: Duration) -> Result<bool>;
    /// Shows one interval's figures.
    fn show(&mut self, tick: &Tick) -> Result<()>;
}

/// How `urec top` ended.
#[derive(Debug, Default)]
pub struct TopSummary {
    /// From attach to detach.
    pub duration: Duration,
    /// The command's exit status (128 + signal when killed), with `-- COMMAND`.
    pub workload_status: Option<i32>,
    /// How the command ended, with `-- COMMAND`.
    pub workload_end: Option<WorkloadEnd>,
    /// The user quit the view (`q`).
    pub quit: bool,
}

/// The interval between two cumulative latency aggregates of one probe: exact count, total
/// and histogram (buckets only grow); `min` and `max` from the lowest and highest bucket that
/// grew, clamped to the run's exact `min` and `max` (`cur`). `None` without returns between.
pub fn interval(
    prev: Option<&LatencyAggregate>,
    cur: Option<&LatencyAggregate>,
) -> Option<LatencyAggregate> {
    let cur = cur?;
    let before = |i: u32| -> u64 {
        prev.filter(|p| p.sub_bits == cur.sub_bits)
            .and_then(|p| {
                p.buckets
                    .binary_search_by_key(&i, |&(j, _)| j)
                    .ok()
                    .map(|k| p.buckets[k].1)
            })
            .unwrap_or(0)
    };
    let buckets: Vec<(u32, u64)> = cur
        .buckets
        .iter()
        .filter_map(|&(i, n)| {
            let d = n.saturating_sub(before(i));
            (d > 0).then_some((i, d))
        })
        .collect();
    let count: u64 = buckets.iter().map(|&(_, n)| n).sum();
    let (&(lo, _), &(hi, _)) = (buckets.first()?, buckets.last()?);
    let bits = u32::from(cur.sub_bits);
    let max = log_linear::bounds(hi as usize, bits).1.min(cur.max);
    let min = log_linear::bounds(lo as usize, bits)
        .0
        .max(cur.min)
        .min(max);
    Some(LatencyAggregate {
        count,
        total: cur.total.saturating_sub(prev.map_or(0, |p| p.total)),
        min,
        max,
        sub_bits: cur.sub_bits,
        buckets,
    })
}

/// Runs `urec top` until a stop condition, showing every interval on `view`; see the module
/// docs.
pub fn run(
    opts: TopOptions,
    view: &mut dyn TopView,
) -> std::result::Result<TopSummary, crate::RecordError> {
    let mut workload = None;
    let result = top(&opts, view, &mut workload);
    if let (Err(_), Some(w)) = (&result, workload.as_mut()) {
        stop_after_failure(w, "urec top failed");
    }
    result.map_err(|e| crate::RecordError::Failed(crate::fds::explain(e)))
}

fn top(
    opts: &TopOptions,
    view: &mut dyn TopView,
    workload: &mut Option<Workload>,
) -> Result<TopSummary> {
    check_privileges()?;
    if opts.probes.is_empty() {
        bail!("no probe to attach");
    }
    let started = Instant::now();
    let (filter, pids, command) = opts.target.parts();
    for &pid in &pids {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            bail!("process {pid} does not exist");
        }
    }
    let stacks = opts.top_stacks > 0;
    // The predicates are what the programs read of the configuration before counting (they
    // have their own operands); no argument is fetched, no stack copied (--top-stacks walks
    // frame pointers).
    let configs: Vec<_> = opts
        .probes
        .iter()
        .map(|p| {
            let mut cfg = p.config.clone();
            cfg.stack_size = 0;
            cfg.dwarf = false;
            cfg.args.clear();
            (p.probe.id, cfg)
        })
        .collect();
    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let load = Load {
        filter,
        // Without --top-stacks no stacks, and the smallest ring: nothing is written to it.
        stack_depth: if stacks { STACK_DEPTH } else { 0 },
        ring_bytes: if stacks { STACK_RING } else { 4096 },
        count_only: !stacks,
        kernel_dwarf: false,
    };
    let (skel, counts) = load_programs(
        &mut storage,
        &opts.probes,
        load,
        opts.cgroup.as_deref(),
        &configs,
        0,
    )?;
    let watch = crate::session::allow_targets(&skel, &pids, command.as_ref(), workload)?;
    let attached = attach_probes(&skel, &opts.probes, filter, opts.verbosity)?;
    let attached_at = Instant::now();
    say_attached(opts.verbosity, opts.probes.len(), &attached, started);
    let stack_counts = std::cell::RefCell::new(StackCounts::new());
    let stack_maps = std::cell::RefCell::new(HashMap::<u32, Maps>::new());
    let stack_ids = std::cell::RefCell::new(if stacks {
        StackIds::new(&skel)?
    } else {
        StackIds::default()
    });
    let ring = if stacks {
        let mut builder = libbpf_rs::RingBufferBuilder::new();
        builder.add(&skel.maps.events, |bytes: &[u8]| {
            count_stack(
                &mut stack_counts.borrow_mut(),
                &mut stack_maps.borrow_mut(),
                &mut stack_ids.borrow_mut(),
                bytes,
            );
            0
        })?;
        Some(
            builder
                .build()
                .context("setting up the ring buffer consumer")?,
        )
    } else {
        None
    };
    let drain = || -> Result<()> {
        if let Some(ring) = &ring {
            ring.consume().context("reading the ring buffer")?;
            stack_ids.borrow_mut().sync();
        }
        Ok(())
    };
    if let Some(w) = workload.as_mut() {
        w.start()?;
    }

    let rows = |snap: Vec<Aggregate>, prev: &[Aggregate]| -> Vec<Row> {
        let counts = std::mem::take(&mut *stack_counts.borrow_mut());
        snap.into_iter()
            .zip(&opts.probes)
            .map(|(total, p)| {
                let before = prev.get(total.probe as usize);
                Row {
                    id: total.probe,
                    name: p.probe.name.clone(),
                    symbol: p.probe.symbol.clone(),
                    kind: p.probe.kind,
                    interval_calls: total.calls.saturating_sub(before.map_or(0, |b| b.calls)),
                    interval_latency: interval(
                        before.and_then(|b| b.latency.as_ref()),
                        total.latency.as_ref(),
                    ),
                    stacks: if stacks {
                        hottest(
                            &counts,
                            &mut stack_maps.borrow_mut(),
                            total.probe,
                            // Candidates: the same path in several processes is one path to
                            // the view, which merges them by name.
                            opts.top_stacks.saturating_mul(4),
                        )
                    } else {
                        Vec::new()
                    },
                    total,
                }
            })
            .collect()
    };
    let lost = || -> Result<u64> {
        Ok(attach::lost_counts(&skel, opts.probes.len() as u32)?
            .iter()
            .map(|l| l.2)
            .sum())
    };

    let deadline = opts.duration.map(|d| attached_at + d);
    let mut prev: Vec<Aggregate> = Vec::new();
    let mut prev_stats = bpf_stats(&skel);
    let mut prev_at = attached_at;
    let mut next = attached_at + opts.interval;
    let mut workload_status = None;
    let mut quit = false;
    loop {
        if time_to_stop(deadline, workload, watch.as_ref(), &mut workload_status)? {
            break;
        }
        drain()?;
        let now = Instant::now();
        if now >= next {
            let snap = counts.snapshot(&skel)?;
            let stats = bpf_stats(&skel);
            let tick = Tick {
                time: now - attached_at,
                span: now - prev_at,
                last: false,
                rows: rows(snap.clone(), &prev),
                lost: lost()?,
                bpf_ns_per_run: per_run(prev_stats, stats),
            };
            prev_stats = stats;
            view.show(&tick)?;
            prev = snap;
            prev_at = now;
            next += opts.interval;
            if next <= now {
                next = now + opts.interval;
            }
            continue;
        }
        let mut wait = (next - now).min(if stacks { STACK_POLL } else { POLL });
        if let Some(d) = deadline {
            wait = wait.min(d.saturating_duration_since(now));
        }
        if view.wait(wait)? {
            quit = true;
            break;
        }
    }
    // Detach, then the final figures: nothing counts any more.
    drop(attached);
    let detached_at = Instant::now();
    drain()?;
    let snap = counts.snapshot(&skel)?;
    let tick = Tick {
        time: detached_at - attached_at,
        span: detached_at - prev_at,
        last: true,
        rows: rows(snap, &prev),
        lost: lost()?,
        bpf_ns_per_run: per_run(prev_stats, bpf_stats(&skel)),
    };
    // The command: if top stopped first, end it as `urec record` does.
    if let Some(w) = workload.as_mut() {
        if workload_status.is_none() {
            workload_status = w.try_wait()?;
            if workload_status.is_none() {
                workload_status = Some(w.terminate(STOP_GRACE)?);
            }
        }
    }
    view.show(&tick).context("showing the final figures")?;
    let workload_end = workload.as_ref().and_then(|w| {
        Some(WorkloadEnd {
            ended: w.ended()?,
            by_urec: w.terminated(),
        })
    });
    Ok(TopSummary {
        duration: detached_at - attached_at,
        workload_status,
        workload_end,
        quit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(values: &[u64]) -> LatencyAggregate {
        let mut buckets = std::collections::BTreeMap::new();
        for &v in values {
            *buckets.entry(log_linear::bucket(v, 6) as u32).or_insert(0) += 1;
        }
        LatencyAggregate {
            count: values.len() as u64,
            total: values.iter().sum(),
            min: values.iter().copied().min().unwrap_or(0),
            max: values.iter().copied().max().unwrap_or(0),
            sub_bits: 6,
            buckets: buckets.into_iter().collect(),
        }
    }

    #[test]
    fn intervals_difference_the_histograms() {
        let first = [1000, 2000, 50_000];
        let second = [1000, 2000, 50_000, 3000, 3100, 7000];
        let a = agg(&first);
        let b = agg(&second);
        let d = interval(Some(&a), Some(&b)).unwrap();
        assert_eq!(d.count, 3);
        assert_eq!(d.total, 3000 + 3100 + 7000);
        assert_eq!(d.buckets.iter().map(|b| b.1).sum::<u64>(), 3);
        // The interval's max is its highest bucket's bound, within 1/64 of 7000, and never
        // above the run's max.
        assert!(d.max >= 7000 && d.max <= 7000 + 7000 / 64, "{}", d.max);
        assert!(d.min <= 3000 && d.min >= 3000 - 3000 / 64, "{}", d.min);
        // Nothing new: no interval latency.
        assert!(interval(Some(&b), Some(&b)).is_none());
        // The first interval is the whole run so far, and its max the exact max.
        let whole = interval(None, Some(&b)).unwrap();
        assert_eq!(whole.count, 6);
        assert_eq!(whole.max, 50_000);
        assert_eq!(whole.min, 1000);
        assert!(interval(Some(&a), None).is_none());
    }

    #[test]
    fn bpf_cost_per_run() {
        assert_eq!(per_run((1000, 10), (3000, 30)), Some(100.0));
        // Statistics off: the kernel counts nothing.
        assert_eq!(per_run((0, 0), (0, 0)), None);
    }
}
