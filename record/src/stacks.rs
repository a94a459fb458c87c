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

use urec_format::{Avma, PyFrame, Stack, StackId};

use urec_format::hash::FxHashMap;

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
