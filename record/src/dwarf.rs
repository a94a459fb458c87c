//! `-g dwarf` in the recorder: the captured registers and stack copies of the BPF programs,
//! turned into plain address lists by the [`Unwinder`](crate::unwind::Unwinder) while the
//! events are written.
//!
//! # When the unwind happens
//!
//! Not when a record comes off the ring buffer, but when the event is *released* to the file:
//! the session releases events in time order interleaved with the side-band records, so at that
//! moment the process table holds exactly the mappings the process had when the stack was
//! captured (an exec, a `dlopen` or an exit just before or after is applied on the right side of
//! the event). The copy waits in memory until then (≈10 ms of events; bounded, see
//! [`MAX_PENDING_BYTES`]).
//!
//! # Which mappings the unwinder knows
//!
//! Only those of processes with a captured stack: the first stack of a pid loads that process's
//! current mappings from the process table (its `/proc` snapshot or side-band history), and from
//! then on the table's [`MappingChange`]s keep the unwinder in step. A system-wide recording
//! thus never parses the unwind tables of binaries no traced process runs.
//!
//! # What is counted
//!
//! A stack that could not be unwound at all (no stack bytes could be read, or no mapping of the
//! process is known) or that was dropped because the recorder fell behind is counted as
//! `Lost { source: Unwind }` per probe and kind; its event is still written, with the probed
//! address as a one-frame truncated stack, or without a stack when dropped. A stack that stops
//! early is written as far as it goes with `truncated: true`; [`DwarfStats`] says why.
//!
//! # How much stack is copied
//!
//! The BPF program copies from the stack pointer to the end of the thread's stack (its
//! mapping's end, `mm->start_stack` in the main thread), capped at `--stack-size`
//! (`urec_probe_cfg.stack_size`): a stack within the cap is whole from the first event, and
//! nothing here needs to learn how deep the stacks are (a copy size raised after unwinds had
//! run off its end lost every stack taken before the raise: a whole burst). What is left to
//! count is an unwind that ran off the end of a copy cut by the cap
//! ([`DwarfStats::copy_end_at_cap`]), which a larger `--stack-size` (up to 64K) may avoid.

use std::collections::HashMap;
use std::ops::Range;

use urec_bpf::abi::{RawDwarf, D_READ_FAILED};
use urec_format::{EventKind, ProbeId};

use crate::kunwind::KernelUnwind;
use crate::processes::{MappingChange, ProcessTable};
use crate::unwind::{PendingReturn, Regs, Truncation, UnwindOutcome, Unwinder};

/// Stack copies held for unwinding at most: past this, new copies are dropped (and counted)
/// until the consumer catches up. 256 MiB is ≈100,000 typical copies, far more than the
/// ≈10 ms between releases hold at any rate the probes can fire.
pub const MAX_PENDING_BYTES: usize = 256 << 20;

/// The address ranges of the faulted chunks of a copy of `len` bytes from `sp`: chunk 0 runs
/// to the next 4 KiB boundary, every later chunk is one page.
fn hole_ranges(sp: u64, len: usize, holes: u32) -> Vec<Range<u64>> {
    let end = sp + len as u64;
    let mut ranges = Vec::new();
    let mut start = sp;
    let mut i = 0;
    while start < end && i < 32 {
        let next = ((start | 4095) + 1).min(end);
        if holes & (1 << i) != 0 {
            ranges.push(start..next);
        }
        start = next;
        i += 1;
    }
    ranges
}

/// One captured stack waiting for its release.
#[derive(Debug)]
pub struct Capture {
    regs: Regs,
    trampoline: Option<u64>,
    leaf: u64,
    pending: Vec<PendingReturn>,
    stack: Vec<u8>,
    /// Bit i: chunk i of the copy faulted (see `RawDwarf::holes`).
    holes: u32,
    read_failed: bool,
}

/// Why stacks were truncated, and how many.
#[derive(Clone, Debug, Default)]
pub struct DwarfStats {
    /// Stacks unwound (including truncated ones).
    pub unwound: u64,
    /// Truncated stacks by reason.
    pub truncated: HashMap<Truncation, u64>,
    /// Stacks cut at the `--stack-depth` limit.
    pub too_deep: u64,
    /// Stack reads that faulted entirely.
    pub read_failed: u64,
    /// Copies dropped because [`MAX_PENDING_BYTES`] were waiting.
    pub dropped: u64,
    /// Nanoseconds spent in the unwinder.
    pub unwind_ns: u64,
    /// Stacks answered by the unwinder's memo (an earlier identical unwind).
    pub memo_hits: u64,
    /// Stack bytes copied by the BPF programs (all captures, dropped ones too).
    pub copied_bytes: u64,
    /// Stacks written with `truncated: true`, for any reason (what the report marks
    /// `[truncated]`; each counted once, even when cut at the depth limit too).
    pub truncated_stacks: u64,
    /// Of those, stacks that ran off the end of a copy cut by the probe's cap
    /// (`--stack-size`): the stack went on beyond it. (A copy shorter than the cap ended at
    /// the end of the stack, where more bytes would not have helped.)
    pub copy_end_at_cap: u64,
}

