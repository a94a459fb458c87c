//! CFI to table rows: every FDE's rows evaluated with gimli, translated to [`Rule`]s, laid out
//! over the address space the way framehop's FDE lookup sees it, then merged.
//!
//! framehop finds the FDE of an address by binary search over FDE starts (`.eh_frame_hdr`):
//! the FDE with the greatest start at or below the address, and if that FDE does not contain
//! the address, the "uncovered" rule ([`RuleKind::NoCfi`]). So an FDE's rows apply from its
//! start up to its end or the next FDE's start, whichever is first, and everything else is
//! `NoCfi`, including the space before the first FDE and after the last (the hdr lookup
//! answers the nearest FDE there, which does not contain the address). An FDE whose rows fail
//! to evaluate part way is `NoCfi` from the failing row on, as in framehop.

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, Operation,
    RegisterRule, UnwindContext, UnwindSection, UnwindTableRow, X86_64,
};
use object::{Object, ObjectSection};

use crate::rule::{Rule, RuleKind, CFA_OFFSET_MAX_BY8};
use crate::{Error, UnwindTable};

type Reader<'a> = EndianSlice<'a, LittleEndian>;

/// The CFI sections of a binary and the addresses their pointer encodings are relative to.
/// Callers that already hold the bytes (the recorder, which reads untrusted files with
/// `pread`) pass them here; [`UnwindTable::from_elf`] fills it from an [`object::File`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Sections<'a> {
    /// `.eh_frame`, preferred when present (framehop's choice).
    pub eh_frame: Option<&'a [u8]>,
    /// Stated address of `.eh_frame` (for `pcrel` pointers).
    pub eh_frame_svma: u64,
    /// Stated address of `.eh_frame_hdr`.
    pub eh_frame_hdr_svma: u64,
    /// `.debug_frame`, used only without `.eh_frame`.
    pub debug_frame: Option<&'a [u8]>,
    /// Stated address of `.text` (for `textrel` pointers).
    pub text_svma: u64,
    /// Stated address of `.got` (for `datarel` pointers).
    pub got_svma: u64,
}

impl Sections<'_> {
    /// What the CFI's pointer encodings are relative to.
    fn bases(&self) -> BaseAddresses {
        BaseAddresses::default()
            .set_eh_frame_hdr(self.eh_frame_hdr_svma)
            .set_eh_frame(self.eh_frame_svma)
            .set_text(self.text_svma)
            .set_got(self.got_svma)
    }
}

/// Why rows were marked [`RuleKind::Fallback`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum FallbackReason {
    /// The CFA is a DWARF expression (other than the PLT's).
    CfaExpression,
    /// Retired: signal trampolines are [`RuleKind::SignalFrame`] rows now.
    SignalFrame,
    /// The CFA is based on a register other than `rsp` or `rbp`.
    CfaRegister,
    /// A CFA offset that is negative for `rsp`, not a multiple of 8, or too large.
    CfaOffset,
    /// The return address is not at CFA − 8.
    ReturnAddress,
    /// `rbp` is restored by a rule other than "saved at CFA + a multiple of 8".
    BpRule,
}

impl std::fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FallbackReason::CfaExpression => "CFA expression",
            FallbackReason::SignalFrame => "signal frame",
            FallbackReason::CfaRegister => "CFA in another register",
            FallbackReason::CfaOffset => "CFA offset",
            FallbackReason::ReturnAddress => "return address rule",
            FallbackReason::BpRule => "rbp rule",
        })
    }
}

/// What a compiled table holds and how much of the binary it leaves to the fallback.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Which section the rules came from.
    pub section: &'static str,
    /// FDEs read.
    pub fdes: usize,
    /// FDEs (or their tails) that failed to parse or evaluate; their addresses are `NoCfi`.
    pub bad_fdes: usize,
    /// CFI rows evaluated, before merging.
    pub cfi_rows: usize,
    /// Rows in the table (merged, plus one opening each 64 KiB page).
    pub rows: usize,
    /// Distinct rule words.
    pub distinct_rules: usize,
    /// 64 KiB pages of stated addresses indexed.
    pub pages: usize,
    /// Most rows in one page: what bounds the binary search of a lookup (⌈log2⌉ + 1 steps).
    pub max_page_rows: usize,
    /// Table size in bytes: 4 per page, row and distinct rule.
    pub bytes: usize,
    /// Bytes of code covered by an FDE.
    pub covered_bytes: u64,
    /// Bytes of code whose rule is [`RuleKind::Fallback`].
    pub fallback_bytes: u64,
    /// `fallback_bytes` by reason, sorted by reason.
    pub fallback_by_reason: Vec<(FallbackReason, u64)>,
}

