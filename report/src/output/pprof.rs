//! `--pprof`: the report as a gzip-compressed pprof `profile.proto`, for `go tool pprof`,
//! Pyroscope, Parca and Grafana (SPEC.md, "urec report").
//!
//! - Sample types `calls/count` and `latency/nanoseconds`, period type `calls/count` (as Go's
//!   block profile, which every pprof tool understands); `calls` is the default sample type.
//! - One sample per (stack, process): string labels `probe`, `comm`, `host`, numeric label `pid`.
//! - One mapping per (binary, build id), laid out one after another from [`FIRST_MAPPING`]
//!   (`file_offset` 0, the recorded path and build id); a location's address is its mapping's
//!   start plus the frame's file offset, so a backend can re-symbolize by build id.
//! - A location's lines: the function, then the functions inlined into it, innermost first as
//!   profile.proto wants (`line[0]` the innermost, the last one the caller they were inlined
//!   into). `[unknown]` and `[truncated]` are locations without a mapping.
//! - Python frames ([`crate::python`]) are locations of one mapping named `[python]`, without
//!   an address: a function named by the qualname, its filename the `.py` path, the line the
//!   line being run, so that pprof's source and list views show Python code as such.
//!
//! Field numbers are those of google/pprof's `proto/profile.proto` (cited per field below). The
//! samples are streamed into the gzip encoder as they are made; what is kept is one entry per
//! distinct string, function, location and binary.

use std::collections::HashMap;
use std::io::{self, Write};

use flate2::write::GzEncoder;

use crate::interner::Interner;
use crate::model::frames::{FrameId, FrameKind};
use crate::model::Report;
use crate::output::proto::Msg;

/// Where the first synthetic mapping starts (any page-aligned non-zero address would do: pprof
/// treats address 0 as unknown).
pub const FIRST_MAPPING: u64 = 0x1000_0000;

const PAGE: u64 = 0x1000;

// profile.proto, message Profile.
const PROFILE_SAMPLE_TYPE: u32 = 1;
const PROFILE_SAMPLE: u32 = 2;
const PROFILE_MAPPING: u32 = 3;
const PROFILE_LOCATION: u32 = 4;
const PROFILE_FUNCTION: u32 = 5;
const PROFILE_STRING_TABLE: u32 = 6;
const PROFILE_DURATION_NANOS: u32 = 10;
const PROFILE_PERIOD_TYPE: u32 = 11;
const PROFILE_PERIOD: u32 = 12;
const PROFILE_COMMENT: u32 = 13;
const PROFILE_DEFAULT_SAMPLE_TYPE: u32 = 14;
// message ValueType.
const VALUE_TYPE_TYPE: u32 = 1;
const VALUE_TYPE_UNIT: u32 = 2;
// message Sample.
const SAMPLE_LOCATION_ID: u32 = 1;
const SAMPLE_VALUE: u32 = 2;
const SAMPLE_LABEL: u32 = 3;
// message Label.
const LABEL_KEY: u32 = 1;
const LABEL_STR: u32 = 2;
const LABEL_NUM: u32 = 3;
// message Mapping.
const MAPPING_ID: u32 = 1;
const MAPPING_MEMORY_START: u32 = 2;
const MAPPING_MEMORY_LIMIT: u32 = 3;
const MAPPING_FILENAME: u32 = 5;
const MAPPING_BUILD_ID: u32 = 6;
const MAPPING_HAS_FUNCTIONS: u32 = 7;
const MAPPING_HAS_FILENAMES: u32 = 8;
const MAPPING_HAS_LINE_NUMBERS: u32 = 9;
const MAPPING_HAS_INLINE_FRAMES: u32 = 10;
// message Location.
const LOCATION_ID: u32 = 1;
const LOCATION_MAPPING_ID: u32 = 2;
const LOCATION_ADDRESS: u32 = 3;
const LOCATION_LINE: u32 = 4;
// message Line.
const LINE_FUNCTION_ID: u32 = 1;
const LINE_LINE: u32 = 2;
// message Function.
const FUNCTION_ID: u32 = 1;
const FUNCTION_NAME: u32 = 2;
const FUNCTION_SYSTEM_NAME: u32 = 3;
const FUNCTION_FILENAME: u32 = 4;

/// The string table: index 0 is "" as profile.proto requires.
struct Strings(Interner<String>);

impl Strings {
    fn new() -> Self {
        let mut s = Self(Interner::default());
        s.id("");
        s
    }

    fn id(&mut self, s: &str) -> u64 {
        u64::from(self.0.id(s))
    }
}

/// A binary's synthetic mapping.
struct Binary {
    id: u64,
    path: String,
    build_id: String,
    start: u64,
    /// Largest file offset seen (the limit is past it).
    max_offset: u64,
    has_lines: bool,
    has_inline: bool,
}

/// Writes `report` as a gzip-compressed pprof profile.
pub fn write(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let mut gz = GzEncoder::new(out, flate2::Compression::default());
    write_profile(report, &mut gz)?;
    gz.finish()?.flush()
}

