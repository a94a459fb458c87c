//! Pairing a call's return with its entry: the one rule `report`, `script` and `--perfetto`
//! follow, and the one bound on what waits for a return.
//!
//! # The rule
//! Entries wait on a stack per key (a thread and a probe for counts and latencies, a thread
//! for Perfetto's nested slices), so recursion nests properly. A return pairs with the newest
//! waiting entry whose time fits: when the return carries the latency the recorder measured,
//! its call began at `return time - latency`, and an entry clearly older than that (by more
//! than 1 µs + 1%) is an outer call: this call's own entry was lost. See [`fits`].
//!
//! # The bound
//! A file decides how many entries wait: one without returns (a crafted file, or a probe on a
//! function that never returns) would hold them all. Two limits apply, and what they push out
//! is handed back to the caller, which counts it (unmatched) instead of pairing it:
//! - per key, [`MAX_PER_KEY`] entries: the kernel installs no return probe beyond 64 nested
//!   calls of a thread (`MAX_URETPROBE_DEPTH`), so an entry that deep can no longer be paired;
//! - in all, [`BUDGET_BYTES`] of waiting entries, their own heap data included (an entry of
//!   `script` holds its arguments): the oldest entry of the whole file goes first. Keys are
//!   threads × probes, which a file chooses too, so an empty stack is removed, never kept.
//!
//! A real recording has threads × nesting depth entries waiting at once (a server with 10,000
//! threads blocked in a probed call: 10,000), far under the budget, so the bound changes no
//! real report. Each operation costs O(1) (a hash lookup and a few links), the Perfetto search
//! O(depth) with depth ≤ [`MAX_PER_KEY`].

use std::hash::Hash;

use urec_format::hash::FxHashMap;

/// Entries kept waiting per key (see the module docs).
pub(crate) const MAX_PER_KEY: usize = 1024;

/// Bytes of waiting entries in all, their bookkeeping and heap data included (see the module
/// docs): 16 MiB, about 150,000 entries of `report`.
pub(crate) const BUDGET_BYTES: usize = 16 << 20;

/// Whether an entry at `entry_ns` can be the entry of a call that returned at `return_ns`
/// after `latency_ns` (when the recorder measured it): an entry clearly older than the call's
/// start is an outer call's.
pub(crate) fn fits(entry_ns: u64, return_ns: u64, latency_ns: Option<u64>) -> bool {
    latency_ns.is_none_or(|lat| {
        let began = return_ns.saturating_sub(lat);
        entry_ns.saturating_add(1_000 + lat / 100) >= began
    })
}

/// Who a call's entries wait on: its thread, or for Go code its goroutine (goroutines move
/// between threads; a goroutine's calls nest, a thread's need not). Disjoint: a goroutine
/// (an address) is marked by the top bit, which no thread id has.
pub(crate) fn waiter(ev: &urec_format::Event) -> u64 {
    match ev.goroutine {
        Some(g) => g | 1 << 63,
        None => u64::from(ev.tid),
    }
}

/// Whether the key part from [`waiter`] is a goroutine.
pub(crate) fn is_goroutine(waiter: u64) -> bool {
    waiter >> 63 == 1
}

/// What a waiting entry holds besides its fixed size, so that the budget sees it.
pub(crate) trait Waiting {
    /// When the call was entered.
    fn time_ns(&self) -> u64;
    /// Heap bytes it owns.
    fn heap_bytes(&self) -> usize {
        0
    }
}

/// `script` keeps whole entry events waiting (it prints the entry with its return).
impl Waiting for urec_format::Event {
    fn time_ns(&self) -> u64 {
        self.time_ns
    }

    fn heap_bytes(&self) -> usize {
        self.args.capacity() * std::mem::size_of::<urec_format::ArgValue>()
            + self
                .args
                .iter()
                .map(|a| match a {
                    urec_format::ArgValue::Str { bytes, .. } => bytes.capacity(),
                    _ => 0,
                })
                .sum::<usize>()
    }
}

const NONE: u32 = u32::MAX;

struct Node<K, T> {
    key: K,
    value: Option<T>,
    /// The next older entry of the same key.
    below: u32,
    /// The next newer entry of the same key.
    above: u32,
    /// Neighbours in the file-wide order of arrival.
    older: u32,
    newer: u32,
}

#[derive(Clone, Copy)]
struct Stack {
    top: u32,
    bottom: u32,
    len: u32,
}

