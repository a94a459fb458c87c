//! Parsing probe specs: `TARGET:FUNCTION[%return] [ARG ...]`.
//!
//! Parsing is purely textual: nothing here opens a file. Whether the target exists, whether the
//! function is a symbol, and whether an argument makes sense at the resolved location (`$retval`
//! inside a function body, say) is decided by [`crate::resolve`].
//!
//! Arguments follow the kernel's uprobe_events fetch-arg syntax
//! (Documentation/trace/uprobetracer.rst) so that what users know from tracefs and `perf probe`
//! carries over, plus `argN` / `$argN` (the x86-64 SysV ABI argument N, 1-based) which tracefs
//! offers only for kprobes/fprobes. A fetch is parsed into a small tree ([`Fetch`]) that the
//! recorder compiles into the flat per-probe table its BPF program interprets.

use std::fmt;

use urec_format::ArgType;

use crate::predicate::{self, Predicate};
use crate::SpecError;

/// How deep `+OFF(...)` dereferences may nest. The BPF side walks the chain in a bounded loop;
/// the kernel's own fetch-arg parser has a similar limit.
pub const MAX_DEREF_DEPTH: usize = 8;

/// A parsed probe spec (`-e` argument). Built by [`parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSpec {
    /// The whole spec as the user wrote it.
    pub text: String,
    /// TARGET as written: a path, a program name, or a library short name.
    pub target: String,
    /// FUNCTION, classified.
    pub function: FunctionSpec,
    /// `%return` was given: a return probe only.
    pub return_only: bool,
    /// `%entry` was given: an entry probe only (counts, args and stacks at the cheapest cost,
    /// no latency).
    pub entry_only: bool,
    /// The ARGs, in order.
    pub args: Vec<Arg>,
    /// The trailing `if EXPR`, when given: calls it rejects are neither recorded nor lost.
    pub predicate: Option<Predicate>,
}

impl ProbeSpec {
    /// The probe's display name: `TARGET:FUNCTION` as written, without `%return` and args
    /// (`bash:readline`); `usdt:TARGET:PROVIDER:NAME` for USDT probes.
    pub fn name(&self) -> String {
        match self.function {
            FunctionSpec::Usdt { .. } => format!("usdt:{}:{}", self.target, self.function),
            _ => format!("{}:{}", self.target, self.function),
        }
    }
}

/// What FUNCTION names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FunctionSpec {
    /// A symbol name, mangled or demangled (`readline`, `ns::K::m(int)`, `mycrate::f`).
    Symbol(String),
    /// A glob over symbol names (`str*`, `ns::K::*`); contains `*`, `?` or `[`. An exact symbol
    /// of the same name wins over the glob meaning (so `operator[]` still works).
    Glob(String),
    /// `SYMBOL+0xOFF`: an offset into a function.
    SymbolOffset {
        /// The symbol.
        symbol: String,
        /// Bytes from its start.
        offset: u64,
    },
    /// `0xADDR`: an ELF virtual address (as `readelf -s` shows, not a file offset).
    Address(u64),
    /// `usdt:TARGET[:PROVIDER]:NAME`: the USDT probe sites (`.note.stapsdt`) of that name.
    Usdt {
        /// PROVIDER, when given (it may be left out when NAME is unique in TARGET).
        provider: Option<String>,
        /// NAME, possibly a glob.
        name: String,
    },
}

impl fmt::Display for FunctionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FunctionSpec::Symbol(s) | FunctionSpec::Glob(s) => f.write_str(s),
            FunctionSpec::SymbolOffset { symbol, offset } => write!(f, "{symbol}+{offset:#x}"),
            FunctionSpec::Address(a) => write!(f, "{a:#x}"),
            FunctionSpec::Usdt {
                provider: Some(p),
                name,
            } => write!(f, "{p}:{name}"),
            FunctionSpec::Usdt {
                provider: None,
                name,
            } => f.write_str(name),
        }
    }
}

/// One ARG of a spec: `[NAME=]FETCH[:TYPE]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arg {
    /// NAME, or the FETCH text when none was given.
    pub name: String,
    /// The FETCH text as written (`+0($retval)`).
    pub fetch_text: String,
    /// The parsed FETCH.
    pub fetch: Fetch,
    /// TYPE (default `x64`; `string` for `$comm`).
    pub ty: ArgType,
    /// TYPE was written. A bare USDT `argN` without one takes its operand's size and sign.
    pub typed: bool,
}

impl Arg {
    /// True when the value must be fetched at return: it uses `$retval`. (On a `%return` probe
    /// every arg is fetched at return; see [`crate::ResolvedProbe`].)
    pub fn uses_retval(&self) -> bool {
        self.fetch.uses_retval()
    }

    /// The format crate's view of this arg, for the data file.
    pub fn to_format(&self, at_return: bool) -> urec_format::ArgSpec {
        urec_format::ArgSpec {
            name: self.name.clone(),
            fetch: self.fetch_text.clone(),
            ty: self.ty,
            at_return,
        }
    }
}

/// A fetch expression: where a value comes from. Leaves are registers, the stack, immediates
/// and addresses; [`Fetch::Deref`] reads user memory at `inner + offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// `%REG`: a register from the probe's `pt_regs`.
    Reg(Reg),
    /// `argN` / `$argN`: ABI argument N (1-based), valid at function entry only. See
    /// [`Fetch::lowered`] for where it lives.
    Arg(u32),
    /// `$retval`: the return value (`%ax`), return probes only.
    Retval,
    /// `$comm`: the current task's command name.
    Comm,
    /// `$stack`: the stack pointer.
    StackPointer,
    /// `$stackN`: the N-th 8-byte word on the stack, `*(u64 *)(sp + 8 * N)`.
    StackSlot(u32),
    /// `@ADDR`: the 8-byte word at a user address.
    Memory(u64),
    /// `@+OFFSET`: the word at this file offset of the probed binary, rebased per process
    /// (a global variable).
    FileOffset(u64),
    /// `\IMM`: an immediate value.
    Immediate(u64),
    /// The word at this ELF virtual address of the probed binary, rebased per process. No
    /// syntax of its own: what a USDT operand like `8@counter(%rip)` becomes.
    Global(u64),
    /// The address `base + index * scale` (no read). No syntax of its own: what a USDT operand
    /// like `-8@(%rax,%rdi,8)` dereferences.
    Indexed {
        /// The base register.
        base: Reg,
        /// The index register.
        index: Reg,
        /// 1, 2, 4 or 8.
        scale: u8,
    },
    /// `+OFF(FETCH)` / `-OFF(FETCH)`: the word at user address `inner + offset`.
    Deref {
        /// Signed byte offset added to the inner value.
        offset: i64,
        /// What gives the base address.
        inner: Box<Fetch>,
    },
}

