//! Human units for durations: 3 significant digits, the largest unit that keeps the value ≥ 1.

/// Formats nanoseconds as `987ns`, `1.23µs`, `45.6ms`, `789s` (3 significant digits; values of
/// 1000 s and more keep all their integer digits).
pub fn human_ns(ns: u64) -> String {
    if ns < 1000 {
        return format!("{ns}ns");
    }
    const UNITS: [(&str, f64); 3] = [("µs", 1e3), ("ms", 1e6), ("s", 1e9)];
    let mut i = match ns {
        0..=999_999 => 0,
        1_000_000..=999_999_999 => 1,
        _ => 2,
    };
    loop {
        let (unit, scale) = UNITS[i];
        let x = ns as f64 / scale;
        let decimals = if x >= 99.95 {
            0
        } else if x >= 9.995 {
            1
        } else {
            2
        };
        let text = format!("{x:.decimals$}");
        // 999.7µs rounds to "1000": say 1.00ms instead.
        if decimals == 0 && x >= 999.5 && i + 1 < UNITS.len() {
            i += 1;
            continue;
        }
        return format!("{text}{unit}");
    }
}

#[cfg(test)]
mod tests {
    use super::human_ns;

    #[test]
    fn three_significant_digits() {
        let cases = [
            (0, "0ns"),
            (999, "999ns"),
            (1000, "1.00µs"),
            (1234, "1.23µs"),
            (9_999, "10.0µs"),
            (12_345, "12.3µs"),
            (99_960, "100µs"),
            (123_456, "123µs"),
            (999_700, "1.00ms"),
            (45_600_000, "45.6ms"),
            (1_500_000_000, "1.50s"),
            (789_000_000_000, "789s"),
            (1_234_000_000_000, "1234s"),
        ];
        for (ns, want) in cases {
            assert_eq!(human_ns(ns), want, "{ns}");
        }
    }
}
