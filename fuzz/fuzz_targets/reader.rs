//! Feeds arbitrary bytes to the reader: opening, the header, the footer, a full pass and a
//! metadata pass must never panic, whatever the input. Keep in sync with the stable replay
//! of the corpus in format/tests/format/corpus.rs.

#![no_main]

use libfuzzer_sys::fuzz_target;
use urec_format::Reader;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut r) = Reader::from_bytes(data.to_vec()) {
        let _ = r.header();
        let _ = r.footer();
        for rec in r.records() {
            let _ = rec;
        }
        let _ = r.metadata().count();
    }
});
