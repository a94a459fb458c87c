//! Control flow: which bytes of a function are instructions, found by following its branches
//! from its entry, with a linear sweep for the parts no direct branch reaches.
//!
//! A uprobe replaces one byte with `int3`, so it is only safe where every instruction the
//! program executes either starts at that byte or does not cover it. Decoding linearly from
//! the function's start (what `objdump -d` does, and what urec did) trusts that the bytes are
//! one stream of instructions. Hand-written code breaks that: `jmp 1f; .byte 0xb8; 1: mov
//! $0x11223344,%ecx` decodes linearly as `mov $0x223344b9,%eax` at +0x2 and an `adc` at +0x7,
//! so a linear check accepts +0x7, which lies inside the `mov` the program really executes
//! (with a probe there the program printed `cc223344`), and refuses +0x3, where it starts.
//!
//! [`ControlFlow::explore`] therefore walks the code the way the CPU can run it: from the
//! entry, through every fall-through, both sides of each conditional branch, every direct jump
//! and call target inside the function, stopping at returns, indirect jumps and instructions
//! that do not continue (`ud2`, `int3`, `hlt`). Then it sweeps linearly through the bytes the
//! walk did not reach (code behind a jump table, padding), starting each sweep where a reached
//! instruction ends; a swept instruction that would run into a reached one is not code (data
//! the walk jumps over), and so are bytes that do not decode. [`ControlFlow::check`] accepts a
//! byte where the walk and the sweep agree an instruction starts and no instruction of either
//! covers it, and otherwise says which instruction does, and whether two decodings overlap
//! there (one path starts an instruction inside another path's).
//!
//! Indirect jumps and calls end a path without a refusal: most large functions have them
//! (switch tables, tail calls through a pointer), and the sweep still decodes what follows.
//! The walk cannot know where they go, so code reached only through them is trusted to the
//! sweep, as before.
//!
//! # Cost
//!
//! For a window of N bytes, the walk decodes each address at most once (a reached address is
//! never queued again, and each decode queues at most two successors), and the sweep decodes
//! each unreached byte at most once as an instruction start: at most 2N decodes and O(N)
//! memory (a byte map plus one entry per instruction), whatever the branches look like.
//! Callers bound N by the function's size (its symbol or `.eh_frame` entry).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind};

use crate::insn::{self, Insn};

/// The longest x86-64 instruction, in bytes.
const MAX_INSN: u64 = 15;

/// What an instruction does with control, as far as finding instructions goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// Continues with the next instruction.
    Next,
    /// `jmp rel`: continues at the target only.
    Jump(u64),
    /// `jcc`, `loop`, `jrcxz`, `xbegin`: the target or the next instruction.
    Branch(u64),
    /// `call rel`: the target (followed when inside the window: a local thunk), then the next
    /// instruction when it returns.
    Call(u64),
    /// `jmp *...`: continues where only the running program knows.
    IndirectJump,
    /// `call *...`: continues with the next instruction when it returns.
    IndirectCall,
    /// `ret`, `retf`, `iret`: leaves the function.
    Return,
    /// `int3`, `ud0`/`ud1`/`ud2`, `hlt`: execution does not continue past it.
    Stop,
}

/// How the walk first came to an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reach {
    /// By falling through from the entry.
    Entry,
    /// By falling through from the target of the jump, branch or call at this address.
    Branch(u64),
}

/// An instruction the walk reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Step {
    /// Its length in bytes.
    pub len: u8,
    /// What it does with control.
    pub flow: Flow,
    /// How the walk came here first (for messages: "the jump at f+0x0 reaches it").
    pub reach: Reach,
}

/// A run of bytes the walk did not reach and the sweep found to be no code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotCode {
    /// Where the run starts.
    pub start: u64,
    /// Where it ends: a reached instruction, or the end of the window.
    pub end: u64,
    /// What the bytes at `start` decode to when it is an instruction that runs past `end`
    /// into a reached one; None when they decode to nothing.
    pub decoded: Option<Insn>,
}

