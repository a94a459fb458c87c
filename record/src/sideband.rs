//! The perf side-band: what the kernel says about processes and their executable mappings while
//! we record.
//!
//! Uprobe events carry addresses; turning them into functions later needs to know which file was
//! mapped where, in which process, at that moment. The kernel reports exactly that through
//! *side-band* records of a perf event: `MMAP2` (an executable mapping, with the file's build id),
//! `COMM` (a name change, or an `execve`), `FORK` and `EXIT`. We open a software *dummy* event,
//! which never counts or samples anything, only to receive those records.
//!
//! # Design decisions
//!
//! - **One event per online CPU, `pid = -1`.** A system-wide perf event must be bound to a CPU,
//!   and covering every process (including ones that start after recording began, and the
//!   children of `-p` targets) needs system-wide events. Each CPU gets its own ring, written
//!   without cross-CPU contention.
//! - **`CLOCK_MONOTONIC` timestamps** (`use_clockid`). BPF stamps events with
//!   `bpf_ktime_get_ns()`, which is `CLOCK_MONOTONIC`. perf's default clock is not, and then an
//!   `exec` and the first probe hit of the new image could not be ordered against each other.
//! - **Merged by time, with a re-ordering window.** Each CPU's ring is in time order, but the
//!   rings are read one after another, so a record written to CPU 0's ring just after we read it
//!   can be older than one we then find in CPU 1's ring: a process that `exec`s on CPU 0 and
//!   migrates before its first `mmap` on CPU 1. Applying those out of order would drop the new
//!   mapping on the exec. So [`Sideband::read`] releases, in time order, only records older
//!   than the *horizon*: `CLOCK_MONOTONIC` taken before reading the rings, minus
//!   [`REORDER_WINDOW_NS`] (the kernel stamps a record shortly before it writes it, with
//!   preemption off; the window covers that gap with a wide margin, including a vCPU being
//!   descheduled). Younger records wait for the next read; [`Sideband::flush`] releases all.
//! - **Executable mappings only** (`mmap = 1`, not `mmap_data`): symbolization needs code only,
//!   and data mappings are far more numerous.
//! - **Build ids in the record** (`build_id = 1`, Linux 5.12+): the kernel reads the note while
//!   the file is certainly the mapped one, so a binary replaced on disk after a run still
//!   symbolizes right. Files without a readable note come with device/inode instead.
//! - **Watermark wake-ups** at a quarter of the ring: waking the reader per record would cost a
//!   context switch per `mmap` on a busy host. The consequence for the session loop: a lone
//!   record (an `EXIT` of a watched process, say) does not wake a `poll` on [`Sideband::fds`], so
//!   the loop must also wake on a timeout (100 ms is plenty) and call [`Sideband::read`].
//! - **Losses are counted, not hidden**: a full ring makes the kernel drop records and later
//!   write a `LOST` record with the count, which we pass on as [`SidebandRecord::Lost`] (the
//!   data file's `Lost { source: Sideband }`). The kernel writes that `LOST` record together
//!   with the next record that fits after the reader made room, so a loss in the very last
//!   moments of a recording may go unreported.
//!
//! The ring is read by hand (no perf crate): `data_head` is loaded with acquire ordering (the
//! kernel publishes records with a release store), records are copied out (reassembled when they
//! wrap around the ring's end), and `data_tail` is stored with release ordering so the kernel
//! never overwrites a record we are still reading.
//!
//! # Use
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use urec_record::sideband::Sideband;
//! let mut sideband = Sideband::open(64)?; // before attaching the probes
//! let mut records = Vec::new();
//! loop {
//!     // poll(2) sideband.fds() (and the BPF ring) with a timeout, then:
//!     sideband.read(&mut records)?;
//!     for record in records.drain(..) {
//!         // hand each to ProcessTable::apply, in this order
//!         # let _ = record;
//!     }
//!     # break;
//! }
//! sideband.flush(&mut records)?; // at the end: everything, horizon or not
//! # Ok(())
//! # }
//! ```

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};
use perf_event_open_sys as sys;
use urec_format::{Avma, BuildId, FileOffset, Mapping, Nanos};