/// The recorder's DWARF state: the unwinder, the copies in flight, the counts.
pub struct DwarfStacks {
    unwinder: Unwinder,
    depth: usize,
    held_bytes: usize,
    free: Vec<Vec<u8>>,
    out: Vec<u64>,
    /// `Lost { source: Unwind }` counts by (probe, kind).
    lost: HashMap<(ProbeId, EventKind), u64>,
    stats: DwarfStats,
    /// Per probe id: the most stack its copies hold (0: none).
    caps: Vec<u32>,
    /// `-g kernel-dwarf`: every copy here is an event the kernel could not walk, and tells it
    /// what to load (see [`crate::kunwind`]).
    kernel: Option<KernelUnwind>,
}

impl DwarfStacks {
    /// Stacks are cut at `depth` frames (`--stack-depth`); `caps[id]` is the most stack probe
    /// `id` copies (0 for probes without a copy).
    pub fn new(depth: u32, caps: &[u32]) -> Self {
        DwarfStacks {
            caps: caps.to_vec(),
            unwinder: Unwinder::new(),
            depth: depth.max(1) as usize,
            held_bytes: 0,
            free: Vec::new(),
            out: Vec::new(),
            lost: HashMap::new(),
            stats: DwarfStats::default(),
            kernel: None,
        }
    }

    /// `-g kernel-dwarf`: feeds the in-kernel walk's maps from here on, with the tables of
    /// `precompile` (see [`KernelUnwind::precompile`]) ready.
    pub fn set_kernel(&mut self, mut kernel: KernelUnwind, precompile: &[std::path::PathBuf]) {
        kernel.precompile(&mut self.unwinder, precompile);
        self.kernel = Some(kernel);
    }

    /// `-g kernel-dwarf`: what the in-kernel walk did, for `-v`.
    pub fn kernel_summary(&self) -> Option<String> {
        self.kernel.as_ref().map(KernelUnwind::summary)
    }

    /// Copies a ring-buffer record's stack for a later [`DwarfStacks::unwind`]; `None` when
    /// too much is held already (the drop is counted against `probe`/`kind`).
    pub fn capture(
        &mut self,
        raw: &RawDwarf<'_>,
        probe: ProbeId,
        kind: EventKind,
    ) -> Option<Capture> {
        self.stats.copied_bytes += raw.stack.len() as u64;
        if self.held_bytes + raw.stack.len() > MAX_PENDING_BYTES {
            self.stats.dropped += 1;
            *self.lost.entry((probe, kind)).or_default() += 1;
            return None;
        }
        let mut stack = self.free.pop().unwrap_or_default();
        stack.clear();
        stack.extend_from_slice(raw.stack);
        self.held_bytes += stack.len();
        Some(Capture {
            regs: Regs {
                ip: raw.ip,
                sp: raw.sp,
                bp: raw.bp,
            },
            trampoline: (raw.trampoline != 0).then_some(raw.trampoline),
            leaf: raw.leaf,
            pending: raw
                .pending()
                .map(|(slot, ret)| PendingReturn { slot, ret })
                .collect(),
            stack,
            holes: raw.holes,
            read_failed: raw.status & D_READ_FAILED != 0,
        })
    }

    /// `-g kernel-dwarf`: a copy of `pid`'s stack was just read (see
    /// [`KernelUnwind::early`]).
    pub fn early(&mut self, pid: u32) {
        if let Some(k) = &mut self.kernel {
            k.early(&mut self.unwinder, pid);
        }
    }

    /// Applies the process table's mapping changes (of a record at `time_ns`) to the processes
    /// the unwinder knows.
    pub fn follow(&mut self, table: &mut ProcessTable, time_ns: u64) {
        let unwinder = &mut self.unwinder;
        let kernel = &mut self.kernel;
        table.take_changes(|change| match change {
            MappingChange::Added(m) => {
                if unwinder.knows(m.pid) {
                    unwinder.add_mapping(m.pid, &m);
                }
                if let Some(k) = kernel {
                    k.added(unwinder, &m);
                }
            }
            MappingChange::Forget(pid) => {
                unwinder.exit(pid);
                if let Some(k) = kernel {
                    k.forget(pid, time_ns);
                }
            }
        });
    }

