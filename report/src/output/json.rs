//! `--json`: the machine-readable summary, schema version 1 (SPEC.md, "`--json` schema").
//!
//! The schema fixes field names, their order, integer types and nulls, so it is written from
//! dedicated structs whose field order *is* the schema (serde keeps declaration order), not
//! from maps. Consumers ignore fields they do not know; adding one does not change `schema`.

use std::io::{self, Write};

use serde::Serialize;

use crate::model::breakdown::GroupValue;
use crate::model::frames::{Frame, FrameKind};
use crate::model::Report;

/// The schema version this module writes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Doc<'a> {
    schema: u32,
    recording: RecordingJson<'a>,
    functions: Vec<FunctionJson<'a>>,
    stacks: Vec<StackJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groups: Option<Vec<GroupJson<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    histograms: Option<Vec<HistogramJson<'a>>>,

    /// With `--diff`.
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<Vec<DiffJson<'a>>>,
}

#[derive(Serialize)]
struct DiffJson<'a> {
    probe: &'a str,
    base: DiffSideJson,
    new: DiffSideJson,
}

#[derive(Serialize)]
struct DiffSideJson {
    calls: u64,
    latency_ns: Option<crate::LatencyStats>,
}

#[derive(Serialize)]
struct GroupJson<'a> {
    probe: &'a str,
    key: std::collections::BTreeMap<&'a str, GroupValueJson<'a>>,
    calls: u64,
    latency_ns: Option<crate::LatencyStats>,
}

/// A key's value: a number for u/s types, pid and tid; `"0x..."` for x types; a string for
/// strings, comm and caller; null for a faulted read; `"[other]"` for the rest.
#[derive(Serialize)]
#[serde(untagged)]
enum GroupValueJson<'a> {
    Number(i128),
    Text(std::borrow::Cow<'a, str>),
    Null(()),
}

#[derive(Serialize)]
struct HistogramJson<'a> {
    probe: &'a str,
    arg: &'a str,
    buckets: Vec<BucketJson>,
}

#[derive(Serialize)]
struct BucketJson {
    low: i128,
    high: i128,
    count: u64,
}

fn diff_side(side: &Option<crate::model::Side>) -> DiffSideJson {
    match side {
        Some(s) => DiffSideJson {
            calls: s.calls,
            latency_ns: s.latency,
        },
        None => DiffSideJson {
            calls: 0,
            latency_ns: None,
        },
    }
}

#[derive(Serialize)]
struct InputJson<'a> {
    file: &'a str,
    host: &'a str,
    command: &'a str,
    duration_ns: u64,
    events: u64,
    lost: u64,
}

#[derive(Serialize)]
struct RecordingJson<'a> {
    command: &'a str,
    workload: Option<&'a [String]>,
    duration_ns: u64,
    events: u64,
    lost: u64,
    lost_by_source: LostJson,
    truncated: bool,
    corrupt_chunks: u64,
    host: &'a str,
    symbols: SymbolsJson<'a>,
    processes: Vec<RecordedProcessJson<'a>>,
    /// The largest of `functions[].probe_cost_ns`: what a latency includes of the probe's own
    /// cost at most (null when the recorder measured none).
    probe_cost_ns: Option<u64>,
    /// With several inputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs: Option<Vec<InputJson<'a>>>,
    /// Only when the recording holds stacks with Python frames.
    #[serde(skip_serializing_if = "Option::is_none")]
    python: Option<PythonJson>,
}

#[derive(Serialize)]
struct RecordedProcessJson<'a> {
    pid: u32,
    ppid: u32,
    comm: &'a str,
    host: &'a str,
    mnt_ns: Option<u64>,
    pid_ns: Option<u64>,
    cgroup: Option<&'a str>,
}

#[derive(Serialize)]
struct SymbolsJson<'a> {
    binaries: SymbolSourcesJson,
    unnamed_frames: &'a std::collections::BTreeMap<&'static str, u64>,
}