/// How long a record may sit between its timestamp and its appearance in the ring, at most; see
/// the module docs. Records younger than this are held back by [`Sideband::read`].
pub const REORDER_WINDOW_NS: Nanos = 5_000_000;

/// `sample_id_all` trailer with `TID | TIME | CPU`: pid, tid (8) + time (8) + cpu, reserved (8).
const TRAILER_LEN: usize = 24;
const HEADER_LEN: usize = 8;

/// What identifies the file behind a mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileId {
    /// The kernel read the file's GNU build id.
    BuildId(BuildId),
    /// No build id (none in the file, or the kernel could not read it): the file's device
    /// (`makedev(major, minor)`, as `st_dev`) and inode. Both 0 for `[vdso]` and anonymous memory.
    DevInode {
        /// Device number, as `stat`'s `st_dev`.
        dev: u64,
        /// Inode number.
        inode: u64,
    },
    /// A plain `MMAP` record (kernels without `mmap2`), which says nothing about the file.
    Unknown,
}

/// A new executable mapping (`PERF_RECORD_MMAP2`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmapRecord {
    /// Process id (tgid).
    pub pid: u32,
    /// Thread that made the mapping.
    pub tid: u32,
    /// `CLOCK_MONOTONIC` ns.
    pub time_ns: Nanos,
    /// First address.
    pub start: Avma,
    /// Length in bytes.
    pub len: u64,
    /// File offset mapped at `start`.
    pub pgoff: FileOffset,
    /// Path of the file as the kernel names it (`[vdso]`, `//anon` for anonymous memory).
    pub path: String,
    /// Build id, or device and inode.
    pub file: FileId,
    /// `PROT_*` bits, when the record says (always includes `PROT_EXEC` here).
    pub prot: Option<u32>,
}

impl MmapRecord {
    /// The mapping as the data file records it (a build id the kernel did not give is read
    /// when the mapping is written).
    pub fn mapping(&self) -> Mapping {
        let (dev, inode, build_id) = match &self.file {
            FileId::BuildId(id) => (0, 0, Some(id.clone())),
            FileId::DevInode { dev, inode } => (*dev, *inode, None),
            FileId::Unknown => (0, 0, None),
        };
        Mapping {
            pid: self.pid,
            time_ns: self.time_ns,
            start: self.start,
            end: self.start.saturating_add(self.len),
            offset: self.pgoff,
            path: self.path.clone(),
            dev,
            inode,
            build_id,
        }
    }
}

/// A fork or an exit (`PERF_RECORD_FORK` / `PERF_RECORD_EXIT`), of a process or of a thread.
///
/// perf's `pid` fields are thread-group ids: a new thread has `pid == ppid` and `tid != pid`; a
/// new process has `tid == pid`. A process's own exit is the exit of its main thread
/// (`tid == pid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskRecord {
    /// Process id (tgid) of the task.
    pub pid: u32,
    /// Process id of its parent.
    pub ppid: u32,
    /// Thread id of the task.
    pub tid: u32,
    /// Thread id of the parent task.
    pub ptid: u32,
    /// `CLOCK_MONOTONIC` ns.
    pub time_ns: Nanos,
}

impl TaskRecord {
    /// A whole process (its main thread), not another thread of it.
    pub fn is_process(&self) -> bool {
        self.tid == self.pid
    }
}

