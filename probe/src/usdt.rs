//! USDT probes: the `.note.stapsdt` notes that `<sys/sdt.h>` (and dtrace -G, Python's and
//! libstdc++'s builds) leave in a binary, and their argument operands.
//!
//! Each note holds the probe site's address (a `nop` the compiler placed where the
//! `STAP_PROBE` macro was), the address `.stapsdt.base` had at link time, the semaphore's
//! address (0 when the probe has none), and three strings: provider, name, and the operands in
//! GNU assembler syntax with a size prefix (`-4@%edi 8@-16(%rbp) 8@counter(%rip) -4@$5`;
//! negative means signed). The operand is whatever the compiler chose for the argument at that
//! instruction, so it is read at the site, like a register or memory fetch of a uprobe.
//!
//! Why the base: a tool (prelink) that moved the allocated sections could not fix the
//! unallocated notes, so a note's addresses are off by however far `.stapsdt.base` moved; the
//! adjustment is `actual .stapsdt.base address - recorded base`, applied to the site and the
//! semaphore alike (it is 0 in every binary that was not prelinked).

use urec_format::{ArgType, Svma};

use crate::elf::Binary;
use crate::spec::{Fetch, Reg};

/// `NT_STAPSDT`, the note type of a probe descriptor.
const NT_STAPSDT: u32 = 3;

/// One USDT probe site of a binary. The same provider:name may have several sites (a macro
/// in an inlined function, or written twice).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsdtProbe {
    /// Provider (`python`, `libstdcxx`).
    pub provider: String,
    /// Probe name (`function__entry`).
    pub name: String,
    /// ELF virtual address of the site, base-adjusted.
    pub pc: Svma,
    /// ELF virtual address of the semaphore, base-adjusted; None when the probe has none.
    pub semaphore: Option<Svma>,
    /// The operand string as the note holds it.
    pub args_text: String,
    /// The operands, decoded.
    pub args: Vec<UsdtArg>,
}

/// One operand of a USDT probe: `SIZE@OPERAND`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsdtArg {
    /// As written in the note (`-4@%edi`).
    pub text: String,
    /// Bytes (1, 2, 4 or 8).
    pub size: u8,
    /// The size was negative: a signed value.
    pub signed: bool,
    /// Where the value is.
    pub operand: Operand,
}

/// Where a USDT argument's value is at the probe site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operand {
    /// `%edi`, `%rbx`: a register (its low `size` bytes).
    Reg(Reg),
    /// `-16(%rbp)`, `(%rax)`: memory at a register plus a displacement.
    Mem {
        /// The base register.
        base: Reg,
        /// The displacement.
        offset: i64,
    },
    /// `$5`: a constant.
    Imm(i64),
    /// `-8(%rax,%rdi,8)`: memory at a base register plus a scaled index register plus a
    /// displacement (an array element).
    Indexed {
        /// The base register.
        base: Reg,
        /// The index register.
        index: Reg,
        /// 1, 2, 4 or 8.
        scale: u8,
        /// The displacement.
        offset: i64,
    },
    /// `counter(%rip)`, `counter+8(%rip)`, `0x10(%rip)`, `counter`: memory at this ELF virtual
    /// address of the probed binary, which moves with the binary's load bias.
    Global(u64),
    /// A form urec cannot fetch (an index register, a symbol it cannot find, `%ah`...): why.
    Unsupported(String),
}

impl UsdtArg {
    /// The type an `argN` without `:TYPE` gets: the operand's size and sign.
    pub fn default_type(&self) -> ArgType {
        let bits = self.size * 8;
        if self.signed {
            ArgType::Signed(bits)
        } else {
            ArgType::Unsigned(bits)
        }
    }

