//! Step 4 of a recording: attach, and only then create the output file (an existing one kept
//! as `.old`), so that a refusal by the kernel does not clobber an earlier recording; write
//! its header and probes, and make the consumer's state around the writer.

use std::collections::VecDeque;

use anyhow::{Context, Result};
use urec_format::{Header, Nanos, Probe, Record, StackMode, Writer};

use super::set_up::SetUp;
use super::{attach_probes, say_attached, FileState, YIELD_BYTES};
use crate::attach::Attached;
use crate::consumer::{decoders, State};
use crate::dwarf::DwarfStacks;
use crate::output;
use crate::processes::ProcessTable;
use crate::sideband::monotonic_now;
use crate::stacks::{StackIds, StackTable};
use crate::RecordOptions;

/// What attaching leaves: the links (dropping them detaches), when they were all attached,
/// and the consumer's state, which now owns the process table and the writer.
pub(super) struct Running {
    pub(super) links: Attached,
    pub(super) attach_ns: Nanos,
    pub(super) state: FileState,
}

/// Step 4. The set-up's process table (with its mapping observer) moves into the consumer's
/// state.
pub(super) fn attach(
    opts: &RecordOptions,
    set: &SetUp<'_>,
    mut table: ProcessTable,
) -> Result<Running> {
    // Before the probes: the exec stamp must see every exec their events could follow.
    let kernel_unwind = if opts.kernel_dwarf {
        let files = crate::kunwind::KernelUnwind::startup_files(opts);
        Some((crate::kunwind::KernelUnwind::new(&set.skel)?, files))
    } else {
        None
    };
    // The fork program: for the tgid filter, and with stacks for the Python walk's map.
    let follow_forks = set.filter || set.stack_depth > 0;
    let links = attach_probes(&set.skel, &opts.probes, follow_forks, opts.verbosity)?;
    let attach_ns = monotonic_now()?;
    if !set.filter {
        // What processes the table does not hold mapped before the side-band opened (later
        // mappings come as records).
        table.survey();
    }
    say_attached(opts.verbosity, opts.probes.len(), &links, set.started);
    let file = output::create(&opts.output)?;
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let (host, kernel, arch) = set.uname.clone();
    let header = Header {
        host,
        kernel,
        arch,
        command: opts.command_line.clone(),
        workload: set.command.as_ref().map(|(_, argv)| argv.clone()),
        start_unix_ns: now_unix,
        start_monotonic_ns: monotonic_now()?,
    };
    let mut writer = Writer::new(
        std::io::BufWriter::new(output::Output::new(file, &opts.output)),
        &header,
    )
    .with_context(|| format!("writing {}", opts.output.display()))?;
    for p in &opts.probes {
        let mut probe: Probe = p.probe.clone();
        if opts.stack_mode == StackMode::None {
            probe.stack_mode = StackMode::None;
        }
        if let Some(site) = probe.site.as_mut() {
            site.cost_ns = set.calibrated.cost_of(p, set.stack_depth > 0);
        }
        writer.write(&Record::Probe(probe))?;
    }

    let mut state = State {
        writer,
        table,
        stacks: StackTable::new(),
        stack_ids: StackIds::new(&set.skel)?,
        ring_records: 0,
        ring_bytes: 0,
        decode: decoders(&opts.probes),
        stack_depth: set.stack_depth,
        pending: VecDeque::new(),
        python: Default::default(),
        pending_sorted: true,
        frames: Vec::with_capacity(130),
        dwarf: DwarfStacks::new(set.stack_depth, &set.copy_sizes),
        yield_bytes: YIELD_BYTES,
        yielded: false,
        latest_ns: 0,
        entries: 0,
        returns: 0,
        max_weight: 1,
        probe_events: vec![0; opts.probes.len()],
        bad_records: 0,
        error: None,
    };
    if let Some((k, precompile)) = kernel_unwind {
        state.dwarf.set_kernel(k, &precompile);
    }
    Ok(Running {
        links,
        attach_ns,
        state,
    })
}
