//! The probe cost, measured (SPEC.md, "Probe sites and probe cost"): every latency urec reports
//! includes the time the kernel and urec's programs spend between the entry probe's stamp and
//! the return probe's, which for a function that takes 2 ns is all of it. How much depends on
//! how the probe runs: an entry instruction the kernel emulates or one it single-steps out of
//! line (a second trap: 10x or more in a VM), a return seen by a uretprobe or by probes on the
//! function's exits (Go), the stack mode. So before the recording's probes are attached, urec
//! measures each way the recording uses on empty functions of its own, and every probe carries
//! the median of its way ([`urec_format::ProbeSite::cost_ns`]).
//!
//! # How
//!
//! - **The same programs and configuration.** The calibration probes are extra probe ids
//!   (after the recording's own) of the loaded object, configured like the probes they stand
//!   for (stack mode, Go pairing) and attached with [`attach::attach`], so the path measured is
//!   the path recorded, filters included. Their links are detached once measured, on a
//!   thread of their own (detaching a multi link costs ≈0.1 s, which start-up need not pay):
//!   kept, under `-a` they caught every other urec's calibration helper calling the same
//!   functions of the same binary (tests run in parallel), 32 KiB stack copies filling the ring
//!   until the recording's own events were sampled.
//! - **A helper process that passes the filters.** A forked child of urec (urec itself is never
//!   traced) joins the `-p` filter map and the `--cgroup` directory, waits on a pipe while the
//!   probes attach, calls each empty function [`CALLS`] times (fewer, at least [`MIN_CALLS`],
//!   where that would take over 20 ms: a single-stepped way in a VM) and exits. It runs before
//!   the recording's probes are attached, so it cannot hit them, and the events it produces
//!   are dropped by the consumer (probe ids past the recording's: `consumer::State`).
//! - **A robust statistic.** The latency is read from the probes' in-kernel histogram (the
//!   same `hist` map the report's aggregates come from, ≤ 0.8% error): the median, which a
//!   preemption or a page fault during a few calls does not move.
//! - **The empty functions** ([`global_asm!`]): one starts with `push %rbp` (emulated), one with
//!   `mov %rdi,%rax` (single-stepped); the Go ones, of both shapes, are left through a probe on
//!   their `ret`, called with `r14` pointing at a fake goroutine whose stack top lies above the
//!   call (what `urec_go_entry`/`urec_go_return` key calls by). One copy per stack mode, since
//!   one offset takes one probe.
//!
//! A calibration that fails (the helper cannot join the cgroup, the kernel refuses a probe on
//! urec's own binary, the helper's calls were not seen) leaves the costs unmeasured and says so
//! once; the recording goes on.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libbpf_rs::MapCore;
use urec_bpf::abi::ProbeConfig;
use urec_bpf::UrecSkel;
use urec_format::{log_linear, LatencyAggregate, ProbeId, ProbeKind, SitePath};

use crate::aggregates::KernelCounts;
use crate::attach::{self, AttachProbe, Attached};
use crate::PlannedProbe;

/// Calls of each empty function: a median over this many is stable to a few ns...
pub const CALLS: u32 = 2000;
/// ...unless they take longer than this: then at least [`MIN_CALLS`]. An emulated way makes its
/// 2,000 calls in ≈7 ms here; a single-stepped one costs 20 µs a call in a VM (80 µs for Go,
/// whose `ret` is single-stepped too), and start-up should not wait 40-160 ms for it.
const BUDGET: Duration = Duration::from_millis(20);
/// The fewest calls a way's median is taken over.
pub const MIN_CALLS: u32 = 200;

/// How long the helper may take before it is killed and the calibration given up.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

