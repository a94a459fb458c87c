//! From resolved probes to what the BPF programs are told: each argument's fetch tree flattened
//! into the small accumulator program `urec.bpf.c` interprets, and whether entry stacks need the
//! caller added.
//!
//! # The caller at a function's entry
//!
//! At a function's first instruction the function has not pushed its frame yet, so a
//! frame-pointer walk starting at `%rbp` begins with the *caller's* frame and yields the
//! caller's caller next: the immediate caller is missing. The kernel (6.10+) inserts the return
//! address at `[sp]` itself, but only when the probed instruction is `push %rbp`
//! (`is_uprobe_at_func_entry()`); verified on 6.18: a function starting with `endbr64` (every
//! function of a `-fcf-protection` build), even `endbr64; push %rbp`, gets no fix-up, nor does
//! one starting with `lea`. For every other function start the program inserts `[sp]`.
//! The programs walk the frame pointers themselves (cheaper than the kernel's callchain), so
//! they are also told where the kernel *would* have added it (`kernel_caller`), and stacks stay
//! frame for frame what `bpf_get_stack` gave.
//! Deciding from the very byte the kernel looks at (the probe crate reads it at the probe's
//! offset), and from whether the running kernel has `is_uprobe_at_func_entry`
//! ([`KernelUprobes`]), keeps the caller from being either missing or doubled.
//! (Comparing `[sp]` with the second frame at run time cannot tell: in a recursion the
//! caller's caller has the same return address.)
//!
//! At a moved entry site (`urec_probe::site`) the same holds with the return address where the
//! skipped instructions left it: `[sp + 8 * caller_slot]` after `sub $N,%rsp` or pushes (entry-
//! only probes; entry+return ones move only where sp did not). The site is never past a write
//! of `%rbp`, so the walk still starts in the caller's frame.
//!
//! # Argument values
//!
//! uprobe_events semantics: `+OFF(FETCH)` reads the word at `FETCH + OFF`; with `:string` the
//! outermost dereference is not a load but the string's address (`+0($retval):string` is the
//! string `$retval` points to), and a bare `%reg:string` takes the register as the address.
//! Intermediate dereferences read 8 bytes; the outermost reads the TYPE's size.

use std::path::Path;

use urec_bpf::abi::{
    self, ArgProgram, FetchOp, PredCmp, PredConst, PredOp, PredProgram, ProbeConfig,
};
use urec_format::{ArgType, FileOffset, Probe, ProbeKind, ProbeSite, SitePath, StackMode, Svma};
use urec_probe::{
    CmpOp, Expr, Fetch, InsnHandling, KernelUprobes, Predicate, ResolvedProbe, Value,
};

/// A probe ready for the recorder: the file's record, and the BPF programs' table entry.
#[derive(Clone, Debug)]
pub struct PlannedProbe {
    /// What the data file records (its `stack_mode` is set by the recorder).
    pub probe: Probe,
    /// What the BPF programs read for it.
    pub config: ProbeConfig,
    /// File offset of the USDT semaphore the kernel counts while the probe is attached.
    pub ref_ctr_offset: Option<u64>,
    /// The binary as urec opens and attaches to it (`probe.binary` may be a path inside a
    /// container, see [`ResolvedProbe::open_path`]).
    pub open_path: std::path::PathBuf,
    /// Where a Go function's probes go ([`ResolvedProbe::go`]).
    pub go: Option<urec_probe::GoPlacement>,
    /// The file offset the probe is attached at ([`ResolvedProbe::site_offset`]): the
    /// function's start, a moved entry site, or a Go function's entry past its stack check.
    pub site_offset: FileOffset,
}

/// A resolved probe urec cannot record as asked.
#[derive(Debug, thiserror::Error)]
#[error("probe {probe}: {why}")]
pub struct PlanError {
    probe: String,
    why: String,
}

/// The ELF virtual address of a file offset, through the PT_LOAD segment that maps it.
///
/// Only the headers are read, as a [`urec_elf::ElfImage`] (opened by
/// [`urec_untrusted::open`]: the probed binary may be another user's to swap for a FIFO).
fn offset_to_svma(path: &Path, offset: FileOffset) -> Option<Svma> {
    let image = urec_elf::ElfImage::open(path).ok()?;
    offset.to_svma(image.loads())
}

