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
//! Each probe has its own copy size (`urec_probe_cfg.stack_size`), starting at `--stack-size`.
//! When one of its unwinds runs off the end of a copy that was as long as the probe's current
//! size ([`Truncation::StackCopyEnd`]), the size doubles (up to [`MAX_STACK_SIZE`]); the
//! session rewrites the probe's map entry, and the following events copy that much. See
//! [`DwarfStacks::take_raised`] for why at once and why doubling.

use std::collections::HashMap;
use std::ops::Range;

use urec_bpf::abi::{RawDwarf, D_READ_FAILED, MAX_STACK_SIZE};
use urec_format::{EventKind, ProbeId};

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
    /// Of those, stacks that ran off the end of a copy cut by a size below [`MAX_STACK_SIZE`]:
    /// a bigger starting `--stack-size` would have avoided them.
    pub copy_end_below_cap: u64,
    /// Of those, stacks that ran off the end of a copy of [`MAX_STACK_SIZE`] bytes: nothing
    /// urec can copy avoids them.
    pub copy_end_at_cap: u64,
}

/// One probe's stack copy size.
#[derive(Clone, Debug, Default)]
struct CopySize {
    /// Bytes the programs copy now (what the `probes` map holds, or is about to).
    now: u32,
    /// Every size the probe has had, `now` last (at most four: 8K, 16K, 32K, 64K). A copy of
    /// exactly one of them was cut by the size; any other length ended at the top of the
    /// stack, where a bigger size would not have helped.
    used: Vec<u32>,
    /// The unwinds of this probe ran off the end of a copy cut by a size below the cap.
    truncated_below_cap: bool,
    /// A complete unwind of a copy longer than the previous size was seen: `now` is enough
    /// for the stacks seen so far (what the summary's hint suggests).
    enough: bool,
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
    /// Per probe id: its copy size.
    sizes: Vec<CopySize>,
    /// Sizes raised since the last [`DwarfStacks::take_raised`].
    raised: Vec<(ProbeId, u32)>,
}