// The empty functions. Each is `.p2align`ed so that its first instruction is its own.
// Emulated: `push %rbp` (the kernel emulates push). Single-stepped: `mov %rdi,%rax`. The Go ones
// are the same two shapes, their return probe on the `ret` (`Way::ret_offset`).
std::arch::global_asm!(
    ".pushsection .text.urec_calibrate,\"ax\",@progbits",
    ".p2align 4",
    ".globl urec_calibrate_emulated_fp",
    "urec_calibrate_emulated_fp:",
    "push %rbp",
    "pop %rbp",
    "ret",
    ".p2align 4",
    ".globl urec_calibrate_emulated_dwarf",
    "urec_calibrate_emulated_dwarf:",
    "push %rbp",
    "pop %rbp",
    "ret",
    ".p2align 4",
    ".globl urec_calibrate_stepped_fp",
    "urec_calibrate_stepped_fp:",
    "mov %rdi, %rax",
    "ret",
    ".p2align 4",
    ".globl urec_calibrate_stepped_dwarf",
    "urec_calibrate_stepped_dwarf:",
    "mov %rdi, %rax",
    "ret",
    ".p2align 4",
    ".globl urec_calibrate_go_emulated_fp",
    "urec_calibrate_go_emulated_fp:",
    "push %rbp",
    "pop %rbp",
    "ret",
    ".p2align 4",
    ".globl urec_calibrate_go_emulated_dwarf",
    "urec_calibrate_go_emulated_dwarf:",
    "push %rbp",
    "pop %rbp",
    "ret",
    ".p2align 4",
    ".globl urec_calibrate_go_stepped_fp",
    "urec_calibrate_go_stepped_fp:",
    "mov %rdi, %rax",
    "ret",
    ".p2align 4",
    ".globl urec_calibrate_go_stepped_dwarf",
    "urec_calibrate_go_stepped_dwarf:",
    "mov %rdi, %rax",
    "ret",
    ".popsection",
    options(att_syntax)
);

extern "C" {
    fn urec_calibrate_emulated_fp();
    fn urec_calibrate_emulated_dwarf();
    fn urec_calibrate_stepped_fp();
    fn urec_calibrate_stepped_dwarf();
    fn urec_calibrate_go_emulated_fp();
    fn urec_calibrate_go_emulated_dwarf();
    fn urec_calibrate_go_stepped_fp();
    fn urec_calibrate_go_stepped_dwarf();
}

/// How a probe's calls are timed, as far as its cost goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Way {
    /// A session probe (`uprobe.session`: entry probe and uretprobe) whose entry instruction
    /// the kernel emulates.
    Emulated,
    /// A session probe whose entry instruction the kernel single-steps.
    SingleStepped,
    /// A Go function (entry probe past the stack check, plain probes on its `ret`s, paired in
    /// BPF) whose entry instruction the kernel emulates. The `ret`'s single-step comes after
    /// the return's stamp, so only the entry's path is in the latency.
    GoEmulated,
    /// A Go function whose entry instruction the kernel single-steps (a leaf without a stack
    /// check: `lea`, `mov`, ...).
    GoSingleStepped,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Emulated => "emulated entry, uretprobe",
            Way::SingleStepped => "single-stepped entry, uretprobe",
            Way::GoEmulated => "Go: emulated entry, exit probes",
            Way::GoSingleStepped => "Go: single-stepped entry, exit probes",
        }
    }

    fn go(self) -> bool {
        matches!(self, Way::GoEmulated | Way::GoSingleStepped)
    }

    /// Offset of the empty function's `ret` (after `push %rbp; pop %rbp`, or `mov
    /// %rdi,%rax`): where a Go way's return probe goes.
    fn ret_offset(self) -> u64 {
        match self {
            Way::Emulated | Way::GoEmulated => 2,
            Way::SingleStepped | Way::GoSingleStepped => 3,
        }
    }
}

/// One way to calibrate: how the probe runs and whether it copies DWARF stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// The entry and return mechanism.
    pub way: Way,
    /// `-g dwarf` capture (else frame pointers, or no stack when the recording takes none).
    pub dwarf: bool,
}

