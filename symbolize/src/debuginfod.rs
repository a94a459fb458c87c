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
//! to be elfutils' exactly, the miss files included, and per-read timeouts ("seconds without
//! progress"), which are a few lines over a plain HTTP client.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::advice::hex;

/// Requests in flight at once: enough to hide a server's latency, few enough not to flood it.
const MAX_PARALLEL: usize = 8;

/// Seconds without progress before a request is abandoned when `DEBUGINFOD_TIMEOUT` is unset
/// (elfutils waits 90): a dead network must not stall a report for long.
const DEFAULT_TIMEOUT_S: u64 = 10;

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
    pub timeout: Duration,
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
        let urls: Vec<String> = var("DEBUGINFOD_URLS")?
            .split_whitespace()
            .map(|u| u.trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return None;
        }
        let timeout = var("DEBUGINFOD_TIMEOUT")
            .and_then(|t| t.trim().parse::<u64>().ok())
            .filter(|&t| t > 0)
            .unwrap_or(DEFAULT_TIMEOUT_S);
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

impl Client {
    pub fn new(cfg: Config) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(cfg.timeout)
            .timeout_read(cfg.timeout)
            .timeout_write(cfg.timeout)
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
            Ok(meta) if meta.len() > 0 && meta.is_file() => return Some(target),
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
            match self.agent.get(&request).call() {
                Ok(resp) => match self.store(&dir, &target, what, resp) {
                    Ok(()) => return Some(target),
                    Err(e) => {
                        all_missed = false;
                        self.warn(format!(
                            "debuginfod: cannot store {} in {}: {e}",
                            request,
                            dir.display()
                        ));
                    }
                },
                Err(ureq::Error::Status(404, _)) => {}
                Err(ureq::Error::Status(code, _)) => {
                    all_missed = false;
                    self.warn(format!("debuginfod: {url} answered {code} for {request}"));
                }
                Err(ureq::Error::Transport(t)) => {
                    all_missed = false;
                    if lock(&self.dead).insert(url.clone()) {
                        self.warn(format!(
                            "debuginfod server {url} unreachable ({t}); not asked again in \
                             this run (DEBUGINFOD_URLS, --no-debuginfod)"
                        ));
                    }
                }
            }
        }
        if all_missed {
            remember_miss(&dir, &target);
        }
        None
    }

    /// Writes the body to a temporary file next to `target`, then renames it into place, so
    /// gdb never reads half a file.
    fn store(
        &self,
        dir: &Path,
        target: &Path,
        what: Artifact,
        resp: ureq::Response,
    ) -> io::Result<()> {
        fs::create_dir_all(dir)?;
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let tmp = dir.join(format!(
            ".{}.urec.{}.{}",
            what.name(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            io::copy(&mut resp.into_reader(), &mut file)?;
            file.sync_all()?;
            fs::rename(&tmp, target)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn warn(&self, msg: String) {
        let mut w = lock(&self.warnings);
        if !w.contains(&msg) {
            w.push(msg);
        }
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

    #[test]
    fn a_miss_marker_is_empty_and_mode_000() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ab/debuginfo");
        remember_miss(&dir.path().join("ab"), &target);
        let meta = fs::metadata(&target).unwrap();
        assert!(is_miss_marker(&meta));
    }
}
