//! Symbolization for urec: from (binary, file offset) to function names, inline chains and
//! source lines, and, when nothing names a frame, why. Used by `urec report` and `urec script`,
//! and by the step that embeds symbols in a recording. Builds without libbpf, clang or root, on
//! any workstation.
//!
//! # Why blazesym
//! blazesym takes ELF virtual offsets directly, parses DWARF lazily with inlined-function and
//! line information, falls back to `.symtab`/`.dynsym`, and caches one parsed resolver per
//! file. With addr2line + gimli + object, urec would own all of that; what blazesym leaves out
//! — finding the right files by `--symfs`, by build id and by `.gnu_debuglink`, and refusing a
//! binary whose build id is not the recorded one — is small and lives in [`locate`] and
//! [`binary`].
//!
//! # Where a frame's name comes from
//! Per frame, the first source that names it with file:line, else the first that names it at
//! all, in this order (SPEC "Portable recordings"):
//! 1. local files with the recorded build id: a file the caller handed over
//!    ([`Symbolizer::provide_file`]), the recorded path, `--symfs`, `--debug-dir`, build-id
//!    directories; a debug file alone is enough (its segments stand in for the binary's);
//! 2. the symbols embedded in the recording ([`Symbolizer::set_embedded`]);
//! 3. debuginfod, when [`SymbolizeOptions::debuginfod`] and `DEBUGINFOD_URLS` allow it
//!    ([`debuginfod`]): only for binaries whose frames 1 and 2 leave unnamed or without a line,
//!    and only once per binary; the fetched files then count as local ones (same verification,
//!    same sealed copies). Lazily, one binary at a time, unless the caller brackets its lookups
//!    with [`Symbolizer::begin_batch`] / [`Symbolizer::end_batch`], which fetches for every
//!    binary that needs it in parallel;
//!
//! else the frame is unnamed, with an [`Unnamed`] reason, shown as `binary+0xOFF` (the recorded
//! offset), so the same unknown code still aggregates as one frame.
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

mod advice;
mod binary;
mod debuginfod;
mod demangle;
mod elf;
mod embedded;
mod frame;
mod local;
mod locate;

use std::collections::HashMap;
use std::fs::File;
use std::io::IsTerminal;
use std::path::PathBuf;

use urec_format::{BuildId, FileOffset, FrameAddress};

use advice::Warnings;
use binary::{Binary, Fetch, Kind, Search};
use embedded::EmbeddedIndex;
use locate::SearchPaths;

pub use demangle::demangle;
pub use embedded::{EmbeddedBinary, EmbeddedFrame, EmbeddedSymbols};
pub use frame::{Frame, FrameName, Unnamed};

/// Where to look for binaries and debug files besides the recorded paths.
#[derive(Clone, Debug, Default)]
pub struct SymbolizeOptions {
    /// `--symfs DIR`: the recording host's root. A binary recorded as `/path/to/bin` is looked
    /// up at `DIR/path/to/bin`, then `DIR/bin`, and the system debug directories
    /// (`/usr/lib/debug`, `/lib/debug`, `~/.debug`) under DIR — never on this host.
    pub symfs: Option<PathBuf>,
    /// `--debug-dir DIR` (repeatable): searched like `/usr/lib/debug`, before it, with or
    /// without `--symfs`.
    pub debug_dirs: Vec<PathBuf>,
    /// Ask the servers of `DEBUGINFOD_URLS` as a last resort. Off for record's symbols step,
    /// which runs as root and names from this host's files only; `--no-debuginfod` elsewhere.
    pub debuginfod: bool,
}

/// The file offset that is actually looked up for a frame ([`FrameAddress::lookup`]), as the
/// raw value embedded symbols are keyed by in the data file.
#[inline]
pub fn lookup_offset(offset: FileOffset, return_address: bool) -> u64 {
    FrameAddress::new(offset, return_address).lookup().0
}

/// Where the names came from, for `report --json` (`recording.symbols`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymbolStats {
    /// Binaries (special mappings and anonymous memory aside) read from a local file.
    pub local: u64,
    /// Binaries named only by the recording's embedded symbols.
    pub embedded: u64,
    /// Binaries named by nothing: their frames show as `binary+0xOFF`.
    pub none: u64,
    /// Binaries named through files fetched from debuginfod (not counted as local).
    pub debuginfod: u64,
    /// Distinct addresses left unnamed, by [`Unnamed::key`].
    pub unnamed_frames: std::collections::BTreeMap<&'static str, u64>,
}

