//! The process table: who is who, and what is mapped where, over the recording's time.
//!
//! Fed with side-band records ([`ProcessTable::apply`], in the time order
//! [`Sideband::read`](crate::sideband::Sideband::read) returns them) and, for processes the
//! side-band says nothing about, with `/proc` snapshots taken lazily the first time a pid is
//! met (or eagerly with [`ProcessTable::snapshot_all`] / [`ProcessTable::prime`]).
//!
//! # One mapping intake
//!
//! A mapping enters the recorder one way, `take_mapping`: each executable mapping of a `/proc`
//! snapshot and each side-band `mmap` record become the same [`Mapping`]. Two consumers watch
//! it: the DWARF unwinder, through the log of changes ([`ProcessTable::track_mappings`]), and
//! the [`MappedBinaries`] the table owns ([`ProcessTable::observe_mapped`]), which sees every
//! mapping taken in and every side-band record applied, so it reads nothing itself. With
//! `-a -- COMMAND` it also needs what processes the table does not hold had mapped before
//! recording began: [`ProcessTable::survey`] reads that through the same snapshot reader and
//! the same intake, without holding those processes.
//!
//! # Only processes that matter reach the file
//!
//! A busy host runs thousands of short processes that never hit a probe; SPEC keeps process and
//! mapping records only for processes that produced events, and their ancestors (so a report can
//! say *which* shell ran the program). So the table holds each process's history privately —
//! its [`Process`] record as first known, then its [`Mapping`]s and [`ProcessEvent`]s in time
//! order, each with its own time — and writes nothing until the session calls
//! [`ProcessTable::ensure_emitted`] for the pid of an event. That emits the ancestors not yet
//! emitted (outermost first), then the process and its history so far; from then on,
//! [`ProcessTable::apply`] emits the process's changes as they arrive (a `dlopen`'s mapping, an
//! exec, a rename, the exit). Every record the table emits is in the order the format wants:
//! a `Process` before its mappings and events.
//!
//! History, rather than just the current state, because probe events arrive a little after the
//! side-band records of the same moment: an event stamped just before an `exec` may be processed
//! after the exec was applied, and it must still rebase against the old image.
//!
//! # Bounded memory
//!
//! Exited processes that were never emitted are forgotten [`GRACE_NS`] of side-band time after
//! their exit (their last events may still be in flight when the exit arrives). Emitted ones keep
//! only a tombstone, so a late event does not re-snapshot a recycled pid. For live, never-emitted
//! processes the history before an exec older than the grace period is folded away, and a
//! history longer than [`MAX_HISTORY`] (a JIT mapping code over and over) drops its oldest
//! mappings, counted in [`ProcessTable::dropped_mappings`].
//!
//! # Processes, threads, exec
//!
//! perf's `pid` is the thread-group id, `tid` the thread: a process's rename or exit is that of
//! its main thread (`tid == pid`); thread creation and exit are not process changes. A `fork`
//! child starts with a copy of its parent's mappings (the kernel reports no `mmap` for inherited
//! ones). An exec's `COMM` record comes before the new image's mappings, the executable's first
//! (the kernel maps the program, then its interpreter), so the exec's `exe` is the path of the
//! first mapping after it; the [`ProcessChange::Exec`] is held until that mapping arrives.
//!
//! # Races, and what the session should do about them
//!
//! A pid the table meets first in a probe event is snapshotted from `/proc`, whose state is
//! *now*, not the event's time. When the side-band records of the same moments have already
//! been applied, that is harmless; when they have not (the session wrote an event before
//! reading the side-band up to the event's time), a process that `exec`ed in between gets its
//! new image's mappings stamped "before recording". So the session should apply side-band
//! records and write events merged by time, writing an event only once
//! [`Sideband::horizon`](crate::sideband::Sideband::horizon) has passed it. Should the fork
//! record of an already snapshotted process arrive late anyway, it only fills in the parent: a
//! pid is recycled only after its holder's exit, so an alive entry is the same process.
//!
//! # Following children
//!
//! [`ProcessTable::parent`] and [`ProcessTable::exit_time`] answer the session's questions
//! (descendants for `-p`, "have all watched processes exited"); the session can equally watch the
//! [`SidebandRecord::Fork`] / [`SidebandRecord::Exit`] records it passes in.

use anyhow::Result;
use urec_format::{Lost, LostSource, Mapping, Nanos, Process, ProcessChange, ProcessEvent, Record};

use crate::kept::{KeptFiles, MappedFile};
use crate::mapped::MappedBinaries;
use crate::procfs::{self, BuildIdCache, Snapshot};
use crate::python::PythonProcs;
use crate::sideband::{MmapRecord, SidebandRecord, TaskRecord};
use urec_format::hash::FxHashMap;

/// How long (side-band time) an exited, never-emitted process is kept for late probe events.
pub const GRACE_NS: Nanos = 5_000_000_000;

/// Most history records kept for a live process that has not been emitted.
pub const MAX_HISTORY: usize = 4096;

/// A process start in `/proc` later than the event asking for it by more than this means the pid
/// was recycled (`/proc` start times have 10 ms ticks).
const START_SLACK_NS: Nanos = 20_000_000;

