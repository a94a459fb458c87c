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

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// A forked command waiting for [`Workload::start`].
#[derive(Debug)]
pub struct Workload {
    pid: u32,
    gate: Option<OwnedFd>,
    status: Option<i32>,
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
                // Undo urec's signal dispositions: the command starts with defaults.
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGTERM, libc::SIG_DFL);
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
        if libc::WIFEXITED(status) {
            self.status = Some(libc::WEXITSTATUS(status));
        } else if libc::WIFSIGNALED(status) {
            self.status = Some(128 + libc::WTERMSIG(status));
        }
        Ok(())
    }
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
