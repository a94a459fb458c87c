//! Which probed binaries the traced processes actually mapped, so that a recording that got no
//! events from a binary can say why: the usual cause is a program that is not the one probed
//! (a pyenv or rbenv shim script on PATH that execs another copy of python; a program linked
//! statically instead of against the probed library). Without this the user sees only
//! "0 events".
//!
//! The tracker reads nothing itself: it observes the process table's one mapping intake
//! ([`ProcessTable::take_mapping`](crate::processes::ProcessTable), which owns it), so it sees
//! exactly the mappings the recording takes in, from `/proc` snapshots and side-band `mmap`
//! records alike, plus, with `-a`, the table's survey of processes it does not hold (see
//! [`ProcessTable::survey`](crate::processes::ProcessTable::survey)). The table also hands it
//! the other side-band records, in time order, after applying them: forks extend the set of
//! traced processes (the `-- COMMAND` and `-p` processes and their descendants, as the BPF
//! filter does), an exec's first mapping is the program it ran, and every mapping of a traced
//! process is compared with the probed binaries.
//!
//! A file is the probed binary when its path is the probed binary's canonical path (what the
//! kernel names a mapping by) or, when both are known, its device and inode are. Build ids are
//! no help here: a copy of the binary has the same one, and a copy is exactly the case to catch.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;

use urec_format::Mapping;

use crate::sideband::SidebandRecord;

/// How many of the programs the traced processes ran a warning names.
const MAX_NAMED: usize = 3;

/// One probed binary.
#[derive(Debug)]
struct Binary {
    /// Canonical path, as resolved.
    path: String,
    /// `st_dev` and inode of the file now; (0, 0) when it cannot be read.
    dev: u64,
    inode: u64,
    /// The probes placed in it.
    probes: Vec<u32>,
    /// A traced process (any process, with `-a`) mapped it.
    mapped: bool,
}

impl Binary {
    fn is(&self, path: &str, dev: u64, inode: u64) -> bool {
        path == self.path
            || (inode != 0 && self.inode != 0 && (dev, inode) == (self.dev, self.inode))
    }
}

/// The probed binaries and whether the traced processes mapped them; see the module docs.
/// The default tracks no binary (a process table nobody asked about mappings).
#[derive(Debug, Default)]
pub struct MappedBinaries {
    binaries: Vec<Binary>,
    /// Every process is traced (`-a`).
    all: bool,
    /// The traced processes alive now (unused with `all`).
    traced: HashSet<u32>,
    /// How many processes were traced in all.
    traced_total: usize,
    /// Traced processes that exec'd and whose new executable has not been mapped yet.
    exec_pending: HashSet<u32>,
    /// The programs the traced processes ran, distinct, in order.
    ran: Vec<String>,
}