/// One side-band record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SidebandRecord {
    /// An executable mapping.
    Mmap(MmapRecord),
    /// A thread's name changed; `exec` when the change is an `execve` (then all earlier mappings
    /// of the process are gone).
    Comm {
        /// Process id (tgid).
        pid: u32,
        /// Thread id: a name change of a thread other than the main one (`tid != pid`) does not
        /// rename the process.
        tid: u32,
        /// `CLOCK_MONOTONIC` ns.
        time_ns: Nanos,
        /// The new name (at most 15 bytes).
        comm: String,
        /// The change comes from `execve`.
        exec: bool,
    },
    /// A process or thread was created.
    Fork(TaskRecord),
    /// A process or thread exited.
    Exit(TaskRecord),
    /// The kernel dropped `count` records because a ring was full.
    Lost {
        /// `CLOCK_MONOTONIC` ns when the loss was reported.
        time_ns: Nanos,
        /// How many records were dropped.
        count: u64,
    },
}

impl SidebandRecord {
    /// The record's `CLOCK_MONOTONIC` timestamp.
    pub fn time_ns(&self) -> Nanos {
        match self {
            SidebandRecord::Mmap(m) => m.time_ns,
            SidebandRecord::Comm { time_ns, .. } | SidebandRecord::Lost { time_ns, .. } => *time_ns,
            SidebandRecord::Fork(t) | SidebandRecord::Exit(t) => t.time_ns,
        }
    }

    /// The process the record is about (`None` for [`SidebandRecord::Lost`]).
    pub fn pid(&self) -> Option<u32> {
        match self {
            SidebandRecord::Mmap(m) => Some(m.pid),
            SidebandRecord::Comm { pid, .. } => Some(*pid),
            SidebandRecord::Fork(t) | SidebandRecord::Exit(t) => Some(t.pid),
            SidebandRecord::Lost { .. } => None,
        }
    }
}

/// The side-band of every online CPU. Dropping it closes the events and unmaps the rings.
pub struct Sideband {
    rings: Vec<CpuRing>,
    /// Records read but younger than the horizon, kept sorted by time.
    pending: Vec<SidebandRecord>,
    horizon: Nanos,
    lost: u64,
    scratch: Vec<u8>,
    /// Collect the mappings of the `mmap` records as they are read, for
    /// [`Sideband::take_fresh_mappings`].
    want_fresh: bool,
    fresh: Vec<urec_format::Mapping>,
}

