//! Snapshots of live processes from `/proc`: what the side-band cannot tell about processes that
//! were already running when recording began (the kernel reports only *new* mappings), as perf
//! does at start-up.
//!
//! Everything here races with the process: it may exit, `exec` or `dlopen` while we read.
//! A process that is gone gives `None`, never an error; a file we cannot read gives a partial
//! snapshot. The side-band records that follow correct what moved in between.
//!
//! Build ids are read from the mapped files themselves as a [`urec_elf::ElfImage`] (only the
//! headers and the note are read, by `read` calls, so a large binary is not read whole and a
//! file truncated under us cannot `SIGBUS` us as a mapped one could). The file
//! is opened through `/proc/PID/map_files/START-END` when we may, which is the very file mapped
//! even when the process lives in another mount namespace or the path was replaced since; then
//! through the path. Results are cached per (device, inode), so libc is read once per recording.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use urec_format::{Avma, BuildId, FileOffset, Mapping, Nanos};
use urec_untrusted::Identity;

/// One executable mapping of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    /// First address.
    pub start: Avma,
    /// One past the last address.
    pub end: Avma,
    /// File offset mapped at `start`.
    pub offset: FileOffset,
    /// Device, as `st_dev` (`makedev(major, minor)`); 0 for anonymous and special mappings.
    pub dev: u64,
    /// Inode; 0 for anonymous and special mappings.
    pub inode: u64,
    /// The path as the kernel shows it (`[vdso]`, empty for anonymous memory; a deleted file
    /// keeps its ` (deleted)` suffix).
    pub path: String,
    /// The file's build id, when it has one and we could read it.
    pub build_id: Option<BuildId>,
}

impl MapEntry {
    /// The mapping of `pid` as the data file records it: in place before recording began
    /// (time 0), since a snapshot cannot tell when it was made.
    pub fn mapping(self, pid: u32) -> Mapping {
        Mapping {
            pid,
            time_ns: 0,
            start: self.start,
            end: self.end,
            offset: self.offset,
            path: self.path,
            dev: self.dev,
            inode: self.inode,
            build_id: self.build_id,
        }
    }
}

/// What `/proc/PID/stat` says that we need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    /// Parent process id.
    pub ppid: u32,
    /// Command name.
    pub comm: String,
    /// Run state (`R`, `S`, `Z` for a zombie, ...): a zombie is waiting to be reaped, not to be
    /// signalled.
    pub state: char,
    /// Start time in clock ticks after boot (`CLOCK_BOOTTIME`).
    pub start_ticks: u64,
}

/// A process as `/proc` shows it at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// Command name.
    pub comm: String,
    /// Executable path (`/proc/PID/exe`), empty when unreadable (kernel threads).
    pub exe: String,
    /// Start time converted to `CLOCK_MONOTONIC` ns (10 ms resolution: `/proc` counts clock
    /// ticks), `None` when it cannot be converted.
    pub start_ns: Option<Nanos>,
    /// Executable mappings, in address order.
    pub mappings: Vec<MapEntry>,
    /// Its namespaces and cgroup.
    pub context: Context,
}

/// Where a process lives: mount and pid namespaces, cgroup v2 path. `None` for what could
/// not be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// Inode number of `/proc/PID/ns/mnt`.
    pub mnt_ns: Option<u64>,
    /// Inode number of `/proc/PID/ns/pid`.
    pub pid_ns: Option<u64>,
    /// The path of `/proc/PID/cgroup`'s cgroup v2 line (`0::PATH`).
    pub cgroup: Option<String>,
}

/// Reads `pid`'s [`Context`] from `/proc` now.
pub fn context(pid: u32) -> Context {
    use std::os::unix::fs::MetadataExt;
    let ns = |name: &str| {
        std::fs::metadata(format!("/proc/{pid}/ns/{name}"))
            .ok()
            .map(|m| m.ino())
    };
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|text| cgroup_v2_path(&text));
    Context {
        mnt_ns: ns("mnt"),
        pid_ns: ns("pid"),
        cgroup,
    }
}

