//! `--diff BASE`: the report compared with a base recording (SPEC.md, "urec report"): per probe
//! both sides and the change of calls, mean, p50 and p99 (`+12.5%`), JSON `diff`, and inferno's
//! differential flamegraph (frames colored by growth from BASE to the input).

use std::io::{self, Write};

use crate::model::histogram::LatencyStats;
use crate::model::{DiffRow, Report, Side};
use crate::output::folded;
use crate::Weight;

/// The change from `base` to `new` as `+12.5%` / `-3.0%`; `-` when either is unknown, `new`
/// when only the input has it (base 0).
pub fn change(base: Option<u64>, new: Option<u64>) -> String {
    match (base, new) {
        (Some(b), Some(n)) if b == 0 && n == 0 => "+0.0%".to_string(),
        (Some(0), Some(_)) => "new".to_string(),
        (Some(b), Some(n)) => {
            let pct = (n as f64 - b as f64) / b as f64 * 100.0;
            format!("{pct:+.1}%")
        }
        _ => "-".to_string(),
    }
}

fn human(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), crate::human_ns)
}

/// The comparison table: per probe, calls and mean / p50 / p99 latency of BASE and of the
/// input, each followed by its change.
pub fn write_table(rows: &[DiffRow], out: &mut dyn Write) -> io::Result<()> {
    let mut table: Vec<Vec<String>> = vec![[
        "PROBE", "CALLS", "BASE", "CHANGE", "MEAN", "BASE", "CHANGE", "P50", "BASE", "CHANGE",
        "P99", "BASE", "CHANGE",
    ]
    .map(str::to_string)
    .to_vec()];
    for r in rows {
        let calls = |s: &Option<Side>| s.as_ref().map(|s| s.calls);
        let stat = |s: &Option<Side>, f: fn(&LatencyStats) -> u64| {
            s.as_ref().and_then(|s| s.latency.as_ref()).map(f)
        };
        let mut row = vec![
            r.probe.clone(),
            calls(&r.new).map_or("-".to_string(), |c| c.to_string()),
            calls(&r.base).map_or("-".to_string(), |c| c.to_string()),
            change(calls(&r.base), calls(&r.new)),
        ];
        let stats: [fn(&LatencyStats) -> u64; 3] = [|s| s.mean, |s| s.p50, |s| s.p99];
        for f in stats {
            let (b, n) = (stat(&r.base, f), stat(&r.new, f));
            row.extend([human(n), human(b), change(b, n)]);
        }
        table.push(row);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|c| {
            table
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    writeln!(
        out,
        "# compared with BASE: each value of the input, then BASE's, then the change"
    )?;
    for row in &table {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            if c == 0 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// Draws inferno's differential flamegraph: the input's stacks, each frame colored by how its
/// count changed from BASE (red: grew, blue: shrank).
pub fn write_flamegraph(
    base: &Report,
    new: &Report,
    weight: Weight,
    out: &mut dyn Write,
) -> io::Result<()> {
    let before = folded::lines(base, weight).join("\n");
    let after = folded::lines(new, weight).join("\n");
    let mut lines = Vec::new();
    inferno::differential::from_readers(
        inferno::differential::Options::default(),
        before.as_bytes(),
        after.as_bytes(),
        &mut lines,
    )?;
    let text = String::from_utf8_lossy(&lines);
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = format!(
        "{} (compared with BASE)",
        crate::output::flamegraph::title(new)
    );
    opts.count_name = match weight {
        Weight::Calls => "calls".to_string(),
        Weight::Latency => "ns".to_string(),
    };
    opts.subtitle = Some(format!(
        "BASE: {} — red frames grew, blue ones shrank",
        base.recording.command
    ));
    let result = inferno::flamegraph::from_lines(&mut opts, text.lines(), out);
    if text.trim().is_empty() {
        return Ok(());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_signed_percentages() {
        assert_eq!(change(Some(80), Some(90)), "+12.5%");
        assert_eq!(change(Some(100), Some(97)), "-3.0%");
        assert_eq!(change(Some(5), Some(5)), "+0.0%");
        assert_eq!(change(Some(0), Some(5)), "new");
        assert_eq!(change(None, Some(5)), "-");
        assert_eq!(change(Some(5), None), "-");
    }
}