/// Symbolizes (binary, file offset) pairs, each once.
pub struct Symbolizer {
    paths: SearchPaths,
    blaze: blazesym::symbolize::Symbolizer,
    /// Recorded path → (recorded build id, index into `binaries`); keyed by path alone so a
    /// cached lookup needs no allocation.
    binary_ids: HashMap<Box<str>, Vec<(Option<BuildId>, usize)>>,
    binaries: Vec<Binary>,
    /// Files handed over by the caller, taken when their binary is first used.
    provided: HashMap<String, Vec<(Option<BuildId>, File)>>,
    embedded: EmbeddedIndex,
    cache: HashMap<(usize, FrameAddress), Box<[Frame]>>,
    warnings: Warnings,
    unnamed_frames: std::collections::BTreeMap<&'static str, u64>,
    debuginfod: Option<debuginfod::Client>,
    /// Between [`Symbolizer::begin_batch`] and [`Symbolizer::end_batch`].
    batch: bool,
}

impl Symbolizer {
    /// A symbolizer with the given search options.
    pub fn new(opts: SymbolizeOptions) -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let blaze = blazesym::symbolize::Symbolizer::builder()
            .enable_auto_reload(false)
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(false)
            .set_debug_dirs(Some::<&[PathBuf]>(&[]))
            .build();
        Symbolizer {
            paths: SearchPaths::new(&opts, home.as_deref()),
            blaze,
            binary_ids: HashMap::new(),
            binaries: Vec::new(),
            provided: HashMap::new(),
            embedded: EmbeddedIndex::default(),
            cache: HashMap::new(),
            warnings: Warnings::default(),
            unnamed_frames: Default::default(),
            debuginfod: opts
                .debuginfod
                .then(debuginfod::Config::from_env)
                .flatten()
                .map(debuginfod::Client::new),
            batch: false,
        }
    }

    /// Uses `file` for the binary recorded as (`recorded_path`, `build_id`) instead of
    /// searching for it: the recorder holds the exact file that was mapped (through
    /// `/proc/PID/map_files`), which may since have been deleted, replaced or be in another
    /// mount namespace. Its build id is still checked when both are known (a mismatch is
    /// warned and the file ignored), and blazesym still reads a sealed copy of it. Takes effect
    /// for frames not yet symbolized.
    pub fn provide_file(&mut self, recorded_path: &str, build_id: Option<&BuildId>, file: File) {
        self.forget(recorded_path, build_id);
        let files = self.provided.entry(recorded_path.to_string()).or_default();
        files.retain(|(id, _)| id.as_ref() != build_id);
        files.push((build_id.cloned(), file));
    }

    /// Adds the symbols embedded in a recording, the second source of names after local files
    /// (see the crate doc). Several calls add up (several recordings); where two name the same
    /// (binary, offset), the first stays. Frames already symbolized are resolved again.
    pub fn set_embedded(&mut self, symbols: EmbeddedSymbols) {
        if let Some(w) = symbols.ignored_warning() {
            self.warnings.push(w);
        }
        self.embedded.add(symbols);
        self.cache.clear();
    }

    /// [`Symbolizer::symbolize_at`] for `offset`, a caller's return address when
    /// `return_address`.
    pub fn symbolize(
        &mut self,
        binary: &str,
        build_id: Option<&BuildId>,
        offset: FileOffset,
        return_address: bool,
    ) -> &[Frame] {
        self.symbolize_at(binary, build_id, FrameAddress::new(offset, return_address))
    }

    /// Frames for one code address, outermost first (the real function, then the functions
    /// inlined into it, innermost last); a return address is named by
    /// [`FrameAddress::lookup`]. An unnamed address gives one frame whose
    /// [`Frame::display_name`] is `binary_basename+0xOFF` (the recorded offset), `[vdso]` or
    /// `[unknown]`. Cached per (binary, address).
    pub fn symbolize_at(
        &mut self,
        binary: &str,
        build_id: Option<&BuildId>,
        address: FrameAddress,
    ) -> &[Frame] {
        let bin = self.binary(binary, build_id);
        let key = (bin, address);
        if !self.cache.contains_key(&key) {
            let mut frames = self.resolve(bin, address);
            // A return address whose byte before lies in no function: only a signal handler's
            // return into the trampoline (`__restore_rt`, whose CFI starts a byte early for
            // this reason, the byte before being padding) makes one. Named by itself then.
            let unnamed = |f: &[Frame]| {
                f.iter()
                    .all(|f| matches!(f.name, FrameName::Unnamed { .. }))
            };
            if address.is_return() && unnamed(&frames) {
                let at = self.resolve(bin, FrameAddress::Ip(address.offset()));
                if !unnamed(&at) {
                    frames = at;
                }
            }
            self.cache.insert(key, frames.into_boxed_slice());
        }
        &self.cache[&key]
    }

    /// Defers debuginfod until [`Symbolizer::end_batch`]: lookups meanwhile answer from local
    /// files and embedded symbols only, and note which binaries debuginfod could help.
    pub fn begin_batch(&mut self) {
        self.batch = true;
    }

    /// Fetches, in parallel, for every binary noted since [`Symbolizer::begin_batch`], and
    /// forgets the answers given meanwhile so that the next lookups use the new files.
    pub fn end_batch(&mut self) {
        self.batch = false;
        let pending: Vec<usize> = (0..self.binaries.len())
            .filter(|&b| self.binaries[b].fetch == Fetch::Pending)
            .collect();
        if pending.is_empty() {
            return;
        }
        self.fetch_debuginfod(&pending);
        self.cache.clear();
        self.unnamed_frames.clear();
    }

    /// Warnings gathered since the last call (binaries not found, build-id mismatches,
    /// unreadable files), each at most once per report, each one line saying what would fix it.
    pub fn take_warnings(&mut self) -> Vec<String> {
        self.warnings.take()
    }

    /// Where the names of the binaries met so far came from.
    pub fn stats(&self) -> SymbolStats {
        let mut stats = SymbolStats {
            unnamed_frames: self.unnamed_frames.clone(),
            ..SymbolStats::default()
        };
        for b in &self.binaries {
            match &b.kind {
                Kind::Unnamed(Unnamed::Special | Unnamed::Anonymous) => {}
                Kind::Elf(_) if b.fetch == Fetch::Used => stats.debuginfod += 1,
                Kind::Elf(_) => stats.local += 1,
                Kind::Unnamed(_) if self.embedded.covers(&b.recorded, b.build_id.as_ref()) => {
                    stats.embedded += 1
                }
                Kind::Unnamed(_) => stats.none += 1,
            }
        }
        stats
    }

    /// The index of the binary recorded as (`recorded`, `build_id`), found on first use.
    fn binary(&mut self, recorded: &str, build_id: Option<&BuildId>) -> usize {
        if let Some(ids) = self.binary_ids.get(recorded) {
            if let Some(&(_, id)) = ids.iter().find(|(b, _)| b.as_ref() == build_id) {
                return id;
            }
        }
        let provided = self.provided.get_mut(recorded).and_then(|files| {
            let i = files.iter().position(|(id, _)| id.as_ref() == build_id)?;
            Some(files.swap_remove(i).1)
        });
        let warned_from = self.warnings.pending_len();
        let mut found = Search {
            paths: &self.paths,
            warnings: &mut self.warnings,
            embedded: self.embedded.covers(recorded, build_id),
        }
        .find(recorded, build_id, provided);
        found.warned = self.warnings.since(warned_from);
        let id = self.binaries.len();
        self.binaries.push(found);
        self.binary_ids
            .entry(recorded.into())
            .or_default()
            .push((build_id.cloned(), id));
        id
    }

    /// Makes the next use of a binary search again (its old frames stay cached under an index
    /// nothing maps to any more).
    fn forget(&mut self, recorded: &str, build_id: Option<&BuildId>) {
        if let Some(ids) = self.binary_ids.get_mut(recorded) {
            ids.retain(|(id, _)| id.as_ref() != build_id);
        }
    }

    /// The precedence of the crate doc, for one address.
    fn resolve(&mut self, bin: usize, address: FrameAddress) -> Vec<Frame> {
        let offset = address.offset();
        let lookup = address.lookup();
        let binary = &self.binaries[bin];
        let mut named: Option<Vec<Frame>> = None;
        // 1. Local files with the recorded build id.
        let reason = match &binary.kind {
            Kind::Unnamed(reason @ (Unnamed::Special | Unnamed::Anonymous)) => {
                return vec![unnamed(binary, *reason, offset)];
            }
            Kind::Unnamed(reason) => *reason,
            Kind::Elf(files) => match local::resolve(&self.blaze, files, lookup) {
                Ok(frames) if has_line(&frames) => return frames,
                Ok(frames) => {
                    named = Some(frames);
                    Unnamed::NotInAnySymbol
                }
                Err((reason, error)) => {
                    if let Some(err) = error {
                        let path = files.path.display();
                        self.warnings
                            .push(format!("cannot read symbols of {path}: {err}"));
                    }
                    reason
                }
            },
        };
        // 2. The symbols embedded in the recording.
        if let Some(frames) =
            self.embedded
                .lookup(&binary.recorded, binary.build_id.as_ref(), lookup)
        {
            let frames: Vec<Frame> = (0..)
                .zip(frames)
                .map(|(depth, f)| {
                    Frame::function(
                        f.function.to_string(),
                        f.file.as_deref().map(str::to_string),
                        f.line,
                        depth,
                    )
                })
                .collect();
            if has_line(&frames) {
                return frames;
            }
            named.get_or_insert(frames);
        }
        // 3. debuginfod: files fetched by build id, then resolved like 1.
        if self.wants_debuginfod(bin) {
            if self.batch {
                self.binaries[bin].fetch = Fetch::Pending;
            } else {
                self.fetch_debuginfod(&[bin]);
                if self.binaries[bin].fetch == Fetch::Used {
                    return self.resolve(bin, address);
                }
            }
        }
        let binary = &self.binaries[bin];
        named.unwrap_or_else(|| {
            *self.unnamed_frames.entry(reason.key()).or_default() += 1;
            vec![unnamed(binary, reason, offset)]
        })
    }
}

