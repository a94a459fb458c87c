//! One recording, start to finish: set-up in the order that loses nothing, the consumer loop,
//! and the clean stop. What happens to each ring-buffer record (decoding, stacks, release in
//! time order) is the `consumer` module's.
//!
//! # Order of set-up
//!
//! 1. Privileges, then the side-band (perf dummy events) **before** any probe is attached: an
//!    exec or `dlopen` between the two would otherwise leave events without their mapping.
//! 2. Load the BPF programs and write the per-probe tables; put `-p` pids into the filter.
//! 3. Fork `-- COMMAND` held on a pipe; its pid joins the filter (the fork program follows its
//!    descendants in the kernel).
//! 4. Attach. Only now is the output file created (an existing one kept as `.old`), so a
//!    refusal by the kernel does not clobber an earlier recording.
//! 5. Let the command exec.
//!
//! # The loop
//!
//! Every ≈10 ms (the programs do not wake us per event; see `urec.bpf.c`) the ring buffer is
//! drained into a pending list and the side-band is read. Side-band records come with a
//! *horizon*: every record stamped before it has been read. Pending events up to the horizon are
//! released in time order, interleaved with the side-band records, so a process's exec, mmap and
//! exit land in the file in their true place between its events (and `-g dwarf` stacks are
//! unwound against the mappings of their moment: see the `dwarf` module). The horizon is also
//! held back to the last time the ring buffer was read dry: when the consumer stops early to
//! release held stack copies, the events still in the ring must not be overtaken by the
//! side-band records of their time; the process table emits a
//! process's records on its first event (`ProcessTable::ensure_emitted`).
//!
//! # Stopping
//!
//! SIGINT/SIGTERM, `-d`, the command's exit, or the exit of every `-p` process. Then the links
//! are dropped (nothing new arrives), the ring and the side-band are drained completely, and
//! the file gets the lost counts and the `Finish` record.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::{OpenObject, RingBufferBuilder};
use urec_format::{
    plural, Filtered, Finish, Header, LostSource, Nanos, Probe, ProbeId, Record, StackMode, Writer,
};

use crate::attach::{self, AttachProbe, LoadOptions};
use crate::command::Workload;
use crate::consumer::{decoders, State};
use crate::dwarf::DwarfStacks;
use crate::lost::LostLedger;
use crate::mapped::MappedBinaries;
use crate::output;
use crate::processes::ProcessTable;
use crate::sideband::{monotonic_now, Sideband};
use crate::stacks::StackTable;
use crate::{PlannedProbe, RecordOptions, Summary, Target, Verbosity, WorkloadEnd};

/// Side-band ring pages per CPU (256 KiB: no loss seen at ≈300 mmaps/s host-wide).
const SIDEBAND_PAGES: usize = 64;
/// How often the consumer wakes when no forced wake-up comes.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How often the file is brought up to date (chunks flushed, lost counts written), so that a
/// recorder killed without warning leaves at most this much unwritten.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Stack copies held before the consumer stops reading the ring to release events: a few ms of
/// events at the highest rates, and far below [`crate::dwarf::MAX_PENDING_BYTES`].
const YIELD_BYTES: usize = 8 << 20;
/// What the ring callback returns to make libbpf's poll return early (any negative value
/// stops it, after the record at hand was consumed).
const YIELD: i32 = -libc::EAGAIN;

/// Set by SIGINT/SIGTERM once [`install_signal_handlers`] ran: the recording (or `urec top`)
/// stops cleanly at its next look.
pub(crate) static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set [`STOP`] instead of ending urec.
pub(crate) fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a handler that only stores to an atomic is async-signal-safe; sigaction with
        // a zeroed struct and no SA_RESTART so that waits return EINTR promptly.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
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

/// A pidfd per `-p` process: readable once the process has exited.
pub(crate) struct PidWatch {
    fds: Vec<OwnedFd>,
}

impl PidWatch {
    pub(crate) fn new(pids: &[u32]) -> Result<PidWatch> {
        let mut fds = Vec::new();
        for &pid in pids {
            // SAFETY: pidfd_open(2) with no flags; returns a new fd or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("watching process {pid}"));
            }
            // SAFETY: a fresh fd we own.
            fds.push(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        Ok(PidWatch { fds })
    }

    pub(crate) fn all_exited(&self) -> bool {
        use std::os::fd::AsRawFd;
        let mut polls: Vec<libc::pollfd> = self
            .fds
            .iter()
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: poll over a valid array, no timeout.
        let n = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, 0) };
        n >= 0 && polls.iter().all(|p| p.revents != 0)
    }
}

