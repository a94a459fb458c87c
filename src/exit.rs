//! Exit statuses, as SPEC.md's "Exit status" defines them: 0 success, 1 a runtime or data error,
//! 2 a usage or spec error.

/// An error in how urec was called: a bad flag value, a missing binary or symbol, a bad ARG.
/// Exits with status 2; anything else that fails exits with 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit status for an error that ended a subcommand: from the error's type, never its
/// wording (the recorder says which of its errors are the caller's: [`urec_record::RecordError`]).
pub fn status_of(err: &anyhow::Error) -> u8 {
    let usage = err.chain().any(|cause| {
        cause.is::<UsageError>() || cause.is::<urec_probe::SpecError>() || record_usage(cause)
    });
    if usage {
        2
    } else {
        1
    }
}

#[cfg(feature = "record")]
fn record_usage(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause
        .downcast_ref::<urec_record::RecordError>()
        .is_some_and(urec_record::RecordError::is_usage)
}

#[cfg(not(feature = "record"))]
fn record_usage(_: &(dyn std::error::Error + 'static)) -> bool {
    false
}

/// Whether the error is a write to a closed pipe, e.g. `urec script | head`.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Shorthand for returning a [`UsageError`].
#[macro_export]
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::UsageError(format!($($arg)*))))
    };
}