impl Fetch {
    /// True if `$retval` appears anywhere in the tree.
    pub fn uses_retval(&self) -> bool {
        match self {
            Fetch::Retval => true,
            Fetch::Deref { inner, .. } => inner.uses_retval(),
            _ => false,
        }
    }

    /// True if an ABI `argN` appears anywhere in the tree.
    pub fn uses_abi_arg(&self) -> bool {
        match self {
            Fetch::Arg(_) => true,
            Fetch::Deref { inner, .. } => inner.uses_abi_arg(),
            _ => false,
        }
    }

    /// The same fetch with ABI arguments and `$retval` replaced by where they live on x86-64
    /// (System V ABI, integer/pointer class): args 1–6 in `%di %si %dx %cx %r8 %r9`, arg 7 on
    /// at function entry at `$stack1` (the return address is `$stack0`), arg 8 at `$stack2`...;
    /// `$retval` in `%ax`. The recorder only has to handle registers, stack slots, memory,
    /// immediates and dereferences.
    pub fn lowered(&self) -> Fetch {
        match self {
            Fetch::Arg(n) => match n {
                1 => Fetch::Reg(Reg::Di),
                2 => Fetch::Reg(Reg::Si),
                3 => Fetch::Reg(Reg::Dx),
                4 => Fetch::Reg(Reg::Cx),
                5 => Fetch::Reg(Reg::R8),
                6 => Fetch::Reg(Reg::R9),
                n => Fetch::StackSlot(n - 6),
            },
            Fetch::Retval => Fetch::Reg(Reg::Ax),
            Fetch::Deref { offset, inner } => Fetch::Deref {
                offset: *offset,
                inner: Box::new(inner.lowered()),
            },
            other => other.clone(),
        }
    }

    /// The same fetch with ABI arguments replaced by where Go's register ABI (ABIInternal, Go
    /// 1.17+) puts them: args 1–9 in `%ax %bx %cx %di %si %r8 %r9 %r10 %r11`, one register per
    /// word, so a string takes two (pointer, length), a slice three, and a method's receiver
    /// is arg 1. `$retval` is left alone: the first result word is `%ax` in both ABIs.
    ///
    /// A Go argument that does not fit in the remaining registers goes to the stack whole, at
    /// an offset that depends on the types of the others: a word number there would be a
    /// guess, so arguments past the ninth are refused and `$stackN` is the way to read them.
    pub fn go_abi(&self) -> Result<Fetch, String> {
        const REGS: [Reg; 9] = [
            Reg::Ax,
            Reg::Bx,
            Reg::Cx,
            Reg::Di,
            Reg::Si,
            Reg::R8,
            Reg::R9,
            Reg::R10,
            Reg::R11,
        ];
        match self {
            Fetch::Arg(n) => match usize::try_from(*n)
                .ok()
                .and_then(|n| REGS.get(n.checked_sub(1)?))
            {
                Some(r) => Ok(Fetch::Reg(*r)),
                None => Err(format!(
                    "arg{n} of a Go function: Go's register ABI passes 9 integer words in \
                     registers (arg1..arg9 = %ax %bx %cx %di %si %r8 %r9 %r10 %r11); what does \
                     not fit goes to the stack at an offset that depends on the argument types, \
                     read it with $stackN"
                )),
            },
            Fetch::Deref { offset, inner } => Ok(Fetch::Deref {
                offset: *offset,
                inner: Box::new(inner.go_abi()?),
            }),
            other => Ok(other.clone()),
        }
    }

    /// Number of nested dereferences.
    pub fn depth(&self) -> usize {
        match self {
            Fetch::Deref { inner, .. } => 1 + inner.depth(),
            _ => 0,
        }
    }
}

/// An x86-64 register as `struct pt_regs` holds it, by the kernel's fetch-arg names
/// (`%di`, `%ax`, `%r8`, `%ip`, `%sp`, `%flags`...). The `r`-prefixed names (`%rdi`) are accepted
/// as aliases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Reg {
    R15,
    R14,
    R13,
    R12,
    Bp,
    Bx,
    R11,
    R10,
    R9,
    R8,
    Ax,
    Cx,
    Dx,
    Si,
    Di,
    OrigAx,
    Ip,
    Cs,
    Flags,
    Sp,
    Ss,
}

impl Reg {
    const ALL: [Reg; 21] = [
        Reg::R15,
        Reg::R14,
        Reg::R13,
        Reg::R12,
        Reg::Bp,
        Reg::Bx,
        Reg::R11,
        Reg::R10,
        Reg::R9,
        Reg::R8,
        Reg::Ax,
        Reg::Cx,
        Reg::Dx,
        Reg::Si,
        Reg::Di,
        Reg::OrigAx,
        Reg::Ip,
        Reg::Cs,
        Reg::Flags,
        Reg::Sp,
        Reg::Ss,
    ];

    /// The kernel's name (without `%`).
    pub fn name(self) -> &'static str {
        match self {
            Reg::R15 => "r15",
            Reg::R14 => "r14",
            Reg::R13 => "r13",
            Reg::R12 => "r12",
            Reg::Bp => "bp",
            Reg::Bx => "bx",
            Reg::R11 => "r11",
            Reg::R10 => "r10",
            Reg::R9 => "r9",
            Reg::R8 => "r8",
            Reg::Ax => "ax",
            Reg::Cx => "cx",
            Reg::Dx => "dx",
            Reg::Si => "si",
            Reg::Di => "di",
            Reg::OrigAx => "orig_ax",
            Reg::Ip => "ip",
            Reg::Cs => "cs",
            Reg::Flags => "flags",
            Reg::Sp => "sp",
            Reg::Ss => "ss",
        }
    }

    /// Byte offset of the register in x86-64 `struct pt_regs` (what a BPF program reads).
    pub fn pt_regs_offset(self) -> usize {
        // The declaration order above is pt_regs' field order; every field is 8 bytes.
        self as usize * 8
    }

    /// Parses a register name without `%`: kernel names and `r`-prefixed aliases.
    pub fn from_name(name: &str) -> Option<Reg> {
        let canonical = match name {
            "rax" | "eax" => "ax",
            "rbx" => "bx",
            "rcx" => "cx",
            "rdx" => "dx",
            "rsi" => "si",
            "rdi" => "di",
            "rbp" => "bp",
            "rsp" => "sp",
            "rip" => "ip",
            "eflags" | "rflags" => "flags",
            other => other,
        };
        Reg::ALL.iter().copied().find(|r| r.name() == canonical)
    }
}

