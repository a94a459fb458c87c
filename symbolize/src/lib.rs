//! Symbolization: from (binary, file offset) to function names, inline chains and source lines.
//!
//! # Why blazesym
//! blazesym takes ELF *file offsets* or virtual offsets directly, parses DWARF lazily with
//! inlined-function and line information, falls back to `.symtab`/`.dynsym`, demangles C++ and
//! Rust (without the `::h<hash>` suffix) and caches one parsed resolver per file. With
//! addr2line + gimli + object, urec would own all of that; what blazesym leaves out — finding
//! the right files by `--symfs`, by build id and by `.gnu_debuglink`, and refusing a binary whose
//! build id is not the recorded one — is small and lives in [`locate`].
//!
//! # How one address is resolved
//! 1. The binary is found once per (recorded path, build id): under `--symfs`, at its recorded
//!    path, else by build id in `.build-id` directories. A file whose build id differs from the
//!    recorded one is never used, and a warning names both ids and the path.
//! 2. Its program headers turn the file offset into the virtual address that symbol tables and
//!    DWARF use (exactly: the `PT_LOAD` containing the offset; no assumed base).
//! 3. The DWARF to use: a separate debug file when one is found (by build id in the debug
//!    dirs, then by debuglink name, each verified), else the binary's own DWARF, else its ELF
//!    symbols. If the DWARF source does not know the address, the binary's `.symtab`/`.dynsym`
//!    are asked.
//! 4. Unresolved addresses become one frame `binary+0xOFF` (the recorded offset), so the same
//!    unknown code still aggregates as one frame.
//!
//! Every (binary, offset) is resolved once and cached; blazesym keeps each file parsed across
//! calls (auto-reload is off: stat-ing files per lookup would only cost time in a report).
//!
//! # Files a data file names
//! A recording may come from anywhere, so the paths in it are untrusted: only clean absolute
//! paths are looked up (no `..` out of `--symfs`), only regular files are opened, never with a
//! blocking open, and headers are read with `pread`. blazesym maps the files it reads, so it
//! gets a sealed in-memory copy of the very file that was verified (build id, CRC) rather than
//! its path: nobody can truncate the copy under it (`SIGBUS`) or swap the path meanwhile. The
//! search for debug files is [`locate`]'s alone; blazesym's own debug directories are empty.

mod locate;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{CodeInfo, Input, Sym, Symbolized};
use urec_format::{BuildId, FileOffset};
use urec_untrusted::SealedCopy;

use locate::{Candidate, ElfInfo};

/// The system debug directories, searched after any `--debug-dir`.
const SYSTEM_DEBUG_DIRS: [&str; 2] = ["/usr/lib/debug", "/lib/debug"];

/// Where to look for binaries and debug files besides the recorded paths.
#[derive(Clone, Debug, Default)]
pub struct SymbolizeOptions {
    /// `--symfs DIR`: a binary recorded as `/path/to/bin` is looked up at `DIR/path/to/bin`,
    /// then `DIR/bin`, before its recorded path.
    pub symfs: Option<PathBuf>,
    /// `--debug-dir DIR` (repeatable): searched like `/usr/lib/debug`, before it.
    pub debug_dirs: Vec<PathBuf>,
}

/// One symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The function, demangled, without any offset; `binary+0xOFF`, `[vdso]` or `[unknown]`
    /// when unresolved.
    pub function: String,
    /// Source file of the instruction within this function, when debug info gave one.
    pub file: Option<String>,
    /// Source line of the instruction within this function, when debug info gave one.
    pub line: Option<u32>,
    /// This function was inlined into the frame before it.
    pub inlined: bool,
}

impl Frame {
    fn named(function: String) -> Self {
        Frame {
            function,
            file: None,
            line: None,
            inlined: false,
        }
    }
}

/// Symbolizes (binary, file offset) pairs, each once.
pub struct Symbolizer {
    symfs: Option<PathBuf>,
    /// `--debug-dir`s, then the system ones.
    debug_dirs: Vec<PathBuf>,
    home: Option<PathBuf>,
    blaze: blazesym::symbolize::Symbolizer,
    /// Recorded path → (recorded build id, index into `binaries`); keyed by path alone so a
    /// cached lookup needs no allocation.
    binary_ids: HashMap<Box<str>, Vec<(Option<BuildId>, usize)>>,
    binaries: Vec<Binary>,
    cache: HashMap<(usize, u64, bool), Box<[Frame]>>,
    warnings: Vec<String>,
    warned: HashSet<String>,
}

/// What was found for one recorded binary.
struct Binary {
    /// File name of the recorded path, for `name+0xOFF` frames.
    name: String,
    kind: BinaryKind,
}

