//! Resolving parsed specs to probes: (binary, file offset), kind, args.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use urec_format::{FileOffset, Probe, ProbeKind, StackMode, Svma};

use crate::control_flow::ControlFlow;
use crate::elf::{Binary, Sym};
use crate::insn::{KernelUprobes, Refusal};
use crate::site::{EntrySite, Reads};
use crate::spec::{Fetch, FunctionSpec, ProbeSpec};
use crate::{glob, insn, target, InsnHandling, SpecError};

/// A glob matching more functions than this needs [`ResolveOptions::force`]: attaching
/// thousands of probes by accident is slow to set up and slows the traced programs down.
pub const GLOB_LIMIT: usize = 1000;

/// A binary "keeps frame pointers" when at least this fraction of its functions that set up a
/// frame at all do it with `push %rbp; mov %rsp,%rbp`. Built with `-fno-omit-frame-pointer`
/// nearly all do (the C runtime's `_init`/`_fini` and hand-written assembly don't); built
/// without, almost none do (only functions using `alloca` or realigning the stack).
pub const FRAME_POINTER_THRESHOLD: f32 = 0.5;

/// Options of [`resolve`].
#[derive(Clone, Debug, Default)]
pub struct ResolveOptions {
    /// Allow a glob to match more than [`GLOB_LIMIT`] functions, and an address in no known
    /// function (no symbol, no `.eh_frame` entry), whose boundaries cannot be checked.
    pub force: bool,
    /// Where TARGETs are looked up: empty for the host; else each of these roots (`-p` of
    /// processes in other mount namespaces: their `/proc/PID/root`; `/` stands for the host),
    /// a TARGET found in any of them being enough. A file found through several roots (one
    /// image shared by containers) is probed once.
    pub roots: Vec<PathBuf>,
}

/// A probe ready to attach.
#[derive(Clone, Debug)]
pub struct ResolvedProbe {
    /// The probe as the data file records it: id (in order from 0), name, every spec text that
    /// resolved here, canonical binary path, build id, symbol, vaddr, file offset, kind, args.
    /// `stack_mode` is left as [`StackMode::FramePointer`] for the recorder to set.
    pub probe: Probe,
    /// The parsed fetch of each arg, parallel to `probe.args` (whose `at_return` and `ty` say
    /// when and how to fetch it). Use [`Fetch::lowered`] to get registers and stack slots. In a
    /// Go binary `argN` is already Go's register ([`Fetch::go_abi`]): lowering by the C ABI
    /// would read the wrong registers.
    pub fetches: Vec<Fetch>,
    /// Size of the probed function in bytes (0 when unknown).
    pub size: u64,
    /// How the kernel handles the probed instruction; [`InsnHandling::SingleStepped`] costs
    /// about 10× per hit, worth a warning.
    pub first_insn: InsnHandling,
    /// The probed instruction is `push %rbp` at a function's start: the kernel's frame-pointer
    /// stack at entry already contains the immediate caller. Otherwise (`endbr64` first
    /// included) the recorder must add the return address at `[sp]` itself. False for probes
    /// inside a function.
    pub starts_with_push_rbp: bool,
    /// The binary as a whole seems built with frame pointers (see [`FRAME_POINTER_THRESHOLD`]).
    pub binary_keeps_frame_pointers: bool,
    /// File offset of the USDT semaphore the kernel must count while this probe is attached
    /// (`ref_ctr_offset`): the guarded site only runs while it is non-zero. None otherwise.
    pub ref_ctr_offset: Option<u64>,
    /// The binary as urec opens and attaches to it: `probe.binary` on the host, the same file
    /// through `/proc/PID/root` for a TARGET found in another process's root (whose
    /// in-container path `probe.binary` keeps).
    pub open_path: PathBuf,
    /// The spec's `if EXPR`: the BPF program records only the calls it accepts (evaluated at
    /// entry, or at return on a return-only probe). Specs that share a location share it.
    pub predicate: Option<crate::Predicate>,
    /// Set on a function of a Go binary: where its probes go instead of `probe.offset`, the
    /// function's start (SPEC.md, "Go programs"). None for other code.
    pub go: Option<GoPlacement>,
    /// The probed binary is a Go binary, wherever in it the probe is. `-g auto` walks frame
    /// pointers in Go code: the toolchain keeps them on every amd64 function that has a frame,
    /// but after the stack check (or as `sub; mov %rbp, N(%rsp); lea`), which the
    /// `push %rbp` census behind [`ResolvedProbe::binary_keeps_frame_pointers`] does not count.
    pub binary_is_go: bool,
    /// The probe is at a function's first instruction (not inside it, not USDT).
    pub at_function_start: bool,
    /// Where the probe is attached ([`crate::site`]): the function's start, or the first
    /// instruction of its entry block the kernel emulates when that sees the same calls. The
    /// file offset is [`ResolvedProbe::site_offset`]; `probe.vaddr`/`probe.offset` stay the
    /// function's start, which names its frame. Set by [`resolve`] once all specs merged.
    pub site: EntrySite,
    /// The file offset of [`ResolvedProbe::site`].
    pub site_offset: FileOffset,
}

