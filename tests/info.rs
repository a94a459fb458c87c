//! `urec info` on recordings written with the format crate's writer: complete, truncated,
//! damaged, and on files that are not recordings.

use std::path::Path;
use std::process::{Command, Output};

use urec_format::*;

fn urec_info(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_urec"))
        .arg("info")
        .arg("-i")
        .arg(path)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn header() -> Header {
    Header {
        host: "testhost".into(),
        kernel: "6.18.0-test".into(),
        arch: "x86_64".into(),
        command: [
            "urec",
            "record",
            "-e",
            "bash:readline%return cmd=+0($retval):string",
            "--",
            "ls",
        ]
        .map(String::from)
        .to_vec(),
        workload: Some(vec!["ls".into()]),
        start_unix_ns: 1_700_000_000_123_000_000,
        start_monotonic_ns: 1_000,
    }
}

/// A recording of 1000 calls of readline (entry + return) by two processes, in chunks of 64
/// events; `finish` says whether the writer finishes it.
fn recording(dir: &Path, name: &str) -> (std::path::PathBuf, Vec<u8>) {
    let opts = WriterOptions {
        chunk_events: 64,
        ..WriterOptions::default()
    };
    let mut w = Writer::with_options(Vec::new(), &header(), opts).unwrap();
    let bash_id = BuildId((1..=20).collect());
    w.write(&Record::Probe(Probe {
        id: 0,
        name: "bash:readline".into(),
        specs: vec!["bash:readline".into()],
        binary: "/usr/bin/bash".into(),
        build_id: Some(bash_id.clone()),
        symbol: "readline".into(),
        vaddr: Svma(0xd_4c80),
        offset: FileOffset(0xd_4c80),
        kind: ProbeKind::EntryReturn,
        stack_mode: StackMode::Dwarf,
        args: vec![ArgSpec {
            name: "cmd".into(),
            fetch: "+0($retval)".into(),
            ty: ArgType::String,
            at_return: true,
        }],
        site: None,
    }))
    .unwrap();
    for pid in [300, 301] {
        // 300 as a 1.2 recorder writes it, 301 as an older one did (no namespaces, cgroup).
        let recorded = pid == 300;
        w.write(&Record::Process(Process {
            pid,
            ppid: 1,
            comm: "bash".into(),
            exe: "/usr/bin/bash".into(),
            start_ns: Some(500),
            mnt_ns: recorded.then_some(4026532201),
            pid_ns: recorded.then_some(4026532202),
            cgroup: recorded.then(|| "/system.slice/app.service".to_string()),
        }))
        .unwrap();
        w.write(&Record::Mapping(Mapping {
            pid,
            time_ns: 0,
            start: Avma(0x5555_5555_0000),
            end: Avma(0x5555_5565_0000),
            offset: FileOffset(0x2_e000),
            path: "/usr/bin/bash".into(),
            dev: 0x803,
            inode: 99,
            build_id: Some(bash_id.clone()),
        }))
        .unwrap();
        w.write(&Record::Mapping(Mapping {
            pid,
            time_ns: 0,
            start: Avma(0x7f00_0002_8000),
            end: Avma(0x7f00_0017_d000),
            offset: FileOffset(0x2_8000),
            path: "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
            dev: 0x803,
            inode: 100,
            build_id: None,
        }))
        .unwrap();
    }
    w.write(&Record::Stack(Stack {
        id: 0,
        frames: vec![Avma(0x5555_555a_2c80), Avma(0x5555_5558_0000)],
        truncated: false,
        python: Vec::new(),
        python_truncated: false,
    }))
    .unwrap();
    for i in 0..1000u64 {
        let pid = 300 + (i % 2) as u32;
        let t = 10_000 + i * 1000;
        w.write_event(&Event {
            goroutine: None,
            weight: 1,
            probe: 0,
            kind: EventKind::Entry,
            pid,
            tid: pid,
            cpu: 0,
            time_ns: t,
            stack: Some(0),
            latency_ns: None,
            args: Vec::new(),
        })
        .unwrap();
        w.write_event(&Event {
            goroutine: None,
            weight: 1,
            probe: 0,
            kind: EventKind::Return,
            pid,
            tid: pid,
            cpu: 0,
            time_ns: t + 400,
            stack: None,
            latency_ns: Some(400),
            args: vec![ArgValue::Str {
                bytes: b"ls".to_vec(),
                truncated: false,
            }],
        })
        .unwrap();
    }
    w.write(&Record::Lost(Lost {
        source: LostSource::Ring,
        probe: Some(0),
        kind: Some(EventKind::Entry),
        count: 17,
    }))
    .unwrap();
    w.write(&Record::Lost(Lost {
        source: LostSource::Unwind,
        probe: None,
        kind: None,
        count: 3,
    }))
    .unwrap();
    w.write(&Record::ProcessEvent(ProcessEvent {
        pid: 301,
        time_ns: 2_000_000,
        change: ProcessChange::Exit,
    }))
    .unwrap();
    for count in [40, 2] {
        w.write(&Record::Filtered(Filtered { probe: 0, count }))
            .unwrap();
    }
    w.write(&Record::Finish(Finish {
        attach_ns: 5_000,
        stop_ns: 1_234_567_890 + 5_000,
        workload_status: Some(0),
    }))
    .unwrap();
    let bytes = w.finish().unwrap();
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

#[test]
fn info_describes_a_complete_recording() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = recording(dir.path(), "ok.urec");
    let out = urec_info(&path);
    assert_eq!(stderr(&out), "");
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    let expect = [
        format!(
            "file:       {} ({} bytes, format {VERSION_MAJOR}.{VERSION_MINOR})",
            path.display(),
            bytes.len()
        ),
        "started:    2023-11-14 22:13:20.123 UTC".into(),
        "host:       testhost (Linux 6.18.0-test, x86_64)".into(),
        "command:    urec record -e 'bash:readline%return cmd=+0($retval):string' -- ls".into(),
        "workload:   ls (exit status 0)".into(),
        "duration:   1.234567890 s".into(),
        "events:     2000 (1000 entries, 1000 returns)".into(),
        "lost:       20 (ring 17, sideband 0, unwind 3)".into(),
        "stacks:     1".into(),
        "mappings:   4".into(),
        "state:      complete".into(),
        "corrupt:    0 chunks skipped".into(),
        "probes (1):".into(),
        "  0   bash:readline  /usr/bin/bash  readline  0xd4c80  entry+return  dwarf  1000     1000     17    cmd".into(),
        "probe 0: 42 calls its predicate rejected (not recorded, not lost)".into(),
        "processes (2):".into(),
        "  pid  ppid  comm  exit    mnt ns      pid ns      cgroup                     exe".into(),
        "  300  1     bash  -       4026532201  4026532202  /system.slice/app.service  /usr/bin/bash".into(),
        "  301  1     bash  exited  -           -           -                          /usr/bin/bash".into(),
        "binaries (2):".into(),
        "  0102030405060708090a0b0c0d0e0f1011121314  /usr/bin/bash".into(),
        "  -                                         /usr/lib/x86_64-linux-gnu/libc.so.6".into(),
        "symbols:    none (recorded with --no-symbols, or by a urec before 1.1); `urec archive` adds them".into(),
    ];
    let lines: Vec<&str> = text.lines().collect();
    for e in &expect {
        assert!(
            lines.contains(&e.as_str()),
            "missing line {e:?} in:\n{text}"
        );
    }
    // 2000 events in chunks of 64 events: 32 event chunks.
    let events_row = lines.iter().find(|l| l.starts_with("  events ")).unwrap();
    let cells: Vec<&str> = events_row.split_whitespace().collect();
    assert_eq!(cells[..3], ["events", "32", "2000"]);
    let total_row = lines.iter().find(|l| l.starts_with("  total ")).unwrap();
    let cells: Vec<&str> = total_row.split_whitespace().collect();
    assert_eq!(cells[3], bytes.len().to_string());
}

#[test]
fn info_on_a_truncated_recording_describes_it_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = recording(dir.path(), "ok.urec");
    let path = dir.path().join("cut.urec");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let out = urec_info(&path);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stderr(&out),
        format!(
            "urec: warning: {}: the recording is truncated (the recorder did not finish it)\n",
            path.display()
        )
    );
    let text = stdout(&out);
    assert!(text.contains("\nstate:      TRUNCATED"), "{text}");
    assert!(text.contains("; counted, no footer)"), "{text}");
    assert!(
        text.contains("duration:   unknown (no finish record)"),
        "{text}"
    );
}

