//! Step 5 and the loop of a recording (see the module docs of `session`): the command let go,
//! the ring buffer drained every [`POLL_INTERVAL`], events released in time order up to the
//! side-band's horizon, the file brought up to date every [`CHECKPOINT_INTERVAL`], and the
//! status line, until it is time to stop.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::{RingBuffer, RingBufferBuilder};
use urec_format::{plural, Filtered, LostSource, Nanos, ProbeId, Record};

use super::set_up::{Feeds, SetUp};
use super::{time_to_stop, FileState, POLL_INTERVAL, YIELD, YIELD_BYTES};
use crate::aggregates::KernelCounts;
use crate::attach;
use crate::command::Workload;
use crate::lost::LostLedger;
use crate::sideband::monotonic_now;
use crate::{RecordOptions, Verbosity};

/// Tests only: the ring is not read for this many milliseconds after the start (a recorder
/// lagging behind short-lived processes; `tests/python.rs`).
const TEST_DELAY_READ_ENV: &str = "UREC_TEST_DELAY_READ_MS";

/// How often the file is brought up to date (chunks flushed, lost counts written), so that a
/// recorder killed without warning leaves at most this much unwritten.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The ring buffer's consumer, feeding `state`: it hands control back to the loop when the
/// stack copies held pass `state.yield_bytes`.
pub(super) fn ring<'a>(
    set: &'a SetUp<'_>,
    state: &'a RefCell<FileState>,
) -> Result<RingBuffer<'a>> {
    let mut builder = RingBufferBuilder::new();
    builder.add(&set.skel.maps.events, |bytes: &[u8]| {
        let mut st = state.borrow_mut();
        if st.error.is_some() {
            return -1;
        }
        match st.on_ring_record(bytes) {
            // Hand control back to the loop to release what is held: libbpf's poll would
            // otherwise keep consuming for as long as the programs keep producing.
            Ok(()) if st.dwarf.held_bytes() > st.yield_bytes => {
                // At most YIELD_BYTES more per poll, even when the horizon cannot advance.
                st.yield_bytes = st.dwarf.held_bytes() + YIELD_BYTES;
                st.yielded = true;
                YIELD
            }
            Ok(()) => 0,
            Err(err) => {
                st.error = Some(err);
                -1
            }
        }
    })?;
    builder
        .build()
        .context("setting up the ring buffer consumer")
}

/// What the file has been told so far of the counts the kernel keeps: lost events (ring and
/// unwinding) and calls the predicates rejected. The file gets what changed since the last
/// checkpoint, so a recorder killed with `kill -9` leaves the counts of its last checkpoint.
#[derive(Default)]
pub(super) struct Checkpoints {
    pub(super) ledger: LostLedger,
    /// The rejected calls already written for each probe.
    filtered_written: HashMap<ProbeId, u64>,
}

impl Checkpoints {
    /// The rejected calls not yet written, from the kernel's running totals.
    pub(super) fn filtered_since(&mut self, counts: Vec<(ProbeId, u64)>) -> Vec<Filtered> {
        let mut out = Vec::new();
        for (probe, total) in counts {
            let written = self.filtered_written.entry(probe).or_default();
            if total > *written {
                out.push(Filtered {
                    probe,
                    count: total - *written,
                });
                *written = total;
            }
        }
        out
    }

    /// Brings the file up to date: what was lost, the in-kernel aggregates that changed and
    /// the rejected calls, then a flush.
    fn checkpoint(
        &mut self,
        set: &SetUp<'_>,
        kernel_counts: &mut KernelCounts,
        st: &mut FileState,
        nprobes: u32,
    ) -> Result<()> {
        let ring_lost = attach::lost_counts(&set.skel, nprobes)?;
        let mut records = self.ledger.catch_up(LostSource::Ring, &ring_lost);
        records.extend(self.ledger.catch_up(LostSource::Unwind, &st.dwarf.lost()));
        for l in records {
            st.writer.write(&Record::Lost(l))?;
        }
        for a in kernel_counts.changed(&set.skel)? {
            st.writer.write(&Record::Aggregate(a))?;
        }
        for f in self.filtered_since(kernel_counts.filtered()) {
            st.writer.write(&Record::Filtered(f))?;
        }
        st.writer.flush()?;
        Ok(())
    }
}

/// How the loop ended.
pub(super) struct Stopped {
    /// When it stopped.
    pub(super) stop_ns: Nanos,
    /// The command's exit status, when its exit is what ended the loop.
    pub(super) workload_status: Option<i32>,
    /// The live status line, to clear once drained.
    pub(super) status_line: Option<indicatif::ProgressBar>,
}

