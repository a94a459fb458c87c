//! The CPython interpreters the Python-frame tests run (tests/python.rs, tests/python_walk.rs):
//! Debian's `python3.11`, which scripts/install-deps.sh installs (so its absence fails under
//! `CI=true`), and pyenv's shared 3.12.1 and 3.13.0 builds where the machine has them (skipped
//! with a message elsewhere: no registry this workplace reaches ships them).

use std::path::{Path, PathBuf};

/// Debian 12's CPython (no frame pointers; non-PIE).
pub const PYTHON311: &str = "/usr/bin/python3.11";

/// The pyenv builds the tests run where present: (version, its `bin/pythonX.Y`).
pub const PYENV: [(&str, &str); 2] = [("3.12.1", "python3.12"), ("3.13.0", "python3.13")];

/// Whether `python` can run the tests: `/usr/bin/python3.11` must (fails under `CI=true` when
/// missing); any other (a pyenv build) is skipped with a message when absent.
pub fn available(python: &str) -> bool {
    if Path::new(python).is_file() {
        return true;
    }
    assert!(
        python != PYTHON311 || std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: {PYTHON311} is missing (scripts/install-deps.sh installs it)"
    );
    eprintln!("skipped: no {python}");
    false
}

/// The pyenv build of `version` (`bin/pythonX.Y` under `$PYENV_ROOT`, default
/// `/root/.pyenv`), whether or not it exists.
pub fn pyenv(version: &str, program: &str) -> PathBuf {
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root/.pyenv"));
    root.join(format!("versions/{version}/bin/{program}"))
}