#[test]
fn info_on_a_damaged_recording_counts_the_chunk_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut bytes) = recording(dir.path(), "ok.urec");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    let path = dir.path().join("bad.urec");
    std::fs::write(&path, &bytes).unwrap();
    let out = urec_info(&path);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stderr(&out),
        format!(
            "urec: warning: {}: 1 damaged chunk was skipped\n",
            path.display()
        )
    );
    assert!(stdout(&out).contains("\ncorrupt:    1 chunk skipped\n"));
    assert!(stdout(&out).contains("\nstate:      complete\n"));
}

fn assert_fails(path: &Path, message: &str) {
    let out = urec_info(path);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!("urec: error: {}: {message}\n", path.display())
    );
}

#[test]
fn info_refuses_what_is_not_a_recording() {
    let dir = tempfile::tempdir().unwrap();
    assert_fails(
        &dir.path().join("missing.urec"),
        "No such file or directory (os error 2)",
    );
    let empty = dir.path().join("empty.urec");
    std::fs::write(&empty, b"").unwrap();
    assert_fails(&empty, "the file is empty (0 bytes), not a urec data file");
    assert_fails(
        Path::new("/bin/ls"),
        "not a urec data file: it is an ELF file (a program or library), not a recording",
    );
    let random = dir.path().join("random.bin");
    std::fs::write(&random, [0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    assert_fails(
        &random,
        "not a urec data file: it starts with the bytes de ad be ef 01 02 03 04",
    );
    let perf = dir.path().join("perf.data");
    let mut p = b"PERFILE2".to_vec();
    p.resize(104, 0);
    std::fs::write(&perf, p).unwrap();
    assert_fails(
        &perf,
        "not a urec data file: it is a perf.data file (PERFILE2); read it with `perf report`",
    );
    let (_, mut bytes) = recording(dir.path(), "ok.urec");
    bytes[30] ^= 1;
    let bad_header = dir.path().join("bad-header.urec");
    std::fs::write(&bad_header, &bytes).unwrap();
    assert_fails(
        &bad_header,
        "damaged urec data file header: header chunk: checksum mismatch",
    );
}
