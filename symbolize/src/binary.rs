//! Finding, once per recorded binary, the files that will name its frames — the binary, a
//! separate debug file, or a debug file alone — each verified against the recorded build id,
//! and warning, once, with what would fix it when nothing is found.

use std::fs::File;
use std::path::{Path, PathBuf};

use urec_format::BuildId;
use urec_untrusted::SealedCopy;

use crate::advice::{self, Warnings};
use crate::debuginfod::Artifact;
use crate::elf::ElfInfo;
use crate::locate::{self, Candidate, SearchPaths};
use crate::Unnamed;

/// What was found for one recorded binary.
pub(crate) struct Binary {
    /// The path as recorded, for the embedded symbols.
    pub recorded: String,
    pub build_id: Option<BuildId>,
    /// File name of the recorded path, for `name+0xOFF` frames; the whole name of a special
    /// mapping (`[vdso]`).
    pub label: String,
    pub kind: Kind,
    /// Whether debuginfod was asked for this binary's files, and what it gave.
    pub fetch: Fetch,
    /// The warnings its search gave, withdrawn if debuginfod names it after all.
    pub warned: Vec<String>,
}

/// debuginfod's part in one binary (see [`crate::debuginfod`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fetch {
    /// Not needed so far.
    Untried,
    /// A frame needed it; the fetch waits for the end of the batch.
    Pending,
    /// Asked; it added nothing.
    Nothing,
    /// Asked; its files now name frames.
    Used,
}

#[allow(
    clippy::large_enum_variant,
    reason = "one per binary of a recording, a few hundred at most: boxing would save nothing"
)]
pub(crate) enum Kind {
    /// No file to read: every frame is unnamed, for this reason.
    Unnamed(Unnamed),
    /// Files to read.
    Elf(Files),
}

/// The verified files of one binary.
pub(crate) struct Files {
    /// Headers whose segments turn a file offset into a virtual address: the binary's, or a
    /// lone debug file's with the layout restored.
    pub info: ElfInfo,
    /// Where the files were found, for messages.
    pub path: PathBuf,
    /// What blazesym reads: a copy of the binary as verified, if it was found.
    pub binary: Option<SealedCopy>,
    /// A verified separate debug file, copied likewise.
    pub debug: Option<SealedCopy>,
    /// Why an address no symbol covers is unnamed.
    pub no_symbol: Unnamed,
    /// Go's function table of the binary, read when a frame first needs it (see
    /// [`Files::go_table`]).
    pub go: std::sync::OnceLock<Option<crate::elf::GoTable>>,
}

impl Files {
    /// Go's function table, the one source of names in a Go binary built with
    /// `-ldflags='-s -w'` (and of lines without DWARF); None for other binaries. Read from the
    /// sealed copy, once.
    pub fn go_table(&self) -> Option<&crate::elf::GoTable> {
        self.go
            .get_or_init(|| {
                let binary = self.binary.as_ref()?;
                #[cfg(target_os = "linux")]
                let file = binary.file().try_clone().ok()?;
                #[cfg(not(target_os = "linux"))]
                let file = urec_untrusted::open(binary.path()).ok()?;
                crate::elf::read_pclntab(&file)
            })
            .as_ref()
    }
}

/// A file at a recorded place with another build id: where, and its id.
type OtherVersion = (PathBuf, Option<Vec<u8>>);

/// `cand` when it is the binary wanted (same build id, or none recorded); else `None`, and the
/// first such other version is kept for the warning.
fn accept(
    want: Option<&[u8]>,
    cand: Candidate,
    other: &mut Option<OtherVersion>,
) -> Option<Candidate> {
    match (want, cand.info.build_id.as_deref()) {
        (Some(w), got) if got != Some(w) => {
            if other.is_none() {
                *other = Some((cand.path, got.map(<[u8]>::to_vec)));
            }
            None
        }
        _ => Some(cand),
    }
}

/// Where to look, and what to tell.
pub(crate) struct Search<'a> {
    pub paths: &'a SearchPaths,
    pub warnings: &'a mut Warnings,
    /// The recording carries symbols for this binary: its absence is no loss worth a warning.
    pub embedded: bool,
}

