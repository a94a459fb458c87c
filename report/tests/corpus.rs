//! Replays the fuzz corpus of the `report` target (`fuzz/corpus/report/`) through everything
//! `report` and `script` do with a recording, on stable Rust, so every input the fuzzer kept,
//! and every crafted attack file, stays covered by `cargo test`.

use std::path::PathBuf;

use urec_format::hostile::{self, Scale};
use urec_format::synth::{Synth, SynthConfig};
use urec_format::{Writer, WriterOptions};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/report")
}

#[test]
fn replay_fuzz_corpus() {
    let dir = corpus_dir();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        // What fuzz/fuzz_targets/report.rs does with each input.
        urec_report::exercise(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 10, "the seed corpus has {n} files");
}

/// The corpus holds the crafted files at a twentieth of the scale the memory tests use:
/// the shapes are what matters to a fuzzer, and a replay of each stays well under a second.
fn corpus_scale() -> Scale {
    Scale {
        n: 1_000_000,
        entries: 1_000_000,
        window_events: 6_000,
        processes: 12_000,
    }
}

/// Regenerates the seed corpus: `UREC_WRITE_CORPUS=1 cargo test -p urec-report --test corpus`.
#[test]
fn write_seed_corpus() {
    if std::env::var_os("UREC_WRITE_CORPUS").is_none() {
        return;
    }
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for c in hostile::all(corpus_scale()) {
        // A seed larger than the fuzzer's -max_len (docs/format.md, "Fuzzing") would only be
        // cut: the classes whose bytes are their events (unreturned-threads) stay out.
        if c.bytes.len() > 131_072 {
            continue;
        }
        std::fs::write(dir.join(format!("hostile-{}", c.name)), &c.bytes).unwrap();
    }
    let mut synth = Synth::new(SynthConfig {
        stacks: 16,
        ..SynthConfig::default()
    });
    let opts = WriterOptions {
        chunk_events: 64,
        ..WriterOptions::default()
    };
    let mut w = Writer::with_options(Vec::new(), &synth.header(), opts).unwrap();
    synth.write_all(&mut w, 400).unwrap();
    let valid = w.finish().unwrap();
    std::fs::write(dir.join("seed-synth"), &valid).unwrap();
    std::fs::write(
        dir.join("seed-synth-truncated"),
        &valid[..valid.len() * 2 / 3],
    )
    .unwrap();
}

/// Writes the crafted files at full scale into `$UREC_HOSTILE_DIR`, for measuring commands
/// by hand (docs/performance.md, "Untrusted files: memory").
#[test]
fn write_hostile_files() {
    let Some(dir) = std::env::var_os("UREC_HOSTILE_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    for c in hostile::all(Scale::default()) {
        std::fs::write(dir.join(format!("{}.data", c.name)), &c.bytes).unwrap();
    }
}