/// A change to what a process has mapped, for a consumer that mirrors the mappings of the
/// processes it cares about (the DWARF unwinder); see [`ProcessTable::track_mappings`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MappingChange {
    /// A new executable mapping (`mapping.pid` is the process).
    Added(Mapping),
    /// Everything known of this pid is void: it exec'd, exited, or the pid was reused.
    Forget(u32),
}

/// Where the emitted records go: usually the data file's writer.
pub type Emit<'a> = &'a mut dyn FnMut(Record) -> Result<()>;

#[derive(Debug)]
struct Proc {
    /// The `Process` record, as first known.
    info: Process,
    /// Later `Mapping` / `ProcessEvent` records, not yet emitted, in time order.
    history: Vec<Record>,
    /// The mappings in place now (for fork children and to drop duplicates of a snapshot).
    current: Vec<Mapping>,
    /// Command name and executable now.
    comm: String,
    exe: String,
    emitted: bool,
    exited: Option<Nanos>,
    /// An exec seen (time, new comm) whose executable mapping has not arrived yet.
    pending_exec: Option<(Nanos, String)>,
}

impl Proc {
    fn new(info: Process) -> Proc {
        Proc {
            comm: info.comm.clone(),
            exe: info.exe.clone(),
            info,
            history: Vec::new(),
            current: Vec::new(),
            emitted: false,
            exited: None,
            pending_exec: None,
        }
    }

    /// The process a snapshot shows, without its mappings (those go through
    /// [`ProcessTable::take_mapping`], as the side-band's do).
    fn from_snapshot(s: &Snapshot) -> Proc {
        Proc::new(Process {
            pid: s.pid,
            ppid: s.ppid,
            comm: s.comm.clone(),
            exe: s.exe.clone(),
            start_ns: s.start_ns,
            mnt_ns: s.context.mnt_ns,
            pid_ns: s.context.pid_ns,
            cgroup: s.context.cgroup.clone(),
        })
    }
}

/// Where the table learnt of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Learnt {
    /// A side-band `mmap` record: a change at its time, logged for the consumers of changes
    /// and committed to the process's history (or the file, once the process is emitted).
    Sideband,
    /// A `/proc` snapshot of a process met for the first time: its state then, before any
    /// record of it; consumers of changes ask for the current list instead.
    Snapshot,
    /// A survey of a process the table does not hold ([`ProcessTable::survey`]): shown to the
    /// observer only, neither held nor kept.
    Survey,
}

/// Every process the recording has met; see the module docs.
#[derive(Debug, Default)]
pub struct ProcessTable {
    procs: FxHashMap<u32, Proc>,
    build_ids: BuildIdCache,
    /// Descriptors of the mapped files, for the symbols step (see [`ProcessTable::keep_files`]).
    kept: KeptFiles,
    /// Latest side-band time applied.
    now: Nanos,
    last_prune: Nanos,
    dropped_mappings: u64,
    /// Never look at `/proc` (unit tests with made-up pids).
    offline: bool,
    /// Log mapping changes in `changes` (see [`ProcessTable::track_mappings`]).
    track: bool,
    changes: Vec<MappingChange>,
    /// Observes every mapping taken in (see [`ProcessTable::observe_mapped`]).
    mapped: MappedBinaries,
    /// The processes running a known CPython (see [`ProcessTable::observe_python`]).
    python: PythonProcs,
}

impl ProcessTable {
    /// An empty table.
    pub fn new() -> ProcessTable {
        ProcessTable::default()
    }

    /// A table that never looks at `/proc` (unit tests with made-up pids).
    #[cfg(test)]
    pub(crate) fn offline() -> ProcessTable {
        ProcessTable {
            offline: true,
            ..ProcessTable::default()
        }
    }

    /// Keeps every mapped file the table learns of open from now on (see [`crate::kept`]).
    pub fn keep_files(&mut self) {
        self.kept = KeptFiles::new();
    }

    /// From now on, shows `mapped` every mapping the table takes in, and every side-band
    /// record after applying it: the one place the mapping observer learns from. Set it before
    /// the first snapshot, so that the snapshots of `-p` processes (traced already) count.
    pub fn observe_mapped(&mut self, mapped: MappedBinaries) {
        self.mapped = mapped;
    }

    /// From now on, shows `python` every mapping taken in and every fork, exec and exit, so
    /// that it keeps the BPF Python walk's maps (see [`crate::python`]). Set it before the
    /// first snapshot, so that the Python processes running at start are found too.
    pub fn observe_python(&mut self, python: PythonProcs) {
        self.python = python;
    }

    /// The Python process observer: which interpreter a process runs, to name its frames.
    pub fn python(&self) -> &PythonProcs {
        &self.python
    }

    /// The Python process observer, to write its changes to the programs' maps.
    pub fn python_mut(&mut self) -> &mut PythonProcs {
        &mut self.python
    }

    /// The mapping observer (empty unless [`ProcessTable::observe_mapped`] set one).
    pub fn mapped(&self) -> &MappedBinaries {
        &self.mapped
    }

