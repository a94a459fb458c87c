//! The open-files limit, named as the cause when it is one.
//!
//! A recording holds a descriptor per BPF map, program and link, one side-band event per CPU,
//! the data file and more. Under a low `ulimit -n` the first open past the limit fails with
//! EMFILE, but not always where it can be seen as such: libbpf's loader meets it inside its
//! own feature probes and then reports the program load as EINVAL ("fd N is not pointing to
//! valid bpf_map"), which reads like an old kernel. So the limit is checked before anything is
//! opened ([`check_headroom`]), a load failure with few descriptors to spare is blamed on the
//! limit ([`short_of_fds`]), and any error that is EMFILE or ENFILE underneath is reworded
//! ([`explain`]).

use std::io;

/// The message, in one place: it must name the fix, not only the errno.
pub const MESSAGE: &str = "too many open files: raise the open-files limit (ulimit -n)";

/// Descriptors every recording opens, whatever its probes: the BPF object's maps (8), its
/// programs (at least 5) and BTF, the ring-buffer consumer's epoll and the data file. The
/// side-band adds one per online CPU, and each probed binary at least one link.
const BASE_FDS: u64 = 16;

/// When loading the programs fails with fewer descriptors than this to spare, the limit is
/// the likely cause (the loader's feature probes open and close a few of their own). libbpf
/// holds a placeholder descriptor for every map of the object from its open on, created or
/// not (the six of `-g kernel-dwarf` are not created without it): 29 maps, 8 programs and
/// BTF need about 42 (with 27 maps a load succeeded with 40 free, and failed with 32).
const LOAD_FDS: u64 = 42;

/// The soft open-files limit and how many descriptors are still free under it.
pub fn headroom() -> Option<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) into a valid struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    // The directory's own descriptor is one of the entries.
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let open = open.saturating_sub(1);
    Some((lim.rlim_cur, lim.rlim_cur.saturating_sub(open)))
}

/// Refuses to start when the limit leaves fewer descriptors than a recording on `cpus` CPUs
/// with probes in `binaries` files needs (a link each, at least), before a later open fails
/// in a way that names something else.
pub fn check_headroom(cpus: u64, binaries: u64) -> anyhow::Result<()> {
    let need = BASE_FDS + cpus + binaries;
    match headroom() {
        Some((limit, free)) if free < need => Err(anyhow::anyhow!(
            "{MESSAGE} from {limit}: urec needs at least {need} open files here, {free} are free"
        )),
        _ => Ok(()),
    }
}

/// Whether the process is so close to the limit that a failed program load is its doing.
pub fn short_of_fds() -> Option<u64> {
    headroom()
        .filter(|&(_, free)| free < LOAD_FDS)
        .map(|(limit, _)| limit)
}

/// Whether `err` is EMFILE or ENFILE underneath.
fn is_fd_exhaustion(err: &anyhow::Error) -> bool {
    is_exhausted(err.root_cause())
}

/// Whether the innermost cause of `err` is EMFILE or ENFILE.
pub(crate) fn is_exhausted(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut root = err;
    while let Some(next) = root.source() {
        root = next;
    }
    if let Some(e) = root.downcast_ref::<io::Error>() {
        return matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
    }
    // libbpf-rs wraps the io::Error in a private type without an errno accessor; its text is
    // the io::Error's, which ends in "(os error N)".
    let text = root.to_string();
    [libc::EMFILE, libc::ENFILE]
        .iter()
        .any(|n| text.ends_with(&format!("(os error {n})")))
}

/// `err` reworded when the open-files limit is what it comes down to: what urec was doing, then
/// [`MESSAGE`]; any other error unchanged.
pub fn explain(err: anyhow::Error) -> anyhow::Error {
    if !is_fd_exhaustion(&err) {
        return err;
    }
    // The contexts above the errno say what was being opened; the errno's own text ("Too many
    // open files (os error 24)") gives way to the message.
    let mut what: Vec<String> = err
        .chain()
        .filter(|cause| cause.source().is_some())
        .map(|cause| cause.to_string())
        .collect();
    let limit = headroom()
        .map(|(limit, _)| format!(" from {limit}"))
        .unwrap_or_default();
    what.push(format!("{MESSAGE}{limit}"));
    anyhow::anyhow!(what.join(": "))
}

/// Raises the soft open-files limit to the hard one: keeping every mapped file open for the
/// symbols step needs more than the usual 1024 on a busy host.
pub(crate) fn raise_soft_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn emfile_is_named_with_what_was_opened() {
        let err = Err::<(), _>(io::Error::from_raw_os_error(libc::EMFILE))
            .context("creating x.data")
            .unwrap_err();
        let text = format!("{:#}", explain(err));
        assert!(
            text.starts_with(
                "creating x.data: too many open files: raise the open-files limit (ulimit -n)"
            ),
            "{text}"
        );
        let enfile = anyhow::Error::new(io::Error::from_raw_os_error(libc::ENFILE));
        assert!(format!("{:#}", explain(enfile)).starts_with(MESSAGE));
        let other = Err::<(), _>(io::Error::from_raw_os_error(libc::ENOSPC))
            .context("writing x.data")
            .unwrap_err();
        assert!(format!("{:#}", explain(other)).contains("No space left"));
    }

    #[test]
    fn libbpf_errors_too() {
        let err = anyhow::Error::new(libbpf_rs::Error::from(io::Error::from_raw_os_error(
            libc::EMFILE,
        )))
        .context("setting up the ring buffer consumer");
        assert!(format!("{:#}", explain(err))
            .starts_with("setting up the ring buffer consumer: too many open files: raise"));
    }
}