/// Step 5, then the loop until [`time_to_stop`].
pub(super) fn run(
    opts: &RecordOptions,
    set: &SetUp<'_>,
    feeds: &mut Feeds,
    ring: &RingBuffer<'_>,
    state: &RefCell<FileState>,
    checkpoints: &mut Checkpoints,
    workload: &mut Option<Workload>,
) -> Result<Stopped> {
    let nprobes = opts.probes.len() as u32;
    // 5. Go.
    if let Some(w) = workload.as_mut() {
        w.start()?;
    }
    let deadline = opts.duration.map(|d| Instant::now() + d);
    let status_line =
        (opts.verbosity != Verbosity::Quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar
        });
    let mut last_status = Instant::now();
    let mut last_checkpoint = Instant::now();
    let mut workload_status = None;
    // Up to when the ring buffer is known to have been read completely.
    let mut drained_at: Nanos = 0;
    let started = Instant::now();
    let read_delay = std::env::var(TEST_DELAY_READ_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis);
    loop {
        let timeout = if std::mem::take(&mut state.borrow_mut().yielded) {
            Duration::ZERO
        } else {
            POLL_INTERVAL
        };
        // (`yielded` is set again by the callback if this poll stops early too.)
        let before_poll = monotonic_now()?;
        // Tests only (UREC_TEST_DELAY_READ_MS): a recorder that lags behind its processes,
        // so that they have exited before their events are read.
        let delayed = read_delay.is_some_and(|d| started.elapsed() < d);
        // Records are submitted without waking us (a wake-up per event costs microseconds),
        // so epoll only reports the ring once it is a quarter full: after a quiet poll,
        // consume whatever is there, or a slow trickle would sit in the ring until the end
        // (invisible to the status line, and lost to a checkpoint before a kill -9).
        let mut r = 0;
        if delayed {
            std::thread::sleep(POLL_INTERVAL);
        } else {
            r = ring.poll_raw(timeout);
            if r == 0 {
                r = ring.consume_raw();
            }
        }
        if r < 0 && r != -libc::EINTR && r != YIELD {
            if let Some(err) = state.borrow_mut().error.take() {
                return Err(err);
            }
            bail!(
                "reading the ring buffer: {}",
                std::io::Error::from_raw_os_error(-r)
            );
        }
        {
            let mut st = state.borrow_mut();
            // A poll that ran the ring dry read every event stamped before `before_poll`; one
            // that stopped early read those up to the latest one it saw (records enter the
            // ring in about time order). Less the window a program may take from its timestamp
            // to its commit, below.
            drained_at = if delayed {
                drained_at
            } else if st.yielded {
                drained_at.max(st.latest_ns)
            } else {
                before_poll
            };
            st.yield_bytes = st.dwarf.held_bytes().max(YIELD_BYTES) + YIELD_BYTES;
        }
        feeds.sideband.read(&mut feeds.sb)?;
        // A new interpreter's entry at once, not a release later (`crate::python`): a short
        // script runs its code within milliseconds of being mapped.
        let fresh = feeds.sideband.take_fresh_mappings();
        if !fresh.is_empty() {
            // Files already known first (a command's libpython, detected before its start):
            // the host's other new files, each opened to be looked at, come after.
            let mut st = state.borrow_mut();
            // Traced processes only, as the table's intake does (a child whose fork is not
            // followed yet gets its entry there, at the release of its mappings).
            let traced: Vec<_> = fresh
                .iter()
                .filter(|m| st.table.mapped().traces(m.pid))
                .collect();
            let python = st.table.python_mut();
            let rest: Vec<_> = traced
                .into_iter()
                .filter(|m| !python.mapping_if_known(m))
                .collect();
            python.sync(&set.skel);
            for m in rest {
                python.mapping(m);
            }
            python.sync(&set.skel);
        }
        let horizon = feeds
            .sideband
            .horizon()
            .min(drained_at.saturating_sub(crate::sideband::REORDER_WINDOW_NS));
        {
            let mut st = state.borrow_mut();
            st.release(&mut feeds.sb, horizon)?;
            // Python processes the released side-band records started (or ended).
            st.table.python_mut().sync(&set.skel);
            // Code objects and stacks named since the last poll: the programs stop sending
            // their snapshots.
            st.python.sync_maps(&set.skel);
            // Stacks read since the last poll: the programs send their ids alone from now.
            st.stack_ids.sync();
        }
        if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            last_checkpoint = Instant::now();
            let counts = &mut feeds.kernel_counts;
            checkpoints.checkpoint(set, counts, &mut state.borrow_mut(), nprobes)?;
        }
        if time_to_stop(deadline, workload, set.watch.as_ref(), &mut workload_status)? {
            break;
        }
        if let Some(bar) = &status_line {
            if last_status.elapsed() >= Duration::from_millis(250) {
                last_status = Instant::now();
                let st = state.borrow();
                let lost: u64 = attach::lost_counts(&set.skel, nprobes)
                    .map(|v| v.iter().map(|x| x.2).sum())
                    .unwrap_or(0);
                bar.set_message(format!(
                    "recording: {}, {} lost, {}",
                    plural(st.entries + st.returns, "event", "events"),
                    lost,
                    crate::summary::human_bytes(st.writer.bytes_written())
                ));
                bar.tick();
            }
        }
    }
    Ok(Stopped {
        stop_ns: monotonic_now()?,
        workload_status,
        status_line,
    })
}
