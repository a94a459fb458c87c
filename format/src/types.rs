//! The data model of a recording.
//!
//! Three address spaces meet in a profiler, and mixing them up is the classic bug (a hard-coded
//! load base, a virtual address used as a file offset). Each has its own type here, following
//! framehop's vocabulary:
//! - [`Avma`]: an *actual* virtual memory address, as seen in the traced process.
//! - [`Svma`]: a *stated* virtual memory address, as the ELF file's symbol tables and DWARF use.
//! - [`FileOffset`]: a byte offset into the ELF file, which is what mappings and uprobes use.

use std::fmt;
use std::sync::Arc;

/// An address in the traced process's address space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Avma(pub u64);

/// A virtual address as the ELF file states it (symbol values, DWARF ranges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Svma(pub u64);

/// A byte offset into an ELF file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileOffset(pub u64);

impl fmt::LowerHex for Avma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}
impl fmt::LowerHex for Svma {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}
impl fmt::LowerHex for FileOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// A GNU build id (the `NT_GNU_BUILD_ID` note), usually 20 bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BuildId(pub Vec<u8>);

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Identifies a [`Probe`] within one recording (also the BPF attach cookie).
pub type ProbeId = u32;

/// Identifies a [`Stack`] within one recording.
pub type StackId = u32;

/// Timestamps are nanoseconds of `CLOCK_MONOTONIC` (what `bpf_ktime_get_ns` returns), so BPF
/// events and side-band records order against each other.
pub type Nanos = u64;

/// What the file says about the recording as a whole. Written once, first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Host name of the recording machine.
    pub host: String,
    /// Kernel release (`uname -r`) of the recording machine.
    pub kernel: String,
    /// Machine architecture (`uname -m`), e.g. `x86_64`.
    pub arch: String,
    /// urec's own command line.
    pub command: Vec<String>,
    /// The traced command's argv when urec started one (`-- COMMAND`).
    pub workload: Option<Vec<String>>,
    /// Wall-clock start time, ns since the Unix epoch.
    pub start_unix_ns: u64,
    /// `CLOCK_MONOTONIC` at the same instant, to turn event times into wall-clock times.
    pub start_monotonic_ns: Nanos,
}

/// Which events a probe produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Entry and return (the default): calls, latency and the caller's stack.
    EntryReturn,
    /// Entry only (an offset inside a function, where a return probe is impossible).
    Entry,
    /// Return only (`%return`).
    Return,
}

/// How user stacks were captured for a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StackMode {
    /// No stacks.
    None,
    /// Frame-pointer walk in the kernel.
    FramePointer,
    /// A copy of the stack unwound with the binaries' CFI by the recorder.
    Dwarf,
}

/// How a fetched argument's value is to be shown (the uprobe_events `:TYPE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ArgType {
    /// Unsigned decimal of the given width in bits (8, 16, 32, 64).
    Unsigned(u8),
    /// Signed decimal of the given width in bits.
    Signed(u8),
    /// Hexadecimal of the given width in bits.
    Hex(u8),
    /// A NUL-terminated string read from user memory.
    String,
    /// A bitfield: `width` bits at bit `offset` of a `container`-bit value.
    Bitfield {
        /// Width in bits.
        width: u8,
        /// Bit offset within the container.
        offset: u8,
        /// Container size in bits.
        container: u8,
    },
}

/// One fetched argument of a probe, as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgSpec {
    /// Name shown in output (`NAME=` or the fetch text).
    pub name: String,
    /// The fetch expression as written (`+0($retval)`, `%di`, `arg2`).
    pub fetch: String,
    /// The type to show it as.
    pub ty: ArgType,
    /// Fetched at return (`$retval` and anything derived from it) rather than at entry.
    pub at_return: bool,
}

