//! The report's one interner: each distinct value (a command name, a binary's path or build id,
//! a frame, a Perfetto or pprof string) stored once and named by a small number, so per-process
//! and per-stack state holds a `u32` instead of the value, and comparing or hashing a key stays
//! cheap.
//!
//! Its map keeps std's randomly seeded hasher, not [`urec_format::hash`]'s: the values come from
//! the file (comms, paths, names its symbols give), which a crafted recording chooses, while
//! each is interned once per distinct value rather than looked up per event.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;

/// Values each stored once, numbered 0, 1, ... in order of first sight.
#[derive(Clone, Debug)]
pub(crate) struct Interner<T> {
    values: Vec<T>,
    ids: HashMap<T, u32>,
}

impl<T> Default for Interner<T> {
    fn default() -> Self {
        Self {
            values: Vec::new(),
            ids: HashMap::new(),
        }
    }
}

impl<T: Hash + Eq + Clone> Interner<T> {
    /// The id of `value`, and whether this call interned it (its first sight: callers that
    /// announce new values, as Perfetto's interned data, send it then).
    pub(crate) fn intern<Q>(&mut self, value: &Q) -> (u32, bool)
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ToOwned + ?Sized,
        Q::Owned: Into<T>,
    {
        if let Some(&id) = self.ids.get(value) {
            return (id, false);
        }
        let id = self.values.len() as u32;
        let owned: T = value.to_owned().into();
        self.values.push(owned.clone());
        self.ids.insert(owned, id);
        (id, true)
    }

    /// The id of `value`, interning it on first sight.
    pub(crate) fn id<Q>(&mut self, value: &Q) -> u32
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ToOwned + ?Sized,
        Q::Owned: Into<T>,
    {
        self.intern(value).0
    }
}

impl<T> Interner<T> {
    /// The value behind id `index`, if this interner gave it out.
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.values.get(index)
    }

    /// Distinct values.
    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }

    /// Every value, in id order.
    pub(crate) fn values(&self) -> &[T] {
        &self.values
    }
}

/// The value behind an id this interner gave out; panics on any other (callers index with
/// ids they got from it).
impl<T> std::ops::Index<usize> for Interner<T> {
    type Output = T;

    fn index(&self, index: usize) -> &T {
        &self.values[index]
    }
}

impl Interner<String> {
    /// The string behind `id`; `[unknown]` for an id this interner never gave out.
    pub(crate) fn name(&self, id: u32) -> &str {
        self.get(id as usize).map_or("[unknown]", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_once_in_order_of_first_sight() {
        let mut names: Interner<String> = Interner::default();
        assert_eq!(names.intern("bash"), (0, true));
        assert_eq!(names.intern("sh"), (1, true));
        assert_eq!(names.intern("bash"), (0, false));
        assert_eq!(names.name(1), "sh");
        assert_eq!(names.name(7), "[unknown]");
        let mut paths: Interner<Box<str>> = Interner::default();
        assert_eq!(paths.id("/usr/bin/bash"), 0);
        assert_eq!(&*paths[0], "/usr/bin/bash");
        let mut stacks: Interner<Vec<u64>> = Interner::default();
        assert_eq!(stacks.intern(&[1u64, 2][..]), (0, true));
        assert_eq!(stacks.intern(&[1u64, 2][..]), (0, false));
        assert_eq!(stacks.len(), 1);
    }
}
