//! A recording read back with the format's reader into plain collections, for exact checks.

use std::collections::HashMap;
use std::path::Path;

use urec_format::{
    Event, EventKind, Finish, Lost, Mapping, Probe, Process, Reader, Record, Stack, Writer,
};

/// What the tests check of a recording: every probe, event, stack, mapping and loss, and how
/// the recording finished.
#[derive(Default)]
pub struct Recording {
    pub probes: Vec<Probe>,
    pub events: Vec<Event>,
    /// By stack id.
    pub stacks: HashMap<u32, Stack>,
    pub mappings: Vec<Mapping>,
    pub processes: Vec<Process>,
    pub lost: Vec<Lost>,
    /// The last in-kernel snapshot of each probe (snapshots are cumulative).
    pub aggregates: HashMap<u32, urec_format::Aggregate>,
    /// A Finish record was written.
    pub finished: bool,
    /// The command's exit status, from the Finish record.
    pub workload_status: Option<i32>,
}

impl Recording {
    /// Reads the recording at `path`; any error fails the test.
    pub fn read(path: &Path) -> Recording {
        let mut reader = Reader::open(path).expect("opening the recording");
        let mut r = Recording::default();
        for rec in reader.records() {
            match rec.expect("reading a record") {
                Record::Event(e) => r.events.push(e),
                Record::Stack(s) => {
                    r.stacks.insert(s.id, s);
                }
                Record::Mapping(m) => r.mappings.push(m),
                Record::Process(p) => r.processes.push(p),
                Record::Lost(l) => r.lost.push(l),
                Record::Aggregate(a) => {
                    r.aggregates.insert(a.probe, a);
                }
                Record::Probe(p) => r.probes.push(p),
                Record::Finish(f) => {
                    r.finished = true;
                    r.workload_status = f.workload_status;
                }
                _ => {}
            }
        }
        r
    }

    /// The events of process `pid`, in file order.
    pub fn of_pid(&self, pid: u32) -> Vec<&Event> {
        self.events.iter().filter(|e| e.pid == pid).collect()
    }

    /// How many events of `kind` process `pid` has.
    pub fn count(&self, pid: u32, kind: EventKind) -> usize {
        self.of_pid(pid).iter().filter(|e| e.kind == kind).count()
    }

    /// Events lost, summed over every Lost record.
    pub fn total_lost(&self) -> u64 {
        self.lost.iter().map(|l| l.count).sum()
    }

    /// The pid of the one process that has events; fails if there are several (or none).
    pub fn only_pid(&self) -> u32 {
        let mut pids: Vec<u32> = self.events.iter().map(|e| e.pid).collect();
        pids.sort();
        pids.dedup();
        assert_eq!(pids.len(), 1, "events from pids {pids:?}");
        pids[0]
    }

    /// The stack of `event`, which must carry one (`what` says why it should).
    pub fn stack_of(&self, event: &Event, what: &str) -> &Stack {
        &self.stacks[&event.stack.expect(what)]
    }
}

/// Writes three 50 ns calls of probe 0 by pid 7 (entries on stack 0) and a clean finish, then
/// ends the file: the events of the small recordings the tests craft by hand around a few
/// probes, mappings and a stack of their own.
pub fn write_three_calls_and_finish<W: std::io::Write>(mut w: Writer<W>) {
    for i in 0..3u64 {
        for (kind, time, stack, latency) in [
            (EventKind::Entry, 1000 + i * 100, Some(0), None),
            (EventKind::Return, 1050 + i * 100, None, Some(50)),
        ] {
            w.write_event(&Event {
                goroutine: None,
                weight: 1,
                probe: 0,
                kind,
                pid: 7,
                tid: 7,
                cpu: 0,
                time_ns: time,
                stack,
                latency_ns: latency,
                args: Vec::new(),
            })
            .expect("write an event");
        }
    }
    w.write(&Record::Finish(Finish {
        attach_ns: 0,
        stop_ns: 10_000,
        workload_status: Some(0),
    }))
    .expect("write the finish record");
    w.finish().expect("finish the recording");
}
