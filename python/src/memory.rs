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

    /// How many of the `len` bytes at `addr` this source can give at most: all of them for a
    /// live process (a failed read says otherwise), fewer for a snapshot that copied only the
    /// start of an object, so a reader cuts a long name or line table there rather than fail.
    fn available(&self, addr: u64, len: usize) -> usize {
        let _ = addr;
        len
    }
}

impl<M: Memory + ?Sized> Memory for &M {
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read(addr, buf)
    }

    fn available(&self, addr: u64, len: usize) -> usize {
        (**self).available(addr, len)
    }
}

/// Copies of a few ranges of a process's memory (the BPF programs' code snapshots: a code
/// object's words, its name strings, its line table), read as the process was at the probe:
/// the recorder names a code object from them after the process has exited. A read outside
/// the ranges fails (`EFAULT`), as it would in a process where that memory is unmapped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Regions {
    regions: Vec<(u64, Vec<u8>)>,
}

impl Regions {
    /// No memory yet.
    pub fn new() -> Regions {
        Regions::default()
    }

    /// Adds the `bytes` copied from `addr`.
    pub fn add(&mut self, addr: u64, bytes: &[u8]) {
        self.regions.push((addr, bytes.to_vec()));
    }

    /// Bytes held in all.
    pub fn len_bytes(&self) -> usize {
        self.regions.iter().map(|r| r.1.len()).sum()
    }

    /// The range holding `addr`: its bytes from `addr` on.
    fn from(&self, addr: u64) -> Option<&[u8]> {
        self.regions.iter().find_map(|(start, bytes)| {
            let off = usize::try_from(addr.checked_sub(*start)?).ok()?;
            bytes.get(off..)
        })
    }
}

impl Memory for Regions {
    fn read(&self, addr: u64, buf: &mut [u8]) -> io::Result<()> {
        match self.from(addr) {
            Some(b) if b.len() >= buf.len() => {
                buf.copy_from_slice(&b[..buf.len()]);
                Ok(())
            }
            _ => Err(io::Error::from_raw_os_error(libc::EFAULT)),
        }
    }

    fn available(&self, addr: u64, len: usize) -> usize {
        self.from(addr).map_or(0, |b| b.len().min(len))
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
    fn regions_read_inside_only() {
        let mut r = Regions::new();
        r.add(0x1000, b"abcdef");
        r.add(0x2000, b"xy");
        let mut buf = [0u8; 3];
        r.read(0x1002, &mut buf).expect("inside");
        assert_eq!(&buf, b"cde");
        assert!(r.read(0x1004, &mut buf).is_err(), "past the end");
        assert!(r.read(0xfff, &mut buf).is_err(), "before the start");
        assert!(r.read(0x3000, &mut buf).is_err(), "elsewhere");
        assert_eq!(r.available(0x1004, 100), 2);
        assert_eq!(r.available(0x1000, 4), 4);
        assert_eq!(r.available(0x5000, 4), 0);
        assert_eq!(r.len_bytes(), 8);
    }

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
