//! Integration tests of the format crate: round trips, damage, foreign files, the fuzz corpus.

mod corpus;
mod damage;
mod limits;
mod roundtrip;
mod symbols;

use urec_format::*;

/// A small but complete recording: probes with args, a process with its life, mappings,
/// stacks, events of every shape, lost counts and a finish.
pub fn sample_records(events: u32) -> Vec<Record> {
    let mut v = vec![
        Record::Probe(Probe {
            id: 0,
            name: "bash:readline".into(),
            specs: vec!["bash:readline cmd=+0($retval):string".into()],
            binary: "/usr/bin/bash".into(),
            build_id: Some(BuildId(vec![0xab; 20])),
            symbol: "readline".into(),
            vaddr: Svma(0x1_2345),
            offset: FileOffset(0x2345),
            kind: ProbeKind::EntryReturn,
            stack_mode: StackMode::Dwarf,
            args: vec![ArgSpec {
                name: "cmd".into(),
                fetch: "+0($retval)".into(),
                ty: ArgType::String,
                at_return: true,
            }],
            // 2.2's site and 2.3's calibrated probe cost.
            site: Some(ProbeSite {
                offset: FileOffset(0x2349),
                path: SitePath::Emulated,
                cost_ns: Some(412),
            }),
        }),
        Record::Probe(Probe {
            id: 1,
            name: "libc:malloc".into(),
            specs: vec!["libc:malloc".into(), "c:__libc_malloc".into()],
            binary: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
            build_id: None,
            symbol: "malloc".into(),
            vaddr: Svma(0x9_a0c0),
            offset: FileOffset(0x9_a0c0),
            kind: ProbeKind::Entry,
            stack_mode: StackMode::FramePointer,
            args: vec![ArgSpec {
                name: "size".into(),
                fetch: "arg1".into(),
                ty: ArgType::Bitfield {
                    width: 3,
                    offset: 2,
                    container: 32,
                },
                at_return: false,
            }],
            site: None,
        }),
        Record::Process(Process {
            pid: 100,
            ppid: 1,
            comm: "bash".into(),
            exe: "/usr/bin/bash".into(),
            start_ns: Some(5),
            mnt_ns: Some(4026531841),
            pid_ns: Some(4026531836),
            cgroup: Some("/system.slice/nginx.service".into()),
        }),
        Record::Mapping(Mapping {
            pid: 100,
            time_ns: 0,
            start: Avma(0x5555_0000_1000),
            end: Avma(0x5555_0010_0000),
            offset: FileOffset(0x1000),
            path: "/usr/bin/bash".into(),
            dev: 0x803,
            inode: 1234,
            build_id: Some(BuildId(vec![0xab; 20])),
        }),
    ];
    // 2.4: Python functions, and stacks that ran them.
    for id in 0..3u32 {
        v.push(Record::PyCode(PyCode {
            id,
            qualname: ["<module>", "outer", "Worker.target"][id as usize].into(),
            filename: "/srv/app/s.py".into(),
            first_line: 1 + id * 3,
        }));
    }
    for id in 0..20u32 {
        let python: Vec<PyFrame> = (0..id % 4)
            .map(|i| PyFrame {
                code: i % 3,
                line: 9 - i,
                entry: i % 2 == 1,
            })
            .collect();
        v.push(Record::Stack(Stack {
            id,
            frames: (0..=id)
                .map(|i| Avma(0x5555_0000_1000 + u64::from(i * 7919 % 4096)))
                .collect(),
            truncated: id % 5 == 0,
            python,
            python_truncated: id % 7 == 3,
        }));
    }
    for i in 0..events {
        let entry = i % 2 == 0;
        v.push(Record::Event(Event {
            // Some events are a Go program's (since 1.4), in some chunks only.
            goroutine: (i % 11 < 3).then_some(0x00c0_0000_0000 + u64::from(i % 3) * 0x1a0),
            // Some stand for several calls (since 1.6: sampled under ring pressure), in some
            // chunks only, with and without goroutines.
            weight: if i % 13 < 4 { 1 << (i % 13) } else { 1 },
            probe: i % 2,
            kind: if entry {
                EventKind::Entry
            } else {
                EventKind::Return
            },
            pid: 100,
            tid: 100 + i % 3,
            cpu: i % 4,
            time_ns: 1_000_000 + u64::from(i) * 997 - u64::from(i % 7) * 50,
            stack: entry.then_some(i % 20),
            latency_ns: (!entry).then_some(u64::from(i) * 13),
            args: match i % 5 {
                0 => vec![ArgValue::Int(u64::MAX - u64::from(i))],
                1 => vec![ArgValue::Str {
                    bytes: format!("ls -l {i}").into_bytes(),
                    truncated: i % 3 == 0,
                }],
                2 => vec![ArgValue::Fault, ArgValue::Int(7)],
                _ => Vec::new(),
            },
        }));
        if i == events / 2 {
            v.push(Record::ProcessEvent(ProcessEvent {
                pid: 100,
                time_ns: 2_000_000,
                change: ProcessChange::Comm("bash2".into()),
            }));
            v.push(Record::Lost(Lost {
                source: LostSource::Ring,
                probe: Some(1),
                kind: Some(EventKind::Return),
                count: 17,
            }));
        }
    }
    v.push(Record::ProcessEvent(ProcessEvent {
        pid: 100,
        time_ns: 3_000_000,
        change: ProcessChange::Exec {
            comm: "ls".into(),
            exe: "/usr/bin/ls".into(),
        },
    }));
    v.push(Record::ProcessEvent(ProcessEvent {
        pid: 100,
        time_ns: 4_000_000,
        change: ProcessChange::Exit,
    }));
    v.push(Record::Lost(Lost {
        source: LostSource::Unwind,
        probe: None,
        kind: None,
        count: 3,
    }));
    v.push(Record::Filtered(Filtered {
        probe: 1,
        count: 42,
    }));
    v.push(Record::Aggregate(Aggregate {
        probe: 0,
        calls: 1000,
        returns: 998,
        in_flight: 2,
        filtered: 5,
        sampled: 0,
        latency: Some(LatencyAggregate {
            count: 998,
            total: 2_000_000,
            min: 900,
            max: 90_000,
            sub_bits: 6,
            buckets: vec![(700, 990), (1200, 8)],
        }),
    }));
    v.push(Record::Finish(Finish {
        attach_ns: 10,
        stop_ns: 5_000_000,
        workload_status: Some(-1),
    }));
    v
}

