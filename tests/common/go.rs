//! Building the Go programs that tests probe, with the machine's Go toolchain. Shared by the
//! test binaries of several crates (`#[path = ".../tests/common/go.rs"] mod go;`), so it
//! depends on std alone.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether a Go toolchain is here. Without one the caller skips, with a message; under
/// `CI=true` that fails instead (CI installs golang-go, so a missing one is a broken setup,
/// not a reason to pass).
pub fn have_go() -> bool {
    match Command::new("go").arg("version").output() {
        Ok(o) if o.status.success() => true,
        found => {
            let why = match found {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "CI=true: no Go toolchain ({why}); scripts/install-deps.sh installs golang-go"
                );
            }
            eprintln!("skipped: no Go toolchain ({why})");
            false
        }
    }
}

/// Builds `source`, one `main` package, into `dir/name` with `go build FLAGS` (cgo on or off);
/// call [`have_go`] first. A failing build fails the test.
pub fn build_go(dir: &Path, name: &str, source: &str, flags: &[&str], cgo: bool) -> PathBuf {
    // One directory per program, whatever the build: the file names Go records (and tests
    // compare between builds) are then the same.
    let src_dir = dir.join(format!("src-{:016x}", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut h);
        h.finish()
    }));
    std::fs::create_dir_all(&src_dir).expect("a source directory");
    let src = src_dir.join("main.go");
    std::fs::write(&src, source).expect("writing main.go");
    let exe = dir.join(name);
    let out = Command::new("go")
        .arg("build")
        .args(flags)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .current_dir(&src_dir)
        // One cache for every test run: a cold build of the runtime takes seconds.
        .env("GOCACHE", std::env::temp_dir().join("urec-test-gocache"))
        .env("GOPATH", std::env::temp_dir().join("urec-test-gopath"))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("CGO_ENABLED", if cgo { "1" } else { "0" })
        .output()
        .expect("running go build");
    assert!(
        out.status.success(),
        "go build {flags:?} of {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}
