//! Records read back as written.

use proptest::prelude::*;
use urec_format::*;

use crate::{read_all, sample_header, sample_records, small_chunks, write};

fn is_definition(r: &Record) -> bool {
    matches!(r, Record::Probe(_) | Record::Stack(_) | Record::PyCode(_))
}

/// What the writer promises about order: the same records; metadata among itself and events
/// among themselves in the order written; every record other than probes and stacks in its
/// exact place relative to events; probes and stacks possibly earlier, never later.
fn assert_same_records(written: &[Record], read: &[Record]) {
    assert_eq!(read.len(), written.len());
    let meta = |v: &[Record]| -> Vec<Record> {
        v.iter()
            .filter(|r| !matches!(r, Record::Event(_)))
            .cloned()
            .collect()
    };
    assert_eq!(meta(read), meta(written));
    let ordered =
        |v: &[Record]| -> Vec<Record> { v.iter().filter(|r| !is_definition(r)).cloned().collect() };
    assert_eq!(ordered(read), ordered(written));
    // Events before each definition: never more in the file than when it was written.
    let events_before = |v: &[Record]| -> Vec<usize> {
        let mut n = 0;
        let mut out = Vec::new();
        for r in v {
            match r {
                Record::Event(_) => n += 1,
                r if is_definition(r) => out.push(n),
                _ => {}
            }
        }
        out
    };
    for (r, w) in events_before(read).iter().zip(events_before(written)) {
        assert!(*r <= w, "a definition moved after events written before it");
    }
}

#[test]
fn sample_round_trips_with_default_and_tiny_chunks() {
    let records = sample_records(1000);
    for opts in [WriterOptions::default(), small_chunks()] {
        let bytes = write(&sample_header(), &records, opts);
        let mut reader = Reader::from_bytes(bytes).unwrap();
        assert_eq!(reader.header(), &sample_header());
        assert_eq!(reader.version(), (VERSION_MAJOR, VERSION_MINOR));
        let read = read_all(&mut reader);
        assert_same_records(&records, &read);
        let status = reader.status();
        assert!(!status.truncated);
        assert_eq!(status.corrupt_chunks, 0);
        assert!(status.warnings.is_empty(), "{:?}", status.warnings);
        assert_eq!(status.sections.events.records, 1000);
        let footer = reader.footer().expect("footer");
        assert_eq!(footer.sections.events, status.sections.events);
        assert_eq!(footer.sections.metadata, status.sections.metadata);
        assert_eq!(footer.sections.header, status.sections.header);
        assert_eq!(
            footer.event_counts,
            vec![
                EventCount {
                    probe: 0,
                    kind: EventKind::Entry,
                    count: 500
                },
                EventCount {
                    probe: 1,
                    kind: EventKind::Return,
                    count: 500
                },
            ]
        );
    }
}

#[test]
fn file_order_keeps_process_changes_in_place() {
    // With tiny chunks the exact order of the sample survives, definitions included,
    // because they were all written before any event.
    let records = sample_records(100);
    let bytes = write(&sample_header(), &records, small_chunks());
    let mut reader = Reader::from_bytes(bytes).unwrap();
    assert_eq!(read_all(&mut reader), records);
}

#[test]
fn metadata_pass_skips_events_but_counts_them() {
    let records = sample_records(1000);
    let bytes = write(&sample_header(), &records, small_chunks());
    let mut reader = Reader::from_bytes(bytes).unwrap();
    let meta: Vec<Record> = reader.metadata().map(|r| r.unwrap()).collect();
    let expected: Vec<Record> = records
        .iter()
        .filter(|r| !matches!(r, Record::Event(_)))
        .cloned()
        .collect();
    assert_eq!(meta, expected);
    assert_eq!(reader.status().sections.events.records, 1000);
    assert!(!reader.status().truncated);
}

#[test]
fn open_reads_a_file_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.urec");
    let records = sample_records(50);
    std::fs::write(
        &path,
        write(&sample_header(), &records, WriterOptions::default()),
    )
    .unwrap();
    let mut reader = Reader::open(&path).unwrap();
    assert_same_records(&records, &read_all(&mut reader));
}

#[test]
fn synthetic_workload_round_trips() {
    let mut synth = synth::Synth::new(synth::SynthConfig::default());
    let mut w = Writer::new(Vec::new(), &synth.header()).unwrap();
    synth.write_all(&mut w, 200_000).unwrap();
    let bytes = w.finish().unwrap();
    let mut again = synth::Synth::new(synth::SynthConfig::default());
    let mut reader = Reader::from_bytes(bytes).unwrap();
    let mut n = 0;
    for r in reader.records() {
        if let Record::Event(e) = r.unwrap() {
            assert_eq!(e, again.next_event());
            n += 1;
        }
    }
    assert_eq!(n, 200_000);
}

