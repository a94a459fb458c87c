//! Steps 1 to 3 of a recording (see the module docs of `session`): the checks the kernel
//! would fail later, the side-band before any probe, the process table, the programs and
//! their per-probe tables, and the targets allowed (the command forked, held). Also the ring
//! buffer's size, which the request is checked against before any of this.

use std::mem::MaybeUninit;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use libbpf_rs::OpenObject;
use urec_format::StackMode;

use super::{allow_targets, load_programs, Load, PidWatch, SIDEBAND_PAGES};
use crate::aggregates::KernelCounts;
use crate::command::Workload;
use crate::mapped::MappedBinaries;
use crate::processes::ProcessTable;
use crate::sideband::Sideband;
use crate::{CommandLine, PlannedProbe, RecordOptions, Target};

/// What the set-up leaves for the phases after it.
pub(super) struct SetUp<'obj> {
    /// When the set-up began (`-v` says how long attaching took from there).
    pub(super) started: Instant,
    /// This host's name, kernel release and machine, for the header.
    pub(super) uname: (String, String, String),
    /// The programs filter by tgid (`-p`, `-- COMMAND` without `-a`).
    pub(super) filter: bool,
    /// The command to run, with `-- COMMAND`.
    pub(super) command: Option<CommandLine>,
    pub(super) skel: urec_bpf::UrecSkel<'obj>,
    /// Frames per stack (0: no stacks).
    pub(super) stack_depth: u32,
    /// Each probe's `-g dwarf` copy size (0: none), by probe id.
    pub(super) copy_sizes: Vec<u32>,
    /// Ends a `-p` recording when its processes have all exited.
    pub(super) watch: Option<PidWatch>,
    /// The probe cost measured per way; holds the calibration probes' links to the end.
    pub(super) calibrated: crate::calibrate::Calibrated,
}

/// What the loop reads besides the ring buffer: the side-band (and its records read but not
/// yet released) and the kernel's counts.
pub(super) struct Feeds {
    pub(super) sideband: Sideband,
    pub(super) sb: Vec<crate::sideband::SidebandRecord>,
    pub(super) kernel_counts: KernelCounts,
}

