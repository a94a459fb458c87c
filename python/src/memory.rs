//! Reading another process's memory, for naming the code objects the BPF walk recorded.
//!
//! The recorder names a code object while the process still runs (names are not in any file:
//! a Python function exists only as heap objects), so every read may race with the process
//! freeing that memory or exiting. Reads therefore return errors, never panic, and the caller
//! validates what it read ([`crate::naming`]).

use std::io;

/// A source of another process's memory. A trait so tests and other readers
/// (`/proc/PID/mem`, a core file, a byte buffer) can stand in for a live process.
pub trait Memory {
    /// Fills all of `buf` from `addr`, or fails: a partial read is an error, since half a
    /// string or a half-read pointer is worse than none.
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl<M: Memory + ?Sized> Memory for &M {
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read(addr, buf)
    }
}

/// A live process's memory through `process_vm_readv`: one system call per read, no file
/// descriptor to keep open per process, and an exited process is just an error (`ESRCH`).
/// It needs the same permission as ptrace attach (the recorder runs as root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessMemory {
    pid: u32,
}

impl ProcessMemory {
    /// The memory of process `pid` (nothing is opened: a dead pid fails on the first read).
    pub fn new(pid: u32) -> ProcessMemory {
        ProcessMemory { pid }
    }

    /// The process read.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl Memory for ProcessMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        let pid = libc::pid_t::try_from(self.pid)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        let mut done = 0usize;
        // The kernel stops a read at the first page it cannot read and reports the bytes
        // before it, so a read that crosses into an unmapped page comes back short: retry
        // from there once to turn it into the real error (EFAULT) rather than a silent gap.
        while done < buf.len() {
            let at = addr
                .checked_add(done as u64)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address overflow"))?;
            let rest = &mut buf[done..];
            let local = libc::iovec {
                iov_base: rest.as_mut_ptr().cast(),
                iov_len: rest.len(),
            };
            let remote = libc::iovec {
                iov_base: at as usize as *mut libc::c_void,
                iov_len: rest.len(),
            };
            // SAFETY: `local` describes `rest`, memory this function borrows mutably for the
            // call; `remote` is only an address in the other process, which the kernel checks.
            let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
            match n {
                n if n < 0 => {
                    let error = io::Error::last_os_error();
                    if error.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(error);
                }
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("process {} memory at {at:#x}: nothing read", self.pid),
                    ))
                }
                n => done += n as usize,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_memory() {
        let data: [u8; 5] = *b"hello";
        let mem = ProcessMemory::new(std::process::id());
        let mut buf = [0u8; 5];
        mem.read(data.as_ptr() as u64, &mut buf).expect("read self");
        assert_eq!(&buf, b"hello");
    }

    #[test]
    fn an_unmapped_address_or_a_dead_process_is_an_error() {
        let mem = ProcessMemory::new(std::process::id());
        let mut buf = [0u8; 8];
        assert!(mem.read(8, &mut buf).is_err());

        let mut child = std::process::Command::new("/bin/true")
            .spawn()
            .expect("spawn /bin/true");
        let pid = child.id();
        child.wait().expect("wait");
        let err = ProcessMemory::new(pid)
            .read(0x400000, &mut buf)
            .expect_err("a reaped process has no memory");
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH), "{err}");
    }
}
