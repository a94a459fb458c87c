//! Finding the file a TARGET names: a path, a program on PATH, or a library by short name.
//!
//! Library short names (`libc`, `c`, `libssl.so.3`) are resolved the way the dynamic loader
//! would find them at run time, so the probe lands in the file processes actually map: first
//! the loader's cache `/etc/ld.so.cache` (built by `ldconfig`), then the standard directories.
//! libbpf's own lookup does not know `libc` or `c`, which is why urec has its own.

use std::path::{Path, PathBuf};

use crate::SpecError;

/// The directories searched after the ld.so cache, in the loader's order for x86-64 Debian.
pub const STANDARD_LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

const LD_SO_CACHE: &str = "/etc/ld.so.cache";

/// Resolves TARGET to the canonical absolute path of an existing file.
pub fn find_target(target: &str) -> Result<PathBuf, SpecError> {
    find_target_in(target, None).map(|found| found.open)
}

/// A TARGET found, possibly inside another process's root (a container).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The canonical path as the processes of that root name it (what the recording shows).
    pub display: PathBuf,
    /// The path urec opens and attaches to: `display` itself on the host, else the same file
    /// through the root (`/proc/PID/root/...`), with no symbolic link left to follow in it.
    pub open: PathBuf,
    /// The mount table `display` is a path of (`/proc/PID/mountinfo`, `/proc/self/mountinfo`).
    pub mountinfo: PathBuf,
}

/// [`find_target`] inside `root` (a process's `/proc/PID/root`), or on the host with `None`:
/// a path is looked up in that root (its absolute symbolic links too, which a plain walk of
/// `/proc/PID/root/...` would follow on the host), library short names through that root's
/// own `/etc/ld.so.cache` and library directories, program names in urec's `PATH`'s
/// directories inside the root.
pub fn find_target_in(target: &str, root: Option<&Path>) -> Result<Found, SpecError> {
    let Some(root) = root else {
        return find_on_host(target).map(|p| Found {
            display: p.clone(),
            open: p,
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
        });
    };
    let not_found = |why: String| SpecError::TargetNotFound {
        target: target.to_string(),
        why,
    };
    let fs = Fs { root: Some(root) };
    let found = |display: PathBuf| -> Result<Found, SpecError> {
        let open = under(root, &display);
        regular(target, &open)?;
        let mountinfo = root
            .parent()
            .map_or_else(|| PathBuf::from("/proc/self"), Path::to_path_buf)
            .join("mountinfo");
        Ok(Found {
            display,
            open,
            mountinfo,
        })
    };
    if target.contains('/') {
        // Relative paths are taken from the root: the process's working directory is its own.
        return match resolve_in_root(root, Path::new(target)) {
            Ok(display) => found(display),
            Err(e) => Err(not_found(format!(
                "{target} inside {}: {e}",
                root.display()
            ))),
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if let Some(display) = fs.canonical(&dir.join(target)) {
                if fs.is_executable(&display) {
                    return found(display);
                }
            }
        }
    }
    if let Some(display) = fs.find_library(target) {
        return found(display);
    }
    Err(not_found(format!(
        "not a path, not a program on PATH, and no library lib{}.so* in {LD_SO_CACHE} or {} \
         inside {}",
        target
            .trim_start_matches("lib")
            .split(".so")
            .next()
            .unwrap_or(target),
        STANDARD_LIB_DIRS.join(", "),
        root.display()
    )))
}

/// `path` (absolute, as seen inside `root`) as urec reaches it: `root/path`.
fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// How many symbolic links one lookup follows before giving up (the kernel's limit).
const MAX_LINKS: usize = 40;

/// Resolves `path` the way a process whose root is `root` would: every symbolic link is
/// followed inside the root (an absolute one restarts at the root, `..` stops at it). Returns
/// the canonical path as seen inside the root; the file is reached as `root/` + that path.
pub fn resolve_in_root(root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    use std::path::Component;
    let mut out = PathBuf::from("/");
    let mut todo: Vec<std::ffi::OsString> = Vec::new();
    let push = |todo: &mut Vec<std::ffi::OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => todo.push(n.to_os_string()),
                Component::ParentDir => todo.push("..".into()),
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
    };
    push(&mut todo, path);
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            out.pop();
            continue;
        }
        let candidate = out.join(&name);
        let host = under(root, &candidate);
        let meta = std::fs::symlink_metadata(&host)?;
        if !meta.file_type().is_symlink() {
            out = candidate;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
        }
        let link = std::fs::read_link(&host)?;
        if link.is_absolute() {
            out = PathBuf::from("/");
        }
        push(&mut todo, &link);
    }
    Ok(out)
}

