//! `urec report`: turns flags into [`urec_report::ReportOptions`], runs the analysis, and sends
//! each output where it was asked for. At most one output may be `-` (stdout); it then replaces
//! the table there.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use std::path::{Path, PathBuf};
use urec_format::Printable;

use anyhow::Context;
use urec_report::{Filter, GroupBy, Report, ReportOptions, SortKey, Weight};
use urec_symbolize::SymbolizeOptions;

use crate::UsageError;

/// Command-line arguments of `urec report`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The recording to read; repeat (or give a quoted pattern with `*` / `?`) to merge several
    /// (recordings of one service on several hosts: probes matched by spec, each process
    /// keeping its host).
    #[arg(short, long, default_value = "urec.data")]
    pub input: Vec<PathBuf>,
    /// Draw an interactive flamegraph SVG of the call stacks into this file (`-`: stdout).
    #[arg(long, value_name = "SVG")]
    pub flamegraph: Option<PathBuf>,
    /// Write collapsed stacks (`comm;outer;...;probed COUNT`) into this file (`-`: stdout).
    #[arg(long, value_name = "FILE|-")]
    pub folded: Option<PathBuf>,
    /// Write the machine-readable summary (schema 1) into this file (`-`: stdout).
    #[arg(long, value_name = "FILE|-")]
    pub json: Option<PathBuf>,
    /// Add a log2 latency histogram per function to the table (which is not printed when
    /// another output is `-`).
    #[arg(long)]
    pub histogram: bool,
    /// What a stack's count is in folded stacks and flamegraphs.
    #[arg(long, value_enum, default_value = "calls")]
    pub weight: WeightArg,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Split the table (and JSON `groups`) into one row per probe and value of KEY: pid, tid,
    /// comm, caller (the function that called the probed one), or a fetched ARG's name.
    #[arg(long = "group-by", value_name = "KEY")]
    pub group_by: Option<String>,
    /// Add a log2 histogram of a fetched ARG's values (or of `retval`) per probe.
    #[arg(long, value_name = "ARG")]
    pub hist: Option<String>,
    /// List probes without calls in the table too.
    #[arg(long = "show-zero")]
    pub show_zero: bool,
    /// Take each probe's cost, as `urec record` calibrated it at start, off every latency
    /// (never below 0): table, histograms, JSON, folded and flamegraph latency weights,
    /// pprof. Without it the table says how much of each latency is the probe's own cost.
    #[arg(long = "subtract-probe-cost")]
    pub subtract_probe_cost: bool,
    #[command(flatten)]
    pub symbols: SymbolArgs,
    /// Order of the functions (and of --group-by rows), descending.
    #[arg(long, value_enum, default_value = "calls")]
    pub sort: SortArg,
    /// Write a gzip-compressed pprof profile (`go tool pprof`, Pyroscope, Parca, Grafana) into
    /// this file (`-`: stdout): one sample per stack and process, values calls and latency.
    #[arg(long, value_name = "FILE|-")]
    pub pprof: Option<PathBuf>,
    /// Write a Perfetto trace (ui.perfetto.dev, trace_processor) into this file: one slice per
    /// call on its thread's track, with its args, return value and call stack.
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,
    /// Compare with the recording BASE: the table shows both sides and the change of calls,
    /// mean, p50 and p99; --flamegraph draws a differential flamegraph; --json adds `diff`.
    #[arg(long, value_name = "BASE")]
    pub diff: Option<PathBuf>,
}

/// Which events and calls count; `urec script` takes the same flags.
#[derive(clap::Args, Debug)]
pub struct FilterArgs {
    /// Only events of this process (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,
    /// Only events of this thread (repeatable).
    #[arg(long, value_name = "TID")]
    pub tid: Vec<u32>,
    /// Only events of processes with this command name (repeatable).
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,
    /// Only this probe: its name, spec or symbol (repeatable).
    #[arg(long, value_name = "NAME")]
    pub probe: Vec<String>,
    /// Only calls at least this long (10ms, 500us, 1.5s; a bare number is ns).
    #[arg(long = "min-latency", value_name = "DUR", value_parser = parse_latency)]
    pub min_latency: Option<u64>,
    /// Only calls at most this long.
    #[arg(long = "max-latency", value_name = "DUR", value_parser = parse_latency)]
    pub max_latency: Option<u64>,
    /// Only calls that began between FROM and TO seconds after the probes were attached
    /// (2.5.., ..10, 1.2..3.4).
    #[arg(long, value_name = "FROM..TO")]
    pub time: Option<urec_report::TimeWindow>,
}

