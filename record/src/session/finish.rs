//! The end of a recording: the last events released, every process's end, the lost and
//! rejected counts and the last aggregates written; the command ended if recording stopped
//! first; the `Finish` record, the file synced; the warnings; the [`Summary`].

use std::time::Duration;

use anyhow::{Context, Result};
use urec_format::{plural, Finish, LostSource, Nanos, Record};

use super::detach::Drained;
use super::run_loop::{Checkpoints, Stopped};
use super::set_up::Feeds;
use super::{warn, FileState, STOP_GRACE};
use crate::command::Workload;
use crate::consumer::State;
use crate::{RecordOptions, Summary, Verbosity, WorkloadEnd};

/// What the earlier phases hand over to the last one.
pub(super) struct Ending {
    pub(super) st: FileState,
    pub(super) feeds: Feeds,
    pub(super) checkpoints: Checkpoints,
    pub(super) drained: Drained,
    pub(super) stopped: Stopped,
    pub(super) attach_ns: Nanos,
}

/// Writes the end of the file and says what the recording produced.
pub(super) fn finish(
    opts: &RecordOptions,
    ending: Ending,
    workload: &mut Option<Workload>,
) -> Result<Summary> {
    let Ending {
        mut st,
        mut feeds,
        mut checkpoints,
        drained,
        stopped,
        attach_ns,
    } = ending;
    let Stopped {
        stop_ns,
        mut workload_status,
        ..
    } = stopped;
    st.release(&mut feeds.sb, Nanos::MAX)?;
    {
        let State { writer, table, .. } = &mut st;
        let mut emit = |r: Record| -> Result<()> { Ok(writer.write(&r)?) };
        table.finish(&mut emit)?;
    }
    let kept_files = st.table.take_kept_files().into_files();
    let ledger = &mut checkpoints.ledger;
    for l in ledger.catch_up(LostSource::Unwind, &st.dwarf.lost()) {
        st.writer.write(&Record::Lost(l))?;
    }
    let dwarf_stats = st.dwarf.stats().clone();
    let unwind_warnings = st.dwarf.take_warnings();
    if opts.verbosity == Verbosity::Verbose {
        if let Some(line) = st.dwarf.kernel_summary() {
            eprintln!("urec: {line}");
        }
        // What bench/run reads for the ring's bytes per event.
        eprintln!(
            "urec: ring: {} records, {} bytes ({:.1} bytes per record); stack ids: {} read \
             in {} batches",
            st.ring_records,
            st.ring_bytes,
            st.ring_bytes as f64 / st.ring_records.max(1) as f64,
            st.stack_ids.read,
            st.stack_ids.batches,
        );
    }
    if st.stack_ids.missing > 0 {
        warn(
            opts,
            format!(
                "{} written without their stack (its id was not found; please report)",
                plural(st.stack_ids.missing, "event", "events")
            ),
        );
    }
    for l in ledger.catch_up(LostSource::Ring, &drained.lost) {
        st.writer.write(&Record::Lost(l))?;
    }
    let lost_ring = ledger.total(LostSource::Ring);
    let lost_unwind = ledger.total(LostSource::Unwind);
    for f in checkpoints.filtered_since(drained.filtered) {
        st.writer.write(&Record::Filtered(f))?;
    }
    for a in drained.final_counts {
        st.writer.write(&Record::Aggregate(a))?;
    }
    // The command: if recording stopped first (signal, -d), end it as perf does, and report
    // its status.
    if let Some(w) = workload.as_mut() {
        if workload_status.is_none() {
            workload_status = w.try_wait()?;
            if workload_status.is_none() {
                workload_status = Some(w.terminate(STOP_GRACE)?);
            }
        }
    }
    st.writer.write(&Record::Finish(Finish {
        attach_ns,
        stop_ns,
        workload_status,
    }))?;
    let workload_end = workload.as_ref().and_then(|w| {
        Some(WorkloadEnd {
            ended: w.ended()?,
            by_urec: w.terminated(),
        })
    });
    let State {
        writer,
        entries,
        returns,
        max_weight,
        probe_events,
        table,
        bad_records,
        stacks,
        python,
        ..
    } = st;
    // The Python walk's counts: with -v when there was any Python block, and always with
    // UREC_DEBUG_PYTHON (what the tests check the walk by).
    if std::env::var_os("UREC_DEBUG_PYTHON").is_some()
        || (opts.verbosity == crate::Verbosity::Verbose && python.stats.blocks > 0)
    {
        eprintln!("{}", python.stats.line());
    }
    let out = writer.finish()?;
    let file = out
        .into_inner()
        .map_err(|e| anyhow::Error::new(e.into_error()))?
        .into_file();
    // Some file systems report a full disk or an I/O error only here; one that cannot sync
    // at all (EINVAL) has nothing more to say.
    if let Err(err) = file.sync_all() {
        if err.raw_os_error() != Some(libc::EINVAL) {
            return Err(err).with_context(|| format!("writing {}", opts.output.display()));
        }
    }
    let bytes = std::fs::metadata(&opts.output)
        .map(|m| m.len())
        .unwrap_or(0);
    // Lost side-band records may have been the very mappings: then say nothing.
    let mapped_warnings = if feeds.sideband.lost() == 0 {
        table.mapped().warnings(&probe_events)
    } else {
        Vec::new()
    };
    say_at_end(
        opts,
        unwind_warnings,
        mapped_warnings,
        &dwarf_stats,
        bad_records,
    );
    Ok(Summary {
        entries,
        returns,
        lost_ring,
        lost_sideband: feeds.sideband.lost(),
        lost_unwind,
        filtered: drained.filtered_total,
        kernel_calls: drained.kernel_calls,
        sampled: drained.sampled,
        max_weight,
        truncated_stacks: dwarf_stats.truncated_stacks,
        copy_end_at_cap: dwarf_stats.copy_end_at_cap,
        stacks: stacks.len() as u64,
        bytes,
        duration: Duration::from_nanos(stop_ns.saturating_sub(attach_ns)),
        workload_status,
        workload_end,
        kept_files,
        wording: crate::summary::Wording {
            output: opts.output.clone(),
            stack_size: opts.stack_size.bytes(),
            program: workload_program(opts),
        },
    })
}

