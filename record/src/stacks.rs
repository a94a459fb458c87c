//! Stack deduplication: each distinct user stack is written once, as a `Stack` record, and
//! events refer to it by id.
//!
//! A frame-pointer stack is a handful of addresses, but the same few call paths repeat for
//! millions of events; interning them keeps the file at a few bytes per event. Interning is
//! by the exact address list within the whole recording (not per process): two processes of the
//! same PIE binary have different addresses anyway, and identical lists mean identical stacks
//! in the file's terms (the report rebases per event with the event's pid and time).
//!
//! A stack's Python frames (issue 33) are part of it: the same native frames under two Python
//! call paths are two stacks.
//!
//! Stacks walked in the kernel arrive already deduplicated ([`StackIds`]): an event carries an
//! id, and the frames are read from the programs' `stacks` map once per distinct stack.

use std::time::{Duration, Instant};

use libbpf_rs::{MapCore, MapFlags, MapHandle};
use urec_bpf::abi::{StoredStack, STACK_STORE};
use urec_format::{Avma, PyFrame, Stack, StackId};

use urec_format::hash::{FxHashMap, FxHashSet};

use crate::python::names::NamedStack;

/// The stacks seen so far.
#[derive(Debug, Default)]
pub struct StackTable {
    /// Stacks without Python frames, keyed by their frames.
    ids: FxHashMap<Box<[u64]>, StackId>,
    /// Stacks with Python frames, keyed by one flat list: the number of native frames, the
    /// native frames, the Python frames packed one word each, their truncation.
    python_ids: FxHashMap<Box<[u64]>, StackId>,
    key: Vec<u64>,
}

impl StackTable {
    /// An empty table.
    pub fn new() -> StackTable {
        StackTable::default()
    }

    /// The id of `frames` (innermost first) with the Python frames `python` ran; `Some(record)`
    /// when it is new and must be written before the event that uses it.
    pub fn intern(
        &mut self,
        frames: &[u64],
        truncated: bool,
        python: Option<&NamedStack>,
    ) -> (StackId, Option<Stack>) {
        let (ids, key): (_, &[u64]) = match python {
            None => (&mut self.ids, frames),
            Some((py, py_truncated)) => {
                self.key.clear();
                self.key.push(frames.len() as u64);
                self.key.extend_from_slice(frames);
                self.key.extend(py.iter().map(|f| {
                    u64::from(f.code) << 32 | u64::from(f.line) << 1 | u64::from(f.entry)
                }));
                self.key.push(u64::from(*py_truncated));
                (&mut self.python_ids, &self.key)
            }
        };
        if let Some(&id) = ids.get(key) {
            return (id, None);
        }
        let id = (self.ids.len() + self.python_ids.len()) as StackId;
        match python {
            None => self.ids.insert(key.into(), id),
            Some(_) => self.python_ids.insert(key.into(), id),
        };
        let (python, python_truncated): (Vec<PyFrame>, bool) = match python {
            Some((py, t)) => (py.to_vec(), *t),
            None => (Vec::new(), false),
        };
        let stack = Stack {
            id,
            frames: frames.iter().map(|&a| Avma(a)).collect(),
            truncated,
            python,
            python_truncated,
        };
        (id, Some(stack))
    }

    /// Number of distinct stacks.
    pub fn len(&self) -> usize {
        self.ids.len() + self.python_ids.len()
    }
}

/// The recorder's side of the programs' stack ids (bpf/src/urec.h, "Stack ids").
///
/// An id met for the first time makes the recorder take every stack stored so far out of
/// `stacks` in one batch (its own among them: an entry is written before its event); their ids
/// go into `stacks_known` at the next [`StackIds::sync`], after which the programs send the
/// ids alone. Until then an event of such a stack may store it again (a race the periodic
/// sweep cleans up).
#[derive(Default)]
pub struct StackIds {
    maps: Option<Maps>,
    /// Every id met: its frames, and its [`StackId`] once interned without Python frames (the
    /// common case: one hash lookup per event).
    ids: FxHashMap<u64, KnownStack>,
    /// Ids taken out of `stacks` since the last sync: to add to `stacks_known`.
    to_confirm: Vec<u64>,
    /// Entries of `stacks` that no event had named by the last sweep: deleted at the one
    /// after when the map is crowded (a lost event's stack; its next event stores it again).
    orphans: FxHashSet<u64>,
    last_sweep: Option<Instant>,
    /// Events whose id was in neither the recorder's table nor `stacks`: written without a
    /// stack. Never expected (the entry is written before its event); counted to be sure.
    pub missing: u64,
    /// Distinct stacks read from `stacks`.
    pub read: u64,
    /// Batches read from `stacks`.
    pub batches: u64,
}

struct Maps {
    stacks: MapHandle,
    known: MapHandle,
}

struct KnownStack {
    frames: Box<[u64]>,
    plain: Option<StackId>,
}

/// How often `stacks` is swept of entries the recorder has (a race between its sync and the
/// programs) and of orphans.
const SWEEP_INTERVAL: Duration = Duration::from_secs(2);

