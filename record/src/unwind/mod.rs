//! DWARF (CFI) unwinding of captured user stacks, in the recorder.
//!
//! With `-g dwarf` the BPF entry program captures the user registers an unwind starts from
//! (`ip`, `sp`, `bp` on x86-64) and a copy of the stack from `sp` upward. perf keeps such copies
//! in its data file and unwinds at report time, which makes files of kilobytes per event and
//! slow reports. urec unwinds here instead, while the binaries and the live mappings are at
//! hand, and writes only the resulting return addresses — as small as a frame-pointer stack.
//!
//! Design:
//! - [framehop] does the unwinding. It recovers only `rip`, `rsp` and `rbp`, caches unwind rules
//!   per address, and uses `.eh_frame_hdr`'s binary search table directly, so a warm unwind of
//!   a 10-deep stack costs a few hundred nanoseconds.
//! - Each ELF file's CFI is read **once** and shared (cache keyed by build id, else device and
//!   inode, else path), however many processes map it and however often; failures are cached
//!   too, so a file that cannot be read costs one warning, not one per mapping.
//! - One framehop unwinder per process holds that process's modules (one per executable
//!   mapping, `base_avma` = the mapping's load bias); one rule cache serves all processes.
//! - Completion is judged here, not taken from framehop: framehop falls back to frame-pointer
//!   walking for addresses without CFI and treats `bp == 0` there as the end of the stack, so
//!   a stop inside the uretprobe trampoline looked like a normal end in the prototype. An
//!   unwind is complete only if it reached an end-of-stack CFI rule (`_start`, `clone3`) or a
//!   zero return address while every frame was inside a known module.
//! - Pending uretprobes: the kernel replaces the return address of every function with an
//!   active return probe by the trampoline address, in the real stack and hence in the copy.
//!   When the unwinder reads the trampoline from a slot, it substitutes the original from
//!   the [`PendingReturn`]s passed in (read from the kernel's `return_instances` by the BPF
//!   side).

mod check;
mod elf;

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder as _};
use urec_format::Mapping;
use urec_untrusted::Identity;

use self::elf::Bytes;
pub(crate) use self::elf::ElfUnwindInfo;
use urec_format::hash::FxHashMap;

/// Longest stack returned; deeper ones end as [`Truncation::TooDeep`]. Twice perf's default
/// (127): CFI unwinding is cheap per frame, and deep recursions are what flame graphs show.
pub const MAX_FRAMES: usize = 256;

/// The user registers at the probe that an x86-64 unwind starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Regs {
    /// Instruction pointer (`PT_REGS_IP`): the probed address.
    pub ip: u64,
    /// Stack pointer (`PT_REGS_SP`): the address the stack copy starts at.
    pub sp: u64,
    /// Frame pointer register (`rbp`), needed where CFI restores it or is absent.
    pub bp: u64,
}

/// An original return address hidden by a pending uretprobe: the stack slot at `slot` held
/// `ret` before the kernel replaced it by the trampoline address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingReturn {
    /// Address of the return-address slot: the stack pointer at the function's entry
    /// (`return_instance::stack` in the kernel). 0 when unknown.
    pub slot: u64,
    /// The original return address (`return_instance::orig_ret_vaddr`).
    pub ret: u64,
}

/// How an unwind ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnwindOutcome {
    /// The outermost frame was reached (end-of-stack CFI or a zero return address).
    Complete,
    /// The unwind stopped early; the stack should end in a `[truncated]` frame.
    Truncated(Truncation),
}

impl UnwindOutcome {
    /// Whether the stack is incomplete.
    pub fn is_truncated(self) -> bool {
        matches!(self, UnwindOutcome::Truncated(_))
    }
}

/// Why an unwind stopped early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Truncation {
    /// No mapping of the process is known at all.
    UnknownProcess,
    /// An address outside every known module (JIT code, an unreported mapping, a corrupt
    /// stack); that address is not in the output.
    UnknownAddress,
    /// A uretprobe trampoline address with no [`PendingReturn`] for it.
    Trampoline,
    /// The unwind needed stack bytes beyond the end of the copy (cut at `--stack-size`, or the
    /// stack's end seemed nearer than it was).
    StackCopyEnd,
    /// The unwind read below the copy or looped (inconsistent registers or CFI).
    BadStack,
    /// The unwind needed stack bytes from a page the kernel could not read at capture time
    /// (not present in memory).
    Unreadable,
    /// More than [`MAX_FRAMES`] frames.
    TooDeep,
}