/// Plans one resolved probe with stacks captured as `stack_mode`.
pub fn plan(resolved: &ResolvedProbe, stack_mode: StackMode) -> Result<PlannedProbe, PlanError> {
    let mut probe = resolved.probe.clone();
    probe.stack_mode = stack_mode;
    probe.site = Some(ProbeSite {
        offset: resolved.site_offset,
        path: match resolved.site.handling {
            InsnHandling::Emulated => SitePath::Emulated,
            InsnHandling::SingleStepped => SitePath::SingleStepped,
            _ => SitePath::Unknown,
        },
        // Measured once the probes are attached (`crate::calibrate`).
        cost_ns: None,
    });
    let err = |why: String| PlanError {
        probe: probe.name.clone(),
        why,
    };
    let binary = resolved.open_path.as_path();
    let at_start = probe.kind != ProbeKind::Entry || resolved.at_function_start;
    // Entry stacks: which of the kernel and the program adds `[sp]` (see the module docs). At
    // a moved entry site the return address is `caller_slot` words above sp.
    let caller_slot = u8::try_from(resolved.site.sp_delta / 8).map_err(|_| {
        err(format!(
            "internal: the entry site moved sp by {} bytes",
            resolved.site.sp_delta
        ))
    })?;
    let (add_caller, kernel_caller) = if probe.kind != ProbeKind::Return {
        let kernel = resolved.starts_with_push_rbp
            && caller_slot == 0
            && KernelUprobes::running().adds_caller_at_push_rbp;
        (at_start && !kernel, kernel)
    } else {
        (false, false)
    };
    // Places in the binary are fetched relative to the attached instruction's address
    // (`bpf_get_func_ip`): the site, not the function's start.
    let site_vaddr = resolved.site.vaddr;
    if probe.args.len() > abi::MAX_ARGS {
        return Err(err(format!(
            "at most {} arguments per probe, got {}",
            abi::MAX_ARGS,
            probe.args.len()
        )));
    }
    let mut args = Vec::with_capacity(probe.args.len());
    for (spec, fetch) in probe.args.iter().zip(&resolved.fetches) {
        let at_return = match probe.kind {
            ProbeKind::EntryReturn => spec.at_return,
            ProbeKind::Entry => false,
            ProbeKind::Return => true,
        };
        args.push(
            arg_program(fetch, spec.ty, &spec.fetch, at_return, binary, site_vaddr).map_err(err)?,
        );
    }
    let predicate = match &resolved.predicate {
        Some(pred) => Some(
            compile_predicate(pred, binary, site_vaddr)
                .map_err(|why| err(format!("predicate `if {}`: {why}", pred.text)))?,
        ),
        None => None,
    };
    Ok(PlannedProbe {
        probe,
        config: ProbeConfig {
            add_caller: add_caller && stack_mode == StackMode::FramePointer,
            kernel_caller: kernel_caller && stack_mode == StackMode::FramePointer,
            dwarf: stack_mode == StackMode::Dwarf,
            go: resolved.go.is_some(),
            caller_slot,
            // The session sets it from --stack-size.
            stack_size: 0,
            args,
            predicate,
        },
        ref_ctr_offset: resolved.ref_ctr_offset,
        open_path: resolved.open_path.clone(),
        go: resolved.go.clone(),
        site_offset: resolved.site_offset,
    })
}

/// One value's fetch program: `fetch` lowered for a value of type `ty`.
fn arg_program(
    fetch: &Fetch,
    ty: ArgType,
    fetch_text: &str,
    at_return: bool,
    binary: &Path,
    probe_vaddr: Svma,
) -> Result<ArgProgram, String> {
    let is_string = ty == ArgType::String;
    let mut ops = Vec::new();
    lower(&fetch.lowered(), type_size(ty), &mut ops, &|place| {
        let svma = match place {
            Place::FileOffset(file_off) => offset_to_svma(binary, FileOffset(file_off))
                .ok_or_else(|| {
                    format!(
                        "file offset {file_off:#x} is not in a loaded segment of {}",
                        binary.display()
                    )
                })?,
            Place::Vaddr(vaddr) => Svma(vaddr),
        };
        // Relative to the probed instruction: the BPF program adds `bpf_get_func_ip`.
        Ok(svma.0.wrapping_sub(probe_vaddr.0) as i64)
    })?;
    if is_string {
        // The outermost dereference gives the string's address: not a load (module docs).
        if let Some(last) = ops.last_mut() {
            if let FetchOp::Deref { off, .. } = *last {
                *last = FetchOp::Add(off);
            }
        }
    } else if matches!(ops.last(), Some(FetchOp::Comm)) {
        return Err(format!("{fetch_text} is a string: use :string"));
    }
    if ops.len() > abi::MAX_OPS {
        return Err(format!(
            "{fetch_text} nests too deep (at most {} steps)",
            abi::MAX_OPS
        ));
    }
    Ok(ArgProgram {
        at_return,
        is_string,
        ops,
    })
}

