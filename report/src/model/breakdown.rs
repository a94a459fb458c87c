//! Breakdowns of a probe's calls: `--group-by KEY` (calls and latency per pid, tid, comm,
//! caller or fetched argument value) and `--hist ARG` (a log2 histogram of an argument's
//! values, bpftrace's `hist(arg)`).
//!
//! Both are computed in the aggregation's one pass. Groups are keyed by small values while
//! reading (a pid, an interned comm, the aggregation slot of the call's stack for `caller`,
//! the raw bits of an argument) and turned into what outputs show at the end, when the stacks
//! are symbolized. At most [`MAX_GROUPS`] keys are kept per probe; calls with any other key are
//! summed under `[other]`, so a file of a million distinct argument values costs 10,000 rows.

use std::collections::HashMap;

use urec_format::{ArgType, ArgValue};

use crate::model::histogram::LatencyHistogram;

/// Distinct keys kept per probe; the rest go to `[other]`.
pub const MAX_GROUPS: usize = 10_000;

/// What `--group-by` splits calls by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupBy {
    /// Process id.
    Pid,
    /// Thread id.
    Tid,
    /// Command name at the call.
    Comm,
    /// The function that called the probed one (the frame below it in the stack).
    Caller,
    /// A fetched argument, by its NAME (or `retval` for a `$retval` fetch).
    Arg(String),
}

impl GroupBy {
    /// Parses `pid`, `tid`, `comm`, `caller`, or any other word as an argument name.
    pub fn parse(text: &str) -> Self {
        match text {
            "pid" => GroupBy::Pid,
            "tid" => GroupBy::Tid,
            "comm" => GroupBy::Comm,
            "caller" => GroupBy::Caller,
            other => GroupBy::Arg(other.to_string()),
        }
    }

    /// The key's name in outputs (`{"size": 4096}` in JSON, the table's column header).
    pub fn name(&self) -> &str {
        match self {
            GroupBy::Pid => "pid",
            GroupBy::Tid => "tid",
            GroupBy::Comm => "comm",
            GroupBy::Caller => "caller",
            GroupBy::Arg(name) => name,
        }
    }
}

/// An argument's value as a key: raw bits, string bytes, or a faulted read.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ArgKey {
    Int(u64),
    Str(Box<[u8]>),
    Fault,
    /// The call has no value (an entry whose return never came, for a `$retval` key).
    Missing,
}

impl ArgKey {
    pub(crate) fn of(value: Option<&ArgValue>) -> Self {
        match value {
            Some(ArgValue::Int(v)) => ArgKey::Int(*v),
            Some(ArgValue::Str { bytes, .. }) => ArgKey::Str(bytes.clone().into_boxed_slice()),
            Some(ArgValue::Fault) => ArgKey::Fault,
            None => ArgKey::Missing,
        }
    }
}

/// A group key while reading.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum RawKey {
    Pid(u32),
    Tid(u32),
    Comm(u32),
    /// The aggregation slot of the call's stack; its caller is named after symbolization.
    Stack(u32),
    Arg(ArgKey),
}

/// A group key as outputs show it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupValue {
    /// pid, tid, and `u`/`s`/bitfield arguments (signed ones as negative numbers).
    Number(i128),
    /// `x` arguments, as `0x...`.
    Hex(u64),
    /// Strings, comm and caller.
    Text(String),
    /// A faulted read, or no value.
    Null,
    /// Every key beyond [`MAX_GROUPS`].
    Other,
}

impl GroupValue {
    /// An argument value shown as its type says.
    pub(crate) fn of_arg(key: &ArgKey, ty: ArgType) -> Self {
        match key {
            ArgKey::Int(v) => match signed_value(*v, ty) {
                Some(n) => GroupValue::Number(n),
                None => GroupValue::Hex(*v),
            },
            ArgKey::Str(b) => GroupValue::Text(String::from_utf8_lossy(b).into_owned()),
            ArgKey::Fault | ArgKey::Missing => GroupValue::Null,
        }
    }
}

/// The numeric value of raw bits under `ty`, `None` for hex types (shown as hex, still
/// numbers for histograms: see [`numeric`]).
fn signed_value(v: u64, ty: ArgType) -> Option<i128> {
    let mask = |bits: u8| {
        if bits >= 64 {
            v
        } else {
            v & ((1u64 << bits) - 1)
        }
    };
    match ty {
        ArgType::Unsigned(bits) => Some(i128::from(mask(bits))),
        ArgType::Signed(bits) => {
            let bits = u32::from(bits.clamp(1, 64));
            let shift = 64 - bits;
            Some(i128::from(((v << shift) as i64) >> shift))
        }
        ArgType::Bitfield { width, offset, .. } => {
            let shifted = v.checked_shr(u32::from(offset)).unwrap_or(0);
            let m = if width >= 64 {
                shifted
            } else {
                shifted & ((1u64 << width) - 1)
            };
            Some(i128::from(m))
        }
        ArgType::Hex(_) | ArgType::String => None,
    }
}

/// The number a histogram counts for `value` under `ty`; `None` for strings and faults.
pub(crate) fn numeric(value: &ArgValue, ty: ArgType) -> Option<i128> {
    match value {
        ArgValue::Int(v) => match ty {
            ArgType::Hex(bits) => Some(i128::from(if bits >= 64 {
                *v
            } else {
                v & ((1u64 << bits) - 1)
            })),
            _ => signed_value(*v, ty),
        },
        _ => None,
    }
}

/// Calls and latency of one group.
#[derive(Clone, Debug, Default)]
pub struct GroupStats {
    /// Calls.
    pub calls: u64,
    /// Latencies of its matched calls.
    pub latency: LatencyHistogram,
}

