//! urec probe specs: parsing `TARGET:FUNCTION[%return] [ARG ...]` and resolving each to the
//! binary and file offset the kernel attaches a uprobe to. Also lists a binary's probeable
//! functions (`urec list`). No libbpf and no kernel needed: this runs before anything is attached.

/// A probe spec that cannot be used: bad syntax, a missing binary or symbol, an unsupported
/// argument. Reported before anything is attached (exit status 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The spec text does not parse.
    #[error("bad probe spec {spec:?}: {why}")]
    Syntax {
        /// The spec as given.
        spec: String,
        /// What is wrong.
        why: String,
    },
}
