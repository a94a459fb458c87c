//! Symbols that travel inside a recording: what the recording host could name, resolved there
//! against the exact files that were mapped. They let a workstation without the binaries report
//! what the host saw; local files with the recorded build id still win when they say more.

use std::collections::HashMap;

use urec_format::BuildId;

/// Symbols embedded in a recording, in the shape the symbolizer asks them: plain data, filled
/// by whoever reads the data file's symbols section.
#[derive(Clone, Debug, Default)]
pub struct EmbeddedSymbols {
    /// One entry per binary.
    pub binaries: Vec<EmbeddedBinary>,
}

impl EmbeddedSymbols {
    /// Adds one record of a data file's symbols section (a binary may come in several).
    pub fn push(&mut self, record: urec_format::BinarySymbols) {
        let index = match self
            .binaries
            .iter()
            .position(|b| b.path == record.path && b.build_id == record.build_id)
        {
            Some(i) => i,
            None => {
                self.binaries.push(EmbeddedBinary {
                    path: record.path,
                    build_id: record.build_id,
                    frames: HashMap::new(),
                });
                self.binaries.len() - 1
            }
        };
        let frames = &mut self.binaries[index].frames;
        for e in record.entries {
            let list = e
                .frames
                .into_iter()
                .map(|f| EmbeddedFrame {
                    function: f.function,
                    file: f.file,
                    line: f.line,
                })
                .collect();
            frames.entry(e.offset).or_insert(list);
        }
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
    /// The function, demangled.
    pub function: String,
    /// Source file, when the host's debug info gave one.
    pub file: Option<String>,
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
        offset: u64,
    ) -> Option<&[EmbeddedFrame]> {
        self.binary(path, build_id)?
            .get(&offset)
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