/// Where the probes of a Go function go, as file offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoPlacement {
    /// The entry probe: past the stack check, so a call that grows its stack and starts over
    /// counts once.
    pub entry_offset: u64,
    /// A plain uprobe on each `ret`, paired per goroutine by the recorder; or why the return
    /// cannot be probed (the probe is then entry-only: [`ProbeKind::Entry`]).
    pub returns: Result<Vec<u64>, String>,
}

/// What [`resolve`] produced.
#[derive(Clone, Debug, Default)]
pub struct Resolution {
    /// One probe per (real file: device and inode, file offset), ids 0, 1, 2... in order of
    /// first appearance.
    pub probes: Vec<ResolvedProbe>,
    /// Things the user should know that are not errors (IFUNCs a glob skipped).
    pub warnings: Vec<String>,
}

/// One match of a spec in a binary, before merging.
struct Location {
    vaddr: Svma,
    symbol: String,
    size: u64,
    at_start: bool,
    name: String,
}

impl Location {
    /// The start of function `s`, named as the spec named it.
    fn function(s: &Sym, name: &str) -> Location {
        Location {
            vaddr: s.vaddr,
            symbol: s.display().to_string(),
            size: s.size,
            at_start: !is_cold_part(&s.raw),
            name: name.to_string(),
        }
    }
}

/// Resolves specs to probes. Fails on the first spec that cannot be used, naming it; nothing
/// is attached here, so a failure leaves no trace.
pub fn resolve(specs: &[ProbeSpec], opts: &ResolveOptions) -> Result<Resolution, SpecError> {
    let mut found: HashMap<String, Vec<target::Found>> = HashMap::new();
    // One Binary per real file (device and inode): two paths to one file (a hard link, a bind
    // mount, one image seen through two containers' roots) are one binary, probed once.
    let mut binaries: HashMap<FileId, Binary> = HashMap::new();
    let mut out = Resolution::default();
    let mut index: BTreeMap<(FileId, FileOffset), usize> = BTreeMap::new();
    let kernel = KernelUprobes::running();

    for spec in specs {
        let targets = match found.get(&spec.target) {
            Some(t) => t.clone(),
            None => {
                let t = find_in_roots(&spec.target, &opts.roots)?;
                found.insert(spec.target.clone(), t.clone());
                t
            }
        };
        let mut seen = Vec::new();
        for t in targets {
            let id =
                crate::real_file::identity(&t.open, &t.display, &t.mountinfo).map_err(|e| {
                    SpecError::Io {
                        path: t.open.clone(),
                        source: e,
                    }
                })?;
            if seen.contains(&id) {
                continue;
            }
            seen.push(id);
            let bin = match binaries.entry(id) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let mut b = Binary::open(&t.open)
                        .map_err(|err| target::explain_not_elf(err, &spec.target))?;
                    b.display = t.display.clone();
                    b.id = id;
                    e.insert(b)
                }
            };
            resolve_in(spec, bin, opts, &kernel, &mut out, &mut index)?;
        }
    }
    // Sites once every spec merged: the args and the kind decide what a site must preserve.
    for (&(file, _), &i) in &index {
        if let Some(bin) = binaries.get(&file) {
            place(bin, &mut out.probes[i], &kernel);
        }
    }
    // Go functions whose return cannot be probed are entry-only: one line for them all.
    let entry_only: Vec<String> = out
        .probes
        .iter()
        .filter_map(|p| match &p.go {
            Some(GoPlacement {
                returns: Err(why), ..
            }) if p.probe.kind == ProbeKind::Entry => Some(format!("{} ({why})", p.probe.name)),
            _ => None,
        })
        .collect();
    if !entry_only.is_empty() {
        out.warnings.push(format!(
            "only the entries of {} are probed (a Go function's return is probed at each of \
             its `ret`s, since a uretprobe would crash the Go runtime, and these have none \
             urec can probe): {}",
            urec_format::plural(entry_only.len() as u64, "Go function", "Go functions"),
            entry_only.join("; ")
        ));
    }
    Ok(out)
}

/// A file's identity: device and inode.
pub(crate) type FileId = (u64, u64);

