//! Probe sites: the cheapest instruction of a function's entry that sees exactly the calls its
//! first instruction sees (SPEC.md, "Probe sites and probe cost").
//!
//! The kernel emulates `push`, `nop`/`nopl`, `jmp`, `call` and `jcc` at a probe and
//! single-steps everything else out of line ([`crate::insn`]): a second trap, 17.7 µs per hit
//! on this project's VM at an `endbr64` against 0.50 µs at the `push %rbp` after it. Every
//! function of a `-fcf-protection` build starts with `endbr64`, and Debian's `-O2` code often
//! with `mov`, `lea` or `sub`. So when a function's first instruction is single-stepped, the
//! entry probe goes on the first instruction of its *entry block* that the kernel emulates,
//! when that is equivalent:
//!
//! - (a) nothing before it branches: the entry block ends at the first branch, call or return
//!   ([`ControlFlow::entry_block`]), and the site is at most that instruction;
//! - (b) no branch lands in `(start, site]`: no direct branch, call or RIP-relative address
//!   anywhere in the function (its swept parts included) nor in its `.cold` fragments points
//!   there (the caller passes those in), and no other symbol starts there;
//! - (c) the skipped instructions write none of the registers the probe's args or predicate
//!   read (decoded with iced's instruction info, sub-registers included: `mov %edi,%eax`
//!   writes `%rax`), nor the flags or `%ip` when read; a skipped store that is not below the
//!   function's entry `sp` forbids the move when the probe dereferences anything;
//! - (d) stacks stay right: a skipped instruction may move `sp` only down, by `push` or
//!   `sub $N,%rsp` (then the return address is at `[sp + delta]`, which the BPF program reads
//!   for the caller frame), and must not write `%rbp`, where frame-pointer walks start (so
//!   nothing past `mov %rsp,%rbp` is a site). DWARF unwinding starts from the real `ip` and
//!   `sp` at the site, whose CFI describes that instruction.
//!
//! A return probe hijacks the return address at `[sp]` when its breakpoint is hit, so a
//! uretprobe (or an entry+return session) may sit at the site only when `delta` is 0.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, OpAccess, Register,
};

use crate::control_flow::ControlFlow;
use crate::insn::{self, InsnHandling, KernelUprobes};
use crate::spec::{Fetch, Reg};
use urec_format::{FileOffset, Svma};

/// What a probe reads at its entry site: its entry-time args and predicate operands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    /// Full 64-bit registers read (iced's names: `RDI`, ...).
    regs: Vec<Register>,
    /// `%sp`, `$stack` or `$stackN`.
    sp: bool,
    /// Any user memory (a dereference, `$stackN`, a global).
    memory: bool,
    /// `%ip`, which differs at another site.
    ip: bool,
    /// `%flags`.
    flags: bool,
}

impl Reads {
    /// Adds what a fetch reads (ABI arguments and `$retval` are lowered first).
    pub fn add(&mut self, fetch: &Fetch) {
        match fetch.lowered() {
            Fetch::Reg(r) => self.reg(r),
            Fetch::StackPointer => self.sp = true,
            Fetch::StackSlot(_) => {
                self.sp = true;
                self.memory = true;
            }
            Fetch::Memory(_) | Fetch::FileOffset(_) | Fetch::Global(_) => self.memory = true,
            Fetch::Indexed { base, index, .. } => {
                self.reg(base);
                self.reg(index);
            }
            Fetch::Deref { inner, .. } => {
                self.memory = true;
                self.add(&inner);
            }
            Fetch::Comm | Fetch::Immediate(_) | Fetch::Arg(_) | Fetch::Retval => {}
        }
    }

    fn reg(&mut self, r: Reg) {
        let full = match r {
            Reg::R15 => Register::R15,
            Reg::R14 => Register::R14,
            Reg::R13 => Register::R13,
            Reg::R12 => Register::R12,
            Reg::Bp => Register::RBP,
            Reg::Bx => Register::RBX,
            Reg::R11 => Register::R11,
            Reg::R10 => Register::R10,
            Reg::R9 => Register::R9,
            Reg::R8 => Register::R8,
            Reg::Ax | Reg::OrigAx => Register::RAX,
            Reg::Cx => Register::RCX,
            Reg::Dx => Register::RDX,
            Reg::Si => Register::RSI,
            Reg::Di => Register::RDI,
            Reg::Sp => {
                self.sp = true;
                return;
            }
            Reg::Ip => {
                self.ip = true;
                return;
            }
            Reg::Flags => {
                self.flags = true;
                return;
            }
            // Segment registers: no instruction of an entry block changes them.
            Reg::Cs | Reg::Ss => return,
        };
        if !self.regs.contains(&full) {
            self.regs.push(full);
        }
    }
}

