//! A small synthetic recording shared by the `report` and `script` CLI tests.

use std::path::Path;

use urec_format::*;

fn header() -> Header {
    Header {
        host: "h".into(),
        kernel: "6.18.0".into(),
        arch: "x86_64".into(),
        command: vec![
            "urec".into(),
            "record".into(),
            "-e".into(),
            "app:work".into(),
        ],
        workload: Some(vec!["./app".into(), "--fast".into()]),
        start_unix_ns: 0,
        start_monotonic_ns: 0,
    }
}

/// 10 calls of `app:work` (latency 1..=10 µs) through one unmapped stack, 3 per chunk.
pub fn write_recording(path: &Path, finish: bool) {
    let file = std::fs::File::create(path).expect("create");
    let opts = WriterOptions {
        chunk_events: 3,
        ..WriterOptions::default()
    };
    let mut w = Writer::with_options(file, &header(), opts).expect("writer");
    let rec = |w: &mut Writer<std::fs::File>, r: Record| w.write(&r).expect("write");
    rec(
        &mut w,
        Record::Probe(Probe {
            id: 0,
            name: "app:work".into(),
            specs: vec!["app:work".into()],
            binary: "/opt/app".into(),
            build_id: None,
            symbol: "work".into(),
            vaddr: Svma(0x1100),
            offset: FileOffset(0x1100),
            kind: ProbeKind::EntryReturn,
            stack_mode: StackMode::FramePointer,
            args: Vec::new(),
            site: None,
        }),
    );
    rec(
        &mut w,
        Record::Process(Process {
            pid: 7,
            ppid: 1,
            comm: "app".into(),
            exe: "/opt/app".into(),
            start_ns: Some(0),
            ..Default::default()
        }),
    );
    rec(
        &mut w,
        Record::Stack(Stack {
            id: 0,
            frames: vec![Avma(0x1000), Avma(0x2000)],
            truncated: false,
            python: Vec::new(),
            python_truncated: false,
        }),
    );
    for i in 0..10u64 {
        let t = 1_000_000 + i * 100_000;
        let lat = (i + 1) * 1000;
        for (kind, time, stack, latency) in [
            (EventKind::Entry, t, Some(0), None),
            (EventKind::Return, t + lat, None, Some(lat)),
        ] {
            w.write_event(&Event {
                goroutine: None,
                weight: 1,
                probe: 0,
                kind,
                pid: 7,
                tid: 7,
                cpu: 0,
                time_ns: time,
                stack,
                latency_ns: latency,
                args: Vec::new(),
            })
            .expect("event");
        }
    }
    if finish {
        rec(
            &mut w,
            Record::Finish(Finish {
                attach_ns: 0,
                stop_ns: 3_000_000,
                workload_status: Some(0),
            }),
        );
        w.finish().expect("finish");
    } else {
        w.flush().expect("flush");
        // Dropped without finish: reads as truncated after the last flushed chunk.
    }
}
