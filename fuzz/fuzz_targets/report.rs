//! Feeds arbitrary bytes to everything `urec report` and `urec script` do with a recording:
//! the analysis, every output and the script (`urec_report::exercise`). Besides panics it
//! looks for memory that grows with what a file claims rather than what it holds, so run it
//! with a memory limit (docs/format.md, "Fuzzing"). Keep in sync with the stable replay of the
//! corpus in report/tests/corpus.rs.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    urec_report::exercise(data);
});
