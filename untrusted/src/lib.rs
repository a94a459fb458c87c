//! Opening and reading files that someone else controls.
//!
//! `urec record` runs as root and reads the binaries, libraries and debug files of the
//! processes it traces; `urec report` opens whatever paths a data file from another machine
//! names. Either way the file's owner, not urec, decides what is at that path and when it
//! changes. Three things a plain `File::open` + `mmap` gets wrong then:
//!
//! - **Blocking.** Opening a FIFO for reading blocks until a writer appears, and std retries
//!   the open on `EINTR`, so not even a signal gets the recorder back: `-d` and Ctrl-C stop
//!   working and the probes stay attached. [`open`] opens with `O_NONBLOCK` (an open never
//!   waits) and then refuses anything that `fstat` does not call a regular file: a device, a
//!   FIFO, a socket or a directory is never read.
//! - **Mapping in place.** A mapped file that its owner truncates turns the next read of the
//!   mapping into `SIGBUS`, which kills the recorder and leaves its data file without a footer.
//!   Readers here use `pread` ([`read_at`], or `object::ReadCache` over the [`File`]), where a
//!   truncation is a short read, and a library that insists on mapping a *path* (blazesym)
//!   gets a [`SealedCopy`]: a memfd that nobody can shrink.
//! - **Swapped paths.** A path checked once may name another file a moment later. Callers that
//!   know which file they expect compare the [`Identity`] of the descriptor they opened, and
//!   keep using that descriptor.
//!
//! Everything here is a thin layer over the system calls so that every crate of the workspace
//! (record, probe, report, format) opens files the same way.

use std::fs::File;
use std::io;
use std::path::Path;

/// The device and inode of an open file: what identifies it whatever path reached it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// `st_dev`: inode numbers are only unique within a device.
    pub dev: u64,
    /// `st_ino`.
    pub inode: u64,
}

impl Identity {
    /// The identity of an open file.
    pub fn of(file: &File) -> io::Result<Identity> {
        let meta = file.metadata()?;
        Ok(Identity::from_metadata(&meta))
    }

    #[cfg(unix)]
    fn from_metadata(meta: &std::fs::Metadata) -> Identity {
        use std::os::unix::fs::MetadataExt;
        Identity {
            dev: meta.dev(),
            inode: meta.ino(),
        }
    }

    #[cfg(not(unix))]
    fn from_metadata(_meta: &std::fs::Metadata) -> Identity {
        Identity { dev: 0, inode: 0 }
    }

    /// Whether this is the file recorded with `dev` and `inode`; a zero in either means
    /// "not known" and matches anything (the kernel reports no inode for some mappings).
    pub fn matches(&self, dev: u64, inode: u64) -> bool {
        (inode == 0 || inode == self.inode) && (dev == 0 || dev == self.dev)
    }
}

/// Whether the last component of the path may be a symbolic link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Links {
    /// Follow symbolic links as usual (system paths such as `/lib` are links on merged-/usr
    /// systems).
    Follow,
    /// Fail with `ELOOP` if the path itself is a symbolic link.
    NoFollow,
}

/// Opens `path` for reading without ever blocking, and only if it is a regular file.
///
/// The error for anything else says what it is (`not a regular file (a FIFO)`), with
/// [`io::ErrorKind::InvalidInput`]; an open that would block cannot happen.
pub fn open(path: &Path) -> io::Result<File> {
    open_with(path, Links::Follow)
}

/// [`open`], choosing whether a symbolic link at `path` itself is followed.
pub fn open_with(path: &Path, links: Links) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut flags = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
        if links == Links::NoFollow {
            flags |= libc::O_NOFOLLOW;
        }
        options.custom_flags(flags);
    }
    #[cfg(not(unix))]
    let _ = links;
    let file = options.open(path)?;
    check_regular(&file)?;
    Ok(file)
}

/// Fails unless `file` is a regular file, naming what it is instead.
pub fn check_regular(file: &File) -> io::Result<()> {
    let ty = file.metadata()?.file_type();
    if ty.is_file() {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("not a regular file ({})", describe(&ty)),
    ))
}

/// What kind of file this is, in words, for error messages.
pub fn describe(ty: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ty.is_fifo() {
            return "a FIFO";
        }
        if ty.is_socket() {
            return "a socket";
        }
        if ty.is_block_device() {
            return "a block device";
        }
        if ty.is_char_device() {
            return "a character device";
        }
    }
    if ty.is_dir() {
        "a directory"
    } else if ty.is_symlink() {
        "a symbolic link"
    } else if ty.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// Reads up to `buf.len()` bytes at `offset`; fewer (possibly none) at the end of the file,
