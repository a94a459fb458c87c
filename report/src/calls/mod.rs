//! The streaming call core: what `report` ([`crate::aggregate`]), `script` and `--perfetto`
//! ([`crate::output::script`], [`crate::output::perfetto`]) ask of every event, answered by
//! one rule each, so the three cannot disagree about which events and calls count:
//!
//! - *Which probe, and is it selected?* `--probe` ([`filter::answers_to`]), decided once per
//!   probe record.
//! - *Which process?* The incarnation in force at the event's time and the command name it
//!   had then ([`crate::incarnation`]), from one lookup.
//! - *Do the event filters keep it?* `--pid`, `--tid`, `--comm` ([`Calls::event`]).
//! - *Does its call count?* `--time` by when the call began ([`Calls::in_window`], with
//!   [`began_ns`] and the one time origin of [`filter::Window`]), `--min/max-latency` by its
//!   latency ([`Calls::keeps_latency`]).
//! - *Which entry does a return end?* [`pairing`]: the pairing rule and its bounds. For
//!   `report` and `script`, [`paired::Entries`] holds the waiting entries per [`call_key`] and
//!   pairs each return, giving the call's measured latency and start; what is left over is
//!   unmatched or in flight. Perfetto's slices keep a stack per thread (they nest across
//!   probes) under the same rule.
//!
//! The passes are its sinks: each feeds every record to [`Calls::apply`] and every event to
//! [`Calls::event`], and does with the verdict what it is for (count, print, draw).

pub(crate) mod filter;
pub(crate) mod paired;
pub(crate) mod pairing;

use urec_format::hash::FxHashMap;
use urec_format::{Event, EventKind, Probe, ProbeId, ProbeKind, Record};

use crate::rebase::AddressSpaces;
use crate::Error;
use filter::{answers_to, Filter, Window};

/// An event's process: its incarnation and its command name (an id of
/// [`crate::incarnation::Incarnations::comm_name`]) at the event's time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Process {
    pub(crate) incarnation: u32,
    pub(crate) comm: u32,
}

/// A probe as the core knows it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProbeSlot {
    /// Its place among the recording's probes, in the order they were first defined (a
    /// repeated definition keeps the place): the sinks index their own per-probe state by it.
    pub(crate) index: usize,
    pub(crate) kind: ProbeKind,
    /// `--probe` selects it.
    pub(crate) selected: bool,
}

/// What the core says of an event.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Verdict {
    /// Its probe is not defined in the recording (a damaged or crafted file).
    Unknown,
    /// `--probe` leaves its probe out.
    Unselected,
    /// `--pid`, `--tid` or `--comm` leave it out.
    Dropped(Process),
    /// Kept by the event filters; whether its call counts is judged by when the call began
    /// ([`Calls::in_window`]) and by its latency ([`Calls::keeps_latency`]).
    Kept(Process, ProbeSlot),
}

/// The key entries wait on for their returns in `report` and `script`: the incarnation, the
/// thread or goroutine ([`pairing::waiter`]), the probe.
pub(crate) type CallKey = (u32, u64, ProbeId);

/// [`CallKey`] of an event of `process`.
#[inline]
pub(crate) fn call_key(ev: &Event, process: Process) -> CallKey {
    (process.incarnation, pairing::waiter(ev), ev.probe)
}

/// When the call an event belongs to began: an entry's own time; a return's time less the
/// latency the recorder measured, when it did (else its own time).
#[inline]
pub(crate) fn began_ns(ev: &Event) -> u64 {
    match ev.kind {
        EventKind::Entry => ev.time_ns,
        EventKind::Return => ev.time_ns.saturating_sub(ev.latency_ns.unwrap_or(0)),
    }
}

/// The core's state: the recording's processes and address spaces, its probes, the filters.
pub(crate) struct Calls<'f> {
    filter: &'f Filter,
    /// Which process and which code: applied from every record, asked by every event.
    pub(crate) spaces: AddressSpaces,
    probes: FxHashMap<ProbeId, ProbeSlot>,
    /// Per probe (by [`ProbeSlot::index`]): its name, for the error naming what `--probe` could
    /// name, and which of the `--probe` names it answers to.
    names: Vec<(String, Vec<usize>)>,
    window: Window,
}

impl<'f> Calls<'f> {
    /// `attach_ns`: the recording's attach time, when read ahead (`--time`'s origin).
    pub(crate) fn new(filter: &'f Filter, attach_ns: Option<u64>) -> Self {
        Self {
            filter,
            spaces: AddressSpaces::new(),
            probes: FxHashMap::default(),
            names: Vec::new(),
            window: Window::new(filter.time, attach_ns),
        }
    }

