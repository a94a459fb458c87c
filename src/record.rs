//! `urec record`: parses and resolves every probe spec first (a bad one exits 2 with nothing
//! attached and no file touched), turns the flags into [`urec_record::RecordOptions`], records,
//! and prints the summary. With `-- COMMAND` the exit status is the command's.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use urec_format::plural;
use urec_probe::{InsnHandling, ResolveOptions};
use urec_record::{RecordOptions, StackMode, Target, Verbosity};

use crate::UsageError;

/// Whom to trace: the flags `urec record` and `urec top` share (with `-- COMMAND`, which each
/// keeps last).
#[derive(clap::Args, Debug)]
pub struct TargetArgs {
    /// Trace every process, including ones started later (the default without -p or COMMAND).
    #[arg(short = 'a', long = "all-processes")]
    pub all: bool,
    /// Trace only these processes (comma-separated), their threads and later children.
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "PID[,PID...]",
        value_delimiter = ','
    )]
    pub pids: Vec<u32>,
    /// Trace only tasks in this cgroup v2 directory or below it (an absolute path, e.g. a
    /// container's or a systemd unit's); combines with -a, -p and COMMAND.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,
}

/// Command-line arguments of `urec record`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  urec record -e bash:readline -a -d 10\n  \
    urec record -e 'libc:malloc size=arg1:u64' -- ls -l\n  \
    urec record -e 'bash:readline%return cmd=+0($retval):string' -p 1234")]
pub struct Args {
    /// Probe spec: `TARGET:FUNCTION[%return|%entry] [NAME=FETCH[:TYPE] ...]` (repeatable).
    #[arg(short = 'e', long = "event", value_name = "SPEC", required = true)]
    pub events: Vec<String>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Output file; an existing one is kept as FILE.old.
    #[arg(short = 'o', long = "output", default_value = "urec.data")]
    pub output: PathBuf,
    /// Stop after this long: a number of seconds, or with a unit (500ms, 10s, 5m, 1h).
    #[arg(short = 'd', long = "duration", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How to capture user stacks.
    #[arg(short = 'g', long = "call-graph", value_enum, default_value = "auto")]
    pub call_graph: CallGraph,
    /// Frames per user stack (at most 127).
    #[arg(long, default_value_t = 127, value_parser = clap::value_parser!(u32).range(1..=127))]
    pub stack_depth: u32,
    /// The most bytes of user stack -g dwarf copies per event, from the stack pointer to the
    /// end of the thread's stack (bytes, or with K; at most 64K, which means 65528; rounded
    /// down to a multiple of 8): a stack within it is whole, a shallow one costs what it is.
    #[arg(long, value_name = "SIZE", default_value = "64K", value_parser = parse_size)]
    pub stack_size: u64,
    /// Allow a glob to match more than 1000 functions, and a 0xADDR in no known function (whose
    /// instruction boundaries urec cannot check). Never allows a probe inside an instruction
    /// or on one the kernel refuses or would emulate wrongly.
    #[arg(long)]
    pub force: bool,
    /// BPF ring buffer size (bytes, or with K/M/G), rounded up to a power of two.
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = parse_size)]
    pub buffer_size: u64,
    /// Do not name the frames into the file after recording (`urec archive` can do it later).
    #[arg(long)]
    pub no_symbols: bool,
    /// Print only errors.
    #[arg(short = 'q', long, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Also say what was attached and how.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// The command to run and trace (after `--`).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `-g`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallGraph {
    /// Per probe: frame pointers where the probed binary and the traced program keep them,
    /// DWARF otherwise.
    Auto,
    /// Frame-pointer walk in the kernel.
    Fp,
    /// Registers and a copy of the stack top, unwound with the binaries' CFI by the recorder.
    Dwarf,
    /// No stacks.
    None,
}

fn mode_name(mode: StackMode) -> &'static str {
    match mode {
        StackMode::None => "none",
        StackMode::FramePointer => "frame pointers",
        StackMode::Dwarf => "DWARF",
    }
}

