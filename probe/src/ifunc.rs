//! The implementations an IFUNC can select, read from its resolver's code.
//!
//! An IFUNC symbol's address is its resolver, which ld.so runs once to pick the function that
//! calls will reach (`__strchr_avx2`, `__strchr_evex`, `__strchr_sse2`, ... for `strchr`).
//! Names alone mislead (`strchr`'s alias `index` shares its resolver; `strrchr`'s
//! implementations don't all contain `strrchr`), so the resolver is decoded and every function
//! start it takes the address of (`lea sym(%rip)`, or `mov $sym` in a non-PIE file) is a
//! candidate. When the probed file is the very library urec itself runs with, the dynamic
//! loader is asked which one this CPU gets.

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};

use crate::elf::{Binary, Sym};
use crate::insn::{self, KernelUprobes};
use urec_format::Svma;

/// How much of a resolver without a symbol size is decoded: glibc's are under 300 bytes.
const MAX_RESOLVER: usize = 1024;

/// What [`implementations`] found.
pub(crate) struct Implementations {
    /// Implementation names, probeable ones first, each group sorted; unprobeable ones carry
    /// ` [not-probeable]`.
    pub names: Vec<String>,
    /// The implementation this process's dynamic loader selected, when the binary is the one
    /// urec runs with.
    pub selected: Option<Selected>,
}

/// The implementation this CPU gets, and where it can be probed.
pub(crate) struct Selected {
    /// Its name.
    pub name: String,
    /// `NAME` when its first instruction can be probed; `NAME+0xOFF` for the first probeable
    /// instruction every call reaches when it cannot; None when there is none early on.
    pub probe_at: Option<String>,
}

/// How many instructions from an implementation's start are tried for [`Selected::probe_at`].
const STRAIGHT_LINE: usize = 8;

/// Where calls to the function at `s` can be counted: its start, else the first probeable
/// instruction before any branch (so every call passes it).
fn probe_point(bin: &Binary, s: &Sym) -> Option<String> {
    let kernel = KernelUprobes::running();
    let code = bin.bytes_at(s.vaddr, 16 * STRAIGHT_LINE);
    let mut decoder = Decoder::with_ip(64, code, s.vaddr.0, DecoderOptions::NONE);
    for _ in 0..STRAIGHT_LINE {
        let ip = decoder.ip();
        let at = (ip - s.vaddr.0) as usize;
        if !insn::classify(code.get(at..).unwrap_or(&[]), &kernel).is_refused() {
            return Some(if at == 0 {
                s.display().to_string()
            } else {
                format!("{}+{at:#x}", s.display())
            });
        }
        let i = decoder.decode();
        let branches = i.near_branch_target() != 0
            || matches!(
                i.mnemonic(),
                Mnemonic::Ret | Mnemonic::Jmp | Mnemonic::Call | Mnemonic::Ud2 | Mnemonic::Int3
            );
        if i.is_invalid() || branches {
            return None;
        }
    }
    None
}

