//! Brendan Gregg's collapsed ("folded") stacks: `comm;outermost;...;probed_function COUNT`.
//!
//! Stacks of several probes all go in (each ends in its own probed function). Lines are sorted
//! by text, like stackcollapse's output, and identical lines (the same path in two probes with
//! the same names) are merged. A stack with a zero count under `--weight latency` (no matched
//! call) is left out, as flamegraph tools drop zero counts anyway.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::model::Report;
use crate::Weight;

/// The folded lines of `report`, without newlines.
pub fn lines(report: &Report, weight: Weight) -> Vec<String> {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for s in &report.stacks {
        let count = match weight {
            Weight::Calls => s.calls,
            Weight::Latency => s.total_ns,
        };
        if count == 0 {
            continue;
        }
        let mut key = String::with_capacity(s.comm.len() + s.frames.len() * 16);
        key.push_str(&sanitize(&s.comm));
        for f in report.frame_names(s) {
            key.push(';');
            key.push_str(&sanitize(f));
        }
        let n = merged.entry(key).or_default();
        *n = n.saturating_add(count);
    }
    merged
        .into_iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect()
}

/// Writes the folded lines of `report`.
pub fn write(report: &Report, weight: Weight, out: &mut dyn Write) -> io::Result<()> {
    for line in lines(report, weight) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Frame names must not contain the separators of the format (`;` between frames, a newline
/// between stacks); an empty comm would make the line start with `;`.
fn sanitize(name: &str) -> std::borrow::Cow<'_, str> {
    if name.is_empty() {
        return "[unknown]".into();
    }
    if name.contains([';', '\n']) {
        name.replace([';', '\n'], ":").into()
    } else {
        name.into()
    }
}
