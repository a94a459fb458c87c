//! The recording half of urec: attaches the resolved probes with eBPF, follows processes and
//! their executable mappings through perf side-band records, and streams everything into a
//! urec data file.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use urec_record::{plan, RecordOptions, StackSize, Target, Verbosity};
//! let spec = urec_probe::parse("bash:readline")?;
//! let resolved = urec_probe::resolve(&[spec], &Default::default())?;
//! let mode = urec_format::StackMode::FramePointer;
//! let probes = resolved.probes.iter().map(|p| plan(p, mode)).collect::<Result<_, _>>()?;
//! let summary = urec_record::record(RecordOptions {
//!     probes,
//!     target: Target::All,
//!     output: "urec.data".into(),
//!     duration: Some(std::time::Duration::from_secs(10)),
//!     stack_mode: mode,
//!     stack_depth: 127,
//!     stack_size: StackSize::MAX,
//!     buffer_size: 16 << 20,
//!     verbosity: Verbosity::Normal,
//!     command_line: std::env::args().collect(),
//!     keep_files: true,
//!     cgroup: None,
//!     kernel_dwarf: false,
//! })?;
//! eprintln!("{} events", summary.entries + summary.returns);
//! // (The CLI fills a [`RecordRequest`] from its flags instead: its `plan` checks it and
//! // plans every probe, as above.)
//! # Ok(())
//! # }
//! ```
//!
//! The binary's way in: [`RecordRequest`] (its flags, typed) → [`RecordRequest::plan`] →
//! [`RecordOptions`] → [`record`] → [`Summary`] (whose `lines` it prints); [`RecordError`] says
//! whether the caller is at fault. [`top`] runs `urec top` on the same programs, counting only,
//! after the same [`TargetRequest`] steps.
//!
//! Modules: [`attach`] loads the BPF programs and attaches them (one multi link per binary);
//! `request` checks and plans a request; `session` runs a recording, one module per phase
//! (set-up, attach, loop, detach, finish); `summary` words its outcome; `stacks` deduplicates
//! stacks; [`plan`](mod@plan) turns resolved probes into the BPF tables; [`command`] runs
//! `-- COMMAND`; `output` creates the file; [`sideband`], [`procfs`] and [`processes`] follow
//! processes and their mappings (one intake: `ProcessTable::take_mapping`); [`mapped`], an
//! observer of that intake, names the probed binaries that the traced processes never mapped;
//! [`kept`] keeps their files open for the symbols step. The other public
//! modules are public for the tests that drive them directly.

use std::path::PathBuf;
use std::time::Duration;

mod aggregates;
pub mod attach;
mod calibrate;
pub mod cgroup;
pub mod command;
mod consumer;
mod dwarf;
mod error;
mod fds;
pub mod kept;
mod kunwind;
mod lost;
pub mod mapped;
mod output;
pub mod plan;
pub mod processes;
pub mod procfs;
pub mod python;
mod regs;
mod request;
mod session;
pub mod sideband;
mod stacks;
mod summary;
pub mod top;
pub mod unwind;

pub use error::RecordError;
pub use plan::{plan, PlanError, PlannedProbe};
pub use request::{warn_resolution, CallGraph, RecordRequest, StackSize, TargetRequest};
pub use session::check_privileges;
pub use summary::workload_line;
pub use urec_bpf::abi::MAX_STACK_SIZE;
pub use urec_format::StackMode;

/// Whom to trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Every process, including ones started later (never urec itself): `-a`.
    All,
    /// These processes, their threads, and the children they fork later: `-p`.
    Pids(Vec<u32>),
    /// Run a command once the probes are attached and trace it and its descendants (or every
    /// process, with `all`, for the command's lifetime): `-- COMMAND`.
    Command {
        /// The program, resolved through `PATH` (see [`command::find_program`]).
        program: PathBuf,
        /// Its argv, `argv[0]` as the user wrote it.
        argv: Vec<String>,
        /// `-a -- COMMAND`: trace every process, not only the command's.
        all: bool,
    },
}

/// A command to run: the program (resolved) and its argv.
pub(crate) type CommandLine = (PathBuf, Vec<String>);

impl Target {
    /// What the set-up needs of it: whether the programs filter by tgid, the `-p` pids, and
    /// the command to run.
    pub(crate) fn parts(&self) -> (bool, Vec<u32>, Option<CommandLine>) {
        match self {
            Target::All => (false, Vec::new(), None),
            Target::Pids(pids) => (true, pids.clone(), None),
            Target::Command { program, argv, all } => {
                (!*all, Vec::new(), Some((program.clone(), argv.clone())))
            }
        }
    }
}

