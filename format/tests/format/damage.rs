//! Cut, damaged and foreign files: never a panic; an error when nothing can be read, else the
//! good chunks with the damage counted.

use proptest::prelude::*;
use urec_format::*;

use crate::{chunks, read_all, sample_header, sample_records, small_chunks, write};

/// The records of each chunk of `bytes` (header and footer chunks hold none).
fn records_per_chunk(bytes: &[u8]) -> Vec<Vec<Record>> {
    let mut out = Vec::new();
    for (off, _, len, _) in chunks(bytes) {
        // The records of the file cut after this chunk, minus those of the file cut before it.
        let before = read_prefix(&bytes[..off]).len();
        let after = read_prefix(&bytes[..off + len]);
        out.push(after[before..].to_vec());
    }
    out
}

fn read_prefix(bytes: &[u8]) -> Vec<Record> {
    match Reader::from_bytes(bytes.to_vec()) {
        Ok(mut r) => read_all(&mut r),
        Err(_) => Vec::new(),
    }
}

fn sample_file() -> (Vec<Record>, Vec<u8>) {
    let records = sample_records(300);
    let bytes = write(&sample_header(), &records, small_chunks());
    let mut r = Reader::from_bytes(bytes.clone()).unwrap();
    (read_all(&mut r), bytes)
}

#[test]
fn truncation_at_every_chunk_boundary_and_inside_chunks() {
    let (all, bytes) = sample_file();
    let chunks = chunks(&bytes);
    assert!(chunks.len() > 20, "want many chunks, got {}", chunks.len());
    let header_end = chunks[0].0 + chunks[0].2;
    let mut complete = 0usize; // records in the chunks wholly before the cut
    for (i, &(off, kind, len, count)) in chunks.iter().enumerate() {
        // Cut at the chunk's start, one byte in, in its frame, in its middle, one byte short.
        for cut in [
            off,
            off + 1,
            off + 10,
            off + 24,
            off + len / 2,
            off + len - 1,
        ] {
            if cut < header_end {
                let err = Reader::from_bytes(bytes[..cut].to_vec()).unwrap_err();
                assert!(
                    matches!(err, FormatError::BadHeader(_)),
                    "cut at {cut}: {err}"
                );
                continue;
            }
            let mut reader = Reader::from_bytes(bytes[..cut].to_vec()).unwrap();
            let read = read_all(&mut reader);
            assert_eq!(read.len(), complete, "cut at {cut} in chunk {i}");
            assert_eq!(read[..], all[..complete]);
            let status = reader.status();
            assert!(status.truncated, "cut at {cut}");
            assert_eq!(
                status.corrupt_chunks, 0,
                "cut at {cut}: {:?}",
                status.warnings
            );
        }
        if kind != 1 && kind != 4 {
            complete += count as usize;
        }
        let _ = i;
    }
    assert_eq!(complete, all.len());
    // Without the trailer, or without footer and trailer: every record, and only the latter
    // is truncated.
    let footer = chunks.last().unwrap();
    let mut r = Reader::from_bytes(bytes[..footer.0 + footer.2].to_vec()).unwrap();
    assert_eq!(read_all(&mut r), all);
    assert!(!r.status().truncated);
    assert!(r.footer().is_none());
    let mut r = Reader::from_bytes(bytes[..footer.0].to_vec()).unwrap();
    assert_eq!(read_all(&mut r), all);
    assert!(r.status().truncated);
}

#[test]
fn a_damaged_chunk_is_skipped_and_counted() {
    let (all, bytes) = sample_file();
    let per_chunk = records_per_chunk(&bytes);
    let chunks = chunks(&bytes);
    let header_end = chunks[0].0 + chunks[0].2;
    let footer_at = chunks.last().unwrap().0;
    // Flip one bit in several places of every chunk after the header.
    for (i, &(off, kind, len, _)) in chunks.iter().enumerate().skip(1) {
        for at in [
            off,
            off + 4,
            off + 9,
            off + 13,
            off + 17,
            off + 21,
            off + len - 1,
            off + len / 2,
        ] {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x10;
            let mut reader = Reader::from_bytes(damaged).unwrap();
            let read = read_all(&mut reader);
            let status = reader.status().clone();
            if kind == 4 && at == off + 9 {
                // A footer whose length now runs past the end looks like a cut file.
                assert!(status.truncated && status.corrupt_chunks == 0, "{status:?}");
            } else {
                assert_eq!(
                    status.corrupt_chunks, 1,
                    "flip at {at} (chunk {i}): {status:?}"
                );
            }
            assert!(!status.warnings.is_empty());
            let expected: Vec<Record> = per_chunk
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .flat_map(|(_, r)| r.clone())
                .collect();
            assert_eq!(read, expected, "flip at {at} (chunk {i})");
            // A damaged footer leaves the file without one.
            assert_eq!(status.truncated, kind == 4, "flip at {at}");
        }
    }
    // Damage inside the header is an error; inside the trailer only a warning.
    // (Bytes 10..16, the minor version and the reserved flags, are read as they come.)
    for at in (0..10).chain(16..header_end) {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x01;
        assert!(Reader::from_bytes(damaged).is_err(), "flip at {at}");
    }
    for at in bytes.len() - 16..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x01;
        let mut reader = Reader::from_bytes(damaged).unwrap();
        assert_eq!(read_all(&mut reader), all);
        assert!(reader.footer().is_none());
        assert_eq!(reader.status().corrupt_chunks, 0);
        assert!(!reader.status().truncated);
        assert_eq!(reader.status().warnings.len(), 1);
    }
    let _ = footer_at;
}