impl FilterArgs {
    /// The library's view of these flags.
    pub fn filter(&self) -> Filter {
        Filter {
            pids: self.pid.clone(),
            tids: self.tid.clone(),
            comms: self.comm.clone(),
            probes: self.probe.clone(),
            min_latency_ns: self.min_latency,
            max_latency_ns: self.max_latency,
            time: self.time,
        }
    }
}

/// `10ms`, `500us` (or `µs`), `1.5s`, `2m`, `250ns`; a bare number is ns.
fn parse_latency(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let units = [
        ("ns", 1.0),
        ("us", 1e3),
        ("µs", 1e3),
        ("ms", 1e6),
        ("s", 1e9),
        ("m", 60e9),
    ];
    let (num, scale) = units
        .iter()
        .find_map(|(u, k)| t.strip_suffix(u).map(|n| (n, *k)))
        .unwrap_or((t, 1.0));
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale < u64::MAX as f64 => {
            Ok((v * scale).round() as u64)
        }
        _ => Err(format!(
            "{text:?} is not a duration (250ns, 500us, 10ms, 1.5s, 2m)"
        )),
    }
}

/// Where binaries and debug files are looked for; `urec script` takes the same flags.
#[derive(clap::Args, Debug)]
pub struct SymbolArgs {
    /// Look binaries up under DIR first (`DIR/path/to/bin`, then `DIR/bin`).
    #[arg(long, value_name = "DIR")]
    pub symfs: Option<PathBuf>,
    /// Search DIR for debug files like /usr/lib/debug (repeatable).
    #[arg(long = "debug-dir", value_name = "DIR")]
    pub debug_dir: Vec<PathBuf>,
    /// Never ask the servers in DEBUGINFOD_URLS for binaries or debug files.
    #[arg(long = "no-debuginfod")]
    pub no_debuginfod: bool,
}

impl SymbolArgs {
    /// The library's view of these flags. A `--symfs` that is not a directory is a usage
    /// error: the symbolizer would only find nothing under it, and every frame would come out
    /// unnamed with no word about the typo.
    pub fn options(&self) -> Result<SymbolizeOptions, UsageError> {
        if let Some(symfs) = &self.symfs {
            if !symfs.is_dir() {
                let why = if symfs.exists() {
                    "not a directory"
                } else {
                    "no such directory"
                };
                return Err(UsageError(format!(
                    "--symfs {}: {why} (it stands for the recording host's root)",
                    urec_format::printable(&symfs.display().to_string())
                )));
            }
        }
        Ok(SymbolizeOptions {
            symfs: self.symfs.clone(),
            debug_dirs: self.debug_dir.clone(),
            debuginfod: !self.no_debuginfod,
        })
    }
}

/// `--weight`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum WeightArg {
    /// Number of calls.
    Calls,
    /// Summed latency in ns.
    Latency,
}

/// `--sort`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum SortArg {
    /// Number of calls.
    Calls,
    /// Total latency.
    Total,
    /// Mean latency.
    Mean,
    /// Minimum latency.
    Min,
    /// Median latency.
    P50,
    /// 90th percentile latency.
    P90,
    /// 99th percentile latency.
    P99,
    /// Maximum latency.
    Max,
}

fn is_stdout(p: &Option<PathBuf>) -> bool {
    p.as_deref() == Some(Path::new("-"))
}