/// One FDE's evaluated rows.
struct FdeRows {
    start: u64,
    end: u64,
    /// (start, end, rule) in address order, contiguous from `start`; may stop short of `end`
    /// when evaluation failed.
    rows: Vec<(u64, u64, Result<Rule, FallbackReason>)>,
}

impl UnwindTable {
    /// Compiles the table of an x86-64 ELF file.
    pub fn from_elf<'d, R: object::ReadRef<'d>>(elf: &object::File<'d, R>) -> Result<Self, Error> {
        if elf.architecture() != object::Architecture::X86_64 {
            return Err(Error::Architecture(elf.architecture()));
        }
        let address = |name: &str| elf.section_by_name(name).map_or(0, |s| s.address());
        // Compressed `.debug_frame` would need `object`'s compression feature; such a section
        // is treated as absent rather than parsed as garbage.
        let data = |name: &str| {
            let section = elf.section_by_name(name)?;
            let range = section.compressed_file_range().ok()?;
            if range.format != object::CompressionFormat::None {
                return None;
            }
            section.data().ok().filter(|d| !d.is_empty())
        };
        UnwindTable::compile(&Sections {
            eh_frame: data(".eh_frame"),
            eh_frame_svma: address(".eh_frame"),
            eh_frame_hdr_svma: address(".eh_frame_hdr"),
            debug_frame: data(".debug_frame"),
            text_svma: address(".text"),
            got_svma: address(".got"),
        })
    }

    /// Compiles the table of the given CFI sections. Deterministic: the same bytes give the
    /// same table.
    pub fn compile(sections: &Sections<'_>) -> Result<Self, Error> {
        let bases = sections.bases();
        let mut stats = Stats::default();
        let mut fdes = Vec::new();
        if let Some(data) = sections.eh_frame {
            let mut eh_frame = EhFrame::new(data, LittleEndian);
            eh_frame.set_address_size(8);
            stats.section = ".eh_frame";
            collect(&eh_frame, &bases, &mut fdes, &mut stats);
        } else if let Some(data) = sections.debug_frame {
            let mut debug_frame = DebugFrame::new(data, LittleEndian);
            debug_frame.set_address_size(8);
            stats.section = ".debug_frame";
            collect(&debug_frame, &bases, &mut fdes, &mut stats);
        } else {
            return Err(Error::NoCfi);
        }
        lay_out(fdes, stats)
    }
}

/// The address ranges (stated) of the signal trampolines the CFI describes: FDEs whose CIE has
/// the `S` augmentation (glibc's `__restore_rt`). For an unwinder other than the table walk
/// (framehop in the recorder) to step [`RuleKind::SignalFrame`] frames as the walk does.
pub fn signal_trampolines(sections: &Sections<'_>) -> Vec<std::ops::Range<u64>> {
    let bases = sections.bases();
    let mut out = Vec::new();
    if let Some(data) = sections.eh_frame {
        let mut eh_frame = EhFrame::new(data, LittleEndian);
        eh_frame.set_address_size(8);
        signal_fdes(&eh_frame, &bases, &mut out);
    } else if let Some(data) = sections.debug_frame {
        let mut debug_frame = DebugFrame::new(data, LittleEndian);
        debug_frame.set_address_size(8);
        signal_fdes(&debug_frame, &bases, &mut out);
    }
    out
}

fn signal_fdes<'a, S: UnwindSection<Reader<'a>>>(
    section: &S,
    bases: &BaseAddresses,
    out: &mut Vec<std::ops::Range<u64>>,
) {
    let mut entries = section.entries(bases);
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(S::cie_from_offset) else {
            continue;
        };
        if fde.cie().is_signal_trampoline() && fde.len() > 0 {
            let start = fde.initial_address();
            out.push(start..start.saturating_add(fde.len()));
        }
    }
}