    /// The mapping observer, to trace a process the table will learn of later (the command).
    pub fn mapped_mut(&mut self) -> &mut MappedBinaries {
        &mut self.mapped
    }

    /// Shows the observer the executable mappings of every live process the table does not
    /// hold, without holding them; stops early once the observer has seen every probed binary
    /// mapped. For `-a -- COMMAND`, where the table snapshots processes only when it meets them
    /// (so a process's time-0 mappings are those of that moment, as the file has always
    /// recorded them): holding every process up front would change what the file records,
    /// while the observer must still know what was mapped before the side-band could say. With
    /// plain `-a` every process is held already ([`ProcessTable::snapshot_all`]) and only those
    /// born since are read; their mappings come as side-band records too.
    pub fn survey(&mut self) {
        if self.offline {
            return;
        }
        for pid in procfs::all_pids() {
            if self.mapped.all_mapped() {
                return;
            }
            if self.procs.contains_key(&pid) {
                continue;
            }
            for m in procfs::maps(pid).unwrap_or_default() {
                // Nothing is emitted for a mapping the table does not hold.
                let _ = self.take_mapping(m.mapping(pid), Learnt::Survey, &mut |_| Ok(()));
            }
        }
    }

    /// The files kept open so far, handed over (the table keeps no more).
    pub fn take_kept_files(&mut self) -> KeptFiles {
        std::mem::take(&mut self.kept)
    }

    /// Snapshots every process in `/proc` now (perf's start-up synthesis). Optional: pids are
    /// otherwise snapshotted when first met, which is too late for a process that exits before
    /// its first event is processed. Processes already known are left alone.
    pub fn snapshot_all(&mut self) {
        for pid in procfs::all_pids() {
            self.prime(pid);
        }
    }

    /// Snapshots `pid` from `/proc` now if the table does not know it and it is alive (a `-p`
    /// target, before attaching). Returns whether the table knows it afterwards.
    pub fn prime(&mut self, pid: u32) -> bool {
        self.known(pid)
    }

    /// Applies one side-band record (in the order the side-band returns them), emitting the
    /// changes of already emitted processes, and every [`SidebandRecord::Lost`] as a
    /// `Lost { source: Sideband }` record; then the mapping observer follows it.
    pub fn apply(&mut self, record: &SidebandRecord, emit: Emit<'_>) -> Result<()> {
        self.now = self.now.max(record.time_ns());
        match record {
            SidebandRecord::Mmap(m) => self.on_mmap(m, emit)?,
            SidebandRecord::Comm {
                pid,
                tid,
                time_ns,
                comm,
                exec,
            } => self.on_comm(*pid, *tid, *time_ns, comm, *exec, emit)?,
            SidebandRecord::Fork(t) => self.on_fork(t),
            SidebandRecord::Exit(t) => self.on_exit(t, emit)?,
            SidebandRecord::Lost { count, .. } => emit(Record::Lost(Lost {
                source: LostSource::Sideband,
                probe: None,
                kind: None,
                count: *count,
            }))?,
        }
        self.mapped.observe(record);
        if self.now >= self.last_prune + GRACE_NS / 2 {
            self.prune();
            self.last_prune = self.now;
        }
        Ok(())
    }

    /// Makes sure the file has `pid`'s `Process` record and history, and those of its
    /// ancestors, before an event of it at `time_ns` is written. Cheap when already done.
    ///
    /// A pid the table does not know is snapshotted from `/proc`; if it is gone (or `/proc` shows
    /// a process started after `time_ns`, i.e. a recycled pid), a bare `Process` record with
    /// only the pid is emitted so the event still has its process.
    pub fn ensure_emitted(&mut self, pid: u32, time_ns: Nanos, emit: Emit<'_>) -> Result<()> {
        if self.procs.get(&pid).is_some_and(|p| p.emitted) {
            return Ok(());
        }
        if !self.procs.contains_key(&pid) {
            let snap = (!self.offline)
                .then(|| self.snapshot(pid))
                .flatten()
                .filter(|s| {
                    s.start_ns
                        .is_none_or(|start| start <= time_ns.saturating_add(START_SLACK_NS))
                });
            match snap {
                Some(s) => self.insert_snapshot(s),
                None => {
                    self.procs.insert(pid, Proc::new(bare_process(pid)));
                }
            }
        }
        let mut chain = vec![pid];
        let mut parent = self.procs.get(&pid).map_or(0, |p| p.info.ppid);
        while parent != 0 && chain.len() < 128 && !chain.contains(&parent) && self.known(parent) {
            let Some(p) = self.procs.get(&parent) else {
                break;
            };
            if p.emitted {
                break;
            }
            chain.push(parent);
            parent = p.info.ppid;
        }
        for &p in chain.iter().rev() {
            self.emit_process(p, emit)?;
        }
        Ok(())
    }