impl Key {
    /// The way `p` runs, or None when its calls have no latency (entry-only, return-only) or
    /// its entry path is unknown.
    pub fn of(p: &PlannedProbe) -> Option<Key> {
        if p.probe.kind != ProbeKind::EntryReturn {
            return None;
        }
        let go = p.go.as_ref().is_some_and(|g| g.returns.is_ok());
        let way = match (go, p.probe.site.as_ref().map(|s| s.path)) {
            (false, Some(SitePath::Emulated)) => Way::Emulated,
            (false, Some(SitePath::SingleStepped)) => Way::SingleStepped,
            (true, Some(SitePath::Emulated)) => Way::GoEmulated,
            (true, Some(SitePath::SingleStepped)) => Way::GoSingleStepped,
            _ => return None,
        };
        Some(Key {
            way,
            dwarf: p.config.dwarf,
        })
    }

    fn function(self) -> usize {
        let f: unsafe extern "C" fn() = match (self.way, self.dwarf) {
            (Way::Emulated, false) => urec_calibrate_emulated_fp,
            (Way::Emulated, true) => urec_calibrate_emulated_dwarf,
            (Way::SingleStepped, false) => urec_calibrate_stepped_fp,
            (Way::SingleStepped, true) => urec_calibrate_stepped_dwarf,
            (Way::GoEmulated, false) => urec_calibrate_go_emulated_fp,
            (Way::GoEmulated, true) => urec_calibrate_go_emulated_dwarf,
            (Way::GoSingleStepped, false) => urec_calibrate_go_stepped_fp,
            (Way::GoSingleStepped, true) => urec_calibrate_go_stepped_dwarf,
        };
        f as usize
    }
}

/// The calibrations a recording needs, planned before the programs are loaded (their probe ids
/// size the maps).
#[derive(Debug)]
pub struct Plan {
    /// Id of the first calibration probe: the recording's probes are `0..first`.
    first: ProbeId,
    keys: Vec<Key>,
}

impl Plan {
    /// The distinct ways of `probes`, in a stable order.
    pub fn new(probes: &[PlannedProbe], stacks: bool) -> Plan {
        let mut keys: Vec<Key> = probes
            .iter()
            .filter_map(Key::of)
            .map(|k| Key {
                dwarf: k.dwarf && stacks,
                ..k
            })
            .collect();
        keys.sort();
        keys.dedup();
        Plan {
            first: probes.len() as ProbeId,
            keys,
        }
    }

    /// Probe ids the calibration takes after the recording's own.
    pub fn probes(&self) -> u32 {
        self.keys.len() as u32
    }