/// Steps 1 to 3; the command, once forked, is left in `workload`.
pub(super) fn set_up<'obj>(
    opts: &RecordOptions,
    storage: &'obj mut MaybeUninit<OpenObject>,
    workload: &mut Option<Workload>,
) -> Result<(SetUp<'obj>, ProcessTable, Feeds)> {
    check_privileges()?;
    let started = Instant::now();
    let uname = uname();
    let (filter, pids, command) = opts.target.parts();

    // SAFETY: sysconf(3) has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u64;
    let binaries: std::collections::HashSet<&std::path::Path> =
        opts.probes.iter().map(|p| p.open_path.as_path()).collect();
    crate::fds::check_headroom(cpus, binaries.len() as u64)?;

    // 1. Side-band first.
    let mut sideband = Sideband::open(SIDEBAND_PAGES).context("opening the perf side-band")?;
    let mut table = ProcessTable::new();
    if opts.keep_files {
        table.keep_files();
    }
    // Which probed binaries every process (`-a`, `-a -- COMMAND`), or the -p / COMMAND
    // processes and descendants, map: it observes the table's intake, so it is set (and the
    // -p processes traced) before the table's first snapshot.
    let mut mapped = MappedBinaries::new_at(
        opts.probes
            .iter()
            .map(|p| (p.probe.id, p.probe.binary.as_str(), p.open_path.as_path())),
        !filter,
    );
    for &pid in &pids {
        mapped.trace(pid);
    }
    table.observe_mapped(mapped);
    // The Python frame walk runs only for events that capture a stack: its maps are kept
    // only then (before the first snapshot, which finds the Python processes running now).
    if opts.stack_mode != StackMode::None {
        table.observe_python(crate::python::PythonProcs::enabled());
        sideband.want_fresh_mappings();
    }
    match &opts.target {
        Target::All => table.snapshot_all(),
        Target::Pids(pids) => {
            for &pid in pids {
                if !table.prime(pid) {
                    bail!("process {pid} does not exist");
                }
            }
        }
        Target::Command { .. } => {}
    }

    // 2. Programs and tables.
    let any_dwarf =
        opts.stack_mode != StackMode::None && opts.probes.iter().any(|p| p.config.dwarf);
    if any_dwarf {
        table.track_mappings();
    }
    let stack_depth = if opts.stack_mode == StackMode::None {
        0
    } else {
        opts.stack_depth.clamp(1, urec_bpf::abi::MAX_DEPTH)
    };
    let ring_bytes = ring_size(opts.buffer_size)?;
    // Every -g dwarf probe copies at most --stack-size.
    let configs: Vec<_> = opts
        .probes
        .iter()
        .map(|p| {
            let mut cfg = p.config.clone();
            cfg.stack_size = if stack_depth > 0 && cfg.dwarf {
                opts.stack_size.bytes()
            } else {
                0
            };
            (p.probe.id, cfg)
        })
        .collect();
    let load = Load {
        filter,
        stack_depth,
        ring_bytes,
        count_only: false,
        kernel_dwarf: opts.kernel_dwarf,
    };
    // The probe cost's calibration probes take ids after the recording's.
    let calibration = crate::calibrate::Plan::new(&opts.probes, stack_depth > 0);
    let (skel, kernel_counts) = load_programs(
        storage,
        &opts.probes,
        load,
        opts.cgroup.as_deref(),
        &configs,
        calibration.probes(),
    )?;
    // Probe ids are 0..n in order, so `configs[id]` is probe `id`'s.
    let copy_sizes: Vec<u32> = configs.iter().map(|(_, cfg)| cfg.stack_size).collect();
    // Before the recording's probes attach (its helper cannot hit them) and before the command
    // is forked; its links stay until the recording's end.
    let calibrated = crate::calibrate::calibrate(
        &calibration,
        &skel,
        crate::aggregates::hist_bits(opts.probes.len() as u32 + calibration.probes()),
        filter,
        opts.cgroup.as_deref(),
        opts.stack_size.bytes(),
        opts.verbosity == crate::Verbosity::Verbose,
        &mut |msg| super::warn(opts, msg),
    );
    // The Python processes found so far (snapshots), before any probe attaches.
    table.python_mut().sync(&skel);
    // 3. The targets: the -p processes, and the command, held.
    let watch = allow_targets(&skel, &pids, command.as_ref(), workload)?;
    if let Some(w) = workload.as_ref() {
        table.mapped_mut().trace(w.pid());
        if let Some((program, _)) = command.as_ref() {
            table.python_mut().expect_exec(w.pid(), program);
            table.python_mut().sync(&skel);
        }
    }
    let set = SetUp {
        started,
        uname,
        filter,
        command,
        skel,
        stack_depth,
        copy_sizes,
        watch,
        calibrated,
    };
    let feeds = Feeds {
        sideband,
        sb: Vec::new(),
        kernel_counts,
    };
    Ok((set, table, feeds))
}

/// Checks up front that the kernel will let us load programs and open system-wide perf events.
pub fn check_privileges() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let caps = [
        (39, "CAP_BPF"),
        (38, "CAP_PERFMON"),
        (19, "CAP_SYS_PTRACE"),
        (2, "CAP_DAC_READ_SEARCH"),
    ];
    let missing: Vec<&str> = caps
        .iter()
        .filter(|(bit, _)| eff & (1u64 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if missing.contains(&"CAP_BPF") || missing.contains(&"CAP_PERFMON") {
        bail!(
            "urec record needs root, or the capabilities CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE \
             and CAP_DAC_READ_SEARCH; missing: {} (try sudo)",
            missing.join(", ")
        );
    }
    if !missing.is_empty() {
        eprintln!(
            "urec: warning: missing {}: mappings and build ids of other users' processes may be \
             unreadable",
            missing.join(", ")
        );
    }
    Ok(())
}

fn uname() -> (String, String, String) {
    // SAFETY: uname fills the zeroed struct.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Default::default();
    }
    let s = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (s(&u.nodename), s(&u.release), s(&u.machine))
}