/// How long the command (and, after a failure, each of its processes) gets between SIGTERM
/// and SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs a recording; see the module docs.
pub fn run(opts: RecordOptions) -> Result<Summary> {
    let mut workload = None;
    let result = record(&opts, &mut workload);
    if let (Err(_), Some(w)) = (&result, workload.as_mut()) {
        stop_after_failure(w, "recording failed");
    }
    result
}

/// After urec failed having started the command: nobody is tracing it any more and nobody
/// would know to stop it (see the `command` module), so it and every process it started are
/// stopped. The probes are detached by now. `what` says what failed (`recording failed`).
/// Lets the programs trace the `-p` processes and forks the command (held until started),
/// also allowed: the set-up `urec record` and `urec top` share. Returns the watch that ends a
/// `-p` recording when its processes have all exited.
pub(crate) fn allow_targets(
    skel: &urec_bpf::UrecSkel<'_>,
    pids: &[u32],
    command: Option<&crate::CommandLine>,
    workload: &mut Option<Workload>,
) -> Result<Option<PidWatch>> {
    for &pid in pids {
        attach::allow_tgid(skel, pid)?;
    }
    let watch = if pids.is_empty() {
        None
    } else {
        Some(PidWatch::new(pids)?)
    };
    if let Some((program, argv)) = command {
        crate::command::become_subreaper()?;
        let w = workload.insert(Workload::fork(program, argv)?);
        attach::allow_tgid(skel, w.pid())?;
    }
    Ok(watch)
}

/// Whether recording (or `urec top`) ends now: on a signal, at `-d`'s deadline, when the
/// command has exited (its status goes to `status`), or when every `-p` process has.
pub(crate) fn time_to_stop(
    deadline: Option<Instant>,
    workload: &mut Option<Workload>,
    watch: Option<&PidWatch>,
    status: &mut Option<i32>,
) -> Result<bool> {
    if STOP.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
        return Ok(true);
    }
    if let Some(s) = workload
        .as_mut()
        .map(Workload::reap_children)
        .transpose()?
        .flatten()
    {
        *status = Some(s);
        return Ok(true);
    }
    Ok(watch.is_some_and(PidWatch::all_exited))
}

pub(crate) fn stop_after_failure(w: &mut Workload, what: &str) {
    if !w.started() {
        return;
    }
    // Said only when something is still running (the command may have ended already).
    let running = crate::command::descendants(std::process::id())
        .iter()
        .any(|&(_, zombie)| !zombie);
    if running {
        eprintln!("urec: {what}; stopping the command and every process it started");
    }
    let alive = w.stop_tree(STOP_GRACE);
    if !alive.is_empty() {
        let pids: Vec<String> = alive.iter().map(u32::to_string).collect();
        eprintln!(
            "urec: warning: {} still alive after SIGKILL: {}",
            plural(alive.len() as u64, "process", "processes"),
            urec_format::name_list(&pids, 8)
        );
    }
}

