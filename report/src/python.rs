//! Python frames inside native stacks (issue 33): the one place where a stack's Python frames
//! take the place of the native `_PyEval_EvalFrameDefault` frames that ran them. Every output
//! that shows stacks (folded, flamegraph, pprof, JSON, Perfetto, script, `--group-by caller`)
//! goes through [`merge_python`], so they all agree on where a Python frame goes and on which
//! stacks stay native.
//!
//! The rule (docs/reference.md, "Python frames"): the Python frames, innermost first, are cut
//! after each `entry` frame into segments, one per native eval call (a trailing segment without
//! an entry frame, from a chain cut short, is the outermost eval call's); the innermost eval
//! frame gets the innermost segment, and so on outwards. When the counts differ only the side
//! that was cut short may be short: then the innermost pairs merge and the rest stays native.
//! Otherwise the native stack is kept as it was, and counted: a statistic, never a guess.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use urec_format::{PyCode, PyFrame};

/// The native function that runs Python frames, by its symbolized name: the frames the merge
/// replaces. Found by name because the report knows code by its names; `--no-symbolize` has
/// none, so it merges nothing.
pub fn is_eval_frame(name: &str) -> bool {
    matches!(
        name,
        "_PyEval_EvalFrameDefault" | "_PyEval_EvalFrameDefault.cold"
    )
}

/// What every output prints for a Python frame: `qualname (BASENAME:LINE)`, or
/// `qualname (BASENAME)` when the line is unknown (0). The basename keeps folded lines short;
/// JSON, pprof and script carry the full path beside it.
pub fn python_frame_name(qualname: &str, filename: &str, line: u32) -> String {
    let base = filename.rsplit('/').next().unwrap_or(filename);
    if base.is_empty() {
        // A frame the recorder could not name (`[unknown python]`): no file to show.
        return qualname.to_string();
    }
    if line == 0 {
        format!("{qualname} ({base})")
    } else {
        format!("{qualname} ({base}:{line})")
    }
}

/// Python functions kept per recording. A recorder names each code object its stacks ran once
/// (a large application has tens of thousands); a file may claim any number, and each costs
/// about 100 bytes of memory for 6 of file, so past this many the rest are ignored (their
/// stacks stay native) and counted: about 30 MB at most.
pub const MAX_PY_CODES: usize = 1 << 18;

/// The PyCode records of a recording, by id.
#[derive(Debug, Default)]
pub(crate) struct PyCodes {
    by_id: HashMap<u32, PyCode>,
    /// Records past [`MAX_PY_CODES`], ignored.
    ignored: u64,
}

impl PyCodes {
    /// Keeps `code`; a repeated id (no writer makes one) replaces the earlier one.
    pub(crate) fn insert(&mut self, code: PyCode) {
        if self.by_id.len() >= MAX_PY_CODES && !self.by_id.contains_key(&code.id) {
            self.ignored += 1;
            return;
        }
        self.by_id.insert(code.id, code);
    }

    /// The warning when the file held more Python functions than a report keeps.
    pub(crate) fn warning(&self) -> Option<String> {
        (self.ignored > 0).then(|| {
            format!(
                "the recording names more than {MAX_PY_CODES} Python functions: {} ignored, \
                 and the stacks that ran them show native frames only",
                self.ignored
            )
        })
    }

    pub(crate) fn get(&self, id: u32) -> Option<&PyCode> {
        self.by_id.get(&id)
    }

    /// A Python frame as outputs show it: its code's names and its line; `None` when no PyCode
    /// record defines its code (a damaged chunk dropped it, or a crafted file).
    pub(crate) fn frame(&self, f: &PyFrame) -> Option<PythonFrame> {
        let code = self.get(f.code)?;
        Some(PythonFrame {
            qualname: code.qualname.clone(),
            filename: code.filename.clone(),
            line: f.line,
        })
    }
}

/// A Python frame with its names, ready to become an output's frame.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PythonFrame {
    /// `co_qualname`.
    pub qualname: Arc<str>,
    /// `co_filename`, in full.
    pub filename: Arc<str>,
    /// The line being run, 0 when unknown.
    pub line: u32,
}

impl PythonFrame {
    /// [`python_frame_name`] of this frame.
    pub fn name(&self) -> String {
        python_frame_name(&self.qualname, &self.filename, self.line)
    }
}

/// What the merge made of one stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// The stack had no Python frames.
    Native,
    /// Its Python frames replaced its eval frames (all, or the innermost ones when a side was
    /// cut short).
    Merged,
    /// Its eval frames and segments disagree, or a frame names an unknown code: the native
    /// stack is kept.
    Unmerged,
}

