//! What a caller asks of a recording, checked and planned: the typed request the CLI fills
//! from its flags ([`RecordRequest`]), and the steps before anything is attached that
//! `urec record` and `urec top` share ([`TargetRequest`], [`warn_resolution`]). Every check
//! here fails with [`RecordError::Usage`] or [`RecordError::Spec`] before the kernel or the
//! output file is touched, in the order the user reads the command line's mistakes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use urec_format::StackMode;
use urec_probe::{InsnHandling, ResolveOptions};

use crate::error::{usage, RecordError};
use crate::{PlannedProbe, RecordOptions, Target, Verbosity};

/// `-g`: how to capture user stacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallGraph {
    /// Per probe: frame pointers where the probed binary and the traced program keep them,
    /// DWARF otherwise, walked in the kernel as `KernelDwarf` does.
    Auto,
    /// Frame-pointer walk in the kernel.
    FramePointer,
    /// Registers and a copy of the stack top, unwound with the binaries' CFI by the recorder.
    Dwarf,
    /// DWARF stacks walked in the kernel over the binaries' unwind tables (`crate::kunwind`),
    /// `Dwarf`'s copy and unwind where the walk cannot finish. Recorded as `Dwarf` stacks (the
    /// same frames): the data file does not tell them apart.
    KernelDwarf,
    /// No stacks.
    None,
}

/// The most bytes of stack a `-g dwarf` event copies: a multiple of 8 of at most
/// [`crate::MAX_STACK_SIZE`]. Checked once, where the flag's value is taken
/// ([`StackSize::from_flag`]); the recorder relies on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackSize(u32);

impl StackSize {
    /// The largest copy, what `64K` means.
    pub const MAX: StackSize = StackSize(crate::MAX_STACK_SIZE);

    /// `--stack-size`'s value in bytes: between 8 and 64K, where 64K, what a user types for
    /// "the most", means the largest copy, 65528 bytes (the programs' copy length is masked
    /// to below 64 KiB); rounded down to a multiple of 8.
    pub fn from_flag(bytes: u64) -> Result<StackSize, RecordError> {
        if !(8..=64 << 10).contains(&bytes) {
            return Err(usage(format!(
                "--stack-size {bytes}: must be between 8 and 64K ({} bytes)",
                crate::MAX_STACK_SIZE
            )));
        }
        Ok(StackSize(
            (bytes.min(u64::from(crate::MAX_STACK_SIZE)) as u32) & !7,
        ))
    }

    /// In bytes.
    pub fn bytes(self) -> u32 {
        self.0
    }
}

/// Whom to trace, as `-a`, `-p`, `--cgroup` and `-- COMMAND` ask (shared by `urec record` and
/// `urec top`).
#[derive(Clone, Debug, Default)]
pub struct TargetRequest {
    /// `-a`.
    pub all: bool,
    /// `-p`.
    pub pids: Vec<u32>,
    /// `--cgroup`.
    pub cgroup: Option<PathBuf>,
    /// `-- COMMAND`: the program as the user wrote it, then its arguments.
    pub command: Vec<String>,
}

impl TargetRequest {
    /// The flags choosing whom to trace, checked before anything else.
    pub fn check_flags(&self) -> Result<(), RecordError> {
        if !self.pids.is_empty() && (self.all || !self.command.is_empty()) {
            return Err(usage("-p cannot be combined with -a or a COMMAND"));
        }
        if let Some(cgroup) = &self.cgroup {
            crate::cgroup::open(cgroup).map_err(RecordError::Usage)?;
        }
        Ok(())
    }