/// `10`, `1.5s`, `500ms`, `5m`, `1h`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (10, 500ms, 10s, 5m, 1h)"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("{text:?}: the duration must be positive"));
    }
    Duration::try_from_secs_f64(v * scale).map_err(|e| format!("{text:?}: {e}"))
}

/// `4096`, `64K`, `16M`, `1G` (binary units; an optional `B`/`iB`).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let v: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size (4096, 64K, 16M, 1G)"))?;
    v.checked_shl(shift)
        .filter(|&b| b >> shift == v && b > 0)
        .ok_or_else(|| format!("{text:?}: bad size"))
}

/// The hint for `urec record -e X /usr/bin/true`, where the command lacks its `--`: clap only
/// says "unexpected argument", which does not tell a perf or strace user what urec wants.
/// `cmd` is `urec record`'s clap command (to know which options take a value) and `argv` the
/// whole command line. `None` when the unexpected argument is not where a command would start.
pub fn missing_dashes_hint(
    cmd: &clap::Command,
    argv: &[String],
    unexpected: &str,
) -> Option<String> {
    let record_at = argv.iter().position(|a| a == "record")?;
    let takes_value = |arg: &clap::Arg| arg.get_action().takes_values();
    let long_takes_value = |name: &str| {
        cmd.get_arguments()
            .any(|a| takes_value(a) && a.get_long() == Some(name))
    };
    let short_takes_value = |c: char| {
        cmd.get_arguments()
            .any(|a| takes_value(a) && a.get_short() == Some(c))
    };
    let mut i = record_at + 1;
    while i < argv.len() {
        let arg = argv[i].as_str();
        if arg == "--" {
            return None;
        }
        if let Some(long) = arg.strip_prefix("--") {
            if !long.contains('=') && long_takes_value(long) {
                i += 1; // its value is the next word
            }
        } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            // `-ae X`: the first short option taking a value takes the rest of the word, or
            // the next word when it ends the word.
            if let Some((at, _)) = shorts.char_indices().find(|&(_, c)| short_takes_value(c)) {
                if at + 1 == shorts.len() {
                    i += 1;
                }
            }
        } else {
            if arg != unexpected {
                return None;
            }
            // Named `urec`, as the usage line does, however it was invoked.
            let words: Vec<String> = std::iter::once(&"urec".to_string())
                .chain(&argv[record_at..i])
                .chain(std::iter::once(&"--".to_string()))
                .chain(&argv[i..])
                .map(|w| urec_format::shell_word(w))
                .collect();
            return Some(format!(
                "to trace a command, put `--` before it: {}",
                words.join(" ")
            ));
        }
        i += 1;
    }
    None
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
    if roots.iter().all(|r| r == std::path::Path::new("/")) {
        roots.clear();
    }
    roots
}

/// Whether two paths name the same existing file (device and inode, through symlinks).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The flags choosing whom to trace, checked before anything else (shared with `urec top`).
pub(crate) fn check_target_flags(
    pids: &[u32],
    all: bool,
    command: &[String],
    cgroup: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if !pids.is_empty() && (all || !command.is_empty()) {
        return Err(UsageError("-p cannot be combined with -a or a COMMAND".into()).into());
    }
    if let Some(cgroup) = cgroup {
        urec_record::cgroup::open(cgroup).map_err(UsageError)?;
    }
    Ok(())
}

/// Parses and resolves every `-e` spec (shared with `urec top`): a bad one is a usage error,
/// before anything is attached.
pub(crate) fn resolve_specs(
    events: &[String],
    force: bool,
    pids: &[u32],
) -> anyhow::Result<urec_probe::Resolution> {
    // Everything that can be wrong with the specs, before anything else happens.
    let specs = events
        .iter()
        .map(|e| urec_probe::parse(e))
        .collect::<Result<Vec<_>, _>>()?;
    // Resolution opens every binary named: at a tiny open-files limit that is where it runs out,
    // and the limit (exit 1), not the spec (exit 2), is what to name.
    let opts = ResolveOptions {
        force,
        roots: roots_of(pids),
    };
    urec_probe::resolve(&specs, &opts).map_err(|e| urec_record::fds::explain(e.into()))
}

