//! The side-band, `/proc` snapshots and the process table against the real kernel: a small C
//! program, built here, that `dlopen`s a library built here after a pause, then exits.
//!
//! Needs root (system-wide perf events). Without it the tests skip with a message, unless
//! `CI=true`, where they fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use object::{Object, ObjectSegment};
use urec_format::{BuildId, ProcessChange, Record};
use urec_record::processes::ProcessTable;
use urec_record::procfs::{self, BuildIdCache};
use urec_record::sideband::{monotonic_now, FileId, MmapRecord, Sideband, SidebandRecord};

fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root for system-wide perf events, and CI=true");
    }
    eprintln!("skipping {test}: needs root for system-wide perf events");
    false
}

const PROGRAM: &str = r#"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
/* usage: sbtest LIB MS_BEFORE_DLOPEN MS_AFTER */
int main(int argc, char **argv) {
    if (argc != 4) return 10;
    usleep(atoi(argv[2]) * 1000);
    void *lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) { fprintf(stderr, "%s\n", dlerror()); return 11; }
    int (*answer)(int) = (int (*)(int))dlsym(lib, "sb_answer");
    if (!answer) return 12;
    usleep(atoi(argv[3]) * 1000);
    return answer(0) == 42 ? 0 : 13;
}
"#;

const LIBRARY: &str = "int sb_answer(int x) { return x + 42; }\n";

struct Built {
    _dir: tempfile::TempDir,
    program: PathBuf,
    library: PathBuf,
}

fn build() -> Built {
    let dir = tempfile::tempdir().unwrap();
    // Canonical: the kernel names mapped files by their real path.
    let root = dir.path().canonicalize().unwrap();
    std::fs::write(root.join("sbtest.c"), PROGRAM).unwrap();
    std::fs::write(root.join("libsbtest.c"), LIBRARY).unwrap();
    let program = root.join("sbtest");
    let library = root.join("libsbtest.so");
    let gcc = |args: &[&str]| {
        let status = Command::new("gcc").args(args).status().unwrap();
        assert!(status.success(), "gcc {args:?} failed");
    };
    gcc(&[
        "-O1",
        "-shared",
        "-fPIC",
        "-Wl,--build-id",
        "-o",
        library.to_str().unwrap(),
        root.join("libsbtest.c").to_str().unwrap(),
    ]);
    gcc(&[
        "-O1",
        "-Wl,--build-id",
        "-o",
        program.to_str().unwrap(),
        root.join("sbtest.c").to_str().unwrap(),
        "-ldl",
    ]);
    Built {
        _dir: dir,
        program,
        library,
    }
}

/// The file's build id and the (page-aligned file offset, length) the loader maps its
/// executable segment with.
fn elf_facts(path: &Path) -> (BuildId, u64, u64) {
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let build_id = BuildId(file.build_id().unwrap().unwrap().to_vec());
    let text = file
        .segments()
        .find(|s| match s.flags() {
            object::SegmentFlags::Elf { p_flags, .. } => p_flags.contains(object::elf::PF_X),
            _ => false,
        })
        .unwrap();
    let (offset, filesz) = text.file_range();
    let page = 4096;
    let in_page = text.address() % page;
    let len = (in_page + filesz).div_ceil(page) * page;
    (build_id, offset - offset % page, len)
}

/// Reads the side-band, feeding every record in order to `each`, until `each` has returned
/// true (the rest of that batch is still fed) or 5 s pass.
fn read_until(sideband: &mut Sideband, mut each: impl FnMut(&SidebandRecord) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut batch = Vec::new();
    let mut done = false;
    let mut last = 0;
    while !done {
        assert!(
            Instant::now() < deadline,
            "side-band records did not arrive"
        );
        std::thread::sleep(Duration::from_millis(10));
        sideband.read(&mut batch).unwrap();
        for r in batch.drain(..) {
            assert!(r.time_ns() >= last, "records out of time order");
            last = r.time_ns();
            done |= each(&r);
        }
    }
}