/// How a file is recognised when another process maps it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum FileKey {
    BuildId(Vec<u8>),
    Inode { dev: u64, inode: u64 },
    Path(String),
}

/// The modules and trampoline address of one process.
#[derive(Default)]
struct Process {
    unwinder: UnwinderX86_64<Bytes>,
    /// Address ranges of the modules in `unwinder`, sorted by start, non-overlapping.
    modules: Vec<Range<u64>>,
    /// Start of the `[uprobes]` mapping, where uretprobes send returns.
    trampoline: Option<u64>,
    /// Signal trampolines (`__restore_rt`) in the modules, actual addresses.
    signal: Vec<Range<u64>>,
}

impl Process {
    fn contains(&self, addr: u64) -> bool {
        let i = self.modules.partition_point(|r| r.start <= addr);
        i > 0 && addr < self.modules[i - 1].end
    }

    fn in_signal_trampoline(&self, addr: u64) -> bool {
        self.signal.iter().any(|r| r.contains(&addr))
    }

    /// Drops every module overlapping `range` (a new mapping replaces them).
    fn remove_overlapping(&mut self, range: &Range<u64>) {
        let unwinder = &mut self.unwinder;
        self.modules.retain(|m| {
            let overlaps = m.start < range.end && range.start < m.end;
            if overlaps {
                unwinder.remove_module(m.start);
            }
            !overlaps
        });
        self.signal.retain(|s| {
            self.modules
                .iter()
                .any(|m| m.start <= s.start && s.end <= m.end)
        });
    }
}

/// Unwinds captured user stacks of every traced process; one per recording.
///
/// Feed it every executable [`Mapping`] (from the `/proc` snapshot and the side-band) with
/// [`Unwinder::add_mapping`], and process changes with [`Unwinder::exec`] and
/// [`Unwinder::exit`], in event order; then call [`Unwinder::unwind`] per captured stack.
pub struct Unwinder {
    files: HashMap<FileKey, Option<Arc<ElfUnwindInfo>>>,
    processes: HashMap<u32, Process>,
    /// framehop's rule caches; see [`RULE_CACHES`].
    caches: Vec<CacheX86_64>,
    /// Module additions and removals since `cache` was made; see [`CACHE_GENERATIONS`].
    module_changes: u32,
    warnings: Vec<String>,
    /// Earlier unwinds by their starting registers; see [`Memo`].
    memo: FxHashMap<(u32, Regs), Memo>,
    memo_hits: u64,
    /// Memo lookups that missed since the last hit; see [`MEMO_COLD_AFTER`].
    memo_misses: u32,
    /// Unwinds so far (wrapping), to sample a cold memo.
    unwinds: u64,
    /// Words the unwind at hand read, for its memo entry.
    reads: Vec<(u64, Option<u64>)>,
    /// The unwind-table cross-check of tests (see [`check`]), when its variable is set.
    check: Option<check::TableCheck>,
}

/// One earlier unwind, reusable for a new capture with the same pid and registers when every
/// stack word it read is the same in the new copy (and the trampoline, the pending returns
/// and the holes are the same): the unwind is a function of exactly those inputs and of the
/// process's mappings, and the memo is cleared whenever those change. A hot probe is hit from
/// a handful of call paths at the same stack depths, so nearly every capture is answered by
/// comparing a few dozen words instead of ≈1 µs of CFI unwinding; locals that change between
/// calls (loop counters, buffers) are never read, so they do not spoil the hit.
struct Memo {
    trampoline: Option<u64>,
    pending: Vec<PendingReturn>,
    holes: Vec<Range<u64>>,
    /// (address, word or `None` when unreadable) in the order the unwind read them.
    reads: Vec<(u64, Option<u64>)>,
    frames: Vec<u64>,
    outcome: UnwindOutcome,
}

/// Memo entries at most; the memo starts over when full.
const MEMO_ENTRIES: usize = 4096;

/// After this many memo misses in a row (a memo's worth), captures are taken not to repeat
/// (every call a new stack: `bench/targets/varied.c`, an interpreter), and the memo is
/// consulted and filled for one unwind in [`MEMO_COLD_SAMPLE`] only: logging every stack word
/// read, the lookup and the stored copy cost about a quarter of each unwind there (callgrind:
/// 165M instructions for 20,000 stacks before the memo, 206M with it) and never paid back. A
/// sampled hit makes the memo warm again, so a workload whose stacks start repeating gets it
/// back within a few dozen unwinds.
const MEMO_COLD_AFTER: u32 = MEMO_ENTRIES as u32;
const MEMO_COLD_SAMPLE: u64 = 32;

