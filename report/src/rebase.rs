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
//! different rings), so nothing here assumes sorted input, and records and queries may
//! interleave freely. Both stay cheap whatever the file holds: a query costs O(log² n) in the
//! process's n mappings, and taking in a mapping O(log² n) amortized (see [`Mappings`]). A scan
//! of "every mapping that could reach the address" would be quadratic for a file with one
//! mapping spanning the whole address space, and rebuilding a sorted index after each new
//! mapping quadratic for one that interleaves mappings and events.
//!
//! Which process an address belongs to, and when its address space began, is the
//! [`Incarnations`] model's answer, shared with aggregation and `script`.
//!
use std::cell::Cell;
use std::collections::HashMap;

use urec_format::{Avma, BuildId, FileOffset, Mapping, Record};

use crate::incarnation::{Incarnations, Origin};
use crate::interner::Interner;

/// How many parent links a lookup follows for forked children before giving up (a guard
/// against pid reuse making a cycle).
const MAX_PARENT_HOPS: usize = 64;

/// Every process's executable mappings over time, with the process incarnations that decide
/// which of them are in force, built from the recording's `Process`, `ProcessEvent` (an exec
/// drops earlier mappings from its time on) and `Mapping` records.
#[derive(Default)]
pub struct AddressSpaces {
    incarnations: Incarnations,
    pids: HashMap<u32, Mappings>,
    /// Interned paths: mappings of the same file in many processes share one string.
    paths: Interner<Box<str>>,
    /// Interned build ids, likewise.
    build_ids: Interner<BuildId>,
    /// File order of mappings, to break ties between mappings recorded at the same time.
    seq: u64,
    /// Index cells and entries looked at by queries so far (see [`AddressSpaces::work`]).
    work: Cell<u64>,
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

impl Entry {
    fn order(&self) -> (u64, u64) {
        (self.time_ns, self.seq)
    }
}

/// Mappings taken in below this many are scanned directly; most processes never get further.
const RECENT: usize = 32;

/// One process's mappings, indexed by the logarithmic method: the newest few in a small
/// unsorted list, the rest in immutable [`Block`]s of 32·2^k mappings, at most one per k.
/// A full list becomes a block, merged with the blocks of the sizes it collides with (as a
/// binary counter carries), so each mapping is re-indexed O(log n) times in all and a query
/// asks O(log n) blocks. "The latest covering mapping" is decomposable (the best of each
/// block's best), which is what makes this exact.
#[derive(Default)]
struct Mappings {
    recent: Vec<Entry>,
    blocks: Vec<Option<Block>>,
}

/// A segment tree over the elementary address intervals of its mappings: each mapping is
/// stored at the O(log n) nodes that exactly cover its range, each node's mappings sorted by
/// (time, file order). The mappings covering an address are then those of the nodes on the
/// path from its leaf to the root, and the one in force at a time is a binary search away in
/// each, however many mappings overlap elsewhere.
struct Block {
    entries: Vec<Entry>,
    /// Sorted distinct starts and ends; leaf i is `[coords[i], coords[i + 1])`.
    coords: Vec<u64>,
    /// Leaves rounded up to a power of two; node 1 is the root, node `size + i` leaf i.
    size: usize,
    /// Node n's mappings are `members[first[n]..first[n + 1]]` (indices into `entries`).
    first: Vec<u32>,
    members: Vec<u32>,
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

/// The candidates of a query: the latest covering mapping recorded at or before the query
/// time, and the earliest recorded after it, both within the query's exec epoch.
#[derive(Default)]
struct Best<'a> {
    before: Option<&'a Entry>,
    after: Option<&'a Entry>,
}

/// The time range whose mappings a query may use: one incarnation's life.
#[derive(Clone, Copy)]
struct Epoch {
    time: u64,
    lo: u64,
    end: Option<u64>,
}

impl<'a> Best<'a> {
    fn offer(&mut self, e: &'a Entry, q: Epoch) {
        if e.time_ns < q.lo || q.end.is_some_and(|end| e.time_ns >= end) {
            return;
        }
        if e.time_ns <= q.time {
            if self.before.is_none_or(|b| e.order() > b.order()) {
                self.before = Some(e);
            }
        } else if self.after.is_none_or(|a| e.order() < a.order()) {
            self.after = Some(e);
        }
    }
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
            Record::Mapping(m) => self.add_mapping(m),
            Record::Process(_) | Record::ProcessEvent(_) | Record::Event(_) => {
                self.incarnations.apply(record)
            }
            _ => {}
        }
    }

    /// The process incarnations these address spaces belong to.
    pub fn incarnations(&self) -> &Incarnations {
        &self.incarnations
    }

    /// The process incarnations, for lookups that make up an incarnation for an undescribed
    /// pid ([`Incarnations::at_or_new`]).
    pub fn incarnations_mut(&mut self) -> &mut Incarnations {
        &mut self.incarnations
    }

    /// Index cells and mappings that lookups have examined so far: a measure of work that does
    /// not depend on the machine, for tests that rebasing stays near-linear.
    #[doc(hidden)]
    pub fn work(&self) -> u64 {
        self.work.get()
    }

    fn add_mapping(&mut self, m: &Mapping) {
        if m.end.0 <= m.start.0 {
            return; // empty or inverted: maps nothing
        }
        let path = self.paths.id(m.path.as_str());
        let build_id = match &m.build_id {
            Some(b) => self.build_ids.id(b),
            None => u32::MAX,
        };
        self.seq += 1;
        self.pids.entry(m.pid).or_default().push(Entry {
            start: m.start.0,
            end: m.end.0,
            offset: m.offset.0,
            time_ns: m.time_ns,
            seq: self.seq,
            path,
            build_id,
        });
    }

    /// The mapping of `pid` that covered `addr` at `time_ns`, and the file offset of `addr`.
    ///
    /// In force is the latest mapping of the process's incarnation at that time that covers
    /// the address and was recorded at or before it; failing that, the earliest recorded
    /// after it in the same incarnation; failing that, for a process still running the image it
    /// was forked with, its parent's, as they were when it was forked (transitively).
    ///
    /// `None` when nothing explains the address: callers show such frames as `[unknown]`.
    pub fn lookup(&self, pid: u32, time_ns: u64, addr: Avma) -> Option<Mapped<'_>> {
        let mut pid = pid;
        let mut time_ns = time_ns;
        for _ in 0..=MAX_PARENT_HOPS {
            let incarnation = self.incarnations.at(pid, time_ns);
            let epoch = Epoch {
                time: time_ns,
                lo: incarnation.map_or(0, |i| i.since_ns),
                end: incarnation.and_then(|i| self.incarnations.end_ns(i)),
            };
            if let Some(e) = self
                .pids
                .get(&pid)
                .and_then(|m| m.find(epoch, addr.0, &self.work))
            {
                return Some(self.mapped(e, addr));
            }
            // Only a process still running the image it was forked with shares its parent's
            // mappings, as they were when it was forked.
            let (ppid, start) = match incarnation?.origin {
                Origin::First { ppid, start_ns } => (ppid, start_ns),
                Origin::Forked { ppid, start_ns } => (ppid, Some(start_ns)),
                Origin::Exec => return None,
            };
            if ppid == 0 || ppid == pid {
                return None;
            }
            if let Some(start) = start {
                time_ns = time_ns.min(start);
            }
            pid = ppid;
        }
        None
    }

    fn mapped(&self, e: &Entry, addr: Avma) -> Mapped<'_> {
        Mapped {
            path: &self.paths[e.path as usize],
            build_id: self.build_ids.get(e.build_id as usize),
            offset: addr.file_offset_in(Avma(e.start), FileOffset(e.offset)),
        }
    }
}

