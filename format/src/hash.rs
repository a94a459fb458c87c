//! The workspace's one fast hasher, for maps looked up per event: the recorder's stack
//! interning and process table, the writer's (pid, tid, cpu) dictionary, the report's
//! per-event keys.
//!
//! std's SipHash is built to resist collision attacks; these maps are keyed by pids, thread
//! ids and return addresses and looked up once or more per event, at millions of events per
//! second, where SipHash showed as ≈10 % of the recorder's consumer and a third of the
//! report's time on 10M events. This is the multiply-rotate hash of rustc (`FxHasher`): a few
//! cycles per word. Byte strings are taken 8 bytes at a time, the last word zero-padded (one
//! multiply per word, never one per byte). A traced program or a crafted file could in
//! principle choose colliding keys to slow a lookup down; it cannot make a result wrong.
//!
//! Every method is `#[inline]`: the callers are in other crates, and a hash that is not
//! inlined into the map's probe loop costs a call per word.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A `HashSet` with [`FxHasher`].
pub type FxHashSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

/// rustc's multiply-rotate word hasher.
#[derive(Clone, Copy, Debug, Default)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_equal_hashes_and_lookups_work() {
        let mut m: FxHashMap<Box<[u64]>, u32> = FxHashMap::default();
        m.insert(vec![1, 2, 3].into(), 7);
        m.insert(vec![1, 2].into(), 8);
        assert_eq!(m.get(&[1u64, 2, 3][..]), Some(&7));
        assert_eq!(m.get(&[1u64, 2][..]), Some(&8));
        assert_eq!(m.get(&[2u64, 1][..]), None);
        let mut s: FxHashMap<String, u32> = FxHashMap::default();
        s.insert("__libc_malloc".into(), 1);
        s.insert("malloc".into(), 2);
        assert_eq!(s.get("malloc"), Some(&2));
        assert_eq!(s.get("__libc_malloc"), Some(&1));
    }
}