impl Symbolizer {
    /// Whether debuginfod may still add something for this binary.
    fn wants_debuginfod(&self, bin: usize) -> bool {
        let b = &self.binaries[bin];
        self.debuginfod.is_some()
            && b.fetch == Fetch::Untried
            && b.build_id.is_some()
            && !binary::wanted_from_debuginfod(&b.kind).is_empty()
    }

    /// Asks debuginfod for the files of these binaries, in parallel, and adds what it has.
    fn fetch_debuginfod(&mut self, bins: &[usize]) {
        let Some(client) = &self.debuginfod else {
            return;
        };
        let jobs: Vec<debuginfod::Job> = bins
            .iter()
            .map(|&b| debuginfod::Job {
                build_id: self.binaries[b]
                    .build_id
                    .as_ref()
                    .map(|id| id.0.to_vec())
                    .unwrap_or_default(),
                want: binary::wanted_from_debuginfod(&self.binaries[b].kind),
            })
            .collect();
        let progress = std::io::stderr().is_terminal();
        if progress {
            eprint!(
                "debuginfod: fetching files of {} binar{}\u{2026}",
                jobs.len(),
                if jobs.len() == 1 { "y" } else { "ies" }
            );
        }
        let found = client.fetch_all(&jobs);
        if progress {
            eprint!("\r\x1b[K");
        }
        let warnings = client.take_warnings();
        for ((&b, job), found) in bins.iter().zip(&jobs).zip(found) {
            let bin = &mut self.binaries[b];
            // Only a binary nothing local named had warnings that are now wrong.
            let was_missing = matches!(bin.kind, Kind::Unnamed(_));
            let used =
                binary::add_fetched(&mut bin.kind, &job.build_id, &found, &mut self.warnings);
            bin.fetch = if used { Fetch::Used } else { Fetch::Nothing };
            if used && was_missing {
                self.warnings.retract(&bin.warned);
            }
        }
        for w in warnings {
            self.warnings.push(w);
        }
    }
}

/// The frame names its source line (the real function's; inlined ones follow from the same
/// debug info).
fn has_line(frames: &[Frame]) -> bool {
    frames.first().is_some_and(|f| f.line.is_some())
}

fn unnamed(binary: &Binary, reason: Unnamed, offset: FileOffset) -> Frame {
    let shown_as = match reason {
        Unnamed::Special => binary.label.clone(),
        Unnamed::Anonymous => "[unknown]".to_string(),
        _ => format!("{}+{:#x}", binary.label, offset),
    };
    Frame::unnamed(reason, shown_as)
}
