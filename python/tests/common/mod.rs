//! Helpers shared by this crate's tests that read a live interpreter.

use std::fs;
use std::path::Path;

/// The run-time address of file offset `offset` of `file` in process `pid`: the mapping of
/// that file that holds the offset, as the recorder will rebase it.
pub fn avma(pid: u32, file: &Path, offset: u64) -> u64 {
    let file = fs::canonicalize(file).expect("canonical path");
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || Path::new(f[5]) != file {
            continue;
        }
        let (start, end) = f[0].split_once('-').expect("range");
        let start = u64::from_str_radix(start, 16).expect("hex");
        let end = u64::from_str_radix(end, 16).expect("hex");
        let pgoff = u64::from_str_radix(f[2], 16).expect("hex");
        if (pgoff..pgoff + (end - start)).contains(&offset) {
            return start + (offset - pgoff);
        }
    }
    panic!("{} offset {offset:#x} not mapped in {pid}", file.display());
}