impl DwarfStacks {
    /// Stacks are cut at `depth` frames (`--stack-depth`); `sizes[id]` is the stack copy size
    /// probe `id` starts with (0 for probes without a copy).
    pub fn new(depth: u32, sizes: &[u32]) -> Self {
        DwarfStacks {
            sizes: sizes
                .iter()
                .map(|&now| CopySize {
                    now,
                    used: vec![now],
                    truncated_below_cap: false,
                    enough: false,
                })
                .collect(),
            raised: Vec::new(),
            unwinder: Unwinder::new(),
            depth: depth.max(1) as usize,
            held_bytes: 0,
            free: Vec::new(),
            out: Vec::new(),
            lost: HashMap::new(),
            stats: DwarfStats::default(),
        }
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

    /// Applies the process table's mapping changes to the processes the unwinder knows.
    pub fn follow(&mut self, table: &mut ProcessTable) {
        let unwinder = &mut self.unwinder;
        table.take_changes(|change| match change {
            MappingChange::Added(m) => {
                if unwinder.knows(m.pid) {
                    unwinder.add_mapping(m.pid, &m);
                }
            }
            MappingChange::Forget(pid) => unwinder.exit(pid),
        });
    }

    /// Unwinds `capture`, taken in `pid` for an event of `probe`/`kind`: returns the frames
    /// (innermost first) and whether the stack is truncated. The copy's buffer is kept for
    /// reuse.
    pub fn unwind(
        &mut self,
        table: &mut ProcessTable,
        pid: u32,
        probe: ProbeId,
        kind: EventKind,
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
            if why == Truncation::StackCopyEnd && !capture.read_failed {
                self.copy_too_short(probe, copied);
            }
        } else {
            self.copy_sufficed(probe, copied);
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

    /// An unwind of `probe` ran off the end of a `len`-byte copy: counts it when the copy was
    /// cut by the probe's size, and raises the size when that was the current one (copies
    /// taken before an earlier raise are shorter; a copy that ended at the top of the stack
    /// has a length that is no size at all).
    fn copy_too_short(&mut self, probe: ProbeId, len: usize) {
        let Some(size) = self.sizes.get_mut(probe as usize) else {
            return;
        };
        let Ok(len) = u32::try_from(len) else {
            return;
        };
        if !size.used.contains(&len) {
            return;
        }
        if len >= MAX_STACK_SIZE {
            self.stats.copy_end_at_cap += 1;
            return;
        }
        self.stats.copy_end_below_cap += 1;
        size.truncated_below_cap = true;
        if len == size.now {
            size.now = size.now.saturating_mul(2).clamp(8, MAX_STACK_SIZE) & !7;
            size.used.push(size.now);
            size.enough = false;
            self.raised.push((probe, size.now));
        }
    }

    /// An unwind of `probe` from a `len`-byte copy was complete: when the copy was longer
    /// than the probe's previous size, it was taken at the current one, which is then known to
    /// be enough.
    fn copy_sufficed(&mut self, probe: ProbeId, len: usize) {
        if let Some(size) = self.sizes.get_mut(probe as usize) {
            let previous = size.used.iter().rev().nth(1).copied().unwrap_or(0);
            if len > previous as usize {
                size.enough = true;
            }
        }
    }

    /// The probes whose copy size was raised since the last call, with their new size, for the
    /// session to write to the `probes` map.
    ///
    /// The policy: **at once, doubling, up to [`MAX_STACK_SIZE`]**. At once, because each
    /// event until the raise is a stack lost (`[truncated]`), while a raise costs only the
    /// bigger copy of this one probe's events (≈ 0.5–1 µs more per call per 8 KiB on the
    /// project's VM: docs/performance.md, "Deep stacks: the copy grows"); a stack that ran
    /// off the end of a full copy is no accident of timing that waiting would filter out.
    /// Doubling, because the unwind cannot tell how much more it would have needed: at most
    /// three steps from the default 8K to the cap, and never more than twice what the deepest
    /// stack seen needs. Only a copy as long as the current size raises it: copies still in
    /// flight from before a raise are shorter and do not raise it again.
    pub fn take_raised(&mut self) -> Vec<(ProbeId, u32)> {
        std::mem::take(&mut self.raised)
    }

    /// What to pass as `--stack-size` to avoid the truncations seen below the cap: the largest
    /// size a probe that had them reached by the end, if a complete unwind showed that size to
    /// be enough, else the cap (the recording may have ended before a copy of the last size
    /// was unwound, or that size too was short). `None` when there were no such truncations.
    pub fn stack_size_hint(&self) -> Option<u32> {
        self.sizes
            .iter()
            .filter(|s| s.truncated_below_cap)
            .map(|s| if s.enough { s.now } else { MAX_STACK_SIZE })
            .max()
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
    fn copy_size_doubles_up_to_the_cap() {
        let mut d = DwarfStacks::new(127, &[8192, 0]);
        d.copy_too_short(0, 8192);
        assert_eq!(d.take_raised(), vec![(0, 16384)]);
        // A copy taken before the raise does not raise again.
        d.copy_too_short(0, 8192);
        assert!(d.take_raised().is_empty());
        // Not yet shown to be enough: the hint is the cap. A complete unwind of a copy no
        // longer than 8K proves nothing about 16K; one of 9000 bytes does.
        assert_eq!(d.stack_size_hint(), Some(MAX_STACK_SIZE));
        d.copy_sufficed(0, 8000);
        assert_eq!(d.stack_size_hint(), Some(MAX_STACK_SIZE));
        d.copy_sufficed(0, 9000);
        assert_eq!(d.stack_size_hint(), Some(16384));
        d.copy_too_short(0, 16384);
        d.copy_too_short(0, 32768);
        assert_eq!(d.take_raised(), vec![(0, 32768), (0, MAX_STACK_SIZE)]);
        d.copy_too_short(0, MAX_STACK_SIZE as usize);
        assert!(d.take_raised().is_empty());
        assert_eq!(d.stats().copy_end_below_cap, 4);
        assert_eq!(d.stats().copy_end_at_cap, 1);
        assert_eq!(d.stack_size_hint(), Some(MAX_STACK_SIZE));
        // A copy that ended at the top of the stack, shorter than the size: no raise, and no
        // hint (a bigger size would not have helped); unknown probe ids are ignored.
        let mut d = DwarfStacks::new(127, &[8192]);
        d.copy_too_short(0, 4000);
        d.copy_too_short(7, 8192);
        assert!(d.take_raised().is_empty());
        assert_eq!(d.stats().copy_end_below_cap, 0);
        assert_eq!(d.stack_size_hint(), None);
        // Started at the cap: counted at the cap, no hint.
        let mut d = DwarfStacks::new(127, &[MAX_STACK_SIZE]);
        d.copy_too_short(0, MAX_STACK_SIZE as usize);
        assert!(d.take_raised().is_empty());
        assert_eq!(d.stats().copy_end_at_cap, 1);
        assert_eq!(d.stack_size_hint(), None);
        // An odd starting size stays a multiple of 8.
        let mut d = DwarfStacks::new(127, &[40000]);
        d.copy_too_short(0, 40000);
        assert_eq!(d.take_raised(), vec![(0, MAX_STACK_SIZE)]);
        assert_eq!(DwarfStacks::new(127, &[8192]).stack_size_hint(), None);
    }
}
