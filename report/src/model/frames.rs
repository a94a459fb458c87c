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
    /// Python code, in place of the native eval frame that ran it ([`crate::python`]).
    Python {
        /// `co_qualname`.
        qualname: std::sync::Arc<str>,
        /// `co_filename`, in full.
        file: std::sync::Arc<str>,
        /// The line being run, 0 when unknown.
        line: u32,
    },
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

/// [`probe_frame_name`] when the frame at `depth` of a stack of `probe`, at file `offset` of a
/// binary with `build_id`, is the probe's own: the innermost, at the function's start or the
/// site the kernel attached to (past Go's stack check, or past an instruction it cannot
/// emulate). A return probe's stack taken elsewhere keeps the symbolizer's names.
pub(crate) fn probed_name<'p>(
    probe: &'p urec_format::Probe,
    depth: usize,
    build_id: Option<&BuildId>,
    offset: u64,
) -> Option<&'p str> {
    let at = offset == probe.offset.0 || probe.site.is_some_and(|s| s.offset.0 == offset);
    let same_binary = match (build_id, probe.build_id.as_ref()) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    };
    if depth != 0 || !at || !same_binary {
        return None;
    }
    probe_frame_name(probe)
}

/// The probe's own frame at `location` (the function's, which what is inlined at the probe
/// address folds into), named `name` by [`probed_name`].
pub(crate) fn probed_location(location: Location) -> Location {
    Location {
        unnamed: None,
        inline_depth: 0,
        ..location
    }
}

/// [`code_frames`] of frame `depth` of a stack of `probe`: at the probe's own address they
/// collapse into one frame named by [`probed_name`], so that folded, flamegraph, pprof,
/// Perfetto, script and JSON name the probed function as the table does.
pub(crate) fn probed_frames(
    probe: &urec_format::Probe,
    depth: usize,
    frames: Vec<(String, Location)>,
) -> Vec<(String, Location)> {
    let name = frames
        .first()
        .and_then(|(_, l)| probed_name(probe, depth, l.build_id.as_ref(), l.offset));
    let Some(name) = name else {
        return frames;
    };
    frames
        .into_iter()
        .next()
        .map(|(_, location)| (name.to_string(), probed_location(location)))
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use urec_format::{FileOffset, Probe, ProbeKind, ProbeSite, SitePath, StackMode, Svma};

    fn probe(name: &str, symbol: &str) -> Probe {
        Probe {
            id: 0,
            name: name.into(),
            specs: vec![name.into()],
            binary: "/lib/libc.so.6".into(),
            build_id: Some(BuildId(vec![1, 2])),
            symbol: symbol.into(),
            vaddr: Svma(0x1000),
            offset: FileOffset(0x1000),
            kind: ProbeKind::EntryReturn,
            stack_mode: StackMode::FramePointer,
            args: Vec::new(),
            site: Some(ProbeSite {
                offset: FileOffset(0x1006),
                path: SitePath::Emulated,
                cost_ns: None,
            }),
        }
    }

    fn at(name: &str, offset: u64, inline_depth: u32, build_id: u8) -> (String, Location) {
        let location = Location {
            binary: "/lib/libc.so.6".into(),
            offset,
            file: Some("malloc.c".into()),
            line: Some(3),
            inline_depth,
            unnamed: None,
            build_id: Some(BuildId(vec![1, build_id])),
        };
        (name.into(), location)
    }

    fn names(frames: &[(String, Location)]) -> Vec<&str> {
        frames.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn the_probed_frame_is_named_by_its_probe_with_inlined_frames_folded_in() {
        let p = probe("libc:malloc", "malloc");
        let found = vec![
            at("__GI___libc_malloc", 0x1000, 0, 2),
            at("inlined", 0x1000, 1, 2),
        ];
        let got = probed_frames(&p, 0, found.clone());
        assert_eq!(names(&got), ["malloc"]);
        assert_eq!(got[0].1.inline_depth, 0);
        // At the site the kernel attached to, too.
        let site = vec![at("__GI___libc_malloc", 0x1006, 0, 2)];
        assert_eq!(names(&probed_frames(&p, 0, site)), ["malloc"]);
        // Not a caller's frame, not another address, not another binary.
        assert_eq!(names(&probed_frames(&p, 1, found.clone())).len(), 2);
        let elsewhere = vec![at("__GI___libc_malloc", 0x1010, 0, 2)];
        assert_eq!(
            names(&probed_frames(&p, 0, elsewhere)),
            ["__GI___libc_malloc"]
        );
        let other = vec![at("__GI___libc_malloc", 0x1000, 0, 9)];
        assert_eq!(names(&probed_frames(&p, 0, other)), ["__GI___libc_malloc"]);
    }

    #[test]
    fn usdt_and_raw_address_probes_keep_the_symbolizers_frames() {
        let found = vec![at("f", 0x1000, 0, 2), at("g", 0x1000, 1, 2)];
        let usdt = probe("usdt:demo:tick", "f");
        assert_eq!(names(&probed_frames(&usdt, 0, found.clone())), ["f", "g"]);
        let raw = probe("bin:0x1000", "");
        assert_eq!(names(&probed_frames(&raw, 0, found)), ["f", "g"]);
    }
}
