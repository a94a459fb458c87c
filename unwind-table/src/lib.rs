//! Compact x86-64 unwind tables compiled from an ELF file's CFI, and the walk over them.
//!
//! `-g dwarf` today copies kilobytes of stack per event out of the kernel and unwinds them in
//! the recorder with framehop. Unwinding *in* the kernel instead (the OTel eBPF profiler's
//! "stack deltas", Parca) needs the CFI in a form a BPF program can search and apply without
//! a DWARF interpreter: this crate makes that form, once per binary, and walks it in Rust
//! exactly as the BPF walk will, so the tables can be proven against framehop before any BPF
//! uses them.
//!
//! # The table
//!
//! An [`UnwindTable`] covers a binary's whole 32-bit space of stated addresses (SVMA, as in
//! the ELF file) with rows, each saying from which address on one rule holds. It is three
//! `u32` arrays, what BPF maps get:
//!
//! - `pages`: for each 64 KiB page, the index of its first row (and one past the last page);
//! - `rows`: `(address & 0xffff) << 16 | rule index`, sorted within a page, each page opening
//!   with a row at its offset 0, so a lookup is one index step and a binary search of a few
//!   hundred rows at most, never leaving its page;
//! - `rules`: the binary's distinct [`Rule`] words (a few hundred: libc has 300).
//!
//! 4 bytes per row instead of 8 for (start, rule) pairs: libc's 28,298 rows take 114 KB. A
//! rule word says how to find the caller:
//!
//! - the CFA (the caller's stack pointer) is `rsp + N` or `rbp + N`
//!   ([`RuleKind::CfaRsp`], [`RuleKind::CfaRbp`]), or the lazy-binding PLT's
//!   `rsp + N + ((pc & 15) >= T) * 8` ([`RuleKind::Plt`]);
//! - the return address is at `CFA - 8` (the only return-address rule expressed);
//! - `rbp` is saved at `CFA - M`, or unchanged.
//!
//! Addresses outside every FDE get [`RuleKind::NoCfi`] (framehop's rule there: return at
//! `[sp]` in the first frame, frame pointers above it); code whose CFI says "no caller"
//! (`_start`, `clone3`) gets [`RuleKind::EndOfStack`]. What none of these can say (DWARF
//! expressions other than the PLT's, signal trampolines, a CFA in another register, offsets
//! that are not multiples of 8) is [`RuleKind::Fallback`]: the in-kernel walk stops there and
//! leaves the event to the copy-and-unwind path. Adjacent equal rows are merged.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data = std::fs::read("/lib/x86_64-linux-gnu/libc.so.6")?;
//! let elf = object::File::parse(&*data)?;
//! let table = urec_unwind_table::UnwindTable::from_elf(&elf)?;
//! let stats = table.stats();
//! println!("{} rows, {} bytes, {} bytes of code fall back", stats.rows, stats.bytes, stats.fallback_bytes);
//! # Ok(())
//! # }
//! ```
//!
//! # Which CFI, and why it mirrors framehop
//!
//! `.eh_frame` when the file has one, else `.debug_frame`: the choice framehop makes, so both
//! unwinders read the same rules. Every rule is applied with framehop's arithmetic and checks
//! (see [`walk`]): the point of the interpreter is that "table walk == framehop" on every
//! recorded event, which is what lets the BPF walk replace the copy without changing a stack.

mod cache;
mod compile;
mod rule;
pub mod walk;

pub use cache::TableCache;
pub use compile::{signal_trampolines, FallbackReason, Sections, Stats};
pub use rule::{Rule, RuleKind};

/// The unwind rules of one binary, by stated address; see the crate docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnwindTable {
    /// For each 64 KiB page of stated addresses, the index in `rows` of its first row, and
    /// one more entry: `rows.len()`. Addresses past the last page take the last row's rule.
    pages: Vec<u32>,
    /// `(address & 0xffff) << 16 | rule index`, sorted within each page; every page's first
    /// row is at its offset 0, so a lookup never looks outside its page.
    rows: Vec<u32>,
    /// The distinct [`Rule`] words, in order of first use.
    rules: Vec<u32>,
    stats: Stats,
}

/// Why a table could not be compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An FDE covers addresses at or above 4 GiB: rows are found through 16-bit pages of a
    /// 32-bit address space.
    #[error("CFI covers address {0:#x}, beyond the 32-bit address space of an unwind table")]
    AddressTooLarge(u64),
    /// More than 65,536 distinct rules (a row holds a 16-bit rule index).
    #[error("more than 65536 distinct unwind rules")]
    TooManyRules,
    /// Neither `.eh_frame` nor `.debug_frame`.
    #[error("no .eh_frame or .debug_frame")]
    NoCfi,
    /// Not an x86-64 ELF file.
    #[error("unsupported architecture {0:?}")]
    Architecture(object::Architecture),
}

/// Bits of a stated address that select a page.
pub const PAGE_SHIFT: u32 = 16;