/// A probed location: one per (binary, file offset).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The id events refer to.
    pub id: ProbeId,
    /// Display name, from the first spec that named this location (`bash:readline`).
    pub name: String,
    /// Every `-e` spec text that resolved to this location.
    pub specs: Vec<String>,
    /// Absolute path of the probed binary.
    pub binary: String,
    /// Build id of the probed binary, when it has one.
    pub build_id: Option<BuildId>,
    /// The symbol the probe is in (`readline`), or empty for a raw address.
    pub symbol: String,
    /// The probe's ELF virtual address.
    pub vaddr: Svma,
    /// The probe's file offset (what the kernel attaches to).
    pub offset: FileOffset,
    /// Entry, return or both.
    pub kind: ProbeKind,
    /// How stacks were captured for this probe.
    pub stack_mode: StackMode,
    /// Arguments fetched at each hit, in order.
    pub args: Vec<ArgSpec>,
    /// Where the probe was attached and how the kernel ran it there (format 2.2); None in
    /// older files.
    pub site: Option<ProbeSite>,
}

/// Where a probe was attached (format 2.2): the function's first instruction, or the first
/// instruction of its entry block the kernel emulates (SPEC.md, "Probe sites and probe cost").
/// `Probe::offset`/`vaddr` stay the function's start, which names its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSite {
    /// The file offset attached to (the entry probe's, for a Go function).
    pub offset: FileOffset,
    /// How the kernel handles the instruction there.
    pub path: SitePath,
    /// The latency the recorder measured for an empty function probed the way this probe is
    /// (entry path, return mechanism, stack mode), calibrated at the start of the recording
    /// (format 2.3): what every latency of the probe includes besides the function's own
    /// time. None when not measured (older files, entry-only and return-only probes, or a
    /// calibration that failed).
    pub cost_ns: Option<u64>,
}

/// How the kernel handles a probed instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SitePath {
    /// Emulated in the kernel (`push`, `nop`, `jmp`, `call`, `jcc`): one trap.
    Emulated,
    /// Copied out of line and single-stepped: a second trap.
    SingleStepped,
    /// Not known (no bytes to decode).
    Unknown,
}

impl SitePath {
    /// `emulated`, `single-stepped`, `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            SitePath::Emulated => "emulated",
            SitePath::SingleStepped => "single-stepped",
            SitePath::Unknown => "unknown",
        }
    }
}

/// A process seen during the recording (it produced events, or is an ancestor of one that did).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    /// Process id (tgid).
    pub pid: u32,
    /// Parent process id, 0 when unknown.
    pub ppid: u32,
    /// Command name (`comm`, at most 15 bytes).
    pub comm: String,
    /// Path of the executable, empty when unknown.
    pub exe: String,
    /// When the process started (or was first seen), if known.
    pub start_ns: Option<Nanos>,
    /// Inode number of its mount namespace (`/proc/PID/ns/mnt`), when recorded (format 1.2).
    pub mnt_ns: Option<u64>,
    /// Inode number of its pid namespace (`/proc/PID/ns/pid`), when recorded (format 1.2).
    pub pid_ns: Option<u64>,
    /// Its cgroup v2 path (`/proc/PID/cgroup`'s `0::` line, as the recorder's cgroup namespace
    /// sees it), when recorded (format 1.2).
    pub cgroup: Option<String>,
}

/// A change in a process's life after its [`Process`] record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessChange {
    /// `execve`: every earlier mapping of the process is gone; new name and executable.
    Exec {
        /// New command name.
        comm: String,
        /// New executable path.
        exe: String,
    },
    /// The command name changed (`prctl(PR_SET_NAME)`).
    Comm(String),
    /// The process exited.
    Exit,
}

/// A [`ProcessChange`] at a point in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    /// The process.
    pub pid: u32,
    /// When it happened.
    pub time_ns: Nanos,
    /// What happened.
    pub change: ProcessChange,
}

/// An executable mapping of a process from `time_ns` on: `[start, end)` maps `path` from file
/// offset `offset`. A later mapping overlapping it replaces it from its own time on; an
/// [`ProcessChange::Exec`] drops all of a process's earlier mappings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The process.
    pub pid: u32,
    /// Since when the mapping exists (0: before recording began).
    pub time_ns: Nanos,
    /// First address.
    pub start: Avma,
    /// One past the last address.
    pub end: Avma,
    /// File offset mapped at `start`.
    pub offset: FileOffset,
    /// Path of the mapped file (`[vdso]` and such for special mappings).
    pub path: String,
    /// Device number of the file, 0 when unknown.
    pub dev: u64,
    /// Inode of the file, 0 when unknown.
    pub inode: u64,
    /// Build id of the file, when known.
    pub build_id: Option<BuildId>,
}

