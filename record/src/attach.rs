//! Loading urec's BPF programs and attaching them to the planned probes.
//!
//! # Design decisions
//!
//! - **One small fixed set of programs** (see `bpf/src/urec.bpf.c`) serves every probe; the attach
//!   cookie is the probe id. Loading and verifying is paid once however many probes there are.
//! - **One link per (binary, program)**: entry+return probes of a binary share one
//!   `uprobe.session` link, entry-only probes one `uprobe.multi` link, `%return` probes one
//!   `uretprobe.multi` link, each with urec's own file offsets (libbpf's by-name lookup fails on
//!   stripped binaries and knows no `libc`) and one cookie per offset. Detaching a multi link takes
//!   ≈0.1 s however many functions it covers; single perf-event uprobes take ≈130 ms *each*,
//!   serialized in the kernel, so they are only the fallback when the kernel refuses multi links.
//! - **Everything lives on file descriptors**: links, never tracefs. When urec dies, even by
//!   `kill -9`, the kernel drops the links with the process.
//! - **Attached to every process** (`pid = -1`), filtered in BPF: a per-process uprobe would
//!   miss the children `-p` and `-- COMMAND` must follow.

use std::mem::MaybeUninit;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, UprobeMultiOpts, UprobeOpts};
use urec_bpf::abi::{ProbeConfig, COOKIE_ONE_SIDED, KIND_ENTRY, KIND_RETURN};
use urec_bpf::{UrecSkel, UrecSkelBuilder};
use urec_format::{plural, EventKind, ProbeId, ProbeKind};

/// What the programs are loaded with.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// urec's own process id: never traced.
    pub self_tgid: u32,
    /// Trace only the tgids put in the filter (`-p`, `-- COMMAND`), and their later children.
    pub filter: bool,
    /// Frames per user stack; 0 for no stacks.
    pub stack_depth: u32,
    /// BPF ring buffer size in bytes (a power of two, at least one page).
    pub ring_bytes: u32,
    /// Number of probes (ids 0..n).
    pub probes: u32,
    /// Trace only the tasks under this cgroup v2 directory (see [`crate::cgroup`]).
    pub cgroup: Option<std::os::fd::RawFd>,
    /// Sub-bucket bits of the latency histograms ([`crate::aggregates::hist_bits`]).
    pub hist_bits: u32,
    /// Only count (`urec top`): the programs update the in-kernel aggregates and return
    /// before building or reserving any ring-buffer record.
    pub count_only: bool,
    /// `-g kernel-dwarf`: the in-kernel walk on, its maps sized (`crate::kunwind`).
    pub kernel_dwarf: bool,
}

/// Turns the Python code snapshots off (names then depend on the process still living when
/// its events are read): for measuring their cost only.
pub const NO_PY_SNAPSHOTS_ENV: &str = "UREC_NO_PY_SNAPSHOTS";

/// Sends every kernel-walked stack's frames in its events instead of a stack id (bpf/src/urec.h,
/// "Stack ids"): for comparing the two only.
pub const NO_STACK_IDS_ENV: &str = "UREC_NO_STACK_IDS";

/// Tests only: the `stacks` map's size, small enough to fill (tests/stack_ids.rs).
const TEST_STACK_STORE_ENV: &str = "UREC_TEST_STACK_STORE";

/// One probe as the attach step needs it.
#[derive(Clone, Debug)]
pub struct AttachProbe {
    /// Probe id, the cookie.
    pub id: ProbeId,
    /// Binary to attach to.
    pub binary: PathBuf,
    /// File offset.
    pub offset: u64,
    /// Entry, return or both.
    pub kind: ProbeKind,
    /// The probe's display name, for errors (`libc:malloc`).
    pub name: String,
    /// File offset of a USDT semaphore: the kernel increments it while the probe is attached
    /// and decrements it when the link goes, `kill -9` of urec included.
    pub ref_ctr_offset: Option<u64>,
    /// A Go function's `ret`s (file offsets): its return is a plain uprobe on each, paired
    /// with the entry (at `offset`) per goroutine in BPF, never a uretprobe, which crashes
    /// Go's runtime (SPEC.md, "Go programs").
    pub go_returns: Option<Vec<u64>>,
}

impl AttachProbe {
    /// What attaching planned probe `p` takes.
    pub fn of(p: &crate::PlannedProbe) -> AttachProbe {
        AttachProbe {
            id: p.probe.id,
            binary: p.open_path.clone(),
            // The entry site (SPEC.md, "Probe sites and probe cost"); a Go function's entry
            // probe sits past its stack check (SPEC.md, "Go programs"). Raw from here on: what
            // libbpf is handed.
            offset: p.site_offset.0,
            kind: p.probe.kind,
            name: p.probe.name.clone(),
            ref_ctr_offset: p.ref_ctr_offset,
            go_returns: p.go.as_ref().and_then(|g| g.returns.clone().ok()),
        }
    }
}