/// Runs `urec report`; returns the exit status.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let dashes = [&args.flamegraph, &args.folded, &args.json, &args.pprof]
        .into_iter()
        .filter(|p| is_stdout(p))
        .count();
    if dashes > 1 {
        return Err(UsageError("at most one output can be `-` (stdout)".into()).into());
    }
    let weight = match args.weight {
        WeightArg::Calls => Weight::Calls,
        WeightArg::Latency => Weight::Latency,
    };
    let opts = ReportOptions {
        filter: args.filter.filter(),
        sort: match args.sort {
            SortArg::Calls => SortKey::Calls,
            SortArg::Total => SortKey::Total,
            SortArg::Mean => SortKey::Mean,
            SortArg::Min => SortKey::Min,
            SortArg::P50 => SortKey::P50,
            SortArg::P90 => SortKey::P90,
            SortArg::P99 => SortKey::P99,
            SortArg::Max => SortKey::Max,
        },
        symbolize: args.symbols.options()?,
        no_symbolize: false,
        group_by: args.group_by.as_deref().map(GroupBy::parse),
        hist: args.hist.clone(),
        show_zero: args.show_zero,
        subtract_probe_cost: args.subtract_probe_cost,
    };
    let mut inputs = Vec::with_capacity(args.input.len());
    for input in &args.input {
        inputs.extend(expand(input)?);
    }
    if args.perfetto.is_some() && inputs.len() > 1 {
        return Err(UsageError("--perfetto takes one recording (one -i)".into()).into());
    }
    let f = &args.filter;
    if args.perfetto.is_some()
        && (f.time.is_some() || f.min_latency.is_some() || f.max_latency.is_some())
    {
        return Err(UsageError(
            "--perfetto does not take --time, --min-latency or --max-latency yet (it streams \
             every call; use --pid, --tid, --comm, --probe)"
                .into(),
        )
        .into());
    }
    let mut reports = Vec::with_capacity(inputs.len());
    for input in &inputs {
        let mut r = analyze(input, &opts)?;
        if let Some(i) = r.inputs.first_mut() {
            i.file = input.display().to_string();
        }
        reports.push(r);
    }
    let mut report = urec_report::merge::merge(reports, opts.sort);
    let base = match &args.diff {
        Some(path) => {
            let base = analyze(path, &opts)?;
            report.diff = Some(urec_report::diff::rows(&base, &report));
            Some(base)
        }
        None => None,
    };
    for w in base.iter().flat_map(|b| &b.warnings) {
        eprintln!("urec: warning: BASE: {}", urec_format::printable(w));
    }
    for w in &report.warnings {
        eprintln!("urec: warning: {}", urec_format::printable(w));
    }
    // A closed pipe (`urec report --folded - | head`) comes back as an error; main exits 0 on it.
    write_outputs(&args, weight, &report, base.as_ref())?;
    // The Perfetto pass streams the file again; the aggregates are no longer needed.
    drop(report);
    drop(base);
    if let (Some(path), Some(input)) = (&args.perfetto, inputs.first()) {
        write_perfetto(input, path, &opts)?;
    }
    Ok(0)
}

/// `--perfetto`: a second, streaming pass over the recording (the trace holds every call, which
/// the aggregated report does not keep).
fn write_perfetto(input: &Path, path: &Path, opts: &ReportOptions) -> anyhow::Result<()> {
    let file = File::create(path)
        .with_context(|| format!("cannot create Perfetto trace {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let summary = match urec_report::output::perfetto::write(input, opts, &mut out) {
        Ok(s) => s,
        Err(e) if e.is_usage() => return Err(UsageError(e.to_string()).into()),
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot write Perfetto trace {}", path.display())))
        }
    };
    out.flush()
        .with_context(|| format!("cannot write Perfetto trace {}", path.display()))?;
    eprintln!(
        "urec: Perfetto trace written to {} ({} slices, {} instant events, {} in flight)",
        path.display(),
        summary.slices,
        summary.instants,
        summary.in_flight
    );
    Ok(())
}

