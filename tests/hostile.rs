//! Traced processes that attack the recorder through the files it reads as root (SPEC.md,
//! "Security model"): `urec record -a` follows every process, and whoever owns a mapped file
//! decides what its path names and how long the file is. The recorder must stop at `-d`
//! whatever they do, and must not die while reading their files. Each attack is a C program of
//! `tests/fixtures/hostile/` (its header says what it does); the first two reproduced against the
//! recorder before `urec-untrusted` (a hang until killed, and exit 135, `SIGBUS`), the third
//! against the recorder that opened a path before `fstat` (the FIFO's writer woke, the device
//! was opened).
#![cfg(feature = "record")]

mod common;

use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use common::recording::Recording;
use common::{build_c, gcc, have_root, start_attached, start_until_attached, urec_ok, UREC};
use urec_format::EventKind;

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hostile");

fn source(name: &str) -> String {
    std::fs::read_to_string(Path::new(SRC).join(name)).expect("fixture source")
}

/// Waits for `urec` at most `limit`; past that, kills it and fails: the recorder did not stop
/// by itself, which is the bug these tests are about.
fn wait_bounded(urec: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = urec.try_wait().expect("waiting for urec") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = urec.kill();
            let _ = urec.wait();
            panic!("urec record did not stop within {limit:?} of its -d; killed it");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_clean_exit(status: ExitStatus) {
    assert_eq!(
        status.signal(),
        None,
        "urec record died of a signal: {status}"
    );
    assert!(status.success(), "urec record failed: {status}");
}

/// A process maps a non-ELF file executable (the kernel reports no build id, so the recorder
/// reads the file), then renames a FIFO over its path and never opens it for writing. A
/// blocking open of that path, which std retries on `EINTR`, held the recorder forever: `-d` and
/// Ctrl-C no longer stopped it.
#[test]
fn a_fifo_renamed_over_a_mapped_file_does_not_hang_the_recorder() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = build_c(
        dir.path(),
        "fifo",
        &source("fifo.c"),
        &["-O0", "-fno-omit-frame-pointer"],
    );
    let blobs = dir.path().join("blobs");
    std::fs::create_dir(&blobs).unwrap();
    let out = dir.path().join("fifo.data");
    let spec = format!("{}:probed", exe.display());
    let mut u = start_attached(&["-a", "-e", &spec, "-d", "2", "-o", out.to_str().unwrap()]);
    let mut attacker = Command::new(&exe).arg(&blobs).arg("2.5").spawn().unwrap();
    let pid = attacker.id();
    let status = wait_bounded(&mut u, Duration::from_secs(30));
    assert_eq!(attacker.wait().unwrap().code(), Some(0), "the attack ran");
    assert_clean_exit(status);

    // The attack was in place: every blob path is a FIFO now, and the recorder saw the
    // mappings (so it looked their build ids up), including those unmapped before the rename,
    // which `map_files` cannot reach.
    let blob = |i: usize| blobs.join(format!("blob{i}"));
    for i in 0..2 {
        let ty = std::fs::symlink_metadata(blob(i)).unwrap().file_type();
        assert!(ty.is_fifo(), "{} is not a FIFO", blob(i).display());
    }
    urec_ok(&["info", "-i", out.to_str().unwrap()]);
    let rec = Recording::read(&out);
    assert!(rec.finished, "the recording has its footer");
    assert!(
        rec.count(pid, EventKind::Entry) > 0,
        "the attacker was recorded"
    );
    let unmapped = blob(1).to_string_lossy().into_owned();
    let seen = rec
        .mappings
        .iter()
        .find(|m| m.pid == pid && m.path == unmapped);
    let seen = seen.expect("the recording has the mapping the FIFO replaced");
    assert_eq!(seen.build_id, None);
}

