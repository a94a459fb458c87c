//! `urec archive`: the symbols step ([`urec_report::symbols::archive`]) on an existing
//! recording, with this host's files and the flags of `report`.

use std::path::PathBuf;

/// Command-line arguments of `urec archive`.
#[derive(clap::Args, Debug)]
pub struct ArchiveArgs {
    /// The recording to add names to (rewritten in place, through a temporary file).
    #[arg(short, long, default_value = "urec.data")]
    pub input: PathBuf,
    #[command(flatten)]
    pub symbols: crate::report::SymbolArgs,
}

/// Runs `urec archive`; returns the exit status.
pub fn run(args: ArchiveArgs) -> anyhow::Result<u8> {
    let opts = args.symbols.options()?;
    let (named, bytes) = urec_report::symbols::archive(&args.input, opts)?;
    for w in &named.warnings {
        eprintln!("urec: warning: {}", urec_format::printable(w));
    }
    eprintln!(
        "urec: {}",
        urec_report::symbols::summary_line(&named, bytes)
    );
    Ok(0)
}
