//! The analysis half of urec: rebases every recorded address through the recorded mappings,
//! symbolizes, aggregates calls and latencies, and draws tables, histograms, folded stacks,
//! flamegraphs, JSON, pprof, Perfetto traces and per-event scripts. Builds without libbpf, clang
//! or root.
//!
//! # Layout and data flow
//!
//! ```text
//!                    ┌─ calls: the call core (filters, time origin, incarnation, pairing) ─┐
//! urec.data ─input─▶ │  incarnation + rebase: which process, which code                    │
//!                    └──┬───────────────────────────────┬──────────────────────┬───────────┘
//!                       ▼ sink                          ▼ sink                 ▼ sink
//!                  aggregate (pass) ─▶ model::Report    output::script         output::perfetto
//!                       merge (-i A -i B) ─┤            (one line per event)   (one slice per call)
//!                       diff (--diff BASE) ┤
//!                                          ▼
//!                  output::{table, json, folded, flamegraph, pprof, diff}
//! ```
//!
//! - [`model`]: what a report is ([`Report`], [`Function`], [`StackSummary`], frames,
//!   histograms, breakdowns); depends on no pass and no output.
//! - The call core (private `calls`): one rule for which events and calls count, applied by
//!   every streaming pass; `aggregate`, [`output::script`] and [`output::perfetto`] are its
//!   sinks.
//! - Passes: [`analyze`] streams a recording once into a [`Report`] (memory bounded by unique
//!   (probe, incarnation, stack) keys, never by events; each stack rebased on first sight,
//!   symbolized once at the end through a [`symbolize::Symbolizer`], the `urec-symbolize`
//!   crate re-exported); [`merge::merge`] joins the reports of several inputs; [`diff::rows`]
//!   compares one with a base.
//! - [`output`]: each output reads a [`Report`] (or, for per-event outputs, the call stream)
//!   and writes bytes.
//!
//! ```no_run
//! let report = urec_report::analyze("urec.data".as_ref(), &urec_report::ReportOptions::default())?;
//! urec_report::output::table::write(&report, &mut std::io::stdout().lock())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

mod aggregate;
mod calls;
pub mod diff;
pub mod incarnation;
mod input;
mod interner;
pub mod merge;
pub mod model;
pub mod output;
pub mod python;
pub mod rebase;
pub mod symbols;
pub use urec_symbolize as symbolize;

use std::path::PathBuf;

pub use aggregate::{analyze, analyze_bytes, frame_addresses, BinaryAddress};
pub use calls::filter::{Filter, TimeWindow};
pub use model::breakdown::{GroupBy, Groups, ValueHistogram};
pub use model::histogram::{LatencyHistogram, LatencyStats};
pub use model::{Function, ProcessCalls, Recording, Report, StackSummary};
pub use output::units::human_ns;

/// How `functions` are ordered (`--sort`), always descending, ties by probe name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    /// Number of calls (the default).
    #[default]
    Calls,
    /// Total latency.
    Total,
    /// Mean latency.
    Mean,
    /// Minimum latency.
    Min,
    /// Median latency.
    P50,
    /// 90th percentile latency.
    P90,
    /// 99th percentile latency.
    P99,
    /// Maximum latency.
    Max,
}

/// What a stack's count means in folded stacks and flamegraphs (`--weight`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Weight {
    /// Number of calls (the default).
    #[default]
    Calls,
    /// Summed latency of the matched calls, in ns.
    Latency,
}

/// Everything [`analyze`] needs besides the file.
#[derive(Clone, Debug, Default)]
pub struct ReportOptions {
    /// Which events count.
    pub filter: Filter,
    /// Order of [`Report::functions`].
    pub sort: SortKey,
    /// Where binaries and debug files are looked for.
    pub symbolize: symbolize::SymbolizeOptions,
    /// Skip symbolization (frames stay `binary+0xOFF`); for tests and benchmarks of the rest.
    pub no_symbolize: bool,
    /// Split each probe's calls by this key (`--group-by`).
    pub group_by: Option<GroupBy>,
    /// A log2 histogram of this argument's values per probe (`--hist`).
    pub hist: Option<String>,
    /// The table lists probes without calls (`--show-zero`).
    pub show_zero: bool,
    /// Take each probe's calibrated cost off its latencies, never below 0
    /// (`--subtract-probe-cost`; SPEC.md, "Probe sites and probe cost").
    pub subtract_probe_cost: bool,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened or is not a urec recording.
    #[error("cannot read recording {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: urec_format::FormatError,
    },
    /// The file went bad while it was read.
    #[error("recording {path} is corrupt")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: urec_format::FormatError,
    },
    /// `--probe NAME` names no probe of the recording (a usage error).
    #[error("no probe {name:?} in the recording; its probes are: {available}")]
    NoSuchProbe {
        /// What the user asked for.
        name: String,
        /// The probes there are, comma-separated.
        available: String,
    },
    /// `--group-by ARG` or `--hist ARG` names no argument of the selected probes (a usage
    /// error).
    #[error("{flag} {name}: no selected probe fetches an argument {name:?}; {available}")]
    NoSuchArg {
        /// The flag.
        flag: &'static str,
        /// The name asked for.
        name: String,
        /// What there is.
        available: String,
    },
    /// Writing an output failed. Not `transparent`: the `io::Error` must stay in the source
    /// chain so the CLI can tell a closed pipe (`urec script | head`) from a real failure.
    #[error("writing output")]
    Io(#[from] std::io::Error),
}

/// Everything `report` and `script` do with a recording, on bytes in memory: the analysis,
/// every output (table, histograms, JSON, folded stacks and flamegraph, each weight) and the
/// script, written into a sink; symbolization is off, so nothing outside the input is read.
/// Errors are outcomes, not failures: this is the fuzz target `report` (fuzz/) and its stable
/// replay (report/tests/corpus.rs), which look for panics and unbounded memory.
#[doc(hidden)]
pub fn exercise(bytes: &[u8]) {
    let mut sink = std::io::sink();
    let opts = ReportOptions {
        no_symbolize: true,
        ..ReportOptions::default()
    };
    if let Ok(report) = analyze_bytes(bytes.to_vec(), &opts) {
        let _ = output::table::write(&report, &mut sink);
        let _ = output::table::write_histograms(&report, &mut sink);
        let _ = output::json::write(&report, &mut sink);
        let _ = output::pprof::write(&report, &mut sink);
        for weight in [Weight::Calls, Weight::Latency] {
            let _ = output::folded::write(&report, weight, &mut sink);
            let _ = output::flamegraph::write(&report, weight, &mut sink);
        }
    }
    let script_opts = output::script::ScriptOptions {
        no_symbolize: true,
        ..output::script::ScriptOptions::default()
    };
    let _ = output::script::script_bytes(bytes.to_vec(), &script_opts, &mut sink);
    let _ = output::perfetto::write_bytes(bytes.to_vec(), &opts, &mut sink);
}

impl Error {
    /// True when the error is the user's request, not the data (exit status 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::NoSuchProbe { .. } | Self::NoSuchArg { .. })
    }
}
