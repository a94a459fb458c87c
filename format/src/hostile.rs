//! Crafted recordings that once made `report`, `script` or `info` allocate gigabytes from a
//! few kilobytes of file: a data file may come from anywhere (SPEC.md, "Security model"), and
//! these are the shapes a hostile one takes. Each is small on disk (its chunks are
//! zstd-compressed runs of a repeated byte) and decompresses to tens of megabytes of records
//! whose counts are what the bytes really hold, or, where it says so, more than they hold.
//!
//! Tests run every command on each of them under a memory budget, the fuzz corpus of the
//! `report` target starts from them, and docs/performance.md ("Untrusted files: memory")
//! measures them.

use crate::chunk::*;
use crate::codec::{encode_header, encode_record, put_bytes, put_u64, zigzag};
use crate::events::EventEncoder;
use crate::types::*;

/// One crafted recording.
#[derive(Clone, Debug)]
pub struct Crafted {
    /// Short name, also its file name in the fuzz corpus (`hostile-NAME`).
    pub name: &'static str,
    /// What it attacks.
    pub what: &'static str,
    /// The file.
    pub bytes: Vec<u8>,
}

/// How large the crafted claims are; [`Scale::default`] is what docs/performance.md measures
/// (every class then decompresses to 20–64 MiB).
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Frames of the huge stack, args of the wide event, footer counts, header words, threads
    /// of the dictionary (one byte each, so at most 64 Mi).
    pub n: usize,
    /// Entries without returns (each one event a report or script must process: this sets
    /// how long those classes take).
    pub entries: usize,
    /// Events of the script window attack, each carrying 4 KiB of string arguments.
    pub window_events: usize,
    /// Processes sharing one 130-frame stack.
    pub processes: usize,
}

/// Threads of the unreturned-threads class (a dictionary of one event chunk holds 65,536).
const THREADS: usize = 1 << 16;

/// Probes of the unreturned-threads class: a thread waits on each.
const PROBES: u32 = 64;

impl Default for Scale {
    fn default() -> Self {
        Scale {
            n: 20_000_000,
            entries: 20_000_000,
            window_events: 120_000,
            processes: 240_000,
        }
    }
}

const PID: u32 = 7;
const T0: u64 = 1_000_000_000;

/// Every crafted class at `scale`.
pub fn all(scale: Scale) -> Vec<Crafted> {
    let n = scale.n;
    vec![
        Crafted {
            name: "huge-stack",
            what: "a valid file whose one stack has N frames",
            bytes: huge_stack(n),
        },
        Crafted {
            name: "wide-args",
            what: "one event carrying N argument values",
            bytes: wide_args(n),
        },
        Crafted {
            name: "script-window",
            what: "valid events each carrying 8 string arguments of 512 bytes",
            bytes: script_window(scale.window_events),
        },
        Crafted {
            name: "open-entries",
            what: "entries of one thread without a return",
            bytes: open_entries(scale.entries),
        },
        Crafted {
            name: "footer-counts",
            what: "a footer with N per-probe event counts",
            bytes: footer_counts(n),
        },
        Crafted {
            name: "thread-dictionary",
            what: "an event chunk naming N/2 threads",
            bytes: thread_dictionary(n / 2),
        },
        Crafted {
            name: "header-words",
            what: "a command line of N empty words",
            bytes: header_words(n),
        },
        Crafted {
            name: "probe-args",
            what: "a probe with N/4 argument specs",
            bytes: probe_args(n / 4),
        },
        Crafted {
            name: "probe-repeats",
            what: "the same probe record N/16 times",
            bytes: probe_repeats(n / 16),
        },
        Crafted {
            name: "process-repeats",
            what: "the same process record N/16 times",
            bytes: process_repeats(n / 16),
        },
        Crafted {
            name: "stack-per-process",
            what: "a 130-frame stack called from many processes",
            bytes: stack_per_process(scale.processes),
        },
        Crafted {
            name: "symbols-repeat",
            what: "a symbols record naming one address N/256 times with 256 functions, 8 times",
            bytes: symbols_repeat(n / 256, 8),
        },
        Crafted {
            name: "symbols-spread",
            what: "symbols records naming N/64 distinct addresses no stack holds",
            bytes: symbols_spread(n / 64),
        },
        Crafted {
            name: "unreturned-threads",
            what: "entries/5 without returns over 65,536 threads and 64 probes",
            bytes: unreturned_threads(scale.entries / 5),
        },
        Crafted {
            name: "heavy-weights",
            what: "N/16 calls each standing for 2^32 - 1 calls, with latencies near 2^63",
            bytes: heavy_weights(n / 16),
        },
        Crafted {
            name: "huge-python",
            what: "a valid file whose one stack has N Python frames, each its own segment",
            bytes: huge_python(n),
        },
        Crafted {
            name: "py-codes",
            what: "N/16 distinct Python functions (PyCode records) with empty names",
            bytes: py_codes(n / 16),
        },
        Crafted {
            name: "huge-mapping",
            what: "one mapping spanning the address space under processes/48 small ones",
            bytes: huge_mapping(scale.processes / 48),
        },
    ]
}