impl Search<'_> {
    /// Finds the files of the binary recorded as (`recorded`, `build_id`), starting with
    /// `provided` (the very file that was mapped) when the caller has it.
    pub fn find(
        &mut self,
        recorded: &str,
        build_id: Option<&BuildId>,
        provided: Option<File>,
    ) -> Binary {
        // The kernel marks files deleted after mapping; look for them by their old name.
        let trimmed = recorded.strip_suffix(" (deleted)").unwrap_or(recorded);
        let label = Path::new(trimmed)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| trimmed.to_string());
        let kind = if trimmed.is_empty() || trimmed == "//anon" || trimmed.starts_with("[anon") {
            Kind::Unnamed(Unnamed::Anonymous)
        } else if trimmed.starts_with('[') {
            Kind::Unnamed(Unnamed::Special)
        } else {
            self.find_elf(Path::new(trimmed), build_id, provided)
        };
        Binary {
            recorded: recorded.to_string(),
            build_id: build_id.cloned(),
            label: if matches!(kind, Kind::Unnamed(Unnamed::Special)) {
                trimmed.to_string()
            } else {
                label
            },
            kind,
            fetch: Fetch::Untried,
            warned: Vec::new(),
        }
    }

    fn find_elf(
        &mut self,
        recorded: &Path,
        build_id: Option<&BuildId>,
        provided: Option<File>,
    ) -> Kind {
        let want = build_id.map(|b| b.0.as_slice());
        // The first file found at a recorded place with another build id, for the warning.
        let mut other_version: Option<OtherVersion> = None;
        let mut found: Option<Candidate> = None;
        if let Some(file) = provided {
            // Held open by the caller, still not trusted to be a regular file.
            let info = urec_untrusted::check_regular(&file)
                .ok()
                .and_then(|()| ElfInfo::read(&file));
            if let Some(info) = info {
                let cand = Candidate {
                    path: recorded.to_path_buf(),
                    file,
                    info,
                };
                found = accept(want, cand, &mut other_version);
            }
        }
        if found.is_none() && !locate::is_clean_absolute(recorded) {
            self.warnings.push(format!(
                "{}: not an absolute path without `..`, as the kernel records them; not \
                 opened, its frames are shown as offsets",
                recorded.display()
            ));
            return Kind::Unnamed(Unnamed::NotAFile);
        }
        // The first candidate that exists but is no regular file, for the warning.
        let mut refused: Option<(PathBuf, String)> = None;
        if found.is_none() {
            for p in locate::binary_candidates(recorded, self.paths.symfs.as_deref()) {
                let cand = match Candidate::open_or_refused(&p) {
                    Ok(cand) => cand,
                    Err(why) => {
                        refused.get_or_insert((p, why));
                        None
                    }
                };
                found = cand.and_then(|c| accept(want, c, &mut other_version));
                if found.is_some() {
                    break;
                }
            }
        }
        if found.is_none() {
            if let Some(w) = want {
                found = locate::binary_by_build_id(w, self.paths)
                    .iter()
                    .filter_map(|p| Candidate::open(p))
                    .find(|c| c.info.build_id.as_deref() == Some(w) && !c.info.loads.is_empty());
            }
        }
        let files = match found {
            Some(found) => Some(self.with_debug_file(found, recorded)),
            None => want.and_then(|w| self.debug_file_alone(w)),
        };
        match (files, &other_version, want) {
            (Some(Ok(files)), Some((path, got)), Some(w)) => {
                self.warnings.push(advice::mismatch_resolved(
                    path,
                    got.as_deref(),
                    w,
                    &files.path,
                ));
                Kind::Elf(files)
            }
            (Some(Ok(files)), _, _) => Kind::Elf(files),
            (Some(Err(reason)), _, _) => Kind::Unnamed(reason),
            (None, Some((path, got)), Some(w)) => {
                if !self.embedded {
                    self.warnings
                        .push(advice::mismatch_unresolved(path, got.as_deref(), w));
                }
                Kind::Unnamed(Unnamed::BuildIdMismatch)
            }
            (None, _, _) => {
                if let (false, Some((path, why))) = (self.embedded, &refused) {
                    self.warnings.push(advice::not_regular(path, why, want));
                } else if !self.embedded {
                    let mut searched = vec![if self.paths.symfs.is_some() {
                        "--symfs"
                    } else {
                        "its recorded path"
                    }];
                    if want.is_some() {
                        searched.push("build-id directories");
                    }
                    self.warnings
                        .push(advice::missing(recorded, want, &searched));
                }
                Kind::Unnamed(Unnamed::BinaryMissing)
            }
        }
    }

    /// The binary found, with its separate debug file if there is one.
    fn with_debug_file(&mut self, found: Candidate, recorded: &Path) -> Result<Files, Unnamed> {
        let copy = match SealedCopy::new(&found.file, &found.path) {
            Ok(copy) => copy,
            Err(e) => {
                self.warnings.push(format!(
                    "cannot read {}: {e}; its frames are shown as offsets",
                    found.path.display()
                ));
                return Err(Unnamed::Unreadable);
            }
        };
        let debug = self.find_debug_file(&found.path, recorded, &found.info);
        let no_symbol = if debug.is_some() || found.info.has_any_symbols() {
            Unnamed::NotInAnySymbol
        } else {
            Unnamed::NoSymbols
        };
        Ok(Files {
            info: found.info,
            path: found.path,
            binary: Some(copy),
            debug,
            no_symbol,
            go: Default::default(),
        })
    }

    fn find_debug_file(
        &mut self,
        binary: &Path,
        recorded: &Path,
        info: &ElfInfo,
    ) -> Option<SealedCopy> {
        if info.has_dwarf && info.debuglink.is_none() {
            return None;
        }
        let debug = locate::debug_candidates(binary, recorded, info, self.paths)
            .into_iter()
            .filter_map(|path| Candidate::open(&path))
            .find(|c| c.info.has_dwarf_or_symbols() && locate::debug_file_matches(info, c))?;
        sealed_copy(&debug.file, &debug.path, self.warnings)
    }

    /// No binary anywhere: a debug file with the recorded build id still names frames, its
    /// segments standing in for the binary's (see [`ElfInfo::with_inferred_offsets`]).
    fn debug_file_alone(&mut self, want: &[u8]) -> Option<Result<Files, Unnamed>> {
        let found = locate::debug_by_build_id(want, self.paths)
            .iter()
            .filter_map(|p| Candidate::open(p))
            .find(|c| c.info.build_id.as_deref() == Some(want) && c.info.has_dwarf_or_symbols())?;
        let info = found.info.with_inferred_offsets()?;
        let copy = sealed_copy(&found.file, &found.path, self.warnings)?;
        Some(Ok(Files {
            info,
            path: found.path,
            binary: None,
            debug: Some(copy),
            no_symbol: Unnamed::NotInAnySymbol,
            go: Default::default(),
        }))
    }
}