/// Looking files up on the host (`root: None`) or inside a process's root.
struct Fs<'a> {
    root: Option<&'a Path>,
}

impl Fs<'_> {
    /// The canonical form of `path` (as seen in the root), if it exists.
    fn canonical(&self, path: &Path) -> Option<PathBuf> {
        match self.root {
            None => std::fs::canonicalize(path).ok(),
            Some(root) => resolve_in_root(root, path).ok(),
        }
    }

    /// `path` (canonical, as seen in the root) as urec reaches it.
    fn host(&self, path: &Path) -> PathBuf {
        match self.root {
            None => path.to_path_buf(),
            Some(root) => under(root, path),
        }
    }

    fn is_file(&self, path: &Path) -> bool {
        self.canonical(path)
            .is_some_and(|p| self.host(&p).is_file())
    }

    fn is_executable(&self, canonical: &Path) -> bool {
        use std::os::unix::fs::PermissionsExt;
        self.host(canonical)
            .metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }

    /// Finds a library by short name: the root's ld.so cache first, then its standard
    /// directories. The path returned is canonical, as seen in the root.
    fn find_library(&self, name: &str) -> Option<PathBuf> {
        let (stem, exact) = library_stem(name);
        let pick = |mut found: Vec<(String, PathBuf)>| {
            // Several versions (`libssl.so.3`, `libssl.so.1.1`): the newest.
            found.sort_by_key(|f| std::cmp::Reverse(version_of(&f.0)));
            found.into_iter().map(|(_, p)| p).next()
        };
        let cache = self
            .canonical(Path::new(LD_SO_CACHE))
            .and_then(|p| read_ld_so_cache(&self.host(&p)));
        if let Some(data) = cache {
            if let Some(entries) = parse_ld_so_cache(&data) {
                let found: Vec<_> = entries
                    .into_iter()
                    .filter(|(soname, path)| {
                        fits(soname, &stem, exact) && self.is_file(Path::new(path))
                    })
                    .map(|(s, p)| (s, PathBuf::from(p)))
                    .collect();
                if let Some(p) = pick(found) {
                    return self.canonical(&p).or(Some(p));
                }
            }
        }
        for dir in STANDARD_LIB_DIRS {
            let Some(dir) = self.canonical(Path::new(dir)) else {
                continue;
            };
            let Ok(read) = std::fs::read_dir(self.host(&dir)) else {
                continue;
            };
            let found: Vec<_> = read
                .flatten()
                .filter_map(|e| {
                    let file = e.file_name().into_string().ok()?;
                    // A bare `libfoo.so` is usually the development symlink or a linker
                    // script; take it only when asked for exactly.
                    let ok = fits(&file, &stem, exact) && (exact || file != stem);
                    ok.then(|| (file.clone(), dir.join(&file)))
                })
                .filter(|(_, p)| self.canonical(p).is_some_and(|c| is_elf(&self.host(&c))))
                .collect();
            if let Some(p) = pick(found) {
                return self.canonical(&p).or(Some(p));
            }
        }
        None
    }
}

/// [`find_target`] on the host.
fn find_on_host(target: &str) -> Result<PathBuf, SpecError> {
    let not_found = |why: String| SpecError::TargetNotFound {
        target: target.to_string(),
        why,
    };
    if target.contains('/') {
        let path = Path::new(target);
        if !path.exists() {
            return Err(not_found("no such file".into()));
        }
        return canonical(target, path);
    }
    if let Some(path) = find_on_path(target) {
        return canonical(target, &path);
    }
    if let Some(path) = find_library(target) {
        return canonical(target, &path);
    }
    // Last resort: a file of that name in the current directory (perf would want `./name`).
    let here = Path::new(target);
    if here.is_file() {
        return canonical(target, here);
    }
    Err(not_found(format!(
        "not a path, not a program on PATH, and no library lib{}.so* in {LD_SO_CACHE} or {}",
        target
            .trim_start_matches("lib")
            .split(".so")
            .next()
            .unwrap_or(target),
        STANDARD_LIB_DIRS.join(", ")
    )))
}

