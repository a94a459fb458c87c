//! Which process an event belongs to: the one model of process *incarnations* that rebasing,
//! aggregation and `script` share.
//!
//! A pid is not a process. The same pid may exec a new program (same pid, new address space,
//! new name) or be reused by a new process after the first exits, and a process may rename
//! itself (`prctl(PR_SET_NAME)`). An *incarnation* is one pid running one image: it begins at
//! the pid's first [`Process`](urec_format::Process) record, at each exec, and at a `Process`
//! record whose start time is later than the pid's latest (a reused pid); it ends at the next
//! one or at the process's exit. Its command name may change along the way.
//!
//! A *process* is what a `Process` record describes (pid, parent, namespaces, cgroup): one or
//! more incarnations, since an exec keeps the process and changes its image. A reused pid is a
//! new process.
//!
//! Records arrive in file order, which is not time order (side-band and events come from
//! different rings), so every question is asked "at time T": the incarnation in force at an
//! event's time, the name it had then. Per pid, incarnations and names are kept in ordered maps
//! keyed by time, so each record and each question costs a logarithm whatever the order.

use std::collections::BTreeMap;

use urec_format::{Process, ProcessChange, Record};

use crate::interner::Interner;

/// An incarnation's id: dense, in the order incarnations were first seen.
pub type IncarnationId = u32;

/// How an incarnation began, which decides whose mappings its addresses may fall back on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The first incarnation seen of its pid, forked by `ppid` (0 when unknown). Until it maps
    /// its own files it runs its parent's image, as the parent had it mapped at `start_ns`.
    First {
        /// The parent, 0 when unknown.
        ppid: u32,
        /// When it started, if known.
        start_ns: Option<u64>,
    },
    /// A reused pid: a new process forked by `ppid` at `start_ns`.
    Forked {
        /// The parent.
        ppid: u32,
        /// When it started.
        start_ns: u64,
    },
    /// An `execve`: nothing of the earlier image survives.
    Exec,
}

/// One incarnation of a pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incarnation {
    /// Its id.
    pub id: IncarnationId,
    /// Its pid.
    pub pid: u32,
    /// When it began (0 for a pid's first incarnation: everything before belongs to it).
    pub since_ns: u64,
    /// How it began.
    pub origin: Origin,
    /// It exited, exec'd or its pid was reused: its calls still waiting for a return never
    /// get one.
    pub ended: bool,
    /// The process it is an image of (see [`Incarnations::process`]).
    pub process: u32,
}

/// A process as its `Process` record describes it (boxed, and none for a pid only events
/// named: a file of events from 240,000 undescribed pids must not pay a record apiece), and
/// whether any event came from it.
struct ProcessInfo {
    pid: u32,
    record: Option<Box<Process>>,
    had_events: bool,
    /// The time and command name of its latest event: the name it had when it made its
    /// events (after an exec, the new image's), which `recording.processes` shows.
    last_event: Option<(u64, u32)>,
}

/// Every pid's incarnations and names over time.
#[derive(Default)]
pub struct Incarnations {
    all: Vec<Incarnation>,
    processes: Vec<ProcessInfo>,
    /// Fx-hashed: asked once per event.
    pids: urec_format::hash::FxHashMap<u32, PidLife>,
    comms: Interner<String>,
    /// The latest time any record named; a `Process` record without a start time that renames
    /// a known pid does so from then on.
    latest_ns: u64,
}

#[derive(Default)]
struct PidLife {
    /// Start time → incarnation. The first incarnation is keyed 0.
    incarnations: TimeMap,
    /// Time → command name id, from each incarnation's start and each rename.
    comms: TimeMap,
    /// Start time of the latest process seen with this pid (reuse detection).
    start_ns: Option<u64>,
    /// The pid's only incarnation was made up for events of a pid no record described.
    anonymous: bool,
}

