//! What the kernel does with an instruction when a uprobe sits on it, and where instructions
//! begin.
//!
//! x86 uprobes replace the instruction with `int3`. On a hit the kernel either *emulates* the
//! original instruction (cheap) or copies it to an out-of-line slot and *single-steps* it there
//! (a second trap: about 10 µs per hit on this project's 6.18 VM instead of under 1 µs).
//! Some instructions it refuses outright (`ENOTSUPP`, errno 524). Measured with bpftrace on
//! 6.18, 100,000 calls each: `push %rbp` 0.96 µs, `nop` 0.78 µs, `nopl 0(%rax,%rax)` 0.62 µs;
//! `endbr64` 10.5 µs, `lea` 10.1 µs, `mov` 9.6 µs, `sub $8,%rsp` 9.5 µs. Note `endbr64`: every
//! function of a CET-enabled build (`-fcf-protection`) starts with it, so all of them
//! single-step.
//!
//! # The kernel's rules (arch/x86/kernel/uprobes.c), as checked on 6.18
//!
//! Instructions are decoded with `iced-x86` (lengths, validity, encodings); the rules below
//! restate what `uprobe_init_insn`, `branch_setup_xol_ops` and `push_setup_xol_ops` do with
//! the decoded bytes. Each was checked on the project's 6.18 VM by enabling a tracefs uprobe on
//! a function starting with the instruction while a process mapped it (`docs/guide.md`,
//! "Which instructions can be probed"):
//! - **Refused**: `es`/`cs`/`ss`/`ds` segment prefixes (which includes CET's `notrack` = 0x3e)
//!   and `lock`; `mov %ss` / `pop %ss`; one-byte opcodes outside the kernel's `good_insns_64`
//!   table (`int3`, `hlt`, `in`/`out`, ...); branches with a 0x66 prefix. For VEX and EVEX
//!   instructions the kernel looks the opcode byte *after* the prefix up in that same one-byte
//!   table, so `vmovd` (0x6e), `vmovdqu` (0x6f) and `vpxor` (0xef) are refused while
//!   `vzeroupper` (0x77) is not: that is why glibc's `__strchr_avx2` cannot be probed. Two-byte
//!   opcodes are all accepted (0x0f is "good" in the one-byte table, so the two-byte table is
//!   never consulted): `syscall`, `ud2` and `lfence` single-step.
//! - **Mis-emulated, refused by urec**: the kernel emulates `jcc`/`jmp`/`call rel` and `nop`
//!   by their opcode byte alone. A VEX/EVEX instruction whose opcode byte is 0x70–0x7f, 0xe8,
//!   0xe9, 0xeb or 0x90 (`vpcmpeqb`, `vpshufd`, `vpor`, `kmovw`, ...) is then "emulated" as a
//!   branch or a nop and never executed, and `xchg %r8,%rax` (REX.B 0x90) is skipped as a nop.
//!   Verified: a probe on `vpcmpeqb %xmm1,%xmm1,%xmm0` made the function return 0 instead of
//!   -1, one on `xchg %r8,%rax` returned 2 instead of 1. A tracer must never change what the
//!   traced program computes, so urec never places a probe there.
//! - **Emulated**: branches (`jmp`, `call rel`, `jcc`), `nop` with any prefixes (`pause`
//!   included: a hint), `push %reg` (one byte, or `0x41` + one byte; from Linux 6.10), and
//!   `nopl`/`nopw` (`0f 1f /0`; from 6.18, with the uprobe syscall). Which of the later ones the
//!   running kernel has is read from `/proc/kallsyms` ([`KernelUprobes::running`]).
//! - **Single-stepped**: everything else.

use std::fmt;
use std::sync::OnceLock;

use iced_x86::{Decoder, DecoderError, DecoderOptions, Formatter, GasFormatter};