#[test]
fn garbage_between_chunks_is_skipped() {
    let (all, bytes) = sample_file();
    let chunks = chunks(&bytes);
    let at = chunks[5].0;
    let mut damaged = bytes[..at].to_vec();
    damaged.extend_from_slice(b"uCHK this is not a chunk uCH");
    damaged.extend_from_slice(&bytes[at..]);
    let mut reader = Reader::from_bytes(damaged).unwrap();
    assert_eq!(read_all(&mut reader), all);
    assert_eq!(reader.status().corrupt_chunks, 1);
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty");
    std::fs::write(&path, b"").unwrap();
    let err = Reader::open(&path).unwrap_err();
    assert!(matches!(err, FormatError::Empty));
    assert_eq!(
        err.to_string(),
        "the file is empty (0 bytes), not a urec data file"
    );
    assert!(matches!(
        Reader::from_bytes(Vec::new()),
        Err(FormatError::Empty)
    ));
}

#[test]
fn missing_file() {
    let err = Reader::open("/nonexistent/urec.data").unwrap_err();
    assert!(matches!(err, FormatError::Io(_)));
}

#[test]
fn foreign_files_say_what_they_are() {
    let elf = Reader::open("/bin/true").unwrap_err();
    assert_eq!(
        elf.to_string(),
        "not a urec data file: it is an ELF file (a program or library), not a recording"
    );
    let mut perf = b"PERFILE2".to_vec();
    perf.extend_from_slice(&104u64.to_le_bytes());
    perf.resize(104, 0);
    let err = Reader::from_bytes(perf).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a urec data file: it is a perf.data file (PERFILE2); read it with `perf report`"
    );
    let err = Reader::from_bytes(b"hello world\nsecond line\n".to_vec()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a urec data file: it looks like text, starting with \"hello world\""
    );
    let err = Reader::from_bytes(vec![0, 1, 2, 3, 0xff, 0xfe, 7, 8, 9, 10]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "not a urec data file: it starts with the bytes 00 01 02 03 ff fe 07 08"
    );
}

#[test]
fn newer_major_version_is_refused() {
    let mut bytes = write(&sample_header(), &[], WriterOptions::default());
    bytes[8] = 3;
    bytes[10] = 1;
    let err = Reader::from_bytes(bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "urec data file version 3.1 is not supported by this urec (it reads versions 1.x to \
         2.x); a newer urec wrote it"
    );
    let mut bytes = write(&sample_header(), &[], WriterOptions::default());
    bytes[8] = 0;
    let err = Reader::from_bytes(bytes).unwrap_err();
    assert!(!err.to_string().contains("newer"), "{err}");
}

/// 1.x files (varint event columns) read completely: the reader keeps both layouts.
#[test]
fn older_major_version_is_read() {
    let mut bytes = write(&sample_header(), &[], WriterOptions::default());
    bytes[8] = 1;
    bytes[10] = 5;
    let reader = Reader::from_bytes(bytes).unwrap();
    assert_eq!(reader.version(), (1, 5));
}

#[test]
fn newer_minor_version_is_read() {
    let mut bytes = write(
        &sample_header(),
        &sample_records(10),
        WriterOptions::default(),
    );
    bytes[10] = 9;
    let mut reader = Reader::from_bytes(bytes).unwrap();
    assert_eq!(reader.version(), (VERSION_MAJOR, 9));
    assert_eq!(read_all(&mut reader).len(), sample_records(10).len());
}

#[test]
fn short_prefix_of_a_recording() {
    let bytes = write(&sample_header(), &[], WriterOptions::default());
    for cut in 1..40 {
        let err = Reader::from_bytes(bytes[..cut].to_vec()).unwrap_err();
        assert!(matches!(err, FormatError::BadHeader(_)), "cut {cut}: {err}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        if let Ok(mut r) = Reader::from_bytes(bytes) {
            for rec in r.records() {
                let _ = rec;
            }
        }
    }

    #[test]
    fn random_bytes_after_a_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut bytes = write(&sample_header(), &[], WriterOptions::default());
        let header_end = chunks(&bytes)[0].0 + chunks(&bytes)[0].2;
        bytes.truncate(header_end);
        bytes.extend_from_slice(&tail);
        let mut r = Reader::from_bytes(bytes).unwrap();
        let n = r.records().count();
        prop_assert!(r.status().truncated || n == 0 || r.status().corrupt_chunks > 0);
    }

    #[test]
    fn random_damage_never_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..20),
    ) {
        let bytes = write(&sample_header(), &sample_records(200), small_chunks());
        let mut damaged = bytes.clone();
        for (i, x) in flips {
            let at = i.index(damaged.len());
            damaged[at] = x;
        }
        if let Ok(mut r) = Reader::from_bytes(damaged) {
            for rec in r.records() {
                let _ = rec;
            }
            let _ = r.metadata().count();
        }
    }
}
