//! Python frames inside native stacks (issue 33; SPEC.md, "Interpreter frames (Python)").
//!
//! Two halves, each with its own module:
//!
//! - [`procs`]: which processes run a known CPython, kept in the BPF walk's maps
//!   (`py_procs`, `py_layouts`), so that the programs read the probed thread's interpreter
//!   frames into each event that captures a stack;
//! - [`names`]: those raw frames (code object pointers and the words that validate them)
//!   named from the live process, interned, and written as the data file's `PyCode` records
//!   and `Stack::python` frames.
//!
//! The report puts the Python frames in place of the native `_PyEval_EvalFrameDefault`
//! frames that ran them (`urec_report::python`).

pub mod names;
pub mod procs;

pub use names::{PyStats, PythonNames};
pub use procs::{PythonProcs, NO_PYTHON_ENV};