/// One probe's groups while reading.
#[derive(Default)]
pub(crate) struct ProbeGroups {
    pub(crate) keys: HashMap<RawKey, GroupStats>,
    pub(crate) other: GroupStats,
    /// Keys that went to `other` (counted once per call, not per distinct key).
    pub(crate) overflowed: bool,
}

impl ProbeGroups {
    /// The stats of `key`; `[other]` once [`MAX_GROUPS`] keys exist. `Stack` keys are not
    /// capped here: callers merge by name later, and the cap applies then.
    pub(crate) fn slot(&mut self, key: &RawKey) -> &mut GroupStats {
        if !self.keys.contains_key(key)
            && self.keys.len() >= MAX_GROUPS
            && !matches!(key, RawKey::Stack(_))
        {
            self.overflowed = true;
            return &mut self.other;
        }
        self.keys.entry(key.clone()).or_default()
    }
}

/// One row of `--group-by`: a probe, a key value, its calls and latency.
#[derive(Clone, Debug)]
pub struct Group {
    /// Probe display name.
    pub probe: String,
    /// The key's value.
    pub value: GroupValue,
    /// Calls and latency.
    pub stats: GroupStats,
}

/// `--group-by`'s result: the key's name and the rows, per probe in the functions' order, then
/// by `--sort`.
#[derive(Clone, Debug)]
pub struct Groups {
    /// The key's name (`pid`, `size`, ...).
    pub key: String,
    /// The rows.
    pub rows: Vec<Group>,
    /// Probes whose keys passed [`MAX_GROUPS`] (their extra calls are in an `[other]` row).
    pub capped: Vec<String>,
}

/// A log2 histogram of one probe's values of one argument.
#[derive(Clone, Debug, Default)]
pub struct ValueHistogram {
    /// Probe display name.
    pub probe: String,
    /// The argument's name.
    pub arg: String,
    /// `(low, high, count)`: low inclusive, high exclusive, lowest first; only non-empty ones.
    pub buckets: Vec<(i128, i128, u64)>,
    /// Values that were not numbers (faulted reads).
    pub faults: u64,
}

/// Log2 buckets of signed values: `[0, 1)`, `[1, 2)`, `[2, 4)`, ... and, mirrored, `[-1, 0)`,
/// `[-3, -1)`, `[-7, -3)`, ...: `v` with `2^k <= |v| < 2^(k+1)` shares a bucket with the
/// other values of that power of two and sign.
#[derive(Clone, Debug, Default)]
pub(crate) struct Log2 {
    /// Index 0: the value 0; 1 + k: positive, `2^k <= v < 2^(k+1)`.
    positive: Vec<u64>,
    /// Index k: negative, `2^k <= -v < 2^(k+1)`.
    negative: Vec<u64>,
    pub(crate) faults: u64,
}

impl Log2 {
    pub(crate) fn record(&mut self, v: Option<i128>) {
        let Some(v) = v else {
            self.faults += 1;
            return;
        };
        let (side, i) = if v >= 0 {
            let i = if v == 0 {
                0
            } else {
                1 + (127 - v.leading_zeros()) as usize
            };
            (&mut self.positive, i)
        } else {
            let m = v.unsigned_abs();
            (&mut self.negative, (127 - m.leading_zeros()) as usize)
        };
        if i >= side.len() {
            side.resize(i + 1, 0);
        }
        side[i] += 1;
    }

    pub(crate) fn buckets(&self) -> Vec<(i128, i128, u64)> {
        let mut out = Vec::new();
        for (k, &n) in self.negative.iter().enumerate().rev() {
            if n > 0 {
                let low = -(1i128 << (k + 1)) + 1;
                let high = -(1i128 << k) + 1;
                out.push((low, high, n));
            }
        }
        for (i, &n) in self.positive.iter().enumerate() {
            if n > 0 {
                let (low, high) = if i == 0 {
                    (0, 1)
                } else {
                    (1i128 << (i - 1), 1i128 << i)
                };
                out.push((low, high, n));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log2_buckets_mirror_negatives() {
        let mut h = Log2::default();
        for v in [0, 1, 2, 3, 4, 4095, 4096, -1, -2, -3, -4] {
            h.record(Some(v));
        }
        h.record(None);
        assert_eq!(
            h.buckets(),
            vec![
                (-7, -3, 1),
                (-3, -1, 2),
                (-1, 0, 1),
                (0, 1, 1),
                (1, 2, 1),
                (2, 4, 2),
                (4, 8, 1),
                (2048, 4096, 1),
                (4096, 8192, 1),
            ]
        );
        assert_eq!(h.faults, 1);
        let mut top = Log2::default();
        top.record(Some(i128::from(u64::MAX)));
        assert_eq!(top.buckets(), vec![(1 << 63, 1 << 64, 1)]);
    }

    #[test]
    fn values_follow_the_type() {
        let v = u64::MAX - 1; // -2 as s64
        assert_eq!(
            GroupValue::of_arg(&ArgKey::Int(v), ArgType::Signed(64)),
            GroupValue::Number(-2)
        );
        assert_eq!(
            GroupValue::of_arg(&ArgKey::Int(0x1ff), ArgType::Unsigned(8)),
            GroupValue::Number(0xff)
        );
        assert_eq!(
            GroupValue::of_arg(&ArgKey::Int(16), ArgType::Hex(64)),
            GroupValue::Hex(16)
        );
        assert_eq!(
            GroupValue::of_arg(&ArgKey::Fault, ArgType::Hex(64)),
            GroupValue::Null
        );
        assert_eq!(numeric(&ArgValue::Int(255), ArgType::Signed(8)), Some(-1));
    }
}