/// TARGET in each root (the host when there are none); found in one is enough.
fn find_in_roots(target: &str, roots: &[PathBuf]) -> Result<Vec<target::Found>, SpecError> {
    if roots.is_empty() {
        return Ok(vec![target::find_target_in(target, None)?]);
    }
    let mut out = Vec::new();
    let mut first_err = None;
    for root in roots {
        let root = (root != std::path::Path::new("/")).then_some(root.as_path());
        match target::find_target_in(target, root) {
            Ok(f) => out.push(f),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match (out.is_empty(), first_err) {
        (true, Some(e)) => Err(e),
        _ => Ok(out),
    }
}

/// Resolves one spec in one binary.
fn resolve_in(
    spec: &ProbeSpec,
    bin: &mut Binary,
    opts: &ResolveOptions,
    kernel: &KernelUprobes,
    out: &mut Resolution,
    index: &mut BTreeMap<(FileId, FileOffset), usize>,
) -> Result<(), SpecError> {
    if let FunctionSpec::Usdt { provider, name } = &spec.function {
        crate::usdt_resolve::add(spec, bin, provider.as_deref(), name, kernel, out, index)?;
        return Ok(());
    }
    let locations = locate(spec, bin, opts, &mut out.warnings)?;
    // A glob, or a name that several local functions share, skips what cannot be probed;
    // a single named location is refused with the reason.
    let many = locations.len() > 1 || matches!(spec.function, FunctionSpec::Glob(_));
    let mut skipped: Vec<String> = Vec::new();
    let mut last_refusal = None;
    let total = locations.len();
    for loc in locations {
        let bytes = bin.bytes_at(loc.vaddr, 16);
        let handling = insn::classify(bytes, kernel);
        if let InsnHandling::Refused(why) = handling {
            let refusal = refusal_message(&loc, bytes, why);
            if !many {
                return Err(SpecError::NotProbeable {
                    spec: spec.text.clone(),
                    why: refusal,
                });
            }
            skipped.push(loc.name);
            last_refusal = Some(refusal);
            continue;
        }
        add_location(spec, bin, loc, handling, kernel, &mut out.probes, index)?;
    }
    if skipped.len() == total {
        return Err(SpecError::NotProbeable {
            spec: spec.text.clone(),
            why: match (total, last_refusal) {
                (1, Some(why)) => why,
                _ => format!(
                    "the kernel cannot probe any of the {total} functions it matches ({})",
                    urec_format::name_list(&skipped, 8)
                ),
            },
        });
    }
    if !skipped.is_empty() {
        out.warnings.push(format!(
            "{}: skipped {} the kernel cannot probe: {} (`urec list {}` marks them \
             [not-probeable] and says why)",
            spec.text,
            urec_format::plural(skipped.len() as u64, "function", "functions"),
            urec_format::name_list(&skipped, 8),
            spec.target,
        ));
    }
    Ok(())
}

/// Why the instruction at `loc` takes no probe, naming it.
fn refusal_message(loc: &Location, bytes: &[u8], why: Refusal) -> String {
    let what = if loc.at_start {
        format!("the first instruction of {}", loc.name)
    } else {
        format!("the instruction at {}", loc.name)
    };
    match insn::decode(bytes, loc.vaddr.0) {
        Some(i) => format!("{what} (`{}`) cannot be probed: {why}", i.text),
        None => format!("{what} cannot be probed: {why}"),
    }
}

/// Adds the probe at `loc`, whose instruction the kernel handles as `first_insn`.
fn add_location(
    spec: &ProbeSpec,
    bin: &Binary,
    loc: Location,
    mut first_insn: InsnHandling,
    kernel: &KernelUprobes,
    probes: &mut Vec<ResolvedProbe>,
    index: &mut BTreeMap<(FileId, FileOffset), usize>,
) -> Result<(), SpecError> {
    let not_probeable = |why: String| SpecError::NotProbeable {
        spec: spec.text.clone(),
        why,
    };
    let offset = bin.vaddr_to_offset(loc.vaddr).ok_or_else(|| {
        not_probeable(format!(
            "{:#x} is not in an executable segment of {}",
            loc.vaddr,
            bin.path.display()
        ))
    })?;
    let kind =
        match (loc.at_start && !spec.entry_only, spec.return_only) {
            (true, true) => ProbeKind::Return,
            (true, false) => ProbeKind::EntryReturn,
            (false, true) => {
                return Err(not_probeable(format!(
                "%return needs a function's first instruction, and {} is not one (inside {}, or \
                 a .cold part reached by a jump): a return probe there would overwrite whatever \
                 is at [sp] and corrupt the program",
                loc.name,
                if loc.symbol.is_empty() { "a function" } else { &loc.symbol }
            )))
            }
            (false, false) => ProbeKind::Entry,
        };
    // Go's register ABI for Go functions only: a cgo binary's C functions keep the C ABI.
    let go_code = bin.go.is_some() && bin.is_go_function(loc.vaddr);
    let mut args = Vec::new();
    let mut fetches = Vec::new();
    let operands = spec.predicate.iter().flat_map(|p| &p.operands);
    for (i, arg) in spec.args.iter().chain(operands).enumerate() {
        let in_predicate = i >= spec.args.len();
        let bad = |why: String| SpecError::BadArg {
            spec: spec.text.clone(),
            arg: arg.fetch_text.clone(),
            why,
        };
        if !loc.at_start && arg.fetch.uses_retval() {
            return Err(bad(format!(
                "$retval needs a return probe, and {} is not a function's first instruction",
                loc.name
            )));
        }
        if !loc.at_start && arg.fetch.uses_abi_arg() {
            return Err(bad(format!(
                "ABI arguments are only where the ABI puts them at a function's first \
                 instruction, and {} is inside the function; use registers (%di, %si, ...) instead",
                loc.name
            )));
        }
        if spec.return_only && arg.fetch.uses_abi_arg() {
            return Err(bad(
                "ABI arguments are gone by the time the function returns; drop %return to \
                 fetch them at entry (the return is probed too)"
                    .into(),
            ));
        }
        if in_predicate {
            continue;
        }
        let at_return = spec.return_only || arg.uses_retval();
        args.push(arg.to_format(at_return));
        fetches.push(if go_code {
            arg.fetch.go_abi().map_err(bad)?
        } else {
            arg.fetch.clone()
        });
    }
    // The predicate reads its operands by the same ABI as the args.
    let predicate = match (go_code, &spec.predicate) {
        (true, Some(p)) => {
            let mut p = p.clone();
            for op in &mut p.operands {
                op.fetch = op.fetch.go_abi().map_err(|why| SpecError::BadArg {
                    spec: spec.text.clone(),
                    arg: op.fetch_text.clone(),
                    why,
                })?;
            }
            Some(p)
        }
        (_, p) => p.clone(),
    };

    let key = (bin.id, offset);
    if let Some(&i) = index.get(&key) {
        let existing = &mut probes[i];
        if existing.predicate != predicate {
            return Err(not_probeable(format!(
                "{} is also probed by {:?} with {}: specs probing the same location must \
                 have the same predicate (or none)",
                loc.name,
                existing.probe.specs.join(" "),
                match &existing.predicate {
                    Some(p) => format!("the predicate `if {}`", p.text),
                    None => "no predicate".into(),
                }
            )));
        }
        if !existing.probe.specs.contains(&spec.text) {
            existing.probe.specs.push(spec.text.clone());
        }
        existing.probe.kind = merge_kind(existing.probe.kind, kind);
        for (a, f) in args.into_iter().zip(fetches) {
            if !existing.probe.args.contains(&a) {
                existing.probe.args.push(a);
                existing.fetches.push(f);
            }
        }
        return Ok(());
    }
    // Go code: no uretprobe ever (it crashes the runtime); the entry past the stack check.
    // The C functions of a cgo binary keep the normal placement.
    let mut kind = kind;
    let gobin = bin.go.as_ref().filter(|_| bin.is_go_function(loc.vaddr));
    let go = match (gobin, loc.at_start && loc.size > 0) {
        (Some(gobin), true) => {
            let mut sites = crate::go::sites(bin.bytes_at(loc.vaddr, loc.size as usize), loc.vaddr);
            if !gobin.goroutine_in_r14() {
                sites.rets = Err(format!(
                    "its binary was built by {}, which keeps the goroutine in thread-local \
                     storage, not in r14 (Go 1.17 and later), and urec pairs Go calls by \
                     goroutine from r14",
                    gobin.version.as_deref().unwrap_or("a Go older than 1.18")
                ));
            }
            let to_offset = |v: Svma| {
                bin.vaddr_to_offset(v).map(|o| o.0).ok_or_else(|| {
                    format!(
                        "{v:#x} is not in an executable segment of {}",
                        bin.path.display()
                    )
                })
            };
            // Each `ret` goes through the same instruction check as any probed instruction.
            let returns = sites.rets.and_then(|rets| {
                rets.into_iter()
                    .map(|r| match insn::classify(bin.bytes_at(r, 16), kernel) {
                        InsnHandling::Refused(why) => Err(format!(
                            "the kernel cannot probe its `ret` at {r:#x}: {why}"
                        )),
                        _ => to_offset(r),
                    })
                    .collect()
            });
            if let (Err(why), true) = (&returns, kind != ProbeKind::Entry) {
                if spec.return_only {
                    return Err(not_probeable(format!(
                        "{} is Go code, whose returns urec probes at each `ret` (a uretprobe \
                         would crash the runtime), and here {why}",
                        loc.name
                    )));
                }
                kind = ProbeKind::Entry;
            }
            // The entry probe goes on the site: its instruction is the one the kernel must
            // handle (the check at the start was of the function's first instruction).
            if sites.entry != loc.vaddr {
                let bytes = bin.bytes_at(sites.entry, 16);
                first_insn = insn::classify(bytes, kernel);
                if let InsnHandling::Refused(why) = first_insn {
                    let site = Location {
                        vaddr: sites.entry,
                        at_start: false,
                        name: format!("{}'s entry past Go's stack check", loc.name),
                        symbol: loc.symbol.clone(),
                        size: loc.size,
                    };
                    return Err(not_probeable(refusal_message(&site, bytes, why)));
                }
            }
            Some(GoPlacement {
                entry_offset: to_offset(sites.entry).map_err(not_probeable)?,
                returns,
            })
        }
        (Some(_), false) if kind != ProbeKind::Entry => {
            return Err(not_probeable(format!(
                "{} is Go code of unknown size, whose returns urec can only probe at each \
                 `ret` of a known function",
                loc.name
            )))
        }
        _ => None,
    };
    let bytes = bin.bytes_at(loc.vaddr, 16);
    let id = probes.len() as u32;
    index.insert(key, probes.len());
    probes.push(ResolvedProbe {
        probe: Probe {
            id,
            name: format!("{}:{}", spec.target, loc.name),
            specs: vec![spec.text.clone()],
            binary: bin.display.to_string_lossy().into_owned(),
            build_id: bin.build_id.clone(),
            symbol: loc.symbol,
            vaddr: loc.vaddr,
            offset,
            kind,
            stack_mode: StackMode::FramePointer,
            args,
            site: None,
        },
        fetches,
        size: loc.size,
        first_insn,
        starts_with_push_rbp: loc.at_start && insn::starts_with_push_rbp(bytes),
        binary_keeps_frame_pointers: bin.fp_fraction >= FRAME_POINTER_THRESHOLD,
        ref_ctr_offset: None,
        open_path: bin.path.clone(),
        predicate,
        go,
        binary_is_go: bin.go.is_some(),
        at_function_start: loc.at_start,
        site: EntrySite::at_start(loc.vaddr, first_insn, None),
        site_offset: offset,
    });
    Ok(())
}

/// Chooses where `p` is attached ([`crate::site`]).
fn place(bin: &Binary, p: &mut ResolvedProbe, kernel: &KernelUprobes) {
    let start = p.probe.vaddr;
    if let Some(g) = &p.go {
        // Go keeps its own placement (past the stack check, SPEC.md "Go programs").
        // The entry past the stack check is in the function, so in its executable segment.
        let vaddr = FileOffset(g.entry_offset)
            .to_code_svma(bin.segments())
            .unwrap_or(start);
        p.site = EntrySite::at_start(vaddr, p.first_insn, None);
        p.site_offset = FileOffset(g.entry_offset);
        return;
    }
    p.site_offset = p.probe.offset;
    if !p.at_function_start || p.first_insn != InsnHandling::SingleStepped {
        return;
    }
    if p.size == 0 {
        p.site.why_not = Some("its size is unknown, so its branches cannot be checked".into());
        return;
    }
    let mut reads = Reads::default();
    if p.probe.kind != ProbeKind::Return {
        for (a, f) in p.probe.args.iter().zip(&p.fetches) {
            if !a.at_return {
                reads.add(f);
            }
        }
        for op in p.predicate.iter().flat_map(|pr| &pr.operands) {
            reads.add(&op.fetch);
        }
    }
    let site = entry_site_of(
        bin,
        start,
        p.size,
        kernel,
        &reads,
        p.probe.kind != ProbeKind::Entry,
    );
    let Some(offset) = bin.vaddr_to_offset(site.vaddr) else {
        return;
    };
    p.starts_with_push_rbp = site.moved && bin.bytes_at(site.vaddr, 1).first() == Some(&0x55);
    p.site = site;
    p.site_offset = offset;
}

/// The entry site of the function at `start` of `size` bytes in `bin` ([`crate::site`]),
/// counting the branches of its `.cold` fragments and the symbols of the binary.
pub(crate) fn entry_site_of(
    bin: &Binary,
    start: Svma,
    size: u64,
    kernel: &KernelUprobes,
    reads: &Reads,
    return_probe: bool,
) -> EntrySite {
    let code = bin.bytes_at(start, usize::try_from(size.min(MAX_DECODED)).unwrap_or(0));
    let raws: Vec<&str> = bin
        .functions
        .iter()
        .filter(|s| s.vaddr == start)
        .map(|s| s.raw.as_str())
        .collect();
    let mut foreign = Vec::new();
    // `NAME.cold` / `NAME.cold.N` (a prefix test first: most names fail at their first byte).
    for cold in bin.functions.iter().filter(|s| {
        raws.iter().any(|r| {
            s.raw
                .strip_prefix(r)
                .is_some_and(|t| t.starts_with(".cold"))
        })
    }) {
        let size = cold.size.min(MAX_DECODED) as usize;
        foreign.extend(crate::site::branch_targets(
            bin.bytes_at(cold.vaddr, size),
            cold.vaddr.0,
        ));
    }
    // Functions are sorted by address.
    let symbol_in = |lo: u64, hi: u64| {
        let i = bin.functions.partition_point(|s| s.vaddr.0 <= lo);
        bin.functions.get(i).is_some_and(|s| s.vaddr.0 <= hi)
    };
    crate::site::entry_site(
        code,
        start,
        kernel,
        reads,
        return_probe,
        &foreign,
        &symbol_in,
    )
}

pub(crate) fn merge_kind(a: ProbeKind, b: ProbeKind) -> ProbeKind {
    if a == b {
        a
    } else {
        ProbeKind::EntryReturn
    }
}

/// Compares demangled names ignoring whitespace (`f(int, char)` vs `f(int,char)`).
fn same_name(a: &str, b: &str) -> bool {
    let mut x = a.chars().filter(|c| !c.is_whitespace());
    let mut y = b.chars().filter(|c| !c.is_whitespace());
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(p), Some(q)) if p == q => {}
            _ => return false,
        }
    }
}

