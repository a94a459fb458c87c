//! Latency distributions in bounded memory.
//!
//! A report over millions of calls cannot keep every latency, yet users want percentiles they
//! can trust. [`LatencyHistogram`] is a log-linear histogram (the HdrHistogram idea): values below
//! 128 ns get a bucket each; above, every power of two `[2^e, 2^(e+1))` is cut into 128 equal
//! buckets. A bucket is therefore at most 1/128 of its lower bound wide, and answering with its
//! midpoint is off by at most 1/256 ≈ 0.4% — inside the 1% SPEC.md promises. The whole `u64`
//! range needs 7,424 counters; only those from the smallest to the largest value seen are
//! allocated (about 900 for latencies between a microsecond and a millisecond), which keeps the
//! thousands of histograms of `--group-by` small.
//!
//! min, max, total and count are kept exactly beside the buckets, and percentiles are clamped to
//! `[min, max]`, so a distribution of identical values reports that value exactly.
//!
//! Because every bucket lies inside one power of two, the log2 histogram that `--histogram` draws
//! (bpftrace's `hist()`) is derived exactly from the same counters.

use urec_format::{log_linear, LatencyAggregate};

/// Sub-buckets per power of two, as a power of two.
const SUB_BITS: u32 = 7;

/// A log-linear latency histogram with exact min/max/total/count. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct LatencyHistogram {
    /// Counters of buckets `first..first + buckets.len()`.
    buckets: Vec<u64>,
    first: usize,
    count: u64,
    total: u128,
    min: u64,
    max: u64,
}

/// Summary statistics of a [`LatencyHistogram`], in ns. Serialized as is by `report --json`
/// (`latency_ns`) and `urec top --json`: one shape for a latency summary wherever it appears.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LatencyStats {
    /// Smallest value, exact.
    pub min: u64,
    /// `total / count`, rounded down.
    pub mean: u64,
    /// Median (≤ 1% relative error).
    pub p50: u64,
    /// 90th percentile (≤ 1% relative error).
    pub p90: u64,
    /// 99th percentile (≤ 1% relative error).
    pub p99: u64,
    /// Largest value, exact.
    pub max: u64,
    /// Sum of all values, exact (saturating at `u64::MAX`).
    pub total: u64,
}

fn bucket_of(v: u64) -> usize {
    log_linear::bucket(v, SUB_BITS)
}