/// Whether the word at `addr` overlaps a range of the copy that could not be read.
fn in_hole(holes: &[Range<u64>], addr: u64) -> bool {
    holes
        .iter()
        .any(|h| addr < h.end && h.start < addr.saturating_add(8))
}

/// What one unwind starts from: an event's registers and stack copy, the copy's unreadable
/// ranges, and the return trampoline with the returns it stands for. One value, so that the
/// memo, framehop's unwind and the table cross-check take the same inputs.
#[derive(Clone, Copy)]
struct UnwindInput<'a> {
    pid: u32,
    regs: Regs,
    stack: &'a [u8],
    holes: &'a [Range<u64>],
    trampoline: Option<u64>,
    pending_returns: &'a [PendingReturn],
}

impl UnwindInput<'_> {
    /// The stack word at `addr`, `None` outside the copy or in a hole.
    fn word(&self, addr: u64) -> Option<u64> {
        stack_word(self.stack, self.regs.sp, self.holes, addr)
    }

    /// The first address past the copy.
    fn copy_end(&self) -> u64 {
        self.regs.sp.saturating_add(self.stack.len() as u64)
    }
}

/// The stack word at `addr` of a copy starting at `sp`, `None` where unreadable.
fn stack_word(stack: &[u8], sp: u64, holes: &[Range<u64>], addr: u64) -> Option<u64> {
    if in_hole(holes, addr) {
        return None;
    }
    let offset = usize::try_from(addr.checked_sub(sp)?).ok()?;
    let bytes = stack.get(offset..offset.checked_add(8)?)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(bytes);
    Some(u64::from_le_bytes(word))
}

/// Rule caches, each a framehop `CacheX86_64`: a direct-mapped table of 509 rules indexed by
/// `address % 509`. Two return addresses of a stack in the same slot evict each other on
/// every unwind, and each miss costs a binary search of `.eh_frame_hdr` and a CFI
/// evaluation; which addresses collide depends on where ASLR loaded the code, so with one
/// cache the recorder's unwind cost on `bench/targets/varied.c` (80 functions) varied by a
/// third from run to run (callgrind: 206M vs 280M instructions for the same 20,000 stacks).
/// An address uses cache `(address / 509) % RULE_CACHES`, so addresses that share a slot
/// are spread over the caches; 8 caches hold ≈4,000 rules in ≈200 KiB.
const RULE_CACHES: usize = 8;
/// framehop's slots per cache (its `CACHE_ENTRY_COUNT`).
const RULE_CACHE_SLOTS: u64 = 509;

fn new_rule_caches() -> Vec<CacheX86_64> {
    (0..RULE_CACHES).map(|_| CacheX86_64::new()).collect()
}

fn rule_cache_index(address: u64) -> usize {
    ((address / RULE_CACHE_SLOTS) % RULE_CACHES as u64) as usize
}

/// framehop tags cached rules with a global 16-bit generation counter that every module
/// addition or removal (and every new per-process unwinder) bumps; after 65,536 changes an old rule could pass as current. A
/// system-wide recording adds a handful of modules per exec, so the cache is replaced well
/// before the counter can wrap.
const CACHE_GENERATIONS: u32 = 30_000;

impl Default for Unwinder {
    fn default() -> Self {
        Self::new()
    }
}

impl Unwinder {
    /// An unwinder that knows no process yet.
    pub fn new() -> Self {
        Unwinder {
            files: HashMap::new(),
            processes: HashMap::new(),
            caches: new_rule_caches(),
            module_changes: 0,
            warnings: Vec::new(),
            memo: FxHashMap::default(),
            memo_hits: 0,
            memo_misses: 0,
            unwinds: 0,
            reads: Vec::new(),
            check: check::TableCheck::from_env(),
        }
    }

