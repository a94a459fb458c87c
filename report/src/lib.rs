//! The analysis half of urec: rebases every recorded address through the recorded mappings,
//! symbolizes, aggregates calls and latencies, and draws tables, histograms, folded stacks,
//! flamegraphs, JSON and per-event scripts. Builds without libbpf, clang or root.

pub mod rebase;
pub mod symbolize;