/// including when the file was truncated meanwhile.
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match pread(file, &mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(unix)]
fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(windows)]
fn pread(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, offset)
}

/// Reads the whole file, refusing one larger than `limit` bytes (a file that grows while it is
/// read is cut at `limit` + 1 and refused too).
pub fn read_all(file: &File, limit: u64) -> io::Result<Vec<u8>> {
    let size = file.metadata()?.len();
    if size > limit {
        return Err(too_large(size, limit));
    }
    let mut data = vec![0; size as usize];
    let n = read_at(file, &mut data, 0)?;
    data.truncate(n);
    Ok(data)
}

fn too_large(size: u64, limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{size} bytes, more than the {limit} bytes read from such a file"),
    )
}

/// A private, sealed in-memory copy of a file, for libraries that open files by path and map
/// them: the copy cannot shrink, grow or change, so mapping it is safe, and it is the content
/// the caller verified (build id, CRC) — not whatever the path names by the time the library
/// opens it.
///
/// On Linux the copy is a memfd (copied in the kernel, `copy_file_range`), reached through
/// [`SealedCopy::path`] (`/proc/self/fd/N`) for as long as the value lives. Elsewhere there is
/// no memfd; the copy is then the original path, with the exposure that implies (report-only
/// builds on workstations read their user's own files).
///
/// Each copy is memory (shared memory that no `ulimit -v` or RSS figure shows until it is
/// mapped), so every copy is taken from a [`Budget`]: a copy that would go over it is refused
/// with [`io::ErrorKind::OutOfMemory`], and its bytes are given back when the copy is dropped.
#[derive(Debug)]
pub struct SealedCopy {
    #[cfg(target_os = "linux")]
    memfd: File,
    path: std::path::PathBuf,
    /// Bytes taken from `budget`, returned on drop.
    reserved: u64,
    budget: &'static Budget,
}

impl SealedCopy {
    /// Copies the file open at `file`, which was reached through `path`, within the process's
    /// budget ([`Budget::sealed_copies`]).
    /// The whole file is copied, from its first byte whatever the descriptor's position.
    pub fn new(file: &File, path: &Path) -> io::Result<SealedCopy> {
        SealedCopy::within(file, path, Budget::sealed_copies())
    }

    /// [`SealedCopy::new`] within another budget. The copy is at most the file's size when it
    /// starts: a file that grows meanwhile cannot take more than was counted.
    pub fn within(file: &File, path: &Path, budget: &'static Budget) -> io::Result<SealedCopy> {
        #[cfg(target_os = "linux")]
        {
            let _ = path;
            let size = file.metadata()?.len();
            budget.take(size)?;
            let memfd = match memfd::copy(file, size) {
                Ok(memfd) => memfd,
                Err(e) => {
                    budget.give_back(size);
                    return Err(e);
                }
            };
            // A file truncated meanwhile made a shorter copy: only what it holds is counted.
            let held = memfd.metadata().map_or(size, |m| m.len().min(size));
            budget.give_back(size - held);
            use std::os::fd::AsRawFd;
            let path = format!("/proc/self/fd/{}", memfd.as_raw_fd()).into();
            Ok(SealedCopy {
                memfd,
                path,
                reserved: held,
                budget,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = file;
            Ok(SealedCopy {
                path: path.to_path_buf(),
                reserved: 0,
                budget,
            })
        }
    }

    /// How many bytes the copy holds (and takes from its budget).
    pub fn len(&self) -> u64 {
        self.reserved
    }

    /// Whether the copy holds nothing.
    pub fn is_empty(&self) -> bool {
        self.reserved == 0
    }

    /// A path that opens the copy.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The copy as a file (the memfd on Linux).
    #[cfg(target_os = "linux")]
    pub fn file(&self) -> &File {
        &self.memfd
    }
}

impl Drop for SealedCopy {
    fn drop(&mut self) {
        self.budget.give_back(self.reserved);
    }
}

/// A bound on the bytes that [`SealedCopy`]s hold at once. A report reads every binary of a
/// recording and their debug files, each as a copy in memory; without a bound, files that are
/// large (or a debuginfod server that sends large ones) would fill memory with copies, which
/// no RSS figure shows.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: std::sync::atomic::AtomicU64,
}

impl Budget {
    /// A budget of `limit` bytes, none used.
    pub const fn new(limit: u64) -> Budget {
        Budget {
            limit,
            used: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The budget of the process's sealed copies: a quarter of physical memory, at most 4 GiB
    /// (room for the largest debug files of distributions, about 1 GiB, several times over),
    /// and 4 GiB where physical memory cannot be known.
    pub fn sealed_copies() -> &'static Budget {
        static BUDGET: std::sync::OnceLock<Budget> = std::sync::OnceLock::new();
        BUDGET.get_or_init(|| {
            const MAX: u64 = 4 << 30;
            Budget::new(physical_memory().map_or(MAX, |m| (m / 4).min(MAX)))
        })
    }

    /// The bound, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes in use now.
    pub fn used(&self) -> u64 {
        self.used.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes `n` bytes, or fails without taking any if that would go over the bound.
    fn take(&self, n: u64) -> io::Result<()> {
        use std::sync::atomic::Ordering;
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let after = used.checked_add(n).filter(|&a| a <= self.limit);
            let Some(after) = after else {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!(
                        "a copy of {n} bytes would take the sealed copies in memory past their \
                         budget of {} MiB ({} MiB in use)",
                        self.limit >> 20,
                        used >> 20
                    ),
                ));
            };
            match self
                .used
                .compare_exchange_weak(used, after, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now) => used = now,
            }
        }
    }

    fn give_back(&self, n: u64) {
        self.used.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Physical memory in bytes, when the system says.
fn physical_memory() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions.
        let (pages, page) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let (pages, page) = (u64::try_from(pages).ok()?, u64::try_from(page).ok()?);
        pages.checked_mul(page).filter(|&m| m > 0)
    }
    #[cfg(not(unix))]
    None
}

