//! Exact rebasing: which file, and which offset in it, an address of a process meant at a given
//! moment.
//!
//! A recording describes each process's executable mappings as a history, not a snapshot:
//! a [`Mapping`] holds from its `time_ns` on, a later mapping overlapping it replaces it from
//! *its* time on (dlopen after dlclose at the same address, a `MAP_FIXED` remap), and an
//! [`ProcessChange::Exec`] drops everything mapped before it. An address therefore resolves
//! through the mapping *in force at the event's time*, never through "the last mapping seen"
//! and never through a guessed load base: the file offset is `mapping.offset + (addr -
//! mapping.start)`, and the ELF program headers (in the symbolizer) take it from there.
//!
//! Memory is proportional to the number of mappings, execs and processes, not of events. Records may be
//! applied in file order, which need not be time order (side-band and events come from
//! different rings), so nothing here assumes sorted input: each process keeps its history
//! unsorted while records arrive and builds a sorted index the first time it is queried after a
//! change. Queries then cost a binary search plus a short backward scan over the mappings that
//! start below the address and could still reach it (see [`PidIndex`]).
//!
//! A [`Process`](urec_format::Process) record for a pid already seen with an earlier start
//! time is a reused pid and starts a new address space, like an exec.
//!
//! Two corrections make real recordings resolve where a strict reading would give up:
//! - A forked child inherits its parent's mappings, and a recorder may not copy them into the
//!   child's own records. When the child has no mapping for an address and has not exec'd
//!   since, the parent's mappings at the child's start time are used (transitively).
//! - Side-band timestamps can trail the first event that uses a fresh mapping by a little
//!   (different rings, different CPUs). When no mapping is in force at the event's time, the
//!   earliest later mapping of the same exec epoch that covers the address is used: if the
//!   address was executed, something was mapped there.

use std::collections::HashMap;
use std::sync::OnceLock;

use urec_format::{Avma, BuildId, FileOffset, Mapping, ProcessChange, Record};

/// How many parent links a lookup follows for forked children before giving up (a guard
/// against pid reuse making a cycle).
const MAX_PARENT_HOPS: usize = 64;

/// Every process's executable mappings over time, built from the recording's `Process`,
/// `ProcessEvent` (an exec drops earlier mappings from its time on) and `Mapping` records.
#[derive(Default)]
pub struct AddressSpaces {
    pids: HashMap<u32, PidHistory>,
    /// Interned paths: mappings of the same file in many processes share one string.
    paths: Vec<Box<str>>,
    path_ids: HashMap<Box<str>, u32>,
    /// Interned build ids, likewise.
    build_ids: Vec<BuildId>,
    build_id_ids: HashMap<BuildId, u32>,
    /// File order of mappings, to break ties between mappings recorded at the same time.
    seq: u64,
}

/// One mapping, as stored: 40 bytes, strings interned.
#[derive(Clone, Copy, Debug)]
struct Entry {
    start: u64,
    end: u64,
    offset: u64,
    time_ns: u64,
    seq: u64,
    path: u32,
    /// `u32::MAX` = no build id.
    build_id: u32,
}

#[derive(Default)]
struct PidHistory {
    /// Parent of the first process seen with this pid (0: unknown).
    ppid: u32,
    /// Start of the latest process seen with this pid.
    start_ns: Option<u64>,
    entries: Vec<Entry>,
    /// Where one address space ends and the next begins (unsorted until indexed).
    boundaries: Vec<Boundary>,
    /// Built on first lookup after a change; reset by `apply`.
    index: OnceLock<PidIndex>,
}

/// The start of a new address space of a pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Boundary {
    time_ns: u64,
    /// `Some(ppid)` when a reused pid started as a fork of `ppid` (which it shares mappings
    /// with until it maps its own); `None` for an exec.
    forked_from: Option<u32>,
    start_ns: u64,
}

/// A process's history sorted for queries.
///
/// `entries` are sorted by start address; `reach[i]` is the largest `end` among
/// `entries[..=i]`, so a backward scan from the last entry starting at or below an address can
/// stop as soon as nothing further left can reach it. `boundaries` are sorted by time.
struct PidIndex {
    entries: Vec<Entry>,
    reach: Vec<u64>,
    boundaries: Vec<Boundary>,
}