/// The instructions of one function (or any window of code with one entry).
#[derive(Clone, Debug)]
pub struct ControlFlow {
    start: u64,
    code: Vec<u8>,
    reached: BTreeMap<u64, Step>,
    swept: BTreeMap<u64, u8>,
    not_code: Vec<NotCode>,
    undecodable: Vec<u64>,
}

/// Why an address is no place for a probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotABoundary {
    /// It lies inside an instruction.
    Inside {
        /// Where the covering instruction starts.
        at: u64,
        /// The covering instruction.
        insn: Insn,
        /// How the walk reached it; None when only the sweep found it.
        reach: Option<Reach>,
        /// Another decoding that starts an instruction at the address itself, which the
        /// covering instruction overlaps.
        overlap: Option<Overlap>,
    },
    /// It lies in bytes the walk does not reach and that do not decode as code there.
    NotCode(NotCode),
    /// It lies outside the decoded window, or the code does not decode up to it.
    Unknown,
}

/// A decoding that starts an instruction where another instruction covers the byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// A path of the walk reaches an instruction starting there, this way.
    Path(Reach),
    /// Decoding linearly from the start puts this instruction there.
    Linear(Insn),
}

impl ControlFlow {
    /// Walks and sweeps `code`, whose first byte is at `start` and is the only entry.
    pub fn explore(code: &[u8], start: u64) -> ControlFlow {
        let (reached, undecodable) = walk(code, start);
        let (swept, not_code) = sweep(code, start, &reached);
        ControlFlow {
            start,
            code: code.to_vec(),
            reached,
            swept,
            not_code,
            undecodable,
        }
    }

    fn contains(&self, addr: u64) -> bool {
        addr >= self.start && addr - self.start < self.code.len() as u64
    }