/// The BPF form of a predicate: its operands' fetch programs, and the expression in postfix
/// order with every `!` pushed down into the comparisons (`!(a < 1 || b == 2)` is
/// `a >= 1 && b != 2`), each comparison made in its operand's type.
fn compile_predicate(
    pred: &Predicate,
    binary: &Path,
    probe_vaddr: Svma,
) -> Result<PredProgram, String> {
    let mut operands = Vec::with_capacity(pred.operands.len());
    for a in &pred.operands {
        operands.push(arg_program(
            &a.fetch,
            a.ty,
            &a.fetch_text,
            false,
            binary,
            probe_vaddr,
        )?);
    }
    let mut ops = Vec::new();
    postfix(&pred.expr, false, pred, &mut ops);
    Ok(PredProgram { ops, operands })
}

fn postfix(e: &Expr, negate: bool, pred: &Predicate, out: &mut Vec<PredOp>) {
    match e {
        Expr::Not(a) => postfix(a, !negate, pred, out),
        Expr::And(a, b) | Expr::Or(a, b) => {
            postfix(a, negate, pred, out);
            postfix(b, negate, pred, out);
            // De Morgan: a negated && is an || of the negations.
            out.push(if matches!(e, Expr::And(..)) != negate {
                PredOp::And
            } else {
                PredOp::Or
            });
        }
        Expr::Cmp { operand, op, value } => {
            let op = if negate { op.negated() } else { *op };
            let ty = pred
                .operands
                .get(*operand)
                .map_or(ArgType::Hex(64), |a| a.ty);
            let (shl, shr, signed) = match ty {
                ArgType::Unsigned(w) | ArgType::Hex(w) => (64 - w, 64 - w, false),
                ArgType::Signed(w) => (64 - w, 64 - w, true),
                ArgType::Bitfield { width, offset, .. } => {
                    (64u8.saturating_sub(offset + width), 64 - width, false)
                }
                ArgType::String => (0, 0, false),
            };
            out.push(PredOp::Cmp {
                operand: *operand,
                cmp: match op {
                    CmpOp::Eq => PredCmp::Eq,
                    CmpOp::Ne => PredCmp::Ne,
                    CmpOp::Lt => PredCmp::Lt,
                    CmpOp::Le => PredCmp::Le,
                    CmpOp::Gt => PredCmp::Gt,
                    CmpOp::Ge => PredCmp::Ge,
                },
                shl: shl & 63,
                shr: shr & 63,
                signed,
                constant: match value {
                    Value::Int(v) => PredConst::Int(*v),
                    Value::Str(s) => PredConst::Str(s.clone()),
                },
            });
        }
    }
}