/// The implementations `ifunc`'s resolver can return (see the module docs).
pub(crate) fn implementations(bin: &Binary, ifunc: &Sym) -> Implementations {
    let size = if ifunc.size > 0 {
        ifunc.size as usize
    } else {
        MAX_RESOLVER
    };
    let code = bin.bytes_at(ifunc.vaddr, size);
    let mut targets: Vec<Svma> = Vec::new();
    let mut decoder = Decoder::with_ip(64, code, ifunc.vaddr.0, DecoderOptions::NONE);
    while decoder.can_decode() {
        let i = decoder.decode();
        if i.is_invalid() {
            break;
        }
        if i.mnemonic() == Mnemonic::Lea && i.is_ip_rel_memory_operand() {
            targets.push(Svma(i.ip_rel_memory_address()));
        } else if i.mnemonic() == Mnemonic::Mov
            && i.op_count() == 2
            && matches!(i.op1_kind(), OpKind::Immediate32to64 | OpKind::Immediate32)
        {
            targets.push(Svma(i.immediate32() as u64));
        }
        if ifunc.size == 0 && i.mnemonic() == Mnemonic::Ret {
            break;
        }
    }
    let mut found: Vec<&Sym> = Vec::new();
    for t in targets {
        if t == ifunc.vaddr || bin.ifunc_at(t).is_some() {
            continue;
        }
        if let Some(s) = best_name_at(bin, t) {
            if !found.iter().any(|f| f.vaddr == s.vaddr) {
                found.push(s);
            }
        }
    }
    if found.is_empty() {
        found = by_name(bin, ifunc);
    }
    let kernel = KernelUprobes::running();
    let mut probeable: Vec<String> = Vec::new();
    let mut refused: Vec<String> = Vec::new();
    for s in &found {
        if insn::classify(bin.bytes_at(s.vaddr, 16), &kernel).is_refused() {
            refused.push(format!("{} [not-probeable]", s.display()));
        } else {
            probeable.push(s.display().to_string());
        }
    }
    probeable.sort();
    refused.sort();
    probeable.extend(refused);
    Implementations {
        names: probeable,
        selected: selected_here(bin, ifunc),
    }
}

/// The plainest name of the function starting at `vaddr` (`__strchr_avx2`, not an alias
/// `__GI_...`), if one starts there.
fn best_name_at(bin: &Binary, vaddr: Svma) -> Option<&Sym> {
    bin.functions
        .iter()
        .filter(|s| s.vaddr == vaddr && !crate::resolve::is_cold_part(&s.raw))
        .min_by_key(|s| crate::resolve::alias_rank(s))
}

/// Fallback when the resolver's code names nothing: functions whose name contains the
/// IFUNC's (`__strlen_avx2` for `strlen`).
fn by_name<'b>(bin: &'b Binary, ifunc: &Sym) -> Vec<&'b Sym> {
    let name = ifunc.raw.as_str();
    let mut out: Vec<&Sym> = Vec::new();
    for s in &bin.functions {
        if s.raw.contains(name)
            && s.vaddr != ifunc.vaddr
            && bin.ifunc_at(s.vaddr).is_none()
            && !crate::resolve::is_cold_part(&s.raw)
            && !out.iter().any(|o| o.vaddr == s.vaddr)
        {
            out.push(s);
        }
    }
    out
}

/// The implementation the dynamic loader picked for `ifunc` in this very process, when `bin`
/// is a library this process has loaded (then `dlsym` runs the resolver for this CPU).
#[cfg(target_os = "linux")]
fn selected_here(bin: &Binary, ifunc: &Sym) -> Option<Selected> {
    use std::ffi::{CStr, CString};
    use std::os::unix::ffi::OsStrExt;
    // Any exported name of the resolver will do (`strchr` for a local `__GI_strchr`).
    let global = bin
        .functions
        .iter()
        .find(|s| s.vaddr == ifunc.vaddr && s.ifunc && s.global)?;
    let name = CString::new(global.raw.as_str()).ok()?;
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no other precondition; the
    // pointer it returns is only compared and subtracted, never dereferenced.
    let addr = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if addr.is_null() {
        return None;
    }
    // SAFETY: `info` is a plain C struct dladdr fills in; zeroed is a valid initial value.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: `addr` came from dlsym, `info` is valid for writes.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr returned a NUL-terminated file name owned by the loader.
    let file = unsafe { CStr::from_ptr(info.dli_fname) };
    let file = std::fs::canonicalize(std::ffi::OsStr::from_bytes(file.to_bytes())).ok()?;
    if file != bin.path {
        return None;
    }
    // For an ELF shared object `dli_fbase` is its load bias.
    let vaddr = urec_format::Avma(addr as u64).to_svma(info.dli_fbase as u64)?;
    best_name_at(bin, vaddr).map(|s| Selected {
        name: s.display().to_string(),
        probe_at: probe_point(bin, s),
    })
}

#[cfg(not(target_os = "linux"))]
fn selected_here(_bin: &Binary, _ifunc: &Sym) -> Option<Selected> {
    None
}
