//! `urec`: record uprobes and uretprobes on Linux user programs, report exact counts, latencies
//! and stacks. This file only parses the command line and maps errors to exit statuses; each
//! subcommand lives in its own module and calls into the workspace's library crates.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod archive;
mod exit;
mod info;
mod list;
#[cfg(feature = "record")]
mod record;
mod report;
mod script;
#[cfg(feature = "record")]
mod top;

pub use exit::UsageError;

/// Record uprobes with eBPF into a small file; report exact counts, latencies and stacks.
#[derive(Parser, Debug)]
#[command(name = "urec", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Attach probes and record events into a data file.
    #[cfg(feature = "record")]
    Record(record::Args),
    /// Live per-probe counts and latencies, redrawn every interval (JSON lines off a terminal).
    ///
    /// The probes of `urec record`, counting in the kernel only: no events, no data file. On a
    /// terminal a full-screen table (calls in the interval, total calls, calls/s, p50, p99 and
    /// max latency of the interval; keys c, r, 5, 9, m sort, q quits); otherwise, or with
    /// --json, one JSON object a line per interval and a last one with "final": true and the
    /// exact totals. With -- COMMAND, exits with the command's status.
    #[cfg(feature = "record")]
    Top(top::Args),
    /// Summarize a recording: tables, histograms, folded stacks, flamegraphs, JSON.
    Report(Box<report::Args>),
    /// Print every event of a recording in time order, like `perf script`.
    Script(script::Args),
    /// List the functions of a binary or library that can be probed.
    ///
    /// One function per line: name, ELF virtual address, file offset, size, and a mark where
    /// probing needs care: `[ifunc]` (an IFUNC resolver: probe an implementation instead),
    /// `[not-probeable: WHY]` (the kernel refuses its first instruction, or would emulate it
    /// wrongly), `[site +0xN]` (the kernel single-steps its first instruction, so urec probes
    /// the instruction N bytes in, the first of its entry block the kernel emulates, which sees
    /// the same calls), `[single-step; %entry site +0xN]` (only an entry-only probe can move
    /// there: the instructions before it move sp, which a return probe needs at the return
    /// address), `[single-step]` (no such instruction: probes single-step, a second trap per hit:
    /// 20.9 µs against 377 ns per call with an emulated entry, as `urec record -v` calibrated
    /// them on this project's VM).
    /// With `--usdt`: the USDT probes (`.note.stapsdt`) instead, one site per line:
    /// PROVIDER:NAME (what `-e usdt:TARGET:PROVIDER:NAME` names), ELF virtual address, the
    /// semaphore's address (urec sets it while recording), and the operands `arg1`, `arg2`...
    /// fetch (`-4@%edi`: a signed 4-byte value in %edi).
    /// With `--unwind-stats`: the size and build time of the binary's unwind table (its CFI
    /// compiled for in-kernel DWARF unwinding) and how much of its code falls back to copying
    /// the stack, by reason.
    /// Exits with status 1 when nothing matches.
    List(list::Args),
    /// Describe a recording: header, probes, processes, binaries, counts, sizes.
    Info(info::Args),
    /// Add or refresh a recording's symbols section from this host's files.
    ///
    /// For recordings made with `--no-symbols`, or after installing debug packages on the
    /// recording host: the names travel with the file, so `report` on another machine shows
    /// them without the binaries. The file is rewritten through a temporary file and a rename,
    /// keeping its mode and owner; on any failure it is left as it was.
    Archive(archive::ArchiveArgs),
}

/// `urec record -e X COMMAND` without `--`: adds a tip showing the command line with it.
#[cfg(feature = "record")]
fn add_missing_dashes_hint(e: &mut clap::Error) {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;
    if e.kind() != ErrorKind::UnknownArgument {
        return;
    }
    let Some(ContextValue::String(unexpected)) = e.get(ContextKind::InvalidArg) else {
        return;
    };
    let argv: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cli = Cli::command();
    let Some(record) = cli.find_subcommand("record") else {
        return;
    };
    let Some(hint) = record::missing_dashes_hint(record, &argv, unexpected) else {
        return;
    };
    let mut tips = match e.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(tips)) => tips.clone(),
        _ => Vec::new(),
    };
    tips.push(hint.into());
    e.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
}

/// `urec diff A B` and `urec merge A B`, which perf and other profilers have: what does the job
/// here, as a command line to paste (`report --diff BASE -i NEW`, `report -i A -i B`), where
/// clap would only say "unrecognized subcommand". None for any other word.
fn moved_subcommand(argv: &[String]) -> Option<String> {
    let (word, rest) = argv.get(1).map(|w| (w.as_str(), &argv[2..]))?;
    let files: Vec<String> = rest
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(|a| urec_format::shell_word(a))
        .collect();
    let command = match (word, files.as_slice()) {
        ("diff", [base, new]) => format!("urec report --diff {base} -i {new}"),
        ("diff", _) => "urec report --diff BASE -i NEW".to_string(),
        ("merge", [_, _, ..]) => {
            let inputs: Vec<String> = files.iter().map(|f| format!("-i {f}")).collect();
            format!("urec report {}", inputs.join(" "))
        }
        ("merge", _) => "urec report -i A -i B".to_string(),
        _ => return None,
    };
    let what = if word == "diff" {
        "compare a recording with a base"
    } else {
        "merge recordings"
    };
    Some(format!(
        "there is no `urec {word}`; to {what}, use `report`: {command}"
    ))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        #[cfg_attr(not(feature = "record"), allow(unused_mut))]
        Err(mut e) => {
            if e.kind() == clap::error::ErrorKind::InvalidSubcommand {
                let argv: Vec<String> = std::env::args_os()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                if let Some(line) = moved_subcommand(&argv) {
                    eprintln!("urec: error: {}", urec_format::printable(&line));
                    return ExitCode::from(2);
                }
            }
            #[cfg(feature = "record")]
            add_missing_dashes_hint(&mut e);
            // clap prints help/version with exit 0 and usage errors with exit 2, as we want.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match cli.command {
        #[cfg(feature = "record")]
        Command::Record(args) => record::run(args),
        #[cfg(feature = "record")]
        Command::Top(args) => top::run(args),
        Command::Report(args) => report::run(*args),
        Command::Script(args) => script::run(args),
        Command::List(args) => list::run(args),
        Command::Info(args) => info::run(args),
        Command::Archive(args) => archive::run(args),
    };
    match result {
        Ok(status) => ExitCode::from(status),
        // A reader that went away (`urec script | head`) is not an error worth a message.
        Err(err) if exit::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "urec: error: {}",
                urec_format::printable(&format!("{err:#}"))
            );
            ExitCode::from(exit::status_of(&err))
        }
    }
}