/// Calls whose stacks held Python frames, and what the merge made of them (JSON
/// `recording.python`, the report's note).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PythonCounts {
    /// Calls whose stack held Python frames (weighted, as every stack output is).
    pub stacks: u64,
    /// Of those, the calls whose Python frames went in place of the eval frames.
    pub merged: u64,
    /// Of those, the calls whose native stack was kept.
    pub unmerged: u64,
    /// The report ran with `--no-symbolize`: no eval frame is known by name, nothing merged.
    pub no_symbolize: bool,
}

impl PythonCounts {
    /// Counts `calls` calls whose stack came out as `merge`.
    pub fn add(&mut self, merge: Merge, calls: u64) {
        match merge {
            Merge::Native => return,
            Merge::Merged => self.merged = self.merged.saturating_add(calls),
            Merge::Unmerged => self.unmerged = self.unmerged.saturating_add(calls),
        }
        self.stacks = self.stacks.saturating_add(calls);
    }

    /// Adds another input's counts.
    pub fn absorb(&mut self, other: &PythonCounts) {
        self.stacks = self.stacks.saturating_add(other.stacks);
        self.merged = self.merged.saturating_add(other.merged);
        self.unmerged = self.unmerged.saturating_add(other.unmerged);
        self.no_symbolize |= other.no_symbolize;
    }

    /// The note for stderr and the table, when some stacks kept their native frames.
    pub fn note(&self) -> Option<String> {
        if self.unmerged == 0 {
            return None;
        }
        Some(if self.no_symbolize {
            format!(
                "{} of {} calls ran Python code; --no-symbolize names no \
                 _PyEval_EvalFrameDefault frame, so their stacks show native frames only",
                self.unmerged, self.stacks
            )
        } else {
            format!(
                "{} of {} calls with Python frames kept their native stack: its \
                 _PyEval_EvalFrameDefault frames and the Python frames recorded did not pair up",
                self.unmerged, self.stacks
            )
        })
    }
}

