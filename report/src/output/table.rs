//! The default output: a header about the recording and one aligned row per probed function,
//! and the `--histogram` log2 latency histograms.

use std::io::{self, Write};

use crate::human_ns;
use crate::model::breakdown::GroupValue;
use crate::model::{Function, Report};
use urec_format::plural;

/// Writes the summary table of `report`.
///
/// ```text
/// # urec record -e bash:readline -a · host h (6.18.0) · 12.3s · 1234 events
/// PROBE           CALLS    TOTAL     MEAN      P50      P90      P99      MAX
/// bash:readline      12    1.23s    103ms   98.1ms    201ms    250ms    251ms  in_flight=1
/// ```
/// Latency columns show `-` when no call was matched. The last column lists `returns` when it
/// differs from `calls` (for entry+return probes), and `in_flight`, `unmatched` and `lost` when they are not zero.
pub fn write(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let rec = &report.recording;
    let mut head = format!(
        "# {} · host {} ({}) · {} · {}",
        if rec.command.is_empty() {
            "urec"
        } else {
            &rec.command
        },
        rec.host,
        rec.kernel,
        human_ns(rec.duration_ns),
        plural(rec.events, "event", "events")
    );
    if let Some(w) = &rec.workload {
        head.push_str(&format!(" · workload: {}", urec_format::shell_words(w)));
    }
    // One line, whatever the host name or command line in the file hold.
    writeln!(out, "{}", urec_format::printable(&head))?;
    if rec.lost() > 0 {
        writeln!(
            out,
            "# lost {} (ring {}, sideband {}, unwind {})",
            rec.lost(),
            rec.lost_ring,
            rec.lost_sideband,
            rec.lost_unwind
        )?;
    }
    if rec.truncated {
        writeln!(
            out,
            "# truncated recording: reported up to its last complete chunk"
        )?;
    }
    if rec.corrupt_chunks > 0 {
        writeln!(
            out,
            "# {} skipped",
            plural(rec.corrupt_chunks, "corrupt chunk", "corrupt chunks")
        )?;
    }

    let latency_cells = |stats: Option<crate::LatencyStats>| -> Vec<String> {
        match stats {
            Some(s) => [s.total, s.mean, s.p50, s.p90, s.p99, s.max]
                .map(human_ns)
                .to_vec(),
            None => vec!["-".to_string(); 6],
        }
    };
    let shown = |f: &&Function| report.show_zero || f.calls > 0;
    let hidden = report.functions.iter().filter(|f| !shown(f)).count();
    let mut headers = vec!["PROBE".to_string()];
    let mut rows: Vec<(Vec<String>, String)> = Vec::new();
    match &report.groups {
        None => {
            for f in report.functions.iter().filter(shown) {
                let mut cells = vec![f.probe.clone(), f.calls.to_string()];
                cells.extend(latency_cells(f.latency_stats()));
                rows.push((cells, notes(f)));
            }
        }
        Some(groups) => {
            headers.push(groups.key.to_uppercase());
            let mut by_probe: std::collections::HashMap<
                &str,
                Vec<&crate::model::breakdown::Group>,
            > = std::collections::HashMap::new();
            for g in &groups.rows {
                by_probe.entry(g.probe.as_str()).or_default().push(g);
            }
            for f in report.functions.iter().filter(shown) {
                for g in by_probe.get(f.probe.as_str()).into_iter().flatten() {
                    let mut cells = vec![f.probe.clone(), group_cell(&g.value)];
                    cells.push(g.stats.calls.to_string());
                    cells.extend(latency_cells(g.stats.latency.stats()));
                    rows.push((cells, String::new()));
                }
            }
        }
    }
    headers.extend(["CALLS", "TOTAL", "MEAN", "P50", "P90", "P99", "MAX"].map(str::to_string));
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for (cells, _) in &rows {
        for (w, c) in widths.iter_mut().zip(cells) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String], note: &str| -> String {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w.saturating_sub(c.chars().count());
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        if !note.is_empty() {
            s.push_str("  ");
            s.push_str(note);
        }
        s
    };
    writeln!(out, "{}", line(&headers, ""))?;
    for (cells, note) in &rows {
        writeln!(out, "{}", line(cells, note))?;
    }
    if let Some(groups) = &report.groups {
        if !groups.capped.is_empty() {
            writeln!(
                out,
                "# more than {} values of {} for {}: the rest are summed in [other]",
                crate::model::breakdown::MAX_GROUPS,
                groups.key,
                groups.capped.join(", ")
            )?;
        }
    }
    for f in report
        .functions
        .iter()
        .filter(|f| f.recorded_calls < f.calls || f.max_weight > 1)
    {
        writeln!(out, "# {}", coverage_note(f))?;
    }
    if hidden > 0 {
        writeln!(
            out,
            "# {} no calls (--show-zero lists them)",
            plural(hidden as u64, "probe had", "probes had")
        )?;
    }
    if let Some(note) = probe_cost_note(report) {
        writeln!(out, "# {note}")?;
    }
    Ok(())
}