/// A deduplicated user stack: return addresses in the process, innermost (the probed
/// function's own address) first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stack {
    /// The id events refer to.
    pub id: StackId,
    /// Addresses, innermost first.
    pub frames: Vec<Avma>,
    /// The unwind stopped before reaching the outermost frame.
    pub truncated: bool,
    /// The Python frames the probed thread was running (since 2.4), innermost first; empty
    /// for native code, which costs such a stack nothing in the file. The report puts them in
    /// place of the native `_PyEval_EvalFrameDefault` frames that ran them.
    pub python: Vec<PyFrame>,
    /// The Python frame chain went on past what was recorded (since 2.4).
    pub python_truncated: bool,
}

/// A Python function as the recorder named it from the live process (since 2.4): the names
/// are read while the process lives, since a report runs after it is gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PyCode {
    /// The id [`PyFrame::code`] refers to; unique within a recording.
    pub id: u32,
    /// `co_qualname` (`Class.method`, `outer.<locals>.inner`).
    pub qualname: Arc<str>,
    /// `co_filename`, as the interpreter holds it (a path, or `<string>`).
    pub filename: Arc<str>,
    /// `co_firstlineno`.
    pub first_line: u32,
}

/// One Python frame of a [`Stack`], innermost first (since 2.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PyFrame {
    /// A [`PyCode`] id written before the stack.
    pub code: u32,
    /// The line being run, 0 when unknown.
    pub line: u32,
    /// The outermost frame of one native `_PyEval_EvalFrameDefault` call: where the report
    /// cuts the Python frames into the parts each native eval frame ran.
    pub entry: bool,
}

/// Entry or return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The probed function was entered.
    Entry,
    /// The probed function returned.
    Return,
}

/// A fetched argument value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgValue {
    /// An integer, raw bits; its [`ArgType`] says how to show it.
    Int(u64),
    /// String bytes (without the NUL); `truncated` when the string was longer than fetched.
    Str {
        /// The bytes read.
        bytes: Vec<u8>,
        /// The string went on past what was fetched.
        truncated: bool,
    },
    /// Reading the value faulted.
    Fault,
}

/// One probe hit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Which probe.
    pub probe: ProbeId,
    /// Entry or return.
    pub kind: EventKind,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// CPU it ran on.
    pub cpu: u32,
    /// When, `CLOCK_MONOTONIC` ns.
    pub time_ns: Nanos,
    /// The user stack, for entries (and returns of return-only probes).
    pub stack: Option<StackId>,
    /// Entry-to-return time measured by the recorder, on returns whose entry it saw.
    pub latency_ns: Option<Nanos>,
    /// Fetched arguments, in the probe's [`Probe::args`] order (those of this kind only).
    pub args: Vec<ArgValue>,
    /// A Go event's goroutine (the runtime's `g`, an address that identifies the goroutine
    /// while it lives): readers pair a Go call's return with its entry per goroutine, since
    /// goroutines move between threads. None for other code.
    pub goroutine: Option<u64>,
    /// The calls this event stands for: 1, or 2^k when the recorder kept the stacks and args
    /// of one call in 2^k because the ring buffer could not keep up (since 2.1; a return event
    /// has its entry's). Outputs built from events scale by it; never 0.
    pub weight: u32,
}

/// Where events were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LostSource {
    /// The BPF ring buffer was full.
    Ring,
    /// The side-band (mmap/comm/fork/exit) ring overflowed.
    Sideband,
    /// A stack could not be unwound or was dropped because the recorder fell behind.
    Unwind,
}

/// A count of lost records, per source and (when known) per probe and kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lost {
    /// Where they were lost.
    pub source: LostSource,
    /// Which probe, when known.
    pub probe: Option<ProbeId>,
    /// Which kind of event, when known.
    pub kind: Option<EventKind>,
    /// How many (added to earlier counts of the same key).
    pub count: u64,
}

/// Calls a probe's predicate (`if EXPR`) rejected: neither recorded nor lost (since 1.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filtered {
    /// Which probe.
    pub probe: ProbeId,
    /// How many (added to earlier counts of the same probe).
    pub count: u64,
}