/// How the kernel handles a uprobe on an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InsnHandling {
    /// Emulated in the kernel: `push reg`, `nop`/`nopl`, `jmp`/`call rel`, `jcc`. Cheap.
    Emulated,
    /// Executed out of line with a single-step trap: about 10× the cost per hit.
    SingleStepped,
    /// No probe can go here: the kernel refuses it, or would emulate it wrongly.
    Refused(Refusal),
    /// Not enough bytes to tell (the function lies outside the file, or is empty).
    Unknown,
}

impl InsnHandling {
    /// Whether a probe may be placed here.
    pub fn is_refused(self) -> bool {
        matches!(self, InsnHandling::Refused(_))
    }
}

/// Why no probe can be placed on an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The bytes are no valid x86-64 instruction (the kernel answers ENOEXEC).
    Undecodable,
    /// A prefix the kernel refuses: a segment override (0x26, 0x2e, 0x36, 0x3e, which is also
    /// CET's `notrack`) or `lock` (0xf0).
    Prefix(u8),
    /// `mov %ss` / `pop %ss`, which mask exceptions for one instruction.
    MasksExceptions,
    /// A VEX/EVEX instruction whose opcode byte the kernel's one-byte table refuses.
    VectorOpcode(u8),
    /// A one-byte opcode the kernel refuses (`int3`, `hlt`, `in`, `out`, ...).
    Opcode(u8),
    /// A branch with an operand-size prefix (Intel and AMD disagree on its meaning).
    SizedBranch,
    /// The kernel would "emulate" it as a branch or a nop and skip the real instruction,
    /// changing what the program computes.
    MisEmulated,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Undecodable => f.write_str("its bytes do not decode as an instruction"),
            Refusal::Prefix(p) => write!(
                f,
                "the kernel refuses instructions with a {} prefix ({p:#04x})",
                match p {
                    0xf0 => "lock",
                    0x3e => "ds/notrack",
                    _ => "segment-override",
                }
            ),
            Refusal::MasksExceptions => {
                f.write_str("the kernel refuses instructions that load %ss (they mask exceptions)")
            }
            Refusal::VectorOpcode(op) => write!(
                f,
                "it is VEX/EVEX-encoded and the kernel refuses its opcode byte {op:#04x} (ENOTSUPP)"
            ),
            Refusal::Opcode(op) => write!(f, "the kernel refuses opcode {op:#04x} (ENOTSUPP)"),
            Refusal::SizedBranch => {
                f.write_str("the kernel refuses branches with an operand-size prefix (ENOTSUPP)")
            }
            Refusal::MisEmulated => f.write_str(
                "the kernel would emulate it as a branch or a nop by its opcode byte and skip it, \
                 changing what the program computes",
            ),
        }
    }
}

impl Refusal {
    /// A few words for `urec list`'s mark (`VEX opcode 0x6e`).
    pub fn short(&self) -> String {
        match self {
            Refusal::Undecodable => "undecodable".into(),
            Refusal::Prefix(0xf0) => "lock prefix".into(),
            Refusal::Prefix(p) => format!("prefix {p:#04x}"),
            Refusal::MasksExceptions => "loads %ss".into(),
            Refusal::VectorOpcode(op) => format!("VEX/EVEX opcode {op:#04x}"),
            Refusal::Opcode(op) => format!("opcode {op:#04x}"),
            Refusal::SizedBranch => "0x66 branch".into(),
            Refusal::MisEmulated => "kernel would mis-emulate".into(),
        }
    }
}

/// What the running kernel's uprobe code emulates beyond what every supported kernel does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelUprobes {
    /// `push %reg` is emulated (`push_emulate_op`, Linux 6.10).
    pub emulates_push: bool,
    /// `nopl`/`nopw` (`0f 1f /0`) are emulated (Linux 6.18, with the uprobe syscall).
    pub emulates_nopl: bool,
    /// At a function's entry whose probed instruction is `push %rbp`, the kernel's user stack
    /// includes the return address at `[sp]` (`is_uprobe_at_func_entry`, Linux 6.10).
    pub adds_caller_at_push_rbp: bool,
}