/// The cgroup v2 path of a `/proc/PID/cgroup` text: its `0::PATH` line.
pub fn cgroup_v2_path(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Reads a process's [`Snapshot`], or `None` when it does not exist (any more).
pub fn snapshot(pid: u32, build_ids: &mut BuildIdCache) -> Option<Snapshot> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let stat = parse_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
    let exe = std::fs::read_link(dir.join("exe"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut mappings = maps(pid).unwrap_or_default();
    for m in &mut mappings {
        if m.inode != 0 {
            m.build_id = build_ids.lookup_mapped(pid, m);
        }
    }
    // The process may have exited while we read: then what we read may be empty or half.
    if !dir.exists() {
        return None;
    }
    Some(Snapshot {
        pid,
        ppid: stat.ppid,
        comm: stat.comm,
        exe,
        start_ns: ticks_to_monotonic(stat.start_ticks),
        mappings,
        context: context(pid),
    })
}

/// `pid`'s executable mappings now, without build ids; `None` when they cannot be read. A
/// recording's one reader of `/proc/PID/maps`: the process table's snapshots and surveys both
/// come through here (`urec top`, which takes in no mappings, keeps its own).
pub fn maps(pid: u32) -> Option<Vec<MapEntry>> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .ok()
        .map(|text| parse_maps(&text))
}

/// Every process id in `/proc` now.
pub fn all_pids() -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// Parses `/proc/PID/stat`. The command name is in parentheses and may itself contain spaces
/// and parentheses, so the fields are counted from the *last* `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // After ")": state(3) ppid(4) ... starttime(22); index 0 here is field 3.
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    Some(Stat {
        comm,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Whether `/proc/PID/stat` text is a kernel thread's (`PF_KTHREAD` in its flags, field 9).
pub fn is_kernel_thread(stat: &str) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Some(close) = stat.rfind(')') else {
        return false;
    };
    // After ")": state(3) ppid(4) pgrp(5) session(6) tty(7) tpgid(8) flags(9).
    stat.get(close + 1..)
        .and_then(|rest| rest.split_whitespace().nth(6))
        .and_then(|f| f.parse::<u64>().ok())
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// Parses the executable (`x`) lines of `/proc/PID/maps`; build ids are left `None`.
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<MapEntry> {
    // "start-end perms offset major:minor inode   path": the path is everything after the
    // inode's padding, and may contain spaces.
    let mut rest = line;
    let mut next = || {
        let trimmed = rest.trim_start();
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (field, tail) = trimmed.split_at(end);
        rest = tail;
        field
    };
    let range = next();
    let perms = next();
    let offset = next();
    let dev = next();
    let inode = next();
    if !perms.contains('x') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    Some(MapEntry {
        start: Avma(u64::from_str_radix(start, 16).ok()?),
        end: Avma(u64::from_str_radix(end, 16).ok()?),
        offset: FileOffset(u64::from_str_radix(offset, 16).ok()?),
        dev: libc::makedev(
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        inode: inode.parse().ok()?,
        path: rest.trim_start().to_string(),
        build_id: None,
    })
}

/// `/proc` start times count clock ticks of `CLOCK_BOOTTIME`; `CLOCK_MONOTONIC` stops during
/// suspend, so the two differ by the time suspended (taken as now's difference: exact unless the
/// machine was suspended after the process started).
fn ticks_to_monotonic(ticks: u64) -> Option<Nanos> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&hz| hz > 0)?;
    let boottime = crate::sideband::clock_ns(libc::CLOCK_BOOTTIME).ok()?;
    let monotonic = crate::sideband::clock_ns(libc::CLOCK_MONOTONIC).ok()?;
    let suspended = boottime.saturating_sub(monotonic);
    let start = u128::from(ticks) * 1_000_000_000 / u128::from(hz);
    u64::try_from(start).ok()?.checked_sub(suspended)
}

/// Build ids of files, read once per file.
#[derive(Debug, Default)]
pub struct BuildIdCache {
    by_inode: HashMap<(u64, u64), Option<BuildId>>,
}

impl BuildIdCache {
    /// An empty cache.
    pub fn new() -> BuildIdCache {
        BuildIdCache::default()
    }

    /// The build id of the file mapped by `m` in process `pid`, through `map_files` first (the
    /// exact mapped file), then the process's root, then the path.
    pub fn lookup_mapped(&mut self, pid: u32, m: &MapEntry) -> Option<BuildId> {
        if let Some(cached) = self.by_inode.get(&(m.dev, m.inode)) {
            return cached.clone();
        }
        let candidates = [
            PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)),
            Path::new(&format!("/proc/{pid}/root")).join(m.path.trim_start_matches('/')),
            PathBuf::from(&m.path),
        ];
        for path in candidates {
            if let Some(id) = self.read_checked(&path, m.dev, m.inode) {
                return id;
            }
        }
        None
    }

    /// `None`: could not open the file (try another path); `Some(id)`: the answer (cached).
    ///
    /// The path belongs to the traced process, which may have put a FIFO or a device there
    /// since it mapped the file: [`urec_untrusted::open`] neither blocks on those nor reads
    /// them, where a plain open of a FIFO would hang the recorder past `-d` and Ctrl-C.
    fn read_checked(&mut self, path: &Path, dev: u64, inode: u64) -> Option<Option<BuildId>> {
        let file = urec_untrusted::open(path).ok()?;
        let identity = Identity::of(&file).ok()?;
        if !identity.matches(dev, inode) {
            return None;
        }
        let id = read_build_id(&file);
        self.by_inode
            .insert((identity.dev, identity.inode), id.clone());
        Some(id)
    }
}