/// The largest ring-buffer record the programs may write for `probe` (without the ring's own
/// 8-byte header): the event header, every argument at its largest (a string is its 8-byte
/// descriptor and [`urec_bpf::abi::STR_MAX`] bytes), and the stack: for `-g dwarf` the
/// registers, [`urec_bpf::abi::MAX_PENDING`] pending returns and a copy of `stack_size` bytes
/// (`--stack-size`: a copy is shorter only where the stack is), for frame pointers
/// `stack_depth` + 2 frames (the inserted caller and function address); with either, the
/// largest Python block (issue 33: a process running CPython).
const PYTHON_BLOCK: usize =
    urec_bpf::abi::PY_HEAD_SIZE + urec_bpf::abi::PY_FRAME_SIZE * urec_bpf::abi::PY_MAX_FRAMES;

fn largest_record(
    probe: &PlannedProbe,
    stack_mode: StackMode,
    stack_depth: u32,
    stack_size: u32,
) -> usize {
    use urec_bpf::abi;
    let args: usize = probe
        .config
        .args
        .iter()
        .map(|a| 8 + if a.is_string { abi::STR_MAX } else { 0 })
        .sum();
    let stack = if stack_mode == StackMode::None || stack_depth == 0 {
        0
    } else if probe.config.dwarf {
        abi::DWARF_HEADER_SIZE + 16 * abi::MAX_PENDING + stack_size as usize + PYTHON_BLOCK
    } else {
        8 * (stack_depth.min(abi::MAX_DEPTH) as usize + 2) + PYTHON_BLOCK
    };
    abi::EVENT_HEADER_SIZE + args + stack
}

/// Checks that the ring buffer `buffer_size` asks for (rounded up as [`ring_size`] does) can
/// hold the largest record of every probe: the kernel refuses a record bigger than the ring
/// (its size plus an 8-byte header, rounded up to 8), and such an event would be lost every
/// time. The message says what to pass instead.
pub(crate) fn check_ring_fits(
    probes: &[PlannedProbe],
    stack_mode: StackMode,
    stack_depth: u32,
    stack_size: u32,
    buffer_size: u64,
) -> std::result::Result<(), String> {
    let ring = ring_size(buffer_size).map_err(|e| e.to_string())? as usize;
    let Some((largest, probe)) = probes
        .iter()
        .map(|p| (largest_record(p, stack_mode, stack_depth, stack_size), p))
        .max_by_key(|(n, _)| *n)
    else {
        return Ok(());
    };
    let need = (largest + 8).next_multiple_of(8);
    if need <= ring {
        return Ok(());
    }
    let why = if probe.config.dwarf && stack_mode != StackMode::None {
        format!(
            " (with a -g dwarf stack copy of up to --stack-size {})",
            crate::summary::size_flag(stack_size.into())
        )
    } else {
        String::new()
    };
    Err(format!(
        "--buffer-size {}: the ring buffer must hold the largest record, {} bytes for {}{}; \
         use --buffer-size {} or more",
        crate::summary::size_flag(buffer_size),
        largest,
        probe.probe.name,
        why,
        crate::summary::size_flag(need.next_power_of_two() as u64)
    ))
}

/// The ring buffer size: a power of two of at least one page.
fn ring_size(requested: u64) -> Result<u32> {
    let page = 4096u64;
    let size = requested
        .max(page)
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX);
    if size > 1 << 30 {
        bail!("--buffer-size {requested} is too large (at most 1 GiB)");
    }
    Ok(size as u32)
}