/// A process dlopens a copy of a library and keeps truncating the copy and writing it back while
/// the recorder (`-g dwarf`: it reads the CFI of every file a traced process maps) reads it. A
/// recorder that maps the file dies of `SIGBUS` when a truncation lands inside its read, and
/// leaves a data file without a footer.
#[test]
fn a_library_truncated_while_read_does_not_kill_the_recorder() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lib: PathBuf = dir.path().join("libvictim.so");
    let victim = dir.path().join("victim.c");
    std::fs::write(&victim, source("victim.c")).unwrap();
    // No build id: the recorder caches files by build id, and every copy must be read afresh.
    gcc(
        &lib,
        &[victim],
        &[
            "-O0",
            "-fno-omit-frame-pointer",
            "-shared",
            "-fPIC",
            "-Wl,--build-id=none",
        ],
    );
    let exe = build_c(dir.path(), "trunc", &source("trunc.c"), &["-O1"]);
    let baits = dir.path().join("baits");
    std::fs::create_dir(&baits).unwrap();
    let out = dir.path().join("trunc.data");
    let spec = format!("{}:victim", lib.display());
    let args = ["-g", "dwarf", "-a", "-e", &spec, "-d", "5"];
    let mut u = start_attached(&[&args[..], &["-o", out.to_str().unwrap()]].concat());
    let attacker = Command::new(&exe)
        .arg(&lib)
        .arg(&baits)
        .arg("4")
        .output()
        .unwrap();
    let status = wait_bounded(&mut u, Duration::from_secs(60));
    assert!(
        attacker.status.success(),
        "the attack ran: {}",
        String::from_utf8_lossy(&attacker.stderr)
    );
    eprintln!(
        "attacker: {}",
        String::from_utf8_lossy(&attacker.stdout).trim()
    );
    assert_clean_exit(status);

    urec_ok(&["info", "-i", out.to_str().unwrap()]);
    let rec = Recording::read(&out);
    assert!(rec.finished, "the recording has its footer");
    let entries = rec.events.iter().filter(|e| e.kind == EventKind::Entry);
    assert!(entries.count() > 0, "the attackers were recorded");
    let baits_seen = rec
        .mappings
        .iter()
        .filter(|m| m.path.starts_with(baits.to_str().unwrap()))
        .count();
    assert!(
        baits_seen > 0,
        "the recorder saw the truncated copies mapped"
    );
}

/// A process maps a file, unmaps it, and replaces the file's directory with a symbolic link to
/// a directory holding a FIFO (a writer waiting in its open) or a character device under the
/// same name: the recorded path now leads there through a directory, which `O_NOFOLLOW` does not
/// guard. The recorder, root, must not open either, not even without blocking before `fstat`
/// refuses it: opening a device runs its driver, and opening the FIFO wakes its writer (the
/// fixture counts those). The recording still completes.
#[test]
fn a_directory_swapped_for_a_link_to_a_device_or_fifo_is_never_opened() {
    if !have_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = build_c(
        dir.path(),
        "symdir",
        &source("symdir.c"),
        &["-O0", "-fno-omit-frame-pointer"],
    );
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = dir.path().join("symdir.data");
    let spec = format!("{}:probed", exe.display());
    // strace, where there is one, sees every open the recorder makes; without it the FIFO's
    // writer is the witness.
    let strace = Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    let log = dir.path().join("strace.log");
    let mut command = if strace {
        let mut c = Command::new("strace");
        c.args(["-f", "-qq", "-e", "trace=open,openat,openat2", "-o"])
            .arg(&log)
            .args([UREC, "record"]);
        c
    } else {
        eprintln!("no strace: checking through the FIFO's writer only");
        common::record(&[])
    };
    command
        .args(["-a", "-e", &spec, "-d", "3", "-v", "-o"])
        .arg(&out);
    let mut u = start_until_attached(command);
    let attacker = Command::new(&exe).arg(&work).arg("2").output().unwrap();
    let status = wait_bounded(&mut u, Duration::from_secs(60));
    let said = String::from_utf8_lossy(&attacker.stdout);
    assert!(
        attacker.status.success(),
        "the attack ran: {}",
        String::from_utf8_lossy(&attacker.stderr)
    );
    assert_clean_exit(status);
    assert_eq!(
        said.trim(),
        "opened 0",
        "the recorder opened the FIFO (its waiting writer woke up)"
    );

    urec_ok(&["info", "-i", out.to_str().unwrap()]);
    let rec = Recording::read(&out);
    assert!(rec.finished, "the recording has its footer");
    let first = work.join("d0/blob").to_string_lossy().into_owned();
    assert!(
        rec.mappings.iter().any(|m| m.path == first),
        "the recording has the mapping whose directory was swapped"
    );
    if strace {
        let log = std::fs::read_to_string(&log).unwrap();
        let work = work.to_string_lossy().into_owned();
        let at_trap = |line: &&str| line.contains(&work) && line.contains("/blob\"");
        let opened: Vec<&str> = log
            .lines()
            .filter(at_trap)
            .filter(|l| !l.contains("O_PATH"))
            .collect();
        assert!(
            opened.is_empty(),
            "opens of the traps without O_PATH:\n{}",
            opened.join("\n")
        );
        let looked = log.lines().filter(at_trap).count();
        assert!(looked > 0, "the recorder looked the swapped paths up");
        eprintln!("{looked} lookups of the swapped paths, all O_PATH");
    }
}
