//! The last source of names: files fetched by build id from the servers in `DEBUGINFOD_URLS`.
//!
//! The conventions are elfutils' own, so that gdb, perf and urec on one workstation download a
//! file once: the same environment variables, the same cache directory and layout
//! (`CACHE/HEXID/debuginfo`, `CACHE/HEXID/executable`), files renamed into place only when
//! complete, and misses remembered the same way (an empty mode-000 file, trusted for
//! `cache_miss_s` seconds). A server that cannot be reached costs one timeout and one warning,
//! then is not asked again: a report on a laptop off the network must not wait per binary.
//!
//! ureq (blocking, no async runtime) rather than the `debuginfod` crate: urec needs the cache
//! to be elfutils' exactly, the miss files included, and elfutils' limits, which are a few
//! lines over a plain HTTP client.
//!
//! # What a server can send
//! The servers are the user's choice, but plain `http://` travels unauthenticated, so what
//! comes back is treated as hostile, with elfutils' limits as the model:
//! - `DEBUGINFOD_TIMEOUT` (T, default 10 s here, 90 in elfutils) bounds *progress*, as elfutils
//!   sets curl's low-speed limit: at least 100 KiB in every T seconds, from the request on
//!   (connecting, name lookup, redirects and the response's head included), or the server is
//!   given up for the run. A bound per read would let one byte every T - 1 seconds go on
//!   forever.
//! - `DEBUGINFOD_MAXTIME` bounds the whole download (default 300 s here; elfutils has none, and
//!   a server just fast enough for the progress bound could otherwise take a day over 1 GiB);
//!   0 means none, as in elfutils.
//! - `DEBUGINFOD_MAXSIZE` bounds a file's size (default 1 GiB here, which distributions' largest
//!   debug files fit; elfutils has none); 0 means none, as in elfutils. A larger announced
//!   `Content-Length` is refused before the body, a body that goes past it when it passes.
//!   Whatever the size, the copies in memory of what was fetched count against the budget of
//!   sealed copies ([`urec_untrusted::Budget`]).
//! - Redirects are followed by urec, not by ureq (whose own following panics on a `Location`
//!   without a host, such as `file:///etc/shadow`): at most [`MAX_REDIRECTS`] of them, to
//!   `http` and `https` only, never from `https` down to `http`. A redirect to another host is
//!   followed, as elfutils (libcurl) does: servers send clients to mirrors, the file is
//!   verified by build id whatever host sent it, and a server could as well send the other
//!   host's bytes itself. The request carries no credentials to leak.
//! - A file whose build id is not the one asked for (or that is no ELF file) is deleted before
//!   it reaches the cache, where gdb and perf would trust it, with a warning.
//!
//! Each download runs on a thread of its own, watched by the thread that asked for it: the
//! watcher alone decides when to give up, whatever the download is blocked in (a name lookup
//! cannot be interrupted), and the download is left to end by itself (a read returns within T
//! seconds, and it then sees that it was abandoned and removes its temporary file).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::advice::hex;
use crate::elf::ElfInfo;

/// Requests in flight at once: enough to hide a server's latency, few enough not to flood it.
const MAX_PARALLEL: usize = 8;

/// Seconds for each [`PROGRESS_BYTES`] when `DEBUGINFOD_TIMEOUT` is unset (elfutils waits 90):
/// a dead network must not stall a report for long.
const DEFAULT_TIMEOUT_S: u64 = 10;

/// What a server must send per `DEBUGINFOD_TIMEOUT` seconds, as in elfutils.
const PROGRESS_BYTES: u64 = 100 * 1024;

/// The bound on a whole download when `DEBUGINFOD_MAXTIME` is unset: 1 GiB takes under two
/// minutes at 10 MB/s.
const DEFAULT_MAXTIME_S: u64 = 300;

/// The bound on a file's size when `DEBUGINFOD_MAXSIZE` is unset.
const DEFAULT_MAXSIZE: u64 = 1 << 30;

