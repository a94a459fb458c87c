//! What the symbolizer hands back: frames that say what they are named, where, at which inline
//! depth, and, when nothing names them, why — so a caller can tell "install a debug package"
//! from "this is JIT code" without parsing the text it prints.

/// One symbolized frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The function, or why none is known.
    pub name: FrameName,
    /// Source file of the instruction within this function, when debug info gave one.
    pub file: Option<String>,
    /// Source line of the instruction within this function, when debug info gave one.
    pub line: Option<u32>,
    /// 0 for the function the code belongs to; 1, 2, … for functions inlined into the frame
    /// before it (innermost last), as one address yields a whole inline chain.
    pub inline_depth: u32,
}

/// A frame's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameName {
    /// The function, demangled, without any offset.
    Function(String),
    /// Nothing named the frame.
    Unnamed {
        /// Why.
        reason: Unnamed,
        /// What outputs print instead: `binary+0xOFF` (the recorded offset, so the same
        /// unknown code still aggregates as one frame), `[vdso]`, `[unknown]`.
        shown_as: String,
    },
}

/// Why a frame has no name. Each names a different remedy, which is why they are told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unnamed {
    /// A special mapping of the kernel's (`[vdso]`, `[uprobes]`): no file to read.
    Special,
    /// Anonymous memory (JIT code, `[anon:…]`, a mapping without a name).
    Anonymous,
    /// The recorded path is not one the kernel writes (relative, or with `..`): not opened.
    NotAFile,
    /// No file with the recorded build id was found, nor a debug file for it.
    BinaryMissing,
    /// The file at the recorded path is another version (other build id), and the right one
    /// was not found.
    BuildIdMismatch,
    /// The file was found but could not be read.
    Unreadable,
    /// The file has no symbol table and no DWARF, and no debug file was found.
    NoSymbols,
    /// The file has symbols, but none covers the address (or the offset is outside the
    /// segments it loads).
    NotInAnySymbol,
}

impl Unnamed {
    /// The reason's name in `report --json` (`recording.symbols.unnamed_frames`).
    pub fn key(self) -> &'static str {
        match self {
            Unnamed::Special | Unnamed::Anonymous => "special",
            Unnamed::NotAFile | Unnamed::BinaryMissing => "missing_file",
            Unnamed::BuildIdMismatch => "build_id_mismatch",
            Unnamed::Unreadable | Unnamed::NoSymbols => "no_symbols",
            Unnamed::NotInAnySymbol => "outside_symbols",
        }
    }
}

impl Frame {
    pub(crate) fn function(
        name: String,
        file: Option<String>,
        line: Option<u32>,
        depth: u32,
    ) -> Self {
        Frame {
            name: FrameName::Function(name),
            file,
            line,
            inline_depth: depth,
        }
    }

    pub(crate) fn unnamed(reason: Unnamed, shown_as: String) -> Self {
        Frame {
            name: FrameName::Unnamed { reason, shown_as },
            file: None,
            line: None,
            inline_depth: 0,
        }
    }

    /// The function's name, if one is known.
    pub fn function_name(&self) -> Option<&str> {
        match &self.name {
            FrameName::Function(f) => Some(f),
            FrameName::Unnamed { .. } => None,
        }
    }

    /// Why the frame is unnamed, if it is.
    pub fn unnamed_reason(&self) -> Option<Unnamed> {
        match &self.name {
            FrameName::Function(_) => None,
            FrameName::Unnamed { reason, .. } => Some(*reason),
        }
    }

    /// The name every output prints: the function, or `binary+0xOFF`, `[vdso]`, `[unknown]`.
    pub fn display_name(&self) -> &str {
        match &self.name {
            FrameName::Function(f) => f,
            FrameName::Unnamed { shown_as, .. } => shown_as,
        }
    }

    /// Inlined into the frame before it.
    pub fn is_inlined(&self) -> bool {
        self.inline_depth > 0
    }
}