impl KernelUprobes {
    /// The newest behaviour urec knows (used where the running kernel cannot be asked).
    pub const NEWEST: KernelUprobes = KernelUprobes {
        emulates_push: true,
        emulates_nopl: true,
        adds_caller_at_push_rbp: true,
    };

    /// The running kernel, from the functions `/proc/kallsyms` names (readable without
    /// privileges: only the addresses are hidden), else from its version. Which instructions
    /// the kernel emulates changes between releases, and backports make version numbers a
    /// poor guide, so the functions that implement each behaviour are looked for.
    pub fn running() -> KernelUprobes {
        static RUNNING: OnceLock<KernelUprobes> = OnceLock::new();
        *RUNNING.get_or_init(|| {
            std::fs::read_to_string("/proc/kallsyms")
                .ok()
                .and_then(|s| KernelUprobes::from_kallsyms(&s))
                .or_else(|| {
                    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
                    Some(KernelUprobes::from_release(&release))
                })
                .unwrap_or(KernelUprobes::NEWEST)
        })
    }

    /// From the text of `/proc/kallsyms`; None when it holds no uprobe code at all.
    pub fn from_kallsyms(kallsyms: &str) -> Option<KernelUprobes> {
        let mut k = KernelUprobes {
            emulates_push: false,
            emulates_nopl: false,
            adds_caller_at_push_rbp: false,
        };
        let mut uprobes = false;
        for line in kallsyms.lines() {
            let Some(name) = line.split_whitespace().nth(2) else {
                continue;
            };
            match name {
                "arch_uprobe_analyze_insn" => uprobes = true,
                "push_emulate_op" => k.emulates_push = true,
                "arch_uprobe_optimize" => k.emulates_nopl = true,
                "is_uprobe_at_func_entry" => k.adds_caller_at_push_rbp = true,
                _ => {}
            }
        }
        uprobes.then_some(k)
    }

    /// From a kernel release string (`6.18.44-...`).
    pub fn from_release(release: &str) -> KernelUprobes {
        let mut parts = release
            .trim()
            .split(|c: char| !c.is_ascii_digit())
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let v = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        KernelUprobes {
            emulates_push: v >= (6, 10),
            emulates_nopl: v >= (6, 18),
            adds_caller_at_push_rbp: v >= (6, 10),
        }
    }
}

/// The kernel's `good_insns_64`: bit `op` set when a one-byte opcode (or, for VEX/EVEX, the
/// opcode byte after the prefix) may be probed. Rows of 16 opcodes, bit 0 = opcode `row + 0`.
const GOOD_INSNS_64: [u16; 16] = [
    0b1011_1111_0011_1111, // 00: not 06 07 0e
    0b0011_1111_0011_1111, // 10: not 16 17 1e 1f
    0b0111_1111_0111_1111, // 20: not 27 2f
    0b0111_1111_0111_1111, // 30: not 37 3f
    0b1111_1111_1111_1111, // 40
    0b1111_1111_1111_1111, // 50
    0b0000_1111_1111_1000, // 60: not 60 61 62 6c-6f
    0b1111_1111_1111_1111, // 70
    0b1111_1111_1111_1011, // 80: not 82
    0b1111_1011_1111_1111, // 90: not 9a
    0b1111_1111_1111_1111, // a0
    0b1111_1111_1111_1111, // b0
    0b0000_1111_1111_1111, // c0: not cc-cf
    0b1111_1111_1000_1111, // d0: not d4 d5 d6
    0b0000_1011_0000_1111, // e0: not e4-e7 ea ec-ef
    0b1111_0011_1110_1101, // f0: not f1 f4 fa fb
];

fn good_opcode(op: u8) -> bool {
    GOOD_INSNS_64[usize::from(op >> 4)] & (1 << (op & 15)) != 0
}

