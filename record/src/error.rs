//! What can go wrong with a recording, typed by whose fault it is: the caller's (a flag value,
//! a spec, a target: SPEC.md's exit status 2) or the system's (the kernel, a file, a traced
//! process: status 1). The CLI takes its exit status from the kind, never from the wording.

/// An error of `urec record` or `urec top`.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// How urec was called: a bad flag value, a target that cannot be traced, a file that
    /// cannot be the output.
    #[error("{0}")]
    Usage(String),
    /// A probe spec that does not parse or does not resolve.
    #[error(transparent)]
    Spec(#[from] urec_probe::SpecError),
    /// Anything else: privileges, the kernel's refusal, an I/O error, the open-files limit.
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl RecordError {
    /// Whether the caller is at fault (a usage or spec error).
    pub fn is_usage(&self) -> bool {
        matches!(self, RecordError::Usage(_) | RecordError::Spec(_))
    }

    /// As an [`anyhow::Error`] whose chain reads as before: a [`RecordError::Failed`] is its
    /// own error again (so a cause such as a closed pipe is still found by type), the usage
    /// kinds stay a `RecordError` (so the exit status is still found by type).
    pub fn into_anyhow(self) -> anyhow::Error {
        match self {
            RecordError::Failed(e) => e,
            usage => anyhow::Error::new(usage),
        }
    }
}

/// Shorthand for the library's own usage errors.
pub(crate) fn usage(message: impl Into<String>) -> RecordError {
    RecordError::Usage(message.into())
}
