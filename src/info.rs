//! `urec info`: prints [`urec_report::output::info::describe`]'s description of a recording.
//!
//! A damaged file (truncated, or with chunks skipped) is still described, then the damage is
//! reported as a warning and the exit status is 0, as `report` and `script` do with the same
//! file: what still reads is a recording. Exit 1 is for a file of which nothing can be read.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context;

/// Command-line arguments of `urec info`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The recording to read.
    #[arg(short, long, default_value = "urec.data")]
    pub input: PathBuf,
}

/// Runs `urec info`; returns the exit status.
pub fn run(args: Args) -> anyhow::Result<u8> {
    let path = &args.input;
    let urec_report::output::info::Description { text, damage } =
        match urec_report::output::info::describe(path) {
            Ok(d) => d,
            // `PATH: why`, as info always said it.
            Err(
                urec_report::Error::Open { source, .. }
                | urec_report::Error::Corrupt { source, .. },
            ) => return Err(anyhow::Error::new(source).context(path.display().to_string())),
            Err(e) => return Err(e.into()),
        };
    let mut out = urec_format::Printable::new(io::stdout().lock());
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            return Ok(0);
        }
        return Err(e).context("writing to stdout");
    }
    if let Some(damage) = damage {
        eprintln!(
            "urec: warning: {}",
            urec_format::printable(&format!("{}: {damage}", path.display()))
        );
    }
    Ok(0)
}