enum BinaryKind {
    /// A special mapping (`[vdso]`, anonymous memory): every address gets this one name.
    Special(&'static str),
    /// A special mapping named by the kernel (`[vdso]`, `[uprobes]`).
    Named(String),
    /// No usable file: frames are `name+0xOFF`.
    Missing,
    /// A file to read.
    Elf {
        info: ElfInfo,
        /// Where the binary was found, for messages.
        path: PathBuf,
        /// What blazesym reads: a copy of the binary as verified.
        copy: SealedCopy,
        /// A verified separate debug file, copied likewise.
        debug: Option<SealedCopy>,
    },
}

impl Symbolizer {
    /// A symbolizer with the given search options.
    pub fn new(opts: SymbolizeOptions) -> Self {
        let mut debug_dirs = opts.debug_dirs;
        debug_dirs.extend(SYSTEM_DEBUG_DIRS.iter().map(PathBuf::from));
        let blaze = blazesym::symbolize::Symbolizer::builder()
            .enable_auto_reload(false)
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(false)
            .set_debug_dirs(Some::<&[PathBuf]>(&[]))
            .build();
        Symbolizer {
            symfs: opts.symfs,
            debug_dirs,
            home: std::env::var_os("HOME").map(PathBuf::from),
            blaze,
            binary_ids: HashMap::new(),
            binaries: Vec::new(),
            cache: HashMap::new(),
            warnings: Vec::new(),
            warned: HashSet::new(),
        }
    }

    /// Frames for one code address, outermost first (the real function, then the functions
    /// inlined into it, innermost last). `return_address`: this is a caller's return address,
    /// so `offset - 1` is symbolized (a call ending a function belongs to that function).
    /// Unresolvable addresses give one frame `binary_basename+0xOFF`. Cached per
    /// (binary, offset).
    pub fn symbolize(
        &mut self,
        binary: &str,
        build_id: Option<&BuildId>,
        offset: FileOffset,
        return_address: bool,
    ) -> &[Frame] {
        let bin = self.binary(binary, build_id);
        let key = (bin, offset.0, return_address);
        if !self.cache.contains_key(&key) {
            let frames = self.resolve(bin, offset.0, return_address);
            self.cache.insert(key, frames.into_boxed_slice());
        }
        &self.cache[&key]
    }

    /// Warnings gathered since the last call (binaries not found, build-id mismatches,
    /// unreadable files), each at most once per report.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    fn warn(&mut self, msg: String) {
        if self.warned.insert(msg.clone()) {
            self.warnings.push(msg);
        }
    }

    /// The index of the binary recorded as (`recorded`, `build_id`), found on first use.
    fn binary(&mut self, recorded: &str, build_id: Option<&BuildId>) -> usize {
        if let Some(ids) = self.binary_ids.get(recorded) {
            if let Some(&(_, id)) = ids.iter().find(|(b, _)| b.as_ref() == build_id) {
                return id;
            }
        }
        let found = self.find_binary(recorded, build_id);
        let id = self.binaries.len();
        self.binaries.push(found);
        self.binary_ids
            .entry(recorded.into())
            .or_default()
            .push((build_id.cloned(), id));
        id
    }