fn header() -> Header {
    Header {
        host: "hostile".into(),
        kernel: "6.18.0".into(),
        arch: "x86_64".into(),
        command: vec!["urec".into(), "record".into()],
        workload: None,
        start_unix_ns: 1_700_000_000_000_000_000,
        start_monotonic_ns: T0,
    }
}

fn probe(id: ProbeId, args: Vec<ArgSpec>) -> Record {
    Record::Probe(Probe {
        id,
        name: format!("app:f{id}"),
        specs: vec![format!("app:f{id}")],
        binary: "/app".into(),
        build_id: None,
        symbol: format!("f{id}"),
        vaddr: Svma(0x1000),
        offset: FileOffset(0x1000),
        kind: ProbeKind::EntryReturn,
        stack_mode: StackMode::FramePointer,
        args,
        site: None,
    })
}

fn process(pid: u32) -> Record {
    Record::Process(Process {
        pid,
        ppid: 1,
        comm: "app".into(),
        exe: "/app".into(),
        start_ns: Some(T0),
        ..Default::default()
    })
}

/// A file assembled chunk by chunk, so that payloads can say what no writer would.
struct Builder {
    out: Vec<u8>,
    footer: Option<Vec<u8>>,
}

impl Builder {
    fn new(header_payload: &[u8]) -> Self {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&crate::VERSION_MAJOR.to_le_bytes());
        out.extend_from_slice(&crate::VERSION_MINOR.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        let mut b = Builder { out, footer: None };
        b.chunk(KIND_HEADER, header_payload, 1);
        b
    }

    fn standard() -> Self {
        let mut h = Vec::new();
        encode_header(&mut h, &header());
        Self::new(&h)
    }

    /// Appends a chunk; payloads of more than a page are compressed, which is what keeps the
    /// crafted files small.
    fn chunk(&mut self, kind: u8, payload: &[u8], count: u32) {
        let raw_len = payload.len() as u32;
        let (codec, stored) = if payload.len() > 4096 {
            // Level 1 at 64 MiB of one repeated byte: milliseconds, a few KiB out. A failure
            // (out of memory) leaves the chunk stored, which is as hostile.
            match zstd::bulk::compress(payload, 1) {
                Ok(z) => (CODEC_ZSTD, z),
                Err(_) => (CODEC_NONE, payload.to_vec()),
            }
        } else {
            (CODEC_NONE, payload.to_vec())
        };
        self.out
            .extend_from_slice(&frame(kind, codec, raw_len, count, &stored));
        self.out.extend_from_slice(&stored);
    }

    fn meta(&mut self, records: &[Record]) {
        let (mut buf, mut body) = (Vec::new(), Vec::new());
        for r in records {
            encode_record(&mut buf, &mut body, r);
        }
        self.chunk(KIND_META, &buf, records.len() as u32);
    }

    /// A metadata chunk of one record with a hand-made body.
    fn raw_record(&mut self, tag: u8, body: &[u8]) {
        let mut buf = vec![tag];
        put_bytes(&mut buf, body);
        self.chunk(KIND_META, &buf, 1);
    }

    fn events(&mut self, events: &[Event]) {
        let mut enc = EventEncoder::default();
        for e in events {
            enc.push(e);
        }
        let mut buf = Vec::new();
        let n = enc.take(&mut buf);
        self.chunk(KIND_EVENTS, &buf, n);
    }

