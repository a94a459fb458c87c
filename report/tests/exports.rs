//! The exports on a synthetic recording, without root or external clients (tests/exports.rs at
//! the workspace root reads them with `go tool pprof` and Perfetto's protos): per-process stack
//! counters add up, the Perfetto pass sees every call, merging and diffing are exact.

use std::io::Read;

use urec_format::synth::{Synth, SynthConfig};
use urec_format::{Writer, WriterOptions};
use urec_report::{analyze_bytes, ReportOptions};

fn synthetic(events: u64, seed: u64) -> Vec<u8> {
    let mut synth = Synth::new(SynthConfig {
        stacks: 32,
        seed,
        ..SynthConfig::default()
    });
    let opts = WriterOptions {
        chunk_events: 256,
        ..WriterOptions::default()
    };
    let mut w = Writer::with_options(Vec::new(), &synth.header(), opts).unwrap();
    synth.write_all(&mut w, events).unwrap();
    w.finish().unwrap()
}

fn opts() -> ReportOptions {
    ReportOptions {
        no_symbolize: true,
        ..ReportOptions::default()
    }
}

#[test]
fn per_process_counters_add_up_to_each_stack() {
    let r = analyze_bytes(synthetic(20_000, 1), &opts()).unwrap();
    assert!(!r.stacks.is_empty());
    for s in &r.stacks {
        let calls: u64 = s.processes.iter().map(|p| p.calls).sum();
        let total: u64 = s.processes.iter().map(|p| p.total_ns).sum();
        assert_eq!(calls, s.calls);
        assert_eq!(total, s.total_ns);
        assert!(s.processes.iter().all(|p| p.pid == urec_format::synth::PID));
    }
    assert_eq!(r.inputs.len(), 1);
    assert_eq!(r.inputs[0].events, 20_000);
    // pprof: a gzip stream that inflates to a profile holding every probe's name.
    let mut gz = Vec::new();
    urec_report::output::pprof::write(&r, &mut gz).unwrap();
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .unwrap();
    for f in &r.functions {
        let name = f.probe.as_bytes();
        assert!(raw.windows(name.len()).any(|w| w == name), "{}", f.probe);
    }
}

#[test]
fn perfetto_sees_every_call() {
    let bytes = synthetic(20_000, 2);
    let r = analyze_bytes(bytes.clone(), &opts()).unwrap();
    let mut trace = Vec::new();
    let s = urec_report::output::perfetto::write_bytes(bytes, &opts(), &mut trace).unwrap();
    let calls: u64 = r.functions.iter().map(|f| f.calls).sum();
    let in_flight: u64 = r.functions.iter().map(|f| f.in_flight).sum();
    // One slice per call (entry) plus the summary slice.
    assert_eq!(s.slices, calls);
    assert_eq!(s.in_flight, in_flight);
    assert_eq!(s.instants, 0);
    assert!(!trace.is_empty());
}

#[test]
fn merging_a_recording_with_itself_doubles_it_and_diffs_show_the_change() {
    let a = analyze_bytes(synthetic(10_000, 3), &opts()).unwrap();
    let b = analyze_bytes(synthetic(10_000, 3), &opts()).unwrap();
    let merged = urec_report::merge::merge(vec![a.clone(), b], Default::default());
    assert_eq!(merged.inputs.len(), 2);
    assert_eq!(merged.recording.events, 2 * a.recording.events);
    assert_eq!(merged.stacks.len(), a.stacks.len());
    for f in &a.functions {
        let m = merged
            .functions
            .iter()
            .find(|m| m.probe == f.probe)
            .unwrap();
        assert_eq!(m.calls, 2 * f.calls);
        let (fs, ms) = (f.latency_stats().unwrap(), m.latency_stats().unwrap());
        assert_eq!(
            (ms.min, ms.max, ms.mean, ms.p50, ms.p99),
            (fs.min, fs.max, fs.mean, fs.p50, fs.p99)
        );
        assert_eq!(ms.total, 2 * fs.total);
    }
    for s in &merged.stacks {
        assert_eq!(s.processes.len(), 2, "one per input");
        assert_eq!(s.processes[0].calls, s.processes[1].calls);
        assert_ne!(s.processes[0].input, s.processes[1].input);
    }
    let rows = urec_report::diff::rows(&a, &merged);
    assert_eq!(rows.len(), a.functions.len());
    let mut table = Vec::new();
    urec_report::output::diff::write_table(&rows, &mut table).unwrap();
    let table = String::from_utf8(table).unwrap();
    for f in &a.functions {
        let line = table.lines().find(|l| l.starts_with(&f.probe)).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[1], (2 * f.calls).to_string());
        assert_eq!(cells[2], f.calls.to_string());
        assert_eq!(cells[3], "+100.0%");
        assert_eq!(cells[6], "+0.0%", "{line}");
    }
}