const LEGACY_PREFIXES: [u8; 11] = [
    0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x66, 0x67, 0xf0, 0xf2, 0xf3,
];

/// An x86-64 instruction decoded at a probe site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Its length in bytes.
    pub len: usize,
    /// AT&T syntax, as `objdump -d` prints it (`mov %rdi,%rbx`).
    pub text: String,
}

/// Decodes the instruction at the start of `bytes` (at virtual address `ip`); None when the
/// bytes end before it does or are no valid instruction.
pub fn decode(bytes: &[u8], ip: u64) -> Option<Insn> {
    let insn = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE).decode();
    (!insn.is_invalid()).then(|| describe(&insn))
}

/// Length and AT&T text of a decoded instruction.
pub(crate) fn describe(insn: &iced_x86::Instruction) -> Insn {
    let mut text = String::new();
    let mut fmt = GasFormatter::new();
    fmt.options_mut().set_space_after_operand_separator(false);
    fmt.format(insn, &mut text);
    Insn {
        len: insn.len(),
        text: text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Classifies the instruction at the start of `bytes` (x86-64) for the kernel `kernel`.
pub fn classify(bytes: &[u8], kernel: &KernelUprobes) -> InsnHandling {
    let mut decoder = Decoder::new(64, bytes, DecoderOptions::NONE);
    let insn = decoder.decode();
    if insn.is_invalid() {
        return match decoder.last_error() {
            DecoderError::NoMoreBytes => InsnHandling::Unknown,
            _ => InsnHandling::Refused(Refusal::Undecodable),
        };
    }
    let b = &bytes[..insn.len().min(bytes.len())];
    let mut i = 0;
    let mut opsize = false;
    while let Some(&p) = b.get(i).filter(|p| LEGACY_PREFIXES.contains(p)) {
        match p {
            0x26 | 0x2e | 0x36 | 0x3e | 0xf0 => return InsnHandling::Refused(Refusal::Prefix(p)),
            0x66 => opsize = true,
            _ => {}
        }
        i += 1;
    }
    // In 64-bit mode c4/c5 start a VEX prefix and 62 an EVEX one; 8f is XOP unless its
    // ModRM.reg is 0 (`pop r/m`). The decoder already said the instruction is valid.
    let vector = match b.get(i) {
        Some(0xc4 | 0xc5 | 0x62) => true,
        Some(0x8f) => b.get(i + 1).is_some_and(|m| (m >> 3) & 7 != 0),
        _ => false,
    };
    if vector {
        // The kernel's decoder keeps the one opcode byte after a VEX (c5 xx / c4 xx xx), EVEX
        // (62 xx xx xx) or XOP (8f xx xx) prefix.
        let skip = match b.get(i) {
            Some(0xc5) => 2,
            Some(0xc4 | 0x8f) => 3,
            _ => 4,
        };
        let Some(&op) = b.get(i + skip) else {
            return InsnHandling::Unknown;
        };
        if !good_opcode(op) {
            return InsnHandling::Refused(Refusal::VectorOpcode(op));
        }
        // Its branch and nop emulation looks at nothing else.
        if matches!(op, 0x70..=0x7f | 0xe8 | 0xe9 | 0xeb | 0x90) {
            return InsnHandling::Refused(Refusal::MisEmulated);
        }
        return InsnHandling::SingleStepped;
    }
    let mut rex = 0u8;
    if let Some(&r @ 0x40..=0x4f) = b.get(i) {
        rex = r;
        i += 1;
    }
    let (Some(&op), op2, modrm_reg) = (
        b.get(i),
        b.get(i + 1).copied(),
        b.get(i + 1).map(|m| (m >> 3) & 7),
    ) else {
        return InsnHandling::Unknown;
    };
    if op == 0x8e && modrm_reg == Some(2) {
        return InsnHandling::Refused(Refusal::MasksExceptions);
    }
    if !good_opcode(op) {
        return InsnHandling::Refused(Refusal::Opcode(op));
    }
    let near_jcc = op == 0x0f && matches!(op2, Some(0x80..=0x8f));
    match op {
        // `xchg %r8,%rax` is skipped like a nop (the kernel ignores REX.B).
        0x90 if rex & 1 != 0 => InsnHandling::Refused(Refusal::MisEmulated),
        0x90 => InsnHandling::Emulated,
        0xe8 | 0xe9 | 0xeb | 0x70..=0x7f if opsize => InsnHandling::Refused(Refusal::SizedBranch),
        0xe8 | 0xe9 | 0xeb | 0x70..=0x7f => InsnHandling::Emulated,
        0x0f if near_jcc && opsize => InsnHandling::Refused(Refusal::SizedBranch),
        0x0f if near_jcc => InsnHandling::Emulated,
        // nopl/nopw: `0f 1f /0`.
        0x0f if kernel.emulates_nopl
            && op2 == Some(0x1f)
            && b.get(i + 2).is_some_and(|m| (m >> 3) & 7 == 0) =>
        {
            InsnHandling::Emulated
        }
        0x50..=0x57 if kernel.emulates_push && (b.len() == 1 || (b.len() == 2 && rex == 0x41)) => {
            InsnHandling::Emulated
        }
        _ => InsnHandling::SingleStepped,
    }
}

const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];

fn skip_endbr(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(&ENDBR64[..]).unwrap_or(bytes)
}

/// The probed instruction itself is `push %rbp`. Only then does the kernel's frame-pointer
/// walk at entry include the immediate caller (Linux ≥ 6.10 reads the return address at `[sp]`
/// when the probed instruction is that push); `endbr64; push %rbp` does not count — verified
/// on 6.18, where the probe sits on the `endbr64` — so there the recorder adds `[sp]` itself.
pub fn starts_with_push_rbp(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0x55)
}