impl Sideband {
    /// Opens one dummy perf event per online CPU, each with a ring of `pages_per_cpu` data pages
    /// (a power of two; 64 pages = 256 KiB saw no loss at ≈300 mmaps/s host-wide), and enables
    /// them.
    ///
    /// Needs root, `CAP_PERFMON`, or `kernel.perf_event_paranoid` ≤ -1 (system-wide events).
    pub fn open(pages_per_cpu: usize) -> Result<Sideband> {
        if pages_per_cpu == 0 || !pages_per_cpu.is_power_of_two() {
            bail!("side-band ring size must be a power of two pages, not {pages_per_cpu}");
        }
        let text = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .context("reading /sys/devices/system/cpu/online")?;
        let cpus = parse_cpu_list(&text)
            .with_context(|| format!("bad online CPU list {:?}", text.trim()))?;
        let mut rings = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            rings.push(CpuRing::open(cpu, pages_per_cpu)?);
        }
        for ring in &rings {
            // SAFETY: plain ioctl on a perf event fd we own.
            if unsafe { sys::ioctls::ENABLE(ring.fd.as_raw_fd(), 0) } != 0 {
                return Err(io::Error::last_os_error())
                    .with_context(|| format!("enabling the side-band event of CPU {}", ring.cpu));
            }
        }
        Ok(Sideband {
            rings,
            pending: Vec::new(),
            horizon: 0,
            lost: 0,
            scratch: Vec::new(),
            want_fresh: false,
            fresh: Vec::new(),
        })
    }

    /// From now on, keeps the mapping of every `mmap` record as soon as it is read, before the
    /// horizon releases it, for [`Sideband::take_fresh_mappings`]: the Python walk's maps
    /// (`crate::python`) must learn of a new interpreter within milliseconds, while the
    /// process starts, not a release later.
    pub fn want_fresh_mappings(&mut self) {
        self.want_fresh = true;
    }

    /// The mappings read since the last call (see [`Sideband::want_fresh_mappings`]).
    pub fn take_fresh_mappings(&mut self) -> Vec<urec_format::Mapping> {
        std::mem::take(&mut self.fresh)
    }

    /// The per-CPU perf event fds, to `poll`/`epoll` for `POLLIN` (see the module docs about
    /// wake-ups: poll with a timeout too).
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.rings.iter().map(|r| r.fd.as_fd()).collect()
    }

    /// Appends to `out`, in time order, every record older than the new horizon (see the module
    /// docs). Records after the horizon stay for a later call. Never blocks.
    pub fn read(&mut self, out: &mut Vec<SidebandRecord>) -> Result<()> {
        // Taken before reading any ring: whatever the kernel stamped before `now - window` is
        // in a ring by now.
        let now = monotonic_now()?;
        self.collect()?;
        let horizon = now.saturating_sub(REORDER_WINDOW_NS).max(self.horizon);
        self.release(horizon, out);
        self.horizon = horizon;
        Ok(())
    }

    /// Like [`Sideband::read`], but releases every record read, whatever its time: for the final
    /// drain when recording stops.
    pub fn flush(&mut self, out: &mut Vec<SidebandRecord>) -> Result<()> {
        self.collect()?;
        self.release(Nanos::MAX, out);
        if let Some(last) = out.last() {
            self.horizon = self.horizon.max(last.time_ns());
        }
        Ok(())
    }

    /// Every side-band record stamped at or before this time has been returned by
    /// [`Sideband::read`]. A session that wants the file strictly ordered holds BPF events
    /// younger than this until a later read moves it past them.
    pub fn horizon(&self) -> Nanos {
        self.horizon
    }

    /// Total records the kernel reported lost so far (the sum of the
    /// [`SidebandRecord::Lost`] counts read).
    pub fn lost(&self) -> u64 {
        self.lost
    }

    fn collect(&mut self) -> Result<()> {
        let before = self.pending.len();
        for ring in &mut self.rings {
            ring.drain(&mut self.scratch, &mut self.pending)?;
        }
        for record in &self.pending[before..] {
            match record {
                SidebandRecord::Lost { count, .. } => self.lost += count,
                SidebandRecord::Mmap(m) if self.want_fresh => self.fresh.push(m.mapping()),
                _ => {}
            }
        }
        // Stable: records with equal times keep their ring order.
        self.pending.sort_by_key(SidebandRecord::time_ns);
        Ok(())
    }

    fn release(&mut self, horizon: Nanos, out: &mut Vec<SidebandRecord>) {
        let n = self.pending.partition_point(|r| r.time_ns() <= horizon);
        out.extend(self.pending.drain(..n));
    }
}

/// One CPU's perf event and its mmap'd ring: a header page, then `data_size` bytes of data.
struct CpuRing {
    cpu: u32,
    fd: OwnedFd,
    base: NonNull<u8>,
    mmap_len: usize,
    data_offset: usize,
    data_size: usize,
}

// SAFETY: the mapping is owned by this value and only touched through &mut self.
unsafe impl Send for CpuRing {}