/// Reads every FDE of `section` with its rows.
fn collect<'a, S: UnwindSection<Reader<'a>>>(
    section: &S,
    bases: &BaseAddresses,
    fdes: &mut Vec<FdeRows>,
    stats: &mut Stats,
) {
    let mut ctx = UnwindContext::new();
    let mut entries = section.entries(bases);
    loop {
        let partial = match entries.next() {
            Ok(Some(CieOrFde::Fde(partial))) => partial,
            Ok(Some(CieOrFde::Cie(_))) => continue,
            Ok(None) => break,
            // The entry's length was unreadable: nothing after it can be found either.
            Err(_) => {
                stats.bad_fdes += 1;
                break;
            }
        };
        let Ok(fde) = partial.parse(S::cie_from_offset) else {
            stats.bad_fdes += 1;
            continue;
        };
        stats.fdes += 1;
        if fde.len() == 0 {
            continue;
        }
        let start = fde.initial_address();
        let end = start.saturating_add(fde.len());
        let encoding = fde.cie().encoding();
        let signal = fde.cie().is_signal_trampoline();
        let mut rows = Vec::new();
        match fde.rows(section, bases, &mut ctx) {
            Ok(mut table) => loop {
                match table.next_row() {
                    Ok(Some(row)) => {
                        stats.cfi_rows += 1;
                        // Whatever its CFI expressions say: on x86-64 Linux the frame is
                        // the kernel's rt_sigframe, its layout part of the ABI.
                        let rule = if signal {
                            Ok(Rule::simple(RuleKind::SignalFrame))
                        } else {
                            translate(section, encoding, row)
                        };
                        rows.push((row.start_address(), row.end_address(), rule));
                    }
                    Ok(None) => break,
                    Err(_) => {
                        stats.bad_fdes += 1;
                        break;
                    }
                }
            },
            Err(_) => stats.bad_fdes += 1,
        }
        fdes.push(FdeRows { start, end, rows });
    }
}

/// The rule of one CFI row, or why it has none.
fn translate<'a, S: UnwindSection<Reader<'a>>>(
    section: &S,
    encoding: gimli::Encoding,
    row: &UnwindTableRow<usize>,
) -> Result<Rule, FallbackReason> {
    match row.register(X86_64::RA) {
        None | Some(RegisterRule::Undefined) => return Ok(Rule::simple(RuleKind::EndOfStack)),
        Some(RegisterRule::Offset(-8)) => {}
        Some(_) => return Err(FallbackReason::ReturnAddress),
    }
    let bp_offset = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::Undefined) | Some(RegisterRule::SameValue) => None,
        Some(RegisterRule::Offset(o))
            if o % 8 == 0 && o != 0 && (-128..=127).contains(&(o / 8)) =>
        {
            Some(o as i32)
        }
        Some(_) => return Err(FallbackReason::BpRule),
    };
    match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let offset = *offset;
            if offset % 8 != 0 || (offset / 8).abs() > i64::from(CFA_OFFSET_MAX_BY8) {
                return Err(FallbackReason::CfaOffset);
            }
            let kind = match *register {
                X86_64::RSP => {
                    // framehop's cached rule holds `offset / 8` in a u16 and the rbp slot
                    // relative to rsp in an i16; outside those it takes a slower path whose
                    // failures behave differently, so such rows are not claimed.
                    let bp_from_sp = (offset + i64::from(bp_offset.unwrap_or(0))) / 8;
                    if offset < 0 || offset / 8 > i64::from(u16::MAX) || bp_from_sp > 0x7fff {
                        return Err(FallbackReason::CfaOffset);
                    }
                    RuleKind::CfaRsp
                }
                X86_64::RBP => RuleKind::CfaRbp,
                _ => return Err(FallbackReason::CfaRegister),
            };
            Ok(Rule {
                kind,
                cfa_offset: offset as i32,
                bp_offset,
                plt_threshold: 0,
            })
        }
        CfaRule::Expression(expression) => {
            let (offset, threshold) = expression
                .get(section)
                .ok()
                .and_then(|e| plt_expression(e, encoding))
                .ok_or(FallbackReason::CfaExpression)?;
            if bp_offset.is_some() {
                return Err(FallbackReason::BpRule);
            }
            Ok(Rule {
                kind: RuleKind::Plt,
                cfa_offset: offset,
                bp_offset: None,
                plt_threshold: threshold,
            })
        }
    }
}

