//! `-- COMMAND`: the traced command, started only once the probes are attached.
//!
//! The command is forked early but held on a pipe: urec puts the child's pid into the BPF
//! filter (the fork program then follows its descendants in the kernel) and attaches the probes,
//! and only then lets it `exec`. So the command's very first calls are traced, and nothing of it
//! runs if urec fails to set up (the child then exits without running COMMAND).
//!
//! `std::process::Command` cannot do this: `spawn` waits until the child has exec'd. Hence a
//! plain `fork`; everything the child needs (argv as C strings, the resolved program path) is
//! prepared before it, since only async-signal-safe calls are allowed in the child of a
//! possibly multi-threaded parent.
//!
//! # Job control
//!
//! The command stays in urec's process group, which is the terminal's foreground group when urec
//! runs in the foreground: Ctrl-C reaches both (urec stops recording, the command gets its
//! SIGINT as it would without urec), and an interactive command can read the terminal. A
//! process group of its own would be a background group: its first terminal read would stop it
//! with SIGTTIN.
//!
//! # When urec fails
//!
//! A command left running after urec gave up (the disk filled up, the kernel refused something)
//! would go on untraced, possibly for ever, and nobody would know to stop it. So urec makes
//! itself the child subreaper ([`become_subreaper`]) before forking: every descendant the
//! command orphans (a double fork, `setsid cmd &`) is reparented to urec, so the whole tree is
//! the set of processes whose parent chain leads to urec, and [`Workload::stop_tree`] can find,
//! signal and reap all of it. It is read from `/proc` at stop time rather than taken from the
//! side-band's fork records: those lag by the side-band's re-ordering window and may be lost
//! when its ring is full, and a pid from them may since have been recycled by an unrelated
//! process, which the parent chain rules out.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A forked command waiting for [`Workload::start`].
#[derive(Debug)]
pub struct Workload {
    pid: u32,
    gate: Option<OwnedFd>,
    status: Option<i32>,
    ended: Option<Ended>,
    terminated: bool,
}

/// How the command ended. The shell-style status (128 + signal) cannot tell `exit(139)` from
/// a SIGSEGV, and record's last line must say which (SPEC.md, issue 25 item 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It called `exit` with this status.
    Exited(i32),
    /// A signal ended it.
    Killed {
        /// The signal's number.
        signal: i32,
        /// The kernel wrote a core dump.
        core_dumped: bool,
    },
}