/// Which BPF program a site runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Program {
    /// Entry and return of a call, one `uprobe.session` link.
    Session,
    Entry,
    Return,
    /// A Go function's entry, which records where the goroutine's call began.
    GoEntry,
    /// A `ret` of a Go function (a plain uprobe), pairing with [`Program::GoEntry`].
    GoReturn,
    /// A `ret` of a Go function probed for its return only: the return program as a plain
    /// uprobe.
    GoReturnOnly,
}

/// One probed instruction: a probe's offset, or one of a Go function's `ret`s.
#[derive(Clone, Copy, Debug)]
struct Site<'a> {
    probe: &'a AttachProbe,
    offset: u64,
    program: Program,
}

/// Every site of `probes`, with the program each runs.
fn sites(probes: &[AttachProbe]) -> Vec<Site<'_>> {
    let mut out = Vec::new();
    for p in probes {
        let site = |offset, program| Site {
            probe: p,
            offset,
            program,
        };
        match (&p.go_returns, p.kind) {
            (Some(rets), ProbeKind::EntryReturn) => {
                out.push(site(p.offset, Program::GoEntry));
                out.extend(rets.iter().map(|&r| site(r, Program::GoReturn)));
            }
            // A Go return-only probe: the plain return program, on each `ret`.
            (Some(rets), ProbeKind::Return) => {
                out.extend(rets.iter().map(|&r| site(r, Program::GoReturnOnly)));
            }
            (_, ProbeKind::Entry) => out.push(site(p.offset, Program::Entry)),
            (None, ProbeKind::EntryReturn) => out.push(site(p.offset, Program::Session)),
            (None, ProbeKind::Return) => out.push(site(p.offset, Program::Return)),
        }
    }
    out
}

/// Opens and loads the programs. `storage` holds libbpf's object for the skeleton's lifetime.
pub fn load<'obj>(
    storage: &'obj mut MaybeUninit<OpenObject>,
    opts: &LoadOptions,
) -> Result<UrecSkel<'obj>> {
    let mut open = UrecSkelBuilder::default()
        .open(storage)
        .context("opening urec's BPF object")?;
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .context("urec's BPF object has no .rodata")?;
    rodata.self_tgid = opts.self_tgid;
    rodata.filter_tgids = opts.filter as u8;
    rodata.filter_cgroup = opts.cgroup.is_some() as u8;
    rodata.stack_depth = opts.stack_depth;
    rodata.wakeup_bytes = u64::from(opts.ring_bytes / 4);
    // Sampling under pressure follows the ring's fill (urec.bpf.c, "Sampling"), looked at
    // after a sixteenth of the ring per CPU at most.
    rodata.ring_bytes = u64::from(opts.ring_bytes);
    rodata.check_bytes = u64::from(opts.ring_bytes / 16).max(4096);
    let buckets = urec_format::log_linear::kernel_buckets(opts.hist_bits);
    rodata.hist_bits = opts.hist_bits;
    rodata.hist_buckets = buckets as u32;
    rodata.count_only = opts.count_only as u8;
    // Only to measure what the Python code snapshots cost (docs/python-frames.md).
    rodata.py_snapshots = u8::from(std::env::var_os(NO_PY_SNAPSHOTS_ENV).is_none());
    // Only to compare with the frames in every event (docs/performance.md).
    rodata.stack_ids = u8::from(std::env::var_os(NO_STACK_IDS_ENV).is_none());
    if let Some(n) = std::env::var(TEST_STACK_STORE_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        open.maps.stacks.set_max_entries(n.max(1))?;
    }
    if opts.stack_depth == 0 || opts.count_only {
        // No stacks: no 4 MiB of stored stacks allocated up front either.
        open.maps.stacks.set_max_entries(1)?;
        open.maps.stacks_known.set_max_entries(1)?;
    }
    open.maps
        .events
        .set_max_entries(opts.ring_bytes)
        .context("sizing the ring buffer")?;
    let cpus = libbpf_rs::num_possible_cpus().context("counting the possible CPUs")?;
    open.maps
        .scratch
        .set_max_entries(cpus.max(1) as u32)
        .context("sizing the scratch buffers")?;
    let n = opts.probes.max(1);
    open.maps.probes.set_max_entries(n)?;
    open.maps.lost.set_max_entries(n * 2)?;
    open.maps.aggs.set_max_entries(n)?;
    open.maps
        .hist
        .set_max_entries(n * buckets as u32)
        .context("sizing the latency histograms")?;
    // With stacks, also for the Python walk's `py_procs` (a fork without exec).
    open.progs
        .urec_fork
        .set_autoload(opts.filter || opts.stack_depth > 0);
    crate::kunwind::prepare(&mut open, opts.kernel_dwarf)?;
    let skel = open.load().map_err(|err| {
        // Out of descriptors, libbpf's loader may report EINVAL: see the `fds` module.
        if let Some(limit) = crate::fds::short_of_fds() {
            return anyhow::anyhow!(
                "loading urec's BPF programs ({err}): {} from {limit}",
                crate::fds::MESSAGE
            );
        }
        anyhow::anyhow!(
            "the kernel refused urec's BPF programs ({err}); urec needs Linux 6.12 or newer \
             with BTF (CONFIG_DEBUG_INFO_BTF)"
        )
    })?;
    if let Some(fd) = opts.cgroup {
        // Before any probe is attached: the programs trace nothing until this is set.
        skel.maps
            .cgroup_filter
            .update(
                &0u32.to_ne_bytes(),
                &(fd as u32).to_ne_bytes(),
                MapFlags::ANY,
            )
            .context("setting the --cgroup filter")?;
    }
    Ok(skel)
}