/// Recognises binutils' PLT CFA expression, `rsp + A + (((rip & 15) >= T) << 3)`
/// (`DW_OP_breg7 A; DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_litT; DW_OP_ge;
/// DW_OP_lit3; DW_OP_shl; DW_OP_plus`), giving (A, T).
fn plt_expression(
    expression: gimli::Expression<Reader<'_>>,
    encoding: gimli::Encoding,
) -> Option<(i32, u8)> {
    let mut ops = expression.operations(encoding);
    let mut next = || ops.next().ok().flatten();
    let Operation::RegisterOffset {
        register: X86_64::RSP,
        offset,
        ..
    } = next()?
    else {
        return None;
    };
    if !matches!(
        next()?,
        Operation::RegisterOffset {
            register: X86_64::RA,
            offset: 0,
            ..
        }
    ) {
        return None;
    }
    if !matches!(next()?, Operation::UnsignedConstant { value: 15 })
        || !matches!(next()?, Operation::And)
    {
        return None;
    }
    let Operation::UnsignedConstant { value: threshold } = next()? else {
        return None;
    };
    let rest = [next()?, next()?, next()?, next()?];
    let tail_ok = matches!(
        rest,
        [
            Operation::Ge,
            Operation::UnsignedConstant { value: 3 },
            Operation::Shl,
            Operation::Plus
        ]
    );
    if !tail_ok || next().is_some() || offset % 8 != 0 || !(0..=4096).contains(&offset) {
        return None;
    }
    Some((
        offset as i32,
        u8::try_from(threshold).ok().filter(|&t| t < 16)?,
    ))
}

/// Lays the FDEs' rows out over the address space (see the module docs) and merges them.
fn lay_out(mut fdes: Vec<FdeRows>, mut stats: Stats) -> Result<UnwindTable, Error> {
    // Stable: of FDEs with equal starts, the last read wins, which is deterministic (the hdr
    // lookup of equal starts is not, but linkers do not emit them).
    fdes.sort_by_key(|f| f.start);
    let mut rows: Vec<(u64, Rule)> = vec![(0, Rule::simple(RuleKind::NoCfi))];
    let mut fallback: std::collections::BTreeMap<FallbackReason, u64> = Default::default();
    fn push(rows: &mut Vec<(u64, Rule)>, at: u64, rule: Rule) {
        // A later row at the same address replaces an earlier, empty one.
        if rows.last().is_some_and(|&(s, _)| s == at) {
            rows.pop();
        }
        if rows.last().is_some_and(|&(_, r)| r == rule) {
            return;
        }
        rows.push((at, rule));
    }
    for i in 0..fdes.len() {
        let fde = &fdes[i];
        let next_start = fdes.get(i + 1).map_or(u64::MAX, |f| f.start);
        let end = fde.end.min(next_start);
        if end > 1 << 32 {
            return Err(Error::AddressTooLarge(end));
        }
        stats.covered_bytes += end - fde.start;
        let mut at = fde.start;
        for &(row_start, row_end, rule) in &fde.rows {
            let (s, e) = (row_start.max(at), row_end.min(end));
            if s >= e {
                continue;
            }
            let rule = rule.unwrap_or_else(|why| {
                stats.fallback_bytes += e - s;
                *fallback.entry(why).or_default() += e - s;
                Rule::simple(RuleKind::Fallback)
            });
            push(&mut rows, s, rule);
            at = e;
        }
        if at < next_start {
            push(&mut rows, at, Rule::simple(RuleKind::NoCfi));
        }
    }
    if rows.last().is_some_and(|&(s, _)| s >= 1 << 32) {
        rows.pop();
    }
    stats.fallback_by_reason = fallback.into_iter().collect();
    UnwindTable::from_rows(&rows, stats)
}
