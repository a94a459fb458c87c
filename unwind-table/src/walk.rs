//! The walk over unwind tables: what the BPF program will do, in Rust, for proving tables
//! against framehop and for reading the BPF code against.
//!
//! Every rule is applied with framehop's (0.16) arithmetic and checks, so that on the same
//! registers and stack bytes both give the same frames:
//!
//! - `CfaRsp` (framehop's `OffsetSp` / `OffsetSpAndRestoreBp`): CFA = `sp + N`; `rbp` read from
//!   its slot, except that in the first frame a slot below `sp` (an epilogue that already
//!   popped it) keeps `rbp`.
//! - `CfaRbp` with `N = 16`, `rbp` at CFA − 16 (`UseFramePointer`): `rbp == 0` ends the stack,
//!   the CFA must be above `sp`.
//! - Other `CfaRbp` rows and `Plt` (framehop's evaluated path): CFA from the rule, `rbp` from
//!   its slot or unchanged when unreadable; a failure there (unreadable return address, no
//!   progress, CFA below `sp` above the first frame) retries the frame with frame pointers.
//! - `NoCfi`: return at `[sp]` in the first frame, frame pointers above it.
//! - Then, for all: the return address at CFA − 8; 0 ends the stack; the same CFA and return
//!   address as before is an error.
//!
//! - `SignalFrame` (`__restore_rt`, reached as the return address of a signal handler):
//!   `sp` is the kernel's `ucontext` (Linux x86-64 `rt_sigframe` after its return address);
//!   the interrupted `rbp`, `rsp` and `rip` are its `uc_mcontext` words at `sp` + 120, 160
//!   and 168. The frame after it is the interrupted instruction itself, not a return
//!   address: it is looked up and stepped as a first frame is (its pc as is, `NoCfi` as
//!   `[sp]`). gdb and libunwind read the same words.
//!
//! A pc whose row is `Fallback` ends the walk with [`WalkEnd::Fallback`]: the BPF walk gives
//! such an event to copy-and-unwind, so the frames before it are only a prefix.

use crate::{Rule, RuleKind, UnwindTable};

/// The registers an x86-64 unwind tracks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Regs {
    /// Instruction pointer (a return address above the first frame).
    pub ip: u64,
    /// Stack pointer (the CFA of the frame below, above the first frame).
    pub sp: u64,
    /// Frame pointer register.
    pub bp: u64,
}

/// How a walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WalkEnd {
    /// The outermost frame was reached (end-of-stack rule, `rbp == 0` in a frame-pointer
    /// frame, or a zero return address).
    Complete,
    /// The row of this pc (a lookup address) is [`RuleKind::Fallback`].
    Fallback(u64),
    /// A return address outside every table (not in the frames).
    UnknownAddress(u64),
    /// The stack word at this address could not be read.
    ReadFailed(u64),
    /// Inconsistent registers or rules: no progress, a CFA below `sp`, an overflow.
    BadStack,
    /// More frames than the caller's limit.
    TooDeep,
}

/// What one frame's rule gave.
enum Step {
    /// The caller's frame, at this return address.
    Caller(u64),
    /// The frame a signal interrupted, at this instruction.
    Interrupted(u64),
    /// No caller.
    End,
}

/// Where a signal frame's `ucontext` (at `sp`) holds the interrupted registers: `uc_mcontext`
/// starts at 40 (`uc_flags`, `uc_link`, `uc_stack`), its `gregs` are r8–r15, rdi, rsi, rbp,
/// rbx, rdx, rax, rcx, rsp, rip.
pub const SIGNAL_BP: u64 = 40 + 10 * 8;
/// See [`SIGNAL_BP`].
pub const SIGNAL_SP: u64 = 40 + 15 * 8;
/// See [`SIGNAL_BP`].
pub const SIGNAL_IP: u64 = 40 + 16 * 8;