/// Time → id, ordered: one entry inline (most pids have one image and one name all their life,
/// and a tree node per pid was most of the memory of a recording of 60,000 short processes),
/// a tree from the second on.
#[derive(Default)]
struct TimeMap {
    one: Option<(u64, u32)>,
    // Boxed on purpose: 8 bytes per pid instead of the map's 24, for the many that never
    // need it.
    #[allow(clippy::box_collection)]
    many: Option<Box<BTreeMap<u64, u32>>>,
}

impl TimeMap {
    fn is_empty(&self) -> bool {
        self.one.is_none() && self.many.is_none()
    }

    fn get(&self, key: u64) -> Option<u32> {
        match (&self.one, &self.many) {
            (Some((k, v)), _) => (*k == key).then_some(*v),
            (None, Some(m)) => m.get(&key).copied(),
            (None, None) => None,
        }
    }

    /// Sets `key` to `value`; the value it had.
    fn insert(&mut self, key: u64, value: u32) -> Option<u32> {
        if let Some(m) = &mut self.many {
            return m.insert(key, value);
        }
        match self.one {
            None => {
                self.one = Some((key, value));
                None
            }
            Some((k, v)) if k == key => {
                self.one = Some((key, value));
                Some(v)
            }
            Some((k, v)) => {
                self.one = None;
                let mut m = BTreeMap::new();
                m.insert(k, v);
                m.insert(key, value);
                self.many = Some(Box::new(m));
                None
            }
        }
    }

    /// The entry in force at `t`: the last at or before it, else the first.
    fn at(&self, t: u64) -> Option<u32> {
        match (&self.one, &self.many) {
            (Some((_, v)), _) => Some(*v),
            (None, Some(m)) => m
                .range(..=t)
                .next_back()
                .or_else(|| m.iter().next())
                .map(|(_, &v)| v),
            (None, None) => None,
        }
    }

    /// The last entry strictly before `t`.
    fn before(&self, t: u64) -> Option<u32> {
        match (&self.one, &self.many) {
            (Some((k, v)), _) => (*k < t).then_some(*v),
            (None, Some(m)) => m.range(..t).next_back().map(|(_, &v)| v),
            (None, None) => None,
        }
    }

    /// The key of the first entry strictly after `t`.
    fn next_after(&self, t: u64) -> Option<u64> {
        match (&self.one, &self.many) {
            (Some((k, _)), _) => (*k > t).then_some(*k),
            (None, Some(m)) => m.range(t.saturating_add(1)..).next().map(|(&k, _)| k),
            (None, None) => None,
        }
    }
}

impl Incarnations {
    /// No process known.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in one record; only `Process` and `ProcessEvent` records change anything, and
    /// events advance the clock used for renames without a time.
    pub fn apply(&mut self, record: &Record) {
        match record {
            Record::Process(p) => {
                let comm = self.comms.id(&p.comm);
                let known = self.pids.get(&p.pid).map(|l| (l.start_ns, l.anonymous));
                match known {
                    None => {
                        self.new_process(p.pid, Some(p.clone()));
                        self.begin(
                            p.pid,
                            0,
                            Origin::First {
                                ppid: p.ppid,
                                start_ns: p.start_ns,
                            },
                            comm,
                        );
                        if let Some(l) = self.pids.get_mut(&p.pid) {
                            l.start_ns = p.start_ns;
                        }
                    }
                    Some((_, true)) => {
                        // Events came first; this is the process they belong to.
                        if let Some(l) = self.pids.get_mut(&p.pid) {
                            l.anonymous = false;
                            l.start_ns = p.start_ns;
                            l.comms.insert(0, comm);
                            if let Some(id) = l.incarnations.get(0) {
                                let i = &mut self.all[id as usize];
                                i.origin = Origin::First {
                                    ppid: p.ppid,
                                    start_ns: p.start_ns,
                                };
                                if let Some(info) = self.processes.get_mut(i.process as usize) {
                                    info.record = Some(Box::new(p.clone()));
                                }
                            }
                        }
                    }
                    Some((Some(old), _)) if p.start_ns.is_some_and(|new| new > old) => {
                        let start = p.start_ns.unwrap_or(old);
                        self.new_process(p.pid, Some(p.clone()));
                        self.begin(
                            p.pid,
                            start,
                            Origin::Forked {
                                ppid: p.ppid,
                                start_ns: start,
                            },
                            comm,
                        );
                        if let Some(l) = self.pids.get_mut(&p.pid) {
                            l.start_ns = Some(start);
                        }
                    }
                    Some(_) => {
                        // The same process described again: at most a new name, from the
                        // latest time seen (the record carries none). No new incarnation: a
                        // file of one Process record repeated must not cost one apiece.
                        let at = p.start_ns.unwrap_or(self.latest_ns);
                        if let Some(l) = self.pids.get_mut(&p.pid) {
                            let current = l.comms.at(at);
                            if current != Some(comm) {
                                l.comms.insert(at, comm);
                            }
                            if l.start_ns.is_none() {
                                l.start_ns = p.start_ns;
                            }
                        }
                    }
                }
            }
            Record::ProcessEvent(e) => {
                self.latest_ns = self.latest_ns.max(e.time_ns);
                match &e.change {
                    ProcessChange::Exec { comm, .. } => {
                        let comm = self.comms.id(comm);
                        self.begin(e.pid, e.time_ns, Origin::Exec, comm);
                    }
                    ProcessChange::Comm(comm) => {
                        let comm = self.comms.id(comm);
                        self.life(e.pid).comms.insert(e.time_ns, comm);
                    }
                    ProcessChange::Exit => {
                        let id = self.at_or_new(e.pid, e.time_ns).id;
                        self.all[id as usize].ended = true;
                    }
                }
            }
            Record::Event(e) => self.advance(e.time_ns),
            _ => {}
        }
    }

