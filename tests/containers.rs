#![cfg(feature = "record")]
//! Containers (SPEC "urec record", Containers): processes whose files do not exist on the host
//! (a real mount namespace and root made by `unshare --mount --root=ROOTFS`, as a container
//! runtime would), probed by their in-container paths with `-p`, counted exactly; one file seen
//! through several paths probed once; frames named after the root is deleted.
//!
//! They need root. Without it they skip with a message, unless `CI=true`, where they fail.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::fixture::Fixture;
use common::recording::Recording;
use common::{have_root, poll, start_attached, urec_ok};
use urec_format::EventKind;

/// Waits for a line on stdin, then calls leaf 300 times through `a` and 200 times through `b`,
/// each call of leaf calling libc's `atoi` once; exits with status 3.
const PROG_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
__attribute__((noinline)) int leaf(int x) { return x * 2 + atoi("1"); }
__attribute__((noinline)) int a(int i) { return leaf(i) + 1; }
__attribute__((noinline)) int b(int i) { return leaf(-i) + 2; }
int main(int argc, char **argv) {
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 9;
    long sum = 0;
    for (int i = 0; i < 300; i++) sum += a(i);
    for (int i = 0; i < 200; i++) sum += b(i);
    printf("%ld\n", sum);
    return 3;
}
"#;

fn build(flags: &[&str]) -> Fixture {
    let mut all = vec!["-O0", "-g", "-fno-omit-frame-pointer"];
    all.extend_from_slice(flags);
    Fixture::build("prog", PROG_C, &all)
}