    /// Parses and resolves every `-e` spec: a bad one is a usage error, before anything is
    /// attached. `-p` processes' TARGETs are looked up in their own roots.
    pub fn resolve(
        &self,
        events: &[String],
        force: bool,
    ) -> Result<urec_probe::Resolution, RecordError> {
        let specs = events
            .iter()
            .map(|e| urec_probe::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        // Resolution opens every binary named: at a tiny open-files limit that is where it
        // runs out, and the limit (exit 1), not the spec (exit 2), is what to name.
        let opts = ResolveOptions {
            force,
            roots: roots_of(&self.pids),
        };
        urec_probe::resolve(&specs, &opts).map_err(|e| {
            match crate::fds::explain(e.into()).downcast::<urec_probe::SpecError>() {
                Ok(spec) => RecordError::Spec(spec),
                Err(other) => RecordError::Failed(other),
            }
        })
    }

    /// Checks every `-p` pid (a live process urec can trace) and says whom to trace.
    pub fn target(&self) -> Result<Target, RecordError> {
        check_pids(&self.pids)?;
        Ok(if let Some(first) = self.command.first() {
            let program = crate::command::find_program(first)
                .ok_or_else(|| usage(format!("{first}: command not found")))?;
            Target::Command {
                program,
                argv: self.command.clone(),
                all: self.all,
            }
        } else if !self.pids.is_empty() {
            Target::Pids(self.pids.clone())
        } else {
            Target::All
        })
    }
}

/// What the user asked of `urec record`, as its flags say it, not yet checked.
#[derive(Clone, Debug)]
pub struct RecordRequest {
    /// `-e`: the probe specs.
    pub events: Vec<String>,
    /// Whom to trace.
    pub target: TargetRequest,
    /// `-o`.
    pub output: PathBuf,
    /// `-d`.
    pub duration: Option<Duration>,
    /// `-g`.
    pub call_graph: CallGraph,
    /// `--stack-depth` (1 to 127).
    pub stack_depth: u32,
    /// `--stack-size`, checked.
    pub stack_size: StackSize,
    /// `--force`.
    pub force: bool,
    /// `--buffer-size`, in bytes.
    pub buffer_size: u64,
    /// Not `--no-symbols`: keep the mapped files open for the symbols step.
    pub keep_files: bool,
    /// `-q`, `-v`.
    pub verbosity: Verbosity,
    /// urec's own command line, for the file's header.
    pub command_line: Vec<String>,
}

impl RecordRequest {
    /// Checks the request and plans every probe: the options [`crate::record`] takes. With
    /// `-v`, says how each probe will take its stacks and where it is attached; warns about
    /// what resolution found.
    pub fn plan(self) -> Result<RecordOptions, RecordError> {
        let stack_mode = match self.call_graph {
            CallGraph::Auto | CallGraph::FramePointer => StackMode::FramePointer,
            CallGraph::None => StackMode::None,
            CallGraph::Dwarf | CallGraph::KernelDwarf => StackMode::Dwarf,
        };
        self.target.check_flags()?;
        crate::output::check(&self.output).map_err(RecordError::Usage)?;
        let verbosity = self.verbosity;
        let resolution = self.target.resolve(&self.events, self.force)?;
        // -g auto: the traced programs' executables are the callers' binaries we know of.
        let mut callers: Vec<PathBuf> = Vec::new();
        if self.call_graph == CallGraph::Auto {
            if let Some(program) = self
                .target
                .command
                .first()
                .and_then(|c| crate::command::find_program(c))
            {
                // A script's frames are its interpreter's.
                callers.push(crate::command::script_interpreter(&program).unwrap_or(program));
            }
            for &pid in &self.target.pids {
                // The file itself, wherever its path leads (another mount namespace included).
                callers.push(PathBuf::from(format!("/proc/{pid}/exe")));
            }
        }
        let walk_allowed = kernel_walk_allowed();
        // Judged once for all probes: the census reads every function start of the file.
        let callers_keep_fp = callers.iter().all(|c| urec_probe::keeps_frame_pointers(c));
        let mut probes: Vec<PlannedProbe> = Vec::with_capacity(resolution.probes.len());
        for p in &resolution.probes {
            let mode = match self.call_graph {
                CallGraph::Auto => crate::plan::auto_stack_mode(p, callers_keep_fp),
                _ => stack_mode,
            };
            let planned = crate::plan(p, mode).map_err(|e| usage(e.to_string()))?;
            if verbosity == Verbosity::Verbose && self.call_graph == CallGraph::Auto {
                let how = match mode {
                    StackMode::Dwarf if walk_allowed => "DWARF, walked in the kernel",
                    _ => mode_name(mode),
                };
                eprintln!("urec: {}: stacks by {how}", p.probe.name);
            }
            if verbosity == Verbosity::Verbose {
                eprintln!("urec: {}: {}", p.probe.name, site_line(p));
            }
            probes.push(planned);
        }
        warn_resolution(&resolution, verbosity);
        let target = self.target.target()?;
        crate::session::check_ring_fits(
            &probes,
            stack_mode,
            self.stack_depth,
            self.stack_size.bytes(),
            self.buffer_size,
        )
        .map_err(RecordError::Usage)?;
        // An existing -o is renamed to FILE.old: never a file the recording needs.
        let mut needed: Vec<(&str, PathBuf)> = resolution
            .probes
            .iter()
            .map(|p| ("a probed binary", p.open_path.clone()))
            .collect();
        if let Target::Command { program, .. } = &target {
            needed.push(("the command", program.clone()));
        }
        if let Some((what, _)) = needed.iter().find(|(_, p)| same_file(p, &self.output)) {
            return Err(usage(format!(
                "-o {}: that is {what}, which would be renamed to .old; choose another file",
                self.output.display()
            )));
        }
        crate::output::check_kept(&self.output).map_err(RecordError::Usage)?;
        // -g auto walks its DWARF stacks in the kernel (the copy only where the walk cannot
        // finish); -g dwarf keeps the copy for every event, to compare.
        let kernel_dwarf = self.call_graph == CallGraph::KernelDwarf
            || (self.call_graph == CallGraph::Auto
                && walk_allowed
                && probes
                    .iter()
                    .any(|p| p.probe.stack_mode == StackMode::Dwarf));
        Ok(RecordOptions {
            probes,
            target,
            output: self.output,
            duration: self.duration,
            stack_mode,
            stack_depth: self.stack_depth,
            stack_size: self.stack_size,
            buffer_size: self.buffer_size,
            verbosity,
            command_line: self.command_line,
            keep_files: self.keep_files,
            cgroup: self.target.cgroup,
            kernel_dwarf,
        })
    }
}

/// Keeps `-g auto`'s DWARF stacks on the copy-and-unwind path of `-g dwarf`: a way out should
/// the in-kernel walk misbehave on some program, and what bench/run compares it with.
pub const NO_KERNEL_WALK_ENV: &str = "UREC_NO_KERNEL_WALK";

fn kernel_walk_allowed() -> bool {
    std::env::var_os(NO_KERNEL_WALK_ENV).is_none()
}

fn mode_name(mode: StackMode) -> &'static str {
    match mode {
        StackMode::None => "none",
        StackMode::FramePointer => "frame pointers",
        StackMode::Dwarf => "DWARF",
    }
}

