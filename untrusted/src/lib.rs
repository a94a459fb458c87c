//! Opening and reading files that someone else controls.
//!
//! `urec record` runs as root and reads the binaries, libraries and debug files of the
//! processes it traces; `urec report` opens whatever paths a data file from another machine
//! names. Either way the file's owner, not urec, decides what is at that path and when it
//! changes. Three things a plain `File::open` + `mmap` gets wrong then:
//!
//! - **Blocking.** Opening a FIFO for reading blocks until a writer appears, and std retries
//!   the open on `EINTR`, so not even a signal gets the recorder back: `-d` and Ctrl-C stop
//!   working and the probes stay attached. [`open`] looks the path up with `O_PATH` first and
//!   opens for reading (`O_NONBLOCK` still) only what `fstat` calls a regular file: a device,
//!   a FIFO, a socket or a directory is never opened, let alone read — opening is itself an
//!   effect (a device's driver runs, a FIFO's waiting writer wakes), and a symbolic link on
//!   any directory of the path, which `O_NOFOLLOW` does not guard, may lead to `/dev`.
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
///
/// On Linux nothing but a regular file is ever opened, not even for a moment: the path is
/// first opened with `O_PATH`, which reaches the inode without running its driver's or the
/// FIFO's open, and only once `fstat` of that descriptor says "regular file" is that very
/// inode reopened for reading, through `/proc/self/fd/N`. A plain open followed by `fstat`
/// would already have opened a device that a user's symbolic link (the last component or any
/// directory on the way, where `O_NOFOLLOW` does not look) leads to, and opening some
/// devices has effects (a tape rewinds, a modem hangs up), as does opening a FIFO (a writer
/// waiting in its own open wakes up).
pub fn open(path: &Path) -> io::Result<File> {
    open_with(path, Links::Follow)
}

/// [`open`], choosing whether a symbolic link at `path` itself is followed.
pub fn open_with(path: &Path, links: Links) -> io::Result<File> {
    #[cfg(target_os = "linux")]
    {
        linux::open(path, links)
    }
    #[cfg(not(target_os = "linux"))]
    {
        open_then_check(path, links)
    }
}

/// Opens `path`, which must be a regular file and not a symbolic link, for appending: urec's
/// own output, reopened after the recording in a directory that others may write to (and
/// under sudo the file is the invoking user's). As with [`open`], nothing else at that path
/// is ever opened: a FIFO there would hold the writer in its open until a reader came.
pub fn open_append(path: &Path) -> io::Result<File> {
    #[cfg(target_os = "linux")]
    {
        linux::open_append(path)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut options = std::fs::OpenOptions::new();
        options.append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
        }
        let file = options.open(path)?;
        check_regular(&file)?;
        Ok(file)
    }
}