    /// The operand as a uprobe fetch at the site: a register, a dereference of one, an
    /// immediate, or a global of the binary.
    pub fn fetch(&self) -> Result<Fetch, String> {
        Ok(match &self.operand {
            Operand::Reg(r) => Fetch::Reg(*r),
            Operand::Mem { base, offset } => Fetch::Deref {
                offset: *offset,
                inner: Box::new(Fetch::Reg(*base)),
            },
            Operand::Imm(v) => Fetch::Immediate(*v as u64),
            Operand::Indexed {
                base,
                index,
                scale,
                offset,
            } => Fetch::Deref {
                offset: *offset,
                inner: Box::new(Fetch::Indexed {
                    base: *base,
                    index: *index,
                    scale: *scale,
                }),
            },
            Operand::Global(vaddr) => Fetch::Global(*vaddr),
            Operand::Unsupported(why) => {
                return Err(format!(
                    "its operand {:?} cannot be fetched: {why}",
                    self.text
                ))
            }
        })
    }
}

/// The USDT probes of `bin`, in note order; none when it has no `.note.stapsdt`. Malformed
/// notes are skipped.
pub(crate) fn probes(bin: &Binary) -> Vec<UsdtProbe> {
    let Some((_, notes)) = bin.section(".note.stapsdt") else {
        return Vec::new();
    };
    let actual_base = bin.section(".stapsdt.base").map(|(addr, _)| addr);
    parse_notes(&notes)
        .into_iter()
        .map(|n| {
            // The note states where `.stapsdt.base` was at link time; prelink may have moved
            // the file since, and every address of the note with it.
            let moved = |at: u64| match actual_base {
                Some(actual) if n.base != 0 => Svma(at).moved(Svma(n.base), actual),
                _ => Svma(at),
            };
            let pc = moved(n.pc);
            let args = split_args(&n.args)
                .map(|a| parse_arg(a, pc.0, &|sym| bin.symbol_address(sym).map(|s| s.0)))
                .collect();
            UsdtProbe {
                provider: n.provider,
                name: n.name,
                pc,
                semaphore: (n.semaphore != 0).then(|| moved(n.semaphore)),
                args_text: n.args,
                args,
            }
        })
        .collect()
}

/// A note as stored, before the base adjustment.
#[derive(Debug, PartialEq, Eq)]
struct RawNote {
    pc: u64,
    base: u64,
    semaphore: u64,
    provider: String,
    name: String,
    args: String,
}

/// Walks the notes of a `.note.stapsdt` section (x86-64: 4-byte aligned headers, 8-byte
/// addresses). The file is not ours: every length is checked, a bad one ends the walk.
fn parse_notes(data: &[u8]) -> Vec<RawNote> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
    };
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    let mut out = Vec::new();
    let mut at = 0usize;
    while let (Some(namesz), Some(descsz), Some(ty)) = (u32_at(at), u32_at(at + 4), u32_at(at + 8))
    {
        let name_at = at + 12;
        let Some(desc_at) = align4(namesz as usize).and_then(|n| n.checked_add(name_at)) else {
            break;
        };
        let Some(next) = align4(descsz as usize).and_then(|n| n.checked_add(desc_at)) else {
            break;
        };
        let (Some(name), Some(desc)) = (
            data.get(name_at..name_at + namesz as usize),
            data.get(desc_at..desc_at + descsz as usize),
        ) else {
            break;
        };
        if ty == NT_STAPSDT && name == b"stapsdt\0" {
            if let Some(note) = parse_desc(desc) {
                out.push(note);
            }
        }
        at = next;
    }
    out
}

/// One descriptor: pc, base, semaphore, then provider, name and args as C strings.
fn parse_desc(desc: &[u8]) -> Option<RawNote> {
    let word = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            desc.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    let (pc, base, semaphore) = (word(0)?, word(1)?, word(2)?);
    let mut strings = desc.get(24..)?.split(|&b| b == 0);
    let mut next = || -> Option<String> {
        std::str::from_utf8(strings.next()?)
            .ok()
            .map(str::to_string)
    };
    let provider = next()?;
    let name = next()?;
    // Old notes (sdt.h before v3) have no argument string.
    let args = next().unwrap_or_default();
    if provider.is_empty() || name.is_empty() {
        return None;
    }
    Some(RawNote {
        pc,
        base,
        semaphore,
        provider,
        name,
        args,
    })
}