/// What an address was: the mapped file and the offset into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped<'a> {
    /// Path of the mapped file as recorded (`[vdso]` and such for special mappings).
    pub path: &'a str,
    /// The file's build id, when the recorder knew it.
    pub build_id: Option<&'a BuildId>,
    /// The file offset the address corresponds to.
    pub offset: FileOffset,
}

impl AddressSpaces {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in one record of the recording; records other than processes, process events and
    /// mappings are ignored, so callers can pass every record through.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Process(p) => {
                let h = self.pids.entry(p.pid).or_default();
                // The same pid starting again later is a reused pid: a new address space,
                // exactly as if it had exec'd.
                match (h.start_ns, p.start_ns) {
                    (Some(old), Some(new)) if new > old => {
                        h.boundaries.push(Boundary {
                            time_ns: new,
                            forked_from: Some(p.ppid),
                            start_ns: new,
                        });
                        h.index = OnceLock::new();
                        h.start_ns = Some(new);
                    }
                    (None, _) => {
                        h.ppid = p.ppid;
                        h.start_ns = p.start_ns;
                    }
                    _ => {}
                }
            }
            Record::ProcessEvent(ev) => {
                if let ProcessChange::Exec { .. } = ev.change {
                    let h = self.pids.entry(ev.pid).or_default();
                    h.boundaries.push(Boundary {
                        time_ns: ev.time_ns,
                        forked_from: None,
                        start_ns: 0,
                    });
                    h.index = OnceLock::new();
                }
            }
            Record::Mapping(m) => self.add_mapping(m),
            _ => {}
        }
    }

    fn add_mapping(&mut self, m: &Mapping) {
        if m.end.0 <= m.start.0 {
            return; // empty or inverted: maps nothing
        }
        let path = intern(&mut self.paths, &mut self.path_ids, m.path.as_str());
        let build_id = match &m.build_id {
            Some(b) => intern_build_id(&mut self.build_ids, &mut self.build_id_ids, b),
            None => u32::MAX,
        };
        self.seq += 1;
        let entry = Entry {
            start: m.start.0,
            end: m.end.0,
            offset: m.offset.0,
            time_ns: m.time_ns,
            seq: self.seq,
            path,
            build_id,
        };
        let h = self.pids.entry(m.pid).or_default();
        h.entries.push(entry);
        h.index = OnceLock::new();
    }

    /// The mapping of `pid` that covered `addr` at `time_ns`, and the file offset of `addr`.
    ///
    /// `None` when nothing (the process, an ancestor it forked from, a mapping recorded just
    /// after) explains the address: callers show such frames as `[unknown]`.
    pub fn lookup(&self, pid: u32, time_ns: u64, addr: Avma) -> Option<Mapped<'_>> {
        let mut pid = pid;
        let mut time_ns = time_ns;
        for _ in 0..=MAX_PARENT_HOPS {
            let h = self.pids.get(&pid)?;
            let index = h.index.get_or_init(|| PidIndex::build(h));
            match index.find(time_ns, addr.0) {
                Found::Entry(e) => return Some(self.mapped(e, addr.0)),
                Found::NotHere { epoch } => {
                    // Only a process still running the image it was forked with shares its
                    // parent's mappings, as they were when it was forked.
                    let (ppid, start) = match epoch {
                        None => (h.ppid, h.start_ns),
                        Some(Boundary {
                            forked_from: Some(ppid),
                            start_ns,
                            ..
                        }) => (*ppid, Some(*start_ns)),
                        Some(_) => return None,
                    };
                    if ppid == 0 || ppid == pid {
                        return None;
                    }
                    if let Some(start) = start {
                        time_ns = time_ns.min(start);
                    }
                    pid = ppid;
                }
            }
        }
        None
    }

    fn mapped(&self, e: &Entry, addr: u64) -> Mapped<'_> {
        Mapped {
            path: &self.paths[e.path as usize],
            build_id: self.build_ids.get(e.build_id as usize),
            offset: FileOffset(e.offset.wrapping_add(addr - e.start)),
        }
    }
}

enum Found<'a> {
    Entry(&'a Entry),
    /// Nothing covers the address; `epoch` is the boundary (exec or pid reuse) the query
    /// time falls after, if any.
    NotHere {
        epoch: Option<&'a Boundary>,
    },
}