/// `-i PATTERN`: a path that does not exist and whose file name holds `*` or `?` (quoted, so the
/// shell left it alone) stands for the files of its directory it matches, in name order; any
/// other path is itself.
fn expand(input: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let name = input
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if input.exists() || !(name.contains('*') || name.contains('?')) {
        return Ok(vec![input.to_path_buf()]);
    }
    let dir = match input.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {} for -i {}", dir.display(), input.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| wildcard(name.as_bytes(), n.as_bytes()))
        })
        .map(|e| input.with_file_name(e.file_name()))
        .collect();
    if found.is_empty() {
        return Err(UsageError(format!("-i {}: no file matches", input.display())).into());
    }
    found.sort();
    Ok(found)
}

/// `*` (any run of bytes) and `?` (one byte) matching of a whole name, in O(pattern × name):
/// on a mismatch only the last `*` is retried one byte further.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == b'?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// [`urec_report::analyze`] of one recording, a usage error (`--probe` naming nothing) as such.
fn analyze(input: &Path, opts: &ReportOptions) -> anyhow::Result<Report> {
    match urec_report::analyze(input, opts) {
        Ok(r) => Ok(r),
        Err(e) if e.is_usage() => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

fn write_outputs(
    args: &Args,
    weight: Weight,
    report: &Report,
    base: Option<&Report>,
) -> anyhow::Result<()> {
    if args.flamegraph.is_some() && report.stacks.is_empty() {
        eprintln!("urec: warning: no calls to draw; the flamegraph says so");
    }
    type Draw<'a> = Box<dyn Fn(&mut dyn Write) -> io::Result<()> + 'a>;
    // Text outputs go through `Printable` (names from the file may hold control characters,
    // which would also make the SVG ill-formed XML); JSON escapes them itself.
    let outputs: [(&Option<PathBuf>, &str, Draw<'_>); 4] = [
        (
            &args.flamegraph,
            "flamegraph",
            Box::new(move |w| match base {
                Some(base) => urec_report::output::diff::write_flamegraph(
                    base,
                    report,
                    weight,
                    &mut Printable::new(w),
                ),
                None => {
                    urec_report::output::flamegraph::write(report, weight, &mut Printable::new(w))
                }
            }),
        ),
        (
            &args.folded,
            "folded stacks",
            Box::new(|w| {
                urec_report::output::folded::write(report, weight, &mut Printable::new(w))
            }),
        ),
        (
            &args.json,
            "JSON",
            Box::new(|w| urec_report::output::json::write(report, w)),
        ),
        (
            &args.pprof,
            "pprof profile",
            Box::new(|w| urec_report::output::pprof::write(report, w)),
        ),
    ];
    let mut stdout_taken = false;
    for (path, what, draw) in &outputs {
        let Some(path) = path else { continue };
        if path == Path::new("-") {
            stdout_taken = true;
            let mut out = BufWriter::new(io::stdout().lock());
            draw(&mut out)?;
            out.flush()?;
            continue;
        }
        let file = File::create(path)
            .with_context(|| format!("cannot create {what} file {}", path.display()))?;
        let mut out = BufWriter::new(file);
        draw(&mut out)
            .and_then(|()| out.flush())
            .with_context(|| format!("cannot write {what} file {}", path.display()))?;
        eprintln!("urec: {what} written to {}", path.display());
    }
    if !stdout_taken {
        let mut out = Printable::new(BufWriter::new(io::stdout().lock()));
        match &report.diff {
            Some(rows) => urec_report::output::diff::write_table(rows, &mut out)?,
            None => urec_report::output::table::write(report, &mut out)?,
        }
        if args.histogram {
            urec_report::output::table::write_histograms(report, &mut out)?;
        }
        urec_report::output::table::write_value_histograms(report, &mut out)?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards_match_whole_names() {
        assert!(wildcard(b"*.data", b"web1.data"));
        assert!(wildcard(b"web?.data", b"web1.data"));
        assert!(!wildcard(b"web?.data", b"web10.data"));
        assert!(wildcard(b"*", b""));
        assert!(!wildcard(b"*.data", b"web1.data.old"));
        assert!(wildcard(b"a*b*c", b"aXXbYYc"));
        assert!(!wildcard(b"a*a*a*a*a*a*b", &[b'a'; 200]));
    }
}
