//! urec probe specs: parsing `TARGET:FUNCTION[%return] [ARG ...]` and resolving each to the
//! binary and file offset the kernel attaches a uprobe to. Also lists a binary's probeable
//! functions (`urec list`). No libbpf and no kernel needed: this runs before anything is
//! attached, so every mistake in a spec is reported while nothing has happened yet.
//!
//! ```no_run
//! let spec = urec_probe::parse("bash:readline%return cmd=+0($retval):string")?;
//! let resolved = urec_probe::resolve(&[spec], &urec_probe::ResolveOptions::default())?;
//! for p in &resolved.probes {
//!     println!("{} at {}+{:#x}", p.probe.name, p.probe.binary, p.probe.offset.0);
//! }
//! # Ok::<(), urec_probe::SpecError>(())
//! ```
//!
//! # The pieces
//! - [`parse`] turns one `-e` text into a [`ProbeSpec`]: TARGET, a [`FunctionSpec`],
//!   `%return`, and [`Arg`]s whose FETCH is a [`Fetch`] tree (the kernel's uprobe_events
//!   fetch-arg syntax). Purely textual.
//! - [`resolve`] finds each TARGET (path, PATH, or a library short name looked up like ld.so
//!   does), reads its ELF symbols (`.symtab`, `.dynsym`, C++/Rust demangled), and turns every
//!   match into a [`ResolvedProbe`] carrying a ready [`urec_format::Probe`]. One probe per
//!   (binary, file offset): aliases and overlapping specs merge.
//! - [`list`] enumerates the functions of a binary with their addresses, sizes and whether the
//!   kernel can probe their first instruction cheaply ([`InsnHandling`]); [`list_usdt`] its
//!   USDT probes.
//! - `usdt:TARGET[:PROVIDER]:NAME` specs resolve to the sites of `.note.stapsdt` notes
//!   ([`UsdtProbe`]): entry-only probes whose `argN` are the notes' operands, and whose
//!   semaphore the kernel counts while attached ([`ResolvedProbe::ref_ctr_offset`]).
//!
//! # Design decisions
//! - **File offsets, not addresses.** A uprobe is keyed by (inode, file offset). Symbols give
//!   ELF virtual addresses; the conversion goes through the executable PT_LOAD program header
//!   containing the address (see the comment on the conversion in `elf.rs`). Getting this
//!   wrong attaches to the wrong instruction, silently.
//! - **Return probes only at a function's first instruction.** A uretprobe hijacks the return
//!   address at `[sp]`, which is the return address only at entry. `SYM+0xOFF` (OFF ≠ 0) and
//!   addresses inside a function are entry-only; `%return`, `$retval` and `argN` are refused
//!   there.
//! - **IFUNCs are refused.** An IFUNC symbol's address is its resolver, run once by ld.so; a
//!   probe there never fires for calls. The error names the implementations its resolver's
//!   code returns (`__strlen_avx2`, ...) and which one this CPU gets.
//! - **Never a probe that changes the program.** Every probed location (USDT sites included)
//!   is checked against its function's instructions as the code's branches reach them
//!   ([`control_flow`]), not as a linear decoding guesses: one inside an instruction, or in
//!   data a jump skips, is refused, and so is an instruction the kernel refuses or would
//!   emulate wrongly ([`InsnHandling::Refused`], the rules in `insn.rs`), and a USDT semaphore
//!   the kernel's count would corrupt. Named specs fail with the reason; globs skip with one
//!   warning.
//! - **The first instruction matters.** The kernel emulates `push`, `nop` and branches but
//!   single-steps everything else (including `endbr64`) at about 10× the cost per hit;
//!   [`ResolvedProbe::first_insn`] tells. Where it is single-stepped, the probe goes on the
//!   first instruction of the entry block the kernel emulates when that sees the same calls
//!   ([`site`], [`ResolvedProbe::site`]), and `record` warns about those that still
//!   single-step. Which ones a kernel emulates
//!   is read from the running kernel ([`KernelUprobes`]). Whether the function starts
//!   with `push %rbp` decides whether the kernel's frame-pointer stack at entry already holds
//!   the immediate caller ([`ResolvedProbe::starts_with_push_rbp`]).

#![deny(missing_docs)]

use std::path::PathBuf;