/// [`run`], with the command left in `workload` for it to stop when this fails.
fn record(opts: &RecordOptions, workload: &mut Option<Workload>) -> Result<Summary> {
    check_privileges()?;
    let started = Instant::now();
    let self_tgid = std::process::id();
    let (host, kernel, arch) = uname();
    let (filter, pids, command) = opts.target.parts();
    let mut warn = |msg: String| {
        if opts.verbosity != Verbosity::Quiet {
            eprintln!("urec: warning: {msg}");
        }
    };

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

    // Every process (`-a`, `-a -- COMMAND`), or the -p / COMMAND processes and descendants.
    let mut mapped = MappedBinaries::new_at(
        opts.probes
            .iter()
            .map(|p| (p.probe.id, p.probe.binary.as_str(), p.open_path.as_path())),
        !filter,
    );
    for &pid in &pids {
        mapped.trace(pid, true);
    }

    // 2. Programs and tables.
    let nprobes = opts.probes.len() as u32;
    let any_dwarf =
        opts.stack_mode != StackMode::None && opts.probes.iter().any(|p| p.config.dwarf);
    if any_dwarf {
        table.track_mappings();
    }
    if !opts.stack_size.is_multiple_of(8) || opts.stack_size > urec_bpf::abi::MAX_STACK_SIZE {
        bail!(
            "--stack-size must be a multiple of 8 of at most {}",
            urec_bpf::abi::MAX_STACK_SIZE
        );
    }
    let stack_depth = if opts.stack_mode == StackMode::None {
        0
    } else {
        opts.stack_depth.clamp(1, urec_bpf::abi::MAX_DEPTH)
    };
    let ring_bytes = ring_size(opts.buffer_size)?;
    let cgroup = match &opts.cgroup {
        Some(path) => Some(crate::cgroup::open(path).map_err(anyhow::Error::msg)?),
        None => None,
    };
    // The probe cost's calibration probes take ids after the recording's.
    let calibration = crate::calibrate::Plan::new(&opts.probes, stack_depth > 0);
    let all_probes = nprobes + calibration.probes();
    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let skel = attach::load(
        &mut storage,
        &LoadOptions {
            self_tgid,
            filter,
            stack_depth,
            ring_bytes,
            probes: all_probes,
            cgroup: cgroup.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
            hist_bits: crate::aggregates::hist_bits(all_probes),
            count_only: false,
        },
    )?;
    let mut kernel_counts = crate::aggregates::KernelCounts::new(
        &skel,
        opts.probes.iter().map(|p| p.probe.kind).collect(),
        crate::aggregates::hist_bits(all_probes),
    )?;
    // Every -g dwarf probe copies at most --stack-size.
    let configs: Vec<_> = opts
        .probes
        .iter()
        .map(|p| {
            let mut cfg = p.config.clone();
            cfg.stack_size = if stack_depth > 0 && cfg.dwarf {
                opts.stack_size
            } else {
                0
            };
            (p.probe.id, cfg)
        })
        .collect();
    attach::configure(&skel, &configs)?;
    // Probe ids are 0..n in order, so `configs[id]` is probe `id`'s.
    let copy_sizes: Vec<u32> = configs.iter().map(|(_, cfg)| cfg.stack_size).collect();
    // Before the recording's probes attach (its helper cannot hit them) and before the command
    // is forked; its links stay until the recording's go.
    let calibrated = crate::calibrate::calibrate(
        &calibration,
        &skel,
        crate::aggregates::hist_bits(all_probes),
        filter,
        opts.cgroup.as_deref(),
        opts.stack_size,
        opts.verbosity == Verbosity::Verbose,
        &mut warn,
    );
    // 3. The targets: the -p processes, and the command, held.
    let watch = allow_targets(&skel, &pids, command.as_ref(), workload)?;
    if let Some(w) = workload.as_ref() {
        mapped.trace(w.pid(), false);
    }

    // From here a Ctrl-C must stop the recording cleanly: `-v` says "attached" before the
    // ring is set up, and a user (or a test) may interrupt right then.
    install_signal_handlers();

    // 4. Attach, then the output file.
    let probes: Vec<AttachProbe> = opts.probes.iter().map(AttachProbe::of).collect();
    let attached = attach::attach(&skel, &probes, filter, &mut warn)?;
    let attach_ns = monotonic_now()?;
    if !filter {
        // Mappings made before the side-band opened; later ones come as records.
        mapped.scan_proc();
    }
    if opts.verbosity == Verbosity::Verbose {
        eprintln!(
            "urec: {} attached with {} in {:.1} ms",
            plural(probes.len() as u64, "probe", "probes"),
            plural(attached.links() as u64, "link", "links"),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    let file = output::create(&opts.output)?;
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let header = Header {
        host,
        kernel,
        arch,
        command: opts.command_line.clone(),
        workload: command.as_ref().map(|(_, argv)| argv.clone()),
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
            site.cost_ns = calibrated.cost_of(p, stack_depth > 0);
        }
        writer.write(&Record::Probe(probe))?;
    }

    let state = RefCell::new(State {
        writer,
        table,
        stacks: StackTable::new(),
        decode: decoders(&opts.probes),
        stack_depth,
        pending: VecDeque::new(),
        pending_sorted: true,
        frames: Vec::with_capacity(130),
        dwarf: DwarfStacks::new(stack_depth, &copy_sizes),
        yield_bytes: YIELD_BYTES,
        yielded: false,
        latest_ns: 0,
        entries: 0,
        returns: 0,
        max_weight: 1,
        probe_events: vec![0; opts.probes.len()],
        mapped,
        bad_records: 0,
        error: None,
    });
    let mut builder = RingBufferBuilder::new();
    builder.add(&skel.maps.events, |bytes: &[u8]| {
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
    let ring = builder
        .build()
        .context("setting up the ring buffer consumer")?;

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
    let mut ledger = LostLedger::default();
    // The rejected calls already written for each probe: the file gets what was rejected since
    // the last checkpoint, so a recorder killed with `kill -9` leaves the counts of its last
    // checkpoint.
    let mut filtered_written: HashMap<ProbeId, u64> = HashMap::new();
    let mut filtered_since = |counts: Vec<(ProbeId, u64)>| -> Vec<Filtered> {
        let mut out = Vec::new();
        for (probe, total) in counts {
            let written = filtered_written.entry(probe).or_default();
            if total > *written {
                out.push(Filtered {
                    probe,
                    count: total - *written,
                });
                *written = total;
            }
        }
        out
    };
    let mut sb = Vec::new();
    let mut workload_status = None;
    // Up to when the ring buffer is known to have been read completely.
    let mut drained_at: Nanos = 0;
    loop {
        let timeout = if std::mem::take(&mut state.borrow_mut().yielded) {
            Duration::ZERO
        } else {
            POLL_INTERVAL
        };
        // (`yielded` is set again by the callback if this poll stops early too.)
        let before_poll = monotonic_now()?;
        // Records are submitted without waking us (a wake-up per event costs microseconds),
        // so epoll only reports the ring once it is a quarter full: after a quiet poll,
        // consume whatever is there, or a slow trickle would sit in the ring until the end
        // (invisible to the status line, and lost to a checkpoint before a kill -9).
        let mut r = ring.poll_raw(timeout);
        if r == 0 {
            r = ring.consume_raw();
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
            drained_at = if st.yielded {
                drained_at.max(st.latest_ns)
            } else {
                before_poll
            };
            st.yield_bytes = st.dwarf.held_bytes().max(YIELD_BYTES) + YIELD_BYTES;
        }
        sideband.read(&mut sb)?;
        let horizon = sideband
            .horizon()
            .min(drained_at.saturating_sub(crate::sideband::REORDER_WINDOW_NS));
        state.borrow_mut().release(&mut sb, horizon)?;
        if last_checkpoint.elapsed() >= CHECKPOINT_INTERVAL {
            last_checkpoint = Instant::now();
            let ring_lost = attach::lost_counts(&skel, nprobes)?;
            let mut st = state.borrow_mut();
            let mut records = ledger.catch_up(LostSource::Ring, &ring_lost);
            records.extend(ledger.catch_up(LostSource::Unwind, &st.dwarf.lost()));
            for l in records {
                st.writer.write(&Record::Lost(l))?;
            }
            for a in kernel_counts.changed(&skel)? {
                st.writer.write(&Record::Aggregate(a))?;
            }
            for f in filtered_since(kernel_counts.filtered()) {
                st.writer.write(&Record::Filtered(f))?;
            }
            st.writer.flush()?;
        }
        if time_to_stop(deadline, workload, watch.as_ref(), &mut workload_status)? {
            break;
        }
        if let Some(bar) = &status_line {
            if last_status.elapsed() >= Duration::from_millis(250) {
                last_status = Instant::now();
                let st = state.borrow();
                let lost: u64 = attach::lost_counts(&skel, nprobes)
                    .map(|v| v.iter().map(|x| x.2).sum())
                    .unwrap_or(0);
                bar.set_message(format!(
                    "recording: {}, {} lost, {}",
                    plural(st.entries + st.returns, "event", "events"),
                    lost,
                    human_bytes(st.writer.bytes_written())
                ));
                bar.tick();
            }
        }
    }
    let stop_ns = monotonic_now()?;

    // Stop: detach, then drain everything in flight (no yielding: the ring bounds what is held).
    drop(attached);
    drop(calibrated);
    state.borrow_mut().yield_bytes = usize::MAX;
    if ring.consume_raw() < 0 {
        if let Some(err) = state.borrow_mut().error.take() {
            return Err(err);
        }
    }
    if let Some(bar) = status_line {
        bar.finish_and_clear();
    }
    sideband.flush(&mut sb)?;
    let lost = attach::lost_counts(&skel, nprobes)?;
    let final_counts = kernel_counts.changed(&skel)?;
    let filtered = kernel_counts.filtered();
    let kernel_calls = kernel_counts.total_calls();
    let filtered_total = filtered.iter().map(|&(_, n)| n).sum();
    let sampled = kernel_counts.sampled();
    drop(ring);
    let mut st = state.into_inner();
    if let Some(err) = st.error.take() {
        return Err(err);
    }
    st.release(&mut sb, Nanos::MAX)?;
    {
        let State { writer, table, .. } = &mut st;
        let mut emit = |r: Record| -> Result<()> { Ok(writer.write(&r)?) };
        table.finish(&mut emit)?;
    }
    let kept_files = st.table.take_kept_files().into_files();
    for l in ledger.catch_up(LostSource::Unwind, &st.dwarf.lost()) {
        st.writer.write(&Record::Lost(l))?;
    }
    let dwarf_stats = st.dwarf.stats().clone();
    let unwind_warnings = st.dwarf.take_warnings();
    for l in ledger.catch_up(LostSource::Ring, &lost) {
        st.writer.write(&Record::Lost(l))?;
    }
    let lost_ring = ledger.total(LostSource::Ring);
    for f in filtered_since(filtered) {
        st.writer.write(&Record::Filtered(f))?;
    }
    for a in final_counts {
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
        mapped,
        bad_records,
        stacks,
        ..
    } = st;
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
    for w in unwind_warnings {
        warn(w);
    }
    // Lost side-band records may have been the very mappings: then say nothing.
    if sideband.lost() == 0 {
        for w in mapped.warnings(&probe_events) {
            warn(w);
        }
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
        warn(format!(
            "{} skipped",
            plural(
                bad_records,
                "malformed ring-buffer record",
                "malformed ring-buffer records"
            )
        ));
    }
    Ok(Summary {
        entries,
        returns,
        lost_ring,
        lost_sideband: sideband.lost(),
        lost_unwind: ledger.total(LostSource::Unwind),
        filtered: filtered_total,
        kernel_calls,
        sampled,
        max_weight,
        truncated_stacks: dwarf_stats.truncated_stacks,
        copy_end_at_cap: dwarf_stats.copy_end_at_cap,
        stacks: stacks.len() as u64,
        bytes,
        duration: Duration::from_nanos(stop_ns.saturating_sub(attach_ns)),
        workload_status,
        workload_end,
        kept_files,
    })
}

/// A size as `--stack-size` and `--buffer-size` take it: `16K`, `16M`, else bytes; the stack
/// copy cap is `64K` (which `--stack-size` rounds down to [`urec_bpf::abi::MAX_STACK_SIZE`]).
pub fn size_flag(bytes: u64) -> String {
    if bytes == u64::from(urec_bpf::abi::MAX_STACK_SIZE) {
        "64K".to_string()
    } else if bytes > 0 && bytes.is_multiple_of(1 << 20) {
        format!("{}M", bytes >> 20)
    } else if bytes > 0 && bytes.is_multiple_of(1 << 10) {
        format!("{}K", bytes >> 10)
    } else {
        bytes.to_string()
    }
}

/// The largest ring-buffer record the programs may write for `probe` (without the ring's own
/// 8-byte header): the event header, every argument at its largest (a string is its 8-byte
/// descriptor and [`urec_bpf::abi::STR_MAX`] bytes), and the stack: for `-g dwarf` the
/// registers, [`urec_bpf::abi::MAX_PENDING`] pending returns and a copy of `stack_size` bytes
/// (`--stack-size`: a copy is shorter only where the stack is), for frame pointers
/// `stack_depth` + 2 frames (the inserted caller and function address).
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
        abi::DWARF_HEADER_SIZE + 16 * abi::MAX_PENDING + stack_size as usize
    } else {
        8 * (stack_depth.min(abi::MAX_DEPTH) as usize + 2)
    };
    abi::EVENT_HEADER_SIZE + args + stack
}

/// Checks that the ring buffer `buffer_size` asks for (rounded up as [`ring_size`] does) can
/// hold the largest record of every probe: the kernel refuses a record bigger than the ring
/// (its size plus an 8-byte header, rounded up to 8), and such an event would be lost every
/// time. The message says what to pass instead.
pub fn check_ring_fits(
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
            size_flag(stack_size.into())
        )
    } else {
        String::new()
    };
    Err(format!(
        "--buffer-size {}: the ring buffer must hold the largest record, {} bytes for {}{}; \
         use --buffer-size {} or more",
        size_flag(buffer_size),
        largest,
        probe.probe.name,
        why,
        size_flag(need.next_power_of_two() as u64)
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

/// `1.2 KiB`-style sizes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_flags() {
        assert_eq!(size_flag(8192), "8K");
        assert_eq!(size_flag(urec_bpf::abi::MAX_STACK_SIZE.into()), "64K");
        assert_eq!(size_flag(40000), "40000");
        assert_eq!(size_flag(128 << 10), "128K");
        assert_eq!(size_flag(16 << 20), "16M");
        assert_eq!(size_flag(1000), "1000");
    }
}