fn canonical(target: &str, path: &Path) -> Result<PathBuf, SpecError> {
    let canon = std::fs::canonicalize(path).map_err(|e| SpecError::TargetNotFound {
        target: target.to_string(),
        why: format!("{}: {e}", path.display()),
    })?;
    regular(target, &canon)?;
    Ok(canon)
}

/// Fails unless `path` (TARGET resolved) is a regular file, saying what it is otherwise.
fn regular(target: &str, path: &Path) -> Result<(), SpecError> {
    let meta = std::fs::metadata(path).map_err(|e| SpecError::TargetNotFound {
        target: target.to_string(),
        why: format!("{}: {e}", path.display()),
    })?;
    if meta.is_file() {
        return Ok(());
    }
    Err(SpecError::NotRegularFile {
        target: target.to_string(),
        path: path.to_path_buf(),
        what: urec_untrusted::describe(&meta.file_type()),
    })
}

/// Adds to a "not ELF" error what TARGET resolved to and, for a script (a pyenv or rbenv
/// shim on PATH, a wrapper), which ELF program of the same name PATH offers further on: the
/// usual mistake is probing `python3` where PATH's first `python3` is a shell script.
pub(crate) fn explain_not_elf(err: SpecError, target: &str) -> SpecError {
    let SpecError::NotElf { path, why } = err else {
        return err;
    };
    let mut head = [0u8; 128];
    let n = urec_untrusted::open(&path)
        .and_then(|f| urec_untrusted::read_at(&f, &mut head, 0))
        .unwrap_or(0);
    let head = &head[..n];
    let mut msg = if Path::new(target) == path {
        why
    } else {
        format!("{why} ({target:?} resolved to it)")
    };
    if head.starts_with(b"\x7fELF") {
        // ELF for another machine, or damaged: no other program to suggest.
        return SpecError::NotElf { path, why: msg };
    }
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
        msg.push_str(&format!(
            "; it is a script (`#!{}`), perhaps a pyenv or rbenv shim, not the program it runs",
            String::from_utf8_lossy(line).trim()
        ));
    }
    let name = Path::new(target)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match elf_on_path(&name, &path) {
        Some(elf) => msg.push_str(&format!(
            "; name the ELF program instead, e.g. {} (the next {name:?} on PATH)",
            elf.display()
        )),
        None => msg.push_str("; name the ELF program instead (e.g. /usr/bin/python3.11)"),
    }
    SpecError::NotElf { path, why: msg }
}

/// The first executable called `name` on PATH that is an ELF file other than `not`, canonical.
fn elf_on_path(name: &str, not: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter_map(|dir| std::fs::canonicalize(dir.join(name)).ok())
        .find(|p| {
            let mut magic = [0u8; 4];
            p != not
                && urec_untrusted::open(p)
                    .and_then(|f| urec_untrusted::read_at(&f, &mut magic, 0))
                    .is_ok_and(|n| n == 4 && magic == *b"\x7fELF")
        })
}

/// Finds an executable named `name` in `$PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The file names a library short name may have: `c` and `libc` → `libc.so*`;
/// `libssl.so.3` → exactly that.
fn library_stem(name: &str) -> (String, bool) {
    if name.contains(".so") {
        return (name.to_string(), true);
    }
    let base = if name.starts_with("lib") {
        name.to_string()
    } else {
        format!("lib{name}")
    };
    (format!("{base}.so"), false)
}

/// Whether a soname / file name fits the stem: equal, or `stem.N[.M...]`.
fn fits(file: &str, stem: &str, exact: bool) -> bool {
    if file == stem {
        return true;
    }
    if exact {
        return false;
    }
    file.strip_prefix(stem)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|v| !v.is_empty() && v.split('.').all(|p| p.parse::<u64>().is_ok()))
}