impl PidIndex {
    fn build(h: &PidHistory) -> Self {
        let mut entries = h.entries.clone();
        entries.sort_unstable_by_key(|e| (e.start, e.time_ns, e.seq));
        let mut reach = Vec::with_capacity(entries.len());
        let mut max_end = 0;
        for e in &entries {
            max_end = max_end.max(e.end);
            reach.push(max_end);
        }
        let mut boundaries = h.boundaries.clone();
        boundaries.sort_unstable();
        boundaries.dedup_by_key(|b| b.time_ns);
        PidIndex {
            entries,
            reach,
            boundaries,
        }
    }

    fn find(&self, time: u64, addr: u64) -> Found<'_> {
        // The exec epoch the query time falls in: [epoch_start, epoch_end).
        let n_before = self.boundaries.partition_point(|b| b.time_ns <= time);
        let epoch = n_before.checked_sub(1).map(|i| &self.boundaries[i]);
        let epoch_end = self.boundaries.get(n_before).map(|b| b.time_ns);
        let lo = epoch.map_or(0, |b| b.time_ns);
        let in_epoch = |e: &Entry| e.time_ns >= lo && epoch_end.is_none_or(|end| e.time_ns < end);

        // In force: the latest mapping of this epoch covering `addr` recorded at or before
        // `time`. Fallback: the earliest covering mapping recorded after it in the same epoch.
        let mut best: Option<&Entry> = None;
        let mut later: Option<&Entry> = None;
        let mut i = self.entries.partition_point(|e| e.start <= addr);
        while i > 0 {
            i -= 1;
            if self.reach[i] <= addr {
                break;
            }
            let e = &self.entries[i];
            if e.end <= addr || !in_epoch(e) {
                continue;
            }
            if e.time_ns <= time {
                if best.is_none_or(|b| (e.time_ns, e.seq) > (b.time_ns, b.seq)) {
                    best = Some(e);
                }
            } else if later.is_none_or(|l| (e.time_ns, e.seq) < (l.time_ns, l.seq)) {
                later = Some(e);
            }
        }
        match best.or(later) {
            Some(e) => Found::Entry(e),
            None => Found::NotHere { epoch },
        }
    }
}

fn intern(table: &mut Vec<Box<str>>, ids: &mut HashMap<Box<str>, u32>, s: &str) -> u32 {
    if let Some(&id) = ids.get(s) {
        return id;
    }
    let id = table.len() as u32;
    table.push(s.into());
    ids.insert(s.into(), id);
    id
}

