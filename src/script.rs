//! `urec script`: every event of a recording in time order, like `perf script`.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use urec_report::script::ScriptOptions;

use crate::report::SymbolArgs;

/// Command-line arguments of `urec script`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The recording to read.
    #[arg(short, long, default_value = "urec.data")]
    pub input: PathBuf,
    #[command(flatten)]
    pub symbols: SymbolArgs,
}

/// Runs `urec script`; returns the exit status.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let opts = ScriptOptions {
        symbolize: args.symbols.options(),
        no_symbolize: false,
    };
    let mut out = urec_format::Printable::new(BufWriter::new(io::stdout().lock()));
    // A closed pipe (`urec script | head`) comes back as an error; main exits 0 on it.
    let summary = urec_report::script::script(&args.input, &opts, &mut out)?;
    out.flush()?;
    for w in &summary.warnings {
        eprintln!("urec: warning: {}", urec_format::printable(w));
    }
    Ok(0)
}