/// The resolution's warnings, and the probes the kernel single-steps (shared with `urec top`).
pub fn warn_resolution(resolution: &urec_probe::Resolution, verbosity: Verbosity) {
    if verbosity != Verbosity::Quiet {
        for w in &resolution.warnings {
            eprintln!("urec: warning: {}", urec_format::printable(w));
        }
        // One line for all of them: a glob over `str*` single-steps dozens. Only the probes
        // that still single-step after site selection, each with the reason.
        let stepped: Vec<String> = resolution
            .probes
            .iter()
            .filter(|p| p.site.handling == InsnHandling::SingleStepped)
            .map(|p| match &p.site.why_not {
                Some(why) => format!("{} ({why})", p.probe.name),
                None => p.probe.name.clone(),
            })
            .collect();
        if verbosity == Verbosity::Verbose {
            match crate::regs::uprobe_programs_may_write_registers() {
                Some(true) => eprintln!(
                    "urec: this kernel lets uprobe programs write registers: executing a \
                     single-stepped instruction in BPF would avoid its second trap (not built \
                     yet: urec still lets the kernel single-step it)"
                ),
                Some(false) => eprintln!(
                    "urec: this kernel refuses register writes from uprobe programs, so a \
                     single-stepped instruction cannot be executed in BPF instead"
                ),
                None => {}
            }
        }
        if !stepped.is_empty() {
            eprintln!(
                "urec: warning: the kernel single-steps the probed instruction of {}, a second \
                 trap per hit (tens of times an emulated one in a VM; `-v` prints the measured \
                 cost): {}",
                urec_format::plural(stepped.len() as u64, "probe", "probes"),
                urec_format::printable(&urec_format::name_list(&stepped, 8))
            );
        }
    }
}

