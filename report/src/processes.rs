//! `recording.processes`: the processes that had events, with where they ran (host, mount and
//! pid namespaces, cgroup v2 path; SPEC "`--json` schema").
//!
//! Fed every record in file order ([`ProcessList::push`]): a `Process` record starts a process
//! (a pid seen again after an exit is a new one), an event marks the current process of its pid
//! as having events. Only marked processes are listed, in the order their `Process` records
//! came. An event of a pid with no `Process` record (a damaged file) lists the pid alone.

use std::collections::HashMap;

use urec_format::{Process, Record};

/// One process of `recording.processes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSummary {
    /// Process id.
    pub pid: u32,
    /// Parent process id (0 when unknown).
    pub ppid: u32,
    /// Command name when first recorded.
    pub comm: String,
    /// The recording host.
    pub host: String,
    /// Mount namespace inode number, when recorded.
    pub mnt_ns: Option<u64>,
    /// Pid namespace inode number, when recorded.
    pub pid_ns: Option<u64>,
    /// cgroup v2 path, when recorded.
    pub cgroup: Option<String>,
}

/// Collects [`ProcessSummary`]s; see the module docs.
#[derive(Debug, Default)]
pub struct ProcessList {
    host: String,
    /// Every process met, and whether it had events.
    seen: Vec<(Process, bool)>,
    /// The current process of each pid: an index into `seen`.
    current: HashMap<u32, usize>,
}

impl ProcessList {
    /// An empty list for a recording made on `host`.
    pub fn new(host: &str) -> ProcessList {
        ProcessList {
            host: host.to_string(),
            ..ProcessList::default()
        }
    }

    /// Takes in one record (only `Process` records and events matter).
    pub fn push(&mut self, record: &Record) {
        match record {
            Record::Process(p) => {
                // The same description again (no writer does it) is not a new process.
                if let Some(&i) = self.current.get(&p.pid) {
                    if self.seen[i].0 == *p {
                        return;
                    }
                }
                self.current.insert(p.pid, self.seen.len());
                self.seen.push((p.clone(), false));
            }
            Record::Event(e) => {
                let i = match self.current.get(&e.pid) {
                    Some(&i) => i,
                    None => {
                        let bare = Process {
                            pid: e.pid,
                            ..Process::default()
                        };
                        self.current.insert(e.pid, self.seen.len());
                        self.seen.push((bare, false));
                        self.seen.len() - 1
                    }
                };
                self.seen[i].1 = true;
            }
            _ => {}
        }
    }

    /// The processes that had events.
    pub fn finish(self) -> Vec<ProcessSummary> {
        let host = self.host;
        self.seen
            .into_iter()
            .filter(|(_, had_events)| *had_events)
            .map(|(p, _)| ProcessSummary {
                pid: p.pid,
                ppid: p.ppid,
                comm: p.comm,
                host: host.clone(),
                mnt_ns: p.mnt_ns,
                pid_ns: p.pid_ns,
                cgroup: p.cgroup,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use urec_format::{Event, EventKind};

    fn process(pid: u32, comm: &str, cgroup: Option<&str>) -> Record {
        Record::Process(Process {
            pid,
            ppid: 1,
            comm: comm.into(),
            mnt_ns: cgroup.map(|_| 4026532201),
            pid_ns: cgroup.map(|_| 4026532202),
            cgroup: cgroup.map(str::to_string),
            ..Process::default()
        })
    }

    fn event(pid: u32) -> Record {
        Record::Event(Event {
            probe: 0,
            pid,
            tid: pid,
            cpu: 0,
            time_ns: 1,
            kind: EventKind::Entry,
            stack: None,
            latency_ns: None,
            args: Vec::new(),
        })
    }

    #[test]
    fn only_processes_with_events() {
        let mut list = ProcessList::new("h");
        for r in [
            process(10, "sh", None),
            process(11, "nginx", Some("/docker/abc")),
            process(11, "nginx", Some("/docker/abc")),
            event(11),
            event(11),
            process(11, "again", None),
            event(12),
        ] {
            list.push(&r);
        }
        let got = list.finish();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            ProcessSummary {
                pid: 11,
                ppid: 1,
                comm: "nginx".into(),
                host: "h".into(),
                mnt_ns: Some(4026532201),
                pid_ns: Some(4026532202),
                cgroup: Some("/docker/abc".into()),
            }
        );
        assert_eq!(
            (got[1].pid, got[1].ppid, got[1].cgroup.as_deref()),
            (12, 0, None)
        );
    }
}