impl CpuRing {
    fn open(cpu: u32, pages: usize) -> Result<CpuRing> {
        let mut attr = sys::bindings::perf_event_attr {
            size: std::mem::size_of::<sys::bindings::perf_event_attr>() as u32,
            type_: sys::bindings::PERF_TYPE_SOFTWARE,
            config: u64::from(sys::bindings::PERF_COUNT_SW_DUMMY),
            sample_type: u64::from(
                sys::bindings::PERF_SAMPLE_TID
                    | sys::bindings::PERF_SAMPLE_TIME
                    | sys::bindings::PERF_SAMPLE_CPU,
            ),
            clockid: libc::CLOCK_MONOTONIC,
            ..Default::default()
        };
        attr.set_disabled(1);
        attr.set_mmap(1);
        attr.set_mmap2(1);
        attr.set_build_id(1);
        attr.set_comm(1);
        attr.set_comm_exec(1);
        attr.set_task(1);
        attr.set_sample_id_all(1);
        attr.set_use_clockid(1);
        attr.set_watermark(1);
        let page = page_size();
        let data_size = pages * page;
        attr.__bindgen_anon_2.wakeup_watermark = (data_size / 4).max(1) as u32;

        // SAFETY: `attr` is a fully initialized perf_event_attr with its own size.
        let fd = unsafe {
            sys::perf_event_open(
                &mut attr,
                -1,
                cpu as libc::c_int,
                -1,
                libc::c_ulong::from(sys::bindings::PERF_FLAG_FD_CLOEXEC),
            )
        };
        if fd < 0 {
            let err = io::Error::last_os_error();
            let hint = match err.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => {
                    ": system-wide perf events need root or CAP_PERFMON \
                     (or kernel.perf_event_paranoid <= -1)"
                }
                Some(libc::EINVAL) => ": this kernel may lack build ids in MMAP2 (Linux 5.12+)",
                _ => "",
            };
            return Err(err).with_context(|| {
                format!("perf_event_open of the side-band event on CPU {cpu}{hint}")
            });
        }
        // SAFETY: a fresh fd returned by perf_event_open, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mmap_len = page + data_size;
        // SAFETY: mapping a perf event fd; PROT_WRITE so that we can store data_tail (a
        // read-only mapping would put the ring in overwrite mode).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mmap_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error()).with_context(|| {
                format!("mapping the side-band ring of CPU {cpu} ({pages} pages; see ulimit -l)")
            });
        }
        let base = NonNull::new(base.cast::<u8>()).context("mmap returned NULL")?;
        let mut ring = CpuRing {
            cpu,
            fd,
            base,
            mmap_len,
            data_offset: page,
            data_size,
        };
        // Kernels since 4.1 state where the data lives; trust them when they do.
        let header = ring.header();
        // SAFETY: the header page is mapped and these fields are written once by the kernel.
        let (offset, size) = unsafe { ((*header).data_offset, (*header).data_size) };
        if size != 0 {
            ring.data_offset = offset as usize;
            ring.data_size = size as usize;
        }
        Ok(ring)
    }

    fn header(&self) -> *mut sys::bindings::perf_event_mmap_page {
        self.base.as_ptr().cast()
    }

    /// Copies every record between data_tail and data_head out, parses them into `out`, and
    /// gives the space back to the kernel.
    fn drain(&mut self, scratch: &mut Vec<u8>, out: &mut Vec<SidebandRecord>) -> Result<()> {
        let header = self.header();
        // SAFETY: data_head/data_tail are naturally aligned u64s in the mapped header page;
        // the kernel and we access them atomically.
        let (head_atomic, tail_atomic) = unsafe {
            (
                AtomicU64::from_ptr(std::ptr::addr_of_mut!((*header).data_head)),
                AtomicU64::from_ptr(std::ptr::addr_of_mut!((*header).data_tail)),
            )
        };
        // Acquire pairs with the kernel's release when it publishes data_head: every byte
        // before head is visible after this load.
        let head = head_atomic.load(Ordering::Acquire);
        let mut tail = tail_atomic.load(Ordering::Relaxed);
        while tail < head {
            let mut hdr = [0u8; HEADER_LEN];
            self.copy_out(tail, &mut hdr);
            let size = usize::from(u16::from_ne_bytes([hdr[6], hdr[7]]));
            if size < HEADER_LEN || (head - tail) < size as u64 {
                // Cannot happen with a sane kernel; skip the rest rather than loop forever.
                tail = head;
                break;
            }
            scratch.resize(size, 0);
            self.copy_out(tail, scratch);
            if let Some(record) = parse_record(scratch) {
                out.push(record);
            }
            tail += size as u64;
        }
        // Release: our reads of the records happen before the kernel may reuse their space.
        tail_atomic.store(tail, Ordering::Release);
        Ok(())
    }

    /// Copies `buf.len()` bytes at ring position `pos`, reassembling a wrap at the ring's end.
    fn copy_out(&self, pos: u64, buf: &mut [u8]) {
        let start = (pos % self.data_size as u64) as usize;
        let first = buf.len().min(self.data_size - start);
        // SAFETY: [data_offset, data_offset + data_size) is mapped; start + first and
        // buf.len() - first are within data_size (records are never larger than the ring); the
        // kernel does not write between tail and head.
        unsafe {
            let data = self.base.as_ptr().add(self.data_offset);
            std::ptr::copy_nonoverlapping(data.add(start), buf.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(data, buf.as_mut_ptr().add(first), buf.len() - first);
        }
    }
}