    /// An event chunk from its parts: `ctx` triples and the six columns.
    fn raw_events(&mut self, n: u32, ctx: &[u8], nctx: u64, cols: [&[u8]; 6]) {
        let mut buf = Vec::new();
        put_u64(&mut buf, T0);
        put_u64(&mut buf, n.into());
        put_u64(&mut buf, nctx);
        buf.extend_from_slice(ctx);
        put_u64(&mut buf, 6);
        for c in cols {
            put_u64(&mut buf, c.len() as u64);
        }
        for c in cols {
            buf.extend_from_slice(c);
        }
        self.chunk(KIND_EVENTS, &buf, n);
    }

    /// Ends the recording, then appends a symbols section of `chunks`, each a payload of
    /// `count` records, and the footer that counts them (readers look ahead for symbols only
    /// when the footer says there are some).
    fn finish_with_symbols(self, chunks: &[(Vec<u8>, u32)]) -> Vec<u8> {
        let mut b = Builder {
            out: self.finish(),
            footer: None,
        };
        let mut footer = crate::footer::Footer::default();
        for (payload, count) in chunks {
            let before = b.out.len();
            b.chunk(KIND_SYMBOLS, payload, *count);
            footer
                .sections
                .symbols
                .add(b.out.len() - before, payload.len() as u32, *count);
        }
        let mut payload = Vec::new();
        crate::footer::encode_footer(&mut payload, &footer);
        b.footer(payload).finish()
    }

    fn footer(mut self, payload: Vec<u8>) -> Self {
        self.footer = Some(payload);
        self
    }

    fn finish(mut self) -> Vec<u8> {
        // Three empty section summaries and no counts, unless the footer was crafted.
        let payload = self.footer.take().unwrap_or_else(|| vec![0; 13]);
        let offset = self.out.len() as u64;
        self.chunk(KIND_FOOTER, &payload, 1);
        self.out.extend_from_slice(&trailer(offset));
        self.out
    }
}

fn entry(pid: u32, tid: u32, time_ns: u64, stack: Option<StackId>, args: Vec<ArgValue>) -> Event {
    Event {
        goroutine: None,
        weight: 1,
        probe: 0,
        kind: EventKind::Entry,
        pid,
        tid,
        cpu: 0,
        time_ns,
        stack,
        latency_ns: None,
        args,
    }
}

fn ret(pid: u32, tid: u32, time_ns: u64) -> Event {
    Event {
        goroutine: None,
        weight: 1,
        probe: 0,
        kind: EventKind::Return,
        pid,
        tid,
        cpu: 0,
        time_ns,
        stack: None,
        latency_ns: Some(5),
        args: Vec::new(),
    }
}

fn huge_stack(n: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    b.meta(&[probe(0, Vec::new()), process(PID)]);
    // Stack 0: not truncated, n frames all at 0x1000 (the first delta, then zeros).
    let mut body = vec![0, 0];
    put_u64(&mut body, n as u64);
    put_u64(&mut body, zigzag(0x1000));
    body.resize(body.len() + n.saturating_sub(1), 0);
    b.raw_record(crate::codec::TAG_STACK, &body);
    b.events(&[
        entry(PID, PID, T0 + 10, Some(0), Vec::new()),
        ret(PID, PID, T0 + 20),
    ]);
    b.finish()
}

/// Stack 0: one native frame and `n` Python frames, each an entry frame (so `n` segments to
/// pair), all of one code.
fn huge_python(n: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    b.meta(&[
        probe(0, Vec::new()),
        process(PID),
        Record::PyCode(PyCode {
            id: 0,
            qualname: "f".into(),
            filename: "/app.py".into(),
            first_line: 1,
        }),
    ]);
    let mut body = vec![0, 0, 1];
    put_u64(&mut body, zigzag(0x1000));
    body.push(0);
    put_u64(&mut body, n as u64);
    for _ in 0..n {
        body.extend_from_slice(&[1, 0]);
    }
    b.raw_record(crate::codec::TAG_STACK, &body);
    b.events(&[
        entry(PID, PID, T0 + 10, Some(0), Vec::new()),
        ret(PID, PID, T0 + 20),
    ]);
    b.finish()
}