/// Where a function's entry probe goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrySite {
    /// The site's virtual address (the function's start when not moved).
    pub vaddr: Svma,
    /// How the kernel handles the instruction there.
    pub handling: InsnHandling,
    /// Bytes the skipped instructions moved `sp` down by: the return address is at
    /// `[sp + sp_delta]` at the site.
    pub sp_delta: u64,
    /// The site is not the start, and a return probe may sit there too (`sp_delta` is 0).
    pub moved: bool,
    /// Why the probe stays on a single-stepped instruction, when it does.
    pub why_not: Option<String>,
}

impl EntrySite {
    /// The function's start, as it is.
    pub fn at_start(start: Svma, handling: InsnHandling, why_not: Option<String>) -> EntrySite {
        EntrySite {
            vaddr: start,
            handling,
            sp_delta: 0,
            moved: false,
            why_not,
        }
    }
}

/// The instruction at file offset `offset` of the file at `path` (virtual address `vaddr`), in
/// AT&T syntax, for messages (`push %rbp`).
pub fn insn_text_at(path: &std::path::Path, offset: FileOffset, vaddr: Svma) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = urec_untrusted::open(path).ok()?;
    f.seek(SeekFrom::Start(offset.0)).ok()?;
    let mut buf = [0u8; 16];
    let n = f.read(&mut buf).ok()?;
    insn::decode(&buf[..n], vaddr.0).map(|i| i.text)
}

/// Every address a direct branch, call or RIP-relative operand of `code` (at `start`) points
/// to: what may land inside another function's entry block too (a `.cold` fragment's jump
/// back).
pub fn branch_targets(code: &[u8], start: u64) -> Vec<u64> {
    let flow = ControlFlow::explore(code, start);
    targets_of(&flow, code, start)
}

fn targets_of(flow: &ControlFlow, code: &[u8], start: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut decoder = Decoder::with_ip(64, code, start, DecoderOptions::NONE);
    for addr in flow.instruction_starts() {
        let Ok(pos) = usize::try_from(addr - start) else {
            continue;
        };
        if decoder.set_position(pos).is_err() {
            continue;
        }
        decoder.set_ip(addr);
        let i = decoder.decode();
        if i.is_invalid() {
            continue;
        }
        match i.flow_control() {
            FlowControl::UnconditionalBranch
            | FlowControl::ConditionalBranch
            | FlowControl::Call
                if i.op0_kind() != iced_x86::OpKind::Memory =>
            {
                out.push(i.near_branch_target());
            }
            _ => {}
        }
        if i.is_ip_rel_memory_operand() {
            out.push(i.ip_rel_memory_address());
        }
    }
    out
}

