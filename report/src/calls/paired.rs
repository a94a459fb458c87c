//! The calls of entry + return probes, paired once for `report` and `script`: the entries
//! waiting for their returns, what a return finds among them, the latency and start time of
//! the call it ends, and what is left at the end. Each sink keeps only its own data per
//! waiting entry (`T`: the report's counted stack and keys, the script's event to print), so
//! the two cannot pair, measure or abandon differently.
//!
//! Perfetto keeps its own open calls (per thread across probes, as slices on a track must
//! nest; [`crate::output::perfetto`]) and follows [`fits`](super::pairing::fits) for which one a return
//! closes.

use urec_format::{Event, ProbeId};

use super::pairing::{is_goroutine, Pairing, Waiting};
use super::{call_key, CallKey, Process};
use crate::incarnation::Incarnations;

/// What a return of an entry + return probe ends.
pub(crate) struct Ended<T> {
    /// The entry it pairs with, when one was waiting (else its entry was lost, filtered or
    /// pushed out).
    pub(crate) entry: Option<T>,
    /// The call's latency as measured: the recorder's, else the time since the paired entry.
    /// Before `--subtract-probe-cost`, which changes what is shown and judged by latency,
    /// never when the call began.
    pub(crate) measured: Option<u64>,
}

impl<T> Ended<T> {
    /// When the call began: the return's time less the measured latency (its own time when
    /// the latency is unknown).
    pub(crate) fn began_ns(&self, ret: &Event) -> u64 {
        ret.time_ns.saturating_sub(self.measured.unwrap_or(0))
    }
}

/// Entries waiting for their returns, per [`CallKey`], within [the pairing bound](super::pairing).
pub(crate) struct Entries<T> {
    waiting: Pairing<CallKey, T>,
}

impl<T: Waiting> Default for Entries<T> {
    fn default() -> Self {
        Self {
            waiting: Pairing::default(),
        }
    }
}

impl<T: Waiting> Entries<T> {
    /// An entry starts waiting under its [`call_key`]. Entries the bound pushes out are
    /// unmatched: their returns can no longer be paired; they go to `unmatched` with their
    /// probe.
    #[inline]
    pub(crate) fn enter(&mut self, key: CallKey, value: T, mut unmatched: impl FnMut(ProbeId, T)) {
        self.waiting
            .push(key, value, |(_, _, probe), old| unmatched(probe, old));
    }

    /// The return `ev` of `process` takes its entry by [the pairing rule](super::pairing). In a goroutine
    /// (whose calls nest), the entries newer than the one taken were unwound by a recovered
    /// panic or `runtime.Goexit`: they go to `abandoned`, their returns never come.
    #[inline]
    pub(crate) fn end(
        &mut self,
        ev: &Event,
        process: Process,
        abandoned: impl FnMut(T),
    ) -> Ended<T> {
        let key = call_key(ev, process);
        let entry = self.waiting.pop_for_return_unwinding(
            &key,
            ev.time_ns,
            ev.latency_ns,
            is_goroutine(key.1),
            abandoned,
        );
        let measured = match (ev.latency_ns, &entry) {
            (Some(lat), _) => Some(lat),
            (None, Some(e)) => Some(ev.time_ns.saturating_sub(e.time_ns())),
            (None, None) => None,
        };
        Ended { entry, measured }
    }

    /// Takes the entries still waiting at the end of the file, ordered by key (each key's
    /// oldest first), with their probe and whether they are in flight (their process lived
    /// on) or unmatched (it ended: their returns were lost).
    pub(crate) fn finish(&mut self, incarnations: &Incarnations) -> Vec<(ProbeId, T, bool)> {
        let mut waiting = self.waiting.drain();
        // A fixed order: a sink's counting may depend on it (a group cap falls alike). Stable:
        // each key's entries stay oldest first.
        waiting.sort_by_key(|(key, _)| *key);
        waiting
            .into_iter()
            .map(|((incarnation, _, probe), v)| (probe, v, !incarnations.ended(incarnation)))
            .collect()
    }
}