impl UnwindTable {
    /// Builds the paged form of merged rows (sorted, the first at 0, all below 4 GiB).
    fn from_rows(merged: &[(u64, Rule)], mut stats: Stats) -> Result<Self, Error> {
        let mut rules: Vec<u32> = Vec::new();
        let mut index: std::collections::HashMap<u32, u16> = Default::default();
        let mut pages = Vec::new();
        let mut rows = Vec::new();
        for &(start, rule) in merged {
            let word = rule.to_word();
            let id = match index.get(&word) {
                Some(&id) => id,
                None => {
                    let id = u16::try_from(rules.len()).map_err(|_| Error::TooManyRules)?;
                    rules.push(word);
                    index.insert(word, id);
                    id
                }
            };
            let page = start >> PAGE_SHIFT;
            // Pages this row starts or runs into before the next row starts: each gets a row
            // at its offset 0 (the row's own start when it is at 0).
            while (pages.len() as u64) <= page {
                let first = (pages.len() as u64) << PAGE_SHIFT;
                pages.push(rows.len() as u32);
                if first < start {
                    // Carried over from the previous row.
                    let carried = *rows.last().ok_or(Error::NoCfi)? & 0xffff;
                    rows.push(carried);
                }
            }
            rows.push((((start & 0xffff) as u32) << 16) | u32::from(id));
        }
        pages.push(rows.len() as u32);
        stats.rows = rows.len();
        stats.distinct_rules = rules.len();
        stats.pages = pages.len() - 1;
        stats.max_page_rows = pages
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0);
        stats.bytes = 4 * (pages.len() + rows.len() + rules.len());
        Ok(UnwindTable {
            pages,
            rows,
            rules,
            stats,
        })
    }

    /// Page index: `pages()[p]..pages()[p + 1]` are the rows of 64 KiB page `p`; what a BPF
    /// array map of the table's pages holds.
    pub fn pages(&self) -> &[u32] {
        &self.pages
    }

    /// Rows: `(address & 0xffff) << 16 | rule index`.
    pub fn packed_rows(&self) -> &[u32] {
        &self.rows
    }

    /// The distinct rule words, indexed by a row's low 16 bits.
    pub fn rules(&self) -> &[u32] {
        &self.rules
    }

    /// Sizes and coverage, for `urec list --unwind-stats`.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The rule for stated address `svma`. `None` at or above 4 GiB. The search is the one the
    /// BPF walk makes: the page by the high bits, then a binary search of its rows by the low.
    pub fn lookup(&self, svma: u64) -> Option<Rule> {
        let svma = u32::try_from(svma).ok()?;
        let last_page = self.pages.len().checked_sub(2)?;
        let page = (svma >> PAGE_SHIFT) as usize;
        let row = if page > last_page {
            *self.rows.last()?
        } else {
            let rows = self
                .rows
                .get(self.pages[page] as usize..self.pages[page + 1] as usize)?;
            let low = svma & 0xffff;
            let i = rows.partition_point(|&r| r >> 16 <= low).checked_sub(1)?;
            rows[i]
        };
        Some(Rule::from_word(*self.rules.get((row & 0xffff) as usize)?))
    }

    /// The rows as (start, rule), in address order (including the rows that open pages).
    pub fn rows(&self) -> impl Iterator<Item = (u32, Rule)> + '_ {
        self.pages
            .windows(2)
            .enumerate()
            .flat_map(move |(page, w)| {
                self.rows[w[0] as usize..w[1] as usize]
                    .iter()
                    .map(move |&r| {
                        let start = ((page as u32) << PAGE_SHIFT) | (r >> 16);
                        let rule = Rule::from_word(self.rules[(r & 0xffff) as usize]);
                        (start, rule)
                    })
            })
    }
}

impl UnwindTable {
    /// A table from explicit rows (start, rule), sorted by start, the first at 0: for code
    /// without CFI whose rules are known otherwise, and for tests.
    pub fn from_rules(rows: &[(u32, Rule)]) -> Result<Self, Error> {
        if rows.first().is_none_or(|r| r.0 != 0) || rows.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(Error::NoCfi);
        }
        let rows: Vec<(u64, Rule)> = rows.iter().map(|&(s, r)| (u64::from(s), r)).collect();
        UnwindTable::from_rows(&rows, Stats::default())
    }

    /// A table whose every address falls back: for a binary mapped by a traced process whose
    /// CFI could not be compiled, so that its frames go to copy-and-unwind rather than being
    /// taken for unknown code.
    pub fn fallback_only() -> Self {
        UnwindTable::from_rows(&[(0, Rule::simple(RuleKind::Fallback))], Stats::default())
            .unwrap_or(UnwindTable {
                pages: vec![0, 1],
                rows: vec![0],
                rules: vec![Rule::simple(RuleKind::Fallback).to_word()],
                stats: Stats::default(),
            })
    }
}