/// Functions named `name` (raw, demangled or demangled without parameters), grouped by
/// address. Raw-name matches take precedence over demangled ones.
fn find_symbol<'b>(bin: &'b Binary, name: &str) -> Vec<&'b Sym> {
    // `NAME@0xVADDR`: one of several functions sharing a name (see [`named_functions`]).
    if let Some((base, vaddr)) = split_vaddr(name) {
        return find_symbol(bin, base)
            .into_iter()
            .filter(|s| s.vaddr == Svma(vaddr))
            .collect();
    }
    let raw: Vec<&Sym> = bin.functions.iter().filter(|s| s.raw == name).collect();
    if !raw.is_empty() {
        return raw;
    }
    let full: Vec<&Sym> = bin
        .functions
        .iter()
        .filter(|s| s.demangled.as_deref().is_some_and(|d| same_name(d, name)))
        .collect();
    if !full.is_empty() {
        return full;
    }
    bin.functions
        .iter()
        .filter(|s| s.short.as_deref().is_some_and(|d| same_name(d, name)))
        .collect()
}

/// `NAME@0xVADDR` split into its parts.
fn split_vaddr(name: &str) -> Option<(&str, u64)> {
    let (base, hex) = name.rsplit_once("@0x")?;
    let vaddr = u64::from_str_radix(hex, 16).ok()?;
    (!base.is_empty()).then_some((base, vaddr))
}