/// The GNU build id note of an ELF file, `None` when it has none or is not ELF.
pub fn read_build_id(file: &File) -> Option<BuildId> {
    let image = urec_elf::ElfImage::read(file.try_clone().ok()?).ok()?;
    let id = image.build_id()?;
    (!id.is_empty()).then(|| BuildId(id.to_vec()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cgroup_v2_line() {
        let hybrid = "9:name=systemd:/\n4:memory:/x\n0::/urec-test-1\n";
        assert_eq!(cgroup_v2_path(hybrid).as_deref(), Some("/urec-test-1"));
        assert_eq!(cgroup_v2_path("4:memory:/x\n"), None);
    }

    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let text = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 \
                    1000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                ppid: 7,
                comm: "a) b (c)".into(),
                state: 'S',
                start_ticks: 12345
            })
        );
        assert_eq!(parse_stat("42 (x) S"), None);
    }

    #[test]
    fn kernel_threads() {
        let kthreadd = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 3 0 0 20 0 1 0 1 0 0";
        assert!(is_kernel_thread(kthreadd));
        let bash = "42 (ba) sh) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345";
        assert!(!is_kernel_thread(bash));
        assert!(!is_kernel_thread("42 (x"));
    }

    #[test]
    fn maps_lines() {
        let text = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 1234   /usr/bin/my prog\n\
55d0c0a01000-55d0c0a02000 r-xp 00001000 fe:01 1234   /usr/bin/my prog\n\
7ffd1b1f0000-7ffd1b1f2000 r-xp 00000000 00:00 0                          [vdso]\n\
7f0000000000-7f0000001000 rwxp 00000000 00:00 0 \n";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 3);
        assert_eq!(
            maps[0],
            MapEntry {
                start: Avma(0x55d0c0a01000),
                end: Avma(0x55d0c0a02000),
                offset: FileOffset(0x1000),
                dev: libc::makedev(0xfe, 1),
                inode: 1234,
                path: "/usr/bin/my prog".into(),
                build_id: None,
            }
        );
        assert_eq!(maps[1].path, "[vdso]");
        assert_eq!(maps[2].path, "");
    }
}
