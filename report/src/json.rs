//! `--json`: the machine-readable summary, schema version 1 (SPEC.md, "`--json` schema").
//!
//! The schema fixes field names, their order, integer types and nulls, so it is written from
//! dedicated structs whose field order *is* the schema (serde keeps declaration order), not
//! from maps. Consumers ignore fields they do not know; adding one does not change `schema`.

use std::io::{self, Write};

use serde::Serialize;

use crate::aggregate::Report;

/// The schema version this module writes.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Doc<'a> {
    schema: u32,
    recording: RecordingJson<'a>,
    functions: Vec<FunctionJson<'a>>,
    stacks: Vec<StackJson<'a>>,
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
    latency_ns: Option<LatencyJson>,
    processes: Vec<ProcessJson<'a>>,
    filtered: u64,
}

#[derive(Serialize)]
struct LatencyJson {
    min: u64,
    mean: u64,
    p50: u64,
    p90: u64,
    p99: u64,
    max: u64,
    total: u64,
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
    frames: &'a [String],
    calls: u64,
    total_ns: u64,
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
            symbols: SymbolsJson {
                binaries: SymbolSourcesJson {
                    local: r.symbols.local,
                    embedded: r.symbols.embedded,
                    debuginfod: r.symbols.debuginfod,
                    none: r.symbols.none,
                },
                unnamed_frames: &r.symbols.unnamed_frames,
            },
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
                latency_ns: f.latency_stats().map(|s| LatencyJson {
                    min: s.min,
                    mean: s.mean,
                    p50: s.p50,
                    p90: s.p90,
                    p99: s.p99,
                    max: s.max,
                    total: s.total,
                }),
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
        stacks: report
            .stacks
            .iter()
            .map(|s| StackJson {
                probe: &s.probe,
                comm: &s.comm,
                frames: &s.frames,
                calls: s.calls,
                total_ns: s.total_ns,
            })
            .collect(),
    };
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::other)?;
    writeln!(out)
}
