//! `--diff BASE`: the report compared with a base recording, probe by probe (SPEC.md, "urec
//! report"); [`crate::output::diff`] draws the comparison.

use crate::model::{DiffRow, Report, Side};

/// One row per probe of either report: the input's probes in its order, then those only BASE
/// has, in BASE's order.
pub fn rows(base: &Report, new: &Report) -> Vec<DiffRow> {
    let side = |r: &Report, probe: &str| {
        r.functions.iter().find(|f| f.probe == probe).map(|f| Side {
            calls: f.calls,
            latency: f.latency_stats(),
        })
    };
    let mut rows: Vec<DiffRow> = new
        .functions
        .iter()
        .map(|f| DiffRow {
            probe: f.probe.clone(),
            base: side(base, &f.probe),
            new: side(new, &f.probe),
        })
        .collect();
    for f in &base.functions {
        if !new.functions.iter().any(|n| n.probe == f.probe) {
            rows.push(DiffRow {
                probe: f.probe.clone(),
                base: side(base, &f.probe),
                new: None,
            });
        }
    }
    rows
}