/// Redirects followed for one request (curl's `--max-redirs` is 50; a debuginfod federation
/// needs one or two).
pub(crate) const MAX_REDIRECTS: usize = 8;

/// elfutils' default for how long a miss is believed.
const DEFAULT_CACHE_MISS_S: u64 = 600;

/// The two files a server may have for a build id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Artifact {
    Debuginfo,
    Executable,
}

impl Artifact {
    fn name(self) -> &'static str {
        match self {
            Artifact::Debuginfo => "debuginfo",
            Artifact::Executable => "executable",
        }
    }
}

/// The servers, the cache and the limits, as the environment sets them.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub urls: Vec<String>,
    /// `DEBUGINFOD_TIMEOUT`: the time allowed for each [`PROGRESS_BYTES`].
    pub timeout: Duration,
    /// `DEBUGINFOD_MAXTIME`: the time allowed for a whole download, if bounded.
    pub maxtime: Option<Duration>,
    /// `DEBUGINFOD_MAXSIZE`: the largest file downloaded, if bounded.
    pub maxsize: Option<u64>,
    pub cache: PathBuf,
}

impl Config {
    /// `None` when `DEBUGINFOD_URLS` names no server (or no cache directory can be named).
    pub fn from_env() -> Option<Config> {
        Config::from_vars(|name| std::env::var(name).ok())
    }

    /// [`Config::from_env`] over any source of variables; empty ones count as unset.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<Config> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let number = |name: &str| var(name).and_then(|t| t.trim().parse::<u64>().ok());
        let urls: Vec<String> = var("DEBUGINFOD_URLS")?
            .split_whitespace()
            .map(|u| u.trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return None;
        }
        let timeout = number("DEBUGINFOD_TIMEOUT")
            .filter(|&t| t > 0)
            .unwrap_or(DEFAULT_TIMEOUT_S);
        // 0 is elfutils' "no bound"; unset (or unreadable) is urec's default bound.
        let maxtime = match number("DEBUGINFOD_MAXTIME").unwrap_or(DEFAULT_MAXTIME_S) {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        let maxsize =
            Some(number("DEBUGINFOD_MAXSIZE").unwrap_or(DEFAULT_MAXSIZE)).filter(|&s| s > 0);
        let cache = match (
            var("DEBUGINFOD_CACHE_PATH"),
            var("XDG_CACHE_HOME"),
            var("HOME"),
        ) {
            (Some(c), _, _) => PathBuf::from(c),
            (None, Some(x), _) => Path::new(&x).join("debuginfod_client"),
            (None, None, Some(h)) => Path::new(&h).join(".cache/debuginfod_client"),
            (None, None, None) => return None,
        };
        Some(Config {
            urls,
            timeout: Duration::from_secs(timeout),
            maxtime,
            maxsize,
            cache,
        })
    }
}

/// One request: a build id and the artifacts wanted for it.
pub(crate) struct Job {
    pub build_id: Vec<u8>,
    pub want: Vec<Artifact>,
}

/// What a job found: a cached (or just downloaded) file per artifact found.
pub(crate) type Found = Vec<(Artifact, PathBuf)>;

/// A client for one report: servers found dead stay dead until it ends.
pub(crate) struct Client {
    cfg: Config,
    agent: ureq::Agent,
    miss_ttl: Duration,
    dead: Mutex<HashSet<String>>,
    warnings: Mutex<Vec<String>>,
}

/// Why a download gave nothing.
#[derive(Debug)]
enum Failure {
    /// The server has no such file (404): a miss.
    Missing,
    /// Another status.
    Status(u16),
    /// No connection, or it broke: the server is not asked again.
    Unreachable(String),
    /// A redirect not followed, and why.
    Redirect(String),
    /// Larger than `DEBUGINFOD_MAXSIZE`; the size announced, if it was.
    TooLarge(Option<u64>),
    /// Less than [`PROGRESS_BYTES`] in `DEBUGINFOD_TIMEOUT`: the server is not asked again.
    TooSlow,
    /// Not done within `DEBUGINFOD_MAXTIME`.
    TooLong,
    /// Not the file asked for: no ELF file, or another build id (given).
    WrongFile(Option<Vec<u8>>),
    /// The cache could not take it.
    Store(io::Error),
}

