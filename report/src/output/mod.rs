//! The outputs: each turns a [`crate::Report`] (table, histograms, JSON, folded stacks,
//! flamegraph, pprof, the `--diff` table and flamegraph) or, for per-event outputs, the
//! stream of calls ([`script`], [`perfetto`]) into bytes. An output reads the model and
//! nothing else; a new one is one module here plus its flag in the CLI.

pub mod diff;
pub mod flamegraph;
pub mod folded;
pub mod info;
pub mod json;
pub mod perfetto;
pub mod pprof;
pub mod script;
pub mod table;

pub(crate) mod args;
pub(crate) mod proto;
pub(crate) mod reorder;
pub(crate) mod units;
