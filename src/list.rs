//! `urec list`: the functions of a binary or library that can be probed.

use std::io::Write;

use urec_probe::InsnHandling;

/// Command-line arguments of `urec list`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A binary or library: a path, a program on PATH (`bash`), or a library short name
    /// (`libc`, `c`, `libssl.so.3`).
    pub target: String,
    /// Only functions whose name (mangled or demangled) matches this glob (`str*`); with
    /// `--usdt`, USDT probes whose NAME or PROVIDER:NAME matches it.
    pub glob: Option<String>,
    /// List the USDT probes (`.note.stapsdt`) instead of functions.
    #[arg(long)]
    pub usdt: bool,
    /// Compile the binary's unwind table from its CFI (what in-kernel DWARF unwinding will
    /// load) and print its size, build time and the share of code left to the fallback.
    #[arg(long, conflicts_with_all = ["usdt", "glob"])]
    pub unwind_stats: bool,
}

/// Runs `urec list`; returns the exit status. The output format is in its `--help` (main.rs).
pub fn run(args: Args) -> anyhow::Result<u8> {
    if args.usdt {
        return run_usdt(&args);
    }
    if args.unwind_stats {
        return run_unwind_stats(&args);
    }
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
        } else if let Some((both, entry)) = &f.sites {
            // Where urec puts the probe instead of the single-stepped first instruction.
            let at = |s: &urec_probe::site::EntrySite| format!("+{:#x}", s.vaddr - f.vaddr);
            if both.moved {
                marks.push_str(&format!(" [site {}]", at(both)));
            } else if entry.moved {
                marks.push_str(&format!(" [single-step; %entry site {}]", at(entry)));
            } else {
                marks.push_str(" [single-step]");
            }
        } else if f.first_insn == InsnHandling::SingleStepped {
            marks.push_str(" [single-step]");
        }
        result = writeln!(
            out,
            "{:<width$}  vaddr {:#010x}  offset {:#010x}  size {:>6}{}",
            f.name, f.vaddr, f.offset, f.size, marks
        );
        if result.is_err() {
            break;
        }
    }
    ended(result, &mut out)?;
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

/// `urec list --usdt`: one USDT probe site per line, as `-e usdt:TARGET:PROVIDER:NAME` names
/// it, with its address, semaphore and operands (what `argN` fetches).
fn run_usdt(args: &Args) -> anyhow::Result<u8> {
    let probes = urec_probe::list_usdt(&args.target, args.glob.as_deref())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let names: Vec<String> = probes
        .iter()
        .map(|p| urec_format::printable(&format!("{}:{}", p.provider, p.name)).into_owned())
        .collect();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0).min(60);
    let mut result = Ok(());
    for (p, name) in probes.iter().zip(&names) {
        let semaphore = match p.semaphore {
            Some(s) => format!("semaphore {s:#010x}"),
            None => "no semaphore        ".to_string(),
        };
        let mut marks = String::new();
        for (i, a) in p.args.iter().enumerate() {
            if let urec_probe::Operand::Unsupported(why) = &a.operand {
                marks.push_str(&format!(" [arg{} unsupported: {why}]", i + 1));
            }
        }
        result = writeln!(
            out,
            "{name:<width$}  vaddr {:#010x}  {semaphore}  args: {}{}",
            p.pc,
            if p.args_text.is_empty() {
                "(none)".to_string()
            } else {
                urec_format::printable(&p.args_text).into_owned()
            },
            urec_format::printable(&marks),
        );
        if result.is_err() {
            break;
        }
    }
    ended(result, &mut out)?;
    if probes.is_empty() {
        match &args.glob {
            Some(g) => eprintln!("urec list: no USDT probe matches {g:?}"),
            None => eprintln!("urec list: no USDT probes (no .note.stapsdt section)"),
        }
        return Ok(1);
    }
    Ok(0)
}

/// `urec list --unwind-stats`: the unwind table of one binary, measured.
fn run_unwind_stats(args: &Args) -> anyhow::Result<u8> {
    use anyhow::Context as _;
    let path = urec_probe::find_target(&args.target)?;
    // Read, not mapped: the file may be replaced or truncated while we read (see
    // urec_untrusted).
    let image = match urec_elf::ElfImage::open(&path) {
        Ok(image) => image,
        Err(urec_elf::ElfError::Io(e)) => {
            return Err(e).with_context(|| format!("reading {}", path.display()))
        }
        Err(e) => return Err(e).with_context(|| format!("{}: not an ELF file", path.display())),
    };
    let elf = image
        .object()
        .with_context(|| format!("{}: not an ELF file", path.display()))?;
    let started = std::time::Instant::now();
    let table = urec_unwind_table::UnwindTable::from_elf(&elf)
        .with_context(|| format!("{}: cannot compile an unwind table", path.display()))?;
    let took = started.elapsed();
    let s = table.stats();
    let percent = |part: u64| {
        if s.covered_bytes == 0 {
            0.0
        } else {
            100.0 * part as f64 / s.covered_bytes as f64
        }
    };
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "{}",
        urec_format::printable(&path.display().to_string())
    );
    let _ = writeln!(
        out,
        "  source          {} ({} FDEs, {} unreadable)",
        s.section, s.fdes, s.bad_fdes
    );
    let _ = writeln!(
        out,
        "  rows            {} (from {} CFI rows), {} distinct rules, {} pages of 64 KiB \
         (at most {} rows in one)",
        s.rows, s.cfi_rows, s.distinct_rules, s.pages, s.max_page_rows
    );
    let _ = writeln!(out, "  size            {} bytes", s.bytes);
    let _ = writeln!(
        out,
        "  build time      {:.1} ms",
        took.as_secs_f64() * 1000.0
    );
    let _ = writeln!(out, "  code with CFI   {} bytes", s.covered_bytes);
    let _ = writeln!(
        out,
        "  fallback        {} bytes ({:.3}%)",
        s.fallback_bytes,
        percent(s.fallback_bytes)
    );
    for (why, bytes) in &s.fallback_by_reason {
        let _ = writeln!(
            out,
            "    {:<24}{} bytes ({:.3}%)",
            why.to_string(),
            bytes,
            percent(*bytes)
        );
    }
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    ended(w.write_all(out.as_bytes()), &mut w)?;
    Ok(0)
}

/// Flushes a listing; a closed pipe (`urec list libc | head`) is not an error.
fn ended(result: std::io::Result<()>, out: &mut impl Write) -> anyhow::Result<()> {
    match result.and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(()),
    }
}
