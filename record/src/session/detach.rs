//! The stop of a recording: detach (nothing new arrives), then drain everything in flight
//! from the ring buffer and the side-band, and read the kernel's last counts.

use std::cell::RefCell;

use anyhow::Result;
use libbpf_rs::RingBuffer;
use urec_format::{Aggregate, EventKind, ProbeId};

use super::run_loop::Stopped;
use super::set_up::{Feeds, SetUp};
use super::FileState;
use crate::attach::{self, Attached};
use crate::RecordOptions;

/// The kernel's counts once every program is detached.
pub(super) struct Drained {
    /// Events lost in the ring, per probe and kind.
    pub(super) lost: Vec<(ProbeId, EventKind, u64)>,
    /// The aggregates that changed since the last checkpoint.
    pub(super) final_counts: Vec<Aggregate>,
    /// The calls the predicates rejected, per probe (running totals).
    pub(super) filtered: Vec<(ProbeId, u64)>,
    /// Their sum.
    pub(super) filtered_total: u64,
    /// Calls counted in the kernel.
    pub(super) kernel_calls: u64,
    /// Calls whose events the programs did not write (sampled under ring pressure).
    pub(super) sampled: u64,
}

/// Detaches `links`, then drains the ring (no yielding: the ring bounds what is held) and the
/// side-band, and clears the status line.
pub(super) fn detach(
    opts: &RecordOptions,
    set: &SetUp<'_>,
    feeds: &mut Feeds,
    links: Attached,
    ring: &RingBuffer<'_>,
    state: &RefCell<FileState>,
    stopped: &mut Stopped,
) -> Result<Drained> {
    drop(links);
    state.borrow_mut().yield_bytes = usize::MAX;
    if ring.consume_raw() < 0 {
        if let Some(err) = state.borrow_mut().error.take() {
            return Err(err);
        }
    }
    if let Some(bar) = stopped.status_line.take() {
        bar.finish_and_clear();
    }
    feeds.sideband.flush(&mut feeds.sb)?;
    let lost = attach::lost_counts(&set.skel, opts.probes.len() as u32)?;
    let final_counts = feeds.kernel_counts.changed(&set.skel)?;
    let filtered = feeds.kernel_counts.filtered();
    let kernel_calls = feeds.kernel_counts.total_calls();
    let filtered_total = filtered.iter().map(|&(_, n)| n).sum();
    let sampled = feeds.kernel_counts.sampled();
    Ok(Drained {
        lost,
        final_counts,
        filtered,
        filtered_total,
        kernel_calls,
        sampled,
    })
}