/// `latencies include ≈410 ns of probe cost per call` (SPEC.md, "Probe sites and probe
/// cost"): the calibrated cost of the shown probes that have latencies, a range when their
/// ways differ; None when the recording measured none.
pub fn probe_cost_note(report: &Report) -> Option<String> {
    let costs = report
        .functions
        .iter()
        .filter(|f| report.show_zero || f.calls > 0)
        .filter_map(|f| f.probe_cost_ns);
    let (lo, hi) = costs.fold(None, |acc: Option<(u64, u64)>, c| {
        Some(acc.map_or((c, c), |(lo, hi)| (lo.min(c), hi.max(c))))
    })?;
    let amount = if human_ns(lo) == human_ns(hi) {
        format!("≈{}", human_ns(hi))
    } else {
        format!("≈{} to {}", human_ns(lo), human_ns(hi))
    };
    Some(if report.probe_cost_subtracted {
        format!("{amount} of probe cost per call taken off the latencies (--subtract-probe-cost)")
    } else {
        format!(
            "latencies include {amount} of probe cost per call (--subtract-probe-cost takes it off)"
        )
    })
}

fn group_cell(v: &GroupValue) -> String {
    match v {
        GroupValue::Number(n) => n.to_string(),
        GroupValue::Hex(x) => format!("{x:#x}"),
        GroupValue::Text(t) => t.clone(),
        GroupValue::Null => "(none)".to_string(),
        GroupValue::Other => "[other]".to_string(),
    }
}

/// Writes `--hist`'s histograms in bpftrace's `hist()` layout, one per probe:
///
/// ```text
/// @app:alloc size:
/// [2K, 4K)              12 |@@@@@@@@@@@@                                        |
/// [4K, 8K)              52 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
/// ```
pub fn write_value_histograms(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    for h in report.histograms.iter().flatten() {
        writeln!(out)?;
        writeln!(out, "@{} {}:", h.probe, h.arg)?;
        let max = h.buckets.iter().map(|b| b.2).max().unwrap_or(1).max(1);
        for &(low, high, n) in &h.buckets {
            let label = format!("[{}, {})", value_label(low), value_label(high));
            let bar = (n * 52 / max) as usize;
            writeln!(out, "{label:<20}{n:>8} |{:<52}|", "@".repeat(bar))?;
        }
        if h.faults > 0 {
            writeln!(out, "(fault){:>21}", h.faults)?;
        }
    }
    Ok(())
}

/// A bucket bound: a power of two as bpftrace writes it (`4K`), anything else in full.
fn value_label(v: i128) -> String {
    let m = v.unsigned_abs();
    if m >= 1024 && m.is_power_of_two() {
        let e = m.trailing_zeros() as usize;
        let label = pow2_label(e);
        if v < 0 {
            format!("-{label}")
        } else {
            label
        }
    } else {
        v.to_string()
    }
}