/// A header with every field set.
pub fn sample_header() -> Header {
    Header {
        host: "testhost".into(),
        kernel: "6.18.0".into(),
        arch: "x86_64".into(),
        command: vec![
            "urec".into(),
            "record".into(),
            "-e".into(),
            "bash:readline".into(),
        ],
        workload: Some(vec!["ls".into(), "-l".into()]),
        start_unix_ns: 1_700_000_000_000_000_000,
        start_monotonic_ns: 123_456_789,
    }
}

/// Writer options that make many small chunks.
pub fn small_chunks() -> WriterOptions {
    WriterOptions {
        chunk_events: 16,
        chunk_bytes: 512,
        ..WriterOptions::default()
    }
}

/// Writes `records` into memory.
pub fn write(header: &Header, records: &[Record], opts: WriterOptions) -> Vec<u8> {
    let mut w = Writer::with_options(Vec::new(), header, opts).unwrap();
    for r in records {
        w.write(r).unwrap();
    }
    w.finish().unwrap()
}

/// Reads every record; panics on an error item (the reader yields none for damage).
pub fn read_all(reader: &mut Reader) -> Vec<Record> {
    reader.records().map(|r| r.unwrap()).collect()
}

/// The chunks of a file, found by following the frame lengths as docs/format.md describes:
/// (offset, kind, stored length including the 24-byte frame, record count).
pub fn chunks(data: &[u8]) -> Vec<(usize, u8, usize, u32)> {
    let mut pos = 16;
    let mut v = Vec::new();
    while pos + 24 <= data.len() && &data[pos..pos + 4] == b"uCHK" {
        let le = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
        let len = 24 + le(pos + 8) as usize;
        v.push((pos, data[pos + 4], len, le(pos + 16)));
        pos += len;
    }
    v
}