/// Parses one probe spec. See the crate docs and SPEC.md ("Probe spec") for the grammar.
pub fn parse(spec: &str) -> Result<ProbeSpec, SpecError> {
    let syntax = |why: String| SpecError::Syntax {
        spec: spec.to_string(),
        why,
    };
    let text = spec.trim();
    if text.is_empty() {
        return Err(syntax("empty spec; expected TARGET:FUNCTION".into()));
    }
    if let Some(rest) = text.strip_prefix("usdt:") {
        return parse_usdt(spec, rest);
    }
    let (text, bpftrace_return) = strip_bpftrace_prefix(text).map_err(syntax)?;
    let colon = find_target_colon(text).ok_or_else(|| {
        syntax(
            "no ':' between TARGET and FUNCTION (expected TARGET:FUNCTION, e.g. bash:readline)"
                .into(),
        )
    })?;
    let target = &text[..colon];
    if target.is_empty() {
        return Err(syntax("empty TARGET before ':'".into()));
    }
    let rest = &text[colon + 1..];
    let (func_token, args_text) = split_function(rest).map_err(syntax)?;
    let (func_text, return_only, entry_only) = match func_token.strip_suffix("%return") {
        Some(f) => (f, true, false),
        None => match func_token.strip_suffix("%entry") {
            Some(f) if !bpftrace_return => (f, false, true),
            Some(_) => {
                return Err(syntax(
                    "%entry on a uretprobe: asks for the entry and only the return at once".into(),
                ))
            }
            None => (func_token.as_str(), bpftrace_return, false),
        },
    };
    let func_text = unquote(func_text).map_err(syntax)?;
    if func_text.is_empty() {
        return Err(syntax("empty FUNCTION after ':'".into()));
    }
    if let Some(pos) = func_text.find('%') {
        return Err(syntax(format!(
            "unknown suffix {:?} after the function (%return and %entry are supported)",
            &func_text[pos..]
        )));
    }
    let function = classify_function(&func_text).map_err(syntax)?;
    let (args_text, if_text) = predicate::split_if(args_text);
    let args = parse_args(spec, args_text)?;
    let predicate = match if_text {
        Some(t) => Some(parse_predicate(
            spec,
            t,
            &args,
            return_only,
            predicate::Typing::AsWritten,
        )?),
        None => None,
    };
    if entry_only {
        if let Some(a) = args.iter().find(|a| a.uses_retval()) {
            return Err(SpecError::BadArg {
                spec: spec.to_string(),
                arg: a.fetch_text.clone(),
                why: "$retval needs the return, and %entry probes the entry only".into(),
            });
        }
    }
    Ok(ProbeSpec {
        text: spec.to_string(),
        target: target.to_string(),
        function,
        return_only,
        entry_only,
        args,
        predicate,
    })
}

/// Parses `if EXPR` and checks what the probe kind allows: the predicate is evaluated where
/// the call is decided (at entry, or at return on a `%return` probe), so `$retval` needs
/// `%return` and `argN` needs the entry.
fn parse_predicate(
    spec: &str,
    text: &str,
    args: &[Arg],
    return_only: bool,
    typing: predicate::Typing,
) -> Result<Predicate, SpecError> {
    let bad = |why: String| SpecError::BadPredicate {
        spec: spec.to_string(),
        why,
    };
    let pred = predicate::parse_typed(text, args, typing).map_err(bad)?;
    for a in &pred.operands {
        if matches!(typing, predicate::Typing::UsdtDeferred) && a.uses_retval() {
            return Err(bad(format!(
                "{} uses $retval: a USDT probe is a point in the code, it has no return",
                a.name
            )));
        }
        if !return_only && a.uses_retval() {
            return Err(bad(format!(
                "{} uses $retval, which a predicate may use only on a %return probe: on an \
                 entry + return probe the predicate decides at entry whether the call is \
                 recorded",
                a.name
            )));
        }
        if return_only && a.fetch.uses_abi_arg() {
            return Err(bad(format!(
                "{} uses an ABI argument, and a %return probe evaluates its predicate at \
                 return, when the arguments are gone; drop %return to filter at entry",
                a.name
            )));
        }
    }
    Ok(pred)
}

fn parse_args(spec: &str, args_text: &str) -> Result<Vec<Arg>, SpecError> {
    args_text
        .split_whitespace()
        .map(|word| {
            parse_arg(word).map_err(|why| SpecError::BadArg {
                spec: spec.to_string(),
                arg: word.to_string(),
                why,
            })
        })
        .collect()
}

/// `usdt:TARGET[:PROVIDER]:NAME [ARG ...]`, as bpftrace writes it. TARGET is everything up
/// to the last one or two `:`, so a path with no `:` in it (the usual case) needs no quoting.
fn parse_usdt(spec: &str, rest: &str) -> Result<ProbeSpec, SpecError> {
    let syntax = |why: String| SpecError::Syntax {
        spec: spec.to_string(),
        why,
    };
    let (head, args_text) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let parts: Vec<&str> = head.split(':').collect();
    let (target, provider, name) = match parts.as_slice() {
        [t, n] => (*t, None, *n),
        [t, p, n] => (*t, Some(*p), *n),
        _ => {
            return Err(syntax(
                "expected usdt:TARGET:PROVIDER:NAME or usdt:TARGET:NAME, e.g. \
                 usdt:/usr/bin/python3.11:python:function__entry"
                    .into(),
            ))
        }
    };
    if target.is_empty() {
        return Err(syntax("empty TARGET after usdt:".into()));
    }
    if name.is_empty() || provider.is_some_and(str::is_empty) {
        return Err(syntax(
            "empty PROVIDER or NAME; expected usdt:TARGET[:PROVIDER]:NAME".into(),
        ));
    }
    let (args_text, if_text) = predicate::split_if(args_text);
    if let Some(pos) = name.find('%') {
        return Err(syntax(format!(
            "USDT probes have no return probe ({:?}): they are points in the code, not functions",
            &name[pos..]
        )));
    }
    let args = parse_args(spec, args_text)?;
    // Checked here for its form; each site parses it again with its operands' types
    // (`usdt_resolve`), since `argN`'s size and sign come from the note.
    let predicate = match if_text {
        Some(t) => Some(parse_predicate(
            spec,
            t,
            &args,
            false,
            predicate::Typing::UsdtDeferred,
        )?),
        None => None,
    };
    Ok(ProbeSpec {
        text: spec.to_string(),
        target: target.to_string(),
        function: FunctionSpec::Usdt {
            provider: provider.map(str::to_string),
            name: name.to_string(),
        },
        return_only: false,
        entry_only: true,
        args,
        predicate,
    })
}