/// `n` PyCode records of distinct ids, each as small as a record gets.
fn py_codes(n: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    b.meta(&[probe(0, Vec::new()), process(PID)]);
    let mut buf = Vec::with_capacity(n * 8);
    let mut body = Vec::new();
    for id in 0..n as u32 {
        body.clear();
        put_u64(&mut body, id.into());
        body.extend_from_slice(&[0, 0, 0]);
        buf.push(crate::codec::TAG_PY_CODE);
        put_u64(&mut buf, body.len() as u64);
        buf.extend_from_slice(&body);
    }
    b.chunk(KIND_META, &buf, n as u32);
    b.events(&[
        entry(PID, PID, T0 + 10, None, Vec::new()),
        ret(PID, PID, T0 + 20),
    ]);
    b.finish()
}

fn wide_args(n: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    b.meta(&[probe(0, Vec::new()), process(PID)]);
    let mut ctx = Vec::new();
    for v in [PID, PID, 0] {
        put_u64(&mut ctx, v.into());
    }
    let mut args = Vec::new();
    put_u64(&mut args, n as u64);
    args.resize(args.len() + n, 3); // faults, one byte each
    b.raw_events(1, &ctx, 1, [&[8], &[0], &[0], &[], &[], &args]);
    b.finish()
}

fn script_window(events: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    let spec = |i: usize| ArgSpec {
        name: format!("s{i}"),
        fetch: format!("+0(%si):string#{i}"),
        ty: ArgType::String,
        at_return: false,
    };
    b.meta(&[probe(0, (0..8).map(spec).collect()), process(PID)]);
    let value = ArgValue::Str {
        bytes: vec![b'A'; 512],
        truncated: false,
    };
    // 2,000 events a chunk: 8 MiB raw, as a writer with large chunks would make it.
    let mut t = T0;
    let mut batch = Vec::new();
    for i in 0..events {
        t += 1;
        batch.push(entry(PID, PID, t, None, vec![value.clone(); 8]));
        if batch.len() == 2000 || i + 1 == events {
            b.events(&batch);
            batch.clear();
        }
    }
    b.finish()
}

/// Sampled events (the weight column, since 2.1) at the largest weight: sums must saturate.
fn heavy_weights(n: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    b.meta(&[probe(0, Vec::new()), process(PID)]);
    let mut batch = Vec::new();
    for i in 0..n {
        let t = T0 + 10 * i as u64;
        batch.push(Event {
            weight: u32::MAX,
            ..entry(PID, PID, t, None, Vec::new())
        });
        batch.push(Event {
            weight: u32::MAX,
            latency_ns: Some(u64::MAX / 2),
            ..ret(PID, PID, t + 5)
        });
        if batch.len() >= 20_000 || i + 1 == n {
            b.events(&batch);
            batch.clear();
        }
    }
    b.finish()
}

fn open_entries(n: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    b.meta(&[probe(0, Vec::new()), process(PID)]);
    let mut ctx = Vec::new();
    for v in [PID, PID, 0] {
        put_u64(&mut ctx, v.into());
    }
    // Probe 0, entry, no flags; one ns apart; all on thread 0 of the dictionary.
    let tags = vec![0u8; n];
    let times = vec![2u8; n];
    let ctxs = vec![0u8; n];
    b.raw_events(n as u32, &ctx, 1, [&tags, &times, &ctxs, &[], &[], &[]]);
    b.finish()
}

fn footer_counts(n: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    b.meta(&[probe(0, Vec::new()), process(PID)]);
    b.events(&[
        entry(PID, PID, T0 + 10, None, Vec::new()),
        ret(PID, PID, T0 + 20),
    ]);
    let mut footer = vec![0u8; 12];
    put_u64(&mut footer, n as u64);
    footer.resize(footer.len() + 3 * n, 0); // probe 0, entry, count 0
    b.footer(footer).finish()
}

fn thread_dictionary(n: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    b.meta(&[probe(0, Vec::new()), process(PID)]);
    let ctx = vec![0u8; 3 * n];
    let tags = vec![0u8; n];
    let times = vec![2u8; n];
    let ctxs = vec![0u8; n];
    b.raw_events(
        n as u32,
        &ctx,
        n as u64,
        [&tags, &times, &ctxs, &[], &[], &[]],
    );
    b.finish()
}