/// How a location named by a shared name is displayed: `NAME@0xVADDR`, a form `-e` and
/// `report --probe` accept.
fn with_vaddr(s: &Sym) -> String {
    format!("{}@{:#x}", s.display(), s.vaddr)
}

/// The functions a symbol name names, refusing IFUNCs and ambiguity: one function, or several
/// distinct local functions that share one name (`str_to_mpn.part.0.constprop.0`, compiled in
/// several objects), which are all meant. Different functions whose *demangled* names match
/// (C++ overloads) stay ambiguous: the user must say which.
fn named_functions<'b>(
    spec: &ProbeSpec,
    bin: &'b Binary,
    name: &str,
) -> Result<Vec<&'b Sym>, SpecError> {
    let found = find_symbol(bin, name);
    if found.is_empty() {
        return Err(SpecError::SymbolNotFound {
            spec: spec.text.clone(),
            symbol: name.to_string(),
            binary: bin.path.clone(),
            suggestions: suggest(bin, name),
            stripped: !bin.has_symtab,
        });
    }
    if let Some(s) = found.iter().find_map(|s| bin.ifunc_at(s.vaddr)) {
        return Err(ifunc_error(spec, bin, s, name));
    }
    let mut distinct: Vec<&Sym> = Vec::new();
    for s in &found {
        if !distinct.iter().any(|d| d.vaddr == s.vaddr) {
            distinct.push(s);
        }
    }
    if distinct.len() > 1 && !distinct.iter().all(|s| s.raw == distinct[0].raw) {
        let mut candidates: Vec<String> = found
            .iter()
            .map(|s| format!("{} at {:#x}", s.display(), s.vaddr))
            .collect();
        candidates.sort();
        candidates.dedup();
        return Err(SpecError::Ambiguous {
            spec: spec.text.clone(),
            symbol: name.to_string(),
            candidates,
        });
    }
    Ok(distinct)
}

