//! `urec info`.

use std::path::PathBuf;

/// Command-line arguments of `urec info`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The recording to read.
    #[arg(short, long, default_value = "urec.data")]
    pub input: PathBuf,
}

/// Runs `urec info`; returns the exit status.
pub fn run(_args: Args) -> anyhow::Result<u8> {
    eprintln!("urec info: not implemented yet");
    Ok(2)
}