    /// Takes in a record's processes and mappings; for a probe record, its selection (the
    /// probe's slot, which a repeated definition keeps).
    pub(crate) fn apply(&mut self, record: &Record) -> Option<ProbeSlot> {
        self.spaces.apply(record);
        let Record::Probe(p) = record else {
            return None;
        };
        Some(self.probe(p))
    }

    fn probe(&mut self, probe: &Probe) -> ProbeSlot {
        let wanted = &self.filter.probes;
        let answers: Vec<usize> = (0..wanted.len())
            .filter(|&i| answers_to(probe, &wanted[i]))
            .collect();
        let selected = wanted.is_empty() || !answers.is_empty();
        let next = self.probes.len();
        let slot = self.probes.entry(probe.id).or_insert(ProbeSlot {
            index: next,
            kind: probe.kind,
            selected,
        });
        slot.kind = probe.kind;
        slot.selected = selected;
        let slot = *slot;
        let named = (probe.name.clone(), answers);
        match self.names.get_mut(slot.index) {
            Some(n) => *n = named,
            None => self.names.push(named),
        }
        slot
    }

    /// The slot of probe `id`, if the recording defines it.
    #[inline]
    pub(crate) fn slot(&self, id: &ProbeId) -> Option<ProbeSlot> {
        self.probes.get(id).copied()
    }

    /// Judges an event by its probe and the event filters, finding its process (whose
    /// incarnation is then marked as having events) only for a selected probe.
    #[inline]
    pub(crate) fn event(&mut self, ev: &Event) -> Verdict {
        let Some(slot) = self.probes.get(&ev.probe).copied() else {
            return Verdict::Unknown;
        };
        if !slot.selected {
            return Verdict::Unselected;
        }
        let (incarnation, comm) = self.spaces.incarnations_mut().of_event(ev.pid, ev.time_ns);
        let process = Process { incarnation, comm };
        let f = self.filter;
        if !f.keeps_thread(ev.pid, ev.tid)
            || (!f.comms.is_empty() && !f.keeps_comm(self.spaces.incarnations().comm_name(comm)))
        {
            return Verdict::Dropped(process);
        }
        Verdict::Kept(process, slot)
    }

    /// The event filters for an event whose probe the recording does not define, which
    /// `script` still prints when no `--probe` is given (its process not marked).
    pub(crate) fn keeps_unknown(&mut self, ev: &Event) -> bool {
        let f = self.filter;
        if !f.probes.is_empty() || !f.keeps_thread(ev.pid, ev.tid) {
            return false;
        }
        if !f.comms.is_empty() {
            let inc = self.spaces.incarnations();
            if !f.keeps_comm(inc.comm_name(inc.comm_at(ev.pid, ev.time_ns))) {
                return false;
            }
        }
        self.in_window(began_ns(ev))
    }

    /// `--time`: whether a call that began at `began_ns` counts.
    #[inline]
    pub(crate) fn in_window(&mut self, began_ns: u64) -> bool {
        self.window.keeps(began_ns)
    }

    /// The attach time, when the file gives it (`--time`'s origin).
    pub(crate) fn attach_ns(&self) -> Option<u64> {
        self.window.attach_ns()
    }

    /// `--min-latency` or `--max-latency` is given: calls are judged when they end.
    #[inline]
    pub(crate) fn by_latency(&self) -> bool {
        self.filter.by_latency()
    }

    /// `--min-latency` and `--max-latency` keep a call this long.
    #[inline]
    pub(crate) fn keeps_latency(&self, latency_ns: u64) -> bool {
        self.filter.keeps_latency(latency_ns)
    }

    /// `--min-latency` / `--max-latency` on a call whose latency is `latency` (`None`: not
    /// known, which they never keep); every call when neither is given.
    #[inline]
    pub(crate) fn keeps_call(&self, latency: Option<u64>) -> bool {
        !self.by_latency() || latency.is_some_and(|l| self.keeps_latency(l))
    }

    /// Any filter of events or calls besides `--probe`.
    pub(crate) fn filtering(&self) -> bool {
        let f = self.filter;
        !f.pids.is_empty()
            || !f.tids.is_empty()
            || !f.comms.is_empty()
            || f.time.is_some()
            || f.by_latency()
    }

    /// A `--probe` that names no probe of the recording is a usage error naming the probes
    /// there are (asked once every probe record is read).
    pub(crate) fn check_probes(&self) -> Result<(), Error> {
        for (i, name) in self.filter.probes.iter().enumerate() {
            if !self.names.iter().any(|(_, answers)| answers.contains(&i)) {
                let mut available: Vec<&str> = self.names.iter().map(|(n, _)| n.as_str()).collect();
                available.sort_unstable();
                return Err(Error::NoSuchProbe {
                    name: name.clone(),
                    available: available.join(", "),
                });
            }
        }
        Ok(())
    }
}
