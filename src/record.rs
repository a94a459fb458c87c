//! `urec record`.

/// Command-line arguments of `urec record`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Probe spec: `TARGET:FUNCTION[%return] [ARG ...]` (repeatable).
    #[arg(short = 'e', long = "event")]
    pub events: Vec<String>,
}

/// Runs `urec record`; returns the exit status.
pub fn run(_args: Args) -> anyhow::Result<u8> {
    eprintln!("urec record: not implemented yet");
    Ok(2)
}
