//! What the kernel does with a function's first instruction when a uprobe sits on it.
//!
//! x86 uprobes replace the instruction with `int3`. On a hit the kernel either *emulates* the
//! original instruction (cheap) or copies it to an out-of-line slot and *single-steps* it there
//! (a second trap: about 10 µs per hit on this project's 6.18 VM instead of under 1 µs).
//! Some instructions it refuses outright. Measured with bpftrace on 6.18, 100,000 calls each:
//! `push %rbp` 0.96 µs, `nop` 0.78 µs, `nopl 0(%rax,%rax)` 0.62 µs; `endbr64` 10.5 µs,
//! `lea` 10.1 µs, `mov` 9.6 µs, `sub $8,%rsp` 9.5 µs. Note `endbr64`: every function of a
//! CET-enabled build (`-fcf-protection`) starts with it, so all of them single-step.
//!
//! Only the opcode is decoded (prefixes, REX, one- or two-byte opcode): enough to classify,
//! no instruction-length decoder needed. The tables of refused opcodes restate the kernel's
//! `good_insns_64` / `good_2byte_insns` (arch/x86/kernel/uprobes.c); VEX/EVEX-encoded
//! instructions are treated as single-stepped.

/// How the kernel handles a uprobe on an instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InsnHandling {
    /// Emulated in the kernel: `push reg`, `nop`/`nopl`, `jmp`/`call rel`, `jcc`. Cheap.
    Emulated,
    /// Executed out of line with a single-step trap: about 10× the cost per hit.
    SingleStepped,
    /// The kernel refuses a uprobe here (`int3`, `syscall`, `hlt`, `lock`-prefixed, ...).
    Refused,
    /// Not enough bytes to tell (the function lies outside the file, or is empty).
    Unknown,
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