/// Puts `python` (innermost first, as recorded) in place of the eval frames of `native`
/// (outermost first, as outputs show stacks), each segment outermost first so that Python
/// frames end innermost last. `is_eval` tells an eval frame; `frame` makes an output's frame of
/// a Python frame (`None`: its code is unknown, and the stack stays native). Frames inlined
/// into an eval frame follow it in `native` and stay after its segment: they are what the
/// innermost Python frame of that segment was doing.
pub fn merge_python<T>(
    native: Vec<T>,
    native_truncated: bool,
    python: &[PyFrame],
    python_truncated: bool,
    is_eval: impl Fn(&T) -> bool,
    mut frame: impl FnMut(&PyFrame) -> Option<T>,
) -> (Vec<T>, Merge) {
    if python.is_empty() {
        return (native, Merge::Native);
    }
    // Every Python frame named first: one unknown code leaves the native stack as it was.
    let made: Option<Vec<Option<T>>> = python.iter().map(|p| frame(p).map(Some)).collect();
    let Some(mut made) = made else {
        return (native, Merge::Unmerged);
    };
    // Segments as index ranges into `python`, innermost first.
    let mut segments: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for (i, f) in python.iter().enumerate() {
        if f.entry {
            segments.push((start, i + 1));
            start = i + 1;
        }
    }
    if start < python.len() {
        segments.push((start, python.len()));
    }
    // Eval frames, innermost first.
    let evals: Vec<usize> = (0..native.len())
        .rev()
        .filter(|&i| is_eval(&native[i]))
        .collect();
    let pairs = match evals.len().cmp(&segments.len()) {
        Ordering::Equal => evals.len(),
        // The outer eval frames were cut off the native stack: their segments have no place.
        Ordering::Less if native_truncated => evals.len(),
        // The Python chain was cut short: the outer eval frames keep their native frame.
        Ordering::Greater if python_truncated => segments.len(),
        _ => 0,
    };
    if pairs == 0 {
        return (native, Merge::Unmerged);
    }
    // The segment each paired eval frame gets, by its index in `native`.
    let at: HashMap<usize, (usize, usize)> = evals
        .iter()
        .copied()
        .zip(segments.iter().copied())
        .take(pairs)
        .collect();
    let mut out = Vec::with_capacity(native.len() + python.len());
    for (i, f) in native.into_iter().enumerate() {
        match at.get(&i) {
            Some(&(s, e)) => out.extend(made[s..e].iter_mut().rev().filter_map(Option::take)),
            None => out.push(f),
        }
    }
    (out, Merge::Merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(code: u32, line: u32, entry: bool) -> PyFrame {
        PyFrame { code, line, entry }
    }

    /// Merges `native` (outermost first) with frames named `f<code>:<line>`; code 99 unknown.
    fn merge(native: &[&str], nt: bool, python: &[PyFrame], pt: bool) -> (String, Merge) {
        let native = native.iter().map(|s| s.to_string()).collect();
        let (out, m) = merge_python(
            native,
            nt,
            python,
            pt,
            |n| is_eval_frame(n),
            |p| (p.code != 99).then(|| format!("f{}:{}", p.code, p.line)),
        );
        (out.join(";"), m)
    }

    const EVAL: &str = "_PyEval_EvalFrameDefault";

    #[test]
    fn each_eval_frame_gets_its_segment_innermost_last() {
        let native = ["main", EVAL, "PyObject_Vectorcall", EVAL, "crc32"];
        // Innermost first: f3 ran by the inner eval; f2 then f1 by the outer one.
        let python = [py(3, 30, true), py(2, 20, false), py(1, 10, true)];
        let want = "main;f1:10;f2:20;PyObject_Vectorcall;f3:30;crc32";
        assert_eq!(
            merge(&native, false, &python, false),
            (want.into(), Merge::Merged)
        );
        // 3.12: the outermost frame may carry no entry mark: a trailing segment, the
        // outermost eval frame's.
        let trailing = [py(3, 30, true), py(2, 20, false), py(1, 10, false)];
        assert_eq!(
            merge(&native, false, &trailing, false),
            (want.into(), Merge::Merged)
        );
        // The `.cold` part is the same function.
        let cold = ["main", "_PyEval_EvalFrameDefault.cold", "g", EVAL, "h"];
        assert_eq!(
            merge(&cold, false, &python, false).0,
            "main;f1:10;f2:20;g;f3:30;h"
        );
    }

    #[test]
    fn frames_inlined_into_an_eval_frame_stay_inner_of_its_python_frames() {
        let native = ["main", EVAL, "_Py_inlined_call", "crc32"];
        let python = [py(2, 20, false), py(1, 10, true)];
        assert_eq!(
            merge(&native, false, &python, false).0,
            "main;f1:10;f2:20;_Py_inlined_call;crc32"
        );
    }

    #[test]
    fn counts_that_disagree_keep_the_native_stack_unless_a_side_was_cut() {
        let native = ["main", EVAL, "PyObject_Vectorcall", EVAL, "crc32"];
        let three = [py(3, 30, true), py(2, 20, true), py(1, 10, true)];
        let kept = native.join(";");
        assert_eq!(
            merge(&native, false, &three, false),
            (kept.clone(), Merge::Unmerged)
        );
        // The native unwind was cut: the innermost pairs merge, the rest had no place.
        assert_eq!(
            merge(&native, true, &three, false),
            (
                "main;f2:20;PyObject_Vectorcall;f3:30;crc32".into(),
                Merge::Merged
            )
        );
        // The Python chain was cut: the outer eval frame stays native.
        let one = [py(3, 30, true)];
        assert_eq!(
            merge(&native, false, &one, true),
            (
                format!("main;{EVAL};PyObject_Vectorcall;f3:30;crc32"),
                Merge::Merged
            )
        );
        assert_eq!(
            merge(&native, false, &one, false),
            (kept.clone(), Merge::Unmerged)
        );
        // No eval frame at all (no names): nothing to replace.
        assert_eq!(
            merge(&["main", "crc32"], false, &one, false).1,
            Merge::Unmerged
        );
        // An unknown code anywhere: native.
        let unknown = [py(3, 30, true), py(99, 20, false), py(1, 10, true)];
        assert_eq!(
            merge(&native, false, &unknown, false),
            (kept, Merge::Unmerged)
        );
        // No Python frames: untouched and not counted.
        assert_eq!(merge(&native, false, &[], false).1, Merge::Native);
    }

    #[test]
    fn names_and_counts() {
        assert_eq!(python_frame_name("a.b", "/x/s.py", 3), "a.b (s.py:3)");
        assert_eq!(
            python_frame_name("<module>", "<string>", 0),
            "<module> (<string>)"
        );
        assert_eq!(
            python_frame_name("[unknown python]", "", 0),
            "[unknown python]"
        );
        let mut c = PythonCounts::default();
        c.add(Merge::Native, 5);
        c.add(Merge::Merged, 3);
        assert_eq!(c.note(), None);
        c.add(Merge::Unmerged, 2);
        assert_eq!((c.stacks, c.merged, c.unmerged), (5, 3, 2));
        assert!(c.note().is_some_and(|n| n.starts_with("2 of 5 calls")));
    }
}
