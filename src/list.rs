//! `urec list`: the functions of a binary or library that can be probed.

use std::io::Write;

use urec_probe::InsnHandling;

/// Command-line arguments of `urec list`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A binary or library: a path, a program on PATH (`bash`), or a library short name
    /// (`libc`, `c`, `libssl.so.3`).
    pub target: String,
    /// Only functions whose name (mangled or demangled) matches this glob (`str*`).
    pub glob: Option<String>,
}

/// Runs `urec list`; returns the exit status. The output format is in its `--help` (main.rs).
pub fn run(args: Args) -> anyhow::Result<u8> {
    let functions = urec_probe::list(&args.target, args.glob.as_deref())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let width = functions
        .iter()
        .map(|f| f.name.len())
        .max()
        .unwrap_or(0)
        .min(60);
    let mut result = Ok(());
    for f in &functions {
        let mut marks = String::new();
        if f.ifunc {
            marks.push_str(" [ifunc]");
        } else if let InsnHandling::Refused(why) = f.first_insn {
            marks.push_str(&format!(" [not-probeable: {}]", why.short()));
        } else if f.first_insn == InsnHandling::SingleStepped {
            marks.push_str(" [single-step]");
        }
        result = writeln!(
            out,
            "{:<width$}  vaddr {:#010x}  offset {:#010x}  size {:>6}{}",
            f.name, f.vaddr.0, f.offset.0, f.size, marks
        );
        if result.is_err() {
            break;
        }
    }
    match result.and_then(|()| out.flush()) {
        // A closed pipe (`urec list libc | head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e.into()),
        Ok(()) => {}
    }
    if functions.is_empty() {
        if let Some(g) = &args.glob {
            eprintln!("urec list: no function matches {g:?}");
        } else {
            eprintln!("urec list: no functions (no symbol tables?)");
        }
        return Ok(1);
    }
    Ok(0)
}