/// The resolution's warnings, and the probes the kernel single-steps (shared with `urec top`).
pub(crate) fn warn_resolution(resolution: &urec_probe::Resolution, verbosity: Verbosity) {
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
            match urec_record::regs::uprobe_programs_may_write_registers() {
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
                "urec: warning: the kernel single-steps the probed instruction of {}, about \
                 10x the cost per hit of an emulated one: {}",
                urec_format::plural(stepped.len() as u64, "probe", "probes"),
                urec_format::printable(&urec_format::name_list(&stepped, 8))
            );
        }
    }
}

/// Every `-p` pid is a live process that urec can trace (shared with `urec top`).
pub(crate) fn check_pids(pids: &[u32]) -> anyhow::Result<()> {
    for &pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return Err(UsageError(format!("-p {pid}: no such process")).into());
        };
        // urec skips its own events, so it would wait for its own exit.
        if pid == std::process::id() {
            return Err(UsageError(format!(
                "-p {pid}: that is urec itself, which is never traced"
            ))
            .into());
        }
        // The filter and the exit watch work on processes: a thread's id matches neither.
        if let Some(tgid) = thread_group_of(pid).filter(|&tgid| tgid != pid) {
            return Err(UsageError(format!(
                "-p {pid}: a thread of process {tgid}; use -p {tgid} (its threads are traced \
                 with it)"
            ))
            .into());
        }
        // It would never call the probed code, and never exit: the recording would only end
        // on Ctrl-C, with nothing in it.
        if urec_record::procfs::is_kernel_thread(&stat) {
            return Err(UsageError(format!(
                "-p {pid}: a kernel thread, which runs no user code"
            ))
            .into());
        }
    }
    Ok(())
}

/// Whom `-a`, `-p` and `-- COMMAND` ask to trace (shared with `urec top`).
pub(crate) fn target_of(pids: &[u32], all: bool, command: &[String]) -> anyhow::Result<Target> {
    Ok(if !command.is_empty() {
        let program = urec_record::command::find_program(&command[0])
            .ok_or_else(|| UsageError(format!("{}: command not found", command[0])))?;
        Target::Command {
            program,
            argv: command.to_vec(),
            all,
        }
    } else if !pids.is_empty() {
        Target::Pids(pids.to_vec())
    } else {
        Target::All
    })
}