impl Client {
    pub fn new(cfg: Config) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(cfg.timeout)
            .timeout_read(cfg.timeout)
            .timeout_write(cfg.timeout)
            // Followed by `download`, which knows which are safe.
            .redirects(0)
            .user_agent(concat!("urec/", env!("CARGO_PKG_VERSION")))
            .build();
        let miss_ttl = fs::read_to_string(cfg.cache.join("cache_miss_s"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(DEFAULT_CACHE_MISS_S);
        Client {
            cfg,
            agent,
            miss_ttl: Duration::from_secs(miss_ttl),
            dead: Mutex::new(HashSet::new()),
            warnings: Mutex::new(Vec::new()),
        }
    }

    /// Warnings since the last call (unreachable servers, an unwritable cache).
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.warnings))
    }

    /// Runs the jobs on up to [`MAX_PARALLEL`] threads; the results are in the jobs' order.
    pub fn fetch_all(&self, jobs: &[Job]) -> Vec<Found> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Found>> = Mutex::new(vec![Vec::new(); jobs.len()]);
        let workers = jobs.len().min(MAX_PARALLEL);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let found: Found = job
                        .want
                        .iter()
                        .filter_map(|&a| Some((a, self.fetch(&job.build_id, a)?)))
                        .collect();
                    lock(&results)[i] = found;
                });
            }
        });
        results.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached file for (`build_id`, `what`), downloading it first if needed; `None` on a
    /// miss, remembered or new.
    fn fetch(&self, build_id: &[u8], what: Artifact) -> Option<PathBuf> {
        // Shorter ids are not real build ids and would name the wrong file.
        if build_id.len() < 8 {
            return None;
        }
        let id = hex(build_id);
        let dir = self.cfg.cache.join(&id);
        let target = dir.join(what.name());
        match fs::metadata(&target) {
            Ok(meta)
                if meta.len() > 0
                    && meta.is_file()
                    && self.cached_file_is_sound(&target, build_id) =>
            {
                return Some(target);
            }
            Ok(meta) if is_miss_marker(&meta) => {
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok())
                    .unwrap_or_default();
                if age < self.miss_ttl {
                    return None;
                }
                let _ = fs::remove_file(&target);
            }
            _ => {}
        }
        let mut all_missed = true;
        for url in &self.cfg.urls {
            if lock(&self.dead).contains(url) {
                all_missed = false;
                continue;
            }
            let request = format!("{url}/buildid/{id}/{}", what.name());
            let failure = match self.download(&request, &dir, what, build_id) {
                Ok(tmp) => match fs::rename(&tmp, &target) {
                    Ok(()) => return Some(target),
                    Err(e) => {
                        let _ = fs::remove_file(&tmp);
                        Failure::Store(e)
                    }
                },
                Err(failure) => failure,
            };
            if !matches!(failure, Failure::Missing) {
                all_missed = false;
            }
            self.report(url, &request, &dir, failure);
        }
        if all_missed {
            remember_miss(&dir, &target);
        }
        None
    }

    /// The warning for a failed download, and whether the server is given up.
    fn report(&self, url: &str, request: &str, dir: &Path, failure: Failure) {
        let timeout = self.cfg.timeout.as_secs();
        let msg = match failure {
            Failure::Missing => return,
            Failure::Status(code) => format!("debuginfod: {url} answered {code} for {request}"),
            Failure::Unreachable(why) => {
                if !lock(&self.dead).insert(url.to_string()) {
                    return;
                }
                format!(
                    "debuginfod server {url} unreachable ({why}); not asked again in this run \
                     (DEBUGINFOD_URLS, --no-debuginfod)"
                )
            }
            Failure::TooSlow => {
                if !lock(&self.dead).insert(url.to_string()) {
                    return;
                }
                format!(
                    "debuginfod server {url} sent less than 100 KiB in {timeout} s for \
                     {request} (DEBUGINFOD_TIMEOUT); not asked again in this run"
                )
            }
            Failure::Redirect(why) => format!("debuginfod: {request}: {why}"),
            Failure::TooLarge(announced) => {
                let limit = self.cfg.maxsize.unwrap_or(u64::MAX);
                let size = match announced {
                    Some(n) => format!("{n} bytes"),
                    None => format!("more than {limit} bytes"),
                };
                format!(
                    "debuginfod: {request} is {size}, over the {limit} bytes a download may be \
                     (DEBUGINFOD_MAXSIZE, 0 for no bound); not downloaded"
                )
            }
            Failure::TooLong => format!(
                "debuginfod: {request} not complete after {} s (DEBUGINFOD_MAXTIME, 0 for no \
                 bound); abandoned",
                self.cfg.maxtime.unwrap_or_default().as_secs()
            ),
            Failure::WrongFile(got) => {
                let got = match got {
                    Some(id) => format!("a file with build id {}", hex(&id)),
                    None => "a file that is not ELF, or has no build id,".to_string(),
                };
                format!("debuginfod: {url} sent {got} for {request}; deleted, not cached")
            }
            Failure::Store(e) => format!(
                "debuginfod: cannot store {request} in {}: {e}",
                dir.display()
            ),
        };
        self.warn(msg);
    }

    /// Whether a file already in the cache may be used. One that is an ELF file with another
    /// build id (left by an older urec, or another tool that does not check) is deleted, so
    /// that it is downloaded again and no other tool trusts it; anything else is left to
    /// [`crate::binary::add_fetched`]'s checks.
    fn cached_file_is_sound(&self, path: &Path, build_id: &[u8]) -> bool {
        let Ok(file) = urec_untrusted::open(path) else {
            return true;
        };
        match ElfInfo::read(&file).and_then(|info| info.build_id) {
            Some(got) if got != build_id => {
                let _ = fs::remove_file(path);
                self.warn(format!(
                    "debuginfod cache: {} has build id {}; deleted",
                    path.display(),
                    hex(&got)
                ));
                false
            }
            _ => true,
        }
    }

    /// Downloads `request` into a temporary file in `dir` (returned) on a thread of its own,
    /// giving up when the limits of the module doc are passed. The file is created and, on
    /// any failure, removed here, not by the download: a report may end while an abandoned
    /// download is still blocked, and must leave no partial file behind.
    fn download(
        &self,
        request: &str,
        dir: &Path,
        what: Artifact,
        build_id: &[u8],
    ) -> Result<PathBuf, Failure> {
        fs::create_dir_all(dir).map_err(Failure::Store)?;
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let tmp = dir.join(format!(
            ".{}.urec.{}.{}",
            what.name(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(Failure::Store)?;
        let shared = Arc::new(Transfer::default());
        let transfer = Download {
            agent: self.agent.clone(),
            request: request.to_string(),
            file,
            build_id: build_id.to_vec(),
            maxsize: self.cfg.maxsize,
            shared: shared.clone(),
        };
        let result = match std::thread::Builder::new()
            .name("urec-debuginfod".into())
            .spawn(move || transfer.run())
        {
            Ok(_) => shared.watch(self.cfg.timeout, self.cfg.maxtime),
            Err(e) => Err(Failure::Store(e)),
        };
        match result {
            Ok(()) => Ok(tmp),
            Err(failure) => {
                let _ = fs::remove_file(&tmp);
                Err(failure)
            }
        }
    }

    fn warn(&self, msg: String) {
        let mut w = lock(&self.warnings);
        if !w.contains(&msg) {
            w.push(msg);
        }
    }
}

/// What a download and its watcher share.
#[derive(Default)]
struct Transfer {
    /// Body bytes received so far.
    received: AtomicU64,
    /// Set by the watcher when it gives up; the download then stops at its next read.
    abandoned: AtomicBool,
    /// The download's result, once it has one.
    result: Mutex<Option<Result<(), Failure>>>,
    done: Condvar,
}

impl Transfer {
    /// Waits for the download's result, giving up as soon as it receives less than
    /// [`PROGRESS_BYTES`] in some `timeout` (counted from the start, then from each time that
    /// many arrived) or when `maxtime` has passed since the start.
    fn watch(&self, timeout: Duration, maxtime: Option<Duration>) -> Result<(), Failure> {
        let start = Instant::now();
        let deadline = maxtime.and_then(|m| start.checked_add(m));
        let (mut window_start, mut window_base) = (start, 0);
        let mut result = lock(&self.result);
        loop {
            if let Some(r) = result.take() {
                return r;
            }
            let now = Instant::now();
            let received = self.received.load(Ordering::Relaxed);
            let failure = if received - window_base >= PROGRESS_BYTES {
                (window_start, window_base) = (now, received);
                None
            } else if now >= window_start + timeout {
                Some(Failure::TooSlow)
            } else {
                None
            };
            let failure =
                failure.or_else(|| deadline.filter(|&d| now >= d).map(|_| Failure::TooLong));
            if let Some(failure) = failure {
                // The download sees this at its next read, and stops.
                self.abandoned.store(true, Ordering::Relaxed);
                return Err(failure);
            }
            let mut wake = window_start + timeout;
            if let Some(d) = deadline {
                wake = wake.min(d);
            }
            // Progress is checked at least every second, so that a window that filled up is
            // restarted close to when it did.
            let wait = wake
                .saturating_duration_since(now)
                .min(Duration::from_secs(1))
                .max(Duration::from_millis(1));
            result = self
                .done
                .wait_timeout(result, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
}

/// One download, on its own thread, into a file it did not name.
struct Download {
    agent: ureq::Agent,
    request: String,
    file: File,
    build_id: Vec<u8>,
    maxsize: Option<u64>,
    shared: Arc<Transfer>,
}

impl Download {
    fn run(self) {
        let result = self.get();
        *lock(&self.shared.result) = Some(result);
        self.shared.done.notify_all();
    }

    /// Follows redirects to the file, writes it, and checks that it is the file asked for.
    fn get(&self) -> Result<(), Failure> {
        let mut url = self.request.clone();
        for _ in 0..=MAX_REDIRECTS {
            let response = match self.agent.get(&url).call() {
                Ok(r) => r,
                Err(ureq::Error::Status(404, _)) => return Err(Failure::Missing),
                Err(ureq::Error::Status(code, _)) => return Err(Failure::Status(code)),
                Err(ureq::Error::Transport(t)) => return Err(Failure::Unreachable(t.to_string())),
            };
            if !(300..400).contains(&response.status()) {
                return self.store(response);
            }
            if self.shared.abandoned.load(Ordering::Relaxed) {
                return Err(Failure::TooSlow);
            }
            let location = response.header("location").unwrap_or_default();
            url = follow(&url, location).map_err(Failure::Redirect)?;
        }
        Err(Failure::Redirect(format!(
            "more than {MAX_REDIRECTS} redirects; not followed further"
        )))
    }

    /// Writes the body within the size bound, then checks that it is the file asked for.
    fn store(&self, response: ureq::Response) -> Result<(), Failure> {
        let announced = response
            .header("content-length")
            .and_then(|l| l.trim().parse::<u64>().ok());
        if let (Some(n), Some(max)) = (announced, self.maxsize) {
            if n > max {
                return Err(Failure::TooLarge(Some(n)));
            }
        }
        self.copy(response.into_reader())?;
        self.file.sync_all().map_err(Failure::Store)?;
        self.check()
    }

    fn copy(&self, mut body: impl Read) -> Result<(), Failure> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            if self.shared.abandoned.load(Ordering::Relaxed) {
                return Err(Failure::TooSlow);
            }
            let n = match body.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Unreachable(e.to_string())),
            };
            total += n as u64;
            if self.maxsize.is_some_and(|max| total > max) {
                return Err(Failure::TooLarge(None));
            }
            self.shared.received.store(total, Ordering::Relaxed);
            (&self.file).write_all(&buf[..n]).map_err(Failure::Store)?;
        }
    }

    /// The file is an ELF file with the build id asked for.
    fn check(&self) -> Result<(), Failure> {
        match ElfInfo::read(&self.file).and_then(|info| info.build_id) {
            Some(got) if got == self.build_id => Ok(()),
            got => Err(Failure::WrongFile(got)),
        }
    }
}

/// The URL a redirect from `from` to `location` leads to, if it may be followed: `http` or
/// `https`, and not from `https` down to `http` (which would let anyone on the path answer).
pub(crate) fn follow(from: &str, location: &str) -> Result<String, String> {
    let shown = urec_format::printable(location);
    let base = url::Url::parse(from).map_err(|e| format!("bad URL {from}: {e}"))?;
    if location.is_empty() {
        return Err("a redirect without a Location; not followed".to_string());
    }
    let next = base
        .join(location)
        .map_err(|e| format!("redirect to {shown} ({e}); not followed"))?;
    match (base.scheme(), next.scheme()) {
        ("https", "https") | ("http", "http" | "https") => Ok(next.into()),
        ("https", "http") => Err(format!(
            "redirect from https to {shown}; not followed (only to https from https)"
        )),
        _ => Err(format!(
            "redirect to {shown}; not followed (only http and https are)"
        )),
    }
}

/// elfutils' negative-cache entry: an empty file with no permissions at all.
fn is_miss_marker(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.is_file() && meta.len() == 0 && meta.permissions().mode() & 0o777 == 0
}

/// Records a miss as elfutils does; failing to is no error (the next run asks again).
fn remember_miss(dir: &Path, target: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    if fs::create_dir_all(dir).is_ok() {
        // Created with mode 0: no umask can add a permission bit.
        let _ = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(target);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Option<Config> {
        Config::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn the_environment_as_elfutils_reads_it() {
        assert!(config(&[("HOME", "/h")]).is_none());
        assert!(config(&[("DEBUGINFOD_URLS", " "), ("HOME", "/h")]).is_none());
        let c = config(&[
            ("DEBUGINFOD_URLS", "http://a/  https://b:8002"),
            ("HOME", "/h"),
        ])
        .unwrap();
        assert_eq!(c.urls, ["http://a", "https://b:8002"]);
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.cache, Path::new("/h/.cache/debuginfod_client"));
        let c = config(&[
            ("DEBUGINFOD_URLS", "http://a"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
            ("DEBUGINFOD_TIMEOUT", "3"),
        ])
        .unwrap();
        assert_eq!(c.cache, Path::new("/x/debuginfod_client"));
        assert_eq!(c.timeout, Duration::from_secs(3));
        let c = config(&[
            ("DEBUGINFOD_URLS", "http://a"),
            ("DEBUGINFOD_CACHE_PATH", "/c"),
            ("XDG_CACHE_HOME", "/x"),
        ])
        .unwrap();
        assert_eq!(c.cache, Path::new("/c"));
    }

    /// elfutils' limits: unset means urec's defaults, 0 means no bound, as in elfutils.
    #[test]
    fn maxsize_and_maxtime_as_elfutils_reads_them() {
        let base = [("DEBUGINFOD_URLS", "http://a"), ("HOME", "/h")];
        let c = config(&base).unwrap();
        assert_eq!(c.maxsize, Some(1 << 30));
        assert_eq!(c.maxtime, Some(Duration::from_secs(300)));
        let mut vars = base.to_vec();
        vars.extend([("DEBUGINFOD_MAXSIZE", "0"), ("DEBUGINFOD_MAXTIME", "0")]);
        let c = config(&vars).unwrap();
        assert_eq!((c.maxsize, c.maxtime), (None, None));
        let mut vars = base.to_vec();
        vars.extend([("DEBUGINFOD_MAXSIZE", "1000"), ("DEBUGINFOD_MAXTIME", "7")]);
        let c = config(&vars).unwrap();
        assert_eq!(c.maxsize, Some(1000));
        assert_eq!(c.maxtime, Some(Duration::from_secs(7)));
    }

    #[test]
    fn only_http_and_https_redirects_are_followed() {
        let from = "http://s:8002/buildid/ab/debuginfo";
        assert_eq!(follow(from, "/x/y").unwrap(), "http://s:8002/x/y");
        assert_eq!(follow(from, "z").unwrap(), "http://s:8002/buildid/ab/z");
        assert_eq!(
            follow(from, "https://mirror/f").unwrap(),
            "https://mirror/f"
        );
        assert_eq!(follow(from, "//other/f").unwrap(), "http://other/f");
        for bad in ["file:///etc/shadow", "ftp://h/f", "data:,x", "", "http://"] {
            assert!(follow(from, bad).is_err(), "{bad}");
        }
        let err = follow("https://s/f", "http://s/g").unwrap_err();
        assert!(err.contains("https"), "{err}");
        assert_eq!(follow("https://s/f", "/g").unwrap(), "https://s/g");
    }

    /// A fresh miss is believed without asking; with `cache_miss_s` at 0 it has expired, and
    /// the (closed) server is asked: one warning, however many lookups.
    #[test]
    fn a_miss_is_believed_for_cache_miss_s() {
        let cache = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = Config {
            urls: vec![format!("http://127.0.0.1:{port}")],
            timeout: Duration::from_secs(2),
            maxtime: None,
            maxsize: None,
            cache: cache.path().to_path_buf(),
        };
        let id = [0xab; 20];
        let dir = cache.path().join(hex(&id));
        remember_miss(&dir, &dir.join("debuginfo"));
        let client = Client::new(cfg.clone());
        assert_eq!(client.fetch(&id, Artifact::Debuginfo), None);
        assert!(client.take_warnings().is_empty());
        fs::write(cache.path().join("cache_miss_s"), "0\n").unwrap();
        let client = Client::new(cfg);
        let jobs: Vec<Job> = (0..3)
            .map(|_| Job {
                build_id: id.to_vec(),
                want: vec![Artifact::Debuginfo, Artifact::Executable],
            })
            .collect();
        assert!(client.fetch_all(&jobs).iter().all(Vec::is_empty));
        let warnings = client.take_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("unreachable"), "{warnings:?}");
        // An unreachable server is no miss: nothing is remembered for the executable.
        assert!(!dir.join("executable").exists());
    }

    /// An ELF file with another build id in the cache (left by an older urec, or a tool that
    /// does not check) is deleted rather than trusted, with a warning, and asked for again.
    #[test]
    fn a_cached_file_with_another_build_id_is_deleted() {
        let cache = tempfile::tempdir().unwrap();
        let id = [0xab; 20];
        let dir = cache.path().join(hex(&id));
        fs::create_dir_all(&dir).unwrap();
        // This test program: an ELF file (with a build id, as the toolchain links them).
        let me = std::env::current_exe().unwrap();
        let bytes = fs::read(&me).unwrap();
        let has_id = urec_untrusted::open(&me)
            .ok()
            .and_then(|f| ElfInfo::read(&f))
            .and_then(|i| i.build_id)
            .is_some();
        fs::write(dir.join("debuginfo"), bytes).unwrap();
        let cfg = Config {
            urls: vec![format!("http://127.0.0.1:{}", closed_port())],
            timeout: Duration::from_secs(2),
            maxtime: None,
            maxsize: None,
            cache: cache.path().to_path_buf(),
        };
        let client = Client::new(cfg);
        assert_eq!(client.fetch(&id, Artifact::Debuginfo), None);
        if !has_id {
            eprintln!("skipped: this test program has no build id");
            return;
        }
        assert!(!dir.join("debuginfo").exists());
        let warnings = client.take_warnings();
        assert!(
            warnings.iter().any(|w| w.contains("deleted")),
            "{warnings:?}"
        );
    }

    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn a_miss_marker_is_empty_and_mode_000() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ab/debuginfo");
        remember_miss(&dir.path().join("ab"), &target);
        let meta = fs::metadata(&target).unwrap();
        assert!(is_miss_marker(&meta));
    }
}