    /// Notes that the recording reached `time_ns` (an event's time): a `Process` record without
    /// a start time that renames a known pid does so from the latest such time.
    pub fn advance(&mut self, time_ns: u64) {
        self.latest_ns = self.latest_ns.max(time_ns);
    }

    fn life(&mut self, pid: u32) -> &mut PidLife {
        self.pids.entry(pid).or_default()
    }

    /// Starts an incarnation of `pid` at `since_ns`; the one before it (in time) has ended.
    fn begin(&mut self, pid: u32, since_ns: u64, origin: Origin, comm: u32) {
        if origin == Origin::Exec && !self.pids.contains_key(&pid) {
            // An exec of a pid not described yet: the image before it is a process of its
            // own, described later or never.
            self.anonymous(pid);
        }
        let id = self.all.len() as IncarnationId;
        let newest_process = self.processes.len().saturating_sub(1) as u32;
        let life = self.pids.entry(pid).or_default();
        // The first incarnation of a pid covers all time before the next one.
        let key = if life.incarnations.is_empty() {
            0
        } else {
            since_ns
        };
        // An exec stays in the process it happens in; anything else begins the process just
        // described (`new_process` came first).
        let process = match origin {
            Origin::Exec => life
                .incarnations
                .at(key)
                .map_or(newest_process, |prev| self.all[prev as usize].process),
            _ => newest_process,
        };
        if key > 0 {
            if let Some(prev) = life.incarnations.before(key) {
                self.all[prev as usize].ended = true;
            }
        }
        let ended = life.incarnations.next_after(key).is_some();
        let replaced = life.incarnations.insert(key, id);
        life.comms.insert(key, comm);
        self.all.push(Incarnation {
            id,
            pid,
            since_ns: key,
            origin,
            ended,
            process,
        });
        if let Some(old) = replaced {
            // Two beginnings at one time: an exec wins over a reuse, so mappings of the
            // earlier image never leak into it.
            if self.all[old as usize].origin == Origin::Exec {
                life.incarnations.insert(key, old);
                self.all.pop();
            }
        }
    }

    fn new_process(&mut self, pid: u32, record: Option<Process>) {
        self.processes.push(ProcessInfo {
            pid,
            record: record.map(Box::new),
            had_events: false,
            last_event: None,
        });
    }