/// Entries waiting for their return, per key, within the bound (see the module docs).
pub(crate) struct Pairing<K, T> {
    stacks: FxHashMap<K, Stack>,
    nodes: Vec<Node<K, T>>,
    free: Vec<u32>,
    oldest: u32,
    newest: u32,
    len: usize,
    bytes: usize,
    budget: usize,
}

impl<K: Copy + Eq + Hash, T: Waiting> Default for Pairing<K, T> {
    fn default() -> Self {
        Self::with_budget(BUDGET_BYTES)
    }
}

impl<K: Copy + Eq + Hash, T: Waiting> Pairing<K, T> {
    /// With a budget other than [`BUDGET_BYTES`] (tests).
    pub(crate) fn with_budget(budget: usize) -> Self {
        Pairing {
            stacks: FxHashMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            oldest: NONE,
            newest: NONE,
            len: 0,
            bytes: 0,
            budget,
        }
    }

    /// Entries waiting.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// What one entry costs against the budget: its node, its share of the key map, its heap.
    fn cost(value: &T) -> usize {
        std::mem::size_of::<Node<K, T>>()
            + 2 * std::mem::size_of::<(K, Stack)>()
            + value.heap_bytes()
    }

    /// Adds an entry on top of `key`'s stack. Entries the bound pushes out (the key's oldest
    /// past [`MAX_PER_KEY`], then the file's oldest past the budget) go to `evicted`, oldest
    /// first.
    pub(crate) fn push(&mut self, key: K, value: T, mut evicted: impl FnMut(K, T)) {
        if self
            .stacks
            .get(&key)
            .is_some_and(|s| s.len as usize >= MAX_PER_KEY)
        {
            if let Some(bottom) = self.stacks.get(&key).map(|s| s.bottom) {
                if let Some(v) = self.remove(bottom) {
                    evicted(key, v);
                }
            }
        }
        self.bytes += Self::cost(&value);
        self.len += 1;
        let node = Node {
            key,
            value: Some(value),
            below: NONE,
            above: NONE,
            older: self.newest,
            newer: NONE,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        if self.newest != NONE {
            self.nodes[self.newest as usize].newer = i;
        } else {
            self.oldest = i;
        }
        self.newest = i;
        match self.stacks.get_mut(&key) {
            Some(s) => {
                self.nodes[i as usize].below = s.top;
                self.nodes[s.top as usize].above = i;
                s.top = i;
                s.len += 1;
            }
            None => {
                self.stacks.insert(
                    key,
                    Stack {
                        top: i,
                        bottom: i,
                        len: 1,
                    },
                );
            }
        }
        while self.bytes > self.budget && self.oldest != i {
            let old = self.oldest;
            let k = self.nodes[old as usize].key;
            if let Some(v) = self.remove(old) {
                evicted(k, v);
            }
        }
    }

    /// The newest entry waiting under `key`.
    pub(crate) fn top(&self, key: &K) -> Option<&T> {
        let s = self.stacks.get(key)?;
        self.nodes[s.top as usize].value.as_ref()
    }

    /// Takes the newest entry waiting under `key`.
    pub(crate) fn pop(&mut self, key: &K) -> Option<T> {
        let top = self.stacks.get(key)?.top;
        self.remove(top)
    }

    /// Takes the newest entry of `key` if its time [`fits`] a return at `return_ns` after
    /// `latency_ns`; leaves the stack alone otherwise (the return's own entry was lost).
    pub(crate) fn pop_fitting(
        &mut self,
        key: &K,
        return_ns: u64,
        latency_ns: Option<u64>,
    ) -> Option<T> {
        let top = self.top(key)?;
        if fits(top.time_ns(), return_ns, latency_ns) {
            self.pop(key)
        } else {
            None
        }
    }

    /// Takes the entry of `key` that a return at `return_ns` after the measured `latency_ns`
    /// belongs to: the one entered exactly `latency_ns` before (the recorder measures the
    /// latency from the entry's own time stamp), wherever it waits; else the newest entry if
    /// its time [`fits`]. The exact match matters where calls of one thread do not nest: Go
    /// goroutines share threads, so a thread's waiting entries belong to several goroutines
    /// whose calls end in any order.
    #[cfg(test)]
    pub(crate) fn pop_for_return(
        &mut self,
        key: &K,
        return_ns: u64,
        latency_ns: Option<u64>,
    ) -> Option<T> {
        self.pop_for_return_unwinding(key, return_ns, latency_ns, false, |_| {})
    }

    /// [`Pairing::pop_for_return`], and when `nested` (the key's calls nest: a goroutine's),
    /// the entries newer than the one taken go to `abandoned`: frames the return skipped over
    /// (a panic that a caller recovered, `runtime.Goexit`), whose returns never come.
    pub(crate) fn pop_for_return_unwinding(
        &mut self,
        key: &K,
        return_ns: u64,
        latency_ns: Option<u64>,
        nested: bool,
        mut abandoned: impl FnMut(T),
    ) -> Option<T> {
        if let Some(lat) = latency_ns {
            let began = return_ns.saturating_sub(lat);
            if let Some(i) = self.find(key, |t| t.time_ns() == began) {
                if nested {
                    while let Some(top) = self.stacks.get(key).map(|s| s.top) {
                        if top == i {
                            break;
                        }
                        if let Some(v) = self.remove(top) {
                            abandoned(v);
                        }
                    }
                }
                return self.remove(i);
            }
        }
        self.pop_fitting(key, return_ns, latency_ns)
    }

    /// The node of the newest entry of `key` that `pred` accepts.
    fn find(&self, key: &K, pred: impl Fn(&T) -> bool) -> Option<u32> {
        let mut at = self.stacks.get(key)?.top;
        while at != NONE {
            let n = &self.nodes[at as usize];
            if n.value.as_ref().is_some_and(&pred) {
                return Some(at);
            }
            at = n.below;
        }
        None
    }

    /// The entries of `key`, newest first.
    pub(crate) fn iter_from_top(&self, key: &K) -> impl Iterator<Item = &T> + '_ {
        let mut at = self.stacks.get(key).map_or(NONE, |s| s.top);
        std::iter::from_fn(move || {
            while at != NONE {
                let n = &self.nodes[at as usize];
                at = n.below;
                if let Some(v) = n.value.as_ref() {
                    return Some(v);
                }
            }
            None
        })
    }

