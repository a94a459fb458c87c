//! Go binaries, and where a probe on a Go function goes (SPEC.md, "Go programs").
//!
//! A uretprobe replaces the return address on the stack with a trampoline's; Go's runtime walks
//! and copies goroutine stacks, finds that address and aborts (`fatal error: unknown caller
//! pc`: golang/go#22008, iovisor/bcc#1320). So a return probe on Go code is a set of plain
//! uprobes, one on every `ret` of the function ([`GoSites::rets`]), and the recorder pairs
//! them with entries per goroutine. And Go's prologue re-enters the function from its start
//! after `runtime.morestack` grew the stack, so the entry probe sits on the fall-through of
//! the stack check ([`GoSites::entry`]), where each call passes once.

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};

use crate::control_flow::{ControlFlow, Flow};
use urec_format::Svma;

/// What makes a binary a Go binary, and its Go version when the build info says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoBinary {
    /// `go1.19.8`, from `.go.buildinfo` (Go 1.18+ writes it inline); None for older layouts.
    pub version: Option<String>,
}

impl GoBinary {
    /// Go 1.17 and later keep the running goroutine in `r14` in Go code (the register ABI),
    /// which the return probes read; older ones keep it in thread-local storage only.
    pub fn goroutine_in_r14(&self) -> bool {
        self.version
            .as_deref()
            .and_then(|v| v.strip_prefix("go1."))
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|minor| minor.parse::<u32>().ok())
            .is_some_and(|minor| minor >= 17)
    }
}

/// Recognises a Go binary by its sections (kept by `-ldflags='-s -w'`, which drops only the
/// symbol and DWARF tables).
pub(crate) fn detect<'data, R: object::ReadRef<'data>>(
    obj: &object::File<'data, R>,
) -> Option<GoBinary> {
    use object::{Object, ObjectSection};
    if !urec_gopclntab::elf::has_go_sections(obj) {
        return None;
    }
    let version = obj
        .section_by_name(".go.buildinfo")
        .and_then(|s| s.data().ok())
        .and_then(buildinfo_version);
    Some(GoBinary { version })
}

/// The Go version in a `.go.buildinfo` section: a 32-byte header (`\xff Go buildinf:`, pointer
/// size, flags), then, when flag bit 1 says the strings are inline (Go 1.18+), the version as
/// a varint-prefixed string.
fn buildinfo_version(data: &[u8]) -> Option<String> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    if !data.starts_with(MAGIC) || data.len() < 33 || data[15] & 2 == 0 {
        return None;
    }
    let (len, used) = uvarint(&data[32..])?;
    let start = 32 + used;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    let text = std::str::from_utf8(data.get(start..end)?).ok()?;
    (text.starts_with("go") && text.len() < 64).then(|| text.to_string())
}

fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().take(10).enumerate() {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Where the probes of one Go function go, as virtual addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoSites {
    /// The entry probe's site: the fall-through of the stack check (`cmp 0x10(%r14),%rsp;
    /// jbe morestack`), or the function's start when it has no stack check (NOSPLIT code
    /// never re-enters).
    pub entry: Svma,
    /// Every `ret` of the function, or why its return cannot be probed.
    pub rets: Result<Vec<Svma>, String>,
}

/// The probe sites of the Go function whose `code` starts at `start`.
pub fn sites(code: &[u8], at: Svma) -> GoSites {
    // The decoder's instruction pointers are plain `u64`; the sites it finds are typed again.
    let start = at.0;
    let flow = ControlFlow::explore(code, start);
    GoSites {
        entry: entry_site(&flow, code, start).map_or(at, Svma),
        rets: return_sites(&flow, code, start).map(|rets| rets.into_iter().map(Svma).collect()),
    }
}

/// The instruction after the stack check's branch, when the function starts with Go's stack
/// check: its entry block ends in a conditional branch to a block that calls (morestack) and
/// then jumps back to the function's start.
fn entry_site(flow: &ControlFlow, code: &[u8], start: u64) -> Option<u64> {
    let block = flow.entry_block();
    let &last = block.last()?;
    let step = flow.step_at(last)?;
    let Flow::Branch(target) = step.flow else {
        return None;
    };
    // The check compares with the goroutine's stack guard, read through r14: `cmp
    // 0x10(%r14),...` (`g.stackguard0`, after `g.stack`'s two words).
    let checks_guard = block.iter().any(|&a| {
        let Some(bytes) = usize::try_from(a - start).ok().and_then(|i| code.get(i..)) else {
            return false;
        };
        let insn = Decoder::with_ip(64, bytes, a, DecoderOptions::NONE).decode();
        insn.mnemonic() == Mnemonic::Cmp
            && (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Memory)
            && insn.memory_base() == Register::R14
            && insn.memory_displacement64() == 0x10
    });
    if !checks_guard {
        return None;
    }
    // The morestack block: straight-line code to a call, then a jump back to the start.
    let mut ip = target;
    let mut called = false;
    for _ in 0..64 {
        let s = flow.step_at(ip)?;
        match s.flow {
            Flow::Next => {}
            Flow::Call(_) | Flow::IndirectCall => called = true,
            Flow::Jump(t) if t == start && called => {
                return Some(last + u64::from(step.len));
            }
            _ => return None,
        }
        ip += u64::from(s.len);
    }
    None
}

/// Every `ret` of the function, found twice: by a linear sweep over its bytes (Go puts no data
/// in text, and the walk misses code behind jump tables) and by the control-flow walk, which
/// must agree; a jump out of the function (a tail call) leaves without a `ret` to probe.
fn return_sites(flow: &ControlFlow, code: &[u8], start: u64) -> Result<Vec<u64>, String> {
    let end = start + code.len() as u64;
    let mut linear = Vec::new();
    for insn in Decoder::with_ip(64, code, start, DecoderOptions::NONE) {
        if insn.is_invalid() {
            // Go pads functions with int3; anything undecodable is no place to reason about.
            return Err(format!(
                "the bytes at {:#x} do not decode as an instruction",
                insn.ip()
            ));
        }
        if insn.mnemonic() == Mnemonic::Ret {
            linear.push(insn.ip());
        }
    }
    for (ip, step) in flow.reached() {
        if let Flow::Jump(t) | Flow::Branch(t) = step.flow {
            if t < start || t >= end {
                return Err(format!(
                    "it leaves by a jump to {t:#x}, outside the function (a tail call), not \
                     by a `ret` (the jump is at {ip:#x})"
                ));
            }
        }
        if step.flow == Flow::Return && !linear.contains(&ip) {
            return Err(format!(
                "the control flow reaches a return at {ip:#x} that a linear decoding of the \
                 function does not find"
            ));
        }
    }
    let starts = flow.instruction_starts();
    if let Some(&ip) = linear.iter().find(|ip| !starts.contains(ip)) {
        return Err(format!(
            "a linear decoding finds a `ret` at {ip:#x} that the control flow does not"
        ));
    }
    if linear.is_empty() {
        return Err("it has no `ret` (it never returns, or leaves by a jump)".into());
    }
    Ok(linear)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Go 1.19 prologue: `cmp 0x10(%r14),%rsp; jbe L; push %rbp; mov %rsp,%rbp; ...;
    /// pop %rbp; ret; L: call morestack; jmp f`.
    fn go_function() -> Vec<u8> {
        let mut c = vec![0x49, 0x3b, 0x66, 0x10]; // cmp 0x10(%r14),%rsp
        c.extend([0x76, 0x07]); // jbe +7 -> 0x0d
        c.extend([0x55]); // push %rbp (0x06)
        c.extend([0x48, 0x89, 0xe5]); // mov %rsp,%rbp
        c.extend([0x5d]); // pop %rbp
        c.extend([0xc3]); // ret (0x0b)
        c.extend([0x90]); // nop (0x0c)
        c.extend([0xe8, 0x00, 0x10, 0x00, 0x00]); // call far away (0x0d)
        c.extend([0xeb, 0xec]); // jmp -20 -> 0x00 (0x12)
        c
    }

    #[test]
    fn the_entry_is_past_the_stack_check_and_every_ret_is_found() {
        let code = go_function();
        let s = sites(&code, Svma(0x1000));
        assert_eq!(s.entry, Svma(0x1006));
        assert_eq!(s.rets, Ok(vec![Svma(0x100b)]));
    }

    #[test]
    fn a_tail_jump_out_refuses_the_return() {
        // push %rbp; pop %rbp; jmp far
        let code = [0x55, 0x5d, 0xe9, 0x00, 0x10, 0x00, 0x00];
        let s = sites(&code, Svma(0x2000));
        assert_eq!(s.entry, Svma(0x2000), "no stack check: the start");
        assert!(s.rets.unwrap_err().contains("tail call"));
    }

    #[test]
    fn build_info_version() {
        let mut d = b"\xff Go buildinf:".to_vec();
        d.extend([8, 2]);
        d.resize(32, 0);
        d.push(8);
        d.extend(b"go1.19.8");
        assert_eq!(buildinfo_version(&d).as_deref(), Some("go1.19.8"));
        let go = |v: Option<&str>| GoBinary {
            version: v.map(str::to_string),
        };
        assert!(go(Some("go1.19.8")).goroutine_in_r14());
        assert!(go(Some("go1.21rc2")).goroutine_in_r14());
        assert!(!go(Some("go1.16.15")).goroutine_in_r14());
        assert!(!go(None).goroutine_in_r14());
        d[15] = 0;
        assert_eq!(buildinfo_version(&d), None);
    }
}
