//! Replays the fuzz corpus (`fuzz/corpus/reader/`) through the reader on stable Rust, so every
//! input the fuzzer ever kept stays covered by `cargo test`.

use std::path::PathBuf;

use urec_format::*;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/reader")
}

/// What the fuzz target does with each input (keep in sync with fuzz/fuzz_targets/reader.rs).
fn read_everything(bytes: &[u8]) {
    if let Ok(mut r) = Reader::from_bytes(bytes.to_vec()) {
        let _ = r.header();
        let _ = r.footer();
        for rec in r.records() {
            let _ = rec;
        }
        let _ = r.metadata().count();
    }
}

#[test]
fn replay_fuzz_corpus() {
    let dir = corpus_dir();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        read_everything(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 5, "the seed corpus has {n} files");
}

/// Regenerates the seed corpus: `UREC_WRITE_CORPUS=1 cargo test -p urec-format corpus`.
#[test]
fn write_seed_corpus() {
    if std::env::var_os("UREC_WRITE_CORPUS").is_none() {
        return;
    }
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let small = crate::write(
        &crate::sample_header(),
        &crate::sample_records(40),
        crate::small_chunks(),
    );
    let put = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    put("seed-complete", &small);
    put("seed-symbols", &crate::symbols::with_symbols().1);
    put("seed-truncated", &small[..small.len() * 2 / 3]);
    let mut flipped = small.clone();
    let at = small.len() / 2;
    flipped[at] ^= 0x40;
    put("seed-bitflip", &flipped);
    let empty = crate::write(&crate::sample_header(), &[], WriterOptions::default());
    put("seed-no-records", &empty);
    put("seed-empty", b"");
    put("seed-perf", b"PERFILE2\x68\0\0\0\0\0\0\0");
    put("seed-elf", b"\x7fELF\x02\x01\x01\0");
}