impl Ended {
    fn of(status: i32) -> Option<Ended> {
        if libc::WIFEXITED(status) {
            Some(Ended::Exited(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(Ended::Killed {
                signal: libc::WTERMSIG(status),
                core_dumped: libc::WCOREDUMP(status),
            })
        } else {
            None
        }
    }
}

/// Finds `program` as `execvp` would (a name without `/` through `PATH`), so that a missing
/// command is reported before anything is attached.
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = Path::new(program);
        return is_executable(p).then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

/// The interpreter a `#!` script runs (`#!/usr/bin/env NAME` found through `PATH` as `env`
/// would), or `None` for anything else (an ELF file, an unreadable one). `-g auto` judges the
/// interpreter's frame pointers, not the script's: the interpreter's frames are what the
/// stacks hold, and a script is no ELF file to judge.
pub fn script_interpreter(program: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let mut file = urec_untrusted::open(program).ok()?;
    let n = file.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n')?];
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    let interpreter = Path::new(words.next()?);
    if interpreter.file_name().is_some_and(|f| f == "env") {
        // `env NAME`; `env -S ...` and other options are not followed.
        let name = words.next().filter(|w| !w.starts_with('-'))?;
        return find_program(name);
    }
    is_executable(interpreter).then(|| interpreter.to_path_buf())
}

fn is_executable(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a valid C string.
    p.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
}

impl Workload {
    /// Forks the child that will run `argv` (`argv[0]` resolved to `program`) once started.
    pub fn fork(program: &Path, argv: &[String]) -> Result<Workload> {
        if argv.is_empty() {
            bail!("no command given");
        }
        let path = CString::new(program.as_os_str().as_encoded_bytes())
            .context("the command path contains a NUL byte")?;
        let args: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .context("a command argument contains a NUL byte")?;
        let mut argp: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argp.push(std::ptr::null());
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error()).context("creating a pipe");
        }
        // SAFETY: both fds were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fork(2); the child below only calls async-signal-safe functions.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error()).context("forking the command");
        }
        if pid == 0 {
            // Child.
            // SAFETY: async-signal-safe calls only; every pointer was prepared before fork.
            unsafe {
                libc::close(write.as_raw_fd());
                let mut go = 0u8;
                let n = loop {
                    let n = libc::read(read.as_raw_fd(), (&mut go as *mut u8).cast(), 1);
                    if n >= 0 || *libc::__errno_location() != libc::EINTR {
                        break n;
                    }
                };
                if n != 1 || go != b'g' {
                    // urec failed before starting us: leave without running the command.
                    libc::_exit(127);
                }
                // The Rust runtime ignores SIGPIPE, and exec keeps ignored signals: without
                // this, `yes | head` in the command complains of a broken pipe instead of
                // ending quietly. urec's SIGINT/SIGTERM handlers are installed after the fork
                // (and exec would reset them anyway), so whatever the caller ignored (a
                // background job's SIGINT) stays ignored, as without urec.
                libc::signal(libc::SIGPIPE, libc::SIG_DFL);
                libc::execv(path.as_ptr(), argp.as_ptr());
                let msg = b"urec: cannot execute the command\n";
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::_exit(127);
            }
        }
        drop(read);
        Ok(Workload {
            pid: pid as u32,
            gate: Some(write),
            status: None,
            ended: None,
            terminated: false,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Lets the child exec the command.
    pub fn start(&mut self) -> Result<()> {
        if let Some(gate) = self.gate.take() {
            let go = b'g';
            // SAFETY: write(2) of one byte from a valid buffer to our pipe.
            let n = unsafe { libc::write(gate.as_raw_fd(), (&go as *const u8).cast(), 1) };
            if n != 1 {
                return Err(io::Error::last_os_error()).context("starting the command");
            }
        }
        Ok(())
    }

    /// The command's exit status once it has ended (128 + signal when killed), without blocking.
    pub fn try_wait(&mut self) -> Result<Option<i32>> {
        if self.status.is_none() {
            self.reap(libc::WNOHANG)?;
        }
        Ok(self.status)
    }

    /// Waits for the command to end.
    pub fn wait(&mut self) -> Result<i32> {
        while self.status.is_none() {
            self.reap(0)?;
        }
        Ok(self.status.unwrap_or(0))
    }

    /// How the command ended, once it has (as [`Workload::try_wait`] last found).
    pub fn ended(&self) -> Option<Ended> {
        self.ended
    }

    /// Whether urec ended the command itself ([`Workload::terminate`]: recording stopped
    /// first), so that a SIGTERM is not reported as the command's own failure.
    pub fn terminated(&self) -> bool {
        self.terminated
    }

    /// Whether the command was let go (even if it then failed to exec).
    pub fn started(&self) -> bool {
        self.gate.is_none()
    }

    /// Reaps every child that has ended, keeping the command's status: orphans reparented to
    /// urec (see the module docs) would otherwise stay zombies for the whole recording. Returns
    /// the command's status once it has ended.
    pub fn reap_children(&mut self) -> Result<Option<i32>> {
        loop {
            let mut status = 0;
            // SAFETY: waitpid(2) for any child, without blocking.
            let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if r < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ECHILD) => break,
                    _ => return Err(err).context("reaping the command's processes"),
                }
            }
            if r == 0 {
                break;
            }
            if r as u32 == self.pid {
                self.status = exit_status(status).or(self.status);
                self.ended = Ended::of(status).or(self.ended);
            }
        }
        Ok(self.status)
    }

    /// Ends the command when recording stopped first (Ctrl-C, `-d`), as perf does: SIGTERM,
    /// and SIGKILL after `grace`, so that a command ignoring SIGTERM cannot keep urec from
    /// finishing the file. Its descendants are left alone, as they would be without urec.
    pub fn terminate(&mut self, grace: Duration) -> Result<i32> {
        self.terminated = true;
        // SAFETY: kill(2) of our own child, not yet reaped (the pid is still ours).
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                // SAFETY: as above.
                unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
                return self.wait();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the command and every process under it after urec failed (see the module docs):
    /// SIGTERM (and SIGCONT, for stopped ones), SIGKILL to what is left after `grace`, and
    /// reaps them. Gives up on processes that survive SIGKILL for another `grace` (stuck in
    /// the kernel). Returns the pids still alive then.
    pub fn stop_tree(&mut self, grace: Duration) -> Vec<u32> {
        let me = std::process::id();
        let term_until = Instant::now() + grace;
        let give_up = term_until + grace;
        let mut signal = libc::SIGTERM;
        let mut sent: BTreeSet<u32> = BTreeSet::new();
        loop {
            // An error here is ECHILD-like at worst; the walk below still sees what is left.
            let _ = self.reap_children();
            let tree = descendants(me);
            if tree.is_empty() {
                return Vec::new();
            }
            let now = Instant::now();
            if now >= give_up {
                return tree.iter().filter(|p| !p.1).map(|p| p.0).collect();
            }
            if signal == libc::SIGTERM && now >= term_until {
                signal = libc::SIGKILL;
                sent.clear();
            }
            // Zombies are only waiting for their parent: urec reaps its own above, and those
            // of a dying descendant are reparented to urec.
            for &(pid, zombie) in &tree {
                if zombie || !sent.insert(pid) {
                    continue;
                }
                // SAFETY: kill(2) of a process under urec: its parent chain leads here, so the
                // pid cannot have been recycled by a process outside the tree.
                unsafe {
                    libc::kill(pid as libc::pid_t, signal);
                    if signal == libc::SIGTERM {
                        libc::kill(pid as libc::pid_t, libc::SIGCONT);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn reap(&mut self, flags: i32) -> Result<()> {
        let mut status = 0;
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(self.pid as i32, &mut status, flags) };
        if r < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(err).context("waiting for the command");
        }
        if r == 0 {
            return Ok(());
        }
        self.status = exit_status(status).or(self.status);
        self.ended = Ended::of(status).or(self.ended);
        Ok(())
    }
}

/// A `waitpid` status as a shell reports it: the exit code, or 128 + the signal that killed it.
fn exit_status(status: i32) -> Option<i32> {
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

/// Makes urec the child subreaper of what it forks from now on (see the module docs).
pub fn become_subreaper() -> Result<()> {
    // SAFETY: prctl(2) with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error()).context("becoming the command's child subreaper");
    }
    Ok(())
}

/// Every process whose parent chain leads to `root` (not `root` itself), with whether it is a
/// zombie, read from `/proc` now. A process that exits during the walk is simply missing.
pub fn descendants(root: u32) -> Vec<(u32, bool)> {
    let mut children: HashMap<u32, Vec<(u32, bool)>> = HashMap::new();
    for pid in crate::procfs::all_pids() {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(stat) = crate::procfs::parse_stat(&text) {
            children
                .entry(stat.ppid)
                .or_default()
                .push((pid, stat.state == 'Z'));
        }
    }
    let mut out = Vec::new();
    // A parent chain cannot loop, but reads racing with exits and pid reuse could make one
    // appear to.
    let mut seen = HashSet::from([root]);
    let mut todo = vec![root];
    while let Some(parent) = todo.pop() {
        for &(pid, zombie) in children.get(&parent).into_iter().flatten() {
            if seen.insert(pid) {
                out.push((pid, zombie));
                todo.push(pid);
            }
        }
    }
    out
}

impl Drop for Workload {
    /// A child never started (urec failed during set-up) reads EOF on its gate and exits; reap
    /// it so it does not linger as a zombie.
    fn drop(&mut self) {
        if self.gate.take().is_some() && self.status.is_none() {
            let _ = self.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_their_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let script = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            script_interpreter(&p)
        };
        let sh = Path::new("/bin/sh");
        assert_eq!(script("a", "#!/bin/sh\necho\n").as_deref(), Some(sh));
        assert_eq!(script("b", "#! /bin/sh -e\n").as_deref(), Some(sh));
        let via_env = script("c", "#!/usr/bin/env sh\n").unwrap();
        assert_eq!(via_env.file_name().unwrap(), "sh");
        assert_eq!(script("d", "#!/usr/bin/env -S sh -e\n"), None);
        assert_eq!(script("e", "#!/nonexistent/interpreter\n"), None);
        assert_eq!(script("f", "echo no interpreter line\n"), None);
        // An ELF file is no script.
        assert_eq!(script_interpreter(Path::new("/proc/self/exe")), None);
    }

    #[test]
    fn finds_programs_on_path() {
        assert!(find_program("sh").is_some());
        assert!(find_program("surely-not-a-program-urec").is_none());
        assert_eq!(find_program("/bin/sh"), Some(PathBuf::from("/bin/sh")));
    }

    #[test]
    fn runs_after_start_and_reports_status() {
        let sh = find_program("sh").unwrap();
        let mut w = Workload::fork(&sh, &["sh".into(), "-c".into(), "exit 7".into()]).unwrap();
        assert_eq!(w.try_wait().unwrap(), None);
        w.start().unwrap();
        assert_eq!(w.wait().unwrap(), 7);
        let mut k = Workload::fork(&sh, &["sh".into(), "-c".into(), "kill -9 $$".into()]).unwrap();
        k.start().unwrap();
        assert_eq!(k.wait().unwrap(), 128 + 9);
    }

    #[test]
    fn not_started_child_exits_quietly() {
        let sh = find_program("sh").unwrap();
        let w = Workload::fork(&sh, &["sh".into(), "-c".into(), "exit 0".into()]).unwrap();
        drop(w);
    }
}