/// The command's name as the user wrote it, for the last line.
fn workload_program(opts: &RecordOptions) -> Option<String> {
    match &opts.target {
        crate::Target::Command { argv, .. } => argv.first().cloned(),
        _ => None,
    }
}

/// The warnings of the recording's end (unwinding, probed binaries never mapped, malformed
/// records), and with `-v` what unwinding cost.
fn say_at_end(
    opts: &RecordOptions,
    unwind_warnings: Vec<String>,
    mapped_warnings: Vec<String>,
    dwarf_stats: &crate::dwarf::DwarfStats,
    bad_records: u64,
) {
    for w in unwind_warnings.into_iter().chain(mapped_warnings) {
        warn(opts, w);
    }
    if opts.verbosity == Verbosity::Verbose && dwarf_stats.unwound > 0 {
        let mut why: Vec<String> = dwarf_stats
            .truncated
            .iter()
            .map(|(k, n)| format!("{n} {k:?}"))
            .collect();
        why.sort();
        eprintln!(
            "urec: {} unwound ({} from the memo), {:.0} ns each, {:.0} stack bytes \
             copied each; truncated: {}",
            plural(dwarf_stats.unwound, "stack", "stacks"),
            dwarf_stats.memo_hits,
            dwarf_stats.unwind_ns as f64 / dwarf_stats.unwound as f64,
            dwarf_stats.copied_bytes as f64 / dwarf_stats.unwound as f64,
            if why.is_empty() {
                "none".to_string()
            } else {
                why.join(", ")
            }
        );
    }
    if bad_records > 0 {
        warn(
            opts,
            format!(
                "{} skipped",
                plural(
                    bad_records,
                    "malformed ring-buffer record",
                    "malformed ring-buffer records"
                )
            ),
        );
    }
}