    fn anonymous(&mut self, pid: u32) -> Incarnation {
        let comm = self.comms.id("[unknown]");
        self.new_process(pid, None);
        self.begin(
            pid,
            0,
            Origin::First {
                ppid: 0,
                start_ns: None,
            },
            comm,
        );
        self.life(pid).anonymous = true;
        self.all[self.all.len() - 1]
    }

    /// The incarnation of `pid` in force at `time_ns`, if the pid was ever described. Times
    /// before its first incarnation belong to that one.
    pub fn at(&self, pid: u32, time_ns: u64) -> Option<&Incarnation> {
        let id = self.pids.get(&pid)?.incarnations.at(time_ns)?;
        self.all.get(id as usize)
    }

    /// [`Incarnations::at`], making up one anonymous incarnation named `[unknown]` for a pid no
    /// record described (its events still count, under that name).
    pub fn at_or_new(&mut self, pid: u32, time_ns: u64) -> Incarnation {
        match self.at(pid, time_ns) {
            Some(i) => *i,
            None => self.anonymous(pid),
        }
    }

    /// The incarnation of `pid` in force at `time_ns` and its command name id then, made up
    /// as [`Incarnations::at_or_new`] does, its process marked as having events: what every
    /// event asks, in one lookup (most pids have one incarnation and one name).
    pub fn of_event(&mut self, pid: u32, time_ns: u64) -> (IncarnationId, u32) {
        let found = self
            .pids
            .get(&pid)
            .and_then(|life| Some((life.incarnations.at(time_ns)?, life.comms.at(time_ns)?)));
        let (id, comm) = match found {
            Some(f) => f,
            None => {
                let id = self.at_or_new(pid, time_ns).id;
                (id, self.comm_at(pid, time_ns))
            }
        };
        self.mark_event(id, time_ns, comm);
        (id, comm)
    }

    /// The time the incarnation after `incarnation` begins, if any: where its mappings stop.
    pub fn end_ns(&self, incarnation: &Incarnation) -> Option<u64> {
        self.pids
            .get(&incarnation.pid)?
            .incarnations
            .next_after(incarnation.since_ns)
    }

    /// The command name id of `pid` at `time_ns` (see [`Incarnations::comm_name`]).
    pub fn comm_at(&self, pid: u32, time_ns: u64) -> u32 {
        self.pids
            .get(&pid)
            .and_then(|l| l.comms.at(time_ns))
            .unwrap_or(u32::MAX)
    }

    /// The name behind a command name id (`[unknown]` for one never given out).
    pub fn comm_name(&self, comm: u32) -> &str {
        self.comms.name(comm)
    }

    /// The id of a command name, for filters that compare names as ids.
    pub fn comm_id(&mut self, comm: &str) -> u32 {
        self.comms.id(comm)
    }

    /// Notes that incarnation `id` had an event: its process is one of
    /// [`Incarnations::processes_with_events`].
    pub fn mark_events(&mut self, id: IncarnationId) {
        if let Some(i) = self.all.get(id as usize) {
            if let Some(p) = self.processes.get_mut(i.process as usize) {
                p.had_events = true;
            }
        }
    }

    /// [`Incarnations::mark_events`] for an event at `time_ns` made under command name `comm`.
    fn mark_event(&mut self, id: IncarnationId, time_ns: u64, comm: u32) {
        if let Some(i) = self.all.get(id as usize) {
            if let Some(p) = self.processes.get_mut(i.process as usize) {
                p.had_events = true;
                if p.last_event.is_none_or(|(t, _)| time_ns >= t) {
                    p.last_event = Some((time_ns, comm));
                }
            }
        }
    }

    /// The processes that had events, in the order they were first described: each pid with
    /// its `Process` record (none for a pid no record described) and the command name it had
    /// at its latest event (none when no event said).
    pub fn processes_with_events(
        &self,
    ) -> impl Iterator<Item = (u32, Option<&Process>, Option<&str>)> {
        self.processes.iter().filter(|p| p.had_events).map(|p| {
            let comm = p.last_event.map(|(_, c)| self.comms.name(c));
            (p.pid, p.record.as_deref(), comm)
        })
    }