/// Unwinds from `regs`, replacing `out` with the frames innermost first (`regs.ip`, then
/// return addresses as read).
///
/// - `table_for(pc)`: the table of the binary mapped at `pc` and its load bias (actual minus
///   stated address), `None` outside every binary with a table.
/// - `read(addr)`: the stack word at `addr`, `None` when outside the copy or unreadable.
/// - At most `max_frames` frames; one more is [`WalkEnd::TooDeep`].
pub fn walk<'t>(
    table_for: impl Fn(u64) -> Option<(&'t UnwindTable, u64)>,
    regs: Regs,
    mut read: impl FnMut(u64) -> Option<u64>,
    max_frames: usize,
    out: &mut Vec<u64>,
) -> WalkEnd {
    out.clear();
    out.push(regs.ip);
    if table_for(regs.ip).is_none() {
        return WalkEnd::UnknownAddress(regs.ip);
    }
    let mut regs = regs;
    let mut first = true;
    loop {
        // A return address is looked up one byte back: the call may be the last instruction
        // of a function (noreturn), and the next byte belongs to the next one.
        let lookup = if first { regs.ip } else { regs.ip - 1 };
        let rule =
            table_for(lookup).and_then(|(table, bias)| table.lookup(lookup.wrapping_sub(bias)));
        let Some(rule) = rule else {
            return WalkEnd::UnknownAddress(regs.ip);
        };
        let step = match step(rule, first, &mut regs, &mut read) {
            Ok(step) => step,
            Err(StepError::Fallback) => return WalkEnd::Fallback(lookup),
            Err(StepError::Read(addr)) => return WalkEnd::ReadFailed(addr),
            Err(StepError::Bad) => return WalkEnd::BadStack,
        };
        let (ra, exact) = match step {
            Step::End | Step::Caller(0) | Step::Interrupted(0) => return WalkEnd::Complete,
            Step::Caller(ra) => (ra, false),
            Step::Interrupted(ip) => (ip, true),
        };
        if table_for(if exact { ra } else { ra - 1 }).is_none() {
            return WalkEnd::UnknownAddress(ra);
        }
        if out.len() == max_frames {
            return WalkEnd::TooDeep;
        }
        out.push(ra);
        first = exact;
    }
}

/// Why a step found no caller; [`walk`] turns each into a [`WalkEnd`].
enum StepError {
    Fallback,
    Read(u64),
    Bad,
}

/// Applies one row's rule to `regs`, giving the caller's.
fn step(
    rule: Rule,
    first: bool,
    regs: &mut Regs,
    read: &mut impl FnMut(u64) -> Option<u64>,
) -> Result<Step, StepError> {
    let (sp, bp) = (regs.sp, regs.bp);
    let (new_sp, new_bp) = match rule.kind {
        RuleKind::Fallback => return Err(StepError::Fallback),
        RuleKind::EndOfStack => return Ok(Step::End),
        RuleKind::CfaRsp => {
            let new_sp = sp
                .checked_add(rule.cfa_offset as u64)
                .ok_or(StepError::Bad)?;
            let new_bp = match rule.bp_offset {
                None => bp,
                Some(offset) => {
                    let slot = new_sp
                        .checked_add_signed(i64::from(offset))
                        .ok_or(StepError::Bad)?;
                    match read(slot) {
                        Some(v) => v,
                        None if first && slot < sp => bp,
                        None => return Err(StepError::Read(slot)),
                    }
                }
            };
            (new_sp, new_bp)
        }
        RuleKind::CfaRbp if rule.cfa_offset == 16 && rule.bp_offset == Some(-16) => {
            return frame_pointer(regs, read, true);
        }
        RuleKind::CfaRbp | RuleKind::Plt => {
            return match evaluated(rule, first, regs, read) {
                Some(ra) => Ok(Step::Caller(ra)),
                None => frame_pointer(regs, read, true),
            };
        }
        RuleKind::NoCfi if first => (sp.checked_add(8).ok_or(StepError::Bad)?, bp),
        RuleKind::NoCfi => return frame_pointer(regs, read, false),
        RuleKind::SignalFrame => {
            let word = |read: &mut dyn FnMut(u64) -> Option<u64>, off: u64| {
                let at = sp.checked_add(off).ok_or(StepError::Bad)?;
                read(at).ok_or(StepError::Read(at))
            };
            let new_bp = word(read, SIGNAL_BP)?;
            let new_sp = word(read, SIGNAL_SP)?;
            let ip = word(read, SIGNAL_IP)?;
            *regs = Regs {
                ip,
                sp: new_sp,
                bp: new_bp,
            };
            return Ok(Step::Interrupted(ip));
        }
    };
    // Wrapping, as framehop's release build: a CFA below 8 reads an unmapped address and
    // fails there, without a panic in debug builds.
    let slot = new_sp.wrapping_sub(8);
    let ra = read(slot).ok_or(StepError::Read(slot))?;
    if ra == 0 {
        return Ok(Step::End);
    }
    if new_sp == sp && ra == regs.ip {
        return Err(StepError::Bad);
    }
    *regs = Regs {
        ip: ra,
        sp: new_sp,
        bp: new_bp,
    };
    Ok(Step::Caller(ra))
}