fn header_words(n: usize) -> Vec<u8> {
    let h = header();
    let mut p = Vec::new();
    for s in [&h.host, &h.kernel, &h.arch] {
        put_bytes(&mut p, s.as_bytes());
    }
    put_u64(&mut p, n as u64);
    p.resize(p.len() + n, 0); // n empty words
    p.push(0); // no workload
    put_u64(&mut p, h.start_unix_ns);
    put_u64(&mut p, h.start_monotonic_ns);
    let mut b = Builder::new(&p);
    b.meta(&[probe(0, Vec::new()), process(PID)]);
    b.finish()
}

fn probe_args(n: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    let mut body = Vec::new();
    encode_record(&mut Vec::new(), &mut body, &probe(0, Vec::new()));
    // The probe's body ends with its argument count (0): replace it with n empty specs.
    body.pop();
    put_u64(&mut body, n as u64);
    for _ in 0..n {
        body.extend_from_slice(&[0, 0, 3, 0]); // name "", fetch "", string, at entry
    }
    b.raw_record(crate::codec::TAG_PROBE, &body);
    b.meta(&[process(PID)]);
    b.events(&[
        entry(PID, PID, T0 + 10, None, Vec::new()),
        ret(PID, PID, T0 + 20),
    ]);
    b.finish()
}

fn probe_repeats(n: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    let mut one = Vec::new();
    encode_record(&mut one, &mut Vec::new(), &probe(0, Vec::new()));
    let mut buf = Vec::with_capacity(one.len() * n);
    for _ in 0..n {
        buf.extend_from_slice(&one);
    }
    b.chunk(KIND_META, &buf, n as u32);
    b.meta(&[process(PID)]);
    b.events(&[
        entry(PID, PID, T0 + 10, None, Vec::new()),
        ret(PID, PID, T0 + 20),
    ]);
    b.finish()
}

fn process_repeats(n: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    b.meta(&[probe(0, Vec::new())]);
    let mut one = Vec::new();
    encode_record(&mut one, &mut Vec::new(), &process(PID));
    let mut buf = Vec::with_capacity(one.len() * n);
    for _ in 0..n {
        buf.extend_from_slice(&one);
    }
    b.chunk(KIND_META, &buf, n as u32);
    b.events(&[
        entry(PID, PID, T0 + 10, None, Vec::new()),
        ret(PID, PID, T0 + 20),
    ]);
    b.finish()
}

/// Where the small mappings of [`huge_mapping`] begin, 8 KiB apart.
pub const HUGE_MAPPING_BASE: u64 = 0x7f00_0000_0000;

/// One process whose first mapping covers everything from 4 KiB to 2^47, then `n` small
/// mappings above it, each with its own 32-frame stack and one call: every frame lies under
/// both the huge mapping and a small one. A scan of "the mappings that start below the address
/// and could reach it" looks at all of them for every frame.
fn huge_mapping(n: usize) -> Vec<u8> {
    let mapping = |start: u64, end: u64, path: &str| {
        Record::Mapping(Mapping {
            pid: PID,
            time_ns: T0,
            start: Avma(start),
            end: Avma(end),
            offset: FileOffset(0),
            path: path.into(),
            dev: 0,
            inode: 0,
            build_id: None,
        })
    };
    let mut b = Builder::standard();
    let mut meta = vec![
        probe(0, Vec::new()),
        process(PID),
        mapping(0x1000, 1 << 47, "/huge"),
    ];
    for i in 0..n as u64 {
        let start = HUGE_MAPPING_BASE + i * 0x2000;
        meta.push(mapping(start, start + 0x1000, "/small"));
    }
    for i in 0..n as u64 {
        let start = HUGE_MAPPING_BASE + i * 0x2000;
        meta.push(Record::Stack(Stack {
            id: i as StackId,
            frames: (0..32).map(|f| Avma(start + 16 * f)).collect(),
            truncated: false,
            python: Vec::new(),
            python_truncated: false,
        }));
    }
    b.meta(&meta);
    let events: Vec<Event> = (0..n as u64)
        .map(|i| entry(PID, PID, T0 + 10 + i, Some(i as StackId), Vec::new()))
        .collect();
    b.events(&events);
    b.finish()
}

