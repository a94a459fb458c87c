//! A test harness inside the recorder: with `UREC_TEST_UNWIND_TABLES=FILE` in its environment,
//! every stack the recorder unwinds with framehop is unwound a second time by walking the
//! binaries' compiled unwind tables ([`urec_unwind_table::walk`], what the in-kernel unwinder
//! will do), and one line per unwind is appended to FILE:
//!
//! - `equal N`: both gave the same N frames and the same ending;
//! - `fallback K N at PC`: the walk reached a row it leaves to copy-and-unwind after K frames, which
//!   are the first K of framehop's N;
//! - `MISMATCH ...`: anything else, with both results.
//!
//! This is how tests/unwind_tables.rs proves the tables on real recordings, where the stacks,
//! mappings and pending uretprobes are the ones the recorder really sees. Off (one `getenv` at
//! start) otherwise.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::sync::Arc;

use urec_unwind_table::walk::{walk, Regs as WalkRegs, WalkEnd};
use urec_unwind_table::{TableCache, UnwindTable};

use super::elf::ElfUnwindInfo;
use super::{in_hole, FileKey, Substitutions, Truncation, UnwindInput, UnwindOutcome, MAX_FRAMES};

/// The environment variable naming the file the results go to.
pub(super) const ENV: &str = "UREC_TEST_UNWIND_TABLES";

/// One module of a process: its address range, load bias and table.
type Module = (Range<u64>, u64, Arc<UnwindTable>);

pub(super) struct TableCheck {
    tables: TableCache<FileKey>,
    /// The same modules as framehop's, sorted by start.
    processes: HashMap<u32, Vec<Module>>,
    fallback: Arc<UnwindTable>,
    out: File,
    frames: Vec<u64>,
}

impl TableCheck {
    /// The check, when the environment asks for it.
    pub(super) fn from_env() -> Option<TableCheck> {
        let path = std::env::var_os(ENV)?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()?;
        Some(TableCheck {
            tables: TableCache::new(),
            processes: HashMap::new(),
            fallback: Arc::new(UnwindTable::fallback_only()),
            out,
            frames: Vec::new(),
        })
    }

    /// framehop got a module for `range` of `pid`.
    pub(super) fn add(
        &mut self,
        pid: u32,
        key: FileKey,
        info: &ElfUnwindInfo,
        range: Range<u64>,
        bias: u64,
    ) {
        let table = self
            .tables
            .get_or_compile(key, || UnwindTable::compile(&info.sections()))
            .unwrap_or_else(|_| self.fallback.clone());
        self.remove_overlapping(pid, &range);
        let modules = self.processes.entry(pid).or_default();
        let at = modules.partition_point(|m| m.0.start < range.start);
        modules.insert(at, (range, bias, table));
    }

    /// A mapping replaced whatever `range` of `pid` held.
    pub(super) fn remove_overlapping(&mut self, pid: u32, range: &Range<u64>) {
        if let Some(modules) = self.processes.get_mut(&pid) {
            modules.retain(|m| !(m.0.start < range.end && range.start < m.0.end));
        }
    }

    /// `pid` exec'd or exited.
    pub(super) fn forget(&mut self, pid: u32) {
        self.processes.remove(&pid);
    }

    /// Walks the tables over the same inputs framehop had and records the comparison with
    /// framehop's `frames` and `outcome`.
    pub(super) fn compare(
        &mut self,
        input: &UnwindInput<'_>,
        frames: &[u64],
        outcome: UnwindOutcome,
    ) {
        let UnwindInput {
            pid,
            regs,
            trampoline,
            ..
        } = *input;
        let line = match self.processes.get(&pid) {
            None => match outcome {
                UnwindOutcome::Truncated(Truncation::UnknownProcess) => {
                    format!("equal {}", frames.len())
                }
                _ => format!("MISMATCH pid {pid}: no modules; framehop {outcome:?} {frames:x?}"),
            },
            Some(modules) => {
                let table_for = |pc: u64| {
                    let i = modules.partition_point(|m| m.0.start <= pc);
                    let m = modules.get(i.checked_sub(1)?)?;
                    (pc < m.0.end).then_some((&*m.2, m.1))
                };
                let mut substitutions = Substitutions::new(input.pending_returns);
                let read = |addr: u64| {
                    let word = input.word(addr)?;
                    if Some(word) == trampoline {
                        return Some(substitutions.original(addr).unwrap_or(word));
                    }
                    Some(word)
                };
                let start = WalkRegs {
                    ip: regs.ip,
                    sp: regs.sp,
                    bp: regs.bp,
                };
                let end = walk(table_for, start, read, MAX_FRAMES, &mut self.frames);
                let stack_end = input.copy_end();
                let walked = match end {
                    WalkEnd::Complete => Some(UnwindOutcome::Complete),
                    WalkEnd::Fallback(_) => None,
                    WalkEnd::UnknownAddress(a)
                        if Some(a) == trampoline && self.frames.len() > 1 =>
                    {
                        Some(UnwindOutcome::Truncated(Truncation::Trampoline))
                    }
                    WalkEnd::UnknownAddress(_) => {
                        Some(UnwindOutcome::Truncated(Truncation::UnknownAddress))
                    }
                    WalkEnd::ReadFailed(a) if a >= stack_end => {
                        Some(UnwindOutcome::Truncated(Truncation::StackCopyEnd))
                    }
                    WalkEnd::ReadFailed(a) if in_hole(input.holes, a) => {
                        Some(UnwindOutcome::Truncated(Truncation::Unreadable))
                    }
                    WalkEnd::ReadFailed(_) | WalkEnd::BadStack => {
                        Some(UnwindOutcome::Truncated(Truncation::BadStack))
                    }
                    WalkEnd::TooDeep => Some(UnwindOutcome::Truncated(Truncation::TooDeep)),
                };
                match walked {
                    Some(o) if o == outcome && self.frames == frames => {
                        format!("equal {}", frames.len())
                    }
                    None if frames.starts_with(&self.frames) => {
                        let at = match end {
                            WalkEnd::Fallback(pc) => pc,
                            _ => 0,
                        };
                        format!("fallback {} {} at {at:#x}", self.frames.len(), frames.len())
                    }
                    _ => format!(
                        "MISMATCH pid {pid} regs {regs:x?}: framehop {outcome:?} {frames:x?}; tables {end:?} {:x?}",
                        self.frames
                    ),
                }
            }
        };
        let _ = writeln!(self.out, "{line}");
    }
}