impl Drop for CpuRing {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping once; the fd closes after (OwnedFd).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.mmap_len);
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// A NUL-terminated (and NUL-padded) string in `b[at..end]`.
fn str_at(b: &[u8], at: usize, end: usize) -> Option<String> {
    let bytes = b.get(at..end)?;
    let len = bytes.iter().position(|&c| c == 0).unwrap_or(bytes.len());
    Some(String::from_utf8_lossy(&bytes[..len]).into_owned())
}

/// Parses one whole record (header included). Unknown types and malformed records give `None`.
fn parse_record(b: &[u8]) -> Option<SidebandRecord> {
    let kind = u32_at(b, 0)?;
    let misc = u32::from(u16::from_ne_bytes([*b.get(4)?, *b.get(5)?]));
    let body_end = b.len().checked_sub(TRAILER_LEN)?;
    if body_end < HEADER_LEN {
        return None;
    }
    let time_ns = u64_at(b, body_end + 8)?;
    let record = match kind {
        sys::bindings::PERF_RECORD_MMAP2 => {
            let file = if misc & sys::bindings::PERF_RECORD_MISC_MMAP_BUILD_ID != 0 {
                let size = usize::from(*b.get(40)?).min(20);
                FileId::BuildId(BuildId(b.get(44..44 + size)?.to_vec()))
            } else {
                let (major, minor) = (u32_at(b, 40)?, u32_at(b, 44)?);
                FileId::DevInode {
                    dev: libc::makedev(major, minor),
                    inode: u64_at(b, 48)?,
                }
            };
            SidebandRecord::Mmap(MmapRecord {
                pid: u32_at(b, 8)?,
                tid: u32_at(b, 12)?,
                time_ns,
                start: Avma(u64_at(b, 16)?),
                len: u64_at(b, 24)?,
                pgoff: FileOffset(u64_at(b, 32)?),
                prot: Some(u32_at(b, 64)?),
                path: str_at(b, 72, body_end)?,
                file,
            })
        }
        sys::bindings::PERF_RECORD_MMAP => SidebandRecord::Mmap(MmapRecord {
            pid: u32_at(b, 8)?,
            tid: u32_at(b, 12)?,
            time_ns,
            start: Avma(u64_at(b, 16)?),
            len: u64_at(b, 24)?,
            pgoff: FileOffset(u64_at(b, 32)?),
            prot: None,
            path: str_at(b, 40, body_end)?,
            file: FileId::Unknown,
        }),
        sys::bindings::PERF_RECORD_COMM => SidebandRecord::Comm {
            pid: u32_at(b, 8)?,
            tid: u32_at(b, 12)?,
            time_ns,
            comm: str_at(b, 16, body_end)?,
            exec: misc & sys::bindings::PERF_RECORD_MISC_COMM_EXEC != 0,
        },
        sys::bindings::PERF_RECORD_FORK | sys::bindings::PERF_RECORD_EXIT => {
            let task = TaskRecord {
                pid: u32_at(b, 8)?,
                ppid: u32_at(b, 12)?,
                tid: u32_at(b, 16)?,
                ptid: u32_at(b, 20)?,
                time_ns: u64_at(b, 24)?,
            };
            if kind == sys::bindings::PERF_RECORD_FORK {
                SidebandRecord::Fork(task)
            } else {
                SidebandRecord::Exit(task)
            }
        }
        sys::bindings::PERF_RECORD_LOST => SidebandRecord::Lost {
            time_ns,
            count: u64_at(b, 16)?,
        },
        _ => return None,
    };
    Some(record)
}