    /// Unwinds `capture`, taken in `pid` at `time_ns` for an event of `probe`/`kind`: returns
    /// the frames (innermost first) and whether the stack is truncated. The copy's buffer is
    /// kept for reuse.
    pub fn unwind(
        &mut self,
        table: &mut ProcessTable,
        pid: u32,
        time_ns: u64,
        (probe, kind): (ProbeId, EventKind),
        capture: Capture,
    ) -> (&[u64], bool) {
        self.held_bytes = self.held_bytes.saturating_sub(capture.stack.len());
        if !self.unwinder.knows(pid) {
            for m in table.mappings(pid) {
                self.unwinder.add_mapping(pid, m);
            }
        }
        let started = std::time::Instant::now();
        let outcome = if capture.read_failed {
            self.stats.read_failed += 1;
            self.out.clear();
            self.out.push(capture.regs.ip);
            UnwindOutcome::Truncated(Truncation::StackCopyEnd)
        } else {
            let holes = hole_ranges(capture.regs.sp, capture.stack.len(), capture.holes);
            self.unwinder.unwind_with_holes(
                pid,
                capture.regs,
                &capture.stack,
                &holes,
                capture.trampoline,
                &capture.pending,
                &mut self.out,
            )
        };
        self.stats.unwind_ns += started.elapsed().as_nanos() as u64;
        if let Some(k) = &mut self.kernel {
            k.on_fallback(&mut self.unwinder, table, pid, time_ns, &self.out);
        }
        self.stats.memo_hits = self.unwinder.memo_hits();
        self.stats.unwound += 1;
        let copied = capture.stack.len();
        if self.free.len() < 1024 {
            self.free.push(capture.stack);
        }
        let mut truncated = outcome.is_truncated();
        if let UnwindOutcome::Truncated(why) = outcome {
            *self.stats.truncated.entry(why).or_default() += 1;
            if self.out.len() <= 1 {
                // Nothing beyond the probed address: the stack is as good as lost.
                *self.lost.entry((probe, kind)).or_default() += 1;
            }
            if why == Truncation::StackCopyEnd && !capture.read_failed && self.at_cap(probe, copied)
            {
                self.stats.copy_end_at_cap += 1;
            }
        }
        if capture.leaf != 0 {
            self.out.insert(0, capture.leaf);
        }
        if self.out.len() > self.depth {
            self.out.truncate(self.depth);
            self.stats.too_deep += 1;
            truncated = true;
        }
        if truncated {
            self.stats.truncated_stacks += 1;
        }
        (&self.out, truncated)
    }

    /// Whether a `len`-byte copy of `probe` was cut by its cap. The program masks the length to
    /// a multiple of 8, as the cap is.
    fn at_cap(&self, probe: ProbeId, len: usize) -> bool {
        self.caps
            .get(probe as usize)
            .is_some_and(|&cap| cap > 0 && len >= cap as usize)
    }

    /// Warnings about binaries whose unwind tables could not be used, once each.
    pub fn take_warnings(&mut self) -> Vec<String> {
        self.unwinder.take_warnings()
    }

    /// `Lost { source: Unwind }` counts by (probe, kind), sorted.
    pub fn lost(&self) -> Vec<(ProbeId, EventKind, u64)> {
        let mut v: Vec<_> = self.lost.iter().map(|(&(p, k), &n)| (p, k, n)).collect();
        v.sort_by_key(|&(p, k, _)| (p, k == EventKind::Return));
        v
    }

    /// Bytes of stack copies waiting for their release.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// What happened so far.
    pub fn stats(&self) -> &DwarfStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use urec_bpf::abi::MAX_STACK_SIZE;

    #[test]
    fn holes_are_page_chunks() {
        // 0x1ff0..0x1ff0+0x2020: chunk 0 = 0x1ff0..0x2000, chunk 1 = 0x2000..0x3000,
        // chunk 2 = 0x3000..0x4000, chunk 3 = 0x4000..0x4010.
        assert_eq!(
            hole_ranges(0x1ff0, 0x2020, 0b1010),
            vec![0x2000..0x3000, 0x4000..0x4010]
        );
        assert_eq!(hole_ranges(0x1ff0, 0x2020, 0b0001), vec![0x1ff0..0x2000]);
        assert!(hole_ranges(0x1000, 0, 1).is_empty());
    }

    #[test]
    fn only_copies_cut_by_the_cap_count_at_the_cap() {
        let d = DwarfStacks::new(127, &[8192, 0, MAX_STACK_SIZE]);
        assert!(d.at_cap(0, 8192));
        // Shorter: the copy ended at the end of the stack.
        assert!(!d.at_cap(0, 4000));
        // No copies, or an unknown probe.
        assert!(!d.at_cap(1, 0));
        assert!(!d.at_cap(7, 8192));
        assert!(d.at_cap(2, MAX_STACK_SIZE as usize));
        assert!(!d.at_cap(2, 8192));
    }
}