pub mod control_flow;
mod elf;
mod glob;
pub mod go;
mod ifunc;
mod insn;
mod predicate;
mod real_file;
pub use real_file::unescape_mount_field;
mod resolve;
pub mod site;
mod spec;
mod target;
mod usdt;
mod usdt_resolve;

pub use insn::{Insn, InsnHandling, KernelUprobes, Refusal};
pub use predicate::{
    CmpOp, Expr, Predicate, Value, MAX_COMPARISONS, MAX_OPERANDS, MAX_STRING,
    MAX_STRING_COMPARISONS,
};
pub use resolve::{
    resolve, GoPlacement, Resolution, ResolveOptions, ResolvedProbe, FRAME_POINTER_THRESHOLD,
    GLOB_LIMIT,
};
pub use spec::{parse, Arg, Fetch, FunctionSpec, ProbeSpec, Reg, MAX_DEREF_DEPTH};
pub use target::{find_library, find_target, find_target_in, resolve_in_root, Found};
pub use usdt::{Operand, UsdtArg, UsdtProbe};

use urec_format::{FileOffset, Svma};

/// A probe spec that cannot be used: bad syntax, a missing binary or symbol, an unsupported
/// argument. Reported before anything is attached (exit status 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The spec text does not parse.
    #[error("bad probe spec {spec:?}: {why}")]
    Syntax {
        /// The spec as given.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// An ARG does not parse, or cannot be fetched at the probed location.
    #[error("bad argument {arg:?} in probe spec {spec:?}: {why}")]
    BadArg {
        /// The spec as given.
        spec: String,
        /// The ARG (or its FETCH).
        arg: String,
        /// What is wrong.
        why: String,
    },
    /// The `if EXPR` of a spec does not parse, or cannot be evaluated where the probe is.
    #[error("bad predicate in probe spec {spec:?}: {why}")]
    BadPredicate {
        /// The spec as given.
        spec: String,
        /// What is wrong.
        why: String,
    },
    /// TARGET names no file.
    #[error("cannot find {target:?}: {why}")]
    TargetNotFound {
        /// TARGET as written.
        target: String,
        /// Where it was looked for.
        why: String,
    },
    /// TARGET names something, but not a regular file: a FIFO, a device, a directory.
    /// "Cannot find" would send the user looking for a file that is there.
    #[error("{target:?}: {} is not a regular file ({what}); name a program or library", path.display())]
    NotRegularFile {
        /// TARGET as written.
        target: String,
        /// What TARGET resolved to.
        path: PathBuf,
        /// What is there instead, e.g. "a FIFO".
        what: &'static str,
    },
    /// The file cannot be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not an x86-64 ELF file.
    #[error("{} is not an x86-64 ELF file: {why}", path.display())]
    NotElf {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// No function of that name.
    #[error("{}", symbol_not_found(spec, symbol, binary, suggestions, *stripped))]
    SymbolNotFound {
        /// The spec as given.
        spec: String,
        /// The name looked for.
        symbol: String,
        /// The binary searched.
        binary: PathBuf,
        /// Up to 5 close names that exist.
        suggestions: Vec<String>,
        /// The binary has no `.symtab` (only exported functions are known).
        stripped: bool,
    },
    /// The name matches several functions at different addresses.
    #[error("probe spec {spec:?}: {symbol:?} is ambiguous; it names {}: give the full name \
             with parameters or the address", candidates.join(", "))]
    Ambiguous {
        /// The spec as given.
        spec: String,
        /// The name.
        symbol: String,
        /// The functions it could mean (name and address).
        candidates: Vec<String>,
    },
    /// The symbol is an IFUNC (its address is the resolver, not the function).
    #[error("{}", ifunc_message(spec, symbol, binary, implementations, selected.as_deref(), *stripped))]
    Ifunc {
        /// The spec as given.
        spec: String,
        /// The IFUNC symbol.
        symbol: String,
        /// The binary.
        binary: PathBuf,
        /// Functions its resolver can select, probeable ones first (unprobeable ones marked
        /// ` [not-probeable]`).
        implementations: Box<[String]>,
        /// A sentence on the one this CPU gets, when the binary is the library urec itself
        /// runs with.
        selected: Option<Box<str>>,
        /// The binary has no `.symtab`, where the implementations would be named.
        stripped: bool,
    },
    /// A glob matched no function.
    #[error("probe spec {spec:?}: no function in {} matches {pattern:?} (try `urec list {}`)",
            binary.display(), binary.display())]
    GlobNoMatch {
        /// The spec as given.
        spec: String,
        /// The glob.
        pattern: String,
        /// The binary searched.
        binary: PathBuf,
    },
    /// A glob matched more than [`GLOB_LIMIT`] functions without `--force`.
    #[error(
        "probe spec {spec:?} matches {count} functions, more than {limit}; narrow the glob \
             or pass --force"
    )]
    TooManyMatches {
        /// The spec as given.
        spec: String,
        /// How many functions matched.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The location exists but cannot be probed as asked.
    #[error("probe spec {spec:?}: {why}")]
    NotProbeable {
        /// The spec as given.
        spec: String,
        /// Why.
        why: String,
    },
}