/// bpftrace's probe types, accepted so that its users' habits carry over: `uprobe:` is urec's
/// default (entry and return: urec pairs them for latency), `uretprobe:` is `%return`.
const BPFTRACE_PREFIXES: [(&str, bool); 2] = [("uprobe:", false), ("uretprobe:", true)];

/// Strips a bpftrace prefix (`uprobe:libc:malloc`), returning the rest and whether it asked for a
/// return probe only. Only a prefix followed by a whole `TARGET:FUNCTION` counts, so that
/// `uprobe:f` still means the function `f` of a file named `uprobe` and `./uprobe:f` is untouched;
/// a `uprobe:` with nothing after it is refused with the form bpftrace users expect.
fn strip_bpftrace_prefix(text: &str) -> Result<(&str, bool), String> {
    for (prefix, return_only) in BPFTRACE_PREFIXES {
        let Some(rest) = text.strip_prefix(prefix) else {
            continue;
        };
        if rest.trim().is_empty() {
            return Err(format!(
                "nothing after {prefix:?}; expected {prefix}TARGET:FUNCTION, e.g. {prefix}bash:readline"
            ));
        }
        if find_target_colon(rest).is_some_and(|colon| colon > 0) {
            return Ok((rest, return_only));
        }
    }
    Ok((text, false))
}

/// Index of the first `:` that is not part of `::`.
fn find_target_colon(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b':' {
            if bytes.get(i + 1) == Some(&b':') {
                i += 2;
                continue;
            }
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Splits `FUNCTION[%return] ARGS...` at the first whitespace outside `()`, `<>` and `'...'`.
fn split_function(rest: &str) -> Result<(String, &str), String> {
    let mut depth_paren = 0i32;
    let mut depth_angle = 0i32;
    let mut quoted = false;
    for (i, c) in rest.char_indices() {
        match c {
            '\'' => quoted = !quoted,
            _ if quoted => {}
            '(' => depth_paren += 1,
            ')' => depth_paren -= 1,
            '<' => depth_angle += 1,
            '>' => depth_angle -= 1,
            c if c.is_whitespace() && depth_paren <= 0 && depth_angle <= 0 => {
                return Ok((rest[..i].to_string(), &rest[i..]));
            }
            _ => {}
        }
    }
    if quoted {
        return Err("unterminated quote in FUNCTION".into());
    }
    if depth_paren != 0 {
        return Err("unbalanced parentheses in FUNCTION (quote it with '...' if needed)".into());
    }
    if depth_angle != 0 {
        return Err("unbalanced <> in FUNCTION (quote it with '...' if needed)".into());
    }
    Ok((rest.to_string(), ""))
}

/// Removes one pair of surrounding single quotes (`'ns::f(int, char)'`).
fn unquote(text: &str) -> Result<String, String> {
    if let Some(inner) = text.strip_prefix('\'') {
        match inner.strip_suffix('\'') {
            Some(s) if !s.contains('\'') => Ok(s.to_string()),
            _ => Err(format!("bad quoting in FUNCTION {text:?}")),
        }
    } else if text.contains('\'') {
        Err(format!(
            "quote in the middle of FUNCTION {text:?}: quote the whole name, e.g. 'ns::f(int, char)'"
        ))
    } else {
        Ok(text.to_string())
    }
}

fn classify_function(text: &str) -> Result<FunctionSpec, String> {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16)
            .map(FunctionSpec::Address)
            .map_err(|_| format!("bad address {text:?}: expected 0x followed by hex digits"));
    }
    if text.as_bytes()[0].is_ascii_digit() {
        return Err(format!(
            "bad FUNCTION {text:?}: a raw address must be hex with a 0x prefix"
        ));
    }
    // `SYMBOL+OFF`: the last '+' followed only by a number. C++ `operator+` / `operator++` end
    // in '+' and are left alone.
    if let Some(pos) = text.rfind('+') {
        let (sym, off) = (&text[..pos], &text[pos + 1..]);
        if !sym.is_empty() && !off.is_empty() && off.as_bytes()[0].is_ascii_digit() {
            let offset = parse_u64(off).ok_or_else(|| {
                format!("bad offset {off:?} in {text:?}: expected 0xHEX or decimal")
            })?;
            return Ok(FunctionSpec::SymbolOffset {
                symbol: sym.to_string(),
                offset,
            });
        }
    }
    if crate::glob::is_glob(text) {
        return Ok(FunctionSpec::Glob(text.to_string()));
    }
    Ok(FunctionSpec::Symbol(text.to_string()))
}

/// Parses an unsigned number: `0x` hex or decimal.
fn parse_u64(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        s.parse().ok()
    }
}

/// Parses one `[NAME=]FETCH[:TYPE]`.
fn parse_arg(word: &str) -> Result<Arg, String> {
    let (name, rest) = match word.split_once('=') {
        Some((name, rest)) => {
            let ok = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(format!(
                    "bad NAME {name:?}: use letters, digits and '_', starting with a letter"
                ));
            }
            (Some(name), rest)
        }
        None => (None, word),
    };
    let (fetch_text, ty_text) = match rest.rsplit_once(':') {
        Some((f, t)) => (f, Some(t)),
        None => (rest, None),
    };
    if fetch_text.is_empty() {
        return Err("empty FETCH".into());
    }
    let fetch = parse_fetch(fetch_text, 0)?;
    let typed = ty_text.is_some();
    let ty = match ty_text {
        Some(t) => parse_type(t)?,
        None if fetch == Fetch::Comm => ArgType::String,
        None => ArgType::Hex(64),
    };
    if fetch == Fetch::Comm && ty != ArgType::String {
        return Err("$comm is a string; drop the :TYPE or use :string".into());
    }
    Ok(Arg {
        name: name.unwrap_or(fetch_text).to_string(),
        fetch_text: fetch_text.to_string(),
        fetch,
        ty,
        typed,
    })
}

