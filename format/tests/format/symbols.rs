//! The symbols section appended to a complete recording (docs/format.md, "Symbols section"):
//! round trip, the recording before it untouched, an interrupted step, a refreshed section.

use urec_format::*;

pub fn sample_symbols() -> Vec<BinarySymbols> {
    vec![
        BinarySymbols {
            path: "/usr/bin/app".into(),
            build_id: Some(BuildId(vec![0xab; 20])),
            entries: vec![
                SymbolEntry {
                    offset: 0x1139,
                    frames: vec![SymbolFrame {
                        function: "main".into(),
                        file: Some("app.c".into()),
                        line: Some(12),
                    }],
                },
                SymbolEntry {
                    offset: 0x1200,
                    frames: vec![
                        SymbolFrame {
                            function: "work".into(),
                            file: Some("app.c".into()),
                            line: Some(30),
                        },
                        SymbolFrame {
                            function: "inlined_helper".into(),
                            file: Some("helper.h".into()),
                            line: None,
                        },
                    ],
                },
            ],
        },
        BinarySymbols {
            path: "/lib/libc.so.6".into(),
            build_id: None,
            entries: (0..40_000u64)
                .map(|i| SymbolEntry {
                    offset: 0x20000 + i * 16,
                    frames: vec![SymbolFrame {
                        function: format!("f{}", i % 300).into(),
                        file: None,
                        line: None,
                    }],
                })
                .collect(),
        },
    ]
}

/// A complete recording with the sample symbols appended.
pub fn with_symbols() -> (Vec<u8>, Vec<u8>) {
    let base = crate::write(
        &crate::sample_header(),
        &crate::sample_records(40),
        crate::small_chunks(),
    );
    let reader = Reader::from_bytes(base.clone()).unwrap();
    let footer = reader.footer().unwrap().clone();
    let mut out = base.clone();
    let stats = append_symbols(&mut out, base.len() as u64, &footer, &sample_symbols()).unwrap();
    assert!(stats.chunks >= 1 && stats.records >= 3);
    (base, out)
}

fn symbols_of(records: &[Record]) -> Vec<BinarySymbols> {
    let mut merged: Vec<BinarySymbols> = Vec::new();
    for r in records {
        if let Record::Symbols(s) = r {
            match merged
                .iter_mut()
                .find(|m| m.path == s.path && m.build_id == s.build_id)
            {
                Some(m) => m.entries.extend(s.entries.iter().cloned()),
                None => merged.push(s.clone()),
            }
        }
    }
    merged
}

#[test]
fn round_trip_after_the_complete_recording() {
    let (base, file) = with_symbols();
    let mut r = Reader::from_bytes(file).unwrap();
    assert_eq!(r.complete_len(), Some(base.len() as u64));
    let footer = r.footer().unwrap().clone();
    assert!(footer.sections.symbols.stored_bytes > 0);
    let records = crate::read_all(&mut r);
    assert!(
        !r.status().truncated && r.status().warnings.is_empty(),
        "{:?}",
        r.status()
    );
    assert_eq!(symbols_of(&records), sample_symbols());
    // Everything before the section reads exactly as without it.
    let without: Vec<Record> = records
        .into_iter()
        .filter(|r| !matches!(r, Record::Symbols(_)))
        .collect();
    assert_eq!(
        without,
        crate::read_all(&mut Reader::from_bytes(base).unwrap())
    );
    assert_eq!(r.status().sections.symbols, footer.sections.symbols);
}

#[test]
fn an_interrupted_step_leaves_a_complete_recording() {
    let (base, file) = with_symbols();
    for cut in [base.len() + 10, base.len() + 40, file.len() - 60] {
        let mut r = Reader::from_bytes(file[..cut].to_vec()).unwrap();
        let records = crate::read_all(&mut r);
        let status = r.status();
        assert!(!status.truncated, "cut at {cut}");
        assert_eq!(status.corrupt_chunks, 0, "cut at {cut}");
        assert!(
            status.warnings.iter().any(|w| w.contains("unfinished")),
            "cut at {cut}: {:?}",
            status.warnings
        );
        assert!(records.iter().any(|r| matches!(r, Record::Finish(_))));
        assert_eq!(r.complete_len(), Some(base.len() as u64));
    }
}

#[test]
fn a_refreshed_section_replaces_the_old_one() {
    let (base, file) = with_symbols();
    let r = Reader::from_bytes(file).unwrap();
    let len = r.complete_len().unwrap() as usize;
    let mut again = base[..len].to_vec();
    let one = vec![sample_symbols()[0].clone()];
    append_symbols(&mut again, len as u64, r.footer().unwrap(), &one).unwrap();
    let mut r = Reader::from_bytes(again).unwrap();
    assert_eq!(symbols_of(&crate::read_all(&mut r)), one);
}
