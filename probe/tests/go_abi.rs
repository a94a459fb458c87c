//! `argN` on Go functions: Go's register ABI (ABIInternal), checked on a Go program built here
//! with `go build`. Which register holds which word comes from Go's ABI document
//! (`src/cmd/compile/abi-internal.md`: RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11), not from
//! urec-probe. Skipped with a message when no `go` is installed (a failure under `CI=true`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use urec_probe::{parse, resolve, Fetch, Reg, ResolveOptions};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/goabi/main.go");

/// The Go fixture, built once per test run; None without a Go toolchain.
fn gobin() -> Option<&'static Path> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("urec-probe-go");
        std::fs::create_dir_all(&dir).expect("create fixture dir");
        let bin = dir.join("goabi");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(FIXTURE)
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("gopath"))
            .env("GO111MODULE", "off")
            .output();
        match out {
            Ok(o) if o.status.success() => Some(bin),
            Ok(o) => panic!("go build failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("CI=true: no Go toolchain ({e}; scripts/install-deps.sh installs golang-go)");
                }
                eprintln!("skipped: no go toolchain ({e})");
                None
            }
        }
    })
    .as_deref()
}

fn one(spec: &str) -> urec_probe::ResolvedProbe {
    let parsed = parse(spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
    let mut r =
        resolve(&[parsed], &ResolveOptions::default()).unwrap_or_else(|e| panic!("{spec}: {e}"));
    assert_eq!(r.probes.len(), 1, "{spec}: {:?}", r.probes);
    r.probes.remove(0)
}

#[test]
fn args_are_go_registers() {
    let Some(bin) = gobin() else { return };
    // Leaf(s string, n int): s is (RAX, RBX), n is RCX.
    let p = one(&format!(
        "{}:main.Leaf ptr=arg1 len=arg2 n=arg3:s64 first=+0(arg1):u8 r=$retval",
        bin.display()
    ));
    assert!(p.binary_is_go);
    assert_eq!(
        p.fetches,
        vec![
            Fetch::Reg(Reg::Ax),
            Fetch::Reg(Reg::Bx),
            Fetch::Reg(Reg::Cx),
            Fetch::Deref {
                offset: 0,
                inner: Box::new(Fetch::Reg(Reg::Ax))
            },
            Fetch::Retval,
        ]
    );
    assert_eq!(
        p.fetches[4].lowered(),
        Fetch::Reg(Reg::Ax),
        "the first result"
    );
    // The data file keeps the text as written.
    assert_eq!(p.probe.args[0].fetch, "arg1");

    // A method's receiver is arg1.
    let m = one(&format!(
        "{}:main.(*Counter).Add c=arg1 x=arg2",
        bin.display()
    ));
    assert_eq!(m.fetches, vec![Fetch::Reg(Reg::Ax), Fetch::Reg(Reg::Bx)]);

    // The last register, and past it a refusal that says how to read the rest.
    let l = one(&format!("{}:main.Leaf a=arg9", bin.display()));
    assert_eq!(l.fetches, vec![Fetch::Reg(Reg::R11)]);
    let spec = format!("{}:main.Leaf a=arg10", bin.display());
    let err = resolve(&[parse(&spec).unwrap()], &ResolveOptions::default())
        .expect_err("arg10 of a Go function");
    assert!(err.to_string().contains("$stackN"), "{err}");
}

#[test]
fn predicates_read_go_registers() {
    let Some(bin) = gobin() else { return };
    let p = one(&format!("{}:main.Leaf n=arg3:s64 if n > 2", bin.display()));
    let pred = p.predicate.expect("a predicate");
    assert_eq!(pred.operands[0].fetch, Fetch::Reg(Reg::Cx));
    let q = one(&format!("{}:main.Leaf if arg2 == 5", bin.display()));
    assert_eq!(
        q.predicate.expect("a predicate").operands[0].fetch,
        Fetch::Reg(Reg::Bx)
    );
}

#[test]
fn c_binaries_keep_the_system_v_abi() {
    // The system's C library: arg1 is still %di there.
    let p = one("libc:malloc size=arg1");
    assert!(!p.binary_is_go);
    assert_eq!(p.fetches[0].lowered(), Fetch::Reg(Reg::Di));
}
