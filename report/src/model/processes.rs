//! `recording.processes`: the processes that had events, with where they ran (host, mount and
//! pid namespaces, cgroup v2 path; SPEC "`--json` schema").
//!
//! The processes are those of the one process model ([`crate::incarnation`]): a `Process`
//! record starts a process (a reused pid is a new one, an exec stays in its process), the
//! aggregation marks the process of each event's incarnation. Only marked processes are
//! listed, in the order their `Process` records came. An event of a pid with no `Process`
//! record (a damaged file) lists the pid alone.

use crate::incarnation::Incarnations;

/// One process of `recording.processes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSummary {
    /// Process id.
    pub pid: u32,
    /// Parent process id (0 when unknown).
    pub ppid: u32,
    /// Command name when it made its events (its latest event's: after an exec, the new
    /// image's, as `functions[].processes` names it), else when first recorded.
    pub comm: String,
    /// The recording host (shared by every process of one recording).
    pub host: std::sync::Arc<str>,
    /// Mount namespace inode number, when recorded.
    pub mnt_ns: Option<u64>,
    /// Pid namespace inode number, when recorded.
    pub pid_ns: Option<u64>,
    /// cgroup v2 path, when recorded.
    pub cgroup: Option<String>,
}

/// The processes of `incarnations` that had events, made on `host`.
pub(crate) fn summaries(incarnations: &Incarnations, host: &str) -> Vec<ProcessSummary> {
    let host: std::sync::Arc<str> = host.into();
    incarnations
        .processes_with_events()
        .map(|(pid, p, comm)| ProcessSummary {
            pid,
            ppid: p.map_or(0, |p| p.ppid),
            // A pid no record described stays nameless here, as before its events named it.
            comm: p
                .map(|p| comm.unwrap_or(&p.comm).to_string())
                .unwrap_or_default(),
            host: host.clone(),
            mnt_ns: p.and_then(|p| p.mnt_ns),
            pid_ns: p.and_then(|p| p.pid_ns),
            cgroup: p.and_then(|p| p.cgroup.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use urec_format::{Event, EventKind, Process, ProcessChange, ProcessEvent, Record};

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
            goroutine: None,
            weight: 1,
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
        let mut list = Incarnations::new();
        for r in [
            process(10, "sh", None),
            process(11, "nginx", Some("/docker/abc")),
            process(11, "nginx", Some("/docker/abc")),
            event(11),
            event(11),
            process(11, "again", None),
            event(12),
        ] {
            list.apply(&r);
            if let Record::Event(e) = r {
                let id = list.at_or_new(e.pid, e.time_ns).id;
                list.mark_events(id);
            }
        }
        let got = summaries(&list, "h");
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

    #[test]
    fn a_process_is_named_as_it_was_when_it_made_its_events() {
        // Forked as `sh`, exec'd into `app` at 100, which made the events: the name
        // `functions[].processes` gives them is the one `recording.processes` shows.
        let mut list = Incarnations::new();
        list.apply(&process(10, "sh", None));
        list.apply(&Record::ProcessEvent(ProcessEvent {
            pid: 10,
            time_ns: 100,
            change: ProcessChange::Exec {
                comm: "app".into(),
                exe: "/app".into(),
            },
        }));
        let (_, comm) = list.of_event(10, 200);
        assert_eq!(list.comm_name(comm), "app");
        let got = summaries(&list, "h");
        assert_eq!((got[0].pid, got[0].comm.as_str()), (10, "app"));
    }
}