/// The artifacts debuginfod could add to what was found for a binary: its DWARF when nothing
/// local has any, the executable when no copy of it is here.
pub(crate) fn wanted_from_debuginfod(kind: &Kind) -> Vec<Artifact> {
    let (has_dwarf, has_binary) = match kind {
        Kind::Unnamed(Unnamed::Special | Unnamed::Anonymous) => return Vec::new(),
        Kind::Unnamed(_) => (false, false),
        Kind::Elf(files) => (
            files.debug.is_some() || files.info.has_dwarf,
            files.binary.is_some(),
        ),
    };
    let mut want = Vec::new();
    if !has_dwarf {
        want.push(Artifact::Debuginfo);
    }
    if !has_binary {
        want.push(Artifact::Executable);
    }
    want
}

/// A sealed copy of a verified file for blazesym, or a warning saying why there is none (the
/// budget of copies in memory is spent, most likely).
fn sealed_copy(file: &File, path: &Path, warnings: &mut Warnings) -> Option<SealedCopy> {
    match SealedCopy::new(file, path) {
        Ok(copy) => Some(copy),
        Err(e) => {
            warnings.push(format!("{}: not used to name frames: {e}", path.display()));
            None
        }
    }
}

/// Adds files fetched for the binary with build id `want` to what was found locally; whether
/// they name anything new. Each is opened and verified like a local candidate, and blazesym
/// gets a sealed copy of it.
pub(crate) fn add_fetched(
    kind: &mut Kind,
    want: &[u8],
    fetched: &[(Artifact, PathBuf)],
    warnings: &mut Warnings,
) -> bool {
    let open = |what: Artifact| {
        let (_, path) = fetched.iter().find(|(a, _)| *a == what)?;
        Candidate::open(path).filter(|c| c.info.build_id.as_deref() == Some(want))
    };
    let debug = open(Artifact::Debuginfo).filter(|c| c.info.has_dwarf_or_symbols());
    let debug_copy = debug
        .as_ref()
        .and_then(|c| sealed_copy(&c.file, &c.path, warnings));
    match kind {
        Kind::Elf(files) if files.debug.is_none() => {
            let Some(copy) = debug_copy else {
                return false;
            };
            files.debug = Some(copy);
            files.no_symbol = Unnamed::NotInAnySymbol;
            true
        }
        Kind::Elf(_) | Kind::Unnamed(Unnamed::Special | Unnamed::Anonymous) => false,
        Kind::Unnamed(_) => {
            let exec = open(Artifact::Executable).filter(|c| !c.info.loads.is_empty());
            let files = match exec {
                Some(exec) => {
                    let Some(copy) = sealed_copy(&exec.file, &exec.path, warnings) else {
                        return false;
                    };
                    let no_symbol = if debug_copy.is_some() || exec.info.has_any_symbols() {
                        Unnamed::NotInAnySymbol
                    } else {
                        Unnamed::NoSymbols
                    };
                    Files {
                        info: exec.info,
                        path: exec.path,
                        binary: Some(copy),
                        debug: debug_copy,
                        no_symbol,
                        go: Default::default(),
                    }
                }
                None => {
                    let (Some(debug), Some(copy)) = (debug, debug_copy) else {
                        return false;
                    };
                    let Some(info) = debug.info.with_inferred_offsets() else {
                        return false;
                    };
                    Files {
                        info,
                        path: debug.path,
                        binary: None,
                        debug: Some(copy),
                        no_symbol: Unnamed::NotInAnySymbol,
                        go: Default::default(),
                    }
                }
            };
            *kind = Kind::Elf(files);
            true
        }
    }
}