/// How chatty the recorder is on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors only (`-q`).
    Quiet,
    /// Warnings, the summary, and a live status line on a terminal.
    Normal,
    /// Also what was attached and how (`-v`).
    Verbose,
}

/// Everything one recording needs.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// The probes, ids 0..n in order.
    pub probes: Vec<PlannedProbe>,
    /// Whom to trace.
    pub target: Target,
    /// The data file.
    pub output: PathBuf,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// [`StackMode::None`]: no stacks at all. Otherwise each probe's own mode decides (its
    /// `probe.stack_mode` and `config.dwarf`, as [`plan`] set them).
    pub stack_mode: StackMode,
    /// Frames per stack (at most 127).
    pub stack_depth: u32,
    /// The most bytes of stack a `-g dwarf` event copies, from the stack pointer to the end of
    /// the stack (see [`dwarf`]).
    pub stack_size: StackSize,
    /// BPF ring buffer bytes (rounded up to a power of two). It must hold the largest record:
    /// [`RecordRequest::plan`] checks that, as a usage error.
    pub buffer_size: u64,
    /// What to print.
    pub verbosity: Verbosity,
    /// urec's own command line, for the file's header.
    pub command_line: Vec<String>,
    /// Keep a descriptor of every file the traced processes map, for the symbols step that
    /// follows the recording ([`Summary::kept_files`]).
    pub keep_files: bool,
    /// `--cgroup`: only tasks in this cgroup v2 directory or below it (and in `target`); see
    /// [`cgroup`].
    pub cgroup: Option<PathBuf>,
    /// `-g kernel-dwarf`: the `-g dwarf` probes walk their stacks in the kernel over unwind
    /// tables loaded on demand (see [`kunwind`]), copying the stack only where that walk
    /// cannot finish.
    pub kernel_dwarf: bool,
}

/// What a recording produced.
#[derive(Debug, Default)]
pub struct Summary {
    /// Entry events written.
    pub entries: u64,
    /// Return events written.
    pub returns: u64,
    /// Events lost because the BPF ring buffer was full.
    pub lost_ring: u64,
    /// Side-band records the kernel dropped.
    pub lost_sideband: u64,
    /// `-g dwarf` stacks that could not be unwound at all or were dropped.
    pub lost_unwind: u64,
    /// Calls the probes' predicates rejected (not recorded, not lost).
    pub filtered: u64,
    /// Calls the probes counted in the kernel (entries; returns of return-only probes), what
    /// the report shows where events were lost.
    pub kernel_calls: u64,
    /// Calls whose events the programs did not write, keeping one call in N under ring
    /// pressure (counted in the kernel, not lost).
    pub sampled: u64,
    /// The largest N of those (1: nothing sampled).
    pub max_weight: u32,
    /// Stacks written truncated (`-g dwarf` stacks that end early or were cut at the depth
    /// limit): the events the report shows with `[truncated]`.
    pub truncated_stacks: u64,
    /// Of those, stacks that ran off the end of a copy cut at `--stack-size` (the stack went
    /// on beyond it).
    pub copy_end_at_cap: u64,
    /// Distinct stacks written.
    pub stacks: u64,
    /// Size of the data file.
    pub bytes: u64,
    /// From attach to stop.
    pub duration: Duration,
    /// The command's exit status (128 + signal when killed), with `-- COMMAND`.
    pub workload_status: Option<i32>,
    /// How the command ended, with `-- COMMAND`: what record's last line says.
    pub workload_end: Option<WorkloadEnd>,
    /// The files the traced processes mapped, still open (with [`RecordOptions::keep_files`]).
    pub kept_files: Vec<kept::KeptFile>,
    /// What [`Summary::lines`] and [`Summary::workload_line`] need of the options.
    wording: summary::Wording,
}

/// How the traced command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadEnd {
    /// Its exit or its signal.
    pub ended: command::Ended,
    /// urec ended it (SIGTERM, then SIGKILL) because recording stopped first (`-d`, Ctrl-C).
    pub by_urec: bool,
}

/// Records until a stop condition; see the `session` module. Errors here are never the
/// caller's ([`RecordError::Failed`]): [`RecordRequest::plan`] checked the request.
pub fn record(opts: RecordOptions) -> Result<Summary, RecordError> {
    session::run(opts).map_err(|e| RecordError::Failed(fds::explain(e)))
}
