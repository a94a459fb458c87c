//! The report's frames: every distinct frame of every stack, stored once in a [`FrameTable`]
//! with what the symbolizer knew of it (function, source file and line, inline depth, binary
//! and file offset, or why it has no name), so that each output takes what it needs from one
//! place: names for tables and folded stacks, locations for JSON, reasons for the summary.
//!
//! Stacks refer to frames by [`FrameId`]; two frames are the same frame when everything here is
//! equal, so the same function at two lines is two frames with one name. Stacks merge by
//! names (what every output shows), see [`crate::Report::stacks`].

use urec_format::BuildId;

use crate::interner::Interner;
use crate::symbolize::{FrameName, Symbolizer, Unnamed};

/// A frame's index in its [`FrameTable`].
pub type FrameId = u32;

/// One frame of a report's stacks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    /// What outputs print (an index into the table's names; see [`FrameTable::name`]).
    name: u32,
    /// Where the frame is and how it was named.
    pub kind: FrameKind,
}

/// Where a frame is, and what named it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Code of a mapped file.
    Code(Location),
    /// An address that fell in no recorded mapping: `[unknown]`.
    Unmapped,
    /// Stands for the frames an unwind could not reach: `[truncated]`.
    Truncated,
}

/// A code frame's place: the binary, the file offset in it, and the source line when debug
/// info gave one. Inlined frames share their binary and offset with the frame they are inlined
/// into.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    /// The binary's recorded path.
    pub binary: String,
    /// The file offset in it.
    pub offset: u64,
    /// Source file, when debug info gave one.
    pub file: Option<String>,
    /// Source line, when debug info gave one.
    pub line: Option<u32>,
    /// 0 for the function the code belongs to; 1, 2, … for functions inlined into it.
    pub inline_depth: u32,
    /// Why nothing named it, for a frame shown as `binary+0xOFF`.
    pub unnamed: Option<Unnamed>,
    /// The binary's recorded build id (pprof mappings carry it).
    pub build_id: Option<BuildId>,
}

/// Every distinct frame, interned.
#[derive(Clone, Debug, Default)]
pub struct FrameTable {
    frames: Interner<Frame>,
    names: Interner<String>,
}

impl FrameTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of a frame printed as `name`, interning it on first sight.
    pub fn intern(&mut self, name: &str, kind: FrameKind) -> FrameId {
        let frame = Frame {
            name: self.names.id(name),
            kind,
        };
        self.frames.id(&frame)
    }

    /// The frame behind `id`.
    ///
    /// # Panics
    /// When `id` did not come from this table.
    pub fn get(&self, id: FrameId) -> &Frame {
        &self.frames[id as usize]
    }

    /// What outputs print for frame `id`.
    pub fn name(&self, id: FrameId) -> &str {
        self.names.name(self.get(id).name)
    }

    /// A number per distinct name: frames with equal names have equal keys, so stacks can be
    /// merged by what outputs show.
    pub(crate) fn name_key(&self, id: FrameId) -> u32 {
        self.get(id).name
    }

    /// Number of distinct frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.frames.len() == 0
    }
}

/// `bash+0x1234`: the name of a frame in a binary without a usable symbol.
fn offset_name(path: &str, offset: u64) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    format!("{base}+{offset:#x}")
}

/// The frames of the code at `offset` in `path`, outermost first (a function, then those
/// inlined into it; see [`Symbolizer::symbolize`]), as (name, location) pairs: one
/// `binary+0xOFF` when there is no symbolizer (`no_symbolize`) or it finds nothing. Shared by
/// `analyze` and `script` so both name a frame alike.
pub(crate) fn code_frames(
    symbolizer: Option<&mut Symbolizer>,
    path: &str,
    build_id: Option<&BuildId>,
    address: urec_format::FrameAddress,
) -> Vec<(String, Location)> {
    let offset = address.offset().0;
    let found = symbolizer.map_or(&[][..], |s| s.symbolize_at(path, build_id, address));
    if found.is_empty() {
        return vec![(
            offset_name(path, offset),
            Location {
                binary: path.to_string(),
                offset,
                file: None,
                line: None,
                inline_depth: 0,
                unnamed: None,
                build_id: build_id.cloned(),
            },
        )];
    }
    found
        .iter()
        .map(|f| {
            let unnamed = match &f.name {
                FrameName::Function(_) => None,
                FrameName::Unnamed { reason, .. } => Some(*reason),
            };
            (
                f.display_name().to_string(),
                Location {
                    binary: path.to_string(),
                    offset,
                    file: f.file.clone(),
                    line: f.line,
                    inline_depth: f.inline_depth,
                    unnamed,
                    build_id: build_id.cloned(),
                },
            )
        })
        .collect()
}

/// The name every output gives a probe's own frame (the innermost, at the address the probe
/// fired at): the probe's symbol as the resolver named it and the table shows it (`malloc`,
/// not the `__GI___libc_malloc` alias the symbolizer may pick; C++ and Rust demangled by the
/// probe's rule, which users wrote their spec in). `None` for a raw address outside any
/// symbol and for USDT probes, whose site is inside a function: the symbolizer's frames stay.
pub(crate) fn probe_frame_name(probe: &urec_format::Probe) -> Option<&str> {
    (!probe.symbol.is_empty() && !probe.name.starts_with("usdt:")).then_some(&probe.symbol)
}

/// Whether the innermost frame, at file `offset` of a binary with `build_id`, is `probe`'s
/// own address: the function's start or the site the kernel attached to (past Go's stack
/// check, or past an instruction it cannot emulate).
pub(crate) fn is_probe_address(
    probe: &urec_format::Probe,
    build_id: Option<&BuildId>,
    offset: u64,
) -> bool {
    let at = offset == probe.offset.0 || probe.site.is_some_and(|s| s.offset.0 == offset);
    let same_binary = match (build_id, probe.build_id.as_ref()) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    at && same_binary
}

/// [`code_frames`] of the innermost frame of a stack of `probe`: at the probe's own address
/// they collapse into one frame named by [`probe_frame_name`] (the function's frame, with
/// what is inlined at that address folded into it), so that folded, flamegraph, pprof,
/// Perfetto, script and JSON name the probed function as the table does.
pub(crate) fn probed_frames(
    probe: &urec_format::Probe,
    frames: Vec<(String, Location)>,
) -> Vec<(String, Location)> {
    let Some(name) = probe_frame_name(probe) else {
        return frames;
    };
    let Some((_, first)) = frames.first() else {
        return frames;
    };
    if !is_probe_address(probe, first.build_id.as_ref(), first.offset) {
        return frames;
    }
    let Some((_, location)) = frames.into_iter().next() else {
        return Vec::new();
    };
    vec![(
        name.to_string(),
        Location {
            unnamed: None,
            ..location
        },
    )]
}
