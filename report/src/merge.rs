//! Several recordings in one report (`urec report -i A -i B`): each input is analyzed on its
//! own, then the reports are merged — probes matched by spec, stacks by their frames' names,
//! latency histograms added bucket by bucket — and every process keeps the host it ran on
//! ([`StackProcess::input`] indexes [`crate::Report::inputs`]).

use crate::aggregate::{FxMap, Recording};

/// One recording a report was made of (JSON `recording.inputs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Input {
    /// The file as given with `-i`.
    pub file: String,
    /// Host name of the recording machine.
    pub host: String,
    /// urec's command line that made it.
    pub command: String,
    /// From attach to stop.
    pub duration_ns: u64,
    /// Probe events stored in it.
    pub events: u64,
    /// Events lost while recording it.
    pub lost: u64,
}

impl Input {
    /// What `recording` says of its file (the file name is set by the caller).
    pub(crate) fn of(recording: &Recording) -> Self {
        Self {
            file: String::new(),
            host: recording.host.clone(),
            command: recording.command.clone(),
            duration_ns: recording.duration_ns,
            events: recording.events,
            lost: recording.lost(),
        }
    }
}

/// The calls of one process through one stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackProcess {
    /// Process id.
    pub pid: u32,
    /// Which of [`Report::inputs`] it was recorded in (so, its host).
    pub input: u32,
    /// Calls through the stack.
    pub calls: u64,
    /// Summed latency of its matched calls through the stack.
    pub total_ns: u64,
}

impl StackProcess {
    /// The per-pid counters of one input's stack, most calls first, then by pid.
    pub(crate) fn from_pids(pids: FxMap<u32, (u64, u64)>) -> Vec<Self> {
        let mut v: Vec<Self> = pids
            .into_iter()
            .map(|(pid, (calls, total_ns))| Self {
                pid,
                input: 0,
                calls,
                total_ns,
            })
            .collect();
        sort(&mut v);
        v
    }
}

fn sort(v: &mut [StackProcess]) {
    v.sort_by(|a, b| {
        b.calls
            .cmp(&a.calls)
            .then(a.input.cmp(&b.input))
            .then(a.pid.cmp(&b.pid))
    });
}