    /// Runs the helper through the loaded programs (`skel`, loaded for `first + probes()`
    /// probes with `hist_bits`). `filter`: the programs check the tgid map; `cgroup`: the
    /// `--cgroup` directory; `stack_size`: `-g dwarf`'s copy size. Call before the recording's
    /// probes are attached.
    pub fn run(
        &self,
        skel: &UrecSkel<'_>,
        hist_bits: u32,
        filter: bool,
        cgroup: Option<&std::path::Path>,
        stack_size: u32,
    ) -> Result<Calibrated> {
        let started = Instant::now();
        if self.keys.is_empty() {
            return Ok(Calibrated::default());
        }
        // For tests of a recording whose calibration failed.
        if std::env::var_os("UREC_TEST_CALIBRATION_FAILS").is_some() {
            bail!("UREC_TEST_CALIBRATION_FAILS is set");
        }
        let exe = std::path::PathBuf::from("/proc/self/exe");
        let mut attach_probes = Vec::new();
        let mut configs = Vec::new();
        for (i, key) in self.keys.iter().enumerate() {
            let id = self.first + i as ProbeId;
            let offset = own_file_offset(key.function())?;
            attach_probes.push(AttachProbe {
                id,
                binary: exe.clone(),
                offset,
                kind: ProbeKind::EntryReturn,
                name: format!("urec calibration ({})", key.way.name()),
                ref_ctr_offset: None,
                go_returns: key.way.go().then(|| vec![offset + key.way.ret_offset()]),
            });
            configs.push((
                id,
                ProbeConfig {
                    dwarf: key.dwarf,
                    go: key.way.go(),
                    stack_size: if key.dwarf { stack_size } else { 0 },
                    ..ProbeConfig::default()
                },
            ));
        }
        attach::configure(skel, &configs)?;
        let helper = Helper::fork(&self.keys)?;
        let pid = helper.pid;
        let run = || -> Result<Attached> {
            if filter {
                attach::allow_tgid(skel, pid)?;
            }
            if let Some(dir) = cgroup {
                std::fs::write(dir.join("cgroup.procs"), pid.to_string()).with_context(|| {
                    format!(
                        "moving the calibration helper into {}/cgroup.procs",
                        dir.display()
                    )
                })?;
            }
            let links = attach::attach(skel, &attach_probes, false, &mut |_| {})
                .context("attaching the calibration probes to urec's own binary")?;
            helper.go_and_wait()?;
            Ok(links)
        };
        let links = run();
        // Whatever failed, the programs are left as the recording expects them.
        forget_helper(skel, pid, filter);
        let links = links?;

        // Histograms of the calibration ids: the kinds of the ids before them do not matter.
        let total = self.first as usize + self.keys.len();
        let counts = KernelCounts::new(skel, vec![ProbeKind::EntryReturn; total], hist_bits)?;
        let mut costs = Vec::new();
        for (i, key) in self.keys.iter().enumerate() {
            let id = self.first + i as ProbeId;
            let lat = counts.latency(skel, id)?;
            let seen = lat.as_ref().map_or(0, |l| l.count);
            if seen < u64::from(MIN_CALLS) / 2 {
                bail!(
                    "the helper's calls were not seen ({seen} of at least {MIN_CALLS} timed, {})",
                    key.way.name()
                );
            }
            if let Some(m) = lat.as_ref().and_then(median) {
                costs.push((*key, m));
            }
        }
        let elapsed = started.elapsed();
        // Off the start-up path (a thread that cannot start drops them here, with its closure).
        let _ = std::thread::Builder::new()
            .name("urec-calibration-detach".into())
            .spawn(move || drop(links));
        Ok(Calibrated { costs, elapsed })
    }
}

/// Leaves the programs as the recording expects to find them: the helper's events discarded
/// (a full ring would start the recording sampling), its tgid out of the filter (a recycled
/// pid must not pass it) and the per-CPU state (the tgid cache, the sampling shift) as loaded.
fn forget_helper(skel: &UrecSkel<'_>, pid: u32, filter: bool) {
    let mut ring = libbpf_rs::RingBufferBuilder::new();
    if ring.add(&skel.maps.events, |_| 0).is_ok() {
        if let Ok(ring) = ring.build() {
            let _ = ring.consume();
        }
    }
    if filter {
        let _ = skel.maps.tgids.delete(&pid.to_ne_bytes());
    }
    let cpus = libbpf_rs::num_possible_cpus().unwrap_or(0);
    let zero = vec![vec![0u8; skel.maps.cpu_state.value_size() as usize]; cpus];
    let _ = skel
        .maps
        .cpu_state
        .update_percpu(&0u32.to_ne_bytes(), &zero, libbpf_rs::MapFlags::ANY);
}