/// A frame-pointer step: CFA = `rbp + 16`, `rbp` saved at `[rbp]`. `zero_ends`: `rbp == 0`
/// is the end of the stack (framehop's `UseFramePointer`; its "uncovered" rule reads `[0]`).
fn frame_pointer(
    regs: &mut Regs,
    read: &mut impl FnMut(u64) -> Option<u64>,
    zero_ends: bool,
) -> Result<Step, StepError> {
    let (sp, bp) = (regs.sp, regs.bp);
    if zero_ends && bp == 0 {
        return Ok(Step::End);
    }
    let new_sp = bp.checked_add(16).ok_or(StepError::Bad)?;
    if new_sp <= sp {
        return Err(StepError::Bad);
    }
    let new_bp = read(bp).ok_or(StepError::Read(bp))?;
    let ra = read(new_sp - 8).ok_or(StepError::Read(new_sp - 8))?;
    if ra == 0 {
        return Ok(Step::End);
    }
    *regs = Regs {
        ip: ra,
        sp: new_sp,
        bp: new_bp,
    };
    Ok(Step::Caller(ra))
}

/// framehop's evaluated path (rules its cache cannot hold): `None` where it errs, after which
/// it takes the frame-pointer rule.
fn evaluated(
    rule: Rule,
    first: bool,
    regs: &mut Regs,
    read: &mut impl FnMut(u64) -> Option<u64>,
) -> Option<u64> {
    let base = match rule.kind {
        RuleKind::Plt => {
            let extra = if regs.ip & 15 >= u64::from(rule.plt_threshold) {
                8
            } else {
                0
            };
            i64::try_from(regs.sp).ok()?.checked_add(extra)?
        }
        _ => i64::try_from(regs.bp).ok()?,
    };
    let cfa = u64::try_from(base.checked_add(i64::from(rule.cfa_offset))?).ok()?;
    let new_bp = match rule.bp_offset {
        None => regs.bp,
        Some(offset) => {
            let slot = u64::try_from(i64::try_from(cfa).ok()?.checked_add(i64::from(offset))?).ok();
            slot.and_then(&mut *read).unwrap_or(regs.bp)
        }
    };
    let ra = read(cfa.checked_sub(8)?)?;
    if cfa == regs.sp && ra == regs.ip {
        return None;
    }
    if !first && cfa < regs.sp {
        return None;
    }
    *regs = Regs {
        ip: ra,
        sp: cfa,
        bp: new_bp,
    };
    Some(ra)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: u64 = 0x1000;
    const STACK: u64 = 0x7000_0000;

    fn rsp(offset: i32, bp: Option<i32>) -> Rule {
        Rule {
            kind: RuleKind::CfaRsp,
            cfa_offset: offset,
            bp_offset: bp,
            plt_threshold: 0,
        }
    }

    /// A table: 0x1000.. `f` (CFA rsp+16, rbp at CFA-16), 0x1100.. `g` (CFA rsp+8),
    /// 0x1200.. frame pointers, 0x1300.. PLT, 0x1400.. fallback, 0x1500.. end of stack,
    /// 0x1600.. no CFI.
    fn table() -> UnwindTable {
        UnwindTable::from_rules(&[
            (0, Rule::simple(RuleKind::NoCfi)),
            (0x1000, rsp(16, Some(-16))),
            (0x1100, rsp(8, None)),
            (
                0x1200,
                Rule {
                    kind: RuleKind::CfaRbp,
                    cfa_offset: 16,
                    bp_offset: Some(-16),
                    plt_threshold: 0,
                },
            ),
            (
                0x1300,
                Rule {
                    kind: RuleKind::Plt,
                    cfa_offset: 8,
                    bp_offset: None,
                    plt_threshold: 11,
                },
            ),
            (0x1400, Rule::simple(RuleKind::Fallback)),
            (0x1500, Rule::simple(RuleKind::EndOfStack)),
            (0x1600, Rule::simple(RuleKind::NoCfi)),
            (0x1700, Rule::simple(RuleKind::SignalFrame)),
        ])
        .unwrap()
    }

    fn run(table: &UnwindTable, regs: Regs, words: &[u64]) -> (Vec<u64>, WalkEnd) {
        let mut out = Vec::new();
        let read = |addr: u64| {
            let i = usize::try_from(addr.checked_sub(regs.sp)? / 8).ok()?;
            words.get(i).copied()
        };
        let end = walk(
            |pc| (CODE..CODE + 0x2000).contains(&pc).then_some((table, 0)),
            regs,
            read,
            16,
            &mut out,
        );
        (out, end)
    }

    #[test]
    fn rsp_rules_then_end_of_stack() {
        let t = table();
        // In f: [sp] = saved rbp, [sp+8] = return into g; g: [sp+16] = return into _start.
        let words = [0xbb, 0x1150, 0x1510];
        let (frames, end) = run(
            &t,
            Regs {
                ip: 0x1010,
                sp: STACK,
                bp: 1,
            },
            &words,
        );
        assert_eq!(frames, [0x1010, 0x1150, 0x1510]);
        assert_eq!(end, WalkEnd::Complete);
    }

    #[test]
    fn frame_pointer_rows_stop_at_zero_rbp() {
        let t = table();
        let words = [0, 0x1250, 0, 0];
        let (frames, end) = run(
            &t,
            Regs {
                ip: 0x1210,
                sp: STACK,
                bp: STACK,
            },
            &words,
        );
        assert_eq!(frames, [0x1210, 0x1250]);
        // Back in a frame-pointer row with rbp == 0: the outermost frame.
        assert_eq!(end, WalkEnd::Complete);
    }

    #[test]
    fn plt_entries_move_the_cfa_after_their_push() {
        let t = table();
        // Before the push (offset 6 of the entry): return address at [sp].
        let (frames, _) = run(
            &t,
            Regs {
                ip: 0x1306,
                sp: STACK,
                bp: 0,
            },
            &[0x1510],
        );
        assert_eq!(frames, [0x1306, 0x1510]);
        // After it (offset 11): one more word.
        let (frames, _) = run(
            &t,
            Regs {
                ip: 0x130b,
                sp: STACK,
                bp: 0,
            },
            &[7, 0x1510],
        );
        assert_eq!(frames, [0x130b, 0x1510]);
    }

    #[test]
    fn fallback_rows_end_the_walk() {
        let t = table();
        let (frames, end) = run(
            &t,
            Regs {
                ip: 0x1110,
                sp: STACK,
                bp: 0,
            },
            &[0x1420],
        );
        assert_eq!(frames, [0x1110, 0x1420]);
        assert_eq!(end, WalkEnd::Fallback(0x141f));
    }

    #[test]
    fn no_cfi_returns_in_the_first_frame_and_follows_rbp_above() {
        let t = table();
        let (frames, _) = run(
            &t,
            Regs {
                ip: 0x1610,
                sp: STACK,
                bp: 0,
            },
            &[0x1510],
        );
        assert_eq!(frames, [0x1610, 0x1510]);
        // Returning into no-CFI code: rbp chain.
        let words = [0x1620, 0, 0x1510];
        let (frames, end) = run(
            &t,
            Regs {
                ip: 0x1110,
                sp: STACK,
                bp: STACK + 8,
            },
            &words,
        );
        assert_eq!(frames, [0x1110, 0x1620, 0x1510]);
        assert_eq!(end, WalkEnd::Complete);
    }

    #[test]
    fn signal_frames_continue_at_the_interrupted_instruction() {
        let t = table();
        // A handler in g returns into the trampoline (0x1701; its row starts a byte early, as
        // glibc's does); the ucontext above holds the interrupted frame: rip 0x1600, the first
        // instruction of a no-CFI function, looked up as is (0x15ff would be end of stack),
        // whose return address is at its sp.
        let mut words = vec![0u64; 31];
        words[0] = 0x1701;
        let uc = 1; // the ucontext starts at STACK + 8
        words[uc + (SIGNAL_BP / 8) as usize] = 0x77;
        words[uc + (SIGNAL_SP / 8) as usize] = STACK + 30 * 8;
        words[uc + (SIGNAL_IP / 8) as usize] = 0x1600;
        words[30] = 0x1510;
        let (frames, end) = run(
            &t,
            Regs {
                ip: 0x1110,
                sp: STACK,
                bp: 0,
            },
            &words,
        );
        assert_eq!(frames, [0x1110, 0x1701, 0x1600, 0x1510]);
        assert_eq!(end, WalkEnd::Complete);
    }

    #[test]
    fn reads_past_the_copy_and_unknown_code_stop_it() {
        let t = table();
        let (_, end) = run(
            &t,
            Regs {
                ip: 0x1010,
                sp: STACK,
                bp: 0,
            },
            &[0xbb],
        );
        assert_eq!(end, WalkEnd::ReadFailed(STACK + 8));
        let (frames, end) = run(
            &t,
            Regs {
                ip: 0x1110,
                sp: STACK,
                bp: 0,
            },
            &[0x9999],
        );
        assert_eq!(frames, [0x1110]);
        assert_eq!(end, WalkEnd::UnknownAddress(0x9999));
    }
}
