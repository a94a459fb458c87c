//! The data file benchmark: bytes per event and write / read throughput on the synthetic
//! workload (`urec_format::synth`), median of 3 runs.
//!
//! ```text
//! cargo bench -p urec-format --bench format            # 10,000,000 events
//! cargo bench -p urec-format --bench format -- 1000000 # fewer
//! ```
//!
//! Writing is timed without the generator: events are generated in batches first, then
//! written. Reading goes through `Reader::open` (memory-mapped, page cache warm) and decodes
//! every record.

use std::hint::black_box;
use std::time::{Duration, Instant};

use urec_format::synth::{Synth, SynthConfig};
use urec_format::{Reader, Record, Writer};

const BATCH: u64 = 1_000_000;

struct Run {
    bytes: u64,
    event_bytes: u64,
    write: Duration,
    read: Duration,
}

fn run(events: u64, path: &std::path::Path) -> Run {
    let mut synth = Synth::new(SynthConfig::default());
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut w = Writer::new(file, &synth.header()).unwrap();
    let mut write = Duration::ZERO;
    let t = Instant::now();
    for r in synth.metadata() {
        w.write(r).unwrap();
    }
    write += t.elapsed();
    let mut batch = Vec::with_capacity(BATCH as usize);
    let mut left = events;
    while left > 0 {
        let n = left.min(BATCH);
        batch.clear();
        batch.extend((0..n).map(|_| synth.next_event()));
        let t = Instant::now();
        for e in &batch {
            w.write_event(e).unwrap();
        }
        write += t.elapsed();
        left -= n;
    }
    let t = Instant::now();
    w.write(&Record::Finish(synth.finish())).unwrap();
    w.finish().unwrap();
    write += t.elapsed();

    let t = Instant::now();
    let mut reader = Reader::open(path).unwrap();
    let mut n = 0u64;
    let mut sum = 0u64;
    for r in reader.records() {
        if let Record::Event(e) = r.unwrap() {
            n += 1;
            sum = sum.wrapping_add(e.time_ns ^ u64::from(e.tid) ^ e.latency_ns.unwrap_or(0));
        }
    }
    black_box(sum);
    let read = t.elapsed();
    assert_eq!(n, events);
    assert!(!reader.status().truncated && reader.status().corrupt_chunks == 0);
    Run {
        bytes: reader.len(),
        event_bytes: reader.status().sections.events.stored_bytes,
        write,
        read,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let events: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.replace('_', "").parse().ok())
        .unwrap_or(10_000_000);
    let dir = std::env::temp_dir().join(format!("urec-format-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bench.urec");
    let mut runs = Vec::new();
    for i in 0..3 {
        let r = run(events, &path);
        println!(
            "run {}: {} bytes ({:.3} bytes/event, events section {:.3}), write {:.3} s, read {:.3} s",
            i + 1,
            r.bytes,
            r.bytes as f64 / events as f64,
            r.event_bytes as f64 / events as f64,
            r.write.as_secs_f64(),
            r.read.as_secs_f64()
        );
        runs.push(r);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let per = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
    println!("events:            {events}");
    println!(
        "bytes/event:       {:.3} (whole file)",
        per(&|r| r.bytes as f64 / events as f64)
    );
    println!(
        "bytes/event:       {:.3} (event chunks only)",
        per(&|r| r.event_bytes as f64 / events as f64)
    );
    println!(
        "write:             {:.1} M events/s",
        per(&|r| events as f64 / r.write.as_secs_f64() / 1e6)
    );
    println!(
        "read:              {:.1} M events/s",
        per(&|r| events as f64 / r.read.as_secs_f64() / 1e6)
    );
}