fn intern_build_id(table: &mut Vec<BuildId>, ids: &mut HashMap<BuildId, u32>, b: &BuildId) -> u32 {
    if let Some(&id) = ids.get(b) {
        return id;
    }
    let id = table.len() as u32;
    table.push(b.clone());
    ids.insert(b.clone(), id);
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use urec_format::{Process, ProcessEvent};

    fn map(pid: u32, time_ns: u64, start: u64, end: u64, offset: u64, path: &str) -> Record {
        Record::Mapping(Mapping {
            pid,
            time_ns,
            start: Avma(start),
            end: Avma(end),
            offset: FileOffset(offset),
            path: path.into(),
            dev: 0,
            inode: 0,
            build_id: None,
        })
    }

    fn exec(pid: u32, time_ns: u64) -> Record {
        Record::ProcessEvent(ProcessEvent {
            pid,
            time_ns,
            change: ProcessChange::Exec {
                comm: "x".into(),
                exe: "/x".into(),
            },
        })
    }

    fn at(s: &AddressSpaces, pid: u32, t: u64, a: u64) -> Option<(String, u64)> {
        s.lookup(pid, t, Avma(a))
            .map(|m| (m.path.to_string(), m.offset.0))
    }

    #[test]
    fn offset_is_relative_to_mapping_start() {
        let mut s = AddressSpaces::new();
        s.apply(&map(
            1,
            0,
            0x5555_0000_1000,
            0x5555_0000_3000,
            0x1000,
            "/bin/a",
        ));
        assert_eq!(
            at(&s, 1, 5, 0x5555_0000_1234),
            Some(("/bin/a".into(), 0x1234))
        );
        assert_eq!(at(&s, 1, 5, 0x5555_0000_3000), None);
        assert_eq!(at(&s, 1, 5, 0x5555_0000_0fff), None);
        assert_eq!(at(&s, 2, 5, 0x5555_0000_1234), None);
    }

    #[test]
    fn exec_and_remap_pick_the_mapping_in_force() {
        let mut s = AddressSpaces::new();
        // Applied out of time order on purpose.
        s.apply(&map(1, 300, 0x1000, 0x2000, 0, "/lib/c"));
        s.apply(&exec(1, 200));
        s.apply(&map(1, 0, 0x1000, 0x2000, 0, "/bin/a"));
        s.apply(&map(1, 100, 0x1800, 0x1900, 0x800, "/lib/b"));
        s.apply(&map(1, 200, 0x1000, 0x3000, 0x4000, "/bin/d"));
        assert_eq!(at(&s, 1, 50, 0x1810), Some(("/bin/a".into(), 0x810)));
        assert_eq!(at(&s, 1, 150, 0x1810), Some(("/lib/b".into(), 0x810)));
        assert_eq!(at(&s, 1, 150, 0x1010), Some(("/bin/a".into(), 0x10)));
        // After the exec, only the new image's mappings count.
        assert_eq!(at(&s, 1, 250, 0x1810), Some(("/bin/d".into(), 0x4810)));
        assert_eq!(at(&s, 1, 350, 0x1810), Some(("/lib/c".into(), 0x810)));
        assert_eq!(at(&s, 1, 350, 0x2810), Some(("/bin/d".into(), 0x5810)));
    }

    #[test]
    fn forked_child_uses_parent_mappings_until_exec() {
        let mut s = AddressSpaces::new();
        s.apply(&map(1, 0, 0x1000, 0x2000, 0, "/bin/a"));
        s.apply(&map(1, 500, 0x1000, 0x2000, 0, "/bin/later"));
        s.apply(&Record::Process(Process {
            pid: 2,
            ppid: 1,
            comm: "a".into(),
            exe: "/bin/a".into(),
            start_ns: Some(100),
            ..Default::default()
        }));
        assert_eq!(at(&s, 2, 900, 0x1010), Some(("/bin/a".into(), 0x10)));
        s.apply(&exec(2, 1000));
        assert_eq!(at(&s, 2, 1100, 0x1010), None);
    }

    #[test]
    fn reused_pid_starts_a_new_address_space() {
        let proc_at = |start| {
            Record::Process(Process {
                pid: 5,
                ppid: 0,
                comm: "p".into(),
                exe: String::new(),
                start_ns: Some(start),
                ..Default::default()
            })
        };
        let mut s = AddressSpaces::new();
        s.apply(&proc_at(10));
        s.apply(&map(5, 0, 0x1000, 0x2000, 0, "/old"));
        s.apply(&proc_at(1000));
        s.apply(&map(5, 1000, 0x1800, 0x1900, 0, "/new"));
        assert_eq!(at(&s, 5, 500, 0x1010), Some(("/old".into(), 0x10)));
        assert_eq!(at(&s, 5, 1500, 0x1810), Some(("/new".into(), 0x10)));
        assert_eq!(at(&s, 5, 1500, 0x1010), None);
        // Reused by a fork of pid 6: inherits 6's mappings as of its start.
        s.apply(&map(6, 0, 0x1000, 0x2000, 0, "/six"));
        s.apply(&map(6, 3000, 0x1000, 0x2000, 0, "/six-later"));
        s.apply(&Record::Process(Process {
            pid: 5,
            ppid: 6,
            comm: "p".into(),
            exe: String::new(),
            start_ns: Some(2000),
            ..Default::default()
        }));
        assert_eq!(at(&s, 5, 3500, 0x1010), Some(("/six".into(), 0x10)));
        assert_eq!(at(&s, 5, 1500, 0x1010), None);
    }

    #[test]
    fn mapping_recorded_just_after_the_event_is_used() {
        let mut s = AddressSpaces::new();
        s.apply(&map(1, 100, 0x1000, 0x2000, 0, "/lib/x"));
        assert_eq!(at(&s, 1, 99, 0x1010), Some(("/lib/x".into(), 0x10)));
        s.apply(&exec(1, 50));
        assert_eq!(at(&s, 1, 40, 0x1010), None);
    }
}