impl MappedBinaries {
    /// Tracks the binaries of `probes` (probe id, canonical binary path). With `all`, every
    /// process counts as traced.
    pub fn new<'a>(probes: impl IntoIterator<Item = (u32, &'a str)>, all: bool) -> MappedBinaries {
        MappedBinaries::new_at(
            probes
                .into_iter()
                .map(|(id, path)| (id, path, std::path::Path::new(path))),
            all,
        )
    }

    /// [`MappedBinaries::new`] for binaries whose path as the processes name it (a path inside
    /// a container) is not where urec reaches them: (probe id, path, the file as urec opens it).
    pub fn new_at<'a>(
        probes: impl IntoIterator<Item = (u32, &'a str, &'a std::path::Path)>,
        all: bool,
    ) -> MappedBinaries {
        let mut binaries: Vec<Binary> = Vec::new();
        for (id, path, open) in probes {
            if let Some(b) = binaries.iter_mut().find(|b| b.path == path) {
                b.probes.push(id);
                continue;
            }
            let (dev, inode) = std::fs::metadata(open)
                .map(|m| (m.dev(), m.ino()))
                .unwrap_or((0, 0));
            binaries.push(Binary {
                path: path.to_string(),
                dev,
                inode,
                probes: vec![id],
                mapped: false,
            });
        }
        MappedBinaries {
            binaries,
            all,
            traced: HashSet::new(),
            traced_total: 0,
            exec_pending: HashSet::new(),
            ran: Vec::new(),
        }
    }

    /// Traces `pid` from now on (a `-p` process, or the command once forked). A `-p` process
    /// is traced before the table snapshots it, so that the snapshot's program and mappings
    /// count ([`MappedBinaries::running`], [`MappedBinaries::mapping`]); the command has not
    /// exec'd yet: its program comes with the exec.
    pub fn trace(&mut self, pid: u32) {
        self.add_traced(pid);
    }

    /// Whether every probed binary is known to be mapped: nothing more to look for.
    pub fn all_mapped(&self) -> bool {
        self.binaries.iter().all(|b| b.mapped)
    }

    /// `pid` was found running `exe` (a `/proc` snapshot: a `-p` process, or any process
    /// met before its side-band records).
    pub fn running(&mut self, pid: u32, exe: &str) {
        if !self.all && self.traced.contains(&pid) {
            self.ran(exe);
        }
    }

    fn add_traced(&mut self, pid: u32) {
        if self.traced.insert(pid) {
            self.traced_total += 1;
        }
    }

    /// Whether `pid` is traced now: under `-a` every process, else a `-p` process, the
    /// command, or a descendant whose fork has been followed.
    pub fn traces(&self, pid: u32) -> bool {
        self.all || self.traced.contains(&pid)
    }

    fn ran(&mut self, exe: &str) {
        if !exe.is_empty() && !self.ran.iter().any(|r| r == exe) {
            self.ran.push(exe.to_string());
        }
    }

    /// One mapping the table took in (or surveyed), in time order with the records given to
    /// [`MappedBinaries::observe`].
    pub fn mapping(&mut self, m: &Mapping) {
        if !self.traces(m.pid) {
            return;
        }
        // The kernel maps an exec's program first, then its interpreter.
        if self.exec_pending.remove(&m.pid) {
            self.ran(&m.path);
        }
        for b in &mut self.binaries {
            if b.is(&m.path, m.dev, m.inode) {
                b.mapped = true;
            }
        }
    }

    /// Follows one side-band record (in time order, after the table applied it). Mappings are
    /// not taken from here but from the table's intake ([`MappedBinaries::mapping`]).
    pub fn observe(&mut self, record: &SidebandRecord) {
        match record {
            SidebandRecord::Fork(t)
                if t.is_process() && !self.all && self.traced.contains(&t.ppid) =>
            {
                self.add_traced(t.pid);
            }
            SidebandRecord::Exit(t) if t.is_process() => {
                // Its pid may be reused by a process that is not traced.
                self.traced.remove(&t.pid);
                self.exec_pending.remove(&t.pid);
            }
            SidebandRecord::Comm {
                pid, exec: true, ..
            } if !self.all && self.traced.contains(pid) => {
                self.exec_pending.insert(*pid);
            }
            _ => {}
        }
    }

    /// One warning per probed binary that no traced process mapped and whose probes got no
    /// event (`events[id]` counts the events of probe `id`). A binary with events was mapped,
    /// whatever the side-band said.
    pub fn warnings(&self, events: &[u64]) -> Vec<String> {
        let mut out = Vec::new();
        for b in &self.binaries {
            let hit = b
                .probes
                .iter()
                .any(|&id| events.get(id as usize).is_some_and(|&n| n > 0));
            if b.mapped || hit {
                continue;
            }
            if self.all {
                out.push(format!(
                    "{} was never mapped by any process during the recording",
                    b.path
                ));
                continue;
            }
            let who = if self.traced_total == 1 {
                "the traced process"
            } else {
                "the traced processes"
            };
            let pronoun = if self.traced_total == 1 { "it" } else { "they" };
            let mut named: Vec<&str> = self
                .ran
                .iter()
                .take(MAX_NAMED)
                .map(String::as_str)
                .collect();
            let more = self.ran.len().saturating_sub(MAX_NAMED);
            let more_text;
            if more > 0 {
                more_text = format!("{more} more");
                named.push(&more_text);
            }
            if named.is_empty() {
                out.push(format!("{} was never mapped by {who}", b.path));
            } else {
                out.push(format!(
                    "{} was never mapped by {who} ({pronoun} ran {})",
                    b.path,
                    named.join(", ")
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processes::ProcessTable;
    use crate::sideband::{FileId, MmapRecord, TaskRecord};
    use urec_format::{Avma, BuildId, FileOffset};

    /// The tracker as a recording has it: owned by a process table (offline: no `/proc`),
    /// which hands it every record it applies and every mapping it takes in.
    struct Fed(ProcessTable);

    impl Fed {
        fn new(m: MappedBinaries) -> Fed {
            let mut t = ProcessTable::offline();
            t.observe_mapped(m);
            Fed(t)
        }

        fn observe(&mut self, r: &SidebandRecord) {
            self.0
                .apply(r, &mut |_| Ok(()))
                .expect("an offline table's emit cannot fail");
        }

        fn warnings(&self, events: &[u64]) -> Vec<String> {
            self.0.mapped().warnings(events)
        }
    }

    fn fork(pid: u32, ppid: u32) -> SidebandRecord {
        SidebandRecord::Fork(TaskRecord {
            pid,
            ppid,
            tid: pid,
            ptid: ppid,
            time_ns: 1,
        })
    }

    fn exec(pid: u32) -> SidebandRecord {
        SidebandRecord::Comm {
            pid,
            tid: pid,
            time_ns: 2,
            comm: "x".into(),
            exec: true,
        }
    }

    fn mmap(pid: u32, path: &str, file: FileId) -> SidebandRecord {
        SidebandRecord::Mmap(MmapRecord {
            pid,
            tid: pid,
            time_ns: 3,
            start: Avma(0x1000),
            len: 0x1000,
            pgoff: FileOffset(0),
            path: path.into(),
            file,
            prot: None,
        })
    }

    fn id() -> FileId {
        FileId::BuildId(BuildId(vec![1; 20]))
    }

    #[test]
    fn names_the_programs_the_traced_processes_ran() {
        let mut m = MappedBinaries::new(
            [(0, "/opt/py/bin/python3.11"), (1, "/lib/libc.so.6")],
            false,
        );
        m.trace(100);
        let mut m = Fed::new(m);
        for r in [
            exec(100),
            mmap(100, "/usr/bin/dash", id()),
            mmap(100, "/lib/libc.so.6", id()),
            fork(101, 100),
            exec(101),
            mmap(101, "/root/.pyenv/bin/python3.11", id()),
            // Another process maps the probed binary: not traced, does not count.
            mmap(7, "/opt/py/bin/python3.11", id()),
            exec(7),
        ] {
            m.observe(&r);
        }
        assert_eq!(
            m.warnings(&[0, 0]),
            vec![
                "/opt/py/bin/python3.11 was never mapped by the traced processes \
                 (they ran /usr/bin/dash, /root/.pyenv/bin/python3.11)"
            ]
        );
        // Events mean it was mapped, whatever the side-band said.
        assert!(m.warnings(&[5, 0]).is_empty());
        // A traced child mapping it later clears the warning.
        m.observe(&mmap(101, "/opt/py/bin/python3.11", id()));
        assert!(m.warnings(&[0, 0]).is_empty());
    }

    #[test]
    fn one_process_many_programs_and_dev_inode() {
        let mut m = MappedBinaries::new([(0, "/nonexistent/a")], false);
        m.binaries[0].dev = 8;
        m.binaries[0].inode = 42;
        m.trace(5);
        let mut m = Fed::new(m);
        for (i, p) in ["/bin/a", "/bin/b", "/bin/c", "/bin/d", "/bin/e"]
            .iter()
            .enumerate()
        {
            m.observe(&exec(5));
            m.observe(&mmap(5, p, id()));
            m.observe(&mmap(5, &format!("/lib/l{i}"), id()));
        }
        assert_eq!(
            m.warnings(&[0]),
            vec!["/nonexistent/a was never mapped by the traced process (it ran /bin/a, /bin/b, /bin/c, 2 more)"]
        );
        // Same file under another name (a bind mount, a container's path).
        m.observe(&mmap(
            5,
            "/elsewhere/a",
            FileId::DevInode { dev: 8, inode: 42 },
        ));
        assert!(m.warnings(&[0]).is_empty());
    }

    #[test]
    fn exited_pids_are_not_traced_when_reused() {
        let mut m = MappedBinaries::new([(0, "/x")], false);
        m.trace(5);
        let mut m = Fed::new(m);
        m.observe(&SidebandRecord::Exit(TaskRecord {
            pid: 5,
            ppid: 1,
            tid: 5,
            ptid: 1,
            time_ns: 9,
        }));
        m.observe(&mmap(5, "/x", id()));
        assert_eq!(m.warnings(&[0]).len(), 1);
    }

    #[test]
    fn all_processes() {
        let mut m = Fed::new(MappedBinaries::new([(0, "/x"), (1, "/y")], true));
        m.observe(&mmap(77, "/x", id()));
        assert_eq!(
            m.warnings(&[0, 0]),
            vec!["/y was never mapped by any process during the recording"]
        );
        assert!(m.warnings(&[0, 1]).is_empty());
    }
}
