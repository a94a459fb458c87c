//! What `urec record` says when it is done: the counts line, where the file went, and how the
//! traced command ended. The wording lives next to the [`Summary`] it reads, so the CLI only
//! prints it.

use std::path::PathBuf;

use urec_format::plural;

use crate::{Summary, WorkloadEnd};

/// What the wording needs of the request: the file, the stack copy cap, the command's name.
#[derive(Clone, Debug, Default)]
pub(crate) struct Wording {
    pub(crate) output: PathBuf,
    pub(crate) stack_size: u32,
    pub(crate) program: Option<String>,
}

impl Summary {
    /// The summary `urec record` prints unless `-q`: events and what was lost, filtered,
    /// sampled, not unwound or truncated; then the file written and its size.
    pub fn lines(&self) -> [String; 2] {
        let lost = self.lost_ring + self.lost_sideband;
        let mut notes = String::new();
        if self.lost_sideband > 0 {
            notes += &format!(
                " ({})",
                plural(self.lost_sideband, "side-band record", "side-band records")
            );
        }
        if self.lost_ring > 0 {
            notes += &format!(
                " (the report's counts and latencies stay exact: {} counted in the kernel)",
                plural(self.kernel_calls, "call", "calls")
            );
        }
        if self.filtered > 0 {
            notes += &format!(
                "; {} filtered out by predicates",
                plural(self.filtered, "call", "calls")
            );
        }
        if self.sampled > 0 {
            notes += &format!(
                "; {} sampled (stacks and args kept for 1 in up to {} under ring pressure, \
                 counts and latencies exact)",
                plural(self.sampled, "call", "calls"),
                self.max_weight
            );
        }
        if self.lost_unwind > 0 {
            notes += &format!(
                "; {} not unwound",
                plural(self.lost_unwind, "stack", "stacks")
            );
        }
        if self.truncated_stacks > 0 {
            notes += &format!(
                "; {} truncated",
                plural(self.truncated_stacks, "stack", "stacks")
            );
            if self.copy_end_at_cap > 0 {
                let stack_size = self.wording.stack_size;
                notes += &if stack_size >= crate::MAX_STACK_SIZE {
                    format!(
                        " ({} ran off the end of a 64K copy, the most urec copies)",
                        self.copy_end_at_cap
                    )
                } else {
                    format!(
                        " ({} ran off the end of a stack copy cut at --stack-size {}, which \
                         goes up to 64K)",
                        self.copy_end_at_cap,
                        size_flag(stack_size.into())
                    )
                };
            }
        }
        [
            format!(
                "urec: {} ({}, {}) in {:.2} s, {lost} lost{notes}; {}",
                plural(self.entries + self.returns, "event", "events"),
                plural(self.entries, "entry", "entries"),
                plural(self.returns, "return", "returns"),
                self.duration.as_secs_f64(),
                plural(self.stacks, "stack", "stacks"),
            ),
            format!(
                "urec: wrote {} to {}",
                human_bytes(self.bytes),
                self.wording.output.display()
            ),
        ]
    }

    /// With `-- COMMAND`, the last line, said even with `-q` because urec's own exit status
    /// is then the command's, and without it a crash of the command would look like urec
    /// failing: `urec: ./server was killed by SIGSEGV; 1,204 events recorded`. None when the
    /// command exited 0, or without a command.
    pub fn workload_line(&self) -> Option<String> {
        let program = self.wording.program.as_deref().unwrap_or("the command");
        workload_line(program, self.workload_end?, self.entries + self.returns)
    }
}

/// `urec: ./server was killed by SIGSEGV; 1,204 events recorded`, when the command did not
/// exit 0; None when it did. (`urec top` says it without the events.)
pub fn workload_line(program: &str, end: WorkloadEnd, events: u64) -> Option<String> {
    use crate::command::Ended;
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

/// A size as `--stack-size` and `--buffer-size` take it: `16K`, `16M`, else bytes; the stack
/// copy cap is `64K` (which `--stack-size` rounds down to [`urec_bpf::abi::MAX_STACK_SIZE`]).
pub(crate) fn size_flag(bytes: u64) -> String {
    if bytes == u64::from(urec_bpf::abi::MAX_STACK_SIZE) {
        "64K".to_string()
    } else if bytes > 0 && bytes.is_multiple_of(1 << 20) {
        format!("{}M", bytes >> 20)
    } else if bytes > 0 && bytes.is_multiple_of(1 << 10) {
        format!("{}K", bytes >> 10)
    } else {
        bytes.to_string()
    }
}

/// `1.2 KiB`-style sizes.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_flags() {
        assert_eq!(size_flag(8192), "8K");
        assert_eq!(size_flag(urec_bpf::abi::MAX_STACK_SIZE.into()), "64K");
        assert_eq!(size_flag(40000), "40000");
        assert_eq!(size_flag(128 << 10), "128K");
        assert_eq!(size_flag(16 << 20), "16M");
        assert_eq!(size_flag(1000), "1000");
    }

    #[test]
    fn workload_lines() {
        use crate::command::Ended;
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
}
