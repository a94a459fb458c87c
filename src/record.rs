//! `urec record`: turns the flags into a [`urec_record::RecordRequest`], whose `plan` checks
//! and resolves everything first (a bad spec or flag exits 2 with nothing attached and no file
//! touched), records, prints the summary the library words, and runs the symbols step. With
//! `-- COMMAND` the exit status is the command's.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use urec_record::{RecordRequest, StackSize, TargetRequest, Verbosity};

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

impl TargetArgs {
    /// The library's view of these flags and of `-- COMMAND`.
    pub fn request(&self, command: &[String]) -> TargetRequest {
        TargetRequest {
            all: self.all,
            pids: self.pids.clone(),
            cgroup: self.cgroup.clone(),
            command: command.to_vec(),
        }
    }
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
    /// DWARF otherwise (walked in the kernel as `kernel-dwarf`).
    Auto,
    /// Frame-pointer walk in the kernel.
    Fp,
    /// Registers and a copy of the stack top, unwound with the binaries' CFI by the recorder,
    /// for every event.
    Dwarf,
    /// DWARF (CFI) stacks unwound in the kernel over tables the recorder loads into BPF maps;
    /// an event the walk cannot finish takes the `dwarf` path (what `auto` uses for DWARF).
    KernelDwarf,
    /// No stacks.
    None,
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

/// Runs `urec record`; returns the exit status.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let verbosity = if args.quiet {
        Verbosity::Quiet
    } else if args.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let request = RecordRequest {
        stack_size: StackSize::from_flag(args.stack_size).map_err(|e| e.into_anyhow())?,
        target: args.target.request(&args.command),
        call_graph: match args.call_graph {
            CallGraph::Auto => urec_record::CallGraph::Auto,
            CallGraph::Fp => urec_record::CallGraph::FramePointer,
            CallGraph::Dwarf => urec_record::CallGraph::Dwarf,
            CallGraph::KernelDwarf => urec_record::CallGraph::KernelDwarf,
            CallGraph::None => urec_record::CallGraph::None,
        },
        events: args.events,
        output: args.output,
        duration: args.duration,
        stack_depth: args.stack_depth,
        force: args.force,
        buffer_size: args.buffer_size,
        keep_files: !args.no_symbols,
        verbosity,
        command_line: std::env::args().collect(),
    };
    let opts = request.plan().map_err(|e| e.into_anyhow())?;
    let workload = matches!(opts.target, urec_record::Target::Command { .. });
    let output = opts.output.clone();
    let mut summary = urec_record::record(opts)
        .map_err(|e| e.into_anyhow())
        .context("recording")?;
    if verbosity != Verbosity::Quiet {
        for line in summary.lines() {
            eprintln!("{line}");
        }
    }
    if !args.no_symbols {
        add_symbols(&output, std::mem::take(&mut summary.kept_files), verbosity);
    }
    if workload {
        // Last, and even with -q: see `Summary::workload_line`.
        if let Some(line) = summary.workload_line() {
            eprintln!("{line}");
        }
        let status = summary.workload_status.unwrap_or(0);
        return Ok(status.clamp(0, 255) as u8);
    }
    Ok(0)
}

/// The symbols step, once the recording is complete: names every address from the files the
/// recorder kept open (and this host's others) and appends the names. A failure here is a
/// warning: the recording itself is complete, and `urec archive` can name it later. A second
/// Ctrl-C now ends urec (the default action again), leaving the recording complete.
fn add_symbols(
    output: &std::path::Path,
    kept: Vec<urec_record::kept::KeptFile>,
    verbosity: Verbosity,
) {
    // This host's own files, as they are: the step names what this host can name
    // (`urec archive` takes --symfs and --debug-dir for anything else).
    let opts = urec_symbolize::SymbolizeOptions::default();
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

#[cfg(test)]
mod tests {
    use super::*;

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
