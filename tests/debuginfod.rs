//! debuginfod (SPEC "debuginfod"): report names what no local file can, from a real local
//! server (Debian's `debuginfod` serving a directory), keeps what it fetched in elfutils'
//! cache, remembers misses as elfutils does, and survives a server that is not there.
//!
//! And survives a server that attacks it (docs/security.md): a redirect to `file://`, a
//! drip, a download that never ends, a huge body, a file with another build id, each from a
//! few lines of HTTP written here, against a recording crafted here (no root needed). Each
//! such run is measured as `/usr/bin/time -v` would (peak RSS, CPU, wall) and so are the
//! sealed copies it makes; `UREC_UNDER_TEST=path/to/urec` runs the same attacks against
//! another build, to compare.

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

// ---------------------------------------------------------------------------------------------
// Hostile servers. Debian's debuginfod cannot be made to misbehave, so these tests answer with
// a few lines of HTTP of their own (127.0.0.1 only, every loop bounded, the server stops by
// itself), against a recording crafted here: nothing needs root.

/// Longest a hostile server lives, and so the longest anything here can wait on it.
const SERVER_LIFETIME: Duration = Duration::from_secs(150);

/// A child still running after this is killed and the test fails: the fixed code needs a few
/// seconds at most for every case here.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// What a handler writes for one request path, on the connection it was asked on.
type Handler = dyn Fn(&str, &mut TcpStream, u16) + Send + Sync;