/// Version numbers after `.so.`, for choosing the newest when several fit (`libssl.so.3` over
/// `libssl.so.1.1`).
fn version_of(file: &str) -> Vec<u64> {
    file.split_once(".so.")
        .map(|(_, v)| v.split('.').filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

/// Finds a library by short name: ld.so cache first, then the standard directories.
pub fn find_library(name: &str) -> Option<PathBuf> {
    Fs { root: None }.find_library(name)
}

/// The ld.so cache, through [`urec_untrusted::open`] like every file urec reads as root
/// (the cache is root's, but one way of opening everywhere keeps a review of them short).
/// It is a few dozen KiB; the limit only keeps a corrupt one from costing memory.
fn read_ld_so_cache(path: &Path) -> Option<Vec<u8>> {
    const LIMIT: u64 = 64 << 20;
    let file = urec_untrusted::open(path).ok()?;
    urec_untrusted::read_all(&file, LIMIT).ok()
}

/// Whether `path` starts with the ELF magic. Library directories may hold anything (a FIFO
/// left by a user in `/usr/local/lib`): the open never blocks and reads regular files only.
fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    urec_untrusted::open(path)
        .and_then(|f| urec_untrusted::read_at(&f, &mut magic, 0))
        .is_ok_and(|n| n == 4)
        && magic == *b"\x7fELF"
}

/// Parses glibc's `/etc/ld.so.cache` ("glibc-ld.so.cache1.1" format, optionally preceded by
/// the old "ld.so-1.7.0" table) into (soname, path) pairs for x86-64 libc6 libraries.
///
/// Layout (glibc `sysdeps/generic/dl-cache.h`): a 48-byte header — 17-byte magic, 3-byte
/// version, `u32 nlibs`, `u32 len_strings`, `u8 flags`, 3 pad bytes, `u32 extension_offset`,
/// 3 unused `u32` — then `nlibs` 24-byte entries — `i32 flags`, `u32 key`, `u32 value`,
/// `u32 osversion`, `u64 hwcap` — whose key (soname) and value (path) are offsets of
/// NUL-terminated strings from the start of the new-format header. Returns None if the data
/// is not such a cache.
pub fn parse_ld_so_cache(data: &[u8]) -> Option<Vec<(String, String)>> {
    const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
    const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
    const HEADER: usize = 48;
    const ENTRY: usize = 24;
    // Entry flags: type libc6 (0x03) in the low byte, x86-64 (0x0300) in the "required" byte.
    const FLAG_TYPE_MASK: i32 = 0x00ff;
    const FLAG_ELF_LIBC6: i32 = 0x0003;
    const FLAG_REQUIRED_MASK: i32 = 0xff00;
    const FLAG_X8664_LIB64: i32 = 0x0300;

    let u32_at = |off: usize| -> Option<u32> {
        Some(u32::from_le_bytes(data.get(off..off + 4)?.try_into().ok()?))
    };
    let mut base = 0usize;
    if data.starts_with(OLD_MAGIC) {
        // Old header: 11-byte magic padded to 12, u32 nlibs, then 12-byte entries; the new
        // table follows, aligned to 8.
        let nlibs = u32_at(12)? as usize;
        base = (16usize.checked_add(nlibs.checked_mul(12)?)?).next_multiple_of(8);
    }
    let header = data.get(base..base.checked_add(HEADER)?)?;
    if !header.starts_with(NEW_MAGIC) {
        return None;
    }
    let nlibs = u32_at(base + 20)? as usize;
    let cstr = |off: u32| -> Option<String> {
        let start = base.checked_add(off as usize)?;
        let tail = data.get(start..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        String::from_utf8(tail[..end].to_vec()).ok()
    };
    let mut out = Vec::new();
    for i in 0..nlibs {
        let at = base + HEADER + i.checked_mul(ENTRY)?;
        let flags = u32_at(at)? as i32;
        if flags & FLAG_TYPE_MASK != FLAG_ELF_LIBC6 {
            continue;
        }
        if flags & FLAG_REQUIRED_MASK != FLAG_X8664_LIB64 {
            continue;
        }
        if let (Some(key), Some(value)) = (cstr(u32_at(at + 4)?), cstr(u32_at(at + 8)?)) {
            out.push((key, value));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems() {
        assert_eq!(library_stem("c"), ("libc.so".to_string(), false));
        assert_eq!(library_stem("libc"), ("libc.so".to_string(), false));
        assert_eq!(
            library_stem("libssl.so.3"),
            ("libssl.so.3".to_string(), true)
        );
        assert!(fits("libc.so.6", "libc.so", false));
        assert!(!fits("libcap.so.2", "libc.so", false));
        assert!(!fits("libc.so.6x", "libc.so", false));
        assert!(!fits("libssl.so.1.1", "libssl.so.3", true));
        assert_eq!(version_of("libssl.so.1.1"), vec![1, 1]);
    }

    #[test]
    fn synthetic_cache() {
        // One x86-64 entry, one i386 entry (flags 0x0003 without the x86-64 bit).
        let mut strings = Vec::new();
        let mut add = |s: &str| {
            let off = 48 + 2 * 24 + strings.len();
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            off as u32
        };
        let (k1, v1) = (add("libc.so.6"), add("/lib/x86_64-linux-gnu/libc.so.6"));
        let (k2, v2) = (add("libc.so.6"), add("/lib/i386-linux-gnu/libc.so.6"));
        let mut data = b"glibc-ld.so.cache1.1".to_vec();
        data.extend_from_slice(&2u32.to_le_bytes());
        data.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        data.extend_from_slice(&[0u8; 4 + 4 + 12]);
        for (flags, k, v) in [(0x0303i32, k1, v1), (0x0003, k2, v2)] {
            data.extend_from_slice(&flags.to_le_bytes());
            data.extend_from_slice(&k.to_le_bytes());
            data.extend_from_slice(&v.to_le_bytes());
            data.extend_from_slice(&[0u8; 12]);
        }
        data.extend_from_slice(&strings);
        let entries = parse_ld_so_cache(&data).unwrap_or_default();
        assert_eq!(
            entries,
            vec![(
                "libc.so.6".to_string(),
                "/lib/x86_64-linux-gnu/libc.so.6".to_string()
            )]
        );
        assert_eq!(parse_ld_so_cache(b"garbage"), None);
        assert_eq!(parse_ld_so_cache(&data[..30]), None);
    }

    #[test]
    fn real_cache_has_libc() {
        let Some(data) = read_ld_so_cache(Path::new(LD_SO_CACHE)) else {
            eprintln!("skipping: no {LD_SO_CACHE}");
            return;
        };
        let entries = parse_ld_so_cache(&data).unwrap_or_default();
        assert!(
            entries.iter().any(|(k, _)| k == "libc.so.6"),
            "libc.so.6 not in {entries:?}"
        );
    }

    #[test]
    fn paths_resolve_inside_a_root() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib/x")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(root.join("usr/lib/x/libz.so.1"), b"\x7fELF")
            .unwrap_or_else(|e| panic!("{e}"));
        let link = |target: &str, at: &str| {
            std::os::unix::fs::symlink(target, root.join(at)).unwrap_or_else(|e| panic!("{e}"))
        };
        // Absolute links point into the root, not at the host; `..` stops at the root.
        link("/usr/lib", "lib");
        link("/lib/x/libz.so.1", "abs");
        link("../../../../usr/lib/x/libz.so.1", "usr/lib/up");
        let want = PathBuf::from("/usr/lib/x/libz.so.1");
        for p in ["/abs", "/lib/x/libz.so.1", "/usr/lib/up", "abs", "/../abs"] {
            assert_eq!(
                resolve_in_root(root, Path::new(p)).ok(),
                Some(want.clone()),
                "{p}"
            );
        }
        link("/loop", "loop");
        assert!(resolve_in_root(root, Path::new("/loop")).is_err());
        assert!(resolve_in_root(root, Path::new("/nope")).is_err());
        let found = find_target_in("/abs", Some(root)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(found.display, want);
        assert_eq!(found.open, root.join("usr/lib/x/libz.so.1"));
    }

    #[test]
    fn short_names() {
        let libc = std::fs::canonicalize("/lib/x86_64-linux-gnu/libc.so.6").ok();
        for name in ["c", "libc", "libc.so.6"] {
            let found = find_target(name).ok();
            assert_eq!(found, libc, "{name}");
        }
        assert_eq!(
            find_target("bash").ok(),
            std::fs::canonicalize("/usr/bin/bash").ok()
        );
        let e = find_target("no-such-lib-xyz")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no-such-lib-xyz"), "{e}");
        let e = find_target("./no/such/file")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no such file"), "{e}");
    }

    #[test]
    fn a_target_that_is_no_regular_file_says_what_it_is() {
        let e = find_target("/dev/null").map(|_| ()).unwrap_err();
        assert!(matches!(e, SpecError::NotRegularFile { .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("is not a regular file (a character device)"),
            "{e}"
        );
        assert!(!e.contains("cannot find"), "{e}");
        let e = find_target("/").map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("(a directory)"), "{e}");
    }
}