/// `-g auto` for one probe: frame pointers when the probed binary keeps them and so do the
/// known caller binaries (`callers_keep_frame_pointers`: the executables of the traced
/// processes, when known, since a library function's stack runs through the program that
/// called it; for a `#!` script, its interpreter), DWARF otherwise.
///
/// Frame pointers are the cheaper capture (a walk in the program, no copy, no unwind in the
/// recorder), so they are used wherever the walk gives the whole stack, and DWARF only where
/// it cannot:
/// - **The probed binary lacks them: DWARF**, although at a function's entry its own frame is
///   not on the stack yet: its other functions call it (libc's `strdup` and `fopen` call
///   `malloc`), and a frame without a frame pointer hides its caller from the walk or ends it.
///   Measured here, `libc:malloc` from a `-fno-omit-frame-pointer` program: the walk gave
///   `strdup;malloc` for a 9-frame stack, and `main;work;__fopen_internal;malloc` with the
///   program's `via_fopen` silently missing.
/// - **The probed binary keeps them but the program calling it does not: DWARF.** The walk
///   stops (or goes astray) at the first caller frame without one: an FP-built library
///   called through ctypes from Debian's `python3.11` gave 3 of 21 frames and an `[unknown]`.
/// - **Both keep them: frame pointers.** The libc start code below `main` (and `start_thread`
///   below a thread's function), which Debian builds without frame pointers, is the one
///   place where the walk ends early (`__libc_start_call_main` is its last frame): the same
///   frames below every stack, not worth a copy of every stack.
/// - Unknown callers (`-a`, system-wide): judged by the probed binary alone.
///
/// On Debian 12 every distribution binary measured lacks frame pointers (bash, libc,
/// python3.11, sqlite3 and libsqlite3, readline, zlib), so all of them get DWARF, which then
/// costs what each stack is (see [`crate::dwarf`], "How much stack is copied").
///
/// Deciding from the code, not from a name list: the probe crate measures the share of
/// frame-setting functions that start with `push %rbp; mov %rsp,%rbp`
/// ([`ResolvedProbe::binary_keeps_frame_pointers`]), and [`urec_probe::keeps_frame_pointers`]
/// applies the same census to the callers.
///
/// Go binaries are the exception to the census: the Go toolchain keeps frame pointers on amd64,
/// but sets them up after the stack check, where the census does not look
/// ([`ResolvedProbe::binary_is_go`]); a Go program as the caller counts as keeping them too.
/// Unstripped Go binaries also carry a `.debug_frame`, which is no reason to copy stacks: the
/// walk is complete, down to `runtime.goexit`, while the DWARF unwinder skips a compressed
/// `.debug_frame` (Go writes no `.eh_frame`) and stops after the first frame (`[truncated]`;
/// measured on Go 1.19).
pub fn auto_stack_mode(resolved: &ResolvedProbe, callers_keep_frame_pointers: bool) -> StackMode {
    let probed_keeps = resolved.binary_keeps_frame_pointers || resolved.binary_is_go;
    if probed_keeps && callers_keep_frame_pointers {
        StackMode::FramePointer
    } else {
        StackMode::Dwarf
    }
}

fn type_size(ty: ArgType) -> u8 {
    match ty {
        ArgType::Unsigned(b) | ArgType::Signed(b) | ArgType::Hex(b) => (b / 8).clamp(1, 8),
        ArgType::Bitfield { container, .. } => (container / 8).clamp(1, 8),
        ArgType::String => 8,
    }
}

/// A place in the probed binary whose runtime address is the probe's plus a fixed delta.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// `@+OFFSET`.
    FileOffset(u64),
    /// An ELF virtual address (USDT `sym(%rip)` operands).
    Vaddr(u64),
}