/// Exactly one function for `name` (`SYMBOL+0xOFF` needs one start to count from).
fn one_symbol<'b>(spec: &ProbeSpec, bin: &'b Binary, name: &str) -> Result<&'b Sym, SpecError> {
    match named_functions(spec, bin, name)?.as_slice() {
        [one] => Ok(one),
        several => Err(SpecError::Ambiguous {
            spec: spec.text.clone(),
            symbol: name.to_string(),
            candidates: several.iter().map(|s| with_vaddr(s)).collect(),
        }),
    }
}

/// Locations for the functions `name` names (see [`named_functions`]).
fn named_locations(spec: &ProbeSpec, bin: &Binary, name: &str) -> Result<Vec<Location>, SpecError> {
    let syms = named_functions(spec, bin, name)?;
    if let [one] = syms.as_slice() {
        return Ok(vec![Location::function(one, name)]);
    }
    Ok(syms
        .iter()
        .map(|s| Location::function(s, &with_vaddr(s)))
        .collect())
}

/// The most bytes of one function decoded to check a boundary: 16 MiB, beyond any compiled
/// function's size, so that a corrupt symbol size cannot make urec read a whole file (decoding
/// costs O(bytes), see [`crate::control_flow`]). An offset beyond it is still checked, by
/// decoding up to it.
const MAX_DECODED: u64 = 16 << 20;

/// Checks that `vaddr` starts an instruction of the function `func` starting at `start`, of
/// `size` bytes (0 when unknown), on every path through it: a probe inside an instruction
/// would corrupt it.
fn check_boundary(
    spec: &ProbeSpec,
    bin: &Binary,
    func: &str,
    start: Svma,
    size: u64,
    vaddr: Svma,
) -> Result<(), SpecError> {
    boundary(bin, func, start, size, vaddr).map_err(|why| SpecError::NotProbeable {
        spec: spec.text.clone(),
        why,
    })
}