/// Runs `urec record`; returns the exit status.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let stack_mode = match args.call_graph {
        CallGraph::Auto | CallGraph::Fp => StackMode::FramePointer,
        CallGraph::None => StackMode::None,
        CallGraph::Dwarf => StackMode::Dwarf,
    };
    // 64K is what a user types for "the most": it means the largest copy, 65528 bytes (the
    // programs' copy length is masked to below 64 KiB).
    if args.stack_size > 64 << 10 || args.stack_size < 8 {
        return Err(UsageError(format!(
            "--stack-size {}: must be between 8 and 64K ({} bytes)",
            args.stack_size,
            urec_record::MAX_STACK_SIZE
        ))
        .into());
    }
    let stack_size = (args.stack_size.min(u64::from(urec_record::MAX_STACK_SIZE)) as u32) & !7;
    check_target_flags(
        &args.target.pids,
        args.target.all,
        &args.command,
        args.target.cgroup.as_deref(),
    )?;
    urec_record::output::check(&args.output).map_err(UsageError)?;
    let verbosity = if args.quiet {
        Verbosity::Quiet
    } else if args.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };

    let resolution = resolve_specs(&args.events, args.force, &args.target.pids)?;
    // -g auto: the traced programs' executables are the callers' binaries we know of.
    let mut callers: Vec<PathBuf> = Vec::new();
    if args.call_graph == CallGraph::Auto {
        if let Some(program) = args
            .command
            .first()
            .and_then(|c| urec_record::command::find_program(c))
        {
            // A script's frames are its interpreter's.
            callers.push(urec_record::command::script_interpreter(&program).unwrap_or(program));
        }
        for &pid in &args.target.pids {
            // The file itself, wherever its path leads (another mount namespace included).
            callers.push(PathBuf::from(format!("/proc/{pid}/exe")));
        }
    }
    // Judged once for all probes: the census reads every function start of the file.
    let callers_keep_fp = callers.iter().all(|c| urec_probe::keeps_frame_pointers(c));
    let mut probes = Vec::with_capacity(resolution.probes.len());
    for p in &resolution.probes {
        let mode = match args.call_graph {
            CallGraph::Auto => urec_record::plan::auto_stack_mode(p, callers_keep_fp),
            _ => stack_mode,
        };
        let planned = urec_record::plan(p, mode).map_err(|e| UsageError(e.to_string()))?;
        if verbosity == Verbosity::Verbose && args.call_graph == CallGraph::Auto {
            eprintln!("urec: {}: stacks by {}", p.probe.name, mode_name(mode));
        }
        if verbosity == Verbosity::Verbose {
            eprintln!("urec: {}: {}", p.probe.name, site_line(p));
        }
        probes.push(planned);
    }
    warn_resolution(&resolution, verbosity);
    check_pids(&args.target.pids)?;
    let target = target_of(&args.target.pids, args.target.all, &args.command)?;
    urec_record::check_ring_fits(
        &probes,
        stack_mode,
        args.stack_depth,
        stack_size,
        args.buffer_size,
    )
    .map_err(UsageError)?;
    // An existing -o is renamed to FILE.old: never a file the recording needs.
    let mut needed: Vec<(&str, PathBuf)> = resolution
        .probes
        .iter()
        .map(|p| ("a probed binary", p.open_path.clone()))
        .collect();
    if let Target::Command { program, .. } = &target {
        needed.push(("the command", program.clone()));
    }
    if let Some((what, _)) = needed.iter().find(|(_, p)| same_file(p, &args.output)) {
        return Err(UsageError(format!(
            "-o {}: that is {what}, which would be renamed to .old; choose another file",
            args.output.display()
        ))
        .into());
    }
    let workload = matches!(target, Target::Command { .. });
    let output = args.output.clone();
    // This host's own files, as they are: the step names what this host can name
    // (`urec archive` takes --symfs and --debug-dir for anything else).
    let symbol_opts = urec_symbolize::SymbolizeOptions::default();
    let mut summary = urec_record::record(RecordOptions {
        probes,
        target,
        output: args.output,
        duration: args.duration,
        stack_mode,
        stack_depth: args.stack_depth,
        stack_size,
        buffer_size: args.buffer_size,
        verbosity,
        command_line: std::env::args().collect(),
        keep_files: !args.no_symbols,
        cgroup: args.target.cgroup.clone(),
    })
    .context("recording")?;
    if verbosity != Verbosity::Quiet {
        let lost = summary.lost_ring + summary.lost_sideband;
        let mut notes = String::new();
        if summary.lost_sideband > 0 {
            notes += &format!(
                " ({})",
                plural(
                    summary.lost_sideband,
                    "side-band record",
                    "side-band records"
                )
            );
        }
        if summary.lost_ring > 0 {
            notes += &format!(
                " (the report's counts and latencies stay exact: {} counted in the kernel)",
                plural(summary.kernel_calls, "call", "calls")
            );
        }
        if summary.filtered > 0 {
            notes += &format!(
                "; {} filtered out by predicates",
                plural(summary.filtered, "call", "calls")
            );
        }
        if summary.sampled > 0 {
            notes += &format!(
                "; {} sampled (stacks and args kept for 1 in up to {} under ring pressure, \
                 counts and latencies exact)",
                plural(summary.sampled, "call", "calls"),
                summary.max_weight
            );
        }
        if summary.lost_unwind > 0 {
            notes += &format!(
                "; {} not unwound",
                plural(summary.lost_unwind, "stack", "stacks")
            );
        }
        if summary.truncated_stacks > 0 {
            notes += &format!(
                "; {} truncated",
                plural(summary.truncated_stacks, "stack", "stacks")
            );
            if summary.copy_end_at_cap > 0 {
                notes += &if stack_size >= urec_record::MAX_STACK_SIZE {
                    format!(
                        " ({} ran off the end of a 64K copy, the most urec copies)",
                        summary.copy_end_at_cap
                    )
                } else {
                    format!(
                        " ({} ran off the end of a stack copy cut at --stack-size {}, which \
                         goes up to 64K)",
                        summary.copy_end_at_cap,
                        urec_record::size_flag(stack_size.into())
                    )
                };
            }
        }
        eprintln!(
            "urec: {} ({}, {}) in {:.2} s, {lost} lost{notes}; {}",
            plural(summary.entries + summary.returns, "event", "events"),
            plural(summary.entries, "entry", "entries"),
            plural(summary.returns, "return", "returns"),
            summary.duration.as_secs_f64(),
            plural(summary.stacks, "stack", "stacks"),
        );
        eprintln!(
            "urec: wrote {} to {}",
            urec_record::human_bytes(summary.bytes),
            output.display()
        );
    }
    if !args.no_symbols {
        add_symbols(
            &output,
            symbol_opts,
            std::mem::take(&mut summary.kept_files),
            verbosity,
        );
    }
    if workload {
        // Last, and even with -q: urec's own exit status is the command's, and without this
        // line a crash of the command would look like urec failing.
        let events = summary.entries + summary.returns;
        if let Some(line) = summary.workload_end.and_then(|end| {
            let program = args.command.first().map_or("the command", String::as_str);
            workload_line(program, end, events)
        }) {
            eprintln!("{line}");
        }
        let status = summary.workload_status.unwrap_or(0);
        return Ok(status.clamp(0, 255) as u8);
    }
    Ok(0)
}