#[test]
fn sees_exec_mmaps_dlopen_and_exit() {
    if !root_or_skip("sees_exec_mmaps_dlopen_and_exit") {
        return;
    }
    let built = build();
    let mut sideband = Sideband::open(64).unwrap();
    let before = monotonic_now().unwrap();
    let mut child = Command::new(&built.program)
        .args([built.library.to_str().unwrap(), "100", "0"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let status = child.wait().unwrap();
    let after = monotonic_now().unwrap();
    assert!(status.success(), "test program failed: {status}");

    let mut mine = Vec::new();
    read_until(&mut sideband, |r| {
        if r.pid() != Some(pid) {
            return false;
        }
        mine.push(r.clone());
        matches!(r, SidebandRecord::Exit(t) if t.is_process())
    });
    assert_eq!(sideband.lost(), 0);
    // CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns(): every record falls between the two
    // readings taken around the child's life.
    for r in &mine {
        assert!(
            (before..=after).contains(&r.time_ns()),
            "{before} <= {} <= {after}: {r:?}",
            r.time_ns()
        );
    }

    let program_path = built.program.to_str().unwrap();
    let library_path = built.library.to_str().unwrap();
    let find = |pred: &dyn Fn(&SidebandRecord) -> bool| -> usize {
        let hits: Vec<usize> = (0..mine.len()).filter(|&i| pred(&mine[i])).collect();
        assert_eq!(
            hits.len(),
            1,
            "expected exactly one such record in {mine:#?}"
        );
        hits[0]
    };

    let fork = find(&|r| matches!(r, SidebandRecord::Fork(t) if t.is_process()));
    let SidebandRecord::Fork(f) = &mine[fork] else {
        unreachable!()
    };
    assert_eq!(f.ppid, std::process::id(), "forked by this test");

    let exec = find(&|r| matches!(r, SidebandRecord::Comm { exec: true, .. }));
    let SidebandRecord::Comm { comm, tid, .. } = &mine[exec] else {
        unreachable!()
    };
    assert_eq!((comm.as_str(), *tid), ("sbtest", pid));

    let mmap_of = |path: &str| {
        let i = find(&|r| matches!(r, SidebandRecord::Mmap(m) if m.path == path));
        let SidebandRecord::Mmap(m) = &mine[i] else {
            unreachable!()
        };
        (i, m.clone())
    };
    let (exe_at, exe) = mmap_of(program_path);
    let (build_id, pgoff, len) = elf_facts(&built.program);
    assert_eq!(exe.file, FileId::BuildId(build_id));
    assert_eq!((exe.pgoff.0, exe.len), (pgoff, len));
    assert_eq!(exe.start.0 % 4096, 0);

    let (lib_at, lib) = mmap_of(library_path);
    let (build_id, pgoff, len) = elf_facts(&built.library);
    assert_eq!(
        (lib.pid, lib.file.clone(), lib.pgoff.0, lib.len),
        (pid, FileId::BuildId(build_id), pgoff, len)
    );
    assert_eq!(lib.prot, Some((libc::PROT_READ | libc::PROT_EXEC) as u32));
    assert!(
        lib.time_ns - exe.time_ns >= 100_000_000,
        "the dlopen came after the 100 ms sleep: {} ns",
        lib.time_ns - exe.time_ns
    );

    let exit = find(&|r| matches!(r, SidebandRecord::Exit(t) if t.is_process()));
    assert!(
        fork < exec && exec < exe_at && exe_at < lib_at && lib_at < exit,
        "order fork {fork} < exec {exec} < exe {exe_at} < lib {lib_at} < exit {exit}"
    );
}

#[test]
fn process_table_emits_ancestors_history_then_live_changes() {
    if !root_or_skip("process_table_emits_ancestors_history_then_live_changes") {
        return;
    }
    let built = build();
    let mut sideband = Sideband::open(64).unwrap();
    let mut table = ProcessTable::new();
    // 400 ms before the dlopen: time to emit the process while it sleeps.
    let mut child = Command::new(&built.program)
        .args([built.library.to_str().unwrap(), "400", "0"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut emitted: Vec<Record> = Vec::new();
    let program_path = built.program.to_string_lossy().into_owned();
    let library_path = built.library.to_string_lossy().into_owned();

    // Until the executable's mapping and libc's (mapped by the dynamic loader after the exec)
    // have gone by: nothing of ours is emitted. Waiting for libc too keeps the snapshot below
    // from racing the loader on a loaded machine (then libc would come as a live change).
    let mut seen_program = false;
    read_until(&mut sideband, |r| {
        table
            .apply(r, &mut |rec| {
                emitted.push(rec);
                Ok(())
            })
            .unwrap();
        if let SidebandRecord::Mmap(MmapRecord { pid: p, path, .. }) = r {
            seen_program |= *p == pid && *path == program_path;
            return seen_program && *p == pid && path.contains("/libc.so");
        }
        false
    });
    assert!(
        !emitted
            .iter()
            .any(|r| matches!(r, Record::Process(p) if p.pid == pid)),
        "a process is emitted only when asked"
    );
    emitted.clear();

    // Its first "event": the ancestors (outermost first), then it.
    table
        .ensure_emitted(pid, u64::MAX / 2, &mut |rec| {
            emitted.push(rec);
            Ok(())
        })
        .unwrap();
    let mut expected_chain = vec![pid, std::process::id()];
    loop {
        let last = *expected_chain.last().unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{last}/stat")).unwrap();
        let ppid = procfs::parse_stat(&stat).unwrap().ppid;
        if ppid == 0 {
            break;
        }
        expected_chain.push(ppid);
    }
    expected_chain.reverse();
    let chain: Vec<u32> = emitted
        .iter()
        .filter_map(|r| match r {
            Record::Process(p) => Some(p.pid),
            _ => None,
        })
        .collect();
    assert_eq!(chain, expected_chain);
    // Every record follows its own process's Process record.
    let mut seen = std::collections::HashSet::new();
    for r in &emitted {
        match r {
            Record::Process(p) => assert!(seen.insert(p.pid)),
            Record::Mapping(m) => assert!(seen.contains(&m.pid)),
            Record::ProcessEvent(e) => assert!(seen.contains(&e.pid)),
            other => panic!("unexpected {other:?}"),
        }
    }
    let ours: Vec<&Record> = emitted
        .iter()
        .skip_while(|r| !matches!(r, Record::Process(p) if p.pid == pid))
        .collect();
    let Record::Process(process) = ours[0] else {
        unreachable!()
    };
    assert_eq!(process.ppid, std::process::id());
    // After the fork: the exec, with the program as exe, then the program's mapping.
    let exec = ours
        .iter()
        .position(|r| matches!(r, Record::ProcessEvent(e) if matches!(&e.change, ProcessChange::Exec { comm, exe } if comm == "sbtest" && *exe == program_path)))
        .expect("exec event");
    // Before it: the mappings inherited from this test process at the fork, stamped with the
    // fork time.
    let test_exe = std::fs::read_link("/proc/self/exe").unwrap();
    let inherited: Vec<&urec_format::Mapping> = ours[1..exec]
        .iter()
        .map(|r| match r {
            Record::Mapping(m) => m,
            other => panic!("only mappings before the exec: {other:?}"),
        })
        .collect();
    assert!(inherited
        .iter()
        .all(|m| Some(m.time_ns) == process.start_ns && m.pid == pid));
    assert!(inherited
        .iter()
        .any(|m| m.path == test_exe.to_string_lossy()));
    let Record::Mapping(first_after) = ours[exec + 1] else {
        panic!("a mapping follows the exec: {:?}", ours[exec + 1])
    };
    assert_eq!(first_after.path, program_path);
    assert_eq!(
        first_after.build_id,
        Some(elf_facts(&built.program).0),
        "build id of the executable"
    );
    emitted.clear();

    // Later changes come as they arrive: the dlopen'd library, then the exit.
    let status = child.wait().unwrap();
    assert!(status.success());
    read_until(&mut sideband, |r| {
        table
            .apply(r, &mut |rec| {
                emitted.push(rec);
                Ok(())
            })
            .unwrap();
        matches!(r, SidebandRecord::Exit(t) if t.pid == pid && t.is_process())
    });
    let later: Vec<String> = emitted
        .iter()
        .filter_map(|r| match r {
            Record::Mapping(m) if m.pid == pid => Some(format!("map {}", m.path)),
            Record::ProcessEvent(e) if e.pid == pid => Some(format!("{:?}", e.change)),
            _ => None,
        })
        .collect();
    assert_eq!(later, [format!("map {library_path}"), "Exit".to_string()]);
    assert!(table.exit_time(pid).is_some());
}

#[test]
fn snapshot_of_self_matches_proc_maps() {
    let mut cache = BuildIdCache::new();
    let snap = procfs::snapshot(std::process::id(), &mut cache).unwrap();
    let maps = procfs::parse_maps(&std::fs::read_to_string("/proc/self/maps").unwrap());
    let strip = |m: &procfs::MapEntry| (m.start, m.end, m.offset, m.dev, m.inode, m.path.clone());
    assert_eq!(
        snap.mappings.iter().map(strip).collect::<Vec<_>>(),
        maps.iter().map(strip).collect::<Vec<_>>()
    );
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    assert_eq!(snap.exe, exe.to_string_lossy());
    assert_eq!(snap.ppid, std::os::unix::process::parent_id());
    // Every file mapping with a build id in the file has it, read right.
    let mut checked = 0;
    for m in snap.mappings.iter().filter(|m| m.inode != 0) {
        let data = std::fs::read(&m.path).unwrap();
        let expected = object::File::parse(&*data)
            .ok()
            .and_then(|f| f.build_id().ok().flatten())
            .map(|id| BuildId(id.to_vec()));
        assert_eq!(m.build_id, expected, "{}", m.path);
        checked += 1;
    }
    assert!(checked >= 2, "the test binary and libc at least");
    // Started before now, on CLOCK_MONOTONIC.
    let now = urec_record::sideband::monotonic_now().unwrap();
    assert!(snap.start_ns.unwrap() <= now);
    assert!(
        procfs::snapshot(u32::MAX - 1, &mut cache).is_none(),
        "gone is None"
    );
}

#[test]
fn losses_are_counted() {
    if !root_or_skip("losses_are_counted") {
        return;
    }
    // One page per CPU and nobody reading while 200 processes start and exit.
    let mut sideband = Sideband::open(1).unwrap();
    for _ in 0..200 {
        Command::new("/bin/true").status().unwrap();
    }
    let mut records = Vec::new();
    sideband.flush(&mut records).unwrap();
    // The kernel writes the LOST record with the next record that fits, after we made room.
    Command::new("/bin/true").status().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    sideband.flush(&mut records).unwrap();
    let lost: u64 = records
        .iter()
        .map(|r| match r {
            SidebandRecord::Lost { count, .. } => *count,
            _ => 0,
        })
        .sum();
    assert!(lost > 0, "a 4 KiB ring cannot hold 200 execs");
    assert_eq!(sideband.lost(), lost);
}

/// Numbers for docs/performance.md:
/// `cargo test --release -p urec-record --test sideband -- --ignored --nocapture`.
#[test]
#[ignore]
fn measure() {
    if !root_or_skip("measure") {
        return;
    }
    let t = Instant::now();
    let mut table = ProcessTable::new();
    table.snapshot_all();
    eprintln!(
        "snapshot_all: {} processes in {:?} (cold build-id cache)",
        table.len(),
        t.elapsed()
    );

    let mut sideband = Sideband::open(64).unwrap();
    let mut records = Vec::new();
    let (mut reads, mut read_time, mut n) = (0u32, Duration::ZERO, 0usize);
    let start = Instant::now();
    let mut children = 0;
    while children < 500 || start.elapsed() < Duration::from_millis(100) {
        if children < 500 {
            Command::new("/bin/true").status().unwrap();
            children += 1;
        }
        let t = Instant::now();
        sideband.read(&mut records).unwrap();
        read_time += t.elapsed();
        reads += 1;
        for r in records.drain(..) {
            table.apply(&r, &mut |_| Ok(())).unwrap();
            n += 1;
        }
    }
    sideband.flush(&mut records).unwrap();
    n += records.len();
    eprintln!(
        "500 × /bin/true in {:?}: {n} side-band records, {} lost, {reads} reads taking {:?} \
         ({:?} per read), table holds {} processes",
        start.elapsed(),
        sideband.lost(),
        read_time,
        read_time / reads,
        table.len()
    );
}
