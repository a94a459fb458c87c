//! `urec script`: every event of a recording in time order, like `perf script`.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use urec_report::output::script::{Fields, ScriptOptions};

use crate::report::{FilterArgs, SymbolArgs};
use crate::UsageError;

/// Command-line arguments of `urec script`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "With --min-latency or --max-latency, a call is judged when it ends: \
its entry and return are printed together then, ordered by the return's time.\n\n\
For the tools that read perf script output (inferno-collapse-perf, stackcollapse-perf.pl), \
`urec script -F comm,pid,tid,cpu,time,event,ip,sym,dso` ends each event line with the event \
name, as they expect; for one probe whose frames are all named, `| inferno-collapse-perf` \
gives the same stacks and counts as `urec report --folded -`."
)]
pub struct Args {
    /// The recording to read.
    #[arg(short, long, default_value = "urec.data")]
    pub input: PathBuf,
    /// The fields to print, as perf script names them: comm,pid,tid,cpu,time,event,ip,sym,
    /// dso,args,latency (ip, sym and dso make up the stack lines).
    #[arg(short = 'F', long = "fields", value_name = "FIELDS")]
    pub fields: Option<String>,
    /// Print times in seconds since the probes were attached (the scale of --time).
    #[arg(long)]
    pub reltime: bool,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub symbols: SymbolArgs,
}

/// Runs `urec script`; returns the exit status.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let fields = match args.fields.as_deref().map(str::parse::<Fields>) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(e)) => return Err(UsageError(format!("-F: {e}")).into()),
    };
    let opts = ScriptOptions {
        symbolize: args.symbols.options()?,
        no_symbolize: false,
        filter: args.filter.filter(),
        reltime: args.reltime,
        fields,
    };
    let mut out = urec_format::Printable::new(BufWriter::new(io::stdout().lock()));
    // A closed pipe (`urec script | head`) comes back as an error; main exits 0 on it.
    let summary = match urec_report::output::script::script(&args.input, &opts, &mut out) {
        Ok(s) => s,
        Err(e) if e.is_usage() => return Err(UsageError(e.to_string()).into()),
        Err(e) => return Err(e.into()),
    };
    out.flush()?;
    for w in &summary.warnings {
        eprintln!("urec: warning: {}", urec_format::printable(w));
    }
    Ok(0)
}