/// Where a probe is attached, for `-v`: `site +0x4 (push %rbp, emulated)`.
fn site_line(p: &urec_probe::ResolvedProbe) -> String {
    let path = match p.site.handling {
        InsnHandling::Emulated => "emulated",
        InsnHandling::SingleStepped => "single-stepped",
        _ => "unknown",
    };
    let insn = urec_probe::site::insn_text_at(&p.open_path, p.site_offset, p.site.vaddr)
        .unwrap_or_default();
    let at = match p.site.vaddr.distance_from(p.probe.vaddr) {
        // (Not "attached": tests wait for that word, which urec prints once probes are.)
        Some(0) if !p.at_function_start => "on the probed instruction".to_string(),
        Some(0) => "at its first instruction".to_string(),
        Some(d) => format!("site +{d:#x}"),
        None => format!("site {:#x}", p.site.vaddr),
    };
    let mut line = format!("{at} (file offset {:#x}, `{insn}`, {path})", p.site_offset);
    if let Some(why) = &p.site.why_not {
        line.push_str(&format!(": not moved, {why}"));
    } else if p.site.sp_delta > 0 {
        line.push_str(&format!(
            "; entry only, the return address {} bytes above sp",
            p.site.sp_delta
        ));
    }
    urec_format::printable(&line).into_owned()
}

/// The thread group (process) `tid` belongs to, from `/proc/TID/status`.
fn thread_group_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Where `-p` processes' TARGETs are looked up ([`ResolveOptions::roots`]): empty when every
/// process sees the files as urec does (same mount namespace and root); else the root of each,
/// `/proc/PID/root` for a process in another mount namespace or with another root (a
/// container), `/` for one that sees the host's. Processes sharing a root are asked once.
fn roots_of(pids: &[u32]) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let ident = |root: &str, ns: &str| {
        let r = std::fs::metadata(root).ok().map(|m| (m.dev(), m.ino()));
        let n = std::fs::metadata(ns).ok().map(|m| (m.dev(), m.ino()));
        (r, n)
    };
    let host = ident("/", "/proc/self/ns/mnt");
    let mut seen = Vec::new();
    let mut roots = Vec::new();
    for &pid in pids {
        let id = ident(&format!("/proc/{pid}/root"), &format!("/proc/{pid}/ns/mnt"));
        // Unreadable (the process is gone, checked later): the host's view.
        let id = if id.0.is_none() { host } else { id };
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        roots.push(if id == host {
            PathBuf::from("/")
        } else {
            PathBuf::from(format!("/proc/{pid}/root"))
        });
    }
    if roots.iter().all(|r| r == Path::new("/")) {
        roots.clear();
    }
    roots
}

/// Whether two paths name the same existing file (device and inode, through symlinks).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Every `-p` pid is a live process that urec can trace.
fn check_pids(pids: &[u32]) -> Result<(), RecordError> {
    for &pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return Err(usage(format!("-p {pid}: no such process")));
        };
        // urec skips its own events, so it would wait for its own exit.
        if pid == std::process::id() {
            return Err(usage(format!(
                "-p {pid}: that is urec itself, which is never traced"
            )));
        }
        // The filter and the exit watch work on processes: a thread's id matches neither.
        if let Some(tgid) = thread_group_of(pid).filter(|&tgid| tgid != pid) {
            return Err(usage(format!(
                "-p {pid}: a thread of process {tgid}; use -p {tgid} (its threads are traced \
                 with it)"
            )));
        }
        // It would never call the probed code, and never exit: the recording would only end
        // on Ctrl-C, with nothing in it.
        if crate::procfs::is_kernel_thread(&stat) {
            return Err(usage(format!(
                "-p {pid}: a kernel thread, which runs no user code"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_sizes() {
        assert_eq!(
            StackSize::from_flag(64 << 10).map(StackSize::bytes).ok(),
            Some(65528)
        );
        assert_eq!(
            StackSize::from_flag(8192).map(StackSize::bytes).ok(),
            Some(8192)
        );
        assert_eq!(
            StackSize::from_flag(100).map(StackSize::bytes).ok(),
            Some(96)
        );
        for bad in [0, 7, (64 << 10) + 1] {
            assert!(
                StackSize::from_flag(bad).is_err_and(|e| e.is_usage()),
                "{bad}"
            );
        }
    }
}
