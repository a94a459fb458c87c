//! Putting a recording's events back in time order, in bounded memory, for the consumers that
//! stream them (`script`, `--perfetto`).
//!
//! A recording is only roughly in time order: events come from one ring buffer in commit
//! order, which can trail the timestamps taken at probe time by a little. Items are held in a
//! min-heap and handed on oldest first once the newest item pushed is [`REORDER_NS`] later, or
//! once those held pass [`REORDER_BYTES`]: any disorder shorter than the window is sorted, and
//! an item later than that goes out when it arrives (the consumer counts it as out of order).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use urec_format::{ArgValue, Event};

/// How far behind the newest event read an event may arrive and still be put in order. The
/// ring buffer's disorder is the time between a probe's timestamp and its commit:
/// microseconds, so a second is generous.
pub const REORDER_NS: u64 = 1_000_000_000;

/// Bytes of events held back. A recorded event with eight string arguments takes about
/// 2.5 KiB: at a million such events a second, the time window alone would hold 2.5 GB; this
/// bound shortens it instead (about 160,000 events of the usual 100 bytes).
pub const REORDER_BYTES: usize = 16 << 20;

/// Something held for reordering: its time, and what it holds in memory.
pub(crate) trait Timed {
    fn time_ns(&self) -> u64;
    fn size(&self) -> usize;
}

impl Timed for Event {
    fn time_ns(&self) -> u64 {
        self.time_ns
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Event>()
            + self.args.capacity() * std::mem::size_of::<ArgValue>()
            + self
                .args
                .iter()
                .map(|a| match a {
                    ArgValue::Str { bytes, .. } => bytes.capacity(),
                    _ => 0,
                })
                .sum::<usize>()
    }
}

/// An item with its read order, ordered by (time, read order): equal times keep file order.
struct Held<T> {
    item: T,
    time: u64,
    seq: u64,
    size: usize,
}

impl<T> PartialEq for Held<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.time, self.seq) == (other.time, other.seq)
    }
}

impl<T> Eq for Held<T> {}

impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Held<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.time, self.seq).cmp(&(other.time, other.seq))
    }
}

/// The reordering window (see the module docs).
pub(crate) struct Reorder<T> {
    heap: BinaryHeap<Reverse<Held<T>>>,
    held: usize,
    seq: u64,
    newest: u64,
}

impl<T: Timed> Reorder<T> {
    pub(crate) fn new() -> Self {
        Reorder {
            heap: BinaryHeap::new(),
            held: 0,
            seq: 0,
            newest: 0,
        }
    }

    /// Holds `item`, handing `emit` every item the window lets go, oldest first.
    pub(crate) fn push<E>(
        &mut self,
        item: T,
        mut emit: impl FnMut(T) -> Result<(), E>,
    ) -> Result<(), E> {
        let time = item.time_ns();
        let size = std::mem::size_of::<Held<T>>() + item.size();
        self.newest = self.newest.max(time);
        self.held += size;
        self.heap.push(Reverse(Held {
            item,
            time,
            seq: self.seq,
            size,
        }));
        self.seq += 1;
        while let Some(Reverse(oldest)) = self.heap.peek() {
            let late = oldest.time.saturating_add(REORDER_NS) < self.newest;
            let full = self.held > REORDER_BYTES && self.heap.len() > 1;
            if !(late || full) {
                break;
            }
            let Some(Reverse(h)) = self.heap.pop() else {
                break;
            };
            self.held -= h.size;
            emit(h.item)?;
        }
        Ok(())
    }

    /// Hands `emit` everything still held, oldest first.
    pub(crate) fn finish<E>(&mut self, mut emit: impl FnMut(T) -> Result<(), E>) -> Result<(), E> {
        while let Some(Reverse(h)) = self.heap.pop() {
            self.held -= h.size;
            emit(h.item)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct At(u64, usize);

    impl Timed for At {
        fn time_ns(&self) -> u64 {
            self.0
        }
        fn size(&self) -> usize {
            self.1
        }
    }

    #[test]
    fn sorts_within_the_window_and_lets_go_of_old_and_big() {
        let mut r = Reorder::new();
        let mut out = Vec::new();
        let mut put = |a: At| -> Result<(), ()> {
            out.push(a.0);
            Ok(())
        };
        for t in [5, 3, 4, 1, 2] {
            r.push(At(t, 0), &mut put).unwrap();
        }
        r.push(At(3 + REORDER_NS, 0), &mut put).unwrap();
        r.push(At(0, REORDER_BYTES), &mut put).unwrap();
        r.finish(&mut put).unwrap();
        assert_eq!(out, [1, 2, 0, 3, 4, 5, 3 + REORDER_NS]);
    }
}