/// [`Plan::run`] for `urec record`: `-v` says what was measured and how long it took; a
/// failure is said once (through `warn`) and the recording goes on without a cost.
#[allow(clippy::too_many_arguments)]
pub fn calibrate(
    plan: &Plan,
    skel: &UrecSkel<'_>,
    hist_bits: u32,
    filter: bool,
    cgroup: Option<&std::path::Path>,
    stack_size: u32,
    verbose: bool,
    warn: &mut dyn FnMut(String),
) -> Calibrated {
    match plan.run(skel, hist_bits, filter, cgroup, stack_size) {
        Ok(c) => {
            if verbose && !c.costs.is_empty() {
                eprintln!(
                    "urec: probe cost calibrated in {:.1} ms: {}",
                    c.elapsed.as_secs_f64() * 1e3,
                    c.describe()
                );
            }
            c
        }
        Err(e) => {
            warn(format!(
                "probe cost not measured ({e:#}): latencies include it, unknown"
            ));
            Calibrated::default()
        }
    }
}

/// What the calibration measured. Keeps the calibration probes attached while it lives.
#[derive(Default)]
pub struct Calibrated {
    /// The median latency of each way measured, ns.
    pub costs: Vec<(Key, u64)>,
    /// How long the calibration took, helper and attaching included.
    pub elapsed: Duration,
}

impl Calibrated {
    /// The cost of probe `p`'s way, if measured.
    pub fn cost_of(&self, p: &PlannedProbe, stacks: bool) -> Option<u64> {
        let key = Key::of(p)?;
        let key = Key {
            dwarf: key.dwarf && stacks,
            ..key
        };
        self.costs.iter().find(|(k, _)| *k == key).map(|&(_, c)| c)
    }