    /// The instructions the walk reached from the entry, by address.
    pub fn reached(&self) -> impl Iterator<Item = (u64, &Step)> + '_ {
        self.reached.iter().map(|(&a, s)| (a, s))
    }

    /// The instruction the walk reached at `addr`, if any.
    pub fn step_at(&self, addr: u64) -> Option<&Step> {
        self.reached.get(&addr)
    }

    /// Every address where an instruction starts: the reached ones and the swept ones.
    pub fn instruction_starts(&self) -> BTreeSet<u64> {
        self.reached
            .keys()
            .chain(self.swept.keys())
            .copied()
            .collect()
    }

    /// The reached returns (`ret`, `retf`, `iret`): where a function's paths from its entry
    /// leave it by returning.
    pub fn rets(&self) -> impl Iterator<Item = u64> + '_ {
        self.reached
            .iter()
            .filter(|(_, s)| s.flow == Flow::Return)
            .map(|(&a, _)| a)
    }

    /// The reached indirect jumps: where the walk loses track (switch tables, tail calls
    /// through a pointer). Code behind them is known only from the sweep.
    pub fn indirect_jumps(&self) -> impl Iterator<Item = u64> + '_ {
        self.reached
            .iter()
            .filter(|(_, s)| s.flow == Flow::IndirectJump)
            .map(|(&a, _)| a)
    }

    /// Addresses where a path ran into bytes that decode as no instruction (or past the
    /// window's end).
    pub fn undecodable(&self) -> &[u64] {
        &self.undecodable
    }

    /// The bytes the sweep found to be no code.
    pub fn not_code(&self) -> &[NotCode] {
        &self.not_code
    }

    /// The entry block: the instructions that run on every call before anything can branch,
    /// from the entry up to and including the first branch, call, return or stop, or up to
    /// the first instruction some branch targets (which starts another block).
    pub fn entry_block(&self) -> Vec<u64> {
        let targets: BTreeSet<u64> = self
            .reached
            .values()
            .filter_map(|s| match s.flow {
                Flow::Jump(t) | Flow::Branch(t) | Flow::Call(t) => Some(t),
                _ => None,
            })
            .collect();
        let mut block = Vec::new();
        let mut ip = self.start;
        while let Some(step) = self.reached.get(&ip) {
            if !block.is_empty() && targets.contains(&ip) {
                break;
            }
            block.push(ip);
            if step.flow != Flow::Next {
                break;
            }
            ip += u64::from(step.len);
        }
        block
    }

    /// Whether a probe may go at `addr`: an instruction starts there on every decoding
    /// that reaches it, and none covers it.
    pub fn check(&self, addr: u64) -> Result<(), NotABoundary> {
        if !self.contains(addr) {
            return Err(NotABoundary::Unknown);
        }
        if let Some((at, _)) = covering(&self.reached, addr, |s| s.len) {
            let insn = self.describe_at(at).ok_or(NotABoundary::Unknown)?;
            let overlap = match self.reached.get(&addr) {
                Some(s) => Some(Overlap::Path(s.reach)),
                None => self.linear_insn_at(addr).map(Overlap::Linear),
            };
            return Err(NotABoundary::Inside {
                at,
                reach: self.reached.get(&at).map(|s| s.reach),
                insn,
                overlap,
            });
        }
        if self.reached.contains_key(&addr) || self.swept.contains_key(&addr) {
            return Ok(());
        }
        if let Some((at, _)) = covering(&self.swept, addr, |l| *l) {
            let insn = self.describe_at(at).ok_or(NotABoundary::Unknown)?;
            return Err(NotABoundary::Inside {
                at,
                insn,
                reach: None,
                overlap: None,
            });
        }
        match self
            .not_code
            .iter()
            .find(|g| g.start <= addr && addr < g.end)
        {
            Some(g) => Err(NotABoundary::NotCode(g.clone())),
            None => Err(NotABoundary::Unknown),
        }
    }

    fn describe_at(&self, addr: u64) -> Option<Insn> {
        let from = usize::try_from(addr.checked_sub(self.start)?).ok()?;
        insn::decode(self.code.get(from..)?, addr)
    }

    /// The instruction a linear decoding from the start puts at `addr`, if it puts one there.
    fn linear_insn_at(&self, addr: u64) -> Option<Insn> {
        let mut decoder = Decoder::with_ip(64, &self.code, self.start, DecoderOptions::NONE);
        while decoder.can_decode() && decoder.ip() < addr {
            if decoder.decode().is_invalid() {
                return None;
            }
        }
        (decoder.ip() == addr)
            .then(|| self.describe_at(addr))
            .flatten()
    }

    /// Why `addr` takes no probe, for a message: `func` names the function, `name` an address
    /// (`f+0x3`).
    pub fn explain(
        &self,
        why: &NotABoundary,
        addr: u64,
        func: &str,
        name: &dyn Fn(u64) -> String,
    ) -> String {
        let reach = |r: Reach| match r {
            Reach::Entry => format!("{func}'s entry"),
            Reach::Branch(b) => format!(
                "the {} at {}",
                match self.reached.get(&b).map(|s| s.flow) {
                    Some(Flow::Jump(_)) => "jump",
                    Some(Flow::Call(_)) => "call",
                    _ => "conditional branch",
                },
                name(b)
            ),
        };
        match why {
            NotABoundary::Inside {
                at,
                insn,
                reach: r,
                overlap,
            } => {
                let end = at + insn.len as u64;
                let mut s = format!(
                    "{} lies inside the {}-byte instruction `{}` at {}",
                    name(addr),
                    insn.len,
                    insn.text,
                    name(*at)
                );
                match (overlap, r) {
                    (Some(Overlap::Path(other)), Some(r)) => {
                        let _ = write!(
                            s,
                            ", which {} reaches, while {} reaches an instruction starting at {} \
                             itself: the two paths' instructions overlap there",
                            reach(*r),
                            reach(*other),
                            name(addr)
                        );
                    }
                    (Some(Overlap::Linear(other)), Some(r)) => {
                        let _ = write!(
                            s,
                            ", which {} reaches; decoding straight from {func}'s start finds \
                             `{}` at {}, but that decoding overlaps the instruction the code \
                             executes (the bytes a jump skips are not instructions)",
                            reach(*r),
                            other.text,
                            name(addr)
                        );
                    }
                    _ => {}
                }
                let _ = write!(
                    s,
                    ": a probe there would corrupt it; the nearest instruction boundaries are \
                     {} and {}",
                    name(*at),
                    name(end)
                );
                s
            }
            NotABoundary::NotCode(g) => match &g.decoded {
                Some(d) => format!(
                    "{} lies in bytes no path from {func}'s entry reaches ({} to {}): decoding \
                     them gives `{}` at {}, which would run into the instruction at {} that the \
                     code executes, so they are data a jump skips, not code; the nearest \
                     instruction boundary after them is {}",
                    name(addr),
                    name(g.start),
                    name(g.end),
                    d.text,
                    name(g.start),
                    name(g.end),
                    name(g.end)
                ),
                None => format!(
                    "{} lies in bytes no path from {func}'s entry reaches ({} to {}) that \
                     do not decode as instructions",
                    name(addr),
                    name(g.start),
                    name(g.end)
                ),
            },
            NotABoundary::Unknown => format!(
                "the instructions of {func} do not decode up to {}, so urec cannot tell \
                 whether it is an instruction boundary",
                name(addr)
            ),
        }
    }
}