    /// Emits what is still held back at the end of a recording (an exec whose executable
    /// mapping never came).
    pub fn finish(&mut self, emit: Emit<'_>) -> Result<()> {
        let pending: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, p)| p.emitted && p.pending_exec.is_some())
            .map(|(&pid, _)| pid)
            .collect();
        for pid in pending {
            self.resolve_exec(pid, None, emit)?;
        }
        Ok(())
    }

    /// The parent of `pid`, when known.
    pub fn parent(&self, pid: u32) -> Option<u32> {
        self.procs
            .get(&pid)
            .map(|p| p.info.ppid)
            .filter(|&pp| pp != 0)
    }

    /// The current command name of `pid`, when known.
    pub fn comm(&self, pid: u32) -> Option<&str> {
        self.procs.get(&pid).map(|p| p.comm.as_str())
    }

    /// When `pid` exited, if the side-band said so (and the table still remembers it).
    pub fn exit_time(&self, pid: u32) -> Option<Nanos> {
        self.procs.get(&pid).and_then(|p| p.exited)
    }

    /// Whether `pid`'s `Process` record has been emitted.
    pub fn is_emitted(&self, pid: u32) -> bool {
        self.procs.get(&pid).is_some_and(|p| p.emitted)
    }

    /// Number of processes held (for tests and the bounded-memory claim).
    pub fn len(&self) -> usize {
        self.procs.len()
    }

    /// Whether the table holds no process.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// From now on, log every mapping change as a [`MappingChange`] for
    /// [`ProcessTable::take_changes`]. Changes before a consumer first asked for a process's
    /// [`ProcessTable::mappings`] can be ignored by it: the list is current.
    pub fn track_mappings(&mut self) {
        self.track = true;
    }

    /// Calls `f` with the mapping changes logged since the last call, in order.
    pub fn take_changes(&mut self, mut f: impl FnMut(MappingChange)) {
        for change in self.changes.drain(..) {
            f(change);
        }
    }

    /// The executable mappings `pid` has now (as of the side-band records applied so far),
    /// snapshotting it from `/proc` first if the table does not know it.
    pub fn mappings(&mut self, pid: u32) -> &[Mapping] {
        self.known(pid);
        self.procs.get(&pid).map_or(&[], |p| p.current.as_slice())
    }

    fn log(&mut self, change: MappingChange) {
        if self.track {
            self.changes.push(change);
        }
    }

    /// Mappings dropped from the history of never-emitted processes to bound memory.
    pub fn dropped_mappings(&self) -> u64 {
        self.dropped_mappings
    }

    /// Whether the table knows `pid`, snapshotting it from `/proc` first if it is alive.
    fn known(&mut self, pid: u32) -> bool {
        if self.procs.contains_key(&pid) {
            return true;
        }
        if self.offline {
            return false;
        }
        match self.snapshot(pid) {
            Some(s) => {
                self.insert_snapshot(s);
                true
            }
            None => false,
        }
    }

    /// `pid`'s snapshot from `/proc`.
    fn snapshot(&mut self, pid: u32) -> Option<Snapshot> {
        procfs::snapshot(pid, &mut self.build_ids)
    }

    /// Enters a process met for the first time as a snapshot shows it; its mappings come in
    /// through the same intake as the side-band's.
    fn insert_snapshot(&mut self, mut s: Snapshot) {
        let pid = s.pid;
        self.procs.insert(pid, Proc::from_snapshot(&s));
        self.mapped.running(pid, &s.exe);
        for m in std::mem::take(&mut s.mappings) {
            // A snapshot's mappings are never emitted here (its process is new, not emitted).
            let _ = self.take_mapping(m.mapping(pid), Learnt::Snapshot, &mut |_| Ok(()));
        }
    }

    fn emit_process(&mut self, pid: u32, emit: Emit<'_>) -> Result<()> {
        let Some(p) = self.procs.get_mut(&pid) else {
            return Ok(());
        };
        if p.emitted {
            return Ok(());
        }
        p.emitted = true;
        // Where it lives now, if it still does (a process may unshare or move after it was
        // first seen; a snapshot or its parent's values stand otherwise).
        if !self.offline && p.exited.is_none() {
            let now = procfs::context(pid);
            if now.mnt_ns.is_some() {
                p.info.mnt_ns = now.mnt_ns;
                p.info.pid_ns = now.pid_ns;
                p.info.cgroup = now.cgroup.or(p.info.cgroup.take());
            }
        }
        let history = std::mem::take(&mut p.history);
        emit(Record::Process(p.info.clone()))?;
        for mut record in history {
            self.fill_build_id(&mut record);
            emit(record)?;
        }
        Ok(())
    }

    /// Emits `record` of `pid` if the process is emitted, else keeps it in its history.
    fn commit(&mut self, pid: u32, mut record: Record, emit: Emit<'_>) -> Result<()> {
        let Some(p) = self.procs.get_mut(&pid) else {
            return Ok(());
        };
        if p.emitted {
            self.fill_build_id(&mut record);
            return emit(record);
        }
        p.history.push(record);
        if p.history.len() > MAX_HISTORY {
            self.compact(pid);
        }
        Ok(())
    }

    /// Mappings whose file the kernel gave no build id for: read it from the file, if it is
    /// still the same file. Through `map_files` first, as for the processes found running: the
    /// path is the traced process's to replace (with another file, or a FIFO) once it has
    /// mapped it.
    fn fill_build_id(&mut self, record: &mut Record) {
        if let Record::Mapping(m) = record {
            if m.build_id.is_none() && m.path.starts_with('/') {
                let entry = procfs::MapEntry {
                    start: m.start,
                    end: m.end,
                    offset: m.offset,
                    dev: m.dev,
                    inode: m.inode,
                    path: m.path.clone(),
                    build_id: None,
                };
                m.build_id = self.build_ids.lookup_mapped(m.pid, &entry);
            }
        }
    }

    fn on_mmap(&mut self, m: &MmapRecord, emit: Emit<'_>) -> Result<()> {
        if !self.known(m.pid) {
            // Died before we could look: start from what the side-band says.
            self.procs.insert(m.pid, Proc::new(bare_process(m.pid)));
        }
        if self
            .procs
            .get(&m.pid)
            .is_some_and(|p| p.pending_exec.is_some())
        {
            self.resolve_exec(m.pid, Some(m.path.clone()), emit)?;
        }
        self.take_mapping(m.mapping(), Learnt::Sideband, emit)
    }

    /// The one intake of mappings, from the side-band and from snapshots alike: the observer
    /// sees it (every mapping, a duplicate of a snapshot's too), the file is kept, the
    /// process's current list updated (a later mapping replaces those it covers), and the
    /// mapping recorded in its history.
    fn take_mapping(&mut self, mapping: Mapping, learnt: Learnt, emit: Emit<'_>) -> Result<()> {
        self.mapped.mapping(&mapping);
        // Only traced processes' interpreters: a Python elsewhere on the host is none of this
        // recording's business (its detection would cost time, and its version a message).
        if self.mapped.traces(mapping.pid) {
            self.python.mapping(&mapping);
        }
        let sideband = match learnt {
            Learnt::Survey => return Ok(()),
            Learnt::Snapshot => false,
            Learnt::Sideband => true,
        };
        self.kept.keep(&MappedFile {
            pid: mapping.pid,
            start: mapping.start,
            end: mapping.end,
            path: &mapping.path,
            dev: mapping.dev,
            inode: mapping.inode,
            build_id: mapping.build_id.as_ref(),
        });
        let pid = mapping.pid;
        let Some(p) = self.procs.get_mut(&pid) else {
            return Ok(());
        };
        // A snapshot taken after this mmap already holds it.
        if p.current.iter().any(|c| same_place(c, &mapping)) {
            return Ok(());
        }
        p.current
            .retain(|c| !(mapping.start <= c.start && c.end <= mapping.end));
        p.current.push(mapping.clone());
        if !sideband {
            p.history.push(Record::Mapping(mapping));
            return Ok(());
        }
        self.log(MappingChange::Added(mapping.clone()));
        self.commit(pid, Record::Mapping(mapping), emit)
    }

    fn on_comm(
        &mut self,
        pid: u32,
        tid: u32,
        time_ns: Nanos,
        comm: &str,
        exec: bool,
        emit: Emit<'_>,
    ) -> Result<()> {
        if !exec && tid != pid {
            return Ok(()); // a thread's name, not the process's
        }
        if !self.known(pid) {
            self.procs.insert(pid, Proc::new(bare_process(pid)));
        }
        if self
            .procs
            .get(&pid)
            .is_some_and(|p| p.pending_exec.is_some())
        {
            self.resolve_exec(pid, None, emit)?;
        }
        let Some(p) = self.procs.get_mut(&pid) else {
            return Ok(());
        };
        p.comm = comm.to_string();
        if exec {
            self.python.forget(pid, time_ns);
            p.current.clear();
            p.pending_exec = Some((time_ns, comm.to_string()));
            self.log(MappingChange::Forget(pid));
            return Ok(());
        }
        let event = ProcessEvent {
            pid,
            time_ns,
            change: ProcessChange::Comm(comm.to_string()),
        };
        self.commit(pid, Record::ProcessEvent(event), emit)
    }

    /// Commits the pending exec of `pid` with `exe`, or, without one, `/proc/PID/exe` if
    /// the process is still there.
    fn resolve_exec(&mut self, pid: u32, exe: Option<String>, emit: Emit<'_>) -> Result<()> {
        let Some((time_ns, comm)) = self.procs.get_mut(&pid).and_then(|p| p.pending_exec.take())
        else {
            return Ok(());
        };
        let offline = self.offline;
        let exe = exe.unwrap_or_else(|| {
            if offline {
                return String::new();
            }
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
        if let Some(p) = self.procs.get_mut(&pid) {
            p.exe = exe.clone();
        }
        let event = ProcessEvent {
            pid,
            time_ns,
            change: ProcessChange::Exec { comm, exe },
        };
        self.commit(pid, Record::ProcessEvent(event), emit)
    }

    fn on_fork(&mut self, t: &TaskRecord) {
        if !t.is_process() {
            // A new thread: make sure we know its process, nothing changes.
            self.known(t.pid);
            return;
        }
        self.python.fork(t.ppid, t.pid, t.time_ns);
        if let Some(p) = self.procs.get_mut(&t.pid) {
            if p.exited.is_none() {
                // Not a recycled pid (its holder would have exited first) but this very process,
                // snapshotted from /proc before its fork record was read: keep what is known
                // (maybe emitted already), with the parent and start the fork gives.
                p.info.ppid = t.ppid;
                p.info.start_ns = Some(t.time_ns);
                return;
            }
        }
        let parent = self
            .known(t.ppid)
            .then(|| self.procs.get(&t.ppid))
            .flatten();
        let (comm, exe, inherited, from) = match parent {
            Some(p) => (
                p.comm.clone(),
                p.exe.clone(),
                p.current.clone(),
                p.info.clone(),
            ),
            None => (String::new(), String::new(), Vec::new(), Process::default()),
        };
        // Namespaces and cgroup as the parent's until read from /proc when emitted.
        let mut child = Proc::new(Process {
            pid: t.pid,
            ppid: t.ppid,
            comm,
            exe,
            start_ns: Some(t.time_ns),
            mnt_ns: from.mnt_ns,
            pid_ns: from.pid_ns,
            cgroup: from.cgroup,
        });
        for mut m in inherited {
            m.pid = t.pid;
            m.time_ns = t.time_ns;
            child.current.push(m.clone());
            child.history.push(Record::Mapping(m));
        }
        // A recycled pid, or a new one: the new process replaces whatever was known under it.
        self.procs.insert(t.pid, child);
        self.log(MappingChange::Forget(t.pid));
    }

    fn on_exit(&mut self, t: &TaskRecord, emit: Emit<'_>) -> Result<()> {
        if t.is_process() {
            self.python.forget(t.pid, t.time_ns);
        }
        if !t.is_process() || !self.procs.contains_key(&t.pid) {
            // A thread, or a process that was never met: nothing to record.
            return Ok(());
        }
        self.resolve_exec(t.pid, None, emit)?;
        if let Some(p) = self.procs.get_mut(&t.pid) {
            p.exited = Some(t.time_ns);
        }
        self.log(MappingChange::Forget(t.pid));
        let event = ProcessEvent {
            pid: t.pid,
            time_ns: t.time_ns,
            change: ProcessChange::Exit,
        };
        self.commit(t.pid, Record::ProcessEvent(event), emit)
    }

    /// Forgets exited processes after the grace period; folds old execs of live ones.
    fn prune(&mut self) {
        let cutoff = self.now.saturating_sub(GRACE_NS);
        self.procs.retain(|_, p| match p.exited {
            Some(exit) if exit < cutoff => {
                if p.emitted {
                    // Tombstone: enough to not re-emit a late event's process.
                    p.history = Vec::new();
                    p.current = Vec::new();
                }
                p.emitted
            }
            _ => true,
        });
        for p in self.procs.values_mut().filter(|p| !p.emitted) {
            fold_old_execs(p, cutoff);
        }
    }

    /// Bounds the history of a never-emitted process.
    fn compact(&mut self, pid: u32) {
        let cutoff = self.now.saturating_sub(GRACE_NS);
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        fold_old_execs(p, cutoff);
        let mut excess = p.history.len().saturating_sub(MAX_HISTORY / 2);
        let mut dropped = 0;
        p.history.retain(|r| {
            if excess > 0 && matches!(r, Record::Mapping(_)) {
                excess -= 1;
                dropped += 1;
                false
            } else {
                true
            }
        });
        self.dropped_mappings += dropped;
    }
}

/// Drops the history before the last exec older than `cutoff` and folds that exec into the
/// `Process` record: no event can refer to the older image any more.
fn fold_old_execs(p: &mut Proc, cutoff: Nanos) {
    let last_old_exec = p.history.iter().rposition(|r| {
        matches!(r, Record::ProcessEvent(ProcessEvent { time_ns, change: ProcessChange::Exec { .. }, .. }) if *time_ns < cutoff)
    });
    if let Some(i) = last_old_exec {
        if let Record::ProcessEvent(ProcessEvent {
            change: ProcessChange::Exec { comm, exe },
            ..
        }) = p.history.remove(i)
        {
            p.info.comm = comm;
            p.info.exe = exe;
        }
        p.history.drain(..i);
    }
}

/// A process known by its pid only: gone (or never seen) before `/proc` could be read.
fn bare_process(pid: u32) -> Process {
    Process {
        pid,
        ppid: 0,
        comm: String::new(),
        exe: String::new(),
        start_ns: None,
        ..Default::default()
    }
}

fn same_place(a: &Mapping, b: &Mapping) -> bool {
    (a.start, a.end, a.offset, &a.path) == (b.start, b.end, b.offset, &b.path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sideband::{FileId, MmapRecord, TaskRecord};
    use urec_format::{Avma, BuildId, FileOffset};

    fn table() -> ProcessTable {
        ProcessTable::offline()
    }

    fn fork(pid: u32, ppid: u32, time_ns: Nanos) -> SidebandRecord {
        SidebandRecord::Fork(TaskRecord {
            pid,
            ppid,
            tid: pid,
            ptid: ppid,
            time_ns,
        })
    }

    fn exit(pid: u32, tid: u32, time_ns: Nanos) -> SidebandRecord {
        SidebandRecord::Exit(TaskRecord {
            pid,
            ppid: 1,
            tid,
            ptid: 1,
            time_ns,
        })
    }

    fn mmap(pid: u32, time_ns: Nanos, start: u64, path: &str) -> SidebandRecord {
        SidebandRecord::Mmap(MmapRecord {
            pid,
            tid: pid,
            time_ns,
            start: Avma(start),
            len: 0x1000,
            pgoff: FileOffset(0x1000),
            path: path.into(),
            file: FileId::BuildId(BuildId(vec![1, 2])),
            prot: Some(5),
        })
    }

    fn comm(pid: u32, time_ns: Nanos, name: &str, exec: bool) -> SidebandRecord {
        SidebandRecord::Comm {
            pid,
            tid: pid,
            time_ns,
            comm: name.into(),
            exec,
        }
    }

    /// Applies records, returning what was emitted.
    fn apply(t: &mut ProcessTable, records: &[SidebandRecord]) -> Vec<Record> {
        let mut out = Vec::new();
        for r in records {
            t.apply(r, &mut |rec| {
                out.push(rec);
                Ok(())
            })
            .unwrap();
        }
        out
    }

    fn ensure(t: &mut ProcessTable, pid: u32, time_ns: Nanos) -> Vec<Record> {
        let mut out = Vec::new();
        t.ensure_emitted(pid, time_ns, &mut |rec| {
            out.push(rec);
            Ok(())
        })
        .unwrap();
        out
    }

    /// A compact view: (kind, pid, time, detail).
    fn view(records: &[Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| match r {
                Record::Process(p) => {
                    format!("process {} ppid={} {} {}", p.pid, p.ppid, p.comm, p.exe)
                }
                Record::Mapping(m) => {
                    format!("map {} @{} {:x} {}", m.pid, m.time_ns, m.start, m.path)
                }
                Record::ProcessEvent(e) => format!("event {} @{} {:?}", e.pid, e.time_ns, e.change),
                Record::Lost(l) => format!("lost {}", l.count),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn emits_ancestors_then_history_then_live_changes() {
        let mut t = table();
        let early = apply(
            &mut t,
            &[
                fork(10, 1, 100),
                comm(10, 110, "sh", true),
                mmap(10, 120, 0x1000, "/bin/sh"),
                fork(11, 10, 200),
                comm(11, 210, "prog", true),
                mmap(11, 220, 0x5000, "/bin/prog"),
                mmap(11, 230, 0x7000, "/lib/libc.so.6"),
            ],
        );
        assert!(early.is_empty(), "nothing is emitted before an event asks");
        let first = ensure(&mut t, 11, 240);
        assert_eq!(
            view(&first),
            [
                // pid 1 is unknown (offline): the chain stops at 10.
                "process 10 ppid=1  ",
                "event 10 @110 Exec { comm: \"sh\", exe: \"/bin/sh\" }",
                "map 10 @120 1000 /bin/sh",
                "process 11 ppid=10 sh /bin/sh",
                "map 11 @200 1000 /bin/sh",
                "event 11 @210 Exec { comm: \"prog\", exe: \"/bin/prog\" }",
                "map 11 @220 5000 /bin/prog",
                "map 11 @230 7000 /lib/libc.so.6",
            ]
        );
        assert!(ensure(&mut t, 11, 250).is_empty(), "emitted once");
        let later = apply(
            &mut t,
            &[
                mmap(11, 300, 0x9000, "/lib/libfoo.so"),
                mmap(12, 301, 0x9000, "/lib/other.so"), // unknown, not emitted
                comm(11, 310, "renamed", false),
                exit(11, 13, 320), // a thread: no process change
                exit(11, 11, 330),
                SidebandRecord::Lost {
                    time_ns: 340,
                    count: 7,
                },
            ],
        );
        assert_eq!(
            view(&later),
            [
                "map 11 @300 9000 /lib/libfoo.so",
                "event 11 @310 Comm(\"renamed\")",
                "event 11 @330 Exit",
                "lost 7",
            ]
        );
        assert_eq!(t.parent(11), Some(10));
        assert_eq!(t.exit_time(11), Some(330));
        assert_eq!(t.comm(11), Some("renamed"));
    }

    #[test]
    fn exec_waits_for_its_executable_mapping() {
        let mut t = table();
        apply(&mut t, &[fork(20, 1, 10)]);
        ensure(&mut t, 20, 11);
        let out = apply(
            &mut t,
            &[
                comm(20, 20, "new", true),
                mmap(20, 30, 0x1000, "/usr/bin/new"),
            ],
        );
        assert_eq!(
            view(&out),
            [
                "event 20 @20 Exec { comm: \"new\", exe: \"/usr/bin/new\" }",
                "map 20 @30 1000 /usr/bin/new",
            ]
        );
        // An exec followed by the exit, with no mapping in between, still comes out.
        let out = apply(&mut t, &[comm(20, 40, "x", true), exit(20, 20, 50)]);
        assert_eq!(
            view(&out),
            [
                "event 20 @40 Exec { comm: \"x\", exe: \"\" }",
                "event 20 @50 Exit",
            ]
        );
    }

    #[test]
    fn forgets_exited_processes_after_the_grace_period() {
        let mut t = table();
        apply(
            &mut t,
            &[
                fork(30, 1, 1),
                fork(31, 1, 1),
                exit(30, 30, 2),
                exit(31, 31, 2),
            ],
        );
        ensure(&mut t, 31, 2);
        assert_eq!(t.len(), 2);
        // Within the grace period both are kept (late events may still come).
        apply(&mut t, &[fork(32, 1, GRACE_NS)]);
        assert_eq!(t.len(), 3);
        assert_eq!(
            view(&ensure(&mut t, 30, 2)),
            ["process 30 ppid=1  ", "event 30 @2 Exit"],
            "a late event still finds 30"
        );
        apply(&mut t, &[fork(33, 1, 1), exit(33, 33, 3)]);
        apply(&mut t, &[fork(34, 1, 3 * GRACE_NS)]);
        // 33 (never emitted, exited long ago) is gone; 30 and 31 (emitted) stay as tombstones.
        assert_eq!(t.exit_time(33), None);
        assert!(t.is_emitted(30) && t.is_emitted(31));
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn an_early_event_then_the_fork_keeps_one_process() {
        let mut t = table();
        apply(&mut t, &[fork(50, 1, 1)]);
        // 51's first event was processed before its fork record (offline: a bare record).
        assert_eq!(view(&ensure(&mut t, 51, 10)), ["process 51 ppid=0  "]);
        let out = apply(&mut t, &[fork(51, 50, 5), mmap(51, 6, 0x1000, "/b")]);
        assert_eq!(view(&out), ["map 51 @6 1000 /b"]);
        assert!(ensure(&mut t, 51, 11).is_empty());
        assert_eq!(t.parent(51), Some(50));
        // Once exited, the pid can be recycled: a new process under the same pid.
        apply(&mut t, &[exit(51, 51, 20), fork(51, 50, 30)]);
        assert_eq!(
            view(&ensure(&mut t, 51, 31)),
            ["process 50 ppid=1  ", "process 51 ppid=50  "]
        );
    }

    #[test]
    fn threads_do_not_rename_or_end_the_process() {
        let mut t = table();
        apply(&mut t, &[fork(60, 1, 1)]);
        ensure(&mut t, 60, 2);
        let thread = |r: SidebandRecord| match r {
            SidebandRecord::Comm {
                pid,
                time_ns,
                comm,
                exec,
                ..
            } => SidebandRecord::Comm {
                pid,
                tid: 61,
                time_ns,
                comm,
                exec,
            },
            other => other,
        };
        let out = apply(
            &mut t,
            &[
                SidebandRecord::Fork(TaskRecord {
                    pid: 60,
                    ppid: 60,
                    tid: 61,
                    ptid: 60,
                    time_ns: 3,
                }),
                thread(comm(60, 4, "worker", false)),
                exit(60, 61, 5),
            ],
        );
        assert!(out.is_empty(), "{out:?}");
        assert_eq!((t.comm(60), t.exit_time(60)), (Some(""), None));
    }

    #[test]
    fn the_observer_sees_snapshot_and_sideband_mappings_alike() {
        let snapshot = |pid: u32, exe: &str, path: &str| Snapshot {
            pid,
            ppid: 1,
            comm: "prog".into(),
            exe: exe.into(),
            start_ns: Some(1),
            mappings: vec![procfs::MapEntry {
                start: Avma(0x1000),
                end: Avma(0x2000),
                offset: FileOffset(0),
                dev: 0,
                inode: 0,
                path: path.into(),
                build_id: None,
            }],
            context: procfs::Context::default(),
        };
        let mut mapped = MappedBinaries::new([(0, "/opt/a"), (1, "/opt/b")], false);
        mapped.trace(70);
        let mut t = table();
        t.observe_mapped(mapped);
        // A -p process as primed: its program and mappings count; an untraced one's do not.
        t.insert_snapshot(snapshot(70, "/usr/bin/prog", "/opt/a"));
        t.insert_snapshot(snapshot(71, "/usr/bin/other", "/opt/b"));
        assert_eq!(
            t.mapped().warnings(&[0, 0]),
            ["/opt/b was never mapped by the traced process (it ran /usr/bin/prog)"]
        );
        // The side-band's mapping of the same process comes through the same intake.
        apply(&mut t, &[mmap(70, 5, 0x9000, "/opt/b")]);
        assert!(t.mapped().warnings(&[0, 0]).is_empty());
    }

    #[test]
    fn duplicate_and_covered_mappings() {
        let mut t = table();
        apply(
            &mut t,
            &[
                fork(40, 1, 1),
                mmap(40, 2, 0x1000, "/a"),
                mmap(40, 3, 0x1000, "/a"), // same place: dropped
            ],
        );
        let out = ensure(&mut t, 40, 4);
        assert_eq!(view(&out), ["process 40 ppid=1  ", "map 40 @2 1000 /a"]);
        // A fork child inherits the mapping, stamped with the fork time.
        apply(&mut t, &[fork(41, 40, 5)]);
        let out = ensure(&mut t, 41, 6);
        assert_eq!(view(&out), ["process 41 ppid=40  ", "map 41 @5 1000 /a"]);
    }
}