    /// A new executable mapping of `pid` (`mapping.pid` is not consulted). A mapping that
    /// overlaps earlier ones replaces them. The file's CFI is read the first time any process
    /// maps it; a file that cannot be used leaves a warning (see [`Unwinder::take_warnings`])
    /// and makes unwinds through it end as [`Truncation::UnknownAddress`].
    ///
    /// The `[uprobes]` special mapping gives the process's uretprobe trampoline address;
    /// other special mappings (`[vdso]`, …) are ignored.
    pub fn add_mapping(&mut self, pid: u32, mapping: &Mapping) {
        self.memo.clear();
        let range = mapping.start.0..mapping.end.0;
        if range.is_empty() {
            return;
        }
        if mapping.path.starts_with('[') {
            if mapping.path == "[uprobes]" {
                self.processes.entry(pid).or_default().trampoline = Some(range.start);
            }
            return;
        }
        let Some(info) = self.file(pid, mapping) else {
            // Still forget what the new mapping replaced.
            if let Some(process) = self.processes.get_mut(&pid) {
                process.remove_overlapping(&range);
            }
            if let Some(check) = &mut self.check {
                check.remove_overlapping(pid, &range);
            }
            return;
        };
        let Some(bias) = info.load_bias(mapping.start, mapping.offset) else {
            self.warnings.push(format!(
                "{}: no PT_LOAD segment contains file offset {:#x}; cannot unwind through it",
                mapping.path, mapping.offset
            ));
            return;
        };
        let module = Module::new(
            mapping.path.clone(),
            range.clone(),
            bias,
            ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma: info.text_svma.clone(),
                got_svma: info.got_svma.clone(),
                eh_frame_svma: info.eh_frame_svma.clone(),
                eh_frame: info.eh_frame.clone(),
                eh_frame_hdr_svma: info.eh_frame_hdr_svma.clone(),
                eh_frame_hdr: info.eh_frame_hdr.clone(),
                debug_frame: info.debug_frame.clone(),
                ..Default::default()
            },
        );
        // The addition, and at most about one removal or new process per addition.
        self.module_changes += 2;
        if self.module_changes >= CACHE_GENERATIONS {
            self.caches = new_rule_caches();
            self.module_changes = 0;
        }
        if let Some(check) = &mut self.check {
            check.add(pid, file_key(mapping), &info, range.clone(), bias);
        }
        let process = self.processes.entry(pid).or_default();
        process.remove_overlapping(&range);
        process.signal.extend(
            info.signal_trampolines()
                .iter()
                .map(|r| r.start.wrapping_add(bias)..r.end.wrapping_add(bias))
                .filter(|r| range.start <= r.start && r.end <= range.end),
        );
        let at = process.modules.partition_point(|m| m.start < range.start);
        process.modules.insert(at, range);
        process.unwinder.add_module(module);
    }

    /// `pid` called `execve`: all its mappings are gone.
    pub fn exec(&mut self, pid: u32) {
        self.memo.clear();
        self.processes.remove(&pid);
        if let Some(check) = &mut self.check {
            check.forget(pid);
        }
    }

    /// `pid` exited.
    pub fn exit(&mut self, pid: u32) {
        self.memo.clear();
        self.processes.remove(&pid);
        if let Some(check) = &mut self.check {
            check.forget(pid);
        }
    }

    /// Unwinds answered from the memo so far.
    pub fn memo_hits(&self) -> u64 {
        self.memo_hits
    }

    /// Whether any mapping of `pid` was added (and not forgotten by exec or exit since).
    pub fn knows(&self, pid: u32) -> bool {
        self.processes.contains_key(&pid)
    }

    /// Number of distinct files whose unwind tables are held (or known to be unusable).
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Warnings collected since the last call (files that could not be read), for the
    /// recorder to show once.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Unwinds one captured stack of `pid`.
    ///
    /// - `regs`: the registers at the probe.
    /// - `stack`: the bytes copied from `regs.sp` upward (any length; reads past the end stop
    ///   the unwind with [`Truncation::StackCopyEnd`]).
    /// - `trampoline`: the uretprobe trampoline address; `None` uses the `[uprobes]` mapping
    ///   seen by [`Unwinder::add_mapping`], if any.
    /// - `pending_returns`: the originals of slots that may hold the trampoline, innermost
    ///   first. A slot read as the trampoline takes the entry whose `slot` is its address, or,
    ///   when none matches, the first unused entry with `slot: 0` (for a source that knows
    ///   only the order). Chained instances of one slot need only one entry.
    ///
    /// `out` is replaced by the frames, innermost first: `regs.ip`, then return addresses
    /// (as read from the stack, not minus one). A truncated stack keeps the frames found so
    /// far; an address outside every module is not included.
    pub fn unwind(
        &mut self,
        pid: u32,
        regs: Regs,
        stack: &[u8],
        trampoline: Option<u64>,
        pending_returns: &[PendingReturn],
        out: &mut Vec<u64>,
    ) -> UnwindOutcome {
        self.unwind_with_holes(pid, regs, stack, &[], trampoline, pending_returns, out)
    }

    /// [`Unwinder::unwind`] of a copy with holes: `holes` are address ranges inside the copy
    /// whose bytes could not be read (zeros in `stack`); an unwind that needs them ends as
    /// [`Truncation::Unreadable`].
    #[allow(clippy::too_many_arguments)]
    pub fn unwind_with_holes(
        &mut self,
        pid: u32,
        regs: Regs,
        stack: &[u8],
        holes: &[Range<u64>],
        trampoline: Option<u64>,
        pending_returns: &[PendingReturn],
        out: &mut Vec<u64>,
    ) -> UnwindOutcome {
        let input = UnwindInput {
            pid,
            regs,
            stack,
            holes,
            trampoline,
            pending_returns,
        };
        let outcome = self.unwind_memoized(&input, out);
        self.check(&input, out, outcome);
        outcome
    }

    /// [`Unwinder::unwind_with_holes`] through the memo (see [`Memo`]).
    fn unwind_memoized(&mut self, input: &UnwindInput<'_>, out: &mut Vec<u64>) -> UnwindOutcome {
        let UnwindInput {
            pid,
            regs,
            trampoline,
            pending_returns,
            holes,
            ..
        } = *input;
        // A memo that keeps missing is consulted for one unwind in MEMO_COLD_SAMPLE only.
        self.unwinds = self.unwinds.wrapping_add(1);
        if self.memo_misses >= MEMO_COLD_AFTER && !self.unwinds.is_multiple_of(MEMO_COLD_SAMPLE) {
            return self.unwind_uncached(input, out, None);
        }
        if let Some(m) = self.memo.get(&(pid, regs)) {
            if m.trampoline == trampoline
                && m.pending == pending_returns
                && m.holes == holes
                && m.reads.iter().all(|&(addr, word)| input.word(addr) == word)
            {
                out.clear();
                out.extend_from_slice(&m.frames);
                self.memo_hits += 1;
                self.memo_misses = 0;
                return m.outcome;
            }
        }
        self.memo_misses = self.memo_misses.saturating_add(1);
        let mut reads = std::mem::take(&mut self.reads);
        reads.clear();
        let outcome = self.unwind_uncached(input, out, Some(&mut reads));
        if self.memo.len() >= MEMO_ENTRIES {
            self.memo.clear();
        }
        self.memo.insert(
            (pid, regs),
            Memo {
                trampoline,
                pending: pending_returns.to_vec(),
                holes: holes.to_vec(),
                reads: reads.clone(),
                frames: out.clone(),
                outcome,
            },
        );
        self.reads = reads;
        outcome
    }

    /// Hands an unwind to the table cross-check, when on.
    fn check(&mut self, input: &UnwindInput<'_>, out: &[u64], outcome: UnwindOutcome) {
        if let Some(check) = &mut self.check {
            let trampoline = input
                .trampoline
                .or_else(|| self.processes.get(&input.pid).and_then(|p| p.trampoline));
            check.compare(
                &UnwindInput {
                    trampoline,
                    ..*input
                },
                out,
                outcome,
            );
        }
    }

    /// Unwinds with framehop, logging every stack word read into `reads`.
    fn unwind_uncached(
        &mut self,
        input: &UnwindInput<'_>,
        out: &mut Vec<u64>,
        mut reads: Option<&mut Vec<(u64, Option<u64>)>>,
    ) -> UnwindOutcome {
        let UnwindInput { pid, regs, .. } = *input;
        out.clear();
        out.push(regs.ip);
        let Some(process) = self.processes.get(&pid) else {
            return UnwindOutcome::Truncated(Truncation::UnknownProcess);
        };
        if !process.contains(regs.ip) {
            return UnwindOutcome::Truncated(Truncation::UnknownAddress);
        }
        let trampoline = input.trampoline.or(process.trampoline);
        let stack_end = input.copy_end();

        let mut substitutions = Substitutions::new(input.pending_returns);
        let mut read_stack = |addr: u64| -> Result<u64, ()> {
            let word = input.word(addr);
            if let Some(reads) = reads.as_mut() {
                reads.push((addr, word));
            }
            let value = word.ok_or(())?;
            if Some(value) == trampoline {
                return Ok(substitutions.original(addr).unwrap_or(value));
            }
            Ok(value)
        };

        // Frame by frame (what framehop's `iter_frames` does), each with the rule cache of
        // its address: see [`RULE_CACHES`].
        let mut fh_regs = UnwindRegsX86_64::new(regs.ip, regs.sp, regs.bp);
        let mut address = FrameAddress::InstructionPointer(regs.ip);
        loop {
            // A signal handler returned into the trampoline: framehop cannot evaluate its CFI
            // (expressions over the signal frame), so the interrupted registers are read here,
            // as the in-kernel walk reads them (urec_unwind_table::walk, `SignalFrame`).
            if matches!(address, FrameAddress::ReturnAddress(_))
                && process.in_signal_trampoline(address.address_for_lookup())
            {
                use urec_unwind_table::walk::{SIGNAL_BP, SIGNAL_IP, SIGNAL_SP};
                let sp = fh_regs.sp();
                let mut word = |off: u64| -> Result<u64, UnwindOutcome> {
                    let at = sp.wrapping_add(off);
                    read_stack(at).map_err(|()| {
                        UnwindOutcome::Truncated(if at >= stack_end {
                            Truncation::StackCopyEnd
                        } else if in_hole(input.holes, at) {
                            Truncation::Unreadable
                        } else {
                            Truncation::BadStack
                        })
                    })
                };
                let (bp, new_sp, ip) = match (word(SIGNAL_BP), word(SIGNAL_SP), word(SIGNAL_IP)) {
                    (Ok(bp), Ok(sp), Ok(ip)) => (bp, sp, ip),
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
                };
                if ip == 0 {
                    return UnwindOutcome::Complete;
                }
                if !process.contains(ip) {
                    return UnwindOutcome::Truncated(Truncation::UnknownAddress);
                }
                if out.len() == MAX_FRAMES {
                    return UnwindOutcome::Truncated(Truncation::TooDeep);
                }
                out.push(ip);
                fh_regs = UnwindRegsX86_64::new(ip, new_sp, bp);
                address = FrameAddress::InstructionPointer(ip);
                continue;
            }
            let cache = &mut self.caches[rule_cache_index(address.address_for_lookup())];
            let next = process
                .unwinder
                .unwind_frame(address, &mut fh_regs, cache, &mut read_stack)
                .and_then(|ret| match ret {
                    Some(ret) => FrameAddress::from_return_address(ret)
                        .map(Some)
                        .ok_or(framehop::Error::ReturnAddressIsNull),
                    None => Ok(None),
                });
            match next {
                Ok(Some(frame)) => {
                    address = frame;
                    let addr = frame.address();
                    if !process.contains(frame.address_for_lookup()) {
                        let why = if Some(addr) == trampoline {
                            Truncation::Trampoline
                        } else {
                            Truncation::UnknownAddress
                        };
                        return UnwindOutcome::Truncated(why);
                    }
                    if out.len() == MAX_FRAMES {
                        return UnwindOutcome::Truncated(Truncation::TooDeep);
                    }
                    out.push(addr);
                }
                Ok(None) | Err(framehop::Error::ReturnAddressIsNull) => {
                    return UnwindOutcome::Complete
                }
                Err(framehop::Error::CouldNotReadStack(addr)) if addr >= stack_end => {
                    return UnwindOutcome::Truncated(Truncation::StackCopyEnd)
                }
                Err(framehop::Error::CouldNotReadStack(addr)) if in_hole(input.holes, addr) => {
                    return UnwindOutcome::Truncated(Truncation::Unreadable)
                }
                Err(_) => return UnwindOutcome::Truncated(Truncation::BadStack),
            }
        }
    }

    /// The unwind info of the file `mapping` maps (read once, shared with framehop's modules),
    /// `None` where framehop gets no module: for the in-kernel walk's tables (`crate::kunwind`).
    pub(crate) fn file_info(&mut self, pid: u32, mapping: &Mapping) -> Option<Arc<ElfUnwindInfo>> {
        self.file(pid, mapping)
    }

    /// Puts a file's unwind info, read ahead of its first mapping (`kunwind`'s precompile),
    /// into the cache under `key`, unless the file is known already.
    pub(crate) fn seed_file(&mut self, key: FileKey, info: Arc<ElfUnwindInfo>) {
        self.files.entry(key).or_insert(Some(info));
    }

    /// The cached unwind info of the file `mapping` maps, reading it on first use.
    fn file(&mut self, pid: u32, mapping: &Mapping) -> Option<Arc<ElfUnwindInfo>> {
        let key = file_key(mapping);
        if let Some(cached) = self.files.get(&key) {
            return cached.clone();
        }
        let read = open_mapped_file(pid, mapping).and_then(|file| {
            let info = ElfUnwindInfo::read(&file)?;
            if let (Some(want), Some(have)) = (&mapping.build_id, &info.build_id) {
                if !want.0.is_empty() && want.0 != *have {
                    return Err(
                        "the file on disk has a different build id than the mapped one \
                                (replaced since?)"
                            .to_string(),
                    );
                }
            }
            if !info.has_cfi() {
                return Err(
                    "no .eh_frame or .debug_frame; only frame pointers can be followed \
                            through it"
                        .to_string(),
                );
            }
            Ok(Arc::new(info))
        });
        let entry = match read {
            Ok(info) => Some(info),
            Err(why) => {
                self.warnings.push(format!("{}: {why}", mapping.path));
                None
            }
        };
        self.files.insert(key, entry.clone());
        entry
    }
}