/// A listener on 127.0.0.1 answering each request on its own thread with `handler`, until it
/// is dropped or [`SERVER_LIFETIME`] has passed.
struct Hostile {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Hostile {
    fn start(handler: impl Fn(&str, &mut TcpStream, u16) + Send + Sync + 'static) -> Hostile {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let stopping = stop.clone();
        let accept = std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut served = 0;
            while !stopping.load(Ordering::Relaxed) && started.elapsed() < SERVER_LIFETIME {
                match listener.accept() {
                    Ok((mut conn, _)) if served < 64 => {
                        served += 1;
                        let handler = handler.clone();
                        std::thread::spawn(move || {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                            let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
                            if let Some(path) = request_path(&mut conn) {
                                handler(&path, &mut conn, port);
                            }
                        });
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Hostile {
            port,
            stop,
            accept: Some(accept),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// The path of a GET request, read up to the end of its head (at most 16 KiB).
fn request_path(conn: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        conn.read_exact(&mut byte).ok()?;
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head).lines().next()?.to_string();
    line.split_whitespace().nth(1).map(str::to_string)
}

/// Writes `bytes` one at a time, `every` apart, for as long as the client reads and the
/// server lives.
fn drip(conn: &mut TcpStream, bytes: &[u8], every: Duration) {
    let started = std::time::Instant::now();
    for b in bytes {
        if started.elapsed() > SERVER_LIFETIME || conn.write_all(&[*b]).is_err() {
            return;
        }
        std::thread::sleep(every);
    }
}

/// A program to name frames with, built here: `exe`, its build id, and the file offsets of
/// `leaf` (entry) and of return addresses in `a` and `main`.
struct Program {
    fixture: Fixture,
    build_id: Vec<u8>,
    frames: [u64; 3],
}

impl Program {
    fn build(name: &str, source: &str) -> Program {
        let fixture = Fixture::build(name, source, &["-O1", "-fno-omit-frame-pointer"]);
        let hex = build_id(&fixture.exe);
        let build_id = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let at = |f: &str, plus: u64| file_offset(&fixture.exe, fixture.symbols[f].0 + plus);
        let frames = [at("leaf", 0), at("a", 4), at("main", 8)];
        Program {
            fixture,
            build_id,
            frames,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.fixture.exe).unwrap()
    }
}

/// The file offset of a virtual address, from the program headers (`readelf -lW`).
fn file_offset(exe: &Path, vaddr: u64) -> u64 {
    let out = Command::new("readelf")
        .arg("-lW")
        .arg(exe)
        .output()
        .unwrap();
    let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"LOAD") {
            let (offset, start, size) = (hex(f[1]), hex(f[2]), hex(f[5]));
            if (start..start + size).contains(&vaddr) {
                return vaddr - start + offset;
            }
        }
    }
    panic!("{vaddr:#x} is in no LOAD segment of {}", exe.display());
}

/// Where the crafted recording says the program was: nothing is there, so only debuginfod can
/// name its frames.
const GONE: &str = "/nonexistent-urec-test/app";

/// A recording of three hits of a probe in [`GONE`], whose build id is `program`'s, each with
/// the stack leaf <- a <- main.
fn crafted_recording(path: &Path, program: &Program) {
    use urec_format::*;
    let header = Header {
        host: "elsewhere".into(),
        kernel: "6.1.0".into(),
        arch: "x86_64".into(),
        command: vec!["urec".into(), "record".into()],
        workload: None,
        start_unix_ns: 0,
        start_monotonic_ns: 0,
    };
    let id = Some(BuildId(program.build_id.clone()));
    let file = std::fs::File::create(path).unwrap();
    let mut w = Writer::with_options(file, &header, WriterOptions::default()).unwrap();
    w.write(&Record::Probe(Probe {
        id: 0,
        name: "app:leaf".into(),
        specs: vec!["app:leaf".into()],
        binary: GONE.into(),
        build_id: id.clone(),
        symbol: "leaf".into(),
        vaddr: Svma(program.frames[0]),
        offset: FileOffset(program.frames[0]),
        kind: ProbeKind::EntryReturn,
        stack_mode: StackMode::FramePointer,
        args: Vec::new(),
        site: None,
    }))
    .unwrap();
    w.write(&Record::Process(Process {
        pid: 7,
        ppid: 1,
        comm: "app".into(),
        exe: GONE.into(),
        start_ns: Some(0),
        ..Default::default()
    }))
    .unwrap();
    let start = 0x5555_0000_0000u64;
    w.write(&Record::Mapping(Mapping {
        pid: 7,
        time_ns: 0,
        start: Avma(start),
        end: Avma(start + 0x100_0000),
        offset: FileOffset(0),
        path: GONE.into(),
        dev: 0,
        inode: 0,
        build_id: id,
    }))
    .unwrap();
    w.write(&Record::Stack(Stack {
        id: 0,
        frames: program.frames.iter().map(|&f| Avma(start + f)).collect(),
        truncated: false,
        python: Vec::new(),
        python_truncated: false,
    }))
    .unwrap();
    common::recording::write_three_calls_and_finish(w);
}

/// One `urec report` against a hostile server, measured as `/usr/bin/time -v` would.
struct Measured {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    max_rss_kib: i64,
    /// The most bytes its sealed copies (memfds) held at once, sampled every 20 ms: shared
    /// memory, which its RSS does not show until mapped.
    max_sealed: u64,
    cpu: Duration,
    wall: Duration,
}

/// Bytes in the sealed copies process `pid` holds open now.
fn sealed_bytes(pid: libc::pid_t) -> u64 {
    let fds = format!("/proc/{pid}/fd");
    let Ok(entries) = std::fs::read_dir(&fds) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|l| l.to_string_lossy().starts_with("/memfd:urec-sealed-copy"))
        })
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .map(|m| m.len())
        .sum()
}

/// The `urec` run by the hostile-server tests: `UREC_UNDER_TEST` names another build (to
/// measure an older one against the same attacks).
fn urec_under_test() -> String {
    std::env::var("UREC_UNDER_TEST").unwrap_or_else(|_| UREC.to_string())
}

/// `urec report -i DATA --folded -` with only these debuginfod variables set, reaped with
/// `wait4` for its peak RSS and CPU time, and killed past [`HANG_GUARD`]. The peak starts from
/// this process's own (std spawns with vfork, see tests/crafted.rs), about 16 MiB here unless
/// a failing test's backtrace grew it.
#[allow(
    clippy::zombie_processes,
    reason = "reaped by wait4, which std cannot do"
)]
fn measured_report(what: &str, data: &Path, cache: &Path, vars: &[(&str, &str)]) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut cmd = Command::new(urec_under_test());
    cmd.args(["report", "-i", data.to_str().unwrap(), "--folded", "-"])
        .env("DEBUGINFOD_CACHE_PATH", cache)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for var in [
        "DEBUGINFOD_URLS",
        "DEBUGINFOD_TIMEOUT",
        "DEBUGINFOD_MAXTIME",
        "DEBUGINFOD_MAXSIZE",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let started = std::time::Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills; `pid` is our child, reaped only here.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut max_sealed = 0;
    loop {
        max_sealed = max_sealed.max(sealed_bytes(pid));
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(r >= 0, "wait4: {}", std::io::Error::last_os_error());
        if r == pid {
            break;
        }
        if started.elapsed() > HANG_GUARD {
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            assert_eq!(r, pid);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = started.elapsed();
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let m = Measured {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        max_rss_kib: usage.ru_maxrss,
        max_sealed,
        cpu: tv(usage.ru_utime) + tv(usage.ru_stime),
        wall,
    };
    eprintln!(
        "measured {what}: exit {:?} signal {:?}, peak RSS {} KiB, sealed copies {} MiB, \
         CPU {:.2} s, wall {:.2} s",
        m.code,
        m.signal,
        m.max_rss_kib,
        m.max_sealed >> 20,
        m.cpu.as_secs_f64(),
        m.wall.as_secs_f64()
    );
    eprintln!("{what}: stderr: {}", m.stderr.trim_end());
    assert!(
        m.code.is_some(),
        "{what}: killed after {:?} (signal {:?}): {}",
        m.wall,
        m.signal,
        m.stderr
    );
    m
}

/// What every attack must leave: exit 0, the frames shown (named or as offsets), and nothing
/// under the build id's cache directory but miss markers.
fn survived(what: &str, m: &Measured, cache: &Path, program: &Program) {
    assert_eq!(m.code, Some(0), "{what}: {}", m.stderr);
    assert!(
        m.stdout.contains("leaf") || m.stdout.contains("app+0x"),
        "{what}: {}",
        m.stdout
    );
    let dir = cache.join(hex(&program.build_id));
    for entry in std::fs::read_dir(&dir).into_iter().flatten() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        assert!(
            meta.len() == 0 && meta.permissions().mode() & 0o777 == 0,
            "{what}: {} left in the cache ({} bytes)",
            entry.path().display(),
            meta.len()
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn respond(conn: &mut TcpStream, status: &str, headers: &str, body: &[u8]) {
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\r\n"
    );
    let _ = conn.write_all(body);
}

/// A redirect to `file:///etc/shadow` panicked inside the HTTP client (exit 101). Now only
/// http(s) is followed: a warning, and the executable, reached through three redirects on the
/// same server, still names the frames.
#[test]
fn a_redirect_to_a_file_url_is_refused() {
    let program = Program::build("redir", SOURCE);
    let data = program.fixture.data("d.data");
    crafted_recording(&data, &program);
    let exe = program.bytes();
    let server = Hostile::start(move |path, conn, _| {
        if path.ends_with("/debuginfo") {
            respond(conn, "302 Found", "Location: file:///etc/shadow\r\n", b"");
        } else if path.ends_with("/executable") {
            respond(conn, "302 Found", "Location: /hop/1\r\n", b"");
        } else if let Some(n) = path.strip_prefix("/hop/") {
            let next = match n {
                "1" => "/hop/2",
                "2" => "/hop/3",
                _ => "/files/app",
            };
            respond(conn, "301 Moved", &format!("Location: {next}\r\n"), b"");
        } else if path == "/files/app" {
            let len = format!("Content-Length: {}\r\n", exe.len());
            respond(conn, "200 OK", &len, &exe);
        } else {
            respond(conn, "404 Not Found", "Content-Length: 0\r\n", b"");
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let m = measured_report(
        "redirect to file://",
        &data,
        cache.path(),
        &[
            ("DEBUGINFOD_URLS", &server.url()),
            ("DEBUGINFOD_TIMEOUT", "5"),
        ],
    );
    assert_eq!(m.code, Some(0), "{}", m.stderr);
    assert!(m.stderr.contains("file:///etc/shadow"), "{}", m.stderr);
    assert_eq!(m.stdout.trim(), "app;main;a;leaf 3", "{}", m.stderr);
    let cached = cache.path().join(hex(&program.build_id)).join("executable");
    assert_eq!(std::fs::read(cached).unwrap(), program.bytes());
}

/// A redirect loop ends after a bounded number of hops, with a warning.
#[test]
fn a_redirect_loop_is_cut() {
    let program = Program::build("loop", SOURCE);
    let data = program.fixture.data("d.data");
    crafted_recording(&data, &program);
    let hops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hops.clone();
    let server = Hostile::start(move |_, conn, _| {
        let n = counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        respond(conn, "302 Found", &format!("Location: /loop/{n}\r\n"), b"");
    });
    let cache = tempfile::tempdir().unwrap();
    let m = measured_report(
        "redirect loop",
        &data,
        cache.path(),
        &[
            ("DEBUGINFOD_URLS", &server.url()),
            ("DEBUGINFOD_TIMEOUT", "5"),
        ],
    );
    survived("redirect loop", &m, cache.path(), &program);
    assert!(m.stderr.contains("redirects"), "{}", m.stderr);
    // Two artifacts, each at most 1 + 8 requests.
    assert!(hops.load(std::sync::atomic::Ordering::Relaxed) <= 18);
}

/// A server dripping one byte a second, in its body or in its status line, was waited on for
/// as long as it dripped (`DEBUGINFOD_TIMEOUT` bounded each read, not the progress). Now it
/// must send 100 KiB per `DEBUGINFOD_TIMEOUT` seconds, as in elfutils, or be given up: a few
/// seconds, one warning, no CPU spent waiting.
fn slow_drip(what: &str, in_body: bool) {
    let program = Program::build("drip", SOURCE);
    let data = program.fixture.data("d.data");
    crafted_recording(&data, &program);
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n";
    let server = Hostile::start(move |_, conn, _| {
        if in_body {
            let _ = conn.write_all(head);
            drip(conn, &[0x7f; 1000], Duration::from_secs(1));
        } else {
            drip(conn, head, Duration::from_secs(1));
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let m = measured_report(
        what,
        &data,
        cache.path(),
        &[
            ("DEBUGINFOD_URLS", &server.url()),
            ("DEBUGINFOD_TIMEOUT", "2"),
        ],
    );
    survived(what, &m, cache.path(), &program);
    // 2 s for the first artifact, then the server is not asked again: 5x margin and more.
    assert!(m.wall < Duration::from_secs(20), "{what}: {:?}", m.wall);
    assert!(m.cpu < Duration::from_secs(2), "{what}: {:?}", m.cpu);
    assert!(m.stderr.contains("100 KiB"), "{what}: {}", m.stderr);
    assert_eq!(
        m.stderr.matches("DEBUGINFOD_TIMEOUT").count(),
        1,
        "{}",
        m.stderr
    );
}

#[test]
fn a_drip_in_the_body_is_given_up() {
    slow_drip("drip in the body", true);
}

#[test]
fn a_drip_in_the_head_is_given_up() {
    slow_drip("drip in the head", false);
}

/// A server fast enough for the progress bound but never done: `DEBUGINFOD_MAXTIME` (elfutils'
/// bound on the whole download) ends it.
#[test]
fn maxtime_bounds_the_whole_download() {
    let program = Program::build("slow", SOURCE);
    let data = program.fixture.data("d.data");
    crafted_recording(&data, &program);
    let server = Hostile::start(move |_, conn, _| {
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
        let chunk = [0u8; 64 * 1024];
        let started = std::time::Instant::now();
        // 640 KiB/s: over the 100 KiB per 2 s asked, for as long as the server lives.
        while started.elapsed() < SERVER_LIFETIME && conn.write_all(&chunk).is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let m = measured_report(
        "maxtime",
        &data,
        cache.path(),
        &[
            ("DEBUGINFOD_URLS", &server.url()),
            ("DEBUGINFOD_TIMEOUT", "2"),
            ("DEBUGINFOD_MAXTIME", "3"),
        ],
    );
    survived("maxtime", &m, cache.path(), &program);
    assert!(m.wall < Duration::from_secs(30), "{:?}", m.wall);
    assert!(m.stderr.contains("DEBUGINFOD_MAXTIME"), "{}", m.stderr);
}

/// The program's own bytes (the right build id) followed by zeros up to `total` bytes, with
/// the length announced or not.
fn huge(conn: &mut TcpStream, program: &[u8], total: u64, announce: bool) {
    let len = if announce {
        format!("Content-Length: {total}\r\n")
    } else {
        String::new()
    };
    let _ = write!(conn, "HTTP/1.1 200 OK\r\n{len}Connection: close\r\n\r\n");
    if conn.write_all(program).is_err() {
        return;
    }
    let zeros = vec![0u8; 1 << 20];
    let mut sent = program.len() as u64;
    let started = std::time::Instant::now();
    while sent < total && started.elapsed() < SERVER_LIFETIME {
        let n = zeros.len().min((total - sent) as usize);
        if conn.write_all(&zeros[..n]).is_err() {
            return;
        }
        sent += n as u64;
    }
}

const TWO_GIB: u64 = 2 << 30;

/// A 2 GiB body with the right build id went to the cache whole, then twice (as debuginfo and
/// as executable) into sealed copies in memory. Now a download stops at `DEBUGINFOD_MAXSIZE`
/// (1 GiB unless set), announced or not, nothing of it stays, and no copy is made.
fn huge_body(what: &str, announce: bool, vars: &[(&str, &str)]) -> Measured {
    let program = Program::build("huge", SOURCE);
    let data = program.fixture.data("d.data");
    crafted_recording(&data, &program);
    let bytes = std::sync::Arc::new(program.bytes());
    let server = Hostile::start(move |_, conn, _| huge(conn, &bytes, TWO_GIB, announce));
    let cache = tempfile::tempdir().unwrap();
    let url = server.url();
    let mut vars = vars.to_vec();
    vars.extend([
        ("DEBUGINFOD_URLS", url.as_str()),
        ("DEBUGINFOD_TIMEOUT", "5"),
    ]);
    let m = measured_report(what, &data, cache.path(), &vars);
    survived(what, &m, cache.path(), &program);
    assert!(
        m.stderr.contains("DEBUGINFOD_MAXSIZE"),
        "{what}: {}",
        m.stderr
    );
    // Nothing was accepted, so nothing was copied (before: 4 GiB of copies).
    assert!(m.max_sealed < 64 << 20, "{what}: {} bytes", m.max_sealed);
    assert!(m.max_rss_kib < 200 * 1024, "{what}: {} KiB", m.max_rss_kib);
    m
}

#[test]
fn a_huge_announced_body_is_refused_before_it_comes() {
    let m = huge_body("2 GiB announced", true, &[]);
    // Before: 22 s of CPU (4 GiB received and copied).
    assert!(m.cpu < Duration::from_secs(2), "{:?}", m.cpu);
}

#[test]
fn a_huge_body_stops_at_maxsize() {
    let m = huge_body(
        "2 GiB unannounced, DEBUGINFOD_MAXSIZE=50000000",
        false,
        &[("DEBUGINFOD_MAXSIZE", "50000000")],
    );
    assert!(m.cpu < Duration::from_secs(4), "{:?}", m.cpu);
}

/// The default cap, 1 GiB, reached by a body that does not announce its length: the slowest
/// test here (1 GiB through a debug build), and the attack as it was reported.
#[test]
fn a_huge_body_stops_at_the_default_cap() {
    huge_body("2 GiB unannounced, default cap", false, &[]);
}

/// A file whose build id is not the one asked for stayed in the shared cache, where gdb and
/// perf trust it. Now it is removed as soon as it is downloaded, with a warning.
#[test]
fn a_file_with_another_build_id_does_not_stay_in_the_cache() {
    let program = Program::build("wanted", SOURCE);
    let other = Program::build("other", &SOURCE.replace("x * 2", "x * 5"));
    assert_ne!(program.build_id, other.build_id);
    let data = program.fixture.data("d.data");
    crafted_recording(&data, &program);
    let wrong = other.bytes();
    let server = Hostile::start(move |_, conn, _| {
        let len = format!("Content-Length: {}\r\n", wrong.len());
        respond(conn, "200 OK", &len, &wrong);
    });
    let cache = tempfile::tempdir().unwrap();
    let m = measured_report(
        "another build id",
        &data,
        cache.path(),
        &[
            ("DEBUGINFOD_URLS", &server.url()),
            ("DEBUGINFOD_TIMEOUT", "5"),
        ],
    );
    survived("another build id", &m, cache.path(), &program);
    let dir = cache.path().join(hex(&program.build_id));
    for name in ["debuginfo", "executable"] {
        assert!(!dir.join(name).exists(), "{name} left in the cache");
    }
    assert!(m.stderr.contains("build id"), "{}", m.stderr);
    assert!(m.stdout.contains("app+0x"), "{}", m.stdout);
}