/// Decodes the instruction at `addr` of the code `decoder` reads (which starts at `start`).
fn decode_at(decoder: &mut Decoder<'_>, start: u64, addr: u64) -> Option<Instruction> {
    let pos = usize::try_from(addr.checked_sub(start)?).ok()?;
    decoder.set_position(pos).ok()?;
    decoder.set_ip(addr);
    let insn = decoder.decode();
    (!insn.is_invalid()).then_some(insn)
}

/// Follows every path from `start`: the reached instructions, and where a path met bytes
/// that do not decode. Each address is decoded at most once.
fn walk(code: &[u8], start: u64) -> (BTreeMap<u64, Step>, Vec<u64>) {
    let mut reached: BTreeMap<u64, Step> = BTreeMap::new();
    let mut undecodable = Vec::new();
    let end = start + code.len() as u64;
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut work: Vec<(u64, Reach)> = vec![(start, Reach::Entry)];
    while let Some((ip, reach)) = work.pop() {
        if ip < start || ip >= end || reached.contains_key(&ip) {
            continue;
        }
        let Some(insn) = decode_at(&mut decoder, start, ip) else {
            undecodable.push(ip);
            continue;
        };
        let flow = flow_of(&insn);
        let next = ip + insn.len() as u64;
        reached.insert(
            ip,
            Step {
                len: insn.len() as u8,
                flow,
                reach,
            },
        );
        match flow {
            Flow::Next | Flow::IndirectCall => work.push((next, reach)),
            Flow::Jump(t) => work.push((t, Reach::Branch(ip))),
            Flow::Branch(t) | Flow::Call(t) => {
                work.push((next, reach));
                work.push((t, Reach::Branch(ip)));
            }
            Flow::IndirectJump | Flow::Return | Flow::Stop => {}
        }
    }
    undecodable.sort_unstable();
    undecodable.dedup();
    (reached, undecodable)
}

/// Sweeps linearly through each run of bytes no reached instruction covers, from its start:
/// the instructions found, and the runs that are no code (they do not decode, or an
/// instruction would run into a reached one). Each byte starts at most one decode.
fn sweep(
    code: &[u8],
    start: u64,
    reached: &BTreeMap<u64, Step>,
) -> (BTreeMap<u64, u8>, Vec<NotCode>) {
    let n = code.len();
    let mut covered = vec![false; n];
    for (&ip, step) in reached {
        let from = (ip - start) as usize;
        let to = (from + usize::from(step.len)).min(n);
        covered[from..to].iter_mut().for_each(|c| *c = true);
    }
    let mut swept = BTreeMap::new();
    let mut not_code = Vec::new();
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    let mut i = 0usize;
    while i < n {
        if covered[i] {
            i += 1;
            continue;
        }
        let gap_end = covered[i..].iter().position(|&c| c).map_or(n, |p| i + p);
        let mut at = i;
        while at < gap_end {
            let ip = start + at as u64;
            let Some(insn) = decode_at(&mut decoder, start, ip) else {
                not_code.push(NotCode {
                    start: ip,
                    end: start + gap_end as u64,
                    decoded: None,
                });
                break;
            };
            let next = at + insn.len();
            if next > gap_end {
                not_code.push(NotCode {
                    start: ip,
                    end: start + gap_end as u64,
                    decoded: Some(insn::describe(&insn)),
                });
                break;
            }
            swept.insert(ip, insn.len() as u8);
            at = next;
        }
        i = gap_end;
    }
    (swept, not_code)
}