/// The operands of an argument string, separated by spaces.
pub(crate) fn split_args(text: &str) -> impl Iterator<Item = &str> {
    text.split_whitespace()
}

/// Decodes one `SIZE@OPERAND` at the site `pc`; `symbol` finds a symbol's address.
pub(crate) fn parse_arg(text: &str, pc: u64, symbol: &dyn Fn(&str) -> Option<u64>) -> UsdtArg {
    let (size, signed, op) = match text.split_once('@') {
        Some((size, op)) => match size.parse::<i8>() {
            Ok(n) if [1, 2, 4, 8].contains(&n.unsigned_abs()) => (n.unsigned_abs(), n < 0, op),
            _ => {
                return UsdtArg {
                    text: text.to_string(),
                    size: 8,
                    signed: false,
                    operand: Operand::Unsupported(format!("bad size {size:?}")),
                }
            }
        },
        // Notes from before sizes were written: a machine word.
        None => (8, false, text),
    };
    UsdtArg {
        text: text.to_string(),
        size,
        signed,
        operand: parse_operand(op, pc, symbol).unwrap_or_else(Operand::Unsupported),
    }
}

fn parse_operand(
    op: &str,
    pc: u64,
    symbol: &dyn Fn(&str) -> Option<u64>,
) -> Result<Operand, String> {
    if let Some(reg) = op.strip_prefix('%') {
        return register(reg).map(Operand::Reg);
    }
    if let Some(imm) = op.strip_prefix('$') {
        return number(imm).map(Operand::Imm).ok_or_else(|| {
            format!("the constant {imm:?} is not a number (a symbol's address is not supported)")
        });
    }
    let Some((disp, rest)) = op.split_once('(') else {
        // An absolute address: a symbol (non-PIC code) or a number.
        return address(op, symbol).map(Operand::Global);
    };
    let inner = rest
        .strip_suffix(')')
        .ok_or_else(|| "missing ')'".to_string())?;
    let offset = || -> Result<i64, String> {
        if disp.is_empty() {
            return Ok(0);
        }
        number(disp).ok_or_else(|| {
            format!("the displacement {disp:?} is not a number (a symbol plus a register is not supported)")
        })
    };
    if let Some((base, rest)) = inner.split_once(',') {
        let (index, scale) = rest.split_once(',').unwrap_or((rest, "1"));
        let reg = |r: &str| {
            r.strip_prefix('%')
                .ok_or_else(|| format!("{r:?} is not a register"))
                .and_then(register)
        };
        if base.is_empty() {
            return Err(format!(
                "indexed addressing without a base register ({inner})"
            ));
        }
        let scale = match scale.parse::<u8>() {
            Ok(s @ (1 | 2 | 4 | 8)) => s,
            _ => return Err(format!("bad index scale {scale:?}")),
        };
        return Ok(Operand::Indexed {
            base: reg(base)?,
            index: reg(index)?,
            scale,
            offset: offset()?,
        });
    }
    let base = inner
        .strip_prefix('%')
        .ok_or_else(|| format!("{inner:?} is not a register"))?;
    if base == "rip" {
        // `counter(%rip)` is the address of `counter`; a bare number is taken relative to the
        // probe site, as bcc does (the note has no instruction whose end it would follow).
        return match number(disp) {
            Some(n) => Ok(Operand::Global(pc.wrapping_add(n as u64))),
            None => address(disp, symbol).map(Operand::Global),
        };
    }
    Ok(Operand::Mem {
        base: register(base)?,
        offset: offset()?,
    })
}