    fn find_binary(&mut self, recorded: &str, build_id: Option<&BuildId>) -> Binary {
        // The kernel marks files deleted after mapping; look for them by their old name.
        let trimmed = recorded.strip_suffix(" (deleted)").unwrap_or(recorded);
        let name = Path::new(trimmed)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| trimmed.to_string());
        let kind = if trimmed.is_empty() || trimmed == "//anon" || trimmed.starts_with("[anon") {
            BinaryKind::Special("[unknown]")
        } else if trimmed.starts_with('[') {
            BinaryKind::Named(trimmed.to_string())
        } else {
            self.find_elf(Path::new(trimmed), build_id)
        };
        Binary { name, kind }
    }

    fn find_elf(&mut self, recorded: &Path, build_id: Option<&BuildId>) -> BinaryKind {
        if !locate::is_clean_absolute(recorded) {
            self.warn(format!(
                "{}: not an absolute path without `..`, as the kernel records them; not \
                 opened, its frames are shown as offsets",
                recorded.display()
            ));
            return BinaryKind::Missing;
        }
        let want = build_id.map(|b| b.0.as_slice());
        let mut found: Option<Candidate> = None;
        for cand in locate::binary_candidates(recorded, self.symfs.as_deref()) {
            let Some(cand) = Candidate::open(&cand) else {
                continue;
            };
            match (want, cand.info.build_id.as_deref()) {
                (Some(w), got) if got != Some(w) => {
                    let got = got.map_or_else(|| "none".to_string(), hex);
                    self.warn(format!(
                        "build id mismatch: {} has build id {got}, the recording has {}; \
                         its symbols are not used",
                        cand.path.display(),
                        hex(w)
                    ));
                }
                _ => {
                    found = Some(cand);
                    break;
                }
            }
        }
        if found.is_none() {
            if let Some(w) = want {
                for cand in locate::binary_by_build_id(
                    w,
                    self.symfs.as_deref(),
                    &self.debug_dirs,
                    self.home.as_deref(),
                ) {
                    if let Some(cand) = Candidate::open(&cand) {
                        if cand.info.build_id.as_deref() == Some(w) && !cand.info.loads.is_empty() {
                            found = Some(cand);
                            break;
                        }
                    }
                }
            }
        }
        let Some(found) = found else {
            let id = want.map_or_else(String::new, |w| format!(" with build id {}", hex(w)));
            self.warn(format!(
                "{}{id} not found (searched its recorded path{}{}); its frames are shown as \
                 offsets",
                recorded.display(),
                if self.symfs.is_some() {
                    ", --symfs"
                } else {
                    ""
                },
                if want.is_some() {
                    " and build-id directories"
                } else {
                    ""
                },
            ));
            return BinaryKind::Missing;
        };
        let copy = match SealedCopy::new(&found.file, &found.path) {
            Ok(copy) => copy,
            Err(e) => {
                self.warn(format!(
                    "cannot read {}: {e}; its frames are shown as offsets",
                    found.path.display()
                ));
                return BinaryKind::Missing;
            }
        };
        let debug = self.find_debug_file(&found.path, recorded, &found.info);
        BinaryKind::Elf {
            info: found.info,
            path: found.path,
            copy,
            debug,
        }
    }

    fn find_debug_file(
        &self,
        binary: &Path,
        recorded: &Path,
        info: &ElfInfo,
    ) -> Option<SealedCopy> {
        if info.has_dwarf && info.debuglink.is_none() {
            return None;
        }
        let debug = locate::debug_candidates(
            binary,
            recorded,
            info,
            &self.debug_dirs,
            self.home.as_deref(),
        )
        .into_iter()
        .filter_map(|path| Candidate::open(&path))
        .find(|c| c.info.has_dwarf_or_symbols() && locate::debug_file_matches(info, c))?;
        SealedCopy::new(&debug.file, &debug.path).ok()
    }

    fn resolve(&mut self, bin: usize, offset: u64, return_address: bool) -> Vec<Frame> {
        let binary = &self.binaries[bin];
        let unresolved = || vec![Frame::named(format!("{}+{offset:#x}", binary.name))];
        let (info, path, copy, debug) = match &binary.kind {
            BinaryKind::Special(name) => return vec![Frame::named((*name).to_string())],
            BinaryKind::Named(name) => return vec![Frame::named(name.clone())],
            BinaryKind::Missing => return unresolved(),
            BinaryKind::Elf {
                info,
                path,
                copy,
                debug,
            } => (info, path, copy, debug),
        };
        let lookup = if return_address {
            offset.saturating_sub(1)
        } else {
            offset
        };
        let Some(vaddr) = info.offset_to_vaddr(lookup) else {
            return unresolved();
        };
        // The richest source first: separate debug file, own DWARF, then ELF symbols.
        let mut sources = Vec::with_capacity(2);
        if let Some(debug) = debug {
            sources.push(elf_source(debug.path(), true));
        } else if info.has_dwarf {
            sources.push(elf_source(copy.path(), true));
        }
        sources.push(elf_source(copy.path(), false));
        let mut error = None;
        for src in &sources {
            match self.blaze.symbolize_single(src, Input::VirtOffset(vaddr)) {
                Ok(Symbolized::Sym(sym)) if !sym.name.is_empty() => return frames_of(sym),
                Ok(_) => {}
                Err(err) => error = Some(err),
            }
        }
        let frames = unresolved();
        if let Some(err) = error {
            let path = path.clone();
            self.warn(format!("cannot read symbols of {}: {err}", path.display()));
        }
        frames
    }
}

fn elf_source(path: &Path, debug_syms: bool) -> Source<'static> {
    let mut elf = Elf::new(path);
    elf.debug_syms = debug_syms;
    Source::Elf(elf)
}

/// The real function first, then its inline chain, innermost last; each frame carries the
/// source location of the instruction within that function (blazesym already shifts call
/// sites one level up).
fn frames_of(sym: Sym<'_>) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(1 + sym.inlined.len());
    let (file, line) = location(sym.code_info.as_deref());
    frames.push(Frame {
        function: demangle(&sym.name),
        file,
        line,
        inlined: false,
    });
    for f in sym.inlined.iter() {
        let (file, line) = location(f.code_info.as_ref());
        frames.push(Frame {
            function: demangle(&f.name),
            file,
            line,
            inlined: true,
        });
    }
    frames
}

/// Demangles C++ (`_Z…`) and Rust (legacy `_ZN…h<hash>E` and v0 `_R…`) names, Rust without
/// its hash suffix; leaves every other name alone. blazesym's own demangling is off because it
/// hands plain C names to the C++ demangler, which reads `a` as `signed char` and `b` as `bool`.
pub(crate) fn demangle(name: &str) -> String {
    if !(name.starts_with("_Z") || name.starts_with("_R") || name.starts_with("__Z")) {
        return name.to_string();
    }
    if let Ok(rust) = rustc_demangle::try_demangle(name) {
        return format!("{rust:#}");
    }
    cpp_demangle::Symbol::new(name)
        .ok()
        .and_then(|sym| sym.demangle().ok())
        .unwrap_or_else(|| name.to_string())
}

fn location(info: Option<&CodeInfo<'_>>) -> (Option<String>, Option<u32>) {
    match info {
        Some(ci) => (Some(ci.to_path().display().to_string()), ci.line),
        None => (None, None),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