fn arb_string() -> impl Strategy<Value = String> {
    "\\PC{0,10}"
}

fn arb_build_id() -> impl Strategy<Value = Option<BuildId>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..24).prop_map(BuildId))
}

fn arb_event_kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![Just(EventKind::Entry), Just(EventKind::Return)]
}

fn arb_arg_type() -> impl Strategy<Value = ArgType> {
    prop_oneof![
        any::<u8>().prop_map(ArgType::Unsigned),
        any::<u8>().prop_map(ArgType::Signed),
        any::<u8>().prop_map(ArgType::Hex),
        Just(ArgType::String),
        (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(width, offset, container)| {
            ArgType::Bitfield {
                width,
                offset,
                container,
            }
        }),
    ]
}

fn arb_arg_value() -> impl Strategy<Value = ArgValue> {
    prop_oneof![
        any::<u64>().prop_map(ArgValue::Int),
        (proptest::collection::vec(any::<u8>(), 0..40), any::<bool>())
            .prop_map(|(bytes, truncated)| ArgValue::Str { bytes, truncated }),
        Just(ArgValue::Fault),
    ]
}

fn arb_event() -> impl Strategy<Value = Event> {
    (
        (
            any::<u32>(),
            arb_event_kind(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
        any::<u64>(),
        any::<Option<u32>>(),
        any::<Option<u64>>(),
        proptest::collection::vec(arb_arg_value(), 0..3),
        // A goroutine is never 0 (0 means none in its column); a weight is never 0 (since
        // 1.6), and mostly 1.
        (
            proptest::option::of(1..=u64::MAX),
            prop_oneof![Just(1u32), 1..=u32::MAX],
        ),
    )
        .prop_map(
            |(
                (probe, kind, pid, tid, cpu),
                time_ns,
                stack,
                latency_ns,
                args,
                (goroutine, weight),
            )| Event {
                goroutine,
                weight,
                probe,
                kind,
                pid,
                tid,
                cpu,
                time_ns,
                stack,
                latency_ns,
                args,
            },
        )
}

fn arb_record() -> impl Strategy<Value = Record> {
    let probe = (
        (
            any::<u32>(),
            arb_string(),
            proptest::collection::vec(arb_string(), 0..3),
        ),
        (
            arb_string(),
            arb_build_id(),
            arb_string(),
            any::<u64>(),
            any::<u64>(),
        ),
        (
            0..3u8,
            0..3u8,
            proptest::option::of((any::<u64>(), 0..3u8, proptest::option::of(any::<u64>()))),
        ),
        proptest::collection::vec(
            (arb_string(), arb_string(), arb_arg_type(), any::<bool>()),
            0..3,
        ),
    )
        .prop_map(
            |((id, name, specs), (binary, build_id, symbol, vaddr, offset), (k, s, site), args)| {
                Record::Probe(Probe {
                    id,
                    name,
                    specs,
                    binary,
                    build_id,
                    symbol,
                    vaddr: Svma(vaddr),
                    offset: FileOffset(offset),
                    kind: [ProbeKind::EntryReturn, ProbeKind::Entry, ProbeKind::Return][k as usize],
                    stack_mode: [StackMode::None, StackMode::FramePointer, StackMode::Dwarf]
                        [s as usize],
                    args: args
                        .into_iter()
                        .map(|(name, fetch, ty, at_return)| ArgSpec {
                            name,
                            fetch,
                            ty,
                            at_return,
                        })
                        .collect(),
                    // 2.2: where the probe was attached; 2.3: its calibrated cost.
                    site: site.map(|(offset, p, cost_ns)| ProbeSite {
                        offset: FileOffset(offset),
                        path: [
                            SitePath::Unknown,
                            SitePath::Emulated,
                            SitePath::SingleStepped,
                        ][p as usize],
                        cost_ns,
                    }),
                })
            },
        );
    let process = (
        (
            any::<u32>(),
            any::<u32>(),
            arb_string(),
            arb_string(),
            any::<Option<u64>>(),
        ),
        (
            any::<Option<u64>>(),
            any::<Option<u64>>(),
            proptest::option::of(arb_string()),
        ),
    )
        .prop_map(
            |((pid, ppid, comm, exe, start_ns), (mnt_ns, pid_ns, cgroup))| {
                Record::Process(Process {
                    pid,
                    ppid,
                    comm,
                    exe,
                    start_ns,
                    mnt_ns,
                    pid_ns,
                    cgroup,
                })
            },
        );
    let change = prop_oneof![
        (arb_string(), arb_string()).prop_map(|(comm, exe)| ProcessChange::Exec { comm, exe }),
        arb_string().prop_map(ProcessChange::Comm),
        Just(ProcessChange::Exit),
    ];
    let process_event = (any::<u32>(), any::<u64>(), change).prop_map(|(pid, time_ns, change)| {
        Record::ProcessEvent(ProcessEvent {
            pid,
            time_ns,
            change,
        })
    });
    let mapping = (
        (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (arb_string(), any::<u64>(), any::<u64>(), arb_build_id()),
    )
        .prop_map(
            |((pid, time_ns, start, end, offset), (path, dev, inode, build_id))| {
                Record::Mapping(Mapping {
                    pid,
                    time_ns,
                    start: Avma(start),
                    end: Avma(end),
                    offset: FileOffset(offset),
                    path,
                    dev,
                    inode,
                    build_id,
                })
            },
        );
    // 2.4: Python frames, on some stacks (a native stack encodes as in 2.3).
    let py_frame = (any::<u32>(), any::<u32>(), any::<bool>())
        .prop_map(|(code, line, entry)| PyFrame { code, line, entry });
    let stack = (
        any::<u32>(),
        proptest::collection::vec(any::<u64>().prop_map(Avma), 0..40),
        any::<bool>(),
        prop_oneof![Just(Vec::new()), proptest::collection::vec(py_frame, 0..70)],
        any::<bool>(),
    )
        .prop_map(|(id, frames, truncated, python, python_truncated)| {
            Record::Stack(Stack {
                id,
                frames,
                truncated,
                python,
                python_truncated,
            })
        });
    let py_code = (any::<u32>(), arb_string(), arb_string(), any::<u32>()).prop_map(
        |(id, qualname, filename, first_line)| {
            Record::PyCode(PyCode {
                id,
                qualname: qualname.into(),
                filename: filename.into(),
                first_line,
            })
        },
    );
    let lost = (
        prop_oneof![
            Just(LostSource::Ring),
            Just(LostSource::Sideband),
            Just(LostSource::Unwind)
        ],
        any::<Option<u32>>(),
        proptest::option::of(arb_event_kind()),
        any::<u64>(),
    )
        .prop_map(|(source, probe, kind, count)| {
            Record::Lost(Lost {
                source,
                probe,
                kind,
                count,
            })
        });
    let filtered = (any::<u32>(), any::<u64>())
        .prop_map(|(probe, count)| Record::Filtered(Filtered { probe, count }));
    let latency = (
        (any::<u64>(), any::<u64>(), any::<u64>(), any::<u64>()),
        0u8..=6,
        proptest::collection::btree_map(0u32..45, any::<u64>(), 0..40),
    )
        .prop_map(|((count, total, min, max), sub_bits, buckets)| {
            // Indexes below the smallest layout's 45 buckets: valid at any sub_bits.
            LatencyAggregate {
                count,
                total,
                min,
                max,
                sub_bits,
                buckets: buckets.into_iter().collect(),
            }
        });
    let aggregate = (
        any::<u32>(),
        proptest::array::uniform5(any::<u64>()),
        proptest::option::of(latency),
    )
        .prop_map(
            |(probe, [calls, returns, in_flight, filtered, sampled], latency)| {
                Record::Aggregate(Aggregate {
                    probe,
                    calls,
                    returns,
                    in_flight,
                    filtered,
                    sampled,
                    latency,
                })
            },
        );
    let finish = (any::<u64>(), any::<u64>(), any::<Option<i32>>()).prop_map(
        |(attach_ns, stop_ns, workload_status)| {
            Record::Finish(Finish {
                attach_ns,
                stop_ns,
                workload_status,
            })
        },
    );
    prop_oneof![
        1 => probe,
        1 => process,
        1 => process_event,
        1 => mapping,
        2 => stack,
        1 => py_code,
        1 => lost,
        1 => filtered,
        1 => aggregate,
        1 => finish,
        12 => arb_event().prop_map(Record::Event),
    ]
}

fn arb_header() -> impl Strategy<Value = Header> {
    (
        (arb_string(), arb_string(), arb_string()),
        proptest::collection::vec(arb_string(), 0..4),
        proptest::option::of(proptest::collection::vec(arb_string(), 0..4)),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |((host, kernel, arch), command, workload, start_unix_ns, start_monotonic_ns)| Header {
                host,
                kernel,
                arch,
                command,
                workload,
                start_unix_ns,
                start_monotonic_ns,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_records_round_trip(
        header in arb_header(),
        records in proptest::collection::vec(arb_record(), 0..300),
        chunk_events in 1u32..40,
        chunk_bytes in 1usize..2048,
    ) {
        let opts = WriterOptions { chunk_events, chunk_bytes, ..WriterOptions::default() };
        let bytes = write(&header, &records, opts);
        let mut reader = Reader::from_bytes(bytes).unwrap();
        prop_assert_eq!(reader.header(), &header);
        let read = read_all(&mut reader);
        assert_same_records(&records, &read);
        let status = reader.status();
        prop_assert!(!status.truncated);
        prop_assert_eq!(status.corrupt_chunks, 0);
        prop_assert!(status.warnings.is_empty());
    }
}