/// Whether `vaddr` is an instruction boundary of the function `func` at `start` of `size`
/// bytes (0 when unknown), found by following its control flow ([`ControlFlow`]); else why
/// not, naming addresses relative to `func`.
pub(crate) fn boundary(
    bin: &Binary,
    func: &str,
    start: Svma,
    size: u64,
    vaddr: Svma,
) -> Result<(), String> {
    let code = |len: u64| bin.bytes_at(start, usize::try_from(len).unwrap_or(usize::MAX));
    // The control-flow walk works in the decoder's plain `u64` instruction pointers.
    let (start, vaddr) = (start.0, vaddr.0);
    let at = |a: u64| {
        if a == start {
            func.to_string()
        } else if a > start {
            format!("{func}+{:#x}", a - start)
        } else {
            format!("{a:#x}")
        }
    };
    let Some(offset) = vaddr.checked_sub(start) else {
        return Err(format!("{} lies before {func}", at(vaddr)));
    };
    let len = size.min(MAX_DECODED).max(offset.saturating_add(16));
    let flow = ControlFlow::explore(code(len), start);
    flow.check(vaddr)
        .map_err(|why| flow.explain(&why, vaddr, func, &at))
}

fn ifunc_error(spec: &ProbeSpec, bin: &Binary, ifunc: &Sym, asked: &str) -> SpecError {
    // Name it as the user did, else by its plainest alias (`strlen`, not `__GI_strlen`).
    let name = bin
        .functions
        .iter()
        .filter(|s| s.vaddr == ifunc.vaddr && s.ifunc)
        .min_by_key(|s| (!s.names().any(|n| n == asked), alias_rank(s)))
        .unwrap_or(ifunc);
    let crate::ifunc::Implementations { names, selected } =
        crate::ifunc::implementations(bin, ifunc);
    let selected = selected.map(|sel| match sel.probe_at {
        Some(at) if at == sel.name => format!(
            "On this CPU it selects {at}: probe that one (`-e '{}:{at}'`).",
            spec.target
        ),
        Some(at) => format!(
            "On this CPU it selects {}, whose first instruction cannot be probed; \
             `-e '{}:{at}'` counts its calls (entry only, no latency).",
            sel.name, spec.target
        ),
        None => format!(
            "On this CPU it selects {}, whose first instructions cannot be probed.",
            sel.name
        ),
    });
    SpecError::Ifunc {
        spec: spec.text.clone(),
        symbol: name.display().to_string(),
        binary: bin.path.clone(),
        implementations: names.into_boxed_slice(),
        selected: selected.map(String::into_boxed_str),
        stripped: !bin.has_symtab,
    }
}