    /// Whether incarnation `id` has ended.
    pub fn ended(&self, id: IncarnationId) -> bool {
        self.all.get(id as usize).is_some_and(|i| i.ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use urec_format::{Process, ProcessEvent};

    fn process(pid: u32, ppid: u32, comm: &str, start: Option<u64>) -> Record {
        Record::Process(Process {
            pid,
            ppid,
            comm: comm.into(),
            exe: String::new(),
            start_ns: start,
            ..Process::default()
        })
    }

    fn change(pid: u32, time_ns: u64, change: ProcessChange) -> Record {
        Record::ProcessEvent(ProcessEvent {
            pid,
            time_ns,
            change,
        })
    }

    fn name(m: &Incarnations, pid: u32, t: u64) -> &str {
        m.comm_name(m.comm_at(pid, t))
    }

    #[test]
    fn exec_rename_exit_and_reuse_out_of_order() {
        let mut m = Incarnations::new();
        // Applied out of time order on purpose.
        m.apply(&change(
            1,
            300,
            ProcessChange::Exec {
                comm: "b".into(),
                exe: "/b".into(),
            },
        ));
        m.apply(&process(1, 0, "a", Some(100)));
        m.apply(&change(1, 200, ProcessChange::Comm("a2".into())));
        m.apply(&change(1, 400, ProcessChange::Exit));
        let first = *m.at(1, 50).unwrap();
        assert_eq!(m.at(1, 250).unwrap().id, first.id);
        assert!(first.ended, "the exec ended it");
        let exec = *m.at(1, 350).unwrap();
        assert_ne!(exec.id, first.id);
        assert_eq!(exec.origin, Origin::Exec);
        assert!(exec.ended, "exited");
        assert_eq!(m.end_ns(&first), Some(300));
        assert_eq!(
            (name(&m, 1, 150), name(&m, 1, 250), name(&m, 1, 350)),
            ("a", "a2", "b")
        );
        // A reused pid.
        m.apply(&process(1, 7, "c", Some(1000)));
        let reused = *m.at(1, 1500).unwrap();
        assert_eq!(
            reused.origin,
            Origin::Forked {
                ppid: 7,
                start_ns: 1000
            }
        );
        assert!(!reused.ended);
        assert_eq!(name(&m, 1, 1500), "c");
    }

    #[test]
    fn an_exec_stays_in_its_process_and_a_reuse_is_a_new_one() {
        let mut m = Incarnations::new();
        m.apply(&process(3, 1, "sh", Some(10)));
        m.apply(&change(
            3,
            20,
            ProcessChange::Exec {
                comm: "app".into(),
                exe: "/app".into(),
            },
        ));
        let exec = *m.at(3, 30).unwrap();
        m.mark_events(exec.id);
        assert_eq!(m.processes_with_events().count(), 1);
        assert_eq!(
            m.processes_with_events().next().unwrap().1.unwrap().comm,
            "sh"
        );
        m.apply(&process(3, 1, "other", Some(100)));
        let reused = *m.at(3, 150).unwrap();
        assert_ne!(reused.process, exec.process);
        let anon = m.at_or_new(9, 5);
        m.mark_events(anon.id);
        let pids: Vec<u32> = m.processes_with_events().map(|(pid, _, _)| pid).collect();
        assert_eq!(pids, [3, 9]);
    }

    #[test]
    fn repeated_description_is_one_incarnation() {
        let mut m = Incarnations::new();
        for _ in 0..1000 {
            m.apply(&process(5, 1, "p", Some(10)));
        }
        assert_eq!(m.all.len(), 1);
    }

    #[test]
    fn undescribed_pid_gets_one_anonymous_incarnation_adopted_later() {
        let mut m = Incarnations::new();
        let a = m.at_or_new(9, 100);
        assert_eq!(m.at_or_new(9, 200).id, a.id);
        assert_eq!(name(&m, 9, 100), "[unknown]");
        m.apply(&process(9, 1, "late", Some(50)));
        assert_eq!(m.at(9, 100).unwrap().id, a.id);
        assert_eq!(name(&m, 9, 100), "late");
    }
}
