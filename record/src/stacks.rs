//! Stack deduplication: each distinct user stack is written once, as a `Stack` record, and
//! events refer to it by id.
//!
//! A frame-pointer stack is a handful of addresses, but the same few call paths repeat for
//! millions of events; interning them keeps the file at a few bytes per event. Interning is
//! by the exact address list within the whole recording (not per process): two processes of the
//! same PIE binary have different addresses anyway, and identical lists mean identical stacks
//! in the file's terms (the report rebases per event with the event's pid and time).

use urec_format::{Avma, Stack, StackId};

use urec_format::hash::FxHashMap;

/// The stacks seen so far.
#[derive(Debug, Default)]
pub struct StackTable {
    ids: FxHashMap<Box<[u64]>, StackId>,
}

impl StackTable {
    /// An empty table.
    pub fn new() -> StackTable {
        StackTable::default()
    }

    /// The id of `frames` (innermost first); `Some(record)` when it is new and must be written
    /// before the event that uses it.
    pub fn intern(&mut self, frames: &[u64], truncated: bool) -> (StackId, Option<Stack>) {
        if let Some(&id) = self.ids.get(frames) {
            return (id, None);
        }
        let id = self.ids.len() as StackId;
        self.ids.insert(frames.into(), id);
        let stack = Stack {
            id,
            frames: frames.iter().map(|&a| Avma(a)).collect(),
            truncated,
            python: Vec::new(),
            python_truncated: false,
        };
        (id, Some(stack))
    }

    /// Number of distinct stacks.
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_once() {
        let mut t = StackTable::new();
        let (a, new_a) = t.intern(&[1, 2, 3], false);
        let (b, new_b) = t.intern(&[1, 2, 3], false);
        let (c, new_c) = t.intern(&[1, 2], true);
        assert_eq!((a, b, c), (0, 0, 1));
        assert!(new_a.is_some() && new_b.is_none());
        let c = new_c.unwrap();
        assert_eq!(c.frames, vec![Avma(1), Avma(2)]);
        assert!(c.truncated);
        assert_eq!(t.len(), 2);
    }
}
