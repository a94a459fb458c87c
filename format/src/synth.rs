//! A synthetic recording, for benchmarks of the format and of the report.
//!
//! The workload is the one the format's size and speed targets are stated for: stack ids drawn
//! Zipf(1.1) over 4,096 distinct stacks of 8 to 30 frames, 4 probes, 8 threads of one process,
//! exponential gaps between events with a mean of 1 µs, entry and return alternating per
//! thread, each return carrying its latency. Its stacks are addresses inside the executable
//! mappings of the [`SynthBinary`]s given, so a report can rebase and symbolize them when
//! those are real binaries (`examples/synth.rs` picks some of this machine's).
//!
//! It is deterministic for a given [`SynthConfig::seed`], and needs no random-number crate.

use crate::types::*;

/// A binary the synthetic process maps, with the file range of its executable segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthBinary {
    /// Absolute path.
    pub path: String,
    /// Its build id, if known.
    pub build_id: Option<BuildId>,
    /// File offset of the executable segment, page-aligned.
    pub exec_offset: u64,
    /// Length of the executable segment in bytes.
    pub exec_len: u64,
    /// ELF virtual address of the executable segment (its `p_vaddr`, page-aligned down as
    /// `exec_offset` is).
    pub exec_vaddr: u64,
}

/// Parameters of the synthetic workload; `Default` is the benchmark's workload.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    /// Distinct stacks.
    pub stacks: u32,
    /// Zipf exponent of stack popularity.
    pub zipf_exponent: f64,
    /// Probes.
    pub probes: u32,
    /// Threads (of one process).
    pub threads: u32,
    /// Mean gap between consecutive events, ns (gaps are exponentially distributed).
    pub mean_gap_ns: f64,
    /// Seed of the pseudo-random generator.
    pub seed: u64,
    /// Binaries mapped by the process; placeholders under `/synthetic/` when empty.
    pub binaries: Vec<SynthBinary>,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            stacks: 4096,
            zipf_exponent: 1.1,
            probes: 4,
            threads: 8,
            mean_gap_ns: 1000.0,
            seed: 0x5eed,
            binaries: Vec::new(),
        }
    }
}

/// SplitMix64: small, fast, and good enough for a workload generator.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Thread {
    in_call: Option<(ProbeId, Nanos)>,
}

/// The synthetic process id.
pub const PID: u32 = 4242;
const START_NS: Nanos = 1_000_000_000_000;

/// Generates the records of a synthetic recording: first [`Synth::metadata`], then any number
/// of [`Synth::next_event`]s, then [`Synth::finish`].
#[derive(Clone, Debug)]
pub struct Synth {
    config: SynthConfig,
    rng: Rng,
    /// Cumulative Zipf probabilities by stack id (id 0 is the most frequent).
    cdf: Vec<f64>,
    /// The probe each stack ends in.
    stack_probe: Vec<ProbeId>,
    threads: Vec<Thread>,
    time: Nanos,
    metadata: Vec<Record>,
}