/// The function opens with the frame-pointer prologue `[endbr64] push %rbp; ...;
/// mov %rsp,%rbp` (either encoding of the `mov`). gcc -O2 schedules other instructions between
/// the two, so the `mov` is looked for in the next bytes rather than right after the `push`;
/// without frame pointers `push %rbp` only saves rbp as a general register and no
/// `mov %rsp,%rbp` follows.
pub fn has_frame_pointer_prologue(bytes: &[u8]) -> bool {
    let b = skip_endbr(bytes);
    if b.first() != Some(&0x55) {
        return false;
    }
    let window = &b[1..b.len().min(20)];
    window
        .windows(3)
        .any(|w| w == [0x48, 0x89, 0xe5] || w == [0x48, 0x8b, 0xec])
}

/// The function opens by saving registers or reserving stack (`[endbr64] push %reg` or
/// `sub $N,%rsp`), which nearly every function that calls others does (it must at least
/// realign the stack). Leaf functions often don't; they also don't matter for frame-pointer
/// walks, so they are left out of the frame-pointer census.
pub fn sets_up_a_frame(bytes: &[u8]) -> bool {
    let b = skip_endbr(bytes);
    matches!(
        b,
        [0x50..=0x57, ..] | [0x41, 0x50..=0x57, ..] | [0x48, 0x83 | 0x81, 0xec, ..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use InsnHandling::*;

    const K: KernelUprobes = KernelUprobes::NEWEST;

    fn c(bytes: &[u8]) -> InsnHandling {
        classify(bytes, &K)
    }

    #[test]
    fn measured_on_6_18() {
        assert_eq!(c(&[0x55, 0x48, 0x89, 0xe5]), Emulated); // push %rbp
        assert_eq!(c(&[0x41, 0x57]), Emulated); // push %r15
        assert_eq!(c(&[0x90, 0xc3]), Emulated); // nop
        assert_eq!(c(&[0x0f, 0x1f, 0x44, 0x00, 0x00]), Emulated); // nopl
        assert_eq!(c(&[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00]), Emulated); // nopw
        assert_eq!(c(&ENDBR64), SingleStepped);
        assert_eq!(c(&[0x48, 0x8d, 0x44, 0x24, 0x08]), SingleStepped); // lea
        assert_eq!(c(&[0x48, 0x89, 0xf8]), SingleStepped); // mov %rdi,%rax
        assert_eq!(c(&[0x48, 0x83, 0xec, 0x08]), SingleStepped); // sub $8,%rsp
    }

    /// Every row checked against the 6.18 kernel with tracefs (see the module docs).
    #[test]
    fn what_6_18_accepts_and_refuses() {
        let refused: &[&[u8]] = &[
            &[0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0], // cs nopw
            &[0x62, 0xe1, 0xfe, 0x28, 0x6f, 0x06],    // vmovdqu64 (EVEX 6f)
            &[0xf4],                                  // hlt
            &[0xec],                                  // in
            &[0xcc],                                  // int3
            &[0x66, 0xe9, 0, 0, 0, 0],                // jmpw
            &[0xf0, 0x48, 0x83, 0x00, 0x01],          // lock add
            &[0x8e, 0xd0],                            // mov %eax,%ss
            &[0x3e, 0xff, 0xe0],                      // notrack jmp *%rax
            &[0xc4, 0xe3, 0x79, 0x17, 0xc0, 0x00],    // vextractps (VEX 17)
            &[0xc5, 0xf9, 0x6e, 0xc6],                // vmovd %esi,%xmm0
            &[0xc5, 0xfe, 0x6f, 0x06],                // vmovdqu (%rsi),%ymm0
            &[0xc5, 0xf1, 0xef, 0xc9],                // vpxor
        ];
        for b in refused {
            assert!(c(b).is_refused(), "{b:02x?}: {:?}", c(b));
        }
        let accepted: &[&[u8]] = &[
            &[0xf2, 0xe9, 0, 0, 0, 0],                      // bnd jmp
            &[0x0f, 0xa2],                                  // cpuid
            &[0xf3, 0x0f, 0x1e, 0xfa],                      // endbr64
            &[0x62, 0xe2, 0x7d, 0x28, 0x7a, 0xc6],          // vpbroadcastb (EVEX 7a)... see below
            &[0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0], // mov %fs:0x28,%rax
            &[0x48, 0x8d, 0x40, 0x00],                      // lea 0(%rax),%rax
            &[0x0f, 0xae, 0xe8],                            // lfence
            &[0x48, 0x89, 0xc0],                            // mov %rax,%rax
            &[0x66, 0x0f, 0x38, 0x00, 0xc1],                // pshufb
            &[0x48, 0x55],                                  // rex.w push %rbp
            &[0x0f, 0x31],                                  // rdtsc
            &[0x0f, 0x05],                                  // syscall
            &[0x0f, 0x0b],                                  // ud2
            &[0xc4, 0xe2, 0x7d, 0x78, 0xc0],                // vpbroadcastb (VEX 78)
            &[0xc5, 0xf8, 0x77],                            // vzeroupper
            &[0xc6, 0xf8, 0x00],                            // xabort
            &[0x0f, 0x01, 0xd0],                            // xgetbv
            &[0xf3, 0x90],                                  // pause
        ];
        // The kernel accepts opcode bytes 0x7a and 0x78 and 0x77 after VEX/EVEX, but then
        // "emulates" them as conditional jumps: urec refuses them as mis-emulated.
        for b in accepted {
            let h = c(b);
            if matches!(b[0], 0x62 | 0xc4 | 0xc5) {
                assert_eq!(h, Refused(Refusal::MisEmulated), "{b:02x?}");
            } else {
                assert!(!h.is_refused(), "{b:02x?}: {h:?}");
            }
        }
    }

    #[test]
    fn mis_emulated() {
        // Verified on 6.18: the probed function's result changed.
        assert_eq!(c(&[0x49, 0x90]), Refused(Refusal::MisEmulated)); // xchg %rax,%r8
        assert_eq!(
            c(&[0xc5, 0xf1, 0x74, 0xc1]), // vpcmpeqb %xmm1,%xmm1,%xmm0
            Refused(Refusal::MisEmulated)
        );
        assert_eq!(c(&[0xc5, 0xf1, 0xeb, 0xc1]), Refused(Refusal::MisEmulated)); // vpor
        assert_eq!(c(&[0xc5, 0xf8, 0x90, 0xc1]), Refused(Refusal::MisEmulated)); // kmovw
        assert_eq!(c(&[0x48, 0x90]), Emulated); // rex.w nop
        assert_eq!(c(&[0xc5, 0xf8, 0x57, 0xc0]), SingleStepped); // vxorps (0x57: no push)
    }

    #[test]
    fn branches() {
        assert_eq!(c(&[0xe9, 0, 0, 0, 0]), Emulated);
        assert_eq!(c(&[0xeb, 0x05]), Emulated);
        assert_eq!(c(&[0xe8, 0, 0, 0, 0]), Emulated);
        assert_eq!(c(&[0x74, 0x05]), Emulated);
        assert_eq!(c(&[0x0f, 0x84, 0, 0, 0, 0]), Emulated);
        assert_eq!(
            c(&[0x66, 0x0f, 0x84, 0, 0, 0, 0]),
            Refused(Refusal::SizedBranch)
        );
        assert_eq!(c(&[]), Unknown);
        assert_eq!(c(&[0x48, 0x89]), Unknown);
    }

    #[test]
    fn older_kernels_single_step_more() {
        let k6_12 = KernelUprobes::from_release("6.12.3");
        assert!(k6_12.emulates_push && !k6_12.emulates_nopl);
        assert_eq!(classify(&[0x0f, 0x1f, 0x00], &k6_12), SingleStepped);
        assert_eq!(classify(&[0x90], &k6_12), Emulated);
        let k6_6 = KernelUprobes::from_release("6.6.0");
        assert_eq!(classify(&[0x55], &k6_6), SingleStepped);
        let syms = "ffffffff8133d830 t push_emulate_op\n\
                    ffffffff8133ecf0 T arch_uprobe_analyze_insn\n";
        assert_eq!(
            KernelUprobes::from_kallsyms(syms),
            Some(KernelUprobes {
                emulates_push: true,
                emulates_nopl: false,
                adds_caller_at_push_rbp: false
            })
        );
        assert_eq!(KernelUprobes::from_kallsyms("0 T foo\n"), None);
    }

    #[test]
    fn prologues() {
        assert!(starts_with_push_rbp(&[0x55]));
        assert!(!starts_with_push_rbp(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55]));
        assert!(!starts_with_push_rbp(&[]));
        assert!(has_frame_pointer_prologue(&[0x55, 0x48, 0x89, 0xe5]));
        assert!(has_frame_pointer_prologue(&[
            0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5
        ]));
        assert!(!has_frame_pointer_prologue(&[0x55, 0x53]));
        // gcc -O2 -fno-omit-frame-pointer: `push %rbp; mov $1,%esi; mov %rsp,%rbp`.
        assert!(has_frame_pointer_prologue(&[
            0x55, 0xbe, 0x01, 0x00, 0x00, 0x00, 0x48, 0x89, 0xe5
        ]));
        assert!(sets_up_a_frame(&[0x41, 0x57]));
        assert!(sets_up_a_frame(&[0xf3, 0x0f, 0x1e, 0xfa, 0x53]));
        assert!(sets_up_a_frame(&[0x48, 0x83, 0xec, 0x08]));
        assert!(!sets_up_a_frame(&[0x8d, 0x04, 0x37]));
    }
}
