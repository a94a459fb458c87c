//! One recording, start to finish: set-up in the order that loses nothing, the consumer loop,
//! and the clean stop. What happens to each ring-buffer record (decoding, stacks, release in
//! time order) is the `consumer` module's.
//!
//! [`record`] runs the phases, one module each: `set_up` (steps 1 to 3 below), `attach`
//! (step 4), `run_loop` (step 5 and the loop, with its checkpoints), `detach` and `finish`
//! (the stop). This module keeps what `urec top` shares with them: the signals, the stop rule,
//! the targets allowed, the command stopped after a failure.
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
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use libbpf_rs::OpenObject;
use urec_format::plural;

use crate::command::Workload;
use crate::consumer::State;
use crate::{RecordOptions, Summary, Verbosity};

mod attach;
mod detach;
mod finish;
mod run_loop;
mod set_up;

pub use set_up::check_privileges;
pub(crate) use set_up::check_ring_fits;

/// The consumer's state as a recording has it: writing the data file.
type FileState = State<std::io::BufWriter<crate::output::Output>>;

/// Side-band ring pages per CPU (256 KiB: no loss seen at ≈300 mmaps/s host-wide).
const SIDEBAND_PAGES: usize = 64;
/// How often the consumer wakes when no forced wake-up comes.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

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
        crate::attach::allow_tgid(skel, pid)?;
    }
    let watch = if pids.is_empty() {
        None
    } else {
        Some(PidWatch::new(pids)?)
    };
    if let Some((program, argv)) = command {
        crate::command::become_subreaper()?;
        let w = workload.insert(Workload::fork(program, argv)?);
        crate::attach::allow_tgid(skel, w.pid())?;
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

/// [`run`], with the command left in `workload` for it to stop when this fails: the phases
/// in order, each in its module.
fn record(opts: &RecordOptions, workload: &mut Option<Workload>) -> Result<Summary> {
    let mut storage = MaybeUninit::<OpenObject>::uninit();
    let (set, table, mut feeds) = set_up::set_up(opts, &mut storage, workload)?;
    let attach::Running {
        links,
        attach_ns,
        state,
    } = attach::attach(opts, &set, table)?;
    let state = RefCell::new(state);
    let ring = run_loop::ring(&set, &state)?;
    let mut checkpoints = run_loop::Checkpoints::default();
    let mut stopped = run_loop::run(
        opts,
        &set,
        &mut feeds,
        &ring,
        &state,
        &mut checkpoints,
        workload,
    )?;
    let drained = detach::detach(opts, &set, &mut feeds, links, &ring, &state, &mut stopped)?;
    drop(ring);
    let mut st = state.into_inner();
    if let Some(err) = st.error.take() {
        return Err(err);
    }
    let ending = finish::Ending {
        st,
        feeds,
        checkpoints,
        drained,
        stopped,
        attach_ns,
    };
    finish::finish(opts, ending, workload)
}

/// How the programs are loaded: what differs between a recording and `urec top`.
pub(crate) struct Load {
    /// Trace only the tgids put in the filter.
    pub(crate) filter: bool,
    /// Frames per stack (0: none).
    pub(crate) stack_depth: u32,
    /// The ring buffer's bytes.
    pub(crate) ring_bytes: u32,
    /// Count only (`urec top` without `--top-stacks`).
    pub(crate) count_only: bool,
    /// `-g kernel-dwarf`: load the in-kernel walk and its maps (`crate::kunwind`).
    pub(crate) kernel_dwarf: bool,
}

/// Step 2, as `urec record` and `urec top` both take it: the `--cgroup` directory opened (the
/// request checked it), the programs loaded for `probes`, each probe's configuration written
/// (`configs`: what the caller lets it fetch and copy), and the kernel's counts made ready.
pub(crate) fn load_programs<'obj>(
    storage: &'obj mut MaybeUninit<OpenObject>,
    probes: &[crate::PlannedProbe],
    load: Load,
    cgroup: Option<&std::path::Path>,
    configs: &[(urec_format::ProbeId, urec_bpf::abi::ProbeConfig)],
    extra_probes: u32,
) -> Result<(urec_bpf::UrecSkel<'obj>, crate::aggregates::KernelCounts)> {
    // `extra_probes`: ids after the recording's, for the probe cost's calibration.
    let nprobes = probes.len() as u32 + extra_probes;
    let bits = crate::aggregates::hist_bits(nprobes);
    let cgroup = match cgroup {
        Some(path) => Some(crate::cgroup::open(path).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let skel = crate::attach::load(
        storage,
        &crate::attach::LoadOptions {
            self_tgid: std::process::id(),
            filter: load.filter,
            stack_depth: load.stack_depth,
            ring_bytes: load.ring_bytes,
            probes: nprobes,
            cgroup: cgroup.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
            hist_bits: bits,
            count_only: load.count_only,
            kernel_dwarf: load.kernel_dwarf,
        },
    )?;
    let counts = crate::aggregates::KernelCounts::new(
        &skel,
        probes.iter().map(|p| p.probe.kind).collect(),
        bits,
    )?;
    crate::attach::configure(&skel, configs)?;
    Ok((skel, counts))
}

/// Attaches every probe, as `urec record` and `urec top` both do once their targets are
/// allowed; from here a Ctrl-C stops cleanly (`-v` says "attached" before the consumer is set
/// up, and a user, or a test, may interrupt right then).
pub(crate) fn attach_probes(
    skel: &urec_bpf::UrecSkel<'_>,
    probes: &[crate::PlannedProbe],
    filter: bool,
    verbosity: Verbosity,
) -> Result<crate::attach::Attached> {
    install_signal_handlers();
    let probes: Vec<crate::attach::AttachProbe> =
        probes.iter().map(crate::attach::AttachProbe::of).collect();
    let mut warn = |msg: String| {
        if verbosity != Verbosity::Quiet {
            eprintln!("urec: warning: {msg}");
        }
    };
    crate::attach::attach(skel, &probes, filter, &mut warn)
}

/// `-v`: how many probes are attached with how many links, and how long it took since
/// `started` (tests wait for the word "attached").
pub(crate) fn say_attached(
    verbosity: Verbosity,
    probes: usize,
    attached: &crate::attach::Attached,
    started: Instant,
) {
    if verbosity == Verbosity::Verbose {
        eprintln!(
            "urec: {} attached with {} in {:.1} ms",
            plural(probes as u64, "probe", "probes"),
            plural(attached.links() as u64, "link", "links"),
            started.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// A warning, unless `-q`.
fn warn(opts: &RecordOptions, msg: String) {
    if opts.verbosity != Verbosity::Quiet {
        eprintln!("urec: warning: {msg}");
    }
}