/// Writes each probe's configuration into the `probes` map, before the probes are attached.
pub fn configure(skel: &UrecSkel<'_>, configs: &[(ProbeId, ProbeConfig)]) -> Result<()> {
    for (id, cfg) in configs {
        let bytes = cfg.to_bytes()?;
        skel.maps
            .probes
            .update(&id.to_ne_bytes(), &bytes, MapFlags::ANY)
            .with_context(|| format!("configuring probe {id}"))?;
    }
    Ok(())
}

/// Lets `tgid` (and, through the fork program, its later children) through the filter.
pub fn allow_tgid(skel: &UrecSkel<'_>, tgid: u32) -> Result<()> {
    skel.maps
        .tgids
        .update(&tgid.to_ne_bytes(), &[1], MapFlags::ANY)
        .with_context(|| format!("adding process {tgid} to the filter"))
}

/// The attached links; dropping them detaches.
pub struct Attached {
    links: Vec<Link>,
    /// Single uprobes had to be used (slow to detach).
    pub fallback: bool,
}

impl Attached {
    /// Number of links.
    pub fn links(&self) -> usize {
        self.links.len()
    }
}

/// Attaches every probe (and, when `follow_forks`, the program adding children of traced
/// processes to the filter) with multi links per binary.
///
/// When the kernel refuses a link, the refused offsets are found by bisection (attaching
/// halves of the link's offsets until single ones remain) and named in the error, whatever
/// else attached is detached: a recording never runs half-attached, and "this function cannot
/// be probed" is never mistaken for "this kernel has no uprobe_multi". Only when no single
/// offset is refused and the kernel says it does not support the link (EOPNOTSUPP, ENOSYS)
/// does it fall back to single uprobes (with `warn` told why).
pub fn attach(
    skel: &UrecSkel<'_>,
    probes: &[AttachProbe],
    follow_forks: bool,
    warn: &mut dyn FnMut(String),
) -> Result<Attached> {
    // The fork follower first: a child forked while the probes attach is already covered.
    let mut fork_link = Vec::new();
    if follow_forks {
        fork_link.push(
            skel.progs
                .urec_fork
                .attach()
                .context("attaching the fork follower (tp_btf/sched_process_fork)")?,
        );
    }
    // For tests of the fallback programs on a kernel that has uprobe_multi.
    if std::env::var_os("UREC_TEST_SINGLE_UPROBES").is_some() {
        let mut links = attach_single(skel, probes)?;
        links.extend(fork_link);
        return Ok(Attached {
            links,
            fallback: true,
        });
    }
    let sites = sites(probes);
    let groups = multi_groups(&sites);
    let mut links = Vec::with_capacity(groups.len() + 1);
    for group in &groups {
        let err = match attach_group(skel, group) {
            Ok(link) => {
                links.push(link);
                continue;
            }
            Err(err) => err,
        };
        // Out of descriptors is no refusal of an offset: bisecting would blame each in turn.
        if crate::fds::is_exhausted(&err) {
            return Err(anyhow::Error::new(err).context(format!(
                "attaching {} to {}",
                plural(group.members.len() as u64, "probe", "probes"),
                group.binary.display()
            )));
        }
        let refused = refused_in(skel, group);
        if !refused.is_empty() {
            let names: Vec<String> = refused
                .iter()
                .map(|(s, e)| format!("{} (file offset {:#x}: {e})", s.probe.name, s.offset))
                .collect();
            bail!(
                "the kernel refused to probe {} in {}: {}; nothing was recorded (urec checks \
                 first instructions before attaching, so this kernel refuses something urec \
                 thought it accepts: please report it)",
                plural(names.len() as u64, "function", "functions"),
                group.binary.display(),
                names.join(", ")
            );
        }
        if unsupported(&err) {
            if probes.iter().any(|p| p.go_returns.is_some()) {
                bail!(
                    "uprobe_multi links refused ({err:#}): the return probes of Go functions \
                     need them (a uretprobe would crash the Go runtime)"
                );
            }
            warn(format!(
                "uprobe_multi links refused ({err:#}); falling back to single uprobes, which \
                 take about 0.1 s each to detach"
            ));
            drop(links);
            let mut links = attach_single(skel, probes)?;
            links.extend(fork_link);
            return Ok(Attached {
                links,
                fallback: true,
            });
        }
        return Err(anyhow::Error::new(err).context(format!(
            "attaching {} to {} with one link",
            plural(group.members.len() as u64, "probe", "probes"),
            group.binary.display()
        )));
    }
    links.extend(fork_link);
    Ok(Attached {
        links,
        fallback: false,
    })
}