/// `[low, high]` (inclusive) of bucket `i`.
fn bucket_bounds(i: usize) -> (u64, u64) {
    log_linear::bounds(i, SUB_BITS)
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// The histogram of a probe's in-kernel latencies: each kernel bucket's count goes to the
    /// bucket of its midpoint here (the kernel's 64 sub-buckets are coarser than these 128, so
    /// percentiles keep the kernel's ≤ 0.8% error); count, total, min and max are the kernel's
    /// exact ones.
    pub fn from_kernel(k: &LatencyAggregate) -> Self {
        let mut h = Self::new();
        if k.count == 0 {
            return h;
        }
        for &(i, n) in &k.buckets {
            let (low, high) = log_linear::bounds(i as usize, k.sub_bits.into());
            h.add_to_bucket(bucket_of(low + (high - low) / 2), n);
        }
        h.count = k.count;
        h.total = u128::from(k.total);
        // (A file is not trusted to keep min <= max.)
        h.min = k.min.min(k.max);
        h.max = k.max;
        h
    }

    /// This histogram with `ns` taken off every value, never below 0
    /// (`--subtract-probe-cost` on latencies that only the kernel's counts hold): each bucket
    /// moves by its midpoint, so percentiles keep their error; count stays, min and max move
    /// exactly, and the total loses `ns` per value, or the value itself where it is below `ns`
    /// (judged by its bucket's midpoint: exact but for the one bucket holding `ns`).
    pub fn minus(&self, ns: u64) -> Self {
        if ns == 0 || self.count == 0 {
            return self.clone();
        }
        let mut h = Self::new();
        let mut taken: u128 = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 {
                let (low, high) = bucket_bounds(self.first + i);
                let mid = low + (high - low) / 2;
                h.add_to_bucket(bucket_of(mid.saturating_sub(ns)), n);
                taken += u128::from(mid.min(ns)) * u128::from(n);
            }
        }
        h.count = self.count;
        h.total = self.total.saturating_sub(taken);
        h.min = self.min.saturating_sub(ns);
        h.max = self.max.saturating_sub(ns);
        h
    }

    fn add_to_bucket(&mut self, b: usize, n: u64) {
        if self.buckets.is_empty() {
            self.first = b;
        } else if b < self.first {
            let grow = self.first - b;
            self.buckets.splice(0..0, std::iter::repeat_n(0, grow));
            self.first = b;
        }
        let i = b - self.first;
        if i >= self.buckets.len() {
            self.buckets.resize(i + 1, 0);
        }
        self.buckets[i] = self.buckets[i].saturating_add(n);
    }

    /// Adds one value.
    pub fn record(&mut self, v: u64) {
        self.add_to_bucket(bucket_of(v), 1);
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
        self.count += 1;
        self.total += u128::from(v);
    }

    /// Adds every value of `other` (several recordings merged): the result is the histogram
    /// of both sets of values, exactly as if they had been recorded into one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        let first = self.first.min(other.first);
        let end = (self.first + self.buckets.len()).max(other.first + other.buckets.len());
        let mut buckets = vec![0u64; end - first];
        for (i, &n) in self.buckets.iter().enumerate() {
            buckets[self.first - first + i] = buckets[self.first - first + i].saturating_add(n);
        }
        for (i, &n) in other.buckets.iter().enumerate() {
            buckets[other.first - first + i] = buckets[other.first - first + i].saturating_add(n);
        }
        self.buckets = buckets;
        self.first = first;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.count = self.count.saturating_add(other.count);
        self.total = self.total.saturating_add(other.total);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The value at percentile `p` (0..=100) by nearest rank: the smallest recorded value with
    /// at least `p`% of the values at or below it, within the bucket error. `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if n > 0 && seen >= rank {
                let (low, high) = bucket_bounds(self.first + i);
                let mid = low + (high - low) / 2;
                return Some(mid.clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// min/mean/p50/p90/p99/max/total, or `None` when no value was recorded.
    pub fn stats(&self) -> Option<LatencyStats> {
        if self.count == 0 {
            return None;
        }
        Some(LatencyStats {
            min: self.min,
            mean: (self.total / u128::from(self.count)) as u64,
            p50: self.percentile(50.0)?,
            p90: self.percentile(90.0)?,
            p99: self.percentile(99.0)?,
            max: self.max,
            total: u64::try_from(self.total).unwrap_or(u64::MAX),
        })
    }

    /// Exact counts per power of two: element `k` counts values `v` with `v == 0` for `k == 0`,
    /// else `2^(k-1) <= v < 2^k` (bpftrace's `hist()` buckets `[0]`, `[1]`, `[2, 4)`, ...).
    pub fn log2_buckets(&self) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for (i, &n) in self.buckets.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let (low, _) = bucket_bounds(self.first + i);
            let k = if low == 0 {
                0
            } else {
                64 - low.leading_zeros() as usize
            };
            if k >= out.len() {
                out.resize(k + 1, 0);
            }
            out[k] += n;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn merged_histograms_are_the_histogram_of_both() {
        let (mut a, mut b, mut both) = (
            LatencyHistogram::new(),
            LatencyHistogram::new(),
            LatencyHistogram::new(),
        );
        for v in [5u64, 300, 70_000] {
            a.record(v);
            both.record(v);
        }
        for v in [1u64, 9_000_000] {
            b.record(v);
            both.record(v);
        }
        a.merge(&b);
        assert_eq!(a.stats(), both.stats());
        assert_eq!(a.count(), 5);
        let mut empty = LatencyHistogram::new();
        empty.merge(&both);
        assert_eq!(empty.stats(), both.stats());
    }

    use super::*;

    #[test]
    fn minus_moves_every_value_and_stops_at_zero() {
        let (mut h, mut moved) = (LatencyHistogram::new(), LatencyHistogram::new());
        for v in [300u64, 450, 20_000, 2_000_000] {
            h.record(v);
            moved.record(v.saturating_sub(400));
        }
        let (m, want) = (h.minus(400).stats().unwrap(), moved.stats().unwrap());
        assert_eq!((m.min, m.max), (0, 1_999_600));
        assert_eq!((want.min, want.max, want.total), (0, 1_999_600, 2_019_250));
        assert!(
            m.total.abs_diff(want.total) <= 2,
            "{} vs {}",
            m.total,
            want.total
        );
        // Percentiles within a bucket's width of the shifted values'.
        for (a, b) in [(m.p50, want.p50), (m.p90, want.p90), (m.p99, want.p99)] {
            assert!(a.abs_diff(b) <= b / 100 + 1, "{a} vs {b}");
        }
        assert_eq!(h.minus(0).stats(), h.stats());
        assert_eq!(LatencyHistogram::new().minus(5).stats(), None);
    }

    #[test]
    fn buckets_cover_every_value_once() {
        for v in (0..5000u64).chain([u64::MAX, u64::MAX - 1, 1 << 40, (1 << 40) - 1]) {
            let (low, high) = bucket_bounds(bucket_of(v));
            assert!(low <= v && v <= high, "{v} not in [{low}, {high}]");
        }
        assert_eq!(bucket_of(u64::MAX), 7423);
        // Adjacent buckets touch.
        for i in 0..7423 {
            assert_eq!(bucket_bounds(i).1 + 1, bucket_bounds(i + 1).0, "bucket {i}");
        }
    }

    #[test]
    fn relative_error_below_one_percent() {
        let mut v = 1u64;
        while v < u64::MAX / 3 {
            let mut h = LatencyHistogram::new();
            h.record(1);
            h.record(v);
            h.record(u64::MAX / 2);
            let p = h.percentile(50.0).unwrap_or(0);
            let err = (p as f64 - v as f64).abs() / v as f64;
            assert!(err <= 0.01, "v={v} p50={p} err={err}");
            v = v * 3 / 2 + 1;
        }
    }

    #[test]
    fn exact_stats() {
        let mut h = LatencyHistogram::new();
        for v in 1..=100u64 {
            h.record(v * 1000);
        }
        let s = h.stats().unwrap_or_else(|| panic!("no stats"));
        assert_eq!(
            (s.min, s.max, s.total, s.mean),
            (1000, 100_000, 5_050_000, 50_500)
        );
        for (p, want) in [(s.p50, 50_000f64), (s.p90, 90_000.0), (s.p99, 99_000.0)] {
            assert!((p as f64 - want).abs() / want <= 0.01, "{p} vs {want}");
        }
        let mut same = LatencyHistogram::new();
        for _ in 0..10 {
            same.record(123_456_789);
        }
        let s = same.stats().unwrap_or_else(|| panic!("no stats"));
        assert_eq!(
            (s.p50, s.p99, s.mean),
            (123_456_789, 123_456_789, 123_456_789)
        );
    }

    #[test]
    fn window_grows_both_ways() {
        let mut h = LatencyHistogram::new();
        for v in [1_000_000, 1_000, 5_000_000, 7] {
            h.record(v);
        }
        let s = h.stats().unwrap_or_else(|| panic!("no stats"));
        assert_eq!((s.min, s.max), (7, 5_000_000));
        let p = h.percentile(40.0).unwrap_or(0);
        assert!((p as f64 - 1000.0).abs() / 1000.0 <= 0.01, "{p}");
        assert_eq!(h.buckets.len(), bucket_of(5_000_000) - 7 + 1);
    }

    #[test]
    fn log2() {
        let mut h = LatencyHistogram::new();
        for v in [0, 1, 2, 3, 4, 7, 8, 1000, 1023, 1024] {
            h.record(v);
        }
        assert_eq!(h.log2_buckets(), vec![1, 1, 2, 2, 1, 0, 0, 0, 0, 0, 2, 1]);
    }
}