/// How the file behind `mapping` is recognised in the caches.
pub(crate) fn file_key(mapping: &Mapping) -> FileKey {
    if let Some(id) = mapping.build_id.as_ref().filter(|id| !id.0.is_empty()) {
        FileKey::BuildId(id.0.clone())
    } else if mapping.inode != 0 {
        FileKey::Inode {
            dev: mapping.dev,
            inode: mapping.inode,
        }
    } else {
        FileKey::Path(mapping.path.clone())
    }
}

/// Opens the file behind `mapping`, preferring the exact mapped file.
///
/// `/proc/PID/map_files/START-END` is the very file the process mapped, even when it was
/// deleted, replaced or lives in another mount namespace; it needs the process alive and root.
/// The path itself (through the process's root when it differs) is the fallback, checked
/// against the mapping's inode when known. Every open goes through
/// [`urec_untrusted::open`]: the traced process owns these paths and may have put a FIFO there,
/// whose plain open would block the recorder for good.
fn open_mapped_file(pid: u32, mapping: &Mapping) -> Result<File, String> {
    let map_file = format!(
        "/proc/{pid}/map_files/{:x}-{:x}",
        mapping.start, mapping.end
    );
    if let Ok(file) = urec_untrusted::open(Path::new(&map_file)) {
        return Ok(file);
    }
    let mut last_err = String::from("not found");
    for path in [
        format!("/proc/{pid}/root{}", mapping.path),
        mapping.path.clone(),
    ] {
        match urec_untrusted::open(Path::new(&path)) {
            Ok(file) => {
                // The inode only: the side-band's device is the superblock's, which is not
                // `st_dev` on btrfs subvolumes, and the inode alone is what this check always was.
                let same = Identity::of(&file).is_ok_and(|id| id.matches(0, mapping.inode));
                if !same {
                    last_err = format!("{path} is no longer the mapped file (inode differs)");
                    continue;
                }
                return Ok(file);
            }
            Err(e) => last_err = format!("cannot open {path}: {e}"),
        }
    }
    Err(last_err)
}

/// The slots substituted so far in one unwind, so that a slot read twice reads the same.
struct Substitutions<'a> {
    pending: &'a [PendingReturn],
    used: u64,
    done: [(u64, u64); 8],
    done_len: usize,
}

impl<'a> Substitutions<'a> {
    fn new(pending: &'a [PendingReturn]) -> Self {
        Substitutions {
            pending,
            used: 0,
            done: [(0, 0); 8],
            done_len: 0,
        }
    }

    fn original(&mut self, slot: u64) -> Option<u64> {
        if let Some(&(_, ret)) = self.done[..self.done_len].iter().find(|d| d.0 == slot) {
            return Some(ret);
        }
        let index = self
            .pending
            .iter()
            .position(|p| p.slot == slot)
            .or_else(|| {
                (0..self.pending.len().min(64))
                    .find(|&i| self.pending[i].slot == 0 && self.used & (1 << i) == 0)
            })?;
        if index < 64 {
            self.used |= 1 << index;
        }
        let ret = self.pending[index].ret;
        if self.done_len < self.done.len() {
            self.done[self.done_len] = (slot, ret);
            self.done_len += 1;
        }
        Some(ret)
    }
}
