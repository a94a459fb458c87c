//! Lost-event counts as the file records them: `Lost` records are additive, so the recorder
//! can write what was lost so far at every checkpoint and the rest at the end. A recorder killed
//! with `kill -9` then leaves a file whose lost counts are those of its last checkpoint, not none.

use std::collections::HashMap;

use urec_format::{EventKind, Lost, LostSource, ProbeId};

/// What has been written of each running total.
#[derive(Debug, Default)]
pub struct LostLedger {
    written: HashMap<(LostSource, ProbeId, EventKind), u64>,
}

impl LostLedger {
    /// The `Lost` records that bring the file up to the running `totals` of `source`.
    pub fn catch_up(
        &mut self,
        source: LostSource,
        totals: &[(ProbeId, EventKind, u64)],
    ) -> Vec<Lost> {
        let mut out = Vec::new();
        for &(probe, kind, total) in totals {
            let written = self.written.entry((source, probe, kind)).or_default();
            if total > *written {
                out.push(Lost {
                    source,
                    probe: Some(probe),
                    kind: Some(kind),
                    count: total - *written,
                });
                *written = total;
            }
        }
        out
    }

    /// Everything written for `source` so far.
    pub fn total(&self, source: LostSource) -> u64 {
        self.written
            .iter()
            .filter(|((s, _, _), _)| *s == source)
            .map(|(_, n)| n)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_what_is_new() {
        let mut l = LostLedger::default();
        let a = l.catch_up(LostSource::Ring, &[(0, EventKind::Entry, 5)]);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].count, 5);
        assert!(l
            .catch_up(LostSource::Ring, &[(0, EventKind::Entry, 5)])
            .is_empty());
        let b = l.catch_up(
            LostSource::Ring,
            &[(0, EventKind::Entry, 7), (1, EventKind::Return, 2)],
        );
        assert_eq!(b.iter().map(|x| x.count).collect::<Vec<_>>(), vec![2, 2]);
        assert_eq!(l.total(LostSource::Ring), 9);
        assert_eq!(l.total(LostSource::Unwind), 0);
    }
}