/// A root file system holding the dynamically linked program as `/app/prog`, the host's
/// loader, and the host's libc copied to `/opt/clib` — a directory only the root's own
/// `/etc/ld.so.cache` (built by `ldconfig -r`) names: `libc` can only be found through it.
fn dynamic_rootfs(t: &Fixture, name: &str) -> PathBuf {
    let root = t.data(name);
    for dir in ["app", "opt/clib", "lib64", "etc", "usr/bin"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy(&t.exe, root.join("app/prog")).unwrap();
    // An absolute link, which means /app/prog inside the root (on the host: nothing).
    std::os::unix::fs::symlink("/app/prog", root.join("usr/bin/runme")).unwrap();
    let ld = std::fs::canonicalize("/lib64/ld-linux-x86-64.so.2").unwrap();
    std::fs::copy(ld, root.join("lib64/ld-linux-x86-64.so.2")).unwrap();
    let libc = std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
    std::fs::copy(libc, root.join("opt/clib/libc.so.6")).unwrap();
    std::fs::write(root.join("etc/ld.so.conf"), "/opt/clib\n").unwrap();
    let out = Command::new("/sbin/ldconfig")
        .arg("-r")
        .arg(&root)
        .output()
        .expect("running ldconfig");
    assert!(
        out.status.success(),
        "ldconfig -r: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(root.join("etc/ld.so.cache").is_file());
    root
}

/// Starts `unshare --mount --root=ROOT PATH` (unshare execs it: the child's pid is the
/// program's), waiting on its stdin.
fn start_in(root: &Path, path: &str) -> Child {
    Command::new("unshare")
        .arg("--mount")
        .arg(format!("--root={}", root.display()))
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("running unshare")
}

/// Waits until `pid` runs `exe_name` (unshare has exec'd it).
fn wait_exec(pid: u32, exe_name: &str) {
    poll(Duration::from_secs(10), "the program did not start", || {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        exe.file_name().is_some_and(|n| n == exe_name).then_some(())
    });
}

/// Lets the programs run, waits for each (status 3), then for urec to stop by itself.
fn run_to_end(programs: &mut [&mut Child], urec: &mut Child) {
    for c in programs.iter_mut() {
        c.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    for c in programs.iter_mut() {
        assert_eq!(c.wait().unwrap().code(), Some(3));
    }
    let status = poll(
        Duration::from_secs(30),
        "urec did not stop after the -p processes exited",
        || urec.try_wait().unwrap(),
    );
    assert!(status.success());
}

fn folded(data: &Path, extra: &[&str]) -> String {
    let mut args = vec!["report", "-i", data.to_str().unwrap(), "--folded", "-"];
    args.extend_from_slice(extra);
    urec_ok(&args)
}

#[test]
fn pid_in_a_mount_namespace_is_probed_by_its_own_paths() {
    if !have_root() {
        return;
    }
    let t = build(&[]);
    let root = dynamic_rootfs(&t, "rootfs");
    assert!(
        !Path::new("/app/prog").exists(),
        "the host must not have /app/prog"
    );
    let mut prog = start_in(&root, "/app/prog");
    let pid = prog.id();
    wait_exec(pid, "prog");
    let ns = |pid: &str, name: &str| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{pid}/ns/{name}"))
            .unwrap()
            .ino()
    };
    let (mnt_ns, pid_ns) = (ns(&pid.to_string(), "mnt"), ns(&pid.to_string(), "pid"));
    assert_ne!(mnt_ns, ns("self", "mnt"));
    let data = t.data("c.data");
    // What is not in the container is refused (exit 2) before anything is attached, naming it.
    for spec in ["/no/such/prog:leaf", "libnosuch:f"] {
        let out = common::urec(&[
            "record",
            "-e",
            spec,
            "-p",
            &pid.to_string(),
            "-o",
            data.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {stderr}");
        assert!(stderr.contains(&format!("/proc/{pid}/root")), "{stderr}");
        assert!(!data.exists());
    }
    let mut u = start_attached(&[
        "-e",
        "/app/prog:leaf",
        "-e",
        "/usr/bin/runme:leaf",
        "-e",
        "libc:atoi",
        "-p",
        &pid.to_string(),
        "-o",
        data.to_str().unwrap(),
    ]);
    run_to_end(&mut [&mut prog], &mut u);
    let rec = Recording::read(&data);
    assert!(rec.finished);
    assert_eq!(rec.total_lost(), 0);
    // The in-container paths are what the recording shows; libc is the root's own copy, found
    // through the root's ld.so.cache.
    let binaries: Vec<&str> = rec.probes.iter().map(|p| p.binary.as_str()).collect();
    assert_eq!(binaries, ["/app/prog", "/opt/clib/libc.so.6"]);
    // The link resolved inside the root: the same file, the same probe.
    assert_eq!(
        rec.probes[0].specs,
        ["/app/prog:leaf", "/usr/bin/runme:leaf"]
    );
    assert_eq!(rec.only_pid(), pid);
    // Where the process lived, recorded with it.
    let p = rec.processes.iter().find(|p| p.pid == pid).unwrap();
    assert_eq!((p.mnt_ns, p.pid_ns), (Some(mnt_ns), Some(pid_ns)));
    let count = |probe: u32, kind: EventKind| {
        rec.events
            .iter()
            .filter(|e| e.probe == probe && e.kind == kind)
            .count()
    };
    assert_eq!(count(0, EventKind::Entry), 500);
    assert_eq!(count(0, EventKind::Return), 500);
    assert_eq!(count(1, EventKind::Entry), 500);
    assert_eq!(count(1, EventKind::Return), 500);

    // The frames are named while the root exists and after it is deleted (from the symbols
    // section the record step wrote from the files the process mapped). The probed frame is
    // named by its probe, as the table names it: atoi, not the internal alias `__GI_atoi` by
    // which glibc's own symbol table names that address.
    let own = |folded: &str| -> Vec<String> {
        let mut v: Vec<String> = folded
            .lines()
            .map(|l| {
                let (stack, n) = l.rsplit_once(' ').unwrap();
                let frames: Vec<&str> = stack.split(';').skip_while(|f| *f != "main").collect();
                format!("{} {n}", frames.join(";"))
            })
            .collect();
        v.sort();
        v
    };
    let expected = [
        "main;a;leaf 300",
        "main;a;leaf;atoi 300",
        "main;b;leaf 200",
        "main;b;leaf;atoi 200",
    ];
    let json: serde_json::Value = serde_json::from_str(&urec_ok(&[
        "report",
        "-i",
        data.to_str().unwrap(),
        "--json",
        "-",
    ]))
    .unwrap();
    let procs = &json["recording"]["processes"];
    assert_eq!(procs.as_array().map(Vec::len), Some(1), "{procs}");
    assert_eq!(procs[0]["pid"], pid);
    assert_eq!(procs[0]["comm"], "prog");
    assert_eq!(procs[0]["mnt_ns"], mnt_ns);
    assert_eq!(procs[0]["pid_ns"], pid_ns);
    assert!(procs[0]["cgroup"].is_string(), "{procs}");
    let before = folded(&data, &[]);
    assert_eq!(own(&before), expected, "{before}");
    std::fs::remove_dir_all(&root).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let after = folded(&data, &["--symfs", empty.path().to_str().unwrap()]);
    assert_eq!(own(&after), expected, "{after}");
}

/// A root holding only `file` (a statically linked program, hard-linked: the same inode) as
/// `at`.
fn static_rootfs(t: &Fixture, name: &str, file: &Path, at: &str) -> PathBuf {
    let root = t.data(name);
    let dest = root.join(at.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::hard_link(file, &dest).unwrap();
    root
}

#[test]
fn one_file_through_two_paths_is_probed_once() {
    if !have_root() {
        return;
    }
    let t = build(&["-static"]);
    // Two "containers" of one image: the same file (one inode) under two paths.
    let root_a = static_rootfs(&t, "a", &t.exe, "/app/prog");
    let root_b = static_rootfs(&t, "b", &t.exe, "/srv/other/prog");
    let mut a = start_in(&root_a, "/app/prog");
    let mut b = start_in(&root_b, "/srv/other/prog");
    wait_exec(a.id(), "prog");
    wait_exec(b.id(), "prog");
    let data = t.data("two.data");
    let pids = format!("{},{}", a.id(), b.id());
    let mut u = start_attached(&[
        "-e",
        "/app/prog:leaf",
        "-e",
        "/srv/other/prog:leaf",
        "-p",
        &pids,
        "-o",
        data.to_str().unwrap(),
    ]);
    run_to_end(&mut [&mut a, &mut b], &mut u);
    let rec = Recording::read(&data);
    assert!(rec.finished);
    assert_eq!(rec.total_lost(), 0);
    // One probe, named by both specs: one attachment, so each call is one event.
    assert_eq!(rec.probes.len(), 1, "{:?}", rec.probes);
    assert_eq!(
        rec.probes[0].specs,
        ["/app/prog:leaf", "/srv/other/prog:leaf"]
    );
    for pid in [a.id(), b.id()] {
        assert_eq!(rec.count(pid, EventKind::Entry), 500, "pid {pid}");
        assert_eq!(rec.count(pid, EventKind::Return), 500, "pid {pid}");
    }
    // On the host too: the file and a hard link to it, one probe, each call once.
    let link = t.data("link-to-prog");
    std::fs::hard_link(&t.exe, &link).unwrap();
    let data = t.data("link.data");
    let mut child = common::record(&[
        "-q",
        "-e",
        &format!("{}:leaf", t.path()),
        "-e",
        &format!("{}:leaf", link.display()),
        "-o",
        data.to_str().unwrap(),
        "--",
        link.to_str().unwrap(),
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(3));
    let rec = Recording::read(&data);
    assert_eq!(rec.probes.len(), 1, "{:?}", rec.probes);
    let pid = rec.only_pid();
    assert_eq!(rec.count(pid, EventKind::Entry), 500);
    assert_eq!(rec.count(pid, EventKind::Return), 500);
}

/// A fresh cgroup v2 directory, removed (once empty) when dropped.
struct Cgroup(PathBuf);

impl Cgroup {
    fn new(name: &str) -> Cgroup {
        let mount = urec_record::cgroup::cgroup2_mount().expect("cgroup2 is not mounted");
        let dir = mount.join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Cgroup(dir)
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn cgroup_keeps_only_the_processes_inside() {
    if !have_root() {
        return;
    }
    let t = build(&[]);
    let cg = Cgroup::new("urec-test");
    let spawn = || {
        Command::new(&t.exe)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut inside = spawn();
    let mut twin = spawn();
    cg.add(inside.id());
    let data = t.data("cg.data");
    let spec = format!("{}:leaf", t.path());
    let mut u = start_attached(&[
        "-e",
        &spec,
        "-a",
        "--cgroup",
        cg.0.to_str().unwrap(),
        "-o",
        data.to_str().unwrap(),
    ]);
    for c in [&mut inside, &mut twin] {
        c.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    for c in [&mut inside, &mut twin] {
        assert_eq!(c.wait().unwrap().code(), Some(3));
    }
    assert!(common::interrupt(&mut u).success());
    let rec = Recording::read(&data);
    assert!(rec.finished);
    assert_eq!(rec.total_lost(), 0);
    assert_eq!(rec.only_pid(), inside.id());
    assert_eq!(rec.count(inside.id(), EventKind::Entry), 500);
    assert_eq!(rec.count(inside.id(), EventKind::Return), 500);
    let mount = urec_record::cgroup::cgroup2_mount().unwrap();
    let relative = Path::new("/").join(cg.0.strip_prefix(&mount).unwrap());
    let p = rec.processes.iter().find(|p| p.pid == inside.id()).unwrap();
    assert_eq!(p.cgroup.as_deref(), relative.to_str());
    let json: serde_json::Value = serde_json::from_str(&urec_ok(&[
        "report",
        "-i",
        data.to_str().unwrap(),
        "--json",
        "-",
    ]))
    .unwrap();
    let procs = &json["recording"]["processes"];
    assert_eq!(procs.as_array().map(Vec::len), Some(1), "{procs}");
    assert_eq!(procs[0]["pid"], inside.id());
    assert_eq!(procs[0]["cgroup"].as_str(), relative.to_str());
}

#[test]
fn cgroup_refuses_what_is_not_a_cgroup_v2_directory() {
    // v1 hierarchies, when the host has any, then any other directory, and a relative path.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let v1 = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup").then(|| f[1].to_string())
    });
    let t = build(&[]);
    let spec = format!("{}:leaf", t.path());
    let data = t.data("refused.data");
    for dir in v1
        .iter()
        .map(String::as_str)
        .chain(["/tmp", "sys/fs/cgroup"])
    {
        let out = common::urec(&[
            "record",
            "-e",
            &spec,
            "--cgroup",
            dir,
            "-o",
            data.to_str().unwrap(),
            "--",
            t.path(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{dir}: {stderr}");
        assert!(stderr.contains(&format!("--cgroup {dir}")), "{stderr}");
        if let Some(at) = urec_record::cgroup::cgroup2_mount() {
            assert!(
                stderr.contains(&format!("cgroup2 is mounted at {}", at.display())),
                "{stderr}"
            );
        }
        assert!(!data.exists());
    }
}

/// An overlayfs mount of `lower` with its own upper and work directories, unmounted (lazily)
/// when dropped.
struct Overlay(PathBuf);

impl Overlay {
    fn mount(t: &Fixture, lower: &Path, name: &str) -> Overlay {
        let (upper, work, merged) = (
            t.data(&format!("{name}-upper")),
            t.data(&format!("{name}-work")),
            t.data(&format!("{name}-merged")),
        );
        for d in [&upper, &work, &merged] {
            std::fs::create_dir_all(d).unwrap();
        }
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.display(),
                upper.display(),
                work.display()
            ))
            .arg(&merged)
            .status()
            .expect("running mount");
        assert!(st.success(), "mount -t overlay failed");
        Overlay(merged)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn one_overlayfs_layer_file_in_two_containers_is_probed_once() {
    if !have_root() {
        return;
    }
    let t = build(&["-static"]);
    // One image layer, two containers' overlay mounts of it: stat (and /proc/PID/maps) give a
    // device number per mount, the uprobe lands on the layer's one inode.
    let lower = t.data("layer");
    std::fs::create_dir_all(lower.join("app")).unwrap();
    std::fs::copy(&t.exe, lower.join("app/prog")).unwrap();
    let one = Overlay::mount(&t, &lower, "one");
    let two = Overlay::mount(&t, &lower, "two");
    {
        use std::os::unix::fs::MetadataExt;
        let (m1, m2) = (
            std::fs::metadata(one.0.join("app/prog")).unwrap(),
            std::fs::metadata(two.0.join("app/prog")).unwrap(),
        );
        assert_ne!(m1.dev(), m2.dev(), "overlay mounts should differ in st_dev");
    }
    let mut a = start_in(&one.0, "/app/prog");
    let mut b = start_in(&two.0, "/app/prog");
    wait_exec(a.id(), "prog");
    wait_exec(b.id(), "prog");
    let data = t.data("overlay.data");
    let pids = format!("{},{}", a.id(), b.id());
    let mut u = start_attached(&[
        "-e",
        "/app/prog:leaf",
        "-p",
        &pids,
        "-o",
        data.to_str().unwrap(),
    ]);
    run_to_end(&mut [&mut a, &mut b], &mut u);
    let rec = Recording::read(&data);
    assert!(rec.finished);
    assert_eq!(rec.probes.len(), 1, "{:?}", rec.probes);
    for pid in [a.id(), b.id()] {
        assert_eq!(rec.count(pid, EventKind::Entry), 500, "pid {pid}");
        assert_eq!(rec.count(pid, EventKind::Return), 500, "pid {pid}");
    }
}
