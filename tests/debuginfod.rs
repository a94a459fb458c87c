//! debuginfod (SPEC "debuginfod"): report names what no local file can, from a real local
//! server (Debian's `debuginfod` serving a directory), keeps what it fetched in elfutils'
//! cache, remembers misses as elfutils does, and survives a server that is not there.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::fixture::Fixture;
use common::*;

const SOURCE: &str = r#"
__attribute__((noinline)) int leaf(int x) { return x * 2; }
__attribute__((noinline)) int a(int x) { return leaf(x) + 1; }
__attribute__((noinline)) int b(int x) { return leaf(x) + 2; }
int main(void) {
    int s = 0;
    for (int i = 0; i < 600; i++) s += a(i);
    for (int i = 0; i < 400; i++) s += b(i);
    return s == 0;
}
"#;

/// A running `debuginfod`, killed when the test ends, panicking or not.
struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The HTTP status of `GET path` on the server, `None` while it does not answer.
fn status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Starts `debuginfod -F -d :memory: -p PORT DIR` and waits until it serves `ready` (its
/// scan of DIR runs in the background).
fn serve(dir: &Path, ready: &str) -> Server {
    let port = free_port();
    let child = Command::new("debuginfod")
        .args(["-F", "-d", ":memory:", "-p", &port.to_string()])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting debuginfod (scripts/install-deps.sh installs it)");
    let server = Server { child, port };
    poll(
        Duration::from_secs(60),
        "debuginfod did not serve the debug file",
        || (status(port, ready) == Some(200)).then_some(()),
    );
    server
}

/// The build id of an ELF file, as hex (from `readelf -n`).
fn build_id(path: &Path) -> String {
    let out = Command::new("readelf")
        .arg("-n")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("a build id")
        .trim()
        .to_string()
}

fn run(cmd: &[&str], path: &Path) {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// The fixture compiled with -g, its debug info copied to `served/NAME.debug`, recorded
/// without a symbols section, then stripped: nothing local names its frames.
fn stripped_recording(name: &str, source: &str, served: Option<&Path>) -> (Fixture, PathBuf) {
    let t = Fixture::build(name, source, &["-g", "-O1", "-fno-omit-frame-pointer"]);
    if let Some(dir) = served {
        let debug = dir.join(format!("{name}.debug"));
        let out = Command::new("objcopy")
            .arg("--only-keep-debug")
            .arg(&t.exe)
            .arg(&debug)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let data = t.data("d.data");
    let spec = format!("{}:leaf", t.path());
    let out = record(&[
        "-q",
        "--no-symbols",
        "-o",
        data.to_str().unwrap(),
        "-e",
        &spec,
        "--",
        t.path(),
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Stripped after recording: probes by name need the symbol table; the build id stays.
    run(&["strip"], &t.exe);
    (t, data)
}

/// `urec report -i DATA --folded - EXTRA` with the given servers and cache.
fn report(data: &Path, urls: &str, cache: &Path, extra: &[&str]) -> Output {
    let out = Command::new(UREC)
        .args(["report", "-i", data.to_str().unwrap()])
        .args(extra)
        .env("DEBUGINFOD_URLS", urls)
        .env("DEBUGINFOD_CACHE_PATH", cache)
        .env("DEBUGINFOD_TIMEOUT", "5")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    out
}

/// The program's own part of each folded stack (libc's frames are named locally anyway).
fn own(out: &Output, name: &str) -> Vec<String> {
    let prefix = format!("{name}+");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').unwrap();
            let frames: Vec<&str> = stack
                .split(';')
                .skip_while(|f| *f != "main" && !f.starts_with(&prefix))
                .collect();
            format!("{} {n}", frames.join(";"))
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn names_a_stripped_binary_from_the_server_then_from_the_cache() {
    if !have_root() {
        return;
    }
    let served = tempfile::tempdir().unwrap();
    let (t, data) = stripped_recording("dbgd", SOURCE, Some(served.path()));
    let id = build_id(&t.exe);
    let cache = tempfile::tempdir().unwrap();
    let folded = ["--folded", "-"];

    let off = report(&data, "", cache.path(), &folded);
    assert!(
        own(&off, "dbgd").iter().all(|l| l.contains("dbgd+0x")),
        "{:?}",
        own(&off, "dbgd")
    );

    let server = serve(served.path(), &format!("/buildid/{id}/debuginfo"));
    let out = report(
        &data,
        &server.url(),
        cache.path(),
        &["--no-debuginfod", "--folded", "-"],
    );
    assert!(own(&out, "dbgd").iter().all(|l| l.contains("dbgd+0x")));
    assert!(!cache.path().join(&id).exists(), "--no-debuginfod asked");

    let out = report(&data, &server.url(), cache.path(), &folded);
    assert_eq!(
        own(&out, "dbgd"),
        ["main;a;leaf 600", "main;b;leaf 400"],
        "{}",
        stderr(&out)
    );
    let cached = cache.path().join(&id).join("debuginfo");
    assert!(std::fs::metadata(&cached).unwrap().len() > 0);
    let json = report(&data, &server.url(), cache.path(), &["--json", "-"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        v["recording"]["symbols"]["binaries"]["debuginfod"], 1,
        "{v}"
    );

    // script asks lazily, per binary, as it streams.
    let script = Command::new(UREC)
        .args(["script", "-i", data.to_str().unwrap()])
        .env("DEBUGINFOD_URLS", server.url())
        .env("DEBUGINFOD_CACHE_PATH", cache.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&script.stdout);
    assert!(text.contains(" leaf (") && text.contains(" a ("), "{text}");
    // archive embeds what debuginfod named, for machines without a server.
    let archived = t.data("archived.data");
    std::fs::copy(&data, &archived).unwrap();
    report(
        &archived,
        &server.url(),
        cache.path(),
        &["--no-debuginfod", "--folded", "-"],
    );
    let out = Command::new(UREC)
        .args(["archive", "-i", archived.to_str().unwrap()])
        .env("DEBUGINFOD_URLS", server.url())
        .env("DEBUGINFOD_CACHE_PATH", cache.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let empty = tempfile::tempdir().unwrap();
    let out = report(&archived, "", empty.path(), &folded);
    assert_eq!(own(&out, "dbgd"), ["main;a;leaf 600", "main;b;leaf 400"]);

    // No copy of the binary anywhere: the debug file alone names the frames (the server has no
    // executable, and that miss is remembered too).
    let moved = t.data("moved");
    std::fs::rename(&t.exe, &moved).unwrap();
    let cold = tempfile::tempdir().unwrap();
    let out = report(&data, &server.url(), cold.path(), &folded);
    assert_eq!(
        own(&out, "dbgd"),
        ["main;a;leaf 600", "main;b;leaf 400"],
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("not found"), "{}", stderr(&out));
    assert_eq!(
        std::fs::metadata(cold.path().join(&id).join("executable"))
            .unwrap()
            .len(),
        0
    );
    std::fs::rename(&moved, &t.exe).unwrap();

    drop(server);
    let out = report(&data, &server_gone_url(), cache.path(), &folded);
    assert_eq!(own(&out, "dbgd"), ["main;a;leaf 600", "main;b;leaf 400"]);
    assert!(!stderr(&out).contains("unreachable"), "{}", stderr(&out));

    // A server with the executable as well: it is fetched when no copy is here.
    std::fs::copy(&t.exe, served.path().join("dbgd")).unwrap();
    let server = serve(served.path(), &format!("/buildid/{id}/executable"));
    std::fs::remove_file(&t.exe).unwrap();
    let cold = tempfile::tempdir().unwrap();
    let out = report(&data, &server.url(), cold.path(), &folded);
    assert_eq!(own(&out, "dbgd"), ["main;a;leaf 600", "main;b;leaf 400"]);
    assert!(
        std::fs::metadata(cold.path().join(&id).join("executable"))
            .unwrap()
            .len()
            > 0
    );
}

/// A URL whose port nothing listens on.
fn server_gone_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

#[test]
fn a_miss_is_remembered_as_elfutils_does() {
    if !have_root() {
        return;
    }
    // The server has another program's debug file, not this one's.
    let served = tempfile::tempdir().unwrap();
    let (other, _) = stripped_recording("served", SOURCE, Some(served.path()));
    let (t, data) = stripped_recording("unserved", &SOURCE.replace("x * 2", "x * 3"), None);
    let cache = tempfile::tempdir().unwrap();
    let server = serve(
        served.path(),
        &format!("/buildid/{}/debuginfo", build_id(&other.exe)),
    );
    let id = build_id(&t.exe);
    let out = report(&data, &server.url(), cache.path(), &["--folded", "-"]);
    assert!(own(&out, "unserved")
        .iter()
        .all(|l| l.contains("unserved+0x")));
    let miss = cache.path().join(&id).join("debuginfo");
    let meta = std::fs::metadata(&miss).unwrap();
    assert_eq!(meta.len(), 0);
    assert_eq!(meta.permissions().mode() & 0o777, 0);
    // The next report believes the miss: it does not ask even a server that is gone (which
    // would warn), and leaves the marker as it was.
    drop(server);
    let out = report(&data, &server_gone_url(), cache.path(), &["--folded", "-"]);
    assert!(!stderr(&out).contains("unreachable"), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(&miss).unwrap().mtime(), meta.mtime());
}

#[test]
fn an_unreachable_server_costs_one_warning() {
    if !have_root() {
        return;
    }
    let (_t, data) = stripped_recording("nowhere", SOURCE, None);
    let cache = tempfile::tempdir().unwrap();
    let out = report(&data, &server_gone_url(), cache.path(), &["--folded", "-"]);
    let err = stderr(&out);
    assert_eq!(err.matches("unreachable").count(), 1, "{err}");
    assert!(own(&out, "nowhere")
        .iter()
        .all(|l| l.contains("nowhere+0x")));
}