pub(crate) fn parse_fetch(text: &str, depth: usize) -> Result<Fetch, String> {
    if depth > MAX_DEREF_DEPTH {
        return Err(format!("dereferences nested deeper than {MAX_DEREF_DEPTH}"));
    }
    if let Some(reg) = text.strip_prefix('%') {
        return Reg::from_name(reg).map(Fetch::Reg).ok_or_else(|| {
            format!(
                "unknown register %{reg}; x86-64 names are %ax %bx %cx %dx %si %di %bp %sp \
                 %r8..%r15 %ip %flags (or %rax, %rdi, ...)"
            )
        });
    }
    if let Some(n) = text
        .strip_prefix("$arg")
        .or_else(|| text.strip_prefix("arg"))
    {
        let n: u32 = n
            .parse()
            .map_err(|_| format!("bad argument {text:?}: expected argN with N = 1, 2, ..."))?;
        if n == 0 {
            return Err(format!(
                "{text} does not exist: ABI arguments count from 1 (arg1 is the first \
                 argument, bpftrace's arg0)"
            ));
        }
        if n > 64 {
            return Err(format!("{text}: argument number too large"));
        }
        return Ok(Fetch::Arg(n));
    }
    match text {
        "$retval" => return Ok(Fetch::Retval),
        "$comm" => return Ok(Fetch::Comm),
        "$stack" => return Ok(Fetch::StackPointer),
        _ => {}
    }
    if let Some(n) = text.strip_prefix("$stack") {
        let n: u32 = n
            .parse()
            .map_err(|_| format!("bad {text:?}: expected $stack or $stackN"))?;
        if n > 4096 {
            return Err(format!("{text}: stack slot too far"));
        }
        return Ok(Fetch::StackSlot(n));
    }
    if text.starts_with('$') {
        return Err(format!(
            "unknown variable {text}; supported: $retval $comm $stack $stackN $argN"
        ));
    }
    if let Some(off) = text.strip_prefix("@+") {
        return parse_u64(off)
            .map(Fetch::FileOffset)
            .ok_or_else(|| format!("bad file offset in {text:?}: expected @+0xHEX or @+DECIMAL"));
    }
    if let Some(addr) = text.strip_prefix('@') {
        return parse_u64(addr).map(Fetch::Memory).ok_or_else(|| {
            format!("bad address in {text:?}: expected @0xHEX (symbols are not supported in @)")
        });
    }
    if let Some(imm) = text.strip_prefix('\\') {
        let value = match imm.strip_prefix('-') {
            Some(n) => parse_u64(n).map(|v| v.wrapping_neg()),
            None => parse_u64(imm),
        };
        return value
            .map(Fetch::Immediate)
            .ok_or_else(|| format!("bad immediate {text:?}: expected \\NUMBER"));
    }
    let sign = match text.as_bytes()[0] {
        b'+' => 1i64,
        b'-' => -1i64,
        _ => {
            return Err(format!(
                "unknown FETCH {text:?}; expected %REG, argN, $retval, $comm, $stack, $stackN, \
                 @ADDR, @+OFFSET, \\IMM or +OFF(FETCH)"
            ))
        }
    };
    let open = text
        .find('(')
        .ok_or_else(|| format!("bad dereference {text:?}: expected +OFF(FETCH)"))?;
    if !text.ends_with(')') {
        return Err(format!("bad dereference {text:?}: missing ')'"));
    }
    let mut off_text = &text[1..open];
    // `+u0(...)`: the kernel's explicit user-memory dereference; all uprobe memory is user memory.
    if let Some(rest) = off_text.strip_prefix('u') {
        off_text = rest;
    }
    let magnitude = parse_u64(off_text)
        .filter(|v| *v <= i64::MAX as u64)
        .ok_or_else(|| format!("bad offset {off_text:?} in {text:?}"))?;
    let inner_text = &text[open + 1..text.len() - 1];
    if inner_text.is_empty() {
        return Err(format!("empty dereference in {text:?}"));
    }
    let inner = parse_fetch(inner_text, depth + 1)?;
    if inner == Fetch::Comm {
        return Err("cannot dereference $comm".into());
    }
    Ok(Fetch::Deref {
        offset: sign * magnitude as i64,
        inner: Box::new(inner),
    })
}