fn symbol_not_found(
    spec: &str,
    symbol: &str,
    binary: &std::path::Path,
    suggestions: &[String],
    stripped: bool,
) -> String {
    let mut m = format!(
        "probe spec {spec:?}: no function {symbol:?} in {}",
        binary.display()
    );
    if !suggestions.is_empty() {
        m.push_str(&format!("; close names: {}", suggestions.join(", ")));
    }
    if stripped {
        m.push_str(
            " (the binary is stripped of .symtab: only its exported functions are known; \
             install its debug symbols to see the others)",
        );
    }
    m
}

fn ifunc_message(
    spec: &str,
    symbol: &str,
    binary: &std::path::Path,
    implementations: &[String],
    selected: Option<&str>,
    stripped: bool,
) -> String {
    let mut m = format!(
        "probe spec {spec:?}: {symbol} in {} is an IFUNC: its address is the resolver ld.so \
         runs once to pick an implementation, so a probe there never sees calls.",
        binary.display()
    );
    if !implementations.is_empty() {
        m.push_str(&format!(
            " Its resolver selects one of: {}.",
            urec_format::name_list(implementations, 12)
        ));
        if let Some(sel) = selected {
            m.push(' ');
            m.push_str(sel);
        } else {
            m.push_str(" Probe the ones this CPU may select instead.");
        }
    } else if stripped {
        m.push_str(&format!(
            " Its implementations (e.g. __{symbol}_avx2) are local symbols, and this binary is \
             stripped of .symtab (as Debian ships libc): install its debug symbols \
             (libc6-dbg for libc) so urec can name and probe them."
        ));
    } else {
        m.push_str(" No implementation named after it was found in its symbol tables.");
    }
    m
}

/// A function of a binary, as [`list`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Demangled name (Rust without the hash), or the raw name for C.
    pub name: String,
    /// The name in the symbol table.
    pub raw_name: String,
    /// ELF virtual address.
    pub vaddr: Svma,
    /// File offset (what a uprobe attaches to).
    pub offset: FileOffset,
    /// Size in bytes (0 when the symbol does not say).
    pub size: u64,
    /// An IFUNC resolver (cannot usefully be probed).
    pub ifunc: bool,
    /// How the kernel handles a probe on its first instruction.
    pub first_insn: InsnHandling,
    /// Where a probe with no args goes when the first instruction is single-stepped
    /// ([`site`]): for entry+return (and return) probes, and, when that is further, for
    /// entry-only probes (`%entry`). None when the first instruction is not single-stepped.
    pub sites: Option<(site::EntrySite, site::EntrySite)>,
}

impl Function {
    /// Whether a probe here would see calls: not an IFUNC, first instruction not refused.
    pub fn probeable(&self) -> bool {
        !self.ifunc && !self.first_insn.is_refused()
    }
}

/// Whether the ELF file at `path` seems built with frame pointers: at least
/// [`FRAME_POINTER_THRESHOLD`] of its functions that set up a stack frame do it with
/// `[endbr64] push %rbp; mov %rsp,%rbp`. A file that cannot be read, or has no function
/// symbols, counts as without: DWARF unwinding is the safe choice for it. A Go binary counts as
/// with (see [`ResolvedProbe::binary_is_go`]).
pub fn keeps_frame_pointers(path: &std::path::Path) -> bool {
    elf::Binary::open(path)
        .is_ok_and(|b| b.go.is_some() || b.fp_fraction >= FRAME_POINTER_THRESHOLD)
}