#[derive(Serialize)]
struct SymbolSourcesJson {
    local: u64,
    embedded: u64,
    debuginfod: u64,
    none: u64,
}

#[derive(Serialize)]
struct LostJson {
    ring: u64,
    sideband: u64,
    unwind: u64,
}

#[derive(Serialize)]
struct FunctionJson<'a> {
    probe: &'a str,
    binary: &'a str,
    symbol: &'a str,
    calls: u64,
    returns: u64,
    in_flight: u64,
    unmatched: u64,
    lost: u64,
    latency_ns: Option<crate::LatencyStats>,
    processes: Vec<ProcessJson<'a>>,
    filtered: u64,
    /// Calls whose events are in the file: what stacks, processes and groups cover.
    recorded_calls: u64,
    /// The recorded calls weighted by what each stands for (sampled under ring pressure):
    /// what stacks, processes and groups add up to.
    weighted_calls: u64,
    /// The recorder kept the events of one call in up to this many (1: none sampled).
    max_weight: u32,
    sampled: u64,
    /// Where calls, returns and latency come from: "events", or "kernel" when events were
    /// lost or sampled.
    counts_from: &'static str,
    /// The probe cost the recorder calibrated for this probe's way (SPEC.md, "Probe sites
    /// and probe cost"), null when not measured.
    probe_cost_ns: Option<u64>,
}

#[derive(Serialize)]
struct ProcessJson<'a> {
    pid: u32,
    comm: &'a str,
    calls: u64,
}

#[derive(Serialize)]
struct StackJson<'a> {
    probe: &'a str,
    comm: &'a str,
    frames: Vec<&'a str>,
    calls: u64,
    total_ns: u64,
    /// Parallel to `frames`; null for `[unknown]` and `[truncated]`.
    locations: Vec<Option<LocationJson<'a>>>,
}

#[derive(Serialize)]
struct LocationJson<'a> {
    /// Null for a Python frame, which is in no binary.
    binary: Option<&'a str>,
    offset: Option<u64>,
    file: Option<&'a str>,
    line: Option<u32>,
    inlined: bool,
    /// `native` or `python`, so that tools can tell Python code from the interpreter's.
    kind: &'static str,
}

/// `recording.python`: calls whose stacks held Python frames, and whether they merged.
#[derive(Serialize)]
struct PythonJson {
    stacks: u64,
    merged: u64,
    unmerged: u64,
}

fn group_value(v: &GroupValue) -> GroupValueJson<'_> {
    match v {
        GroupValue::Number(n) => GroupValueJson::Number(*n),
        GroupValue::Hex(x) => GroupValueJson::Text(format!("{x:#x}").into()),
        GroupValue::Text(t) => GroupValueJson::Text(t.as_str().into()),
        GroupValue::Null => GroupValueJson::Null(()),
        GroupValue::Other => GroupValueJson::Text("[other]".into()),
    }
}

fn location(frame: &Frame) -> Option<LocationJson<'_>> {
    match &frame.kind {
        FrameKind::Code(l) => Some(LocationJson {
            binary: Some(&l.binary),
            offset: Some(l.offset),
            file: l.file.as_deref(),
            line: l.line,
            inlined: l.inline_depth > 0,
            kind: "native",
        }),
        FrameKind::Python { file, line, .. } => Some(LocationJson {
            binary: None,
            offset: None,
            file: Some(file),
            line: (*line > 0).then_some(*line),
            inlined: false,
            kind: "python",
        }),
        FrameKind::Unmapped | FrameKind::Truncated => None,
    }
}