/// `urec: ./server was killed by SIGSEGV; 1,204 events recorded`, when the command did not
/// exit 0; None when it did.
pub(crate) fn workload_line(
    program: &str,
    end: urec_record::WorkloadEnd,
    events: u64,
) -> Option<String> {
    use urec_record::command::Ended;
    let program = urec_format::printable(program);
    let how = match end.ended {
        Ended::Exited(0) => return None,
        Ended::Exited(status) => format!("exited with status {status}"),
        Ended::Killed {
            signal,
            core_dumped,
        } => {
            let mut s = format!("was killed by {}", signal_name(signal));
            if core_dumped {
                s += " (core dumped)";
            }
            if end.by_urec {
                s += ", which urec sent when recording stopped first";
            }
            s
        }
    };
    let noun = if events == 1 { "event" } else { "events" };
    Some(format!(
        "urec: {program} {how}; {} {noun} recorded",
        thousands(events)
    ))
}

/// `SIGSEGV` for 11, as shells and `kill -l` name signals; `signal 40` past the standard ones.
fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSTKFLT => "SIGSTKFLT",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGCONT => "SIGCONT",
        libc::SIGSTOP => "SIGSTOP",
        libc::SIGTSTP => "SIGTSTP",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        libc::SIGURG => "SIGURG",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGVTALRM => "SIGVTALRM",
        libc::SIGPROF => "SIGPROF",
        libc::SIGWINCH => "SIGWINCH",
        libc::SIGIO => "SIGIO",
        libc::SIGPWR => "SIGPWR",
        libc::SIGSYS => "SIGSYS",
        n => return format!("signal {n}"),
    };
    name.into()
}

