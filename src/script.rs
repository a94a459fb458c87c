//! `urec script`: every event of a recording in time order, like `perf script`.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use urec_report::script::ScriptOptions;
use urec_report::symbolize::SymbolizeOptions;

/// Command-line arguments of `urec script`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The recording to read.
    #[arg(short, long, default_value = "urec.data")]
    pub input: PathBuf,
    /// Look binaries up under DIR first (`DIR/path/to/bin`, then `DIR/bin`).
    #[arg(long, value_name = "DIR")]
    pub symfs: Option<PathBuf>,
    /// Search DIR for debug files like /usr/lib/debug (repeatable).
    #[arg(long = "debug-dir", value_name = "DIR")]
    pub debug_dir: Vec<PathBuf>,
}

/// Runs `urec script`; returns the exit status.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let opts = ScriptOptions {
        symbolize: SymbolizeOptions {
            symfs: args.symfs,
            debug_dirs: args.debug_dir,
        },
        no_symbolize: false,
    };
    let mut out = BufWriter::new(io::stdout().lock());
    // A closed pipe (`urec script | head`) comes back as an error; main exits 0 on it.
    let summary = urec_report::script::script(&args.input, &opts, &mut out)?;
    out.flush()?;
    for w in &summary.warnings {
        eprintln!("urec: warning: {w}");
    }
    Ok(0)
}