    /// Takes every entry still waiting, oldest first (in the order they arrived).
    pub(crate) fn drain(&mut self) -> Vec<(K, T)> {
        let mut out = Vec::with_capacity(self.len);
        let mut at = self.oldest;
        while at != NONE {
            let n = &mut self.nodes[at as usize];
            at = n.newer;
            if let Some(v) = n.value.take() {
                out.push((n.key, v));
            }
        }
        *self = Self::with_budget(self.budget);
        out
    }

    /// Unlinks node `i` from its key's stack and from the order of arrival.
    fn remove(&mut self, i: u32) -> Option<T> {
        let n = &mut self.nodes[i as usize];
        let value = n.value.take()?;
        let (key, below, above, older, newer) = (n.key, n.below, n.above, n.older, n.newer);
        self.bytes -= Self::cost(&value);
        self.len -= 1;
        if below != NONE {
            self.nodes[below as usize].above = above;
        }
        if above != NONE {
            self.nodes[above as usize].below = below;
        }
        if older != NONE {
            self.nodes[older as usize].newer = newer;
        } else {
            self.oldest = newer;
        }
        if newer != NONE {
            self.nodes[newer as usize].older = older;
        } else {
            self.newest = older;
        }
        let emptied = match self.stacks.get_mut(&key) {
            Some(s) => {
                s.len -= 1;
                if s.top == i {
                    s.top = below;
                }
                if s.bottom == i {
                    s.bottom = above;
                }
                s.len == 0
            }
            None => false,
        };
        if emptied {
            self.stacks.remove(&key);
        }
        self.free.push(i);
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct E(u64);
    impl Waiting for E {
        fn time_ns(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn a_stack_per_key_newest_first() {
        let mut p: Pairing<u32, E> = Pairing::default();
        for t in 1..=3 {
            p.push(1, E(t), |_, _| panic!("nothing evicted"));
        }
        p.push(2, E(10), |_, _| panic!("nothing evicted"));
        assert_eq!(p.pop(&1), Some(E(3)));
        assert_eq!(p.iter_from_top(&1).map(|e| e.0).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(p.pop(&2), Some(E(10)));
        assert_eq!(p.pop(&2), None);
        assert_eq!(p.len(), 2);
        assert_eq!(p.drain(), vec![(1, E(1)), (1, E(2))]);
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn a_return_pairs_only_with_an_entry_that_fits_its_latency() {
        let mut p: Pairing<u32, E> = Pairing::default();
        p.push(1, E(1_000), |_, _| {});
        // Returned at 1,000,000 after 10 µs: began at 990,000, long after the waiting entry.
        assert_eq!(p.pop_fitting(&1, 1_000_000, Some(10_000)), None);
        assert_eq!(p.pop_fitting(&1, 1_000_000, Some(999_000)), Some(E(1_000)));
        p.push(1, E(5), |_, _| {});
        assert_eq!(p.pop_fitting(&1, 1_000_000, None), Some(E(5)));
    }

    #[test]
    fn a_return_takes_the_entry_its_latency_names_wherever_it_waits() {
        let mut p: Pairing<u32, E> = Pairing::default();
        for t in [100, 200, 300] {
            p.push(1, E(t), |_, _| {});
        }
        // Returned at 1,000 after 800: entered at 200, under the newest.
        assert_eq!(p.pop_for_return(&1, 1_000, Some(800)), Some(E(200)));
        assert_eq!(
            p.iter_from_top(&1).map(|e| e.0).collect::<Vec<_>>(),
            [300, 100]
        );
        // No exact match: the newest if it fits.
        assert_eq!(p.pop_for_return(&1, 1_000, Some(650)), Some(E(300)));
        assert_eq!(p.pop_for_return(&1, 1_000, None), Some(E(100)));
        assert_eq!(p.pop_for_return(&1, 1_000, None), None);
    }

    #[test]
    fn a_goroutines_return_abandons_the_frames_it_skipped() {
        let mut p: Pairing<u32, E> = Pairing::default();
        for t in [100, 200, 300] {
            p.push(1, E(t), |_, _| {});
        }
        // The call entered at 100 returns: 200 and 300 were unwound by a panic.
        let mut gone = Vec::new();
        let got = p.pop_for_return_unwinding(&1, 1_000, Some(900), true, |e| gone.push(e.0));
        assert_eq!((got, gone), (Some(E(100)), vec![300, 200]));
        assert_eq!(p.top(&1), None);
    }

    #[test]
    fn the_per_key_cap_drops_that_keys_oldest() {
        let mut p: Pairing<u32, E> = Pairing::default();
        let mut out = Vec::new();
        for t in 0..MAX_PER_KEY as u64 + 2 {
            p.push(7, E(t), |k, e| out.push((k, e.0)));
        }
        assert_eq!(out, [(7, 0), (7, 1)]);
        assert_eq!(p.len(), MAX_PER_KEY);
        assert_eq!(p.top(&7), Some(&E(MAX_PER_KEY as u64 + 1)));
    }

    #[test]
    fn the_budget_drops_the_files_oldest_and_empty_keys_go() {
        let one = Pairing::<u32, E>::cost(&E(0));
        let mut p: Pairing<u32, E> = Pairing::with_budget(100 * one);
        let mut out = Vec::new();
        for t in 0..1000u64 {
            // A key per entry, as a crafted file of many threads has.
            p.push(t as u32, E(t), |k, e| out.push((k, e.0)));
        }
        assert_eq!(p.len(), 100);
        assert_eq!(out.len(), 900);
        assert!(out
            .iter()
            .enumerate()
            .all(|(i, &(k, t))| k == i as u32 && t == i as u64));
        assert_eq!(p.stacks.len(), 100, "keys of evicted entries are gone");
        // Popped entries give their room back.
        for t in 900..1000u32 {
            assert_eq!(p.pop(&t), Some(E(u64::from(t))));
        }
        assert_eq!((p.len(), p.bytes, p.stacks.len()), (0, 0, 0));
    }

    #[test]
    fn heap_bytes_count() {
        struct Big(u64);
        impl Waiting for Big {
            fn time_ns(&self) -> u64 {
                self.0
            }
            fn heap_bytes(&self) -> usize {
                1 << 20
            }
        }
        let mut p: Pairing<u32, Big> = Pairing::with_budget(4 << 20);
        let mut evicted = 0;
        for t in 0..10 {
            p.push(1 + t as u32 % 2, Big(t), |_, _| evicted += 1);
        }
        assert_eq!(p.len(), 3);
        assert_eq!(evicted, 7);
    }
}