/// Opens `path` without blocking, then refuses what is not a regular file: where there is no
/// `O_PATH` (a report-only build elsewhere than Linux), the best available.
#[cfg(not(target_os = "linux"))]
fn open_then_check(path: &Path, links: Links) -> io::Result<File> {
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

#[cfg(target_os = "linux")]
mod linux {
    use super::{check_regular, Identity, Links};
    use std::ffi::CString;
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Path;

    /// The flags of the open that reads or writes: `O_NONBLOCK` still, because a FUSE or NFS
    /// file is a regular file too, and `O_NOCTTY` costs nothing.
    const READ_FLAGS: libc::c_int = libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

    pub(crate) fn open(path: &Path, links: Links) -> io::Result<File> {
        let handle = open_path(path, links)?;
        // With `O_NOFOLLOW`, `O_PATH` opens a symbolic link itself rather than failing with
        // `ELOOP`: `fstat` then names it, and it is refused like a FIFO.
        check_regular(&handle)?;
        let file = match reopen(&handle) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !proc_mounted() => {
                by_path_again(path, links, &handle)?
            }
            Err(e) => return Err(e),
        };
        // The magic link reopens the very inode checked above; a second `fstat` costs little
        // and keeps this function's promise independent of that reasoning.
        check_regular(&file)?;
        Ok(file)
    }

    pub(crate) fn open_append(path: &Path) -> io::Result<File> {
        let handle = open_path(path, Links::NoFollow)?;
        check_regular(&handle)?;
        // No fallback without /proc here: only `urec record` appends, and it needs /proc.
        let file = std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(READ_FLAGS)
            .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))?;
        check_regular(&file)?;
        Ok(file)
    }

    /// An `O_PATH` descriptor of `path`: the lookup only, no open of the file itself, so
    /// neither a device's driver nor a FIFO ever sees it.
    fn open_path(path: &Path, links: Links) -> io::Result<File> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))?;
        let mut flags = libc::O_PATH | libc::O_CLOEXEC;
        if links == Links::NoFollow {
            flags |= libc::O_NOFOLLOW;
        }
        loop {
            // SAFETY: open(2) of a NUL-terminated path; the descriptor returned is ours.
            let fd = unsafe { libc::open(c.as_ptr(), flags) };
            if fd >= 0 {
                // SAFETY: fd was just opened and nobody else owns it.
                return Ok(unsafe { File::from_raw_fd(fd) });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }

    /// Opens for reading the inode that `handle` (an `O_PATH` descriptor) holds, whatever its
    /// path names by now.
    fn reopen(handle: &File) -> io::Result<File> {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(READ_FLAGS)
            .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
    }

    fn proc_mounted() -> bool {
        Path::new("/proc/self/fd").is_dir()
    }

    /// Without `/proc` (a bare chroot) the inode cannot be reopened from its `O_PATH`
    /// descriptor: the path is opened again and must still be the file checked. Only a swap
    /// in the instant between the two opens can then reach a device.
    fn by_path_again(path: &Path, links: Links, handle: &File) -> io::Result<File> {
        let mut flags = READ_FLAGS;
        if links == Links::NoFollow {
            flags |= libc::O_NOFOLLOW;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(path)?;
        if Identity::of(&file)? != Identity::of(handle)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the file changed while it was opened",
            ));
        }
        Ok(file)
    }
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
        mkfifo(&fifo);
        let err = open(&fifo).unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
    }

    #[cfg(unix)]
    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// A user's directory that is a symbolic link to `/dev`: `O_NOFOLLOW` would not see it
    /// (it guards the last component only), and a plain open would reach the device.
    #[cfg(unix)]
    #[test]
    fn a_device_through_a_linked_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("lib");
        std::os::unix::fs::symlink("/dev", &link).unwrap();
        for links in [Links::Follow, Links::NoFollow] {
            let err = open_with(&link.join("null"), links).unwrap_err();
            assert!(err.to_string().contains("a character device"), "{err}");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }

    /// Whether the FIFO is ever opened shows on the other side: a writer's blocking open
    /// returns as soon as anybody opens the FIFO for reading, `O_NONBLOCK` or not. Through a
    /// linked directory, and at the path itself, [`open`] must leave the writer waiting.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_fifo_is_never_opened_not_even_without_blocking() {
        use std::os::unix::fs::OpenOptionsExt;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let fifo = real.join("fifo");
        mkfifo(&fifo);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let woken = Arc::new(AtomicBool::new(false));
        let writer = {
            let (fifo, woken) = (fifo.clone(), woken.clone());
            std::thread::spawn(move || {
                let w = std::fs::OpenOptions::new().write(true).open(&fifo);
                woken.store(true, Ordering::SeqCst);
                drop(w);
            })
        };
        for path in [&fifo, &link.join("fifo")] {
            let err = open(path).unwrap_err();
            assert!(err.to_string().contains("a FIFO"), "{err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let opened = woken.load(Ordering::SeqCst);
        // Let the writer go whatever happened, then judge.
        let release = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        writer.join().unwrap();
        drop(release);
        assert!(
            !opened,
            "open() opened the FIFO: the waiting writer woke up"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_reopened_file_is_the_one_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"first").unwrap();
        let file = open(&f).unwrap();
        std::fs::remove_file(&f).unwrap();
        std::fs::write(&f, b"second").unwrap();
        // Readable: the descriptor is not the O_PATH one, which fails reads with EBADF.
        assert_eq!(read_all(&file, 100).unwrap(), b"first");
        let err = open(Path::new("a\0b")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[cfg(unix)]
    #[test]
    fn append_only_to_a_regular_file_not_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"ab").unwrap();
        let mut file = open_append(&f).unwrap();
        file.write_all(b"cd").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"abcd");
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        assert!(open_append(&link).is_err());
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        let err = open_append(&fifo).unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
        let err = open_append(Path::new("/dev/null")).unwrap_err();
        assert!(err.to_string().contains("a character device"), "{err}");
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
        let err = open_with(&link, Links::NoFollow).unwrap_err();
        #[cfg(target_os = "linux")]
        assert!(err.to_string().contains("a symbolic link"), "{err}");
        let _ = err;
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
