//! `--flamegraph`: an interactive SVG drawn by inferno from the folded stacks.

use std::io::{self, Write};

use crate::model::Report;
use crate::output::folded;
use crate::Weight;

/// The title inferno puts on top: the probes and the recording's command.
pub fn title(report: &Report) -> String {
    let probes = report.recording.probes.join(", ");
    let command = if report.recording.command.is_empty() {
        "urec".to_string()
    } else {
        report.recording.command.clone()
    };
    format!("{probes} — {command}")
}

/// Draws `report` as a flamegraph SVG. With no stacks at all, writes inferno's "no valid
/// input" SVG and succeeds.
pub fn write(report: &Report, weight: Weight, out: &mut dyn Write) -> io::Result<()> {
    let lines = folded::lines(report, weight);
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title(report);
    opts.count_name = match weight {
        Weight::Calls => "calls".to_string(),
        Weight::Latency => "ns".to_string(),
    };
    let mut subtitle = format!(
        "{} · {}",
        urec_format::plural(report.recording.events, "event", "events"),
        crate::human_ns(report.recording.duration_ns)
    );
    if let Some(c) = crate::model::coverage(report) {
        subtitle.push_str(&format!(" · {c}"));
    }
    opts.subtitle = Some(subtitle);
    let result = inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out);
    if lines.is_empty() {
        // inferno has drawn its "no valid input" SVG and reports an error; an empty recording
        // is not a failure of ours (the caller warns about it).
        return Ok(());
    }
    result
}
