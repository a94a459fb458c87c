//! The probes' in-kernel counts (SPEC.md, "Exact at any rate"): calls, returns, rejects and the
//! latency histogram every BPF program keeps per probe in maps that no ring-buffer overflow can
//! drop, read back as [`Aggregate`] records.
//!
//! The file gets cumulative snapshots, and only of the probes whose counts changed since the
//! last one ([`KernelCounts::changed`]), every checkpoint and when the recording stops: a reader
//! keeps the last snapshot of each probe, so a recorder killed with `kill -9` leaves the counts
//! of its last checkpoint, and a long quiet recording does not grow by them.
//!
//! # Memory
//!
//! Per probe: one `struct urec_agg` (64 bytes) per possible CPU, and one shared histogram of
//! [`log_linear::kernel_buckets`]`(bits)` 8-byte counters: 2,496 counters (19,968 bytes) at the
//! full 6 sub-bucket bits (≤ 0.8% error). All histograms together stay within [`HIST_BUDGET`]:
//! past 3,360 probes the bits drop ([`hist_bits`]: 5 bits up to 6,553 probes, 4 up to 12,787,
//! ...), and the report's percentiles are that much coarser (min, max, mean and counts stay
//! exact).

use std::os::fd::AsFd;

use anyhow::{bail, Context, Result};
use libbpf_rs::{MapCore, MapFlags};
use urec_bpf::UrecSkel;
use urec_format::{log_linear, Aggregate, LatencyAggregate, ProbeId, ProbeKind};

/// The most memory all latency histograms of a recording take (64 MiB).
pub const HIST_BUDGET: usize = 64 << 20;

/// Sub-bucket bits of the latency histograms of `probes` probes: the finest whose histograms
/// fit in [`HIST_BUDGET`].
pub fn hist_bits(probes: u32) -> u32 {
    (0..=log_linear::KERNEL_MAX_BITS)
        .rev()
        .find(|&bits| probes as usize * log_linear::kernel_buckets(bits) * 8 <= HIST_BUDGET)
        .unwrap_or(0)
}

/// Offsets of `struct urec_agg`'s fields, in u64s.
const CALLS: usize = 0;
const RETURNS: usize = 1;
const FILTERED: usize = 2;
const SAMPLED: usize = 3;
const LAT_COUNT: usize = 4;
const LAT_TOTAL: usize = 5;
const LAT_MIN: usize = 6;
const LAT_MAX: usize = 7;
const AGG_WORDS: usize = 8;

/// The `hist` map, mapped read-only into the recorder: reading 2,496 counters a probe a second
/// through `bpf(BPF_MAP_LOOKUP_ELEM)` would cost a syscall each.
struct HistMapping {
    ptr: *const u64,
    len: usize,
}

impl HistMapping {
    fn counters(&self) -> usize {
        self.len / 8
    }