/// Parses the kernel's CPU list format (`0-3,5,7-8`).
fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}

/// `CLOCK_MONOTONIC` now, in ns: the clock of side-band records and BPF events.
pub fn monotonic_now() -> Result<Nanos> {
    clock_ns(libc::CLOCK_MONOTONIC)
}

pub(crate) fn clock_ns(clock: libc::clockid_t) -> Result<Nanos> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(io::Error::last_os_error()).context("clock_gettime");
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-4,7"), Some(vec![0, 2, 3, 4, 7]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    fn trailer(time: u64) -> Vec<u8> {
        let mut t = vec![0u8; 8];
        t.extend(time.to_ne_bytes());
        t.extend([0u8; 8]);
        t
    }

    fn with_header(kind: u32, misc: u16, body: &[u8], time: u64) -> Vec<u8> {
        let mut b = kind.to_ne_bytes().to_vec();
        b.extend(misc.to_ne_bytes());
        let size = (HEADER_LEN + body.len() + TRAILER_LEN) as u16;
        b.extend(size.to_ne_bytes());
        b.extend(body);
        b.extend(trailer(time));
        b
    }

    #[test]
    fn parses_mmap2_with_build_id() {
        let mut body = Vec::new();
        body.extend(7u32.to_ne_bytes()); // pid
        body.extend(8u32.to_ne_bytes()); // tid
        body.extend(0x1000u64.to_ne_bytes());
        body.extend(0x2000u64.to_ne_bytes());
        body.extend(0x3000u64.to_ne_bytes());
        body.push(3); // build id size
        body.extend([0u8; 3]);
        body.extend([0xab, 0xcd, 0xef]);
        body.extend([0u8; 17]);
        body.extend(5u32.to_ne_bytes()); // prot
        body.extend(2u32.to_ne_bytes()); // flags
        body.extend(b"/bin/x\0\0");
        let misc = sys::bindings::PERF_RECORD_MISC_MMAP_BUILD_ID as u16;
        let rec = with_header(sys::bindings::PERF_RECORD_MMAP2, misc, &body, 42);
        assert_eq!(
            parse_record(&rec),
            Some(SidebandRecord::Mmap(MmapRecord {
                pid: 7,
                tid: 8,
                time_ns: 42,
                start: Avma(0x1000),
                len: 0x2000,
                pgoff: FileOffset(0x3000),
                path: "/bin/x".into(),
                file: FileId::BuildId(BuildId(vec![0xab, 0xcd, 0xef])),
                prot: Some(5),
            }))
        );
        // Truncated records are refused, not read past.
        assert_eq!(parse_record(&rec[..60]), None);
    }

    #[test]
    fn parses_task_and_lost() {
        let mut body = Vec::new();
        for v in [10u32, 1, 11, 1] {
            body.extend(v.to_ne_bytes());
        }
        body.extend(99u64.to_ne_bytes());
        let rec = with_header(sys::bindings::PERF_RECORD_EXIT, 0, &body, 100);
        assert_eq!(
            parse_record(&rec),
            Some(SidebandRecord::Exit(TaskRecord {
                pid: 10,
                ppid: 1,
                tid: 11,
                ptid: 1,
                time_ns: 99
            }))
        );
        let mut body = 5u64.to_ne_bytes().to_vec();
        body.extend(17u64.to_ne_bytes());
        let rec = with_header(sys::bindings::PERF_RECORD_LOST, 0, &body, 100);
        assert_eq!(
            parse_record(&rec),
            Some(SidebandRecord::Lost {
                time_ns: 100,
                count: 17
            })
        );
    }
}