/// What the outputs built from events cover, for a probe whose calls came from the kernel's
/// counts or whose events were sampled: stacks, args, groups and per-process counts see only
/// the recorded calls; under sampling, stacks, groups and per-process counts weigh each by
/// the calls it stands for.
pub fn coverage_note(f: &Function) -> String {
    let counted = if f.from_kernel {
        "calls and latency counted in the kernel; "
    } else {
        ""
    };
    if f.max_weight > 1 {
        return format!(
            "{}: {counted}{} sampled out under ring pressure: stacks, args, groups and \
             per-process counts come from {} recorded calls (1 in up to {} kept), each \
             counted as the calls it stands for, an estimate of {} of {} calls",
            f.probe,
            plural(f.sampled, "call", "calls"),
            f.recorded_calls,
            f.max_weight,
            f.weighted_calls,
            f.calls
        );
    }
    let why = match (f.lost > 0, f.sampled > 0) {
        (_, true) => "sampled under ring pressure",
        _ => "events lost",
    };
    format!(
        "{}: {counted}stacks, args and per-process counts cover {} of {} calls ({why})",
        f.probe, f.recorded_calls, f.calls
    )
}

fn notes(f: &Function) -> String {
    let mut parts = Vec::new();
    if f.kind == urec_format::ProbeKind::EntryReturn && f.returns != f.calls {
        parts.push(format!("returns={}", f.returns));
    }
    for (name, v) in [
        ("in_flight", f.in_flight),
        ("unmatched", f.unmatched),
        ("lost", f.lost),
    ] {
        if v > 0 {
            parts.push(format!("{name}={v}"));
        }
    }
    parts.join(" ")
}

/// Writes a log2 latency histogram per function, in bpftrace's `hist()` layout:
///
/// ```text
/// @bash:readline latency (ns):
/// [256, 512)            12 |@@@@@@@@@@@@                                        |
/// [512, 1K)             52 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
/// ```
/// Rows run from the lowest to the highest non-empty bucket; functions without matched calls
/// are skipped.
pub fn write_histograms(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    for f in &report.functions {
        let buckets = f.latency.log2_buckets();
        let Some(first) = buckets.iter().position(|&n| n > 0) else {
            continue;
        };
        let last = buckets.iter().rposition(|&n| n > 0).unwrap_or(first);
        let max = buckets.iter().copied().max().unwrap_or(1).max(1);
        writeln!(out)?;
        writeln!(out, "@{} latency (ns):", f.probe)?;
        for (k, &n) in buckets.iter().enumerate().take(last + 1).skip(first) {
            let label = match k {
                0 => "[0]".to_string(),
                1 => "[1]".to_string(),
                _ => format!("[{}, {})", pow2_label(k - 1), pow2_label(k)),
            };
            let bar = (n * 52 / max) as usize;
            writeln!(out, "{label:<20}{n:>8} |{:<52}|", "@".repeat(bar))?;
        }
    }
    Ok(())
}

/// `2^e` as bpftrace writes it: `512`, `1K`, `2M`, `4G`, ...
fn pow2_label(e: usize) -> String {
    let suffixes = ["", "K", "M", "G", "T", "P", "E", "Z"];
    let unit = (e / 10).min(suffixes.len() - 1);
    format!("{}{}", 1u128 << (e - unit * 10), suffixes[unit])
}

#[cfg(test)]
mod tests {
    use super::pow2_label;

    #[test]
    fn labels() {
        assert_eq!(pow2_label(1), "2");
        assert_eq!(pow2_label(9), "512");
        assert_eq!(pow2_label(10), "1K");
        assert_eq!(pow2_label(21), "2M");
        assert_eq!(pow2_label(63), "8E");
    }
}