impl Mappings {
    fn push(&mut self, e: Entry) {
        self.recent.push(e);
        if self.recent.len() < RECENT {
            return;
        }
        let mut merged = std::mem::take(&mut self.recent);
        let mut k = 0;
        while let Some(slot) = self.blocks.get_mut(k) {
            match slot.take() {
                Some(block) => merged.extend(block.entries),
                None => break,
            }
            k += 1;
        }
        if k == self.blocks.len() {
            self.blocks.push(None);
        }
        self.blocks[k] = Some(Block::build(merged));
    }

    fn find(&self, q: Epoch, addr: u64, work: &Cell<u64>) -> Option<&Entry> {
        let mut best = Best::default();
        work.set(work.get() + self.recent.len() as u64);
        for e in &self.recent {
            if e.start <= addr && addr < e.end {
                best.offer(e, q);
            }
        }
        for block in self.blocks.iter().flatten() {
            block.find(q, addr, &mut best, work);
        }
        best.before.or(best.after)
    }
}

impl Block {
    fn build(entries: Vec<Entry>) -> Self {
        let mut coords: Vec<u64> = entries.iter().flat_map(|e| [e.start, e.end]).collect();
        coords.sort_unstable();
        coords.dedup();
        let leaves = coords.len().saturating_sub(1).max(1);
        let size = leaves.next_power_of_two();
        // (node, entry) pairs: each entry at the nodes covering its leaves exactly.
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let leaf = |x: u64| coords.partition_point(|&c| c < x);
            let (mut l, mut r) = (leaf(e.start) + size, leaf(e.end) + size);
            while l < r {
                if l & 1 == 1 {
                    pairs.push((l as u32, i as u32));
                    l += 1;
                }
                if r & 1 == 1 {
                    r -= 1;
                    pairs.push((r as u32, i as u32));
                }
                l >>= 1;
                r >>= 1;
            }
        }
        pairs.sort_unstable_by_key(|&(node, i)| (node, entries[i as usize].order()));
        let mut first = vec![0u32; 2 * size + 1];
        for &(node, _) in &pairs {
            first[node as usize + 1] += 1;
        }
        for n in 1..first.len() {
            first[n] += first[n - 1];
        }
        let members = pairs.into_iter().map(|(_, i)| i).collect();
        Block {
            entries,
            coords,
            size,
            first,
            members,
        }
    }

    fn find<'a>(&'a self, q: Epoch, addr: u64, best: &mut Best<'a>, work: &Cell<u64>) {
        let leaf = self.coords.partition_point(|&c| c <= addr);
        if leaf == 0 || leaf >= self.coords.len() {
            return; // below the first start or at or above the last end
        }
        let mut node = leaf - 1 + self.size;
        while node >= 1 {
            let ids = &self.members[self.first[node] as usize..self.first[node + 1] as usize];
            if !ids.is_empty() {
                work.set(work.get() + 1 + u64::from(ids.len().ilog2()));
                let entry = |i: &u32| &self.entries[*i as usize];
                // Sorted by time: the last at or before the query time, the first after it.
                let split = ids.partition_point(|i| entry(i).time_ns <= q.time);
                if let Some(i) = split.checked_sub(1).map(|s| &ids[s]) {
                    best.offer(entry(i), q);
                }
                if let Some(i) = ids.get(split) {
                    best.offer(entry(i), q);
                }
            }
            node >>= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use urec_format::{Process, ProcessChange, ProcessEvent};

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