/// `SYMBOL`, `SYMBOL+N`, `SYMBOL-N` or a number: an ELF virtual address.
fn address(text: &str, symbol: &dyn Fn(&str) -> Option<u64>) -> Result<u64, String> {
    if let Some(n) = number(text) {
        return Ok(n as u64);
    }
    let (name, delta) = match text.rfind(['+', '-']) {
        Some(i) if i > 0 => match number(&text[i..]) {
            Some(d) => (&text[..i], d),
            None => (text, 0),
        },
        _ => (text, 0),
    };
    let addr = symbol(name).ok_or_else(|| format!("no symbol {name:?} in the binary"))?;
    Ok(addr.wrapping_add(delta as u64))
}

/// A signed decimal or `0x` hex number, as gas writes displacements and constants.
fn number(text: &str) -> Option<i64> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let magnitude = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None if digits.starts_with(|c: char| c.is_ascii_digit()) => digits.parse().ok()?,
        None => return None,
    };
    let v = magnitude as i64;
    Some(if neg { v.wrapping_neg() } else { v })
}

/// A register by any of its widths' names (`rdi`, `edi`, `di`, `dil`, `r8d`, `r8w`, `r8b`):
/// the fetch reads the whole register and the type keeps the operand's low bytes.
fn register(name: &str) -> Result<Reg, String> {
    let full = match name {
        "rax" | "eax" | "ax" | "al" => "ax",
        "rbx" | "ebx" | "bx" | "bl" => "bx",
        "rcx" | "ecx" | "cx" | "cl" => "cx",
        "rdx" | "edx" | "dx" | "dl" => "dx",
        "rsi" | "esi" | "si" | "sil" => "si",
        "rdi" | "edi" | "di" | "dil" => "di",
        "rbp" | "ebp" | "bp" | "bpl" => "bp",
        "rsp" | "esp" | "sp" | "spl" => "sp",
        "ah" | "bh" | "ch" | "dh" => {
            return Err(format!(
                "%{name} is bits 8-15 of a register, which the fetch programs cannot shift out"
            ))
        }
        r => match r.strip_prefix('r') {
            Some(n) => {
                let digits = n.trim_end_matches(['d', 'w', 'b', 'l']);
                match digits.parse::<u8>() {
                    Ok(8..=15) if n.len() - digits.len() <= 1 => {
                        return Reg::from_name(&format!("r{digits}"))
                            .ok_or_else(|| format!("unknown register %{name}"));
                    }
                    _ => return Err(format!("unknown register %{name}")),
                }
            }
            None => return Err(format!("unknown register %{name}")),
        },
    };
    Reg::from_name(full).ok_or_else(|| format!("unknown register %{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(text: &str) -> UsdtArg {
        parse_arg(text, 0x1000, &|s| (s == "counter").then_some(0x4010))
    }

    #[test]
    fn operands() {
        let a = arg("-4@%edi");
        assert_eq!((a.size, a.signed), (4, true));
        assert_eq!(a.operand, Operand::Reg(Reg::Di));
        assert_eq!(a.default_type(), ArgType::Signed(32));
        assert_eq!(arg("8@%rbx").operand, Operand::Reg(Reg::Bx));
        assert_eq!(arg("8@%r12").operand, Operand::Reg(Reg::R12));
        assert_eq!(arg("4@%r9d").operand, Operand::Reg(Reg::R9));
        assert_eq!(arg("1@%sil").operand, Operand::Reg(Reg::Si));
        assert_eq!(arg("8@%rbx").default_type(), ArgType::Unsigned(64));
        assert_eq!(
            arg("8@-16(%rbp)").operand,
            Operand::Mem {
                base: Reg::Bp,
                offset: -16
            }
        );
        assert_eq!(
            arg("-4@112(%rsp)").operand,
            Operand::Mem {
                base: Reg::Sp,
                offset: 112
            }
        );
        assert_eq!(
            arg("8@(%rax)").operand,
            Operand::Mem {
                base: Reg::Ax,
                offset: 0
            }
        );
        assert_eq!(arg("-4@$5").operand, Operand::Imm(5));
        assert_eq!(arg("-4@$-5").operand, Operand::Imm(-5));
        assert_eq!(arg("8@$0x10").operand, Operand::Imm(16));
        assert_eq!(arg("8@counter(%rip)").operand, Operand::Global(0x4010));
        assert_eq!(arg("4@counter+8(%rip)").operand, Operand::Global(0x4018));
        assert_eq!(arg("8@0x10(%rip)").operand, Operand::Global(0x1010));
        assert_eq!(arg("8@counter").operand, Operand::Global(0x4010));
        assert_eq!(arg("%eax").size, 8);
        assert_eq!(
            arg("-8@(%rax,%rdi,8)").operand,
            Operand::Indexed {
                base: Reg::Ax,
                index: Reg::Di,
                scale: 8,
                offset: 0
            }
        );
        assert_eq!(
            arg("4@-4(%rbx,%rcx)").operand,
            Operand::Indexed {
                base: Reg::Bx,
                index: Reg::Cx,
                scale: 1,
                offset: -4
            }
        );
        for bad in [
            "8@(,%rbx,8)",
            "8@(%rax,%rbx,3)",
            "8@nosuch(%rip)",
            "1@%ah",
            "3@%eax",
            "8@%xyz",
            "8@%r16",
            "8@sym(%rbx)",
        ] {
            let a = arg(bad);
            assert!(matches!(a.operand, Operand::Unsupported(_)), "{bad}");
            assert!(a.fetch().is_err(), "{bad}");
        }
    }

    #[test]
    fn fetches() {
        assert_eq!(arg("-4@%edi").fetch(), Ok(Fetch::Reg(Reg::Di)));
        assert_eq!(
            arg("8@-16(%rbp)").fetch(),
            Ok(Fetch::Deref {
                offset: -16,
                inner: Box::new(Fetch::Reg(Reg::Bp))
            })
        );
        assert_eq!(arg("-4@$-5").fetch(), Ok(Fetch::Immediate(-5i64 as u64)));
        assert_eq!(arg("8@counter(%rip)").fetch(), Ok(Fetch::Global(0x4010)));
    }

    fn note(desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&8u32.to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&NT_STAPSDT.to_le_bytes());
        n.extend_from_slice(b"stapsdt\0");
        n.extend_from_slice(desc);
        while n.len() % 4 != 0 {
            n.push(0);
        }
        n
    }

    fn desc(pc: u64, base: u64, sema: u64, strings: &[u8]) -> Vec<u8> {
        let mut d = Vec::new();
        for w in [pc, base, sema] {
            d.extend_from_slice(&w.to_le_bytes());
        }
        d.extend_from_slice(strings);
        d
    }

    #[test]
    fn notes() {
        let mut data = note(&desc(
            0x1234,
            0x2000,
            0x3000,
            b"python\0line\08@%r14 -4@%ebp\0",
        ));
        data.extend(note(&desc(0x10, 0, 0, b"p\0n\0\0")));
        let notes = parse_notes(&data);
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0].provider, "python");
        assert_eq!(notes[0].name, "line");
        assert_eq!(notes[0].args, "8@%r14 -4@%ebp");
        assert_eq!(
            (notes[0].pc, notes[0].base, notes[0].semaphore),
            (0x1234, 0x2000, 0x3000)
        );
        assert_eq!(notes[1].args, "");
        // Truncated or lying notes end the walk without a panic.
        for cut in 0..data.len() {
            let _ = parse_notes(&data[..cut]);
        }
        let mut liar = data.clone();
        liar[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_notes(&liar).is_empty());
        // Other owners and types are skipped.
        let mut other = data.clone();
        other[8] = 1;
        assert_eq!(parse_notes(&other).len(), 1);
    }
}