/// Appends the ops computing `fetch`; `size` is what the outermost dereference reads.
/// `file_rel` gives a place's distance from the probe, which the program adds to the probe's
/// runtime address: that absorbs the load bias, so PIE globals need no per-process lookup.
fn lower(
    fetch: &Fetch,
    size: u8,
    ops: &mut Vec<FetchOp>,
    file_rel: &dyn Fn(Place) -> Result<i64, String>,
) -> Result<(), String> {
    match fetch {
        Fetch::Reg(r) => ops.push(FetchOp::Reg(r.pt_regs_offset() / 8)),
        Fetch::StackPointer => ops.push(FetchOp::Reg(abi::REG_SP)),
        Fetch::StackSlot(n) => ops.push(FetchOp::SpRel(i64::from(*n) * 8)),
        Fetch::Memory(addr) => {
            ops.push(FetchOp::Imm(*addr as i64));
            ops.push(FetchOp::Deref { off: 0, size });
        }
        Fetch::FileOffset(off) => {
            ops.push(FetchOp::ProbeRel(file_rel(Place::FileOffset(*off))?));
            ops.push(FetchOp::Deref { off: 0, size });
        }
        Fetch::Indexed { base, index, scale } => {
            ops.push(FetchOp::Reg(base.pt_regs_offset() / 8));
            ops.push(FetchOp::AddReg {
                reg: index.pt_regs_offset() / 8,
                scale: *scale,
            });
        }
        Fetch::Global(vaddr) => {
            ops.push(FetchOp::ProbeRel(file_rel(Place::Vaddr(*vaddr))?));
            ops.push(FetchOp::Deref { off: 0, size });
        }
        Fetch::Immediate(v) => ops.push(FetchOp::Imm(*v as i64)),
        Fetch::Comm => ops.push(FetchOp::Comm),
        Fetch::Deref { offset, inner } => {
            lower(inner, 8, ops, file_rel)?;
            ops.push(FetchOp::Deref { off: *offset, size });
        }
        // `lowered()` replaced these with registers and stack slots.
        Fetch::Arg(_) | Fetch::Retval => {
            return Err(format!("internal: {fetch:?} was not lowered"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use urec_probe::Reg;

    fn lowered(f: &Fetch, size: u8) -> Vec<FetchOp> {
        let mut ops = Vec::new();
        lower(&f.lowered(), size, &mut ops, &|p| match p {
            Place::FileOffset(o) | Place::Vaddr(o) => Ok(o as i64 - 0x1000),
        })
        .unwrap();
        ops
    }

    #[test]
    fn lowers_fetch_trees() {
        assert_eq!(lowered(&Fetch::Arg(1), 4), vec![FetchOp::Reg(14)]);
        assert_eq!(lowered(&Fetch::Arg(7), 8), vec![FetchOp::SpRel(8)]);
        assert_eq!(lowered(&Fetch::Retval, 8), vec![FetchOp::Reg(abi::REG_AX)]);
        let d = Fetch::Deref {
            offset: 8,
            inner: Box::new(Fetch::Deref {
                offset: -4,
                inner: Box::new(Fetch::Reg(Reg::Si)),
            }),
        };
        assert_eq!(
            lowered(&d, 2),
            vec![
                FetchOp::Reg(13),
                FetchOp::Deref { off: -4, size: 8 },
                FetchOp::Deref { off: 8, size: 2 }
            ]
        );
        assert_eq!(
            lowered(&Fetch::FileOffset(0x1010), 8),
            vec![FetchOp::ProbeRel(0x10), FetchOp::Deref { off: 0, size: 8 }]
        );
        let element = Fetch::Deref {
            offset: -8,
            inner: Box::new(Fetch::Indexed {
                base: Reg::Ax,
                index: Reg::Di,
                scale: 8,
            }),
        };
        assert_eq!(
            lowered(&element, 8),
            vec![
                FetchOp::Reg(abi::REG_AX),
                FetchOp::AddReg { reg: 14, scale: 8 },
                FetchOp::Deref { off: -8, size: 8 }
            ]
        );
        assert_eq!(
            lowered(&Fetch::Global(0x1020), 4),
            vec![FetchOp::ProbeRel(0x20), FetchOp::Deref { off: 0, size: 4 }]
        );
    }

    #[test]
    fn predicates_compile_to_postfix_without_not() {
        let spec = urec_probe::parse(
            "t:f a=arg1:s32 b=arg2:b3@2/8 if !(a < -1 || b == 2) && $comm != \"sh\"",
        )
        .unwrap();
        let pred = spec.predicate.unwrap();
        let prog = compile_predicate(&pred, Path::new("/nonexistent"), Svma(0x1000)).unwrap();
        let cmp = |operand, cmp, shl, shr, signed, constant| PredOp::Cmp {
            operand,
            cmp,
            shl,
            shr,
            signed,
            constant,
        };
        assert_eq!(
            prog.ops,
            vec![
                cmp(0, PredCmp::Ge, 32, 32, true, PredConst::Int(u64::MAX)),
                cmp(1, PredCmp::Ne, 59, 61, false, PredConst::Int(2)),
                PredOp::And,
                cmp(2, PredCmp::Ne, 0, 0, false, PredConst::Str(b"sh".to_vec())),
                PredOp::And,
            ]
        );
        assert_eq!(prog.operands.len(), 3);
        assert_eq!(prog.operands[0].ops, vec![FetchOp::Reg(14)]);
        // The bitfield's container is a byte: its dereference-free register value is masked
        // by the shifts, not by a read size.
        assert_eq!(prog.operands[1].ops, vec![FetchOp::Reg(13)]);
        assert!(prog.operands[2].is_string);
        assert_eq!(prog.operands[2].ops, vec![FetchOp::Comm]);
        // What the BPF program computes for the bitfield: bits 2..5 of the value.
        let v: u64 = 0b1_0110_1011;
        if let PredOp::Cmp { shl, shr, .. } = prog.ops[1] {
            assert_eq!((v << shl) >> shr, (v >> 2) & 0b111);
        }
    }
}