impl Synth {
    /// Sets the workload up.
    pub fn new(mut config: SynthConfig) -> Self {
        if config.binaries.is_empty() {
            config.binaries = ["app", "libfoo.so", "libc.so.6"]
                .iter()
                .map(|name| SynthBinary {
                    path: format!("/synthetic/{name}"),
                    build_id: None,
                    exec_offset: 0x1000,
                    exec_len: 0x10_0000,
                    exec_vaddr: 0x1000,
                })
                .collect();
        }
        config.stacks = config.stacks.max(1);
        config.probes = config.probes.max(1);
        config.threads = config.threads.max(1);
        let mut rng = Rng(config.seed);
        let mut cdf = Vec::with_capacity(config.stacks as usize);
        let mut sum = 0.0;
        for rank in 1..=config.stacks {
            sum += 1.0 / f64::from(rank).powf(config.zipf_exponent);
            cdf.push(sum);
        }
        for p in &mut cdf {
            *p /= sum;
        }

        // Mappings: the first binary as a PIE executable, the others as libraries.
        let mut metadata = Vec::new();
        let bins = config.binaries.clone();
        let bases: Vec<u64> = (0..bins.len() as u64)
            .map(|i| match i {
                0 => 0x5555_5555_0000,
                _ => 0x7f00_0000_0000 + i * 0x1000_0000,
            })
            .collect();
        // Where file offset `file_off` of binary `bin` is in the process, and its ELF address.
        let svma = |bin: usize, file_off: u64| {
            Svma(file_off - bins[bin].exec_offset + bins[bin].exec_vaddr)
        };
        let avma = |bin: usize, file_off: u64| Avma(bases[bin] + svma(bin, file_off).0);
        // Probes: spread over the binaries, at distinct places in their code.
        let mut probe_addrs = Vec::new();
        for p in 0..config.probes {
            let bin = p as usize % bins.len();
            let b = &bins[bin];
            let off = b.exec_offset + (rng.below(b.exec_len.max(16) / 16)) * 16;
            probe_addrs.push(avma(bin, off));
            let binary = b.path.clone();
            let name = format!("{}:func{p}", binary.rsplit('/').next().unwrap_or(""));
            metadata.push(Record::Probe(Probe {
                id: p,
                name: name.clone(),
                specs: vec![name],
                binary,
                build_id: b.build_id.clone(),
                symbol: format!("func{p}"),
                vaddr: svma(bin, off),
                offset: FileOffset(off),
                kind: ProbeKind::EntryReturn,
                stack_mode: StackMode::FramePointer,
                args: Vec::new(),
                site: None,
            }));
        }
        metadata.push(Record::Process(Process {
            pid: PID,
            ppid: 1,
            comm: "synth".into(),
            exe: bins[0].path.clone(),
            start_ns: Some(START_NS - 1_000_000),
            mnt_ns: Some(4_026_531_841),
            pid_ns: Some(4_026_531_836),
            cgroup: Some("/synth.slice".into()),
        }));
        for (i, b) in bins.iter().enumerate() {
            metadata.push(Record::Mapping(Mapping {
                pid: PID,
                time_ns: 0,
                start: avma(i, b.exec_offset),
                end: avma(i, b.exec_offset + b.exec_len),
                offset: FileOffset(b.exec_offset),
                path: b.path.clone(),
                dev: 0,
                inode: 0,
                build_id: b.build_id.clone(),
            }));
        }
        // Call sites: a fixed pool, as real stacks reuse the same callers.
        let sites: Vec<Avma> = (0..1024)
            .map(|_| {
                let bin = rng.below(bins.len() as u64) as usize;
                let b = &bins[bin];
                avma(bin, b.exec_offset + rng.below(b.exec_len.max(1)))
            })
            .collect();
        let mut stack_probe = Vec::with_capacity(config.stacks as usize);
        for id in 0..config.stacks {
            let probe = rng.below(config.probes.into()) as ProbeId;
            stack_probe.push(probe);
            let depth = 8 + rng.below(23) as usize;
            let mut frames = vec![probe_addrs[probe as usize]];
            frames.extend((1..depth).map(|_| sites[rng.below(sites.len() as u64) as usize]));
            metadata.push(Record::Stack(Stack {
                id,
                frames,
                truncated: false,
                python: Vec::new(),
                python_truncated: false,
            }));
        }
        let threads = vec![Thread::default(); config.threads as usize];
        Synth {
            config,
            rng,
            cdf,
            stack_probe,
            threads,
            time: START_NS,
            metadata,
        }
    }

    /// The recording's header.
    pub fn header(&self) -> Header {
        Header {
            host: "synthetic".into(),
            kernel: "0.0.0-synthetic".into(),
            arch: "x86_64".into(),
            command: vec!["urec-synth".into()],
            workload: None,
            start_unix_ns: 1_700_000_000_000_000_000,
            start_monotonic_ns: START_NS,
        }
    }

    /// Probes, the process, its mappings and all stacks: to be written before the events.
    pub fn metadata(&self) -> &[Record] {
        &self.metadata
    }

    /// The next event.
    pub fn next_event(&mut self) -> Event {
        let gap = -(1.0 - self.rng.unit()).ln() * self.config.mean_gap_ns;
        self.time += gap.round() as u64;
        let t = self.rng.below(self.threads.len() as u64) as usize;
        let tid = PID + t as u32;
        let cpu = t as u32 % 2;
        match self.threads[t].in_call.take() {
            Some((probe, entered)) => Event {
                goroutine: None,
                weight: 1,
                probe,
                kind: EventKind::Return,
                pid: PID,
                tid,
                cpu,
                time_ns: self.time,
                stack: None,
                latency_ns: Some(self.time - entered),
                args: Vec::new(),
            },
            None => {
                let u = self.rng.unit();
                let stack = self
                    .cdf
                    .partition_point(|&p| p <= u)
                    .min(self.cdf.len() - 1);
                let probe = self.stack_probe[stack];
                self.threads[t].in_call = Some((probe, self.time));
                Event {
                    goroutine: None,
                    weight: 1,
                    probe,
                    kind: EventKind::Entry,
                    pid: PID,
                    tid,
                    cpu,
                    time_ns: self.time,
                    stack: Some(stack as StackId),
                    latency_ns: None,
                    args: Vec::new(),
                }
            }
        }
    }

    /// The closing record.
    pub fn finish(&self) -> Finish {
        Finish {
            attach_ns: START_NS,
            stop_ns: self.time + 1,
            workload_status: None,
        }
    }

    /// Writes a whole recording of `events` events with `writer`.
    pub fn write_all<W: std::io::Write>(
        &mut self,
        writer: &mut crate::Writer<W>,
        events: u64,
    ) -> Result<(), crate::FormatError> {
        for r in &self.metadata {
            writer.write(r)?;
        }
        for _ in 0..events {
            let e = self.next_event();
            writer.write_event(&e)?;
        }
        writer.write(&Record::Finish(self.finish()))
    }
}