fn stack_per_process(processes: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    let frames = (0..130u64).map(|i| Avma(0x1000 + 16 * i)).collect();
    b.meta(&[
        probe(0, Vec::new()),
        Record::Stack(Stack {
            id: 0,
            frames,
            truncated: false,
            python: Vec::new(),
            python_truncated: false,
        }),
    ]);
    // One entry per process, never described by a Process record; 60,000 per chunk.
    let mut batch = Vec::new();
    for i in 0..processes {
        let pid = 1000 + i as u32;
        batch.push(entry(pid, pid, T0 + i as u64, Some(0), Vec::new()));
        if batch.len() == 60_000 || i + 1 == processes {
            b.events(&batch);
            batch.clear();
        }
    }
    b.finish()
}

/// A Symbols record body by hand: one table string `name`, then `entries` entries whose
/// offsets step by `step` from 0x1000 (a step of 0 repeats one address), `frames` frames each
/// naming that string.
fn symbols_record(out: &mut Vec<u8>, name: &str, entries: usize, step: u64, frames: usize) {
    let mut body = Vec::new();
    crate::codec::put_str(&mut body, "/app");
    crate::codec::put_build_id(&mut body, &None);
    put_u64(&mut body, 1);
    crate::codec::put_str(&mut body, name);
    put_u64(&mut body, entries as u64);
    for i in 0..entries {
        put_u64(&mut body, if i == 0 { 0x1000 } else { step });
        put_u64(&mut body, frames as u64);
        for _ in 0..frames {
            body.extend_from_slice(&[0, 0, 0]);
        }
    }
    out.push(crate::codec::TAG_SYMBOLS);
    put_bytes(out, &body);
}

/// Repeats: one record naming one address `entries` times, 256 functions of a 200-byte name
/// each, and the same chunk `copies` times (what made report take 9.5 GB from 7 KB).
fn symbols_repeat(entries: usize, copies: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    b.meta(&[probe(0, Vec::new()), process(PID)]);
    b.events(&[entry(PID, PID, T0 + 10, None, Vec::new())]);
    let mut payload = Vec::new();
    symbols_record(&mut payload, &"f".repeat(200), entries, 0, 256);
    let chunks = vec![(payload, 1); copies];
    b.finish_with_symbols(&chunks)
}

/// Distinct addresses: records of 16,384 entries (as many as the recorder writes in one) of
/// 16 functions each, about 64 MiB of them, for a recording whose only address is its probe's.
fn symbols_spread(entries: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    b.meta(&[probe(0, Vec::new()), process(PID)]);
    b.events(&[entry(PID, PID, T0 + 10, None, Vec::new())]);
    let per_record = 16_384;
    let mut payload = Vec::new();
    let mut count = 0;
    let mut chunks = Vec::new();
    for _ in 0..entries.div_ceil(per_record) {
        symbols_record(&mut payload, "g", per_record, 1, 16);
        count += 1;
        if payload.len() > (60 << 20) {
            chunks.push((std::mem::take(&mut payload), count));
            count = 0;
        }
    }
    if count > 0 {
        chunks.push((payload, count));
    }
    b.finish_with_symbols(&chunks)
}

/// Entries without returns, spread so that no per-thread cap binds: thread `i % 65,536`,
/// probe `i / 65,536 % 64`, 1 ns apart, in event chunks of 65,536.
fn unreturned_threads(n: usize) -> Vec<u8> {
    let mut b = Builder::standard();
    let mut meta: Vec<Record> = (0..PROBES).map(|id| probe(id, Vec::new())).collect();
    meta.push(process(PID));
    b.meta(&meta);
    let mut batch = Vec::with_capacity(THREADS);
    for i in 0..n {
        let tid = PID + (i % THREADS) as u32;
        let mut e = entry(PID, tid, T0 + 10 + i as u64, None, Vec::new());
        e.probe = (i / THREADS) as u32 % PROBES;
        batch.push(e);
        if batch.len() == THREADS || i + 1 == n {
            b.events(&batch);
            batch.clear();
        }
    }
    b.finish()
}
