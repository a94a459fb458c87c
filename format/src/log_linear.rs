//! The log-linear bucket layout shared by the in-kernel latency histograms (written into the
//! file by [`crate::Aggregate`]) and the report's own histograms: one layout, one home, so that
//! a kernel histogram merges into a report histogram bucket by bucket.
//!
//! With `bits` sub-bucket bits, values below `2^bits` get a bucket each; above, every power of
//! two `[2^e, 2^(e+1))` is cut into `2^bits` equal buckets (the HdrHistogram idea). A bucket is
//! at most `1/2^bits` of its lower bound wide, so answering with its midpoint is off by at most
//! `1/2^(bits+1)`: 0.78% at the kernel's 6 bits, 0.39% at the report's 7.

/// Largest sub-bucket bits of a kernel histogram (64 sub-buckets per power of two).
pub const KERNEL_MAX_BITS: u32 = 6;

/// Kernel histograms stop at `2^KERNEL_TOP_EXP` ns (4.9 hours): longer latencies fall in the
/// last bucket (min, max and total stay exact), which keeps one probe's histogram at
/// [`kernel_buckets`]`(6)` = 2,496 counters (19,968 bytes).
pub const KERNEL_TOP_EXP: u32 = 44;

/// The bucket of `v`.
pub fn bucket(v: u64, bits: u32) -> usize {
    let sub = 1u64 << bits;
    if v < sub {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= bits
    let shift = e - bits;
    let mant = (v >> shift) - sub;
    ((u64::from(shift) + 1) * sub + mant) as usize
}

/// `[low, high]` (inclusive) of bucket `i`.
pub fn bounds(i: usize, bits: u32) -> (u64, u64) {
    let sub = 1u64 << bits;
    let i = i as u64;
    if i < sub {
        return (i, i);
    }
    let shift = i / sub - 1;
    let low = (sub + i % sub) << shift;
    (low, low + ((1u64 << shift) - 1))
}

/// Counters of one kernel histogram with `bits` sub-bucket bits: buckets `0..` this.
pub fn kernel_buckets(bits: u32) -> usize {
    bucket((1u64 << KERNEL_TOP_EXP) - 1, bits) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_sizes() {
        assert_eq!(kernel_buckets(6), 2496);
        assert_eq!(kernel_buckets(0), 45);
        for bits in 0..=KERNEL_MAX_BITS {
            assert_eq!(kernel_buckets(bits), ((45 - bits) << bits) as usize);
        }
    }

    #[test]
    fn buckets_tile_the_range() {
        for bits in [0, 3, 6, 7] {
            let mut next = 0u64;
            for i in 0..kernel_buckets(bits.min(6)) {
                let (lo, hi) = bounds(i, bits);
                assert_eq!(lo, next, "bits {bits} bucket {i}");
                assert_eq!(bucket(lo, bits), i);
                assert_eq!(bucket(hi, bits), i);
                next = hi + 1;
            }
        }
    }

    #[test]
    fn midpoint_error_is_bounded() {
        for v in [1000u64, 4097, 123_456_789, 1 << 40] {
            let (lo, hi) = bounds(bucket(v, 6), 6);
            let mid = lo + (hi - lo) / 2;
            assert!((mid as f64 - v as f64).abs() / v as f64 <= 1.0 / 128.0);
        }
    }
}
