//! A C program built for one test, with its function symbols, so that recorded stacks can be
//! checked by name against ground truth without going through the report's symbolizer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use urec_format::Stack;

/// A C program compiled into a temporary directory that also holds the test's recordings.
pub struct Fixture {
    dir: tempfile::TempDir,
    /// The executable.
    pub exe: PathBuf,
    /// Function name -> (address, size), from `nm -S`. For a non-PIE build these are the
    /// addresses in the process.
    pub symbols: HashMap<String, (u64, u64)>,
}

impl Fixture {
    /// Compiles `source` with gcc and `flags` into a new temporary directory as `name`.
    pub fn build(name: &str, source: &str, flags: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let exe = super::build_c(dir.path(), name, source, flags);
        let nm = Command::new("nm")
            .arg("-S")
            .arg(&exe)
            .output()
            .expect("running nm");
        let mut symbols = HashMap::new();
        for line in String::from_utf8_lossy(&nm.stdout).lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() == 4 && (f[2] == "T" || f[2] == "t") {
                let addr = u64::from_str_radix(f[0], 16).unwrap();
                let size = u64::from_str_radix(f[1], 16).unwrap();
                symbols.insert(f[3].to_string(), (addr, size));
            }
        }
        Fixture { dir, exe, symbols }
    }

    /// The executable's path, as `urec` arguments want it.
    pub fn path(&self) -> &str {
        self.exe.to_str().unwrap()
    }

    /// A file `name` in the fixture's temporary directory (e.g. a recording).
    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The function containing `addr` (a return address points after its call: `addr - 1`).
    pub fn symbolize(&self, addr: u64, is_return_address: bool) -> Option<&str> {
        let a = if is_return_address { addr - 1 } else { addr };
        self.symbols
            .iter()
            .find(|(_, &(start, size))| a >= start && a < start + size)
            .map(|(n, _)| n.as_str())
    }

    /// Innermost-first names of every frame of `stack` ("?" outside the program).
    pub fn names(&self, stack: &Stack) -> Vec<String> {
        self.first_names(stack, usize::MAX)
    }

    /// Innermost-first names of the first `n` frames of `stack` ("?" outside the program).
    pub fn first_names(&self, stack: &Stack, n: usize) -> Vec<String> {
        stack
            .frames
            .iter()
            .take(n)
            .enumerate()
            .map(|(i, f)| self.symbolize(f.0, i > 0).unwrap_or("?").to_string())
            .collect()
    }
}