/// The sites of one multi link: one binary, one program.
struct MultiGroup<'a> {
    binary: PathBuf,
    program: Program,
    members: Vec<Site<'a>>,
}

/// The sites grouped by (binary, program), in a stable order.
fn multi_groups<'a>(sites: &[Site<'a>]) -> Vec<MultiGroup<'a>> {
    let mut groups: Vec<MultiGroup<'a>> = Vec::new();
    for s in sites {
        match groups
            .iter_mut()
            .find(|g| g.binary == s.probe.binary && g.program == s.program)
        {
            Some(g) => g.members.push(*s),
            None => groups.push(MultiGroup {
                binary: s.probe.binary.clone(),
                program: s.program,
                members: vec![*s],
            }),
        }
    }
    groups
}

fn attach_group(skel: &UrecSkel<'_>, group: &MultiGroup<'_>) -> Result<Link, libbpf_rs::Error> {
    attach_members(skel, &group.binary, group.program, &group.members)
}

fn attach_members(
    skel: &UrecSkel<'_>,
    binary: &std::path::Path,
    program: Program,
    members: &[Site<'_>],
) -> Result<Link, libbpf_rs::Error> {
    let (prog, retprobe, session) = match program {
        Program::Session => (&skel.progs.urec_session, false, true),
        Program::Entry => (&skel.progs.urec_entry, false, false),
        Program::Return => (&skel.progs.urec_return, true, false),
        // On a Go `ret` the return program runs as a plain uprobe.
        Program::GoReturnOnly => (&skel.progs.urec_return, false, false),
        Program::GoEntry => (&skel.progs.urec_go_entry, false, false),
        Program::GoReturn => (&skel.progs.urec_go_return, false, false),
    };
    // One array for the whole link or none; 0 means "no semaphore" for a member (the kernel
    // reads the offsets one by one, and 0 is its own "none").
    let ref_ctr_offsets = if members.iter().any(|s| s.probe.ref_ctr_offset.is_some()) {
        members
            .iter()
            .map(|s| s.probe.ref_ctr_offset.unwrap_or(0) as usize)
            .collect()
    } else {
        Vec::new()
    };
    let opts = UprobeMultiOpts {
        offsets: members.iter().map(|s| s.offset as usize).collect(),
        ref_ctr_offsets,
        cookies: members.iter().map(|s| u64::from(s.probe.id)).collect(),
        retprobe,
        session,
        ..Default::default()
    };
    prog.attach_uprobe_multi_with_opts(-1, binary, "", opts)
}

/// The members of a refused group that the kernel refuses on their own, with its answer:
/// halves that attach are detached again and cleared, halves that fail are split further.
fn refused_in<'a>(
    skel: &UrecSkel<'_>,
    group: &MultiGroup<'a>,
) -> Vec<(Site<'a>, libbpf_rs::Error)> {
    fn bisect<'a>(
        skel: &UrecSkel<'_>,
        group: &MultiGroup<'a>,
        members: &[Site<'a>],
        out: &mut Vec<(Site<'a>, libbpf_rs::Error)>,
    ) {
        match attach_members(skel, &group.binary, group.program, members) {
            Ok(link) => drop(link),
            Err(e) if members.len() == 1 => out.push((members[0], e)),
            Err(_) => {
                let (a, b) = members.split_at(members.len() / 2);
                bisect(skel, group, a, out);
                bisect(skel, group, b, out);
            }
        }
    }
    let mut out = Vec::new();
    bisect(skel, group, &group.members, &mut out);
    // A lone refusal that is the kernel lacking multi links is not a refused offset.
    if out.len() == group.members.len() && out.iter().all(|(_, e)| unsupported(e)) {
        out.clear();
    }
    out
}

/// The kernel does not support the link type (EOPNOTSUPP, ENOSYS), as opposed to refusing
/// an offset (ENOTSUPP, errno 524, for an instruction it cannot probe).
fn unsupported(err: &libbpf_rs::Error) -> bool {
    err.kind() == libbpf_rs::ErrorKind::Unsupported
}

fn attach_single(skel: &UrecSkel<'_>, probes: &[AttachProbe]) -> Result<Vec<Link>> {
    if let Some(p) = probes.iter().find(|p| p.go_returns.is_some()) {
        bail!(
            "{} is a Go function, whose return probes need uprobe_multi links (a uretprobe \
             would crash the Go runtime)",
            p.name
        );
    }
    let mut links = Vec::new();
    for p in probes {
        let id = u64::from(p.id);
        let mut one = |entry: bool, cookie: u64| -> Result<()> {
            let prog = if entry {
                &skel.progs.urec_entry_single
            } else {
                &skel.progs.urec_return_single
            };
            let opts = UprobeOpts {
                cookie,
                retprobe: !entry,
                ref_ctr_offset: p.ref_ctr_offset.unwrap_or(0) as usize,
                ..Default::default()
            };
            let link = prog
                .attach_uprobe_with_opts(-1, &p.binary, p.offset as usize, opts)
                .with_context(|| {
                    format!(
                        "attaching {} ({} probe) to {} at file offset {:#x}",
                        p.name,
                        if entry { "entry" } else { "return" },
                        p.binary.display(),
                        p.offset
                    )
                })?;
            links.push(link);
            Ok(())
        };
        match p.kind {
            ProbeKind::EntryReturn => {
                one(true, id)?;
                one(false, id)?;
            }
            ProbeKind::Entry => one(true, id | COOKIE_ONE_SIDED)?,
            ProbeKind::Return => one(false, id | COOKIE_ONE_SIDED)?,
        }
    }
    if links.is_empty() {
        bail!("no probe to attach");
    }
    Ok(links)
}

/// Failed ring-buffer reservations so far, per (probe, kind), summed over CPUs; only non-zero
/// counts.
pub fn lost_counts(skel: &UrecSkel<'_>, probes: u32) -> Result<Vec<(ProbeId, EventKind, u64)>> {
    let mut out = Vec::new();
    for probe in 0..probes {
        for (kind, ek) in [
            (KIND_ENTRY, EventKind::Entry),
            (KIND_RETURN, EventKind::Return),
        ] {
            let key = probe * 2 + u32::from(kind);
            let total =
                percpu_sum(&skel.maps.lost, key).context("reading the lost-event counters")?;
            if total > 0 {
                out.push((probe, ek, total));
            }
        }
    }
    Ok(out)
}

/// A per-CPU `u64` counter at `key`, summed over CPUs (0 when absent).
fn percpu_sum<M: libbpf_rs::MapCore>(map: &M, key: u32) -> Result<u64> {
    let Some(per_cpu) = map.lookup_percpu(&key.to_ne_bytes(), MapFlags::ANY)? else {
        return Ok(0);
    };
    Ok(per_cpu
        .iter()
        .filter_map(|v| v.get(..8))
        .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
        .sum())
}

/// Ids of the uprobe links (multi or single, anyone's) currently attached to `path`: what a
/// test checks to prove nothing stayed attached after urec died.
pub fn links_on(path: &std::path::Path) -> Vec<u32> {
    use libbpf_rs::query::{LinkInfoIter, LinkTypeInfo, PerfEventType};
    LinkInfoIter::default()
        .filter(|link| match &link.info {
            LinkTypeInfo::UprobeMulti(m) => m.path.as_deref() == Some(path),
            LinkTypeInfo::PerfEvent(p) => match &p.event_type {
                PerfEventType::Uprobe { file_name, .. } => {
                    file_name.as_deref() == Some(path.as_os_str())
                }
                _ => false,
            },
            _ => false,
        })
        .map(|link| link.id)
        .collect()
}