/// Classifies the instruction at the start of `bytes` (x86-64).
pub fn classify(bytes: &[u8]) -> InsnHandling {
    let mut i = 0;
    let mut opsize_prefix = false;
    let mut rep_prefix = false;
    loop {
        match bytes.get(i) {
            None => return InsnHandling::Unknown,
            // es/cs/ss/ds segment overrides and lock: refused by the kernel.
            Some(0x26 | 0x2e | 0x36 | 0x3e | 0xf0) => return InsnHandling::Refused,
            Some(0x66) => opsize_prefix = true,
            Some(0xf2 | 0xf3) => rep_prefix = true,
            Some(0x67 | 0x64 | 0x65) => {}
            Some(_) => break,
        }
        i += 1;
    }
    let has_prefix = i > 0;
    let mut rex = 0u8;
    if let Some(&b @ 0x40..=0x4f) = bytes.get(i) {
        rex = b;
        i += 1;
    }
    let Some(&op) = bytes.get(i) else {
        return InsnHandling::Unknown;
    };
    match op {
        // push %reg (REX.B for r8-r15 only, as the kernel's push emulation requires).
        0x50..=0x57 if !has_prefix && (rex == 0 || rex == 0x41) => InsnHandling::Emulated,
        // nop (not `xchg %r8,%rax` = REX.B 90, not `pause` = f3 90).
        0x90 if rex & 1 == 0 && !rep_prefix => InsnHandling::Emulated,
        // Branches: a 0x66 prefix makes Intel and AMD disagree; the kernel refuses them.
        0xe8 | 0xe9 | 0xeb | 0x70..=0x7f if opsize_prefix => InsnHandling::Refused,
        0xe8 | 0xe9 | 0xeb | 0x70..=0x7f => InsnHandling::Emulated,
        0x0f => {
            let Some(&op2) = bytes.get(i + 1) else {
                return InsnHandling::Unknown;
            };
            match op2 {
                0x80..=0x8f if opsize_prefix => InsnHandling::Refused,
                0x80..=0x8f => InsnHandling::Emulated,
                // nopl / nopw: `0f 1f /0`.
                0x1f if !rep_prefix
                    && bytes.get(i + 2).is_some_and(|modrm| (modrm >> 3) & 7 == 0) =>
                {
                    InsnHandling::Emulated
                }
                0x00..=0x0d
                | 0x18
                | 0x24..=0x27
                | 0x30
                | 0x34..=0x37
                | 0x39
                | 0x3b..=0x3f
                | 0x78..=0x7d
                | 0xa6
                | 0xa7
                | 0xae
                | 0xb8
                | 0xd0
                | 0xf0
                | 0xff => InsnHandling::Refused,
                _ => InsnHandling::SingleStepped,
            }
        }
        // Invalid in 64-bit mode, or privileged / trapping: the kernel refuses them.
        0x06
        | 0x07
        | 0x0e
        | 0x16
        | 0x17
        | 0x1e
        | 0x1f
        | 0x27
        | 0x2f
        | 0x37
        | 0x3f
        | 0x60
        | 0x61
        | 0x82
        | 0xce
        | 0xd4
        | 0xd5
        | 0xd6
        | 0x6c..=0x6f
        | 0xcc..=0xcd
        | 0xcf
        | 0xe4..=0xe7
        | 0xec..=0xef
        | 0xf1
        | 0xf4
        | 0xfa
        | 0xfb => InsnHandling::Refused,
        _ => InsnHandling::SingleStepped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InsnHandling::*;

    #[test]
    fn measured_on_6_18() {
        assert_eq!(classify(&[0x55, 0x48, 0x89, 0xe5]), Emulated); // push %rbp
        assert_eq!(classify(&[0x41, 0x57]), Emulated); // push %r15
        assert_eq!(classify(&[0x90, 0xc3]), Emulated); // nop
        assert_eq!(classify(&[0x0f, 0x1f, 0x44, 0x00, 0x00]), Emulated); // nopl
        assert_eq!(classify(&[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00]), Emulated); // nopw
        assert_eq!(classify(&ENDBR64), SingleStepped);
        assert_eq!(classify(&[0x48, 0x8d, 0x44, 0x24, 0x08]), SingleStepped); // lea
        assert_eq!(classify(&[0x48, 0x89, 0xf8]), SingleStepped); // mov %rdi,%rax
        assert_eq!(classify(&[0x48, 0x83, 0xec, 0x08]), SingleStepped); // sub $8,%rsp
    }

    #[test]
    fn branches_and_refusals() {
        assert_eq!(classify(&[0xe9, 0, 0, 0, 0]), Emulated);
        assert_eq!(classify(&[0xeb, 0x05]), Emulated);
        assert_eq!(classify(&[0xe8, 0, 0, 0, 0]), Emulated);
        assert_eq!(classify(&[0x74, 0x05]), Emulated);
        assert_eq!(classify(&[0x0f, 0x84, 0, 0, 0, 0]), Emulated);
        assert_eq!(classify(&[0x66, 0xe9, 0, 0]), Refused);
        assert_eq!(classify(&[0xcc]), Refused); // int3
        assert_eq!(classify(&[0x0f, 0x05]), Refused); // syscall
        assert_eq!(classify(&[0xf4]), Refused); // hlt
        assert_eq!(classify(&[0xf0, 0x48, 0x0f, 0xb1, 0x0a]), Refused); // lock cmpxchg
        assert_eq!(classify(&[0xf3, 0x90]), SingleStepped); // pause
        assert_eq!(classify(&[0x49, 0x90]), SingleStepped); // xchg %r8,%rax
        assert_eq!(classify(&[0xc5, 0xf8, 0x77]), SingleStepped); // vzeroupper
        assert_eq!(classify(&[]), Unknown);
        assert_eq!(classify(&[0x66]), Unknown);
    }

    #[test]
    fn prologues() {
        assert!(starts_with_push_rbp(&[0x55]));
        assert!(!starts_with_push_rbp(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55]));
        assert!(!starts_with_push_rbp(&[0xf3, 0x0f, 0x1e, 0xfa, 0x41, 0x57]));
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