/// Up to 5 function names close to `name`: by edit distance, or containing it.
fn suggest(bin: &Binary, name: &str) -> Vec<String> {
    let mut names: Vec<&str> = bin.functions.iter().map(|s| s.display()).collect();
    names.sort_unstable();
    names.dedup();
    let limit = (name.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = names
        .into_iter()
        .filter_map(|n| {
            let d = edit_distance(name, n);
            if d <= limit {
                Some((d, n))
            } else if n.contains(name) || (name.len() >= 4 && name.contains(n) && n.len() >= 4) {
                Some((limit + 1 + n.len().abs_diff(name.len()), n))
            } else {
                None
            }
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(5)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// Levenshtein distance over chars.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// GCC's `foo.cold` / `foo.cold.3` symbols are the unlikely parts of `foo`, split off and
/// reached by a jump, never by a call: `[sp]` there is not a return address, so a return probe
/// would corrupt the program. They are entry-only and skipped by globs.
pub(crate) fn is_cold_part(raw: &str) -> bool {
    raw.ends_with(".cold") || raw.contains(".cold.")
}

/// Preference among aliases at one address, for the display name: global binding, fewer
/// leading underscores, shorter, then alphabetical (`malloc` over `__libc_malloc`).
pub(crate) fn alias_rank(s: &Sym) -> (bool, usize, usize, String) {
    let d = s.display();
    (
        !s.global,
        d.len() - d.trim_start_matches('_').len(),
        d.len(),
        d.to_string(),
    )
}

fn locate(
    spec: &ProbeSpec,
    bin: &Binary,
    opts: &ResolveOptions,
    warnings: &mut Vec<String>,
) -> Result<Vec<Location>, SpecError> {
    match &spec.function {
        FunctionSpec::Symbol(name) => named_locations(spec, bin, name),
        // `resolve` hands these to `usdt_resolve` before ever getting here.
        FunctionSpec::Usdt { .. } => Err(SpecError::NotProbeable {
            spec: spec.text.clone(),
            why: "internal: a USDT spec reached the function resolver".into(),
        }),
        FunctionSpec::Glob(pattern) => {
            // An exact name wins (`operator[]` is a name, not a class).
            if !find_symbol(bin, pattern).is_empty() {
                return named_locations(spec, bin, pattern);
            }
            let mut by_addr: BTreeMap<Svma, Vec<&Sym>> = BTreeMap::new();
            let mut skipped_ifuncs: Vec<&Sym> = Vec::new();
            for s in &bin.functions {
                if is_cold_part(&s.raw) {
                    continue;
                }
                if s.names().any(|n| glob::matches(pattern, n)) {
                    if s.ifunc {
                        skipped_ifuncs.push(s);
                    } else {
                        by_addr.entry(s.vaddr).or_default().push(s);
                    }
                }
            }
            // An address that is also an IFUNC's (an alias of the resolver) is the resolver.
            by_addr.retain(|a, _| bin.ifunc_at(*a).is_none());
            if !skipped_ifuncs.is_empty() {
                let mut names: Vec<String> = skipped_ifuncs
                    .iter()
                    .map(|s| s.display().to_string())
                    .collect();
                names.sort();
                names.dedup();
                warnings.push(format!(
                    "{}: skipped {} IFUNC symbol{} ({}): their address is the resolver, not the \
                     function; probe an implementation instead (see `urec list {} '*{}*'`)",
                    spec.text,
                    names.len(),
                    if names.len() == 1 { "" } else { "s" },
                    names.join(", "),
                    spec.target,
                    names[0],
                ));
            }
            if by_addr.is_empty() {
                return Err(SpecError::GlobNoMatch {
                    spec: spec.text.clone(),
                    pattern: pattern.clone(),
                    binary: bin.path.clone(),
                });
            }
            if by_addr.len() > GLOB_LIMIT && !opts.force {
                return Err(SpecError::TooManyMatches {
                    spec: spec.text.clone(),
                    count: by_addr.len(),
                    limit: GLOB_LIMIT,
                });
            }
            Ok(by_addr
                .into_iter()
                .filter_map(|(vaddr, mut syms)| {
                    syms.sort_by_key(|s| alias_rank(s));
                    let s = syms.first()?;
                    let size = syms.iter().map(|s| s.size).max().unwrap_or(0);
                    Some(Location {
                        vaddr,
                        symbol: s.display().to_string(),
                        size,
                        at_start: true,
                        name: s.display().to_string(),
                    })
                })
                .collect())
        }
        FunctionSpec::SymbolOffset { symbol, offset } => {
            let s = one_symbol(spec, bin, symbol)?;
            if s.size > 0 && *offset >= s.size {
                return Err(SpecError::NotProbeable {
                    spec: spec.text.clone(),
                    why: format!(
                        "offset {offset:#x} is beyond {} ({} bytes)",
                        s.display(),
                        s.size
                    ),
                });
            }
            let vaddr = s
                .vaddr
                .checked_add(*offset)
                .ok_or_else(|| SpecError::NotProbeable {
                    spec: spec.text.clone(),
                    why: "address overflows".into(),
                })?;
            check_boundary(spec, bin, s.display(), s.vaddr, s.size, vaddr)?;
            Ok(vec![Location {
                vaddr,
                symbol: s.display().to_string(),
                size: s.size,
                at_start: *offset == 0 && !is_cold_part(&s.raw),
                name: spec.function.to_string(),
            }])
        }
        FunctionSpec::Address(addr) => {
            let addr = &Svma(*addr);
            if bin.vaddr_to_offset(*addr).is_none() {
                return Err(SpecError::NotProbeable {
                    spec: spec.text.clone(),
                    why: format!(
                        "{addr:#x} is not in an executable segment of {} (the address is an ELF \
                         virtual address, as `readelf -s` shows, not a file offset)",
                        bin.path.display()
                    ),
                });
            }
            let func = bin.function_at(*addr);
            if let Some(s) = bin.ifunc_at(*addr) {
                return Err(ifunc_error(spec, bin, s, ""));
            }
            // The function's start, to decode from: its symbol, else its unwind entry (a
            // stripped binary's static functions still have one). An FDE may also cover a
            // `.cold` part entered by a jump, so only a symbol makes the address a function
            // entry where a return probe is safe.
            match func
                .map(|s| (s.display().to_string(), s.vaddr, s.size))
                .or_else(|| {
                    let (start, len) = bin.unwind_range(*addr)?;
                    Some((format!("{start:#x}"), start, len))
                }) {
                Some((name, start, size)) => check_boundary(spec, bin, &name, start, size, *addr)?,
                None if opts.force => {}
                None => {
                    return Err(SpecError::NotProbeable {
                        spec: spec.text.clone(),
                        why: format!(
                            "{addr:#x} lies in no function urec knows of (no symbol and no \
                             .eh_frame entry covers it), so it cannot check that it is an \
                             instruction boundary; pass --force if you are sure it is"
                        ),
                    })
                }
            }
            Ok(vec![Location {
                vaddr: *addr,
                symbol: func.map(|s| s.display().to_string()).unwrap_or_default(),
                size: func.map(|s| s.size).unwrap_or(0),
                at_start: func.is_some_and(|s| s.vaddr == *addr && !is_cold_part(&s.raw)),
                name: spec.function.to_string(),
            }])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("readline", "readline"), 0);
        assert_eq!(edit_distance("redline", "readline"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert!(same_name("f(int, char)", "f(int,char)"));
        assert!(!same_name("f(int)", "f(long)"));
    }
}