#[cfg(target_os = "linux")]
mod memfd {
    use std::fs::File;
    use std::io;
    use std::os::fd::FromRawFd;

    /// Copies at most `size` bytes of `file`, from its start.
    pub(crate) fn copy(file: &File, size: u64) -> io::Result<File> {
        // SAFETY: memfd_create with a NUL-terminated name; the fd returned is owned by us.
        let fd = unsafe {
            libc::memfd_create(
                c"urec-sealed-copy".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just created and nobody else owns it.
        let mut memfd = unsafe { File::from_raw_fd(fd) };
        // std's copy between two files uses copy_file_range/sendfile: no user-space buffer.
        // A file truncated meanwhile just gives a shorter copy.
        let mut source = file;
        io::Seek::seek(&mut source, io::SeekFrom::Start(0))?;
        io::copy(&mut io::Read::take(source, size), &mut memfd)?;
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on our own fd.
        if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(memfd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"hello").unwrap();
        assert!(open(&file).is_ok());
        let err = open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        let err = open(Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_neither_blocks_nor_opens() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = open(&fifo).unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn no_follow_refuses_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::write(&target, b"x").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_with(&link, Links::Follow).is_ok());
        assert!(open_with(&link, Links::NoFollow).is_err());
    }

    #[test]
    fn read_all_and_limits() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"0123456789").unwrap();
        let file = open(f.path()).unwrap();
        assert_eq!(read_all(&file, 10).unwrap(), b"0123456789");
        assert!(read_all(&file, 9).is_err());
        let mut buf = [0; 4];
        assert_eq!(read_at(&file, &mut buf, 8).unwrap(), 2);
        assert_eq!(&buf[..2], b"89");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_sealed_copy_survives_truncation_of_the_original() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[7u8; 100_000]).unwrap();
        let file = open(f.path()).unwrap();
        let copy = SealedCopy::new(&file, f.path()).unwrap();
        f.as_file().set_len(0).unwrap();
        let data = std::fs::read(copy.path()).unwrap();
        assert_eq!(data.len(), 100_000);
        assert!(copy.file().set_len(10).is_err(), "the copy is sealed");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sealed_copies_stay_within_their_budget() {
        static BUDGET: Budget = Budget::new(250_000);
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&[7u8; 100_000]).unwrap();
        let file = open(f.path()).unwrap();
        let first = SealedCopy::within(&file, f.path(), &BUDGET).unwrap();
        let second = SealedCopy::within(&file, f.path(), &BUDGET).unwrap();
        assert_eq!(BUDGET.used(), 200_000);
        let err = SealedCopy::within(&file, f.path(), &BUDGET).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{err}");
        assert!(err.to_string().contains("budget"), "{err}");
        assert_eq!(BUDGET.used(), 200_000, "a refused copy takes nothing");
        drop(first);
        assert_eq!(BUDGET.used(), 100_000);
        let third = SealedCopy::within(&file, f.path(), &BUDGET).unwrap();
        assert_eq!(third.len(), 100_000);
        drop((second, third));
        assert_eq!(BUDGET.used(), 0);
    }

    #[test]
    fn the_default_budget_is_bounded() {
        let limit = Budget::sealed_copies().limit();
        assert!(limit > 0 && limit <= 4 << 30, "{limit}");
    }
}