/// Chooses the entry site of the function whose code (as far as known) is `code` at `start`.
/// `reads`: what the probe reads at entry; `return_probe`: a uretprobe (or session) sits at
/// the same site, so `sp` must not have moved; `foreign`: addresses outside the function
/// that branch here (`.cold` fragments), and `symbol_in(lo, hi)` whether another symbol
/// starts in `(lo, hi]`.
pub fn entry_site(
    code: &[u8],
    at: Svma,
    kernel: &KernelUprobes,
    reads: &Reads,
    return_probe: bool,
    foreign: &[u64],
    symbol_in: &dyn Fn(u64, u64) -> bool,
) -> EntrySite {
    let first = insn::classify(code, kernel);
    if first != InsnHandling::SingleStepped {
        return EntrySite::at_start(at, first, None);
    }
    let stay = |why: String| EntrySite::at_start(at, first, Some(why));
    // The decoder's instruction pointers are plain `u64`: the walk below works in them.
    let start = at.0;
    if reads.ip {
        return stay("its probe reads %ip, which differs at any other instruction".into());
    }
    let flow = ControlFlow::explore(code, start);
    let mut targets = targets_of(&flow, code, start);
    targets.extend_from_slice(foreign);
    let name = |a: u64| format!("+{:#x}", a - start);
    let text = |a: u64| {
        let off = (a - start) as usize;
        insn::decode(&code[off..], a).map_or_else(|| "?".to_string(), |i| i.text)
    };
    let mut info = InstructionInfoFactory::new();
    let mut sp_delta: u64 = 0;
    let mut addr = start;
    // The entry block, instruction by instruction: every one skipped so far continued to the
    // next (a branch is emulated, so it is the site or the end).
    while let Some(step) = flow.step_at(addr) {
        let off = (addr - start) as usize;
        let bytes = &code[off..];
        if addr != start {
            if targets.contains(&addr) {
                return stay(format!(
                    "a branch of the function lands at {} before any instruction the kernel \
                     emulates",
                    name(addr)
                ));
            }
            if symbol_in(start, addr) {
                return stay(format!("another symbol starts at {}", name(addr)));
            }
            let h = insn::classify(bytes, kernel);
            if h == InsnHandling::Emulated && flow.check(addr).is_ok() {
                if return_probe && sp_delta != 0 {
                    return stay(format!(
                        "its return probe needs the return address at [sp], and the \
                         instructions before the first emulated one ({} at {}) move sp",
                        text(addr),
                        name(addr)
                    ));
                }
                return EntrySite {
                    vaddr: Svma(addr),
                    handling: h,
                    sp_delta,
                    moved: true,
                    why_not: None,
                };
            }
            if h != InsnHandling::SingleStepped {
                return stay(format!(
                    "`{}` at {} cannot be probed",
                    text(addr),
                    name(addr)
                ));
            }
        }
        // `addr` is skipped when the probe moves past it: what does it change?
        let mut decoder = Decoder::with_ip(64, bytes, addr, DecoderOptions::NONE);
        let i = decoder.decode();
        if i.is_invalid() || i.flow_control() != FlowControl::Next {
            return stay(format!(
                "its entry block has no instruction the kernel emulates before `{}` at {}",
                text(addr),
                name(addr)
            ));
        }
        let why = |what: &str| {
            Some(format!(
                "`{}` at {} {what}, before any instruction the kernel emulates",
                text(addr),
                name(addr)
            ))
        };
        let used = info.info(&i);
        let mut blocked = None;
        let mut sp_move = 0u64;
        for r in used.used_registers() {
            if !matches!(
                r.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            ) {
                continue;
            }
            let full = r.register().full_register();
            if full == Register::RSP {
                sp_move = match i.code() {
                    Code::Push_r64 | Code::Push_r16 => 8,
                    Code::Sub_rm64_imm8 | Code::Sub_rm64_imm32
                        if i.op0_register() == Register::RSP =>
                    {
                        i.immediate(1)
                    }
                    _ => {
                        blocked = why("changes sp other than by a push or a sub");
                        0
                    }
                };
                if reads.sp {
                    blocked = why("changes sp, which the probe reads");
                }
            } else if full == Register::RBP {
                blocked = why("writes %rbp, where frame-pointer stacks start");
            } else if reads.regs.contains(&full) {
                blocked = why(&format!("writes {full:?}, which the probe reads").to_lowercase());
            }
        }
        if reads.flags && i.rflags_modified() != 0 {
            blocked = why("changes the flags, which the probe reads");
        }
        for m in used.used_memory() {
            if !matches!(
                m.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            ) {
                continue;
            }
            // A push stores below sp; a store relative to sp that stays below the entry's sp
            // writes the function's own new frame (or the red zone), which nothing the probe
            // reads at entry can point into.
            let size = i.memory_size().size() as i64;
            let below_entry_sp = m.base() == Register::RSP
                && m.index() == Register::None
                && (m.displacement() as i64)
                    .checked_add(size)
                    .is_some_and(|end| end <= sp_delta as i64)
                || matches!(i.code(), Code::Push_r64 | Code::Push_r16);
            if !below_entry_sp && reads.memory {
                blocked = why("stores to memory the probe may read");
            }
        }
        if let Some(why) = blocked {
            return stay(why);
        }
        sp_delta += sp_move;
        if !sp_delta.is_multiple_of(8) || sp_delta > 8 * 255 {
            return stay(format!(
                "the stack pointer moves by {sp_delta} bytes before the site"
            ));
        }
        addr += u64::from(step.len);
    }
    stay("no instruction of its entry block is one the kernel emulates".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: KernelUprobes = KernelUprobes::NEWEST;
    const START: Svma = Svma(0x1000);

    fn site(code: &[u8], reads: &Reads, ret: bool) -> EntrySite {
        entry_site(code, START, &K, reads, ret, &[], &|_, _| false)
    }

    fn args(fetches: &[Fetch]) -> Reads {
        let mut r = Reads::default();
        for f in fetches {
            r.add(f);
        }
        r
    }

    #[test]
    fn endbr_push_rbp_moves_to_the_push() {
        // endbr64; push %rbp; mov %rsp,%rbp; ...; ret
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3];
        let s = site(&code, &args(&[Fetch::Arg(1)]), true);
        assert_eq!(s.vaddr, START + 4);
        assert_eq!(s.handling, InsnHandling::Emulated);
        assert_eq!(s.sp_delta, 0);
        assert!(s.moved);
    }

    #[test]
    fn emulated_first_instruction_stays() {
        let code = [0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3];
        let s = site(&code, &Reads::default(), true);
        assert_eq!(s.vaddr, START);
        assert!(!s.moved && s.why_not.is_none());
    }

    #[test]
    fn a_written_argument_register_blocks() {
        // mov %rsi,%rdi; push %rbx; ...
        let code = [0x48, 0x89, 0xf7, 0x53, 0x5b, 0xc3];
        assert_eq!(site(&code, &Reads::default(), true).vaddr, START + 3);
        let s = site(&code, &args(&[Fetch::Arg(1)]), true);
        assert_eq!(s.vaddr, START);
        assert!(s.why_not.unwrap().contains("rdi"), "reason");
        // mov %esi,%edi writes rdi too.
        let code = [0x89, 0xf7, 0x53, 0x5b, 0xc3];
        assert_eq!(site(&code, &args(&[Fetch::Arg(1)]), true).vaddr, START);
        assert_eq!(site(&code, &args(&[Fetch::Arg(2)]), true).vaddr, START + 2);
    }

    #[test]
    fn sub_rsp_moves_the_entry_only() {
        // endbr64; sub $0x18,%rsp; call rel32; add $0x18,%rsp; ret
        let code = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x83, 0xec, 0x18, 0xe8, 0, 0, 0, 0, 0x48, 0x83, 0xc4,
            0x18, 0xc3,
        ];
        let s = site(&code, &Reads::default(), false);
        assert_eq!((s.vaddr, s.sp_delta), (START + 8, 0x18));
        let s = site(&code, &Reads::default(), true);
        assert_eq!(s.vaddr, START);
        assert!(s.why_not.unwrap().contains("move sp"));
        // $stack1 reads sp.
        let s = site(&code, &args(&[Fetch::StackSlot(1)]), false);
        assert_eq!(s.vaddr, START);
    }

    #[test]
    fn a_branch_into_the_prologue_blocks() {
        // endbr64; L: mov %rdi,%rax; push %rbx; pop %rbx; dec %rdi; jne L; ret
        let code = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x89, 0xf8, 0x53, 0x5b, 0x48, 0xff, 0xcf, 0x75, 0xf6,
            0xc3,
        ];
        let s = site(&code, &Reads::default(), true);
        assert_eq!(s.vaddr, START, "{s:?}");
        assert!(s.why_not.unwrap().contains("lands at +0x4"));
        // A .cold fragment jumping back in blocks too.
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x53, 0x5b, 0xc3];
        let s = entry_site(
            &code,
            START,
            &K,
            &Reads::default(),
            true,
            &[(START + 4).0],
            &|_, _| false,
        );
        assert_eq!(s.vaddr, START);
    }

    #[test]
    fn frame_pointer_setup_and_stores_block() {
        // endbr64; mov %rsp,%rbp (odd, but must not be skipped); push %rbx
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x89, 0xe5, 0x53, 0xc3];
        assert_eq!(site(&code, &Reads::default(), true).vaddr, START);
        // movl $0,(%rdi); push %rbx: fine unless the probe dereferences.
        let code = [0xc7, 0x07, 0, 0, 0, 0, 0x53, 0x5b, 0xc3];
        assert_eq!(site(&code, &Reads::default(), true).vaddr, START + 6);
        let deref = Fetch::Deref {
            offset: 0,
            inner: Box::new(Fetch::Arg(2)),
        };
        assert_eq!(site(&code, &args(&[deref]), true).vaddr, START);
    }

    #[test]
    fn tail_jump_is_a_site() {
        // endbr64; jmp rel32
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0xe9, 0, 0, 0, 0];
        let s = site(&code, &args(&[Fetch::Arg(1)]), true);
        assert_eq!((s.vaddr, s.sp_delta), (START + 4, 0));
    }
}