fn parse_type(t: &str) -> Result<ArgType, String> {
    let bad = || {
        format!(
            "unknown TYPE {t:?}; supported: u8 u16 u32 u64 s8 s16 s32 s64 x8 x16 x32 x64 string \
             b<width>@<offset>/<container>"
        )
    };
    match t {
        "string" | "ustring" => return Ok(ArgType::String),
        "" => return Err("empty TYPE after ':'".into()),
        _ => {}
    }
    if let Some(bf) = t.strip_prefix('b') {
        let (width, rest) = bf.split_once('@').ok_or_else(bad)?;
        let (offset, container) = rest.split_once('/').ok_or_else(bad)?;
        let (width, offset, container): (u8, u8, u8) = (
            width.parse().map_err(|_| bad())?,
            offset.parse().map_err(|_| bad())?,
            container.parse().map_err(|_| bad())?,
        );
        if ![8, 16, 32, 64].contains(&container) {
            return Err(format!(
                "bitfield container {container} must be 8, 16, 32 or 64 bits"
            ));
        }
        if width == 0 || u16::from(width) + u16::from(offset) > u16::from(container) {
            return Err(format!(
                "bitfield b{width}@{offset}/{container} does not fit its {container}-bit container"
            ));
        }
        return Ok(ArgType::Bitfield {
            width,
            offset,
            container,
        });
    }
    let (kind, bits) = t.split_at(1);
    let bits: u8 = bits.parse().map_err(|_| bad())?;
    if ![8, 16, 32, 64].contains(&bits) {
        return Err(bad());
    }
    match kind {
        "u" => Ok(ArgType::Unsigned(bits)),
        "s" => Ok(ArgType::Signed(bits)),
        "x" => Ok(ArgType::Hex(bits)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ProbeSpec {
        match parse(s) {
            Ok(spec) => spec,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    fn fetch(s: &str) -> Fetch {
        p(&format!("bash:readline {s}")).args[0].fetch.clone()
    }

    fn err(s: &str) -> String {
        match parse(s) {
            Ok(spec) => panic!("{s:?} should not parse, got {spec:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn target_and_function() {
        let s = p("bash:readline");
        assert_eq!(s.target, "bash");
        assert_eq!(s.function, FunctionSpec::Symbol("readline".into()));
        assert!(!s.return_only);
        assert!(s.args.is_empty());
        assert_eq!(s.name(), "bash:readline");

        let s = p("/usr/lib/x86_64-linux-gnu/libc.so.6:malloc%return");
        assert_eq!(s.target, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        assert!(s.return_only);
        assert_eq!(s.name(), "/usr/lib/x86_64-linux-gnu/libc.so.6:malloc");

        let s = p("libc:malloc%entry n=arg1");
        assert!(s.entry_only && !s.return_only);
        assert_eq!(s.name(), "libc:malloc");
        assert!(err("libc:malloc%entry r=$retval").contains("%entry probes the entry only"));
        assert!(err("uretprobe:libc:malloc%entry").contains("%entry on a uretprobe"));
    }

    #[test]
    fn bpftrace_prefixes() {
        let s = p("uprobe:libc:malloc");
        assert_eq!(s.target, "libc");
        assert_eq!(s.function, FunctionSpec::Symbol("malloc".into()));
        assert!(!s.return_only, "uprobe: is entry + return, urec's default");
        assert_eq!(s.name(), "libc:malloc");
        assert_eq!(s.text, "uprobe:libc:malloc", "the spec as written");

        let s = p("uretprobe:/bin/bash:readline r=$retval:s32");
        assert_eq!(s.target, "/bin/bash");
        assert_eq!(s.function, FunctionSpec::Symbol("readline".into()));
        assert!(s.return_only);
        assert_eq!(s.args.len(), 1);
        // Redundant, and fine.
        assert!(p("uretprobe:bash:readline%return").return_only);
        // C++ names keep their `::` after the prefix.
        let s = p("uprobe:./app:ns::f");
        assert_eq!(s.target, "./app");
        assert_eq!(s.function, FunctionSpec::Symbol("ns::f".into()));

        // A file called `uprobe`: only without a second TARGET:FUNCTION, or as a path.
        let s = p("uprobe:f");
        assert_eq!(s.target, "uprobe");
        assert_eq!(s.function, FunctionSpec::Symbol("f".into()));
        let s = p("uprobe:ns::f");
        assert_eq!(s.target, "uprobe");
        assert_eq!(s.function, FunctionSpec::Symbol("ns::f".into()));
        let s = p("./uprobe:f");
        assert_eq!(s.target, "./uprobe");
        assert!(!s.return_only);
        let s = p("./uretprobe:f");
        assert_eq!(s.target, "./uretprobe");
        assert!(!s.return_only);

        assert!(err("uprobe:").contains("expected uprobe:TARGET:FUNCTION"));
        assert!(err("uretprobe: ").contains("expected uretprobe:TARGET:FUNCTION"));
        assert!(err("uprobe::f").contains("no ':'"));
    }

    #[test]
    fn usdt_specs() {
        let s = p("usdt:/usr/bin/python3.11:python:function__entry +0(arg2):string n=arg3");
        assert_eq!(s.target, "/usr/bin/python3.11");
        assert_eq!(
            s.function,
            FunctionSpec::Usdt {
                provider: Some("python".into()),
                name: "function__entry".into()
            }
        );
        assert_eq!(s.name(), "usdt:/usr/bin/python3.11:python:function__entry");
        assert!(!s.return_only);
        assert_eq!(s.args.len(), 2);
        assert!(
            !s.args[1].typed,
            "a bare argN takes its operand's type later"
        );
        assert!(s.args[0].typed);
        let s = p("usdt:./app:gc__*");
        assert_eq!(
            s.function,
            FunctionSpec::Usdt {
                provider: None,
                name: "gc__*".into()
            }
        );
        assert!(err("usdt:app").contains("usdt:TARGET:PROVIDER:NAME"));
        assert!(err("usdt:a:b:c:d").contains("usdt:TARGET:PROVIDER:NAME"));
        assert!(err("usdt::p:n").contains("empty TARGET"));
        assert!(err("usdt:app::n").contains("empty PROVIDER or NAME"));
        assert!(err("usdt:app:p:n%return").contains("no return probe"));
        assert!(err("usdt:app:p:n arg0").contains("count from 1"));
    }

    #[test]
    fn cxx_names() {
        let s = p("./app:ns::Klass::method(int, char) a=arg1");
        assert_eq!(s.target, "./app");
        assert_eq!(
            s.function,
            FunctionSpec::Symbol("ns::Klass::method(int, char)".into())
        );
        assert_eq!(s.args.len(), 1);
        let s = p("app:std::vector<int, std::allocator<int> >::push_back%return");
        assert_eq!(
            s.function,
            FunctionSpec::Symbol("std::vector<int, std::allocator<int> >::push_back".into())
        );
        assert!(s.return_only);
        let s = p("app:'ns::f(int, char)'%return $retval");
        assert_eq!(s.function, FunctionSpec::Symbol("ns::f(int, char)".into()));
        assert!(s.return_only);
        let s = p("app:'operator<'");
        assert_eq!(s.function, FunctionSpec::Symbol("operator<".into()));
        let s = p("app:ns::operator+");
        assert_eq!(s.function, FunctionSpec::Symbol("ns::operator+".into()));
    }

    #[test]
    fn function_forms() {
        assert_eq!(p("libc:str*").function, FunctionSpec::Glob("str*".into()));
        assert_eq!(
            p("libc:mem?py").function,
            FunctionSpec::Glob("mem?py".into())
        );
        assert_eq!(
            p("bash:readline+0x10").function,
            FunctionSpec::SymbolOffset {
                symbol: "readline".into(),
                offset: 0x10
            }
        );
        assert_eq!(
            p("bash:readline+16").function,
            FunctionSpec::SymbolOffset {
                symbol: "readline".into(),
                offset: 16
            }
        );
        assert_eq!(p("bash:0xc6c20").function, FunctionSpec::Address(0xc6c20));
        assert_eq!(p("bash:0xc6c20").name(), "bash:0xc6c20");
    }

    #[test]
    fn fetch_forms() {
        assert_eq!(fetch("%di"), Fetch::Reg(Reg::Di));
        assert_eq!(fetch("%rdi"), Fetch::Reg(Reg::Di));
        assert_eq!(fetch("%r12"), Fetch::Reg(Reg::R12));
        assert_eq!(fetch("%sp"), Fetch::Reg(Reg::Sp));
        assert_eq!(fetch("%ip"), Fetch::Reg(Reg::Ip));
        assert_eq!(fetch("arg1"), Fetch::Arg(1));
        assert_eq!(fetch("$arg7"), Fetch::Arg(7));
        assert_eq!(fetch("$retval"), Fetch::Retval);
        assert_eq!(fetch("$comm"), Fetch::Comm);
        assert_eq!(fetch("$stack"), Fetch::StackPointer);
        assert_eq!(fetch("$stack3"), Fetch::StackSlot(3));
        assert_eq!(fetch("@0x601040"), Fetch::Memory(0x601040));
        assert_eq!(fetch("@+0x4010"), Fetch::FileOffset(0x4010));
        assert_eq!(fetch("\\42"), Fetch::Immediate(42));
        assert_eq!(fetch("\\-1"), Fetch::Immediate(u64::MAX));
        assert_eq!(fetch("\\0x10"), Fetch::Immediate(16));
        assert_eq!(
            fetch("+0($retval)"),
            Fetch::Deref {
                offset: 0,
                inner: Box::new(Fetch::Retval)
            }
        );
        assert_eq!(
            fetch("-8(+16(%di))"),
            Fetch::Deref {
                offset: -8,
                inner: Box::new(Fetch::Deref {
                    offset: 16,
                    inner: Box::new(Fetch::Reg(Reg::Di))
                })
            }
        );
        assert_eq!(
            fetch("+u0x10(%si)"),
            Fetch::Deref {
                offset: 16,
                inner: Box::new(Fetch::Reg(Reg::Si))
            }
        );
    }

    #[test]
    fn names_and_types() {
        let s =
            p("bash:readline%return cmd=+0($retval):string n=arg2:u32 %di $comm f=+4(%si):b3@2/8");
        let a = &s.args;
        assert_eq!(a[0].name, "cmd");
        assert_eq!(a[0].fetch_text, "+0($retval)");
        assert_eq!(a[0].ty, ArgType::String);
        assert!(a[0].uses_retval());
        assert_eq!(a[1].name, "n");
        assert_eq!(a[1].ty, ArgType::Unsigned(32));
        assert!(!a[1].uses_retval());
        assert_eq!(a[2].name, "%di");
        assert_eq!(a[2].ty, ArgType::Hex(64));
        assert_eq!(a[3].name, "$comm");
        assert_eq!(a[3].ty, ArgType::String);
        assert_eq!(
            a[4].ty,
            ArgType::Bitfield {
                width: 3,
                offset: 2,
                container: 8
            }
        );
        for (t, want) in [
            ("u8", ArgType::Unsigned(8)),
            ("u16", ArgType::Unsigned(16)),
            ("u64", ArgType::Unsigned(64)),
            ("s8", ArgType::Signed(8)),
            ("s32", ArgType::Signed(32)),
            ("s64", ArgType::Signed(64)),
            ("x8", ArgType::Hex(8)),
            ("x16", ArgType::Hex(16)),
            ("x32", ArgType::Hex(32)),
            ("string", ArgType::String),
        ] {
            assert_eq!(p(&format!("a:f %di:{t}")).args[0].ty, want, "{t}");
        }
        let f = a[0].to_format(true);
        assert_eq!(
            f,
            urec_format::ArgSpec {
                name: "cmd".into(),
                fetch: "+0($retval)".into(),
                ty: ArgType::String,
                at_return: true
            }
        );
    }

    #[test]
    fn lowering() {
        assert_eq!(Fetch::Arg(1).lowered(), Fetch::Reg(Reg::Di));
        assert_eq!(Fetch::Arg(6).lowered(), Fetch::Reg(Reg::R9));
        assert_eq!(Fetch::Arg(7).lowered(), Fetch::StackSlot(1));
        assert_eq!(Fetch::Retval.lowered(), Fetch::Reg(Reg::Ax));
        // Go's register ABI: arg1..arg9 in RAX RBX RCX RDI RSI R8 R9 R10 R11.
        assert_eq!(Fetch::Arg(1).go_abi(), Ok(Fetch::Reg(Reg::Ax)));
        assert_eq!(Fetch::Arg(2).go_abi(), Ok(Fetch::Reg(Reg::Bx)));
        assert_eq!(Fetch::Arg(3).go_abi(), Ok(Fetch::Reg(Reg::Cx)));
        assert_eq!(Fetch::Arg(4).go_abi(), Ok(Fetch::Reg(Reg::Di)));
        assert_eq!(Fetch::Arg(9).go_abi(), Ok(Fetch::Reg(Reg::R11)));
        assert!(Fetch::Arg(10)
            .go_abi()
            .is_err_and(|e| e.contains("$stackN")));
        assert!(Fetch::Arg(0).go_abi().is_err());
        assert_eq!(
            fetch("+8(arg2)").go_abi(),
            Ok(Fetch::Deref {
                offset: 8,
                inner: Box::new(Fetch::Reg(Reg::Bx))
            })
        );
        assert_eq!(Fetch::Retval.go_abi(), Ok(Fetch::Retval));
        assert_eq!(Reg::Di.pt_regs_offset(), 112);
        assert_eq!(Reg::Ax.pt_regs_offset(), 80);
        assert_eq!(Reg::Sp.pt_regs_offset(), 152);
        assert_eq!(Reg::Ip.pt_regs_offset(), 128);
        assert_eq!(Reg::R15.pt_regs_offset(), 0);
    }

    #[test]
    fn errors() {
        assert!(err("").contains("empty spec"));
        assert!(err("readline").contains("no ':'"));
        assert!(err(":readline").contains("empty TARGET"));
        assert!(err("bash:").contains("empty FUNCTION"));
        assert!(err("bash:%return").contains("empty FUNCTION"));
        assert!(err("bash:readline%exit").contains("%return and %entry are supported"));
        assert!(err("bash:f(int").contains("unbalanced parentheses"));
        assert!(err("bash:'f").contains("unterminated quote"));
        assert!(err("bash:0xzz").contains("bad address"));
        assert!(err("bash:1234").contains("0x prefix"));
        assert!(err("bash:readline arg0").contains("count from 1"));
        assert!(err("bash:readline argx").contains("bad argument"));
        assert!(err("bash:readline %xyz").contains("unknown register %xyz"));
        assert!(err("bash:readline $foo").contains("unknown variable $foo"));
        assert!(err("bash:readline $stackx").contains("$stackN"));
        assert!(err("bash:readline @sym").contains("bad address"));
        assert!(err("bash:readline @+zz").contains("bad file offset"));
        assert!(err("bash:readline \\x").contains("bad immediate"));
        assert!(err("bash:readline +0(%di").contains("missing ')'"));
        assert!(err("bash:readline +0()").contains("empty dereference"));
        assert!(err("bash:readline +zz(%di)").contains("bad offset"));
        assert!(err("bash:readline 0(%di)").contains("unknown FETCH"));
        assert!(err("bash:readline %di:u7").contains("unknown TYPE"));
        assert!(err("bash:readline %di:y8").contains("unknown TYPE"));
        assert!(err("bash:readline %di:").contains("empty TYPE"));
        assert!(err("bash:readline %di:b9@0/8").contains("does not fit"));
        assert!(err("bash:readline %di:b1@0/7").contains("container 7"));
        assert!(err("bash:readline 1x=%di").contains("bad NAME"));
        assert!(err("bash:readline =%di").contains("bad NAME"));
        assert!(err("bash:readline $comm:u32").contains("$comm is a string"));
        assert!(err("bash:readline +0($comm)").contains("cannot dereference $comm"));
        let deep = format!("{}%di{}", "+0(".repeat(9), ")".repeat(9));
        assert!(err(&format!("bash:readline {deep}")).contains("nested deeper"));
        let ok = format!("{}%di{}", "+0(".repeat(8), ")".repeat(8));
        assert_eq!(fetch(&ok).depth(), 8);
        // The error names the offending arg and the spec.
        let e = err("bash:readline x=arg0");
        assert!(e.contains("\"x=arg0\""), "{e}");
        assert!(e.contains("bash:readline x=arg0"), "{e}");
    }

    #[test]
    fn predicates() {
        use crate::{CmpOp, Expr, Value};
        let s = p("libc:malloc size=arg1:u64 if size >= 4096");
        assert_eq!(s.args.len(), 1);
        let pred = s.predicate.unwrap();
        assert_eq!(pred.text, "size >= 4096");
        assert_eq!(pred.operands[0].name, "size");
        assert_eq!(
            pred.expr,
            Expr::Cmp {
                operand: 0,
                op: CmpOp::Ge,
                value: Value::Int(4096)
            }
        );
        // Signed constants are stored sign-extended; a constant on the left is mirrored.
        let s = p("t:f%return r=$retval:s32 if -1 < r");
        let pred = s.predicate.unwrap();
        assert_eq!(
            pred.expr,
            Expr::Cmp {
                operand: 0,
                op: CmpOp::Gt,
                value: Value::Int(u64::MAX)
            }
        );
        // FETCHes the spec does not store, strings, $comm, && || ! and parentheses.
        let s =
            p(r#"t:f name=+0(arg2):string if !(arg1 == 0x10 || $comm != "sh") && name == 'a\"b'"#);
        let pred = s.predicate.unwrap();
        assert_eq!(pred.operands.len(), 3);
        assert_eq!(pred.operands[0].name, "arg1");
        assert_eq!(pred.operands[0].ty, ArgType::Hex(64));
        assert_eq!(pred.operands[1].ty, ArgType::String);
        assert_eq!(pred.comparisons(), 3);
        match &pred.expr {
            Expr::And(a, b) => {
                assert!(matches!(**a, Expr::Not(_)));
                assert_eq!(
                    **b,
                    Expr::Cmp {
                        operand: 2,
                        op: CmpOp::Eq,
                        value: Value::Str(b"a\"b".to_vec())
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        // `if` inside a word is not the keyword.
        assert!(p("t:f iffy=arg1").predicate.is_none());
        let perr = |spec: &str| match parse(spec) {
            Ok(s) => panic!("{spec:?} should not parse: {s:?}"),
            Err(e) => e.to_string(),
        };
        assert!(perr("t:f x=arg1:u8 if x < 256").contains("does not fit x's type u8"));
        assert!(perr("t:f x=arg1:s8 if x < -129").contains("does not fit"));
        assert!(perr("t:f x=arg1:u32 if x == -1").contains("does not fit"));
        assert!(perr("t:f x=arg1:u32 if x = 1").contains("use '=='"));
        assert!(perr("t:f x=arg1 if y == 1").contains("neither an ARG of this spec (x)"));
        assert!(perr("t:f if $comm < \"a\"").contains("== or != only"));
        assert!(perr("t:f if $comm == 1").contains("quoted string"));
        assert!(perr("t:f if arg1 == \"a\"").contains("is an integer"));
        assert!(perr("t:f if arg1 == arg2").contains("one ARG and a constant"));
        assert!(perr("t:f if $retval == 0").contains("only on a %return probe"));
        assert!(perr("t:f%return if arg1 == 0").contains("ABI argument"));
        assert!(perr("t:f if").contains("empty predicate"));
        assert!(perr("t:f if (arg1 == 1").contains("missing ')'"));
        assert!(perr("t:f if arg1 == 1 arg2 == 2").contains("combine comparisons"));
        let many = ["arg1 == 1"; 9].join(" || ");
        assert!(perr(&format!("t:f if {many}")).contains("at most 8 comparisons"));
        let long = "x".repeat(64);
        assert!(perr(&format!("t:f if $comm == \"{long}\"")).contains("at most 63 bytes"));
        // USDT: an untyped argN's type comes from each site's note, so its constants are
        // only checked against 64 bits here.
        let u = p("usdt:t:p:n w=arg2 if arg1 == -1 && w < 0xffffffffffffffff");
        assert_eq!(u.predicate.unwrap().operands.len(), 2);
        assert!(p("usdt:t:p:n s=+0(arg1):string if s == \"a\"")
            .predicate
            .is_some());
        assert!(perr("usdt:t:p:n if arg1 == \"a\"").contains("NAME=+0(arg1):string"));
        assert!(perr("usdt:t:p:n x=arg1:u8 if x == 256").contains("does not fit x's type u8"));
        assert!(perr("usdt:t:p:n if $retval == 1").contains("has no return"));
    }
}
