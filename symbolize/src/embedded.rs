//! Symbols that travel inside a recording: what the recording host could name, resolved there
//! against the exact files that were mapped. They let a workstation without the binaries report
//! what the host saw; local files with the recorded build id still win when they say more.

use std::collections::HashMap;
use std::sync::Arc;

use urec_format::{BuildId, FileOffset};

/// Symbols embedded in a recording, in the shape the symbolizer asks them: plain data, filled
/// by whoever reads the data file's symbols section.
///
/// A crafted section may name far more addresses than the recording could ever look up (the
/// same entry repeated, or millions of made-up offsets that compress to nothing): what is kept
/// is held to what the recording's own stacks and probes can use. Each address the reader
/// meets in a stack or a probe [allows](EmbeddedSymbols::allow_for) one named address (and 16
/// functions for it on average); entries past that are ignored and counted, so memory follows
/// what the file really holds.
#[derive(Clone, Debug, Default)]
pub struct EmbeddedSymbols {
    /// One entry per binary.
    pub binaries: Vec<EmbeddedBinary>,
    index: HashMap<(String, Option<BuildId>), usize>,
    allowed: u64,
    kept: u64,
    frames: u64,
    ignored: u64,
}

/// Named addresses kept whatever the stacks hold: a recording of entry-only probes has no
/// stacks, and these few cost at most a few megabytes.
const FLOOR_ADDRESSES: u64 = 1024;

/// Functions per kept address on average (inline chains are a few deep; heavily templated
/// C++ reaches a dozen), beyond the floor's.
const FRAMES_PER_ADDRESS: u64 = 16;

impl EmbeddedSymbols {
    /// Symbols given whole (tests, or another source than a data file): nothing is held back.
    pub fn from_binaries(binaries: Vec<EmbeddedBinary>) -> Self {
        EmbeddedSymbols {
            binaries,
            allowed: u64::MAX,
            ..Default::default()
        }
    }

    /// Allows as many more named addresses as `record` holds: the frames of a stack record,
    /// one for a probe; shown every record as the reader meets it (before the symbols section,
    /// which comes last).
    pub fn allow_for(&mut self, record: &urec_format::Record) {
        let addresses = match record {
            urec_format::Record::Stack(s) => s.frames.len() as u64,
            urec_format::Record::Probe(_) => 1,
            _ => 0,
        };
        self.allowed = self.allowed.saturating_add(addresses);
    }

    /// Adds one record of a data file's symbols section (a binary may come in several),
    /// within what [`EmbeddedSymbols::allow`] allowed.
    pub fn push(&mut self, record: urec_format::BinarySymbols) {
        let allowed = self.allowed.saturating_add(FLOOR_ADDRESSES);
        let frames_allowed = allowed.saturating_mul(FRAMES_PER_ADDRESS);
        let mut list = None;
        for e in record.entries {
            let k = e.frames.len() as u64;
            if self.kept >= allowed || self.frames.saturating_add(k) > frames_allowed {
                self.ignored += 1;
                continue;
            }
            let i = match list {
                Some(i) => i,
                None => {
                    let key = (record.path.clone(), record.build_id.clone());
                    let i = *self.index.entry(key).or_insert_with(|| {
                        self.binaries.push(EmbeddedBinary {
                            path: record.path.clone(),
                            build_id: record.build_id.clone(),
                            frames: HashMap::new(),
                        });
                        self.binaries.len() - 1
                    });
                    list = Some(i);
                    i
                }
            };
            let frames = &mut self.binaries[i].frames;
            if let std::collections::hash_map::Entry::Vacant(slot) = frames.entry(e.offset) {
                slot.insert(
                    e.frames
                        .into_iter()
                        .map(|f| EmbeddedFrame {
                            function: f.function,
                            file: f.file,
                            line: f.line,
                        })
                        .collect(),
                );
                self.kept += 1;
                self.frames += k;
            }
        }
    }

    /// What was ignored, as a warning: `None` when every entry fit.
    pub fn ignored_warning(&self) -> Option<String> {
        (self.ignored > 0).then(|| {
            format!(
                "the symbols section names more addresses than the recording's stacks and \
                 probes can use: {} ignored after {} kept",
                self.ignored, self.kept
            )
        })
    }

    /// Whether no binary is named.
    pub fn is_empty(&self) -> bool {
        self.binaries.is_empty()
    }
}

/// The named offsets of one binary.
#[derive(Clone, Debug, Default)]
pub struct EmbeddedBinary {
    /// The path as the recording names the binary (the mapping's path).
    pub path: String,
    /// The recorded build id, if any.
    pub build_id: Option<BuildId>,
    /// Lookup offset (see [`crate::lookup_offset`]: `offset - 1` for return addresses) → its
    /// frames, outermost first (the function, then those inlined into it). An empty list is
    /// the same as no entry.
    pub frames: HashMap<u64, Vec<EmbeddedFrame>>,
}

/// One embedded frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmbeddedFrame {
    /// The function, demangled (shared with every other frame of that name).
    pub function: Arc<str>,
    /// Source file, when the host's debug info gave one.
    pub file: Option<Arc<str>>,
    /// Source line, when the host's debug info gave one.
    pub line: Option<u32>,
}

/// Lookup offset → frames, of one binary.
type Offsets = HashMap<u64, Vec<EmbeddedFrame>>;

/// The embedded symbols indexed by path then build id, so a lookup needs no allocation.
#[derive(Default)]
pub(crate) struct EmbeddedIndex {
    by_path: HashMap<String, Vec<(Option<BuildId>, Offsets)>>,
}

impl EmbeddedIndex {
    /// Adds `symbols`; where two sources name the same (binary, offset), the first stays.
    pub fn add(&mut self, symbols: EmbeddedSymbols) {
        for bin in symbols.binaries {
            let ids = self.by_path.entry(bin.path).or_default();
            match ids.iter_mut().find(|(id, _)| *id == bin.build_id) {
                Some((_, frames)) => {
                    for (offset, f) in bin.frames {
                        frames.entry(offset).or_insert(f);
                    }
                }
                None => ids.push((bin.build_id, bin.frames)),
            }
        }
    }

    /// Whether anything is known of this binary (so that its absence here is worth no warning).
    pub fn covers(&self, path: &str, build_id: Option<&BuildId>) -> bool {
        self.binary(path, build_id).is_some()
    }

    /// The frames stored for one lookup offset.
    pub fn lookup(
        &self,
        path: &str,
        build_id: Option<&BuildId>,
        offset: FileOffset,
    ) -> Option<&[EmbeddedFrame]> {
        // Keyed as the symbols section encodes its offsets.
        self.binary(path, build_id)?
            .get(&offset.0)
            .map(Vec::as_slice)
            .filter(|f| !f.is_empty())
    }

    fn binary(&self, path: &str, build_id: Option<&BuildId>) -> Option<&Offsets> {
        self.by_path
            .get(path)?
            .iter()
            .find(|(id, _)| id.as_ref() == build_id)
            .map(|(_, f)| f)
    }
}
