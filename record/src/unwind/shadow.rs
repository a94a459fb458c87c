//! Per-thread shadow stacks of the return addresses that uretprobes hid.
//!
//! When a function with a return probe is entered, the kernel overwrites its return address
//! on the user stack with the address of the uretprobe trampoline (in the `[uprobes]` page) and
//! keeps the original in `current->utask->return_instances`. A stack copied later, deeper in
//! the same call, therefore holds the trampoline where the caller's address should be, and a
//! CFI unwind cannot go past it. The kernel's own list is the best source of the originals
//! (it also covers return probes urec did not see the entry of); this is the fallback built
//! from urec's own events: every entry event of a probe with a return probe carries the stack
//! pointer at entry (the address of the return-address slot) and the value in that slot,
//! which is still the original because the kernel hijacks it only after the entry handlers ran.

use std::collections::HashMap;

use super::PendingReturn;

/// The kernel stops installing return probes beyond this nesting depth
/// (`MAX_URETPROBE_DEPTH`); deeper entries are never hijacked, so there is nothing to remember.
const MAX_DEPTH: usize = 64;

/// Shadow stacks of pending return-probed calls, one per thread.
///
/// Feed it from the event stream, in order: [`ShadowStacks::entry`] for each entry event of a
/// probe that also has a return probe, [`ShadowStacks::ret`] for each return event, and
/// [`ShadowStacks::exit`] when a thread exits. Then [`ShadowStacks::pending`] gives the
/// [`PendingReturn`]s for a stack captured by that thread.
///
/// Lost events are tolerated: slots are matched by address, an entry whose return was lost is
/// dropped as soon as a return or entry at or above its slot shows it cannot be live any more.
#[derive(Debug, Default)]
pub struct ShadowStacks {
    threads: HashMap<u32, Vec<PendingReturn>>,
}

impl ShadowStacks {
    /// An empty set of shadow stacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Thread `tid` entered a return-probed function: `sp` is the stack pointer at the entry
    /// probe (the address of the return-address slot) and `ret` the value read from `[sp]`
    /// there. `trampoline` is the uretprobe trampoline address, when known.
    pub fn entry(&mut self, tid: u32, sp: u64, ret: u64, trampoline: Option<u64>) {
        let stack = self.threads.entry(tid).or_default();
        // Anything at or below this slot belongs to calls that have returned already (their
        // return events were lost, or longjmp skipped them).
        if Some(ret) == trampoline {
            // A tail call from one return-probed function into another: the slot was hijacked
            // already and its original address is the one recorded for this same slot (the
            // kernel "chains" the two instances).
            while stack.last().is_some_and(|f| f.slot < sp) {
                stack.pop();
            }
            return;
        }
        while stack.last().is_some_and(|f| f.slot <= sp) {
            stack.pop();
        }
        if stack.len() < MAX_DEPTH {
            stack.push(PendingReturn { slot: sp, ret });
        }
    }

    /// Thread `tid` returned from a return-probed function; `sp` is the stack pointer at the
    /// return probe (one slot above the return-address slot, as `ret` popped it).
    pub fn ret(&mut self, tid: u32, sp: u64) {
        if let Some(stack) = self.threads.get_mut(&tid) {
            while stack.last().is_some_and(|f| f.slot < sp) {
                stack.pop();
            }
            if stack.is_empty() {
                self.threads.remove(&tid);
            }
        }
    }

    /// Thread `tid` exited.
    pub fn exit(&mut self, tid: u32) {
        self.threads.remove(&tid);
    }

    /// Replaces `out` with the pending returns of thread `tid` above stack pointer `sp` (the
    /// one of the stack being unwound), innermost first — the order
    /// [`Unwinder::unwind`](super::Unwinder::unwind) takes.
    pub fn pending(&self, tid: u32, sp: u64, out: &mut Vec<PendingReturn>) {
        out.clear();
        if let Some(stack) = self.threads.get(&tid) {
            out.extend(stack.iter().rev().filter(|f| f.slot > sp));
        }
    }

    /// Number of threads with pending entries.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRAMP: Option<u64> = Some(0x7fff_ffff_e000);

    fn pending(s: &ShadowStacks, tid: u32, sp: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        s.pending(tid, sp, &mut out);
        out.iter().map(|p| (p.slot, p.ret)).collect()
    }

    #[test]
    fn nested_calls_push_and_pop() {
        let mut s = ShadowStacks::new();
        s.entry(1, 0x1000, 0xa, TRAMP);
        s.entry(1, 0x0f00, 0xb, TRAMP);
        assert_eq!(pending(&s, 1, 0x0e00), vec![(0x0f00, 0xb), (0x1000, 0xa)]);
        // The capture at the inner function's own entry must not include its own slot.
        assert_eq!(pending(&s, 1, 0x0f00), vec![(0x1000, 0xa)]);
        s.ret(1, 0x0f08);
        assert_eq!(pending(&s, 1, 0x0e00), vec![(0x1000, 0xa)]);
        s.ret(1, 0x1008);
        assert_eq!(pending(&s, 1, 0x0e00), vec![]);
        assert_eq!(s.threads(), 0);
    }

    #[test]
    fn lost_returns_are_dropped_by_later_events() {
        let mut s = ShadowStacks::new();
        s.entry(1, 0x1000, 0xa, TRAMP);
        s.entry(1, 0x0f00, 0xb, TRAMP); // its return is lost
        s.entry(1, 0x0f00, 0xc, TRAMP); // called again from the same frame
        assert_eq!(pending(&s, 1, 0), vec![(0x0f00, 0xc), (0x1000, 0xa)]);
        s.ret(1, 0x1008); // returning from the outer one pops everything deeper too
        assert_eq!(pending(&s, 1, 0), vec![]);
    }

    #[test]
    fn chained_tail_call_keeps_the_original() {
        let mut s = ShadowStacks::new();
        s.entry(1, 0x1000, 0xa, TRAMP);
        s.entry(1, 0x1000, TRAMP.unwrap_or_default(), TRAMP);
        assert_eq!(pending(&s, 1, 0), vec![(0x1000, 0xa)]);
        s.entry(2, 0x1000, 0xd, TRAMP);
        assert_eq!(pending(&s, 2, 0), vec![(0x1000, 0xd)]);
        s.exit(2);
        assert_eq!(pending(&s, 2, 0), vec![]);
    }

    #[test]
    fn depth_is_bounded_like_the_kernel() {
        let mut s = ShadowStacks::new();
        for i in 0..100u64 {
            s.entry(1, 0x10_0000 - i * 0x10, i, TRAMP);
        }
        assert_eq!(pending(&s, 1, 0).len(), MAX_DEPTH);
    }
}
