//! Symbolization of file offsets (work in progress: names every frame `binary+0xOFF` for now).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use urec_format::{BuildId, FileOffset};

/// Where to look for binaries and debug files besides the recorded paths.
#[derive(Clone, Debug, Default)]
pub struct SymbolizeOptions {
    /// `--symfs DIR`: binaries recorded as `/path/to/bin` are looked up as `DIR/path/to/bin`,
    /// then `DIR/bin`.
    pub symfs: Option<PathBuf>,
    /// `--debug-dir DIR` (repeatable): searched like `/usr/lib/debug`.
    pub debug_dirs: Vec<PathBuf>,
}

/// One symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Function name, demangled, without offset (`binary+0xOFF` when unresolved).
    pub function: String,
    /// Source file, when debug info gave one.
    pub file: Option<String>,
    /// Source line, when debug info gave one.
    pub line: Option<u32>,
    /// This function was inlined into the frame before it.
    pub inlined: bool,
}

/// Symbolizes (binary, file offset) pairs, each once.
pub struct Symbolizer {
    #[allow(dead_code)]
    opts: SymbolizeOptions,
    cache: HashMap<(String, u64), Vec<Frame>>,
    warnings: Vec<String>,
}

impl Symbolizer {
    /// A symbolizer with the given search options.
    pub fn new(opts: SymbolizeOptions) -> Self {
        Self {
            opts,
            cache: HashMap::new(),
            warnings: Vec::new(),
        }
    }

    /// Frames for one code address, outermost first (the real function, then the functions
    /// inlined into it, innermost last). `return_address`: symbolize `offset - 1`.
    pub fn symbolize(
        &mut self,
        binary: &str,
        _build_id: Option<&BuildId>,
        offset: FileOffset,
        return_address: bool,
    ) -> &[Frame] {
        let off = if return_address {
            offset.0.saturating_sub(1)
        } else {
            offset.0
        };
        self.cache
            .entry((binary.to_string(), off))
            .or_insert_with(|| {
                let base = Path::new(binary)
                    .file_name()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| binary.to_string());
                vec![Frame {
                    function: format!("{base}+{:#x}", offset.0),
                    file: None,
                    line: None,
                    inlined: false,
                }]
            })
    }

    /// Warnings gathered so far (missing binaries, build-id mismatches), each once.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}
