//! The recording half of urec: attaches the resolved probes with eBPF, follows processes and
//! their executable mappings through perf side-band records, and streams everything into a
//! urec data file.
pub mod procfs;
pub mod processes;
pub mod sideband;