    /// Counter `i`, which the BPF programs increment atomically meanwhile.
    fn get(&self, i: usize) -> u64 {
        if i >= self.counters() {
            return 0;
        }
        // SAFETY: `i` is inside the mapping, which lives as long as `self`; the counters are
        // aligned u64s that the kernel only changes with atomic adds.
        unsafe { std::sync::atomic::AtomicU64::from_ptr(self.ptr.add(i).cast_mut()) }
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for HistMapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `KernelCounts::new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast_mut().cast(), self.len) };
    }
}

/// Reads the probes' in-kernel counts and says which changed.
pub struct KernelCounts {
    kinds: Vec<ProbeKind>,
    bits: u32,
    buckets: usize,
    hist: HistMapping,
    /// Per probe: the (calls, returns, filtered, sampled, latencies) last read, which is also
    /// what was last written (a probe's snapshot is written whenever these change).
    written: Vec<[u64; 5]>,
}

impl KernelCounts {
    /// `kinds[id]`: probe `id`'s kind; `bits`: the histograms' sub-bucket bits, as loaded.
    pub fn new(skel: &UrecSkel<'_>, kinds: Vec<ProbeKind>, bits: u32) -> Result<Self> {
        let buckets = log_linear::kernel_buckets(bits);
        let counters = kinds.len().max(1) * buckets;
        let len = counters * 8;
        let fd = skel.maps.hist.as_fd();
        // SAFETY: a fresh read-only shared mapping of the map's fd; BPF_F_MMAPABLE arrays map
        // their values from offset 0, `max_entries * 8` bytes (what `load` sized).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!(
                "mapping the latency histograms: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Self {
            written: vec![[0; 5]; kinds.len()],
            kinds,
            bits,
            buckets,
            hist: HistMapping {
                ptr: ptr.cast(),
                len,
            },
        })
    }

    /// Calls each probe's predicate rejected, as of the last [`Self::changed`] (probe id
    /// order).
    pub fn filtered(&self) -> Vec<(ProbeId, u64)> {
        (0..)
            .zip(&self.written)
            .filter(|(_, w)| w[2] > 0)
            .map(|(id, w)| (id, w[2]))
            .collect()
    }

    /// Calls of every probe, as of the last [`Self::changed`].
    pub fn total_calls(&self) -> u64 {
        self.written.iter().map(|w| w[0]).sum()
    }

    /// Calls sampled out under ring pressure, all probes together, as of the last
    /// [`Self::changed`].
    pub fn sampled(&self) -> u64 {
        self.written.iter().map(|w| w[3]).sum()
    }

    /// Reads every probe's counts, once: snapshots of those that changed since the last call.
    pub fn changed(&mut self, skel: &UrecSkel<'_>) -> Result<Vec<Aggregate>> {
        let mut out = Vec::new();
        for id in 0..self.kinds.len() as u32 {
            let s = self.sums(skel, id)?;
            let key = [s[CALLS], s[RETURNS], s[FILTERED], s[SAMPLED], s[LAT_COUNT]];
            if key == self.written[id as usize] {
                continue;
            }
            self.written[id as usize] = key;
            out.push(self.aggregate(id, &s));
        }
        Ok(out)
    }

    /// Cumulative counts of every probe, changed or not (what `urec top` differences).
    pub fn snapshot(&self, skel: &UrecSkel<'_>) -> Result<Vec<Aggregate>> {
        (0..self.kinds.len() as u32)
            .map(|id| Ok(self.aggregate(id, &self.sums(skel, id)?)))
            .collect()
    }

    /// Probe `id`'s latency as counted so far (None when no call returned), for the probe
    /// cost's calibration (`crate::calibrate`).
    pub fn latency(&self, skel: &UrecSkel<'_>, id: ProbeId) -> Result<Option<LatencyAggregate>> {
        if id as usize >= self.kinds.len() {
            return Ok(None);
        }
        Ok(self.aggregate(id, &self.sums(skel, id)?).latency)
    }

    fn aggregate(&self, id: ProbeId, s: &[u64; AGG_WORDS]) -> Aggregate {
        let both = self.kinds[id as usize] == ProbeKind::EntryReturn;
        let latency = (both && s[LAT_COUNT] > 0).then(|| {
            let base = id as usize * self.buckets;
            let buckets = (0..self.buckets)
                .filter_map(|i| {
                    let n = self.hist.get(base + i);
                    (n > 0).then_some((i as u32, n))
                })
                .collect();
            LatencyAggregate {
                count: s[LAT_COUNT],
                total: s[LAT_TOTAL],
                min: s[LAT_MIN],
                max: s[LAT_MAX],
                sub_bits: self.bits as u8,
                buckets,
            }
        });
        Aggregate {
            probe: id,
            calls: s[CALLS],
            returns: s[RETURNS],
            in_flight: if both {
                s[CALLS].saturating_sub(s[RETURNS])
            } else {
                0
            },
            filtered: s[FILTERED],
            sampled: s[SAMPLED],
            latency,
        }
    }

    /// `struct urec_agg` of probe `id`, summed over CPUs (min and max over the CPUs that
    /// measured a latency).
    fn sums(&self, skel: &UrecSkel<'_>, id: ProbeId) -> Result<[u64; AGG_WORDS]> {
        let mut out = [0u64; AGG_WORDS];
        let Some(per_cpu) = skel
            .maps
            .aggs
            .lookup_percpu(&id.to_ne_bytes(), MapFlags::ANY)
            .context("reading the probes' in-kernel counts")?
        else {
            return Ok(out);
        };
        let mut any_latency = false;
        for cpu in &per_cpu {
            let mut w = [0u64; AGG_WORDS];
            for (i, chunk) in cpu.chunks_exact(8).take(AGG_WORDS).enumerate() {
                w[i] = u64::from_ne_bytes(chunk.try_into().unwrap_or([0; 8]));
            }
            for i in [CALLS, RETURNS, FILTERED, SAMPLED, LAT_COUNT, LAT_TOTAL] {
                out[i] = out[i].saturating_add(w[i]);
            }
            if w[LAT_COUNT] > 0 {
                out[LAT_MIN] = if any_latency {
                    out[LAT_MIN].min(w[LAT_MIN])
                } else {
                    w[LAT_MIN]
                };
                out[LAT_MAX] = out[LAT_MAX].max(w[LAT_MAX]);
                any_latency = true;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_fit_the_budget() {
        assert_eq!(hist_bits(1), 6);
        assert_eq!(hist_bits(3360), 6);
        assert_eq!(hist_bits(3361), 5);
        assert_eq!(hist_bits(6553), 5);
        assert_eq!(hist_bits(6554), 4);
        assert_eq!(hist_bits(12_787), 4);
        assert_eq!(hist_bits(12_788), 3);
        for n in [1u32, 100, 5000, 50_000, 200_000] {
            let bits = hist_bits(n);
            assert!(n as usize * log_linear::kernel_buckets(bits) * 8 <= HIST_BUDGET || bits == 0);
        }
    }
}