    /// `emulated entry, uretprobe 410 ns; ...` for `record -v`.
    pub fn describe(&self) -> String {
        self.costs
            .iter()
            .map(|(k, ns)| {
                format!(
                    "{}{} {ns} ns",
                    k.way.name(),
                    if k.dwarf { ", -g dwarf" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The median of a latency histogram: the midpoint of the bucket holding the middle call.
pub fn median(l: &LatencyAggregate) -> Option<u64> {
    let total: u64 = l.buckets.iter().map(|&(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let half = total.div_ceil(2);
    let mut seen = 0;
    for &(i, n) in &l.buckets {
        seen += n;
        if seen >= half {
            let (lo, hi) = log_linear::bounds(i as usize, u32::from(l.sub_bits));
            return Some((lo + hi) / 2);
        }
    }
    None
}

/// The file offset of `addr`, an address in urec's own executable, from its mappings (read as
/// the process table reads any process's).
fn own_file_offset(addr: usize) -> Result<u64> {
    let pid = std::process::id();
    let addr = urec_format::Avma(addr as u64);
    let maps = crate::procfs::maps(pid).context("reading /proc/self/maps")?;
    maps.into_iter()
        .find_map(|m| m.mapping(pid).file_offset(addr))
        .map(|o| o.0)
        .with_context(|| format!("no executable mapping of urec holds {:#x}", addr.0))
}

/// The forked helper, waiting on a pipe.
struct Helper {
    pid: u32,
    /// The pipe's write end: one byte says go; closed without it, the helper exits at once.
    go: Option<OwnedFd>,
}

/// A helper never told to go (the set-up failed on the way): closing the pipe ends it, and it
/// is reaped here rather than left a zombie of the recording.
impl Drop for Helper {
    fn drop(&mut self) {
        if self.go.take().is_some() {
            let mut status = 0;
            // SAFETY: reaping our own child, which exits on the pipe's end of file.
            unsafe { libc::waitpid(self.pid as libc::pid_t, &mut status, 0) };
        }
    }
}

impl Helper {
    /// Forks the helper, which will call the functions of `keys` once told to go.
    fn fork(keys: &[Key]) -> Result<Helper> {
        // Everything the child needs is prepared here: after fork it allocates nothing.
        let mut calls = [(0usize, false); 8]; // at most 4 ways x 2 stack modes
        for (slot, k) in calls.iter_mut().zip(keys) {
            *slot = (k.function(), k.way.go());
        }
        let n = keys.len().min(calls.len());
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error()).context("creating the helper's pipe");
        }
        // SAFETY: fresh fds we own.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let parent = std::process::id();
        // SAFETY: the child only makes async-signal-safe calls (prctl, close, read, the
        // functions) and leaves by exit_group, never returning into Rust.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error()).context("forking the calibration helper");
        }
        if pid == 0 {
            // SAFETY: see above.
            unsafe { helper_main(parent, read.as_raw_fd(), write.as_raw_fd(), &calls[..n]) }
        }
        drop(read);
        Ok(Helper {
            pid: pid as u32,
            go: Some(write),
        })
    }

    /// Lets the helper call, and waits for it to exit (killed after [`HELPER_TIMEOUT`]).
    fn go_and_wait(mut self) -> Result<()> {
        let pid = self.pid as libc::pid_t;
        let Some(go) = self.go.take() else {
            bail!("the calibration helper was already told");
        };
        // SAFETY: a one-byte write from a valid buffer.
        let wrote = unsafe { libc::write(go.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        drop(go);
        let deadline = Instant::now() + HELPER_TIMEOUT;
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own child.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                if wrote != 1 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                    bail!("the calibration helper failed (status {status:#x})");
                }
                return Ok(());
            }
            if r < 0 {
                return Err(std::io::Error::last_os_error()).context("waiting for the helper");
            }
            if Instant::now() >= deadline {
                // SAFETY: signalling and reaping our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                bail!("the calibration helper took longer than {HELPER_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The helper: dies with urec, waits for the go byte, calls each function [`CALLS`] times (or
/// for [`BUDGET`], at least [`MIN_CALLS`] times), exits. Async-signal-safe only (it is a fork
/// of a process that may have threads).
///
/// # Safety
/// Only in the child of `fork`.
unsafe fn helper_main(parent: u32, read: i32, write: i32, calls: &[(usize, bool)]) -> ! {
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    libc::close(write);
    let mut code = 1;
    let mut b = 0u8;
    if libc::getppid() as u32 == parent && libc::read(read, (&raw mut b).cast(), 1) == 1 {
        // A fake goroutine for the Go function: `g.stack.hi` (at g + 8) above every call's
        // sp, within 4 GiB of it, as the BPF programs require.
        let mut g = [0u64; 2];
        g[1] = (&raw const g as u64) + (1 << 16);
        let now = || {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t);
            Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
        };
        for &(f, go) in calls {
            let start = now();
            for i in 0..CALLS {
                if i >= MIN_CALLS && i % 32 == 0 && now().saturating_sub(start) > BUDGET {
                    break;
                }
                if go {
                    // Without `nostack`: the compiler keeps the red zone free for the call.
                    std::arch::asm!(
                        "call {f}",
                        f = in(reg) f,
                        in("r14") (&raw const g) as u64,
                        clobber_abi("C"),
                    );
                } else {
                    let f: unsafe extern "C" fn() = std::mem::transmute(f);
                    f();
                }
            }
        }
        std::hint::black_box(&g);
        code = 0;
    }
    libc::syscall(libc::SYS_exit_group, code);
    // exit_group does not return.
    libc::_exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_the_middle_calls_bucket() {
        let bits = 6;
        let b = |v: u64| log_linear::bucket(v, bits) as u32;
        let l = LatencyAggregate {
            count: 5,
            total: 0,
            min: 0,
            max: 0,
            sub_bits: bits as u8,
            buckets: vec![(b(10), 1), (b(400), 3), (b(90_000), 1)],
        };
        let m = median(&l).unwrap();
        assert!((396..=404).contains(&m), "{m}");
        assert_eq!(
            median(&LatencyAggregate {
                buckets: vec![],
                ..l
            }),
            None
        );
    }

    #[test]
    fn the_functions_lie_in_urec_s_own_executable() {
        for way in [
            Way::Emulated,
            Way::SingleStepped,
            Way::GoEmulated,
            Way::GoSingleStepped,
        ] {
            for dwarf in [false, true] {
                let f = Key { way, dwarf }.function();
                assert!(own_file_offset(f).is_ok());
            }
        }
    }
}
