//! The 32-bit rule word of a table row.
//!
//! One word per row keeps a table of libc under 100 KB and lets a BPF program decode a rule
//! with shifts and masks, no branches on variable-length data:
//!
//! ```text
//!  31                         12 11        4 3      0
//! +-----------------------------+-----------+--------+
//! | CFA offset / 8 (signed, 20) | aux (8)   | kind   |
//! +-----------------------------+-----------+--------+
//! ```
//!
//! `aux` is, for the CFA kinds, where `rbp` was saved as a signed offset from the CFA in
//! 8-byte units (0: `rbp` unchanged: no frame saves it at the CFA itself, which holds the
//! caller's stack); for [`RuleKind::Plt`], the threshold `T` of the PLT expression.

/// What a row says about finding the caller. The discriminants are the `kind` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum RuleKind {
    /// Not expressible: the in-kernel walk hands the event to copy-and-unwind.
    Fallback = 0,
    /// The CFI says there is no caller (`_start`, `clone3`): the stack is complete.
    EndOfStack = 1,
    /// CFA = `rsp + offset`.
    CfaRsp = 2,
    /// CFA = `rbp + offset`.
    CfaRbp = 3,
    /// CFA = `rsp + offset + ((pc & 15) >= aux) * 8`: the expression binutils writes for every
    /// lazy-binding PLT entry (the `push` in the entry moves `rsp` by 8).
    Plt = 4,
    /// No FDE covers the address: return address at `[sp]` in the first frame (a stub or
    /// function start that has not touched the stack), frame pointers above it.
    NoCfi = 5,
    /// A signal trampoline (`__restore_rt`: an FDE with the `S` augmentation): `sp` points at
    /// the kernel's `ucontext`, whose saved `rip`, `rsp` and `rbp` are the interrupted frame's
    /// (Linux x86-64 `rt_sigframe`; see [`crate::walk`]).
    SignalFrame = 6,
}

/// One row's rule, decoded; see the module docs for the word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// The kind of rule.
    pub kind: RuleKind,
    /// The CFA offset in bytes (a multiple of 8) for the CFA kinds and [`RuleKind::Plt`].
    pub cfa_offset: i32,
    /// Where `rbp` was saved relative to the CFA, in bytes (multiple of 8); `None`: unchanged.
    pub bp_offset: Option<i32>,
    /// [`RuleKind::Plt`]'s threshold `T`.
    pub plt_threshold: u8,
}

/// Largest |CFA offset| / 8 a word holds (signed 20 bits).
pub(crate) const CFA_OFFSET_MAX_BY8: i32 = (1 << 19) - 1;

impl Rule {
    /// A rule of `kind` with no offsets (for the kinds that take none).
    pub const fn simple(kind: RuleKind) -> Rule {
        Rule {
            kind,
            cfa_offset: 0,
            bp_offset: None,
            plt_threshold: 0,
        }
    }

    /// Encodes the rule. Offsets must be multiples of 8 within range (the compiler checks;
    /// out-of-range values are truncated to their bits).
    pub fn to_word(self) -> u32 {
        let aux: u8 = match self.kind {
            RuleKind::Plt => self.plt_threshold,
            _ => self.bp_offset.map_or(0, |o| (o / 8) as i8 as u8),
        };
        let cfa = ((self.cfa_offset / 8) as u32) & 0xf_ffff;
        (cfa << 12) | (u32::from(aux) << 4) | self.kind as u32
    }

    /// Decodes a word made by [`Rule::to_word`]; an unknown kind reads as
    /// [`RuleKind::Fallback`], the safe answer.
    pub fn from_word(word: u32) -> Rule {
        let kind = match word & 0xf {
            1 => RuleKind::EndOfStack,
            2 => RuleKind::CfaRsp,
            3 => RuleKind::CfaRbp,
            4 => RuleKind::Plt,
            5 => RuleKind::NoCfi,
            6 => RuleKind::SignalFrame,
            _ => RuleKind::Fallback,
        };
        let aux = ((word >> 4) & 0xff) as u8;
        // Sign-extend the 20-bit offset.
        let cfa_offset = ((word as i32) >> 12) * 8;
        match kind {
            RuleKind::CfaRsp | RuleKind::CfaRbp => Rule {
                kind,
                cfa_offset,
                bp_offset: (aux != 0).then(|| i32::from(aux as i8) * 8),
                plt_threshold: 0,
            },
            RuleKind::Plt => Rule {
                kind,
                cfa_offset,
                bp_offset: None,
                plt_threshold: aux,
            },
            _ => Rule::simple(kind),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn words_round_trip(cfa in -CFA_OFFSET_MAX_BY8..=CFA_OFFSET_MAX_BY8, bp in -128i32..=127, t in 0u8..=255) {
            for kind in [RuleKind::CfaRsp, RuleKind::CfaRbp] {
                let rule = Rule { kind, cfa_offset: cfa * 8, bp_offset: (bp != 0).then_some(bp * 8), plt_threshold: 0 };
                prop_assert_eq!(Rule::from_word(rule.to_word()), rule);
            }
            let plt = Rule { kind: RuleKind::Plt, cfa_offset: cfa * 8, bp_offset: None, plt_threshold: t };
            prop_assert_eq!(Rule::from_word(plt.to_word()), plt);
        }
    }
}