/// The entry of `map` (instruction starts to lengths) whose instruction covers `addr` without
/// starting there.
fn covering<T>(map: &BTreeMap<u64, T>, addr: u64, len: impl Fn(&T) -> u8) -> Option<(u64, &T)> {
    map.range(addr.saturating_sub(MAX_INSN - 1)..addr)
        .find(|(&a, v)| a + u64::from(len(v)) > addr)
        .map(|(&a, v)| (a, v))
}

/// By mnemonic and operand kind, which the decoder always provides (iced-x86's flow-control
/// tables need its `instr_info` feature: a larger build for a dozen cases).
fn flow_of(insn: &Instruction) -> Flow {
    let direct = matches!(
        insn.op0_kind(),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    );
    match insn.mnemonic() {
        Mnemonic::Jmp if direct => Flow::Jump(insn.near_branch_target()),
        Mnemonic::Jmp => Flow::IndirectJump,
        Mnemonic::Call if direct => Flow::Call(insn.near_branch_target()),
        Mnemonic::Call => Flow::IndirectCall,
        // Every other instruction with a near-branch operand (`jcc`, `loop*`, `jrcxz`,
        // `xbegin`) goes there or on.
        _ if direct => Flow::Branch(insn.near_branch_target()),
        Mnemonic::Ret | Mnemonic::Retf | Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq => {
            Flow::Return
        }
        Mnemonic::Int3 | Mnemonic::Ud0 | Mnemonic::Ud1 | Mnemonic::Ud2 | Mnemonic::Hlt => {
            Flow::Stop
        }
        _ => Flow::Next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: u64 = 0x1000;

    fn name(a: u64) -> String {
        format!("f+{:#x}", a - F)
    }

    fn explain(code: &[u8], addr: u64) -> String {
        let flow = ControlFlow::explore(code, F);
        let why = flow.check(addr).expect_err("refused");
        flow.explain(&why, addr, "f", &name)
    }

    /// `jmp 1f; .byte 0xb8; 1: mov $0x11223344,%ecx; mov %ecx,%eax; ret`, then `int3`
    /// padding: linearly, +0x2 is `mov $0x223344b9,%eax` and +0x7 an `adc`; the code runs
    /// +0x0, +0x3, +0x8, +0xa.
    const JUMP_OVER_DATA: [u8; 14] = [
        0xeb, 0x01, 0xb8, 0xb9, 0x44, 0x33, 0x22, 0x11, 0x89, 0xc8, 0xc3, 0xcc, 0xcc, 0xcc,
    ];

    #[test]
    fn a_jump_over_data_decides_where_instructions_start() {
        let flow = ControlFlow::explore(&JUMP_OVER_DATA, F);
        let starts: Vec<u64> = flow.reached().map(|(a, _)| a - F).collect();
        assert_eq!(starts, [0x0, 0x3, 0x8, 0xa]);
        assert_eq!(flow.check(F), Ok(()));
        assert_eq!(flow.check(F + 0x3), Ok(()));
        assert_eq!(flow.check(F + 0x8), Ok(()));
        let Err(NotABoundary::Inside {
            at,
            insn,
            reach,
            overlap,
        }) = flow.check(F + 0x7)
        else {
            panic!("{:?}", flow.check(F + 0x7));
        };
        assert_eq!((at, insn.len), (F + 0x3, 5));
        assert_eq!(insn.text, "mov $0x11223344,%ecx");
        assert_eq!(reach, Some(Reach::Branch(F)));
        assert!(matches!(overlap, Some(Overlap::Linear(_))), "{overlap:?}");
        let e = explain(&JUMP_OVER_DATA, F + 0x7);
        assert!(
            e.starts_with(
                "f+0x7 lies inside the 5-byte instruction `mov $0x11223344,%ecx` at f+0x3, which \
                 the jump at f+0x0 reaches; decoding straight from f's start finds"
            ) && e.contains("overlaps the instruction the code executes")
                && e.ends_with("the nearest instruction boundaries are f+0x3 and f+0x8"),
            "{e}"
        );
        // The skipped byte is data: decoded, it would run into the executed `mov`.
        assert_eq!(
            flow.not_code(),
            [NotCode {
                start: F + 0x2,
                end: F + 0x3,
                decoded: Some(Insn {
                    len: 5,
                    text: "mov $0x223344B9,%eax".into()
                })
            }]
        );
        let e = explain(&JUMP_OVER_DATA, F + 0x2);
        assert!(
            e.contains("f+0x2 lies in bytes no path from f's entry reaches (f+0x2 to f+0x3)"),
            "{e}"
        );
        assert_eq!(flow.rets().collect::<Vec<_>>(), [F + 0xa]);
        assert_eq!(flow.entry_block(), [F]);
    }

    /// glibc's old `lll_lock`: `cmpl $0,(%rdi); je 1f; lock; 1: cmpxchg %esi,(%rdi); ret`.
    /// One path runs `lock cmpxchg` at +0x5, the other `cmpxchg` at +0x6.
    #[test]
    fn paths_that_overlap_are_refused_only_where_they_do() {
        let code = [
            0x83, 0x3f, 0x00, // cmpl $0,(%rdi)
            0x74, 0x01, // je +0x6
            0xf0, 0x0f, 0xb1, 0x37, // lock cmpxchg %esi,(%rdi)
            0xc3, // ret
        ];
        let flow = ControlFlow::explore(&code, F);
        let starts: Vec<u64> = flow.reached().map(|(a, _)| a - F).collect();
        assert_eq!(starts, [0x0, 0x3, 0x5, 0x6, 0x9]);
        assert_eq!(flow.check(F), Ok(()));
        assert_eq!(flow.check(F + 0x3), Ok(()));
        assert_eq!(flow.check(F + 0x5), Ok(()));
        assert_eq!(flow.check(F + 0x9), Ok(()));
        let e = explain(&code, F + 0x6);
        assert!(
            e.starts_with(
                "f+0x6 lies inside the 4-byte instruction `lock cmpxchg %esi,(%rdi)` at f+0x5, \
                 which f's entry reaches, while the conditional branch at f+0x3 reaches an instruction \
                 starting at f+0x6 itself: the two paths' instructions overlap there"
            ),
            "{e}"
        );
        assert!(flow.check(F + 0x7).is_err());
    }

    #[test]
    fn a_linear_function_is_what_a_linear_decoding_says() {
        // malloc's start on Debian 12: endbr64; push %r12; push %rbp; mov %rdi,%rbp; push %rbx
        let code = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x41, 0x54, 0x55, 0x48, 0x89, 0xfd, 0x53,
        ];
        let flow = ControlFlow::explore(&code, F);
        for ok in [0x0, 0x4, 0x6, 0x7, 0xa] {
            assert_eq!(flow.check(F + ok), Ok(()), "{ok:#x}");
        }
        let e = explain(&code, F + 0x8);
        assert_eq!(
            e,
            "f+0x8 lies inside the 3-byte instruction `mov %rdi,%rbp` at f+0x7: a probe there \
             would corrupt it; the nearest instruction boundaries are f+0x7 and f+0xa"
        );
        assert_eq!(flow.check(F + 0xb), Err(NotABoundary::Unknown));
        assert_eq!(flow.check(F - 1), Err(NotABoundary::Unknown));
        assert_eq!(flow.entry_block().len(), 5);
    }

    /// Code behind an indirect jump is not reached by the walk, yet accepted through the
    /// sweep: an indirect jump alone is no reason to refuse.
    #[test]
    fn code_behind_an_indirect_jump_is_swept() {
        let code = [
            0x48, 0x8d, 0x05, 0x03, 0, 0, 0, // lea 3(%rip),%rax  (+0x0, 7)
            0xff, 0xe0, // jmp *%rax                             (+0x7, 2)
            0xcc, // int3 padding                                (+0x9)
            0xb8, 0x01, 0, 0, 0,    // mov $1,%eax                  (+0xa, 5)
            0xc3, // ret                                         (+0xf)
        ];
        let flow = ControlFlow::explore(&code, F);
        assert_eq!(flow.indirect_jumps().collect::<Vec<_>>(), [F + 0x7]);
        assert!(flow.step_at(F + 0xa).is_none());
        assert_eq!(flow.check(F + 0xa), Ok(()));
        assert_eq!(flow.check(F + 0xf), Ok(()));
        assert!(matches!(
            flow.check(F + 0xb),
            Err(NotABoundary::Inside { reach: None, .. })
        ));
        assert_eq!(flow.rets().count(), 0, "the ret is only swept");
        assert_eq!(
            flow.instruction_starts()
                .into_iter()
                .map(|a| a - F)
                .collect::<Vec<_>>(),
            [0x0, 0x7, 0x9, 0xa, 0xf]
        );
    }

    #[test]
    fn every_ret_of_a_branching_function() {
        let code = [
            0x85, 0xff, // test %edi,%edi     +0x0
            0x74, 0x03, // je +0x7            +0x2
            0x31, 0xc0, // xor %eax,%eax      +0x4
            0xc3, // ret                      +0x6
            0xb8, 0x01, 0, 0, 0,    // mov $1    +0x7
            0xc3, // ret                      +0xc
        ];
        let flow = ControlFlow::explore(&code, F);
        assert_eq!(flow.rets().collect::<Vec<_>>(), [F + 0x6, F + 0xc]);
        assert_eq!(flow.entry_block(), [F, F + 0x2]);
        assert_eq!(
            flow.step_at(F + 0x2).map(|s| s.flow),
            Some(Flow::Branch(F + 0x7))
        );
        assert!(flow.not_code().is_empty() && flow.undecodable().is_empty());
    }

    /// A loop back to the entry ends the entry block before the target's second visit; calls
    /// fall through; a local call target (a thunk) is followed.
    #[test]
    fn calls_loops_and_thunks() {
        let code = [
            0xe8, 0x05, 0, 0, 0, // call +0xa (a thunk inside the window)   +0x0
            0x75, 0xf9, // jne +0x0                                          +0x5
            0xc3, // ret                                                     +0x7
            0x0f, 0x0b, // ud2 (never falls through)                         +0x8
            0x48, 0x89, 0xf8, // mov %rdi,%rax                               +0xa
            0xc3, // ret                                                     +0xd
        ];
        let flow = ControlFlow::explore(&code, F);
        let starts: Vec<u64> = flow.reached().map(|(a, _)| a - F).collect();
        assert_eq!(starts, [0x0, 0x5, 0x7, 0xa, 0xd]);
        assert_eq!(flow.entry_block(), [F]);
        assert_eq!(flow.check(F + 0x8), Ok(()), "ud2 is swept");
    }

    /// Bytes that decode to nothing are no code; an empty window has no instructions.
    #[test]
    fn undecodable_bytes_and_empty_code() {
        let code = [0xeb, 0x01, 0x06, 0xc3]; // jmp +0x3; (bad) 0x06; ret
        let flow = ControlFlow::explore(&code, F);
        assert!(matches!(
            flow.check(F + 0x2),
            Err(NotABoundary::NotCode(NotCode { decoded: None, .. }))
        ));
        assert_eq!(flow.check(F + 0x3), Ok(()));
        let empty = ControlFlow::explore(&[], F);
        assert_eq!(empty.check(F), Err(NotABoundary::Unknown));
        assert!(empty.entry_block().is_empty());
        // A path into undecodable bytes is recorded, not followed.
        let flow = ControlFlow::explore(&[0x74, 0x00, 0x06], F);
        assert_eq!(flow.undecodable(), [F + 0x2]);
    }

    /// The bound the module promises: whatever the bytes, at most one walk decode per address
    /// and one sweep decode per unreached byte.
    #[test]
    fn work_is_linear_in_the_window() {
        // 64 KiB of `jcc` chains jumping everywhere: each address is reached once.
        let mut code = Vec::new();
        for i in 0..(1 << 14) {
            code.extend_from_slice(&[0x74, (i % 120) as u8, 0x90, 0x90]);
        }
        let t = std::time::Instant::now();
        let flow = ControlFlow::explore(&code, F);
        assert!(flow.reached().count() <= code.len());
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }
}
