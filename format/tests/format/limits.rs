//! The reader's hard limits (urec_format::limits) on the crafted files of
//! urec_format::hostile: what each limit does to a file that passes it.

use urec_format::hostile::{self, Scale};
use urec_format::limits::*;
use urec_format::*;

fn crafted(name: &str) -> Vec<u8> {
    // Above every count limit (the thread dictionary holds n/2).
    let scale = Scale {
        n: 400_000,
        entries: 1000,
        window_events: 100,
        processes: 100,
    };
    hostile::all(scale)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no crafted file {name}"))
        .bytes
}

fn read(name: &str) -> (Result<Reader, FormatError>, Vec<Record>, u64) {
    let mut reader = Reader::from_bytes(crafted(name));
    let (records, corrupt) = match &mut reader {
        Ok(r) => {
            let records: Vec<Record> = r.records().map(|r| r.unwrap()).collect();
            (records, r.status().corrupt_chunks)
        }
        Err(_) => (Vec::new(), 0),
    };
    (reader, records, corrupt)
}

#[test]
fn a_long_stack_is_cut_and_marked_truncated() {
    let (_, records, corrupt) = read("huge-stack");
    assert_eq!(corrupt, 0);
    let stack = records
        .iter()
        .find_map(|r| match r {
            Record::Stack(s) => Some(s),
            _ => None,
        })
        .expect("the stack is read");
    assert_eq!(stack.frames.len(), MAX_STACK_FRAMES);
    assert!(stack.truncated);
    // The events after it are all there.
    let events = records
        .iter()
        .filter(|r| matches!(r, Record::Event(_)))
        .count();
    assert_eq!(events, 2);
}

#[test]
fn too_many_values_are_damage() {
    for name in ["wide-args", "thread-dictionary", "probe-args"] {
        let (reader, _, corrupt) = read(name);
        assert!(reader.is_ok(), "{name}");
        assert_eq!(corrupt, 1, "{name}: one damaged chunk");
    }
}

#[test]
fn a_footer_with_too_many_counts_is_ignored() {
    let (reader, records, corrupt) = read("footer-counts");
    assert!(reader.unwrap().footer().is_none());
    assert_eq!(corrupt, 0);
    assert_eq!(
        records
            .iter()
            .filter(|r| matches!(r, Record::Event(_)))
            .count(),
        2
    );
}

#[test]
fn a_command_line_of_too_many_words_is_a_bad_header() {
    let (reader, _, _) = read("header-words");
    match reader {
        Err(FormatError::BadHeader(why)) => assert!(why.contains("strings"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_long_string_argument_is_cut_and_marked_truncated() {
    let event = |len: usize, truncated: bool| Event {
        goroutine: None,
        weight: 1,
        probe: 0,
        kind: EventKind::Entry,
        pid: 1,
        tid: 1,
        cpu: 0,
        time_ns: 5,
        stack: None,
        latency_ns: None,
        args: vec![
            ArgValue::Str {
                bytes: vec![b'x'; len],
                truncated,
            },
            ArgValue::Int(7),
        ],
    };
    let records = [
        Record::Event(event(MAX_ARG_STRING + 1, false)),
        Record::Event(event(MAX_ARG_STRING, false)),
    ];
    let bytes = crate::write(&crate::sample_header(), &records, WriterOptions::default());
    let read = crate::read_all(&mut Reader::from_bytes(bytes).unwrap());
    assert_eq!(read[0], Record::Event(event(MAX_ARG_STRING, true)));
    assert_eq!(read[1], records[1]);
}

#[test]
fn the_writer_ends_a_chunk_at_the_thread_limit() {
    let records: Vec<Record> = (0..MAX_CHUNK_THREADS as u32 + 10)
        .map(|tid| {
            Record::Event(Event {
                goroutine: None,
                weight: 1,
                probe: 0,
                kind: EventKind::Entry,
                pid: 1,
                tid,
                cpu: 0,
                time_ns: 5,
                stack: None,
                latency_ns: None,
                args: Vec::new(),
            })
        })
        .collect();
    let opts = WriterOptions {
        chunk_events: u32::MAX,
        chunk_bytes: usize::MAX,
        ..WriterOptions::default()
    };
    let bytes = crate::write(&crate::sample_header(), &records, opts);
    let mut reader = Reader::from_bytes(bytes).unwrap();
    assert_eq!(crate::read_all(&mut reader).len(), records.len());
    assert_eq!(reader.status().corrupt_chunks, 0);
    assert_eq!(reader.status().sections.events.chunks, 2);
}

#[test]
fn a_long_python_chain_is_cut_and_marked_truncated() {
    let (_, records, corrupt) = read("huge-python");
    assert_eq!(corrupt, 0);
    let stack = records
        .iter()
        .find_map(|r| match r {
            Record::Stack(s) => Some(s),
            _ => None,
        })
        .expect("the stack is read");
    assert_eq!(stack.python.len(), MAX_PY_FRAMES);
    assert!(stack.python_truncated && !stack.truncated);
    assert_eq!(stack.frames.len(), 1);
}