/// `1,204`: the count in the last line is read at a glance.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The symbols step, once the recording is complete: names every address from the files the
/// recorder kept open (and this host's others) and appends the names. A failure here is a
/// warning: the recording itself is complete, and `urec archive` can name it later. A second
/// Ctrl-C now ends urec (the default action again), leaving the recording complete.
fn add_symbols(
    output: &std::path::Path,
    opts: urec_symbolize::SymbolizeOptions,
    kept: Vec<urec_record::kept::KeptFile>,
    verbosity: Verbosity,
) {
    // SAFETY: restoring the default disposition of SIGINT.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    let provided = kept
        .into_iter()
        .map(|k| urec_report::symbols::Provided {
            path: k.path,
            build_id: k.build_id,
            file: k.file,
        })
        .collect();
    let result = urec_report::symbols::add(output, opts, provided);
    match result {
        Ok((named, bytes)) => {
            if verbosity != Verbosity::Quiet {
                if verbosity == Verbosity::Verbose {
                    for w in &named.warnings {
                        eprintln!("urec: warning: {}", urec_format::printable(w));
                    }
                }
                eprintln!(
                    "urec: {}",
                    urec_report::symbols::summary_line(&named, bytes)
                );
            }
        }
        Err(e) => eprintln!(
            "urec: warning: naming the frames failed ({}); the recording is complete, `urec \
             archive -i {}` can add them",
            urec_format::printable(&format!("{e:#}")),
            output.display()
        ),
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
    let at = match p.site.vaddr.checked_sub(p.probe.vaddr.0) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_lines() {
        use urec_record::command::Ended;
        use urec_record::WorkloadEnd;
        let end = |ended, by_urec| WorkloadEnd { ended, by_urec };
        let segv = Ended::Killed {
            signal: libc::SIGSEGV,
            core_dumped: false,
        };
        assert_eq!(
            workload_line("./server", end(segv, false), 1204).as_deref(),
            Some("urec: ./server was killed by SIGSEGV; 1,204 events recorded")
        );
        assert_eq!(
            workload_line("./server", end(Ended::Exited(3), false), 1).as_deref(),
            Some("urec: ./server exited with status 3; 1 event recorded")
        );
        assert_eq!(
            workload_line("./server", end(Ended::Exited(0), false), 5),
            None
        );
        let term = Ended::Killed {
            signal: libc::SIGTERM,
            core_dumped: false,
        };
        assert_eq!(
            workload_line("sleep", end(term, true), 0).as_deref(),
            Some(
                "urec: sleep was killed by SIGTERM, which urec sent when recording stopped \
                 first; 0 events recorded"
            )
        );
        let abrt = Ended::Killed {
            signal: libc::SIGABRT,
            core_dumped: true,
        };
        assert!(workload_line("a", end(abrt, false), 0)
            .is_some_and(|l| l.contains("SIGABRT (core dumped)")));
        assert_eq!(signal_name(40), "signal 40");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn missing_dashes() {
        use clap::CommandFactory;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let cmd = Cli::command();
        let argv = |s: &str| -> Vec<String> { s.split(' ').map(String::from).collect() };
        let hint = |s: &str, unexpected: &str| missing_dashes_hint(&cmd, &argv(s), unexpected);
        assert_eq!(
            hint("urec record -e X /usr/bin/true", "/usr/bin/true").as_deref(),
            Some("to trace a command, put `--` before it: urec record -e X -- /usr/bin/true")
        );
        // Values of options are not the command, even when they look the same.
        assert_eq!(
            hint("urec record -o true -ae libc:malloc -g fp true -l", "true").as_deref(),
            Some(
                "to trace a command, put `--` before it: \
                 urec record -o true -ae libc:malloc -g fp -- true -l"
            )
        );
        assert_eq!(
            hint("urec record --event=libc:f --output x ls", "ls").as_deref(),
            Some("to trace a command, put `--` before it: urec record --event=libc:f --output x -- ls")
        );
        assert_eq!(hint("urec record -e X -- ls", "ls"), None);
        assert_eq!(hint("urec record -e X --bogus", "--bogus"), None);
        // Quoting, so that the hint can be pasted back.
        let v = vec![
            "urec".to_string(),
            "record".into(),
            "-e".into(),
            "libc:malloc size=arg1".into(),
            "echo".into(),
            "it's".into(),
        ];
        assert_eq!(
            missing_dashes_hint(&cmd, &v, "echo").as_deref(),
            Some(
                "to trace a command, put `--` before it: \
                 urec record -e 'libc:malloc size=arg1' -- echo 'it'\\''s'"
            )
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("lots").is_err());
    }
}