impl StackIds {
    /// Reads and confirms ids through the programs' `stacks` and `stacks_known`.
    pub fn new(skel: &urec_bpf::UrecSkel<'_>) -> anyhow::Result<StackIds> {
        Ok(StackIds {
            maps: Some(Maps {
                stacks: MapHandle::try_from(&skel.maps.stacks)?,
                known: MapHandle::try_from(&skel.maps.stacks_known)?,
            }),
            ..StackIds::default()
        })
    }

    /// The stack interned for `id` without Python frames, if it was.
    pub fn plain(&self, id: u64) -> Option<StackId> {
        self.ids.get(&id).and_then(|k| k.plain)
    }

    /// Remembers that `id`'s frames, without Python frames, are `stack`.
    pub fn set_plain(&mut self, id: u64, stack: StackId) {
        if let Some(k) = self.ids.get_mut(&id) {
            k.plain = Some(stack);
        }
    }

    /// Appends `id`'s frames to `out`; none when they are nowhere ([`StackIds::missing`]).
    pub fn frames(&mut self, id: u64, out: &mut Vec<u64>) {
        if !self.ids.contains_key(&id) {
            self.drain();
        }
        if !self.ids.contains_key(&id) {
            // Not in the batch: looked up alone (a map the batch could not read).
            let stored = self.maps.as_ref().and_then(|m| {
                let v = m.stacks.lookup(&id.to_ne_bytes(), MapFlags::ANY).ok()??;
                let _ = m.stacks.delete(&id.to_ne_bytes());
                StoredStack::frames_of(&v)
            });
            match stored {
                Some(frames) => self.take(id, frames),
                None => self.missing += 1,
            }
        }
        if let Some(k) = self.ids.get(&id) {
            out.extend_from_slice(&k.frames);
        }
    }

    /// Takes every stack stored in `stacks` out of it, in one batch.
    fn drain(&mut self) {
        let Some(m) = &self.maps else { return };
        let Ok(batch) = m
            .stacks
            .lookup_and_delete_batch(STACK_STORE, MapFlags::ANY, MapFlags::ANY)
        else {
            return;
        };
        let taken: Vec<(u64, Vec<u64>)> = batch
            .filter_map(|(k, v)| {
                let id = u64::from_ne_bytes(<[u8; 8]>::try_from(k.as_slice()).ok()?);
                Some((id, StoredStack::frames_of(&v)?))
            })
            .collect();
        self.batches += 1;
        for (id, frames) in taken {
            self.take(id, frames);
        }
    }

    fn take(&mut self, id: u64, frames: Vec<u64>) {
        if self.ids.contains_key(&id) {
            return;
        }
        self.ids.insert(
            id,
            KnownStack {
                frames: frames.into(),
                plain: None,
            },
        );
        self.to_confirm.push(id);
        self.read += 1;
    }

    /// Tells the programs which ids the recorder has (once per poll, in one batch), and now
    /// and then sweeps `stacks`. A failed map write costs only a stack sent again.
    pub fn sync(&mut self) {
        let Some(m) = &self.maps else { return };
        if !self.to_confirm.is_empty() {
            let keys: Vec<u8> = self
                .to_confirm
                .iter()
                .flat_map(|id| id.to_ne_bytes())
                .collect();
            let values = vec![1u8; self.to_confirm.len()];
            let n = self.to_confirm.len() as u32;
            if m.known
                .update_batch(&keys, &values, n, MapFlags::ANY, MapFlags::ANY)
                .is_err()
            {
                for id in &self.to_confirm {
                    let _ = m.known.update(&id.to_ne_bytes(), &[1], MapFlags::ANY);
                }
            }
            self.to_confirm.clear();
        }
        if self
            .last_sweep
            .is_some_and(|t| t.elapsed() < SWEEP_INTERVAL)
        {
            return;
        }
        self.last_sweep = Some(Instant::now());
        let mut orphans = FxHashSet::default();
        let keys: Vec<Vec<u8>> = m.stacks.keys().collect();
        // Orphans only matter when they crowd the map (stacks then travel in their events);
        // a recorder lagging seconds behind the ring must not lose a stack it is yet to read.
        let crowded = keys.len() as u32 > STACK_STORE / 2;
        for key in keys {
            let Ok(k) = <[u8; 8]>::try_from(key.as_slice()) else {
                continue;
            };
            let id = u64::from_ne_bytes(k);
            if self.ids.contains_key(&id) {
                let _ = m.known.update(&k, &[1], MapFlags::ANY);
                let _ = m.stacks.delete(&k);
            } else if crowded && self.orphans.contains(&id) {
                let _ = m.stacks.delete(&k);
            } else {
                orphans.insert(id);
            }
        }
        self.orphans = orphans;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_once() {
        let mut t = StackTable::new();
        let (a, new_a) = t.intern(&[1, 2, 3], false, None);
        let (b, new_b) = t.intern(&[1, 2, 3], false, None);
        let (c, new_c) = t.intern(&[1, 2], true, None);
        assert_eq!((a, b, c), (0, 0, 1));
        assert!(new_a.is_some() && new_b.is_none());
        let c = new_c.unwrap();
        assert_eq!(c.frames, vec![Avma(1), Avma(2)]);
        assert!(c.truncated);
        assert_eq!(t.len(), 2);
    }
}