fn write_profile(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let mut strings = Strings::new();
    // Binaries first: their ranges must be known before any location's address.
    let mut binaries: Vec<Binary> = Vec::new();
    let mut binary_ids: HashMap<(&str, Option<&urec_format::BuildId>), usize> = HashMap::new();
    let mut python = false;
    for s in &report.stacks {
        for &id in &s.frames {
            python |= matches!(report.frames.get(id).kind, FrameKind::Python { .. });
            if let FrameKind::Code(l) = &report.frames.get(id).kind {
                let i = *binary_ids
                    .entry((l.binary.as_str(), l.build_id.as_ref()))
                    .or_insert_with(|| {
                        binaries.push(Binary {
                            id: binaries.len() as u64 + 1,
                            path: l.binary.clone(),
                            build_id: l.build_id.as_ref().map(hex).unwrap_or_default(),
                            start: 0,
                            max_offset: 0,
                            has_lines: false,
                            has_inline: false,
                        });
                        binaries.len() - 1
                    });
                let b = &mut binaries[i];
                b.max_offset = b.max_offset.max(l.offset);
                b.has_lines |= l.line.is_some();
                b.has_inline |= l.inline_depth > 0;
            }
        }
    }
    let mut next = FIRST_MAPPING;
    for b in &mut binaries {
        b.start = next;
        let len = b.max_offset.saturating_add(PAGE) / PAGE * PAGE;
        next = next.saturating_add(len);
    }
    // The Python frames' mapping, after the binaries': (id, start).
    let python_mapping = python.then_some((binaries.len() as u64 + 1, next));

    let mut m = Msg::new();
    let mut vt = Msg::new();
    for (ty, unit) in [("calls", "count"), ("latency", "nanoseconds")] {
        vt.clear();
        vt.int(VALUE_TYPE_TYPE, strings.id(ty) as i64);
        vt.int(VALUE_TYPE_UNIT, strings.id(unit) as i64);
        m.msg(PROFILE_SAMPLE_TYPE, &vt);
    }
    vt.clear();
    vt.int(VALUE_TYPE_TYPE, strings.id("calls") as i64);
    vt.int(VALUE_TYPE_UNIT, strings.id("count") as i64);
    m.msg(PROFILE_PERIOD_TYPE, &vt);
    m.int(PROFILE_PERIOD, 1);
    m.int(PROFILE_DEFAULT_SAMPLE_TYPE, strings.id("calls") as i64);
    m.int(
        PROFILE_DURATION_NANOS,
        report.recording.duration_ns.min(i64::MAX as u64) as i64,
    );
    let comment = strings.id(&format!("urec: {}", report.recording.command));
    m.int(PROFILE_COMMENT, comment as i64);
    if let Some(c) = crate::model::coverage(report) {
        let c = strings.id(&format!("urec: {c}"));
        m.int(PROFILE_COMMENT, c as i64);
    }
    out.write_all(m.bytes())?;

    // Locations: one per group of frames at one code address (a function and what is inlined
    // into it), keyed by those frames.
    let mut locations: HashMap<Vec<FrameId>, u64> = HashMap::new();
    let mut location_msgs = Msg::new();
    let mut functions: HashMap<(u64, u64), u64> = HashMap::new();
    let mut function_msgs = Msg::new();
    let keys = [
        strings.id("probe"),
        strings.id("comm"),
        strings.id("host"),
        strings.id("pid"),
    ];
    let mut sample = Msg::new();
    let mut label = Msg::new();
    let mut loc = Msg::new();
    let mut line = Msg::new();
    let mut ids: Vec<u64> = Vec::new();
    for s in &report.stacks {
        ids.clear();
        let mut group: Vec<FrameId> = Vec::new();
        let mut flush = |group: &mut Vec<FrameId>, ids: &mut Vec<u64>, strings: &mut Strings| {
            if group.is_empty() {
                return;
            }
            let next_id = locations.len() as u64 + 1;
            let id = *locations.entry(group.clone()).or_insert(next_id);
            if id == next_id {
                loc.clear();
                loc.uint(LOCATION_ID, id);
                match &report.frames.get(group[0]).kind {
                    FrameKind::Code(l) => {
                        let key = (l.binary.as_str(), l.build_id.as_ref());
                        if let Some(&bi) = binary_ids.get(&key) {
                            let b = &binaries[bi];
                            loc.uint(LOCATION_MAPPING_ID, b.id);
                            loc.uint(LOCATION_ADDRESS, b.start.saturating_add(l.offset));
                        }
                    }
                    FrameKind::Python { .. } => {
                        if let Some((mapping, _)) = python_mapping {
                            loc.uint(LOCATION_MAPPING_ID, mapping);
                        }
                    }
                    _ => {}
                }
                // Innermost first (profile.proto, Location.line).
                for &fid in group.iter().rev() {
                    let frame = report.frames.get(fid);
                    let (name, file, line_no) = match &frame.kind {
                        FrameKind::Code(l) => (
                            strings.id(report.frames.name(fid)),
                            l.file.as_deref().map_or(0, |f| strings.id(f)),
                            l.line.unwrap_or(0),
                        ),
                        FrameKind::Python {
                            qualname,
                            file,
                            line,
                        } => (strings.id(qualname), strings.id(file), *line),
                        _ => (strings.id(report.frames.name(fid)), 0, 0),
                    };
                    let next_fn = functions.len() as u64 + 1;
                    let fn_id = *functions.entry((name, file)).or_insert(next_fn);
                    if fn_id == next_fn {
                        let mut f = Msg::new();
                        f.uint(FUNCTION_ID, fn_id);
                        f.int(FUNCTION_NAME, name as i64);
                        // No mangled name is kept: the system name is the name shown.
                        f.int(FUNCTION_SYSTEM_NAME, name as i64);
                        f.int(FUNCTION_FILENAME, file as i64);
                        function_msgs.msg(PROFILE_FUNCTION, &f);
                    }
                    line.clear();
                    line.uint(LINE_FUNCTION_ID, fn_id);
                    line.int(LINE_LINE, i64::from(line_no));
                    loc.msg(LOCATION_LINE, &line);
                }
                location_msgs.msg(PROFILE_LOCATION, &loc);
            }
            ids.push(id);
            group.clear();
        };
        for &fid in &s.frames {
            let starts_new = match &report.frames.get(fid).kind {
                FrameKind::Code(l) => {
                    l.inline_depth == 0
                        || group
                            .last()
                            .is_none_or(|&prev| match &report.frames.get(prev).kind {
                                FrameKind::Code(p) => p.binary != l.binary || p.offset != l.offset,
                                _ => true,
                            })
                }
                _ => true,
            };
            if starts_new {
                flush(&mut group, &mut ids, &mut strings);
            }
            group.push(fid);
        }
        flush(&mut group, &mut ids, &mut strings);
        // The leaf first (profile.proto, Sample.location_id).
        ids.reverse();
        let probe = strings.id(&s.probe);
        let comm = strings.id(&s.comm);
        for p in &s.processes {
            let host = report
                .inputs
                .get(p.input as usize)
                .map_or(0, |i| strings.id(&i.host));
            sample.clear();
            sample.packed(SAMPLE_LOCATION_ID, ids.iter().copied());
            sample.packed(
                SAMPLE_VALUE,
                [p.calls, p.total_ns].map(|v| v.min(i64::MAX as u64)),
            );
            for (key, value) in [(keys[0], probe), (keys[1], comm), (keys[2], host)] {
                label.clear();
                label.int(LABEL_KEY, key as i64);
                label.int(LABEL_STR, value as i64);
                sample.msg(SAMPLE_LABEL, &label);
            }
            label.clear();
            label.int(LABEL_KEY, keys[3] as i64);
            label.int(LABEL_NUM, i64::from(p.pid));
            sample.msg(SAMPLE_LABEL, &label);
            m.clear();
            m.msg(PROFILE_SAMPLE, &sample);
            out.write_all(m.bytes())?;
        }
    }
    out.write_all(location_msgs.bytes())?;
    out.write_all(function_msgs.bytes())?;
    for b in &binaries {
        let mut mm = Msg::new();
        mm.uint(MAPPING_ID, b.id);
        mm.uint(MAPPING_MEMORY_START, b.start);
        mm.uint(
            MAPPING_MEMORY_LIMIT,
            b.start
                .saturating_add(b.max_offset.saturating_add(PAGE) / PAGE * PAGE),
        );
        mm.int(MAPPING_FILENAME, strings.id(&b.path) as i64);
        mm.int(MAPPING_BUILD_ID, strings.id(&b.build_id) as i64);
        mm.bool(MAPPING_HAS_FUNCTIONS, true);
        mm.bool(MAPPING_HAS_FILENAMES, b.has_lines);
        mm.bool(MAPPING_HAS_LINE_NUMBERS, b.has_lines);
        mm.bool(MAPPING_HAS_INLINE_FRAMES, b.has_inline);
        m.clear();
        m.msg(PROFILE_MAPPING, &mm);
        out.write_all(m.bytes())?;
    }
    if let Some((id, start)) = python_mapping {
        let mut mm = Msg::new();
        mm.uint(MAPPING_ID, id);
        mm.uint(MAPPING_MEMORY_START, start);
        mm.uint(MAPPING_MEMORY_LIMIT, start.saturating_add(PAGE));
        mm.int(MAPPING_FILENAME, strings.id("[python]") as i64);
        mm.bool(MAPPING_HAS_FUNCTIONS, true);
        mm.bool(MAPPING_HAS_FILENAMES, true);
        mm.bool(MAPPING_HAS_LINE_NUMBERS, true);
        m.clear();
        m.msg(PROFILE_MAPPING, &mm);
        out.write_all(m.bytes())?;
    }
    m.clear();
    for s in strings.0.values() {
        m.str(PROFILE_STRING_TABLE, s);
    }
    out.write_all(m.bytes())
}

fn hex(b: &urec_format::BuildId) -> String {
    b.to_string()
}