/// Writes `report` as one pretty-printed JSON document and a newline.
pub fn write(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let r = &report.recording;
    let doc = Doc {
        schema: SCHEMA_VERSION,
        recording: RecordingJson {
            command: &r.command,
            workload: r.workload.as_deref(),
            duration_ns: r.duration_ns,
            events: r.events,
            lost: r.lost(),
            lost_by_source: LostJson {
                ring: r.lost_ring,
                sideband: r.lost_sideband,
                unwind: r.lost_unwind,
            },
            truncated: r.truncated,
            corrupt_chunks: r.corrupt_chunks,
            host: &r.host,
            probe_cost_ns: report
                .functions
                .iter()
                .filter_map(|f| f.probe_cost_ns)
                .max(),
            symbols: SymbolsJson {
                binaries: SymbolSourcesJson {
                    local: r.symbols.local,
                    embedded: r.symbols.embedded,
                    debuginfod: r.symbols.debuginfod,
                    none: r.symbols.none,
                },
                unnamed_frames: &r.symbols.unnamed_frames,
            },
            processes: r
                .processes
                .iter()
                .map(|p| RecordedProcessJson {
                    pid: p.pid,
                    ppid: p.ppid,
                    comm: &p.comm,
                    host: &p.host,
                    mnt_ns: p.mnt_ns,
                    pid_ns: p.pid_ns,
                    cgroup: p.cgroup.as_deref(),
                })
                .collect(),
            python: (r.python.stacks > 0).then_some(PythonJson {
                stacks: r.python.stacks,
                merged: r.python.merged,
                unmerged: r.python.unmerged,
            }),
            inputs: (report.inputs.len() > 1).then(|| {
                report
                    .inputs
                    .iter()
                    .map(|i| InputJson {
                        file: &i.file,
                        host: &i.host,
                        command: &i.command,
                        duration_ns: i.duration_ns,
                        events: i.events,
                        lost: i.lost,
                    })
                    .collect()
            }),
        },
        functions: report
            .functions
            .iter()
            .map(|f| FunctionJson {
                probe: &f.probe,
                binary: &f.binary,
                symbol: &f.symbol,
                calls: f.calls,
                returns: f.returns,
                in_flight: f.in_flight,
                unmatched: f.unmatched,
                lost: f.lost,
                filtered: f.filtered,
                recorded_calls: f.recorded_calls,
                weighted_calls: f.weighted_calls,
                max_weight: f.max_weight,
                sampled: f.sampled,
                counts_from: if f.from_kernel { "kernel" } else { "events" },
                probe_cost_ns: f.probe_cost_ns,
                latency_ns: f.latency_stats(),
                processes: f
                    .processes
                    .iter()
                    .map(|p| ProcessJson {
                        pid: p.pid,
                        comm: &p.comm,
                        calls: p.calls,
                    })
                    .collect(),
            })
            .collect(),
        groups: None,
        histograms: None,
        stacks: report
            .stacks
            .iter()
            .map(|s| StackJson {
                probe: &s.probe,
                comm: &s.comm,
                frames: report.frame_names(s).collect(),
                calls: s.calls,
                total_ns: s.total_ns,
                locations: s
                    .frames
                    .iter()
                    .map(|&id| location(report.frames.get(id)))
                    .collect(),
            })
            .collect(),
        diff: report.diff.as_ref().map(|rows| {
            rows.iter()
                .map(|r| DiffJson {
                    probe: &r.probe,
                    base: diff_side(&r.base),
                    new: diff_side(&r.new),
                })
                .collect()
        }),
    };
    let doc = Doc {
        groups: report.groups.as_ref().map(|g| {
            g.rows
                .iter()
                .map(|row| GroupJson {
                    probe: &row.probe,
                    key: [(g.key.as_str(), group_value(&row.value))].into(),
                    calls: row.stats.calls,
                    latency_ns: row.stats.latency.stats(),
                })
                .collect()
        }),
        histograms: report.histograms.as_ref().map(|hs| {
            hs.iter()
                .map(|h| HistogramJson {
                    probe: &h.probe,
                    arg: &h.arg,
                    buckets: h
                        .buckets
                        .iter()
                        .map(|&(low, high, count)| BucketJson { low, high, count })
                        .collect(),
                })
                .collect()
        }),
        ..doc
    };
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::other)?;
    writeln!(out)
}