/// The functions of TARGET (resolved as in specs) whose name (raw or demangled) matches `glob`
/// (all when None), sorted by name, then address. A binary without symbol tables lists the
/// functions its `.eh_frame` FDEs bound, each named `FILE+0xADDR` (its file name and ELF
/// virtual address), as `-e TARGET:0xADDR` probes them: a fully stripped binary's code is still
/// there to probe.
pub fn list(target: &str, glob: Option<&str>) -> Result<Vec<Function>, SpecError> {
    let path = target::find_target(target)?;
    let bin = elf::Binary::open(&path).map_err(|e| target::explain_not_elf(e, target))?;
    let kernel = KernelUprobes::running();
    // (display name, raw name, vaddr, size) of each function that matches.
    let listed: Vec<(String, String, Svma, u64)> = if bin.functions.is_empty() {
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        // The PLT has FDEs too, for stubs that are no function of the binary's own.
        let plt: Vec<(Svma, u64)> = [".plt", ".plt.sec", ".plt.got"]
            .iter()
            .filter_map(|name| bin.section(name))
            .map(|(addr, bytes)| (addr, bytes.len() as u64))
            .collect();
        bin.fde_ranges()
            .into_iter()
            .filter(|&(start, _)| !plt.iter().any(|&(a, n)| start >= a && start - a < n))
            .map(|(start, len)| (format!("{file}+{start:#x}"), start, len))
            .filter(|(name, _, _)| glob.is_none_or(|g| glob::matches(g, name)))
            .map(|(name, start, len)| (name.clone(), name, start, len))
            .collect()
    } else {
        bin.functions
            .iter()
            .filter(|s| glob.is_none_or(|g| s.names().any(|n| glob::matches(g, n))))
            .map(|s| (s.display().to_string(), s.raw.clone(), s.vaddr, s.size))
            .collect()
    };
    let mut out: Vec<Function> = listed
        .into_iter()
        .filter_map(|(name, raw_name, vaddr, size)| {
            Some(Function {
                name,
                raw_name,
                vaddr,
                offset: bin.vaddr_to_offset(vaddr)?,
                size,
                ifunc: bin.ifunc_at(vaddr).is_some(),
                first_insn: insn::classify(bin.bytes_at(vaddr, 16), &kernel),
                sites: None,
            })
            .map(|mut f: Function| {
                if f.first_insn == InsnHandling::SingleStepped && !f.ifunc {
                    let at = |ret| {
                        if f.size == 0 {
                            return site::EntrySite::at_start(
                                f.vaddr,
                                f.first_insn,
                                Some("its size is unknown".into()),
                            );
                        }
                        let reads = site::Reads::default();
                        resolve::entry_site_of(&bin, f.vaddr, f.size, &kernel, &reads, ret)
                    };
                    // Where entry+return moves, entry-only moves to the same instruction.
                    let both = at(true);
                    let entry = if both.moved { both.clone() } else { at(false) };
                    f.sites = Some((both, entry));
                }
                f
            })
        })
        .collect();
    out.sort_by(|a, b| {
        a.name
            .cmp(&b.name)
            .then(a.vaddr.cmp(&b.vaddr))
            .then_with(|| a.raw_name.cmp(&b.raw_name))
    });
    Ok(out)
}

/// The USDT probes of TARGET (resolved as in specs) whose `provider:name` or name matches
/// `glob` (all when None), sorted by provider, name, then address.
pub fn list_usdt(target: &str, glob: Option<&str>) -> Result<Vec<UsdtProbe>, SpecError> {
    let path = target::find_target(target)?;
    let bin = elf::Binary::open(&path).map_err(|e| target::explain_not_elf(e, target))?;
    let mut out: Vec<UsdtProbe> = usdt::probes(&bin)
        .into_iter()
        .filter(|p| {
            glob.is_none_or(|g| {
                glob::matches(g, &p.name) || glob::matches(g, &format!("{}:{}", p.provider, p.name))
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.provider, &a.name, a.pc).cmp(&(&b.provider, &b.name, b.pc)));
    Ok(out)
}