/// A probe's counts as its BPF programs keep them, in kernel memory that no ring-buffer
/// overflow can drop (since 1.5). Snapshots are cumulative: the recorder writes one for every
/// probe whose counts changed since its last, every second and when it stops, and a reader keeps
/// the last one per probe, so a recording cut short holds the counts of its last checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Aggregate {
    /// Which probe.
    pub probe: ProbeId,
    /// Calls recorded (entries; returns for a return-only probe), whether or not their events
    /// reached the file: a predicate's rejects are not among them.
    pub calls: u64,
    /// Returns seen (of calls whose entry was counted, for an entry+return probe).
    pub returns: u64,
    /// Calls entered and not returned at the snapshot.
    pub in_flight: u64,
    /// Calls the probe's predicate rejected.
    pub filtered: u64,
    /// Calls whose events the programs chose not to write (one-in-N under ring pressure).
    pub sampled: u64,
    /// Entry-to-return latencies of the returned calls, for entry+return probes.
    pub latency: Option<LatencyAggregate>,
}

/// The latencies of an [`Aggregate`]: exact count, total, min and max, and a log-linear
/// histogram ([`crate::log_linear`]) with `sub_bits` sub-bucket bits, stored sparse.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencyAggregate {
    /// Latencies measured.
    pub count: u64,
    /// Their sum, ns.
    pub total: u64,
    /// The smallest, ns.
    pub min: u64,
    /// The largest, ns.
    pub max: u64,
    /// Sub-bucket bits of the histogram (at most [`crate::log_linear::KERNEL_MAX_BITS`]).
    pub sub_bits: u8,
    /// (bucket index, count) of the non-empty buckets, by increasing index.
    pub buckets: Vec<(u32, u64)>,
}

/// The end of a recording, written by a recorder that stopped cleanly.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Finish {
    /// `CLOCK_MONOTONIC` when the probes were attached.
    pub attach_ns: Nanos,
    /// `CLOCK_MONOTONIC` when recording stopped.
    pub stop_ns: Nanos,
    /// The traced command's exit status (128 + signal when killed), when urec ran one.
    pub workload_status: Option<i32>,
}

/// The names of code addresses in one binary, as the recording host's symbolizer found them
/// (the symbols section, written after the recording by `urec record` or `urec archive`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinarySymbols {
    /// The binary's path as its mappings recorded it.
    pub path: String,
    /// Its build id, when known.
    pub build_id: Option<BuildId>,
    /// Named addresses, by increasing offset.
    pub entries: Vec<SymbolEntry>,
}

/// One named address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymbolEntry {
    /// The file offset that was looked up (for a return address: the address minus one, so
    /// that a call ending a function is named after that function).
    pub offset: u64,
    /// The function, then the functions inlined into it at that address, innermost last.
    pub frames: Vec<SymbolFrame>,
}

/// One function of a [`SymbolEntry`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymbolFrame {
    /// Its name, demangled. Shared: a record names each string once, however many frames use
    /// it, and a reader keeps it that way.
    pub function: Arc<str>,
    /// The source file of the address within this function, when debug info gave one.
    pub file: Option<Arc<str>>,
    /// Its source line.
    pub line: Option<u32>,
}

/// Anything a recording holds after its header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A probe definition (before any event of it).
    Probe(Probe),
    /// A process (before any event or mapping of it).
    Process(Process),
    /// A later change of a process.
    ProcessEvent(ProcessEvent),
    /// An executable mapping.
    Mapping(Mapping),
    /// A deduplicated stack (before any event using it).
    Stack(Stack),
    /// A probe hit.
    Event(Event),
    /// Lost records.
    Lost(Lost),
    /// Calls a predicate rejected (since 1.3).
    Filtered(Filtered),
    /// A probe's in-kernel counts (since 1.5).
    Aggregate(Aggregate),
    /// The clean end of the recording.
    Finish(Finish),
    /// Names of addresses of one binary (only in the symbols section, after the footer).
    Symbols(BinarySymbols),
    /// A Python function (since 2.4; before any Stack that uses it).
    PyCode(PyCode),
}
